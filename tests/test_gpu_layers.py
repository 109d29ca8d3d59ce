"""The PyTorch-named layers and tensor functions added for issue 19 on an NVIDIA GPU through CuPy,
against the CPU path. Skipped where CuPy or a GPU is missing, like tests/test_gpu.py (marked `gpu`)."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import nn, viz
from helpers import cuda

cp, NO_GPU = cuda()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=NO_GPU)]

rng = np.random.default_rng(0)

OPS = [  # name, function of tensors, input shapes
    ("gelu", F.gelu, [(4, 5, 6)]),
    ("gelu_tanh", lambda x: F.gelu(x, "tanh"), [(4, 5, 6)]),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), [(4, 5, 6)]),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), [(2, 3, 7, 9)]),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, (5, 6), w, b), [(3, 4, 5, 6), (5, 6), (5, 6)]),
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [(3, 4, 5, 6), (4,), (4,)]),
    ("conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1, groups=2),
     [(2, 4, 5, 6), (4, 3, 3, 3)]),
    ("cat_stack", lambda a, b: cnnlab.cat([a, b], 1) + cnnlab.stack([a, b], 1).reshape(2, 6, 4), [(2, 3, 4)] * 2),
    ("squeeze_clone", lambda a: a.unsqueeze(0).clone().squeeze() * 2, [(3, 4)]),
]


def _run(fn, arrays, device):
    ts = [cnnlab.tensor(a).to(device).requires_grad_() for a in arrays]
    out = fn(*ts)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    out.backward(cnnlab.tensor(g).to(device))
    assert out.device == device
    return out.numpy(), [t.grad.numpy() for t in ts]


def _close(a, b, rtol=1e-5):
    err = np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)
    assert err < rtol, f"relative error {err:.2e}"


@pytest.mark.parametrize("name,fn,shapes", OPS, ids=[o[0] for o in OPS])
def test_gpu_matches_cpu(name, fn, shapes):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    cpu_out, cpu_grads = _run(fn, arrays, "cpu")
    gpu_out, gpu_grads = _run(fn, arrays, "cuda")
    _close(gpu_out, cpu_out)
    for a, b in zip(gpu_grads, cpu_grads):
        _close(a, b)


def test_dropout2d_clipping_buffers_and_gradcam_on_the_gpu():
    x = cnnlab.ones(8, 16, 3, 3).to("cuda")
    y = F.dropout2d(x, 0.5).numpy()
    assert set(np.unique(y[:, :, 0, 0]).tolist()) <= {0.0, 2.0} and (y == y[:, :, :1, :1]).all()
    cnnlab.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4))
    model.register_buffer("scale", cnnlab.ones(4))
    picture = rng.standard_normal((1, 1, 10, 10)).astype(np.float32)
    want = viz.grad_cam(model, picture, target=2)
    model.to("cuda")
    assert model.scale.device == "cuda"
    got = viz.grad_cam(model, cnnlab.tensor(picture).to("cuda"), target=2)
    _close(got.map, want.map, 1e-4)
    model(cnnlab.tensor(picture).to("cuda")).sum().backward()
    total = nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    assert total.device == "cuda" and total.item() > 0.1
    norm = np.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in model.parameters()))
    assert norm == pytest.approx(0.1, rel=1e-4)
