"""The same operators on an NVIDIA GPU through CuPy: against the CPU path and PyTorch-on-GPU.

Skipped cleanly where CuPy or a GPU is missing (CI has neither); `benchmarks/gpu_check.sh` runs
these on a GPU machine.
"""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import models, nn, optim

cp = pytest.importorskip("cupy")
try:
    HAVE_GPU = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - any CUDA error means no usable GPU
    HAVE_GPU = False
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU")]

try:
    import torch
    TORCH_CUDA = torch.cuda.is_available()
except ImportError:
    torch, TORCH_CUDA = None, False

rng = np.random.default_rng(0)

CASES = [
    ("conv1d", lambda x, w: F.conv1d(x, w, stride=2, padding=1), (4, 6, 33), (8, 3, 5), {"groups": None}),
    ("conv2d", lambda x, w: F.conv2d(x, w, padding=2), (8, 3, 28, 28), (16, 3, 5, 5), {}),
    ("conv2d_s2_g", lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=2), (4, 4, 15, 17), (6, 2, 3, 3), {}),
    ("conv2d_dil", lambda x, w: F.conv2d(x, w, dilation=2), (2, 3, 16, 16), (4, 3, 3, 3), {}),
    ("conv3d", lambda x, w: F.conv3d(x, w, padding=1), (2, 3, 9, 10, 11), (4, 3, 3, 3, 3), {}),
]
POOLS = [
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), (8, 16, 24, 24)),
    ("max_pool2d_overlap", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), (4, 6, 17, 15)),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2), (8, 16, 24, 24)),
    ("lp_pool2d", lambda x: F.lp_pool2d(x, 2, 2), (8, 16, 24, 24)),
    ("max_pool3d", lambda x: F.max_pool3d(x, 2), (2, 3, 8, 8, 8)),
    ("max_pool1d", lambda x: F.max_pool1d(x, 3), (4, 5, 30)),
    ("local_response_norm", lambda x: F.local_response_norm(x, 5, 0.5, 0.75, 2.0), (4, 7, 9, 9)),
]


def _run(fn, arrays, device):
    ts = [cnnlab.tensor(a, requires_grad=True).to(device) for a in arrays]
    for t in ts:
        t.requires_grad = True
    out = fn(*ts)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    out.backward(cnnlab.tensor(g).to(device))
    return out.numpy(), [t.grad.numpy() for t in ts]


def _close(a, b, rtol=1e-4):
    err = np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)
    assert err < rtol, f"relative error {err:.2e}"


@pytest.mark.parametrize("name,fn,xs,ws,_", CASES, ids=[c[0] for c in CASES])
def test_conv_gpu_matches_cpu(name, fn, xs, ws, _):
    arrays = [rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)]
    cpu_out, cpu_grads = _run(fn, arrays, "cpu")
    gpu_out, gpu_grads = _run(fn, arrays, "cuda")
    _close(gpu_out, cpu_out)
    for a, b in zip(gpu_grads, cpu_grads):
        _close(a, b)


@pytest.mark.parametrize("name,fn,xs", POOLS, ids=[c[0] for c in POOLS])
def test_pool_gpu_matches_cpu(name, fn, xs):
    x = (rng.permutation(int(np.prod(xs))).reshape(xs) * 0.01).astype(np.float32)  # no ties
    cpu_out, cpu_grads = _run(fn, [x], "cpu")
    gpu_out, gpu_grads = _run(fn, [x], "cuda")
    _close(gpu_out, cpu_out)
    _close(gpu_grads[0], cpu_grads[0])


@pytest.mark.skipif(not TORCH_CUDA, reason="PyTorch without CUDA")
def test_conv2d_gpu_matches_torch_gpu():
    x = rng.standard_normal((8, 3, 28, 28)).astype(np.float32)
    w = rng.standard_normal((16, 3, 5, 5)).astype(np.float32)
    out, (gx, gw) = _run(lambda a, b: F.conv2d(a, b, padding=2), [x, w], "cuda")
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    tw = torch.tensor(w, device="cuda", requires_grad=True)
    to = torch.nn.functional.conv2d(tx, tw, padding=2)
    to.backward(torch.tensor(np.random.default_rng(1).standard_normal(to.shape).astype(np.float32), device="cuda"))
    _close(out, to.detach().cpu().numpy())
    _close(gx, tx.grad.cpu().numpy())
    _close(gw, tw.grad.cpu().numpy())


def test_whole_network_step_gpu_matches_cpu():
    cnnlab.manual_seed(0)
    cpu_net = models.build("default")
    cnnlab.manual_seed(0)
    gpu_net = models.build("default").to("cuda")
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    for net, dev in ((cpu_net, "cpu"), (gpu_net, "cuda")):
        net.eval()  # no dropout: both paths must then agree
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        loss = F.cross_entropy(net(cnnlab.tensor(x).to(dev)), cnnlab.tensor(y).to(dev).data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p, q in zip(cpu_net.parameters(), gpu_net.parameters()):
        _close(q.numpy(), p.numpy())


def test_module_and_tensor_moves():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).to("cuda")
    assert all(p.device == "cuda" for p in net.parameters())
    out = net(cnnlab.tensor(np.zeros((2, 1, 28, 28), np.float32)).cuda())
    assert out.device == "cuda" and out.cpu().device == "cpu"
    net.to("cpu")
    assert all(p.device == "cpu" for p in net.parameters())
