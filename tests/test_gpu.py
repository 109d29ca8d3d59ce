"""The same operators, training steps, loader and random streams on an NVIDIA GPU through CuPy:
against the CPU path and PyTorch-on-GPU.

Skipped where CuPy is not installed or no GPU is present (CI has neither); an installed CuPy that
fails is an error, not a skip (helpers.cuda). `benchmarks/gpu_check.sh` runs every test marked
`gpu` (these, and the GPU tests in test_optim.py) on a GPU machine.
"""

import numpy as np
import pytest
import torch

import cnnlab
import cnnlab.functional as F
from cnnlab import GradcheckError, backend, models, nn, optim
from cnnlab.data import DataLoader, DeviceLoader
from helpers import cuda

cp, NO_GPU = cuda()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=NO_GPU)]
TORCH_CUDA = torch.cuda.is_available()

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


def _close_named(a, b, what, rtol=1e-4):
    err = np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)
    assert err < rtol, f"{what}: relative error {err:.2e}"


def _same_numbers_on_every_device(monkeypatch):
    """Replace backend.random (dropout's masks) by one NumPy stream per call, moved to the array's
    device: the CPU and GPU runs then drop the same units, whatever CuPy's generator would draw."""
    draws = []

    def same_numbers(shape, like, dtype=None):
        draws.append(tuple(shape))
        u = np.random.default_rng(len(draws)).random(shape).astype(dtype or like.dtype)
        return backend.to_device(u, backend.device_of(like))

    monkeypatch.setattr(backend, "random", same_numbers)
    return draws


@pytest.mark.parametrize("name", ["default", "best-vgg"])  # batch norm (after a pool, after a conv), dropout
def test_training_steps_gpu_match_cpu(name, monkeypatch):
    """Two SGD steps in train mode (batch statistics, dropout on): the loss, the logits, every
    parameter's gradient, the running statistics, the momentum buffers and the updated weights agree."""
    draws = _same_numbers_on_every_device(monkeypatch)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    runs = {}
    for dev in ("cpu", "cuda"):
        cnnlab.manual_seed(0)
        net = models.build(name).to(dev)
        net.train()
        opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        draws.clear()
        steps = []
        for _ in range(2):
            opt.zero_grad()
            logits = net(cnnlab.tensor(x).to(dev))
            loss = F.cross_entropy(logits, cnnlab.tensor(y).to(dev).data)
            loss.backward()
            assert all(p.grad.device == dev for p in net.parameters())
            steps.append((loss.item(), logits.numpy(), {n: p.grad.numpy() for n, p in net.named_parameters()}))
            opt.step()
        buffers = {n: b.numpy() for n, b in net.named_buffers()}
        momenta = [backend.to_device(opt.state[p]["momentum_buffer"], "cpu") for p in net.parameters()]
        if dev == "cuda":
            assert all(isinstance(opt.state[p]["momentum_buffer"], cp.ndarray) for p in net.parameters())
        runs[dev] = steps, {n: p.numpy() for n, p in net.named_parameters()}, buffers, momenta, list(draws)
    (cpu_steps, cpu_params, cpu_buffers, cpu_momenta, cpu_draws) = runs["cpu"]
    (gpu_steps, gpu_params, gpu_buffers, gpu_momenta, gpu_draws) = runs["cuda"]
    assert cpu_draws == gpu_draws and len(cpu_draws) == 2 * 2  # two dropout layers, two steps: dropout ran
    assert len(cpu_buffers) >= 4  # running mean and variance of every batch norm
    for (cl, clog, cg), (gl, glog, gg) in zip(cpu_steps, gpu_steps):
        assert gl == pytest.approx(cl, rel=1e-5)
        _close_named(glog, clog, "logits")
        assert cg.keys() == gg.keys()
        for n in cg:
            _close_named(gg[n], cg[n], f"gradient of {n}")
    for n in cpu_buffers:
        _close_named(gpu_buffers[n], cpu_buffers[n], f"buffer {n}")
    for n in cpu_params:
        _close_named(gpu_params[n], cpu_params[n], f"parameter {n}")
    for a, b in zip(gpu_momenta, cpu_momenta):
        _close_named(a, b, "momentum buffer")


def test_dropout_on_the_gpu():
    """CuPy's branch of backend.random: seeded, about 1 - p kept, scaled by 1 / (1 - p), the gradient the mask."""
    x = cnnlab.tensor(cp.ones((200, 50), np.float32), requires_grad=True)
    cnnlab.manual_seed(3)
    y = F.dropout(x, 0.3, training=True)
    assert isinstance(y.data, cp.ndarray) and y.dtype == np.float32
    out = cp.asnumpy(y.data)
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.02  # 10,000 draws: the standard deviation of the fraction is 0.0046
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7, rtol=1e-6)
    cnnlab.manual_seed(3)
    np.testing.assert_array_equal(cp.asnumpy(F.dropout(x, 0.3, training=True).data), out)
    cnnlab.manual_seed(4)
    assert not np.array_equal(cp.asnumpy(F.dropout(x, 0.3, training=True).data), out)


def test_repeated_fancy_indices_accumulate_on_the_gpu():
    """GetItem's backward through backend.scatter_add (cupyx.scatter_add on the GPU)."""
    x = rng.standard_normal((5, 3))
    idx = np.array([0, 2, 0, 4, 0])
    g = rng.standard_normal((5, 3))
    expected = np.zeros((5, 3))
    for k, i in enumerate(idx):
        expected[i] += g[k]
    for dev, xp in (("cpu", np), ("cuda", cp)):
        t = cnnlab.tensor(backend.to_device(x, dev), requires_grad=True)
        out = t[xp.asarray(idx)]
        out.backward(cnnlab.tensor(backend.to_device(g, dev)))
        assert t.grad.device == dev
        np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-14, atol=1e-14)
    out = cp.zeros(5)
    backend.scatter_add(out, cp.asarray([1, 1, 3]), cp.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(cp.asnumpy(out), [0, 3, 0, 3, 0])


def test_gradcheck_takes_gpu_inputs():
    """gradcheck's CuPy branch: GPU arrays and GPU tensors are checked on the CPU, and a wrong
    backward is still caught."""
    a = cp.asarray(rng.standard_normal((3, 4)))
    assert cnnlab.gradcheck(lambda t: (t * t).sum(1), [a])[0] < 1e-7
    t = cnnlab.tensor(a, requires_grad=True)
    assert cnnlab.gradcheck(lambda u: u.exp() * 2, [t])[0] < 1e-7

    class Wrong(cnnlab.Function):
        def forward(self, v):
            return v * v

        def backward(self, grad):
            return grad  # should be 2 v grad

    with pytest.raises(GradcheckError):
        cnnlab.gradcheck(Wrong.apply, [a])


@pytest.mark.parametrize("kwargs", [{}, {"max_shift": 2}, {"max_shift": 2, "hflip": True, "mean": 0.25, "std": 0.5}])
def test_device_loader_on_the_gpu_matches_the_cpu(kwargs):
    """Batches cut, shifted, flipped and normalised on the GPU equal the same loader's on the CPU
    (tests/data/test_device_loader.py holds that one against references), over two epochs."""
    x, y = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8), rng.integers(0, 10, 37)
    gpu = DeviceLoader(x, y, 8, shuffle=True, seed=5, device="cuda", **kwargs)
    cpu = DeviceLoader(x, y, 8, shuffle=True, seed=5, device="cpu", **kwargs)
    for _ in range(2):
        batches = list(zip(gpu, cpu))
        assert len(batches) == 5
        for (xg, yg), (xc, yc) in batches:
            assert isinstance(xg, cp.ndarray) and isinstance(yg, cp.ndarray)
            assert xg.dtype == np.float32 and xg.shape == xc.shape and xg.shape[1:] == (1, 28, 28)
            np.testing.assert_array_equal(cp.asnumpy(yg), yc)
            np.testing.assert_allclose(cp.asnumpy(xg), xc, rtol=1e-6, atol=1e-6)
    if not kwargs:  # without augmentation: DataLoader's batches, in DataLoader's order
        for (xg, yg), (xd, yd) in zip(DeviceLoader(x, y, 8, seed=5, device="cuda"),
                                              DataLoader(x, y, 8, shuffle=True, seed=5)):
            np.testing.assert_array_equal(cp.asnumpy(yg), yd)
            np.testing.assert_allclose(cp.asnumpy(xg), xd, rtol=1e-6, atol=1e-6)


def test_module_and_tensor_moves():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).to("cuda")
    assert all(p.device == "cuda" for p in net.parameters())
    out = net(cnnlab.tensor(np.zeros((2, 1, 28, 28), np.float32)).cuda())
    assert out.device == "cuda" and out.cpu().device == "cpu"
    net.to("cpu")
    assert all(p.device == "cpu" for p in net.parameters())
