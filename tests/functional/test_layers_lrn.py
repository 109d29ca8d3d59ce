"""Local response normalisation (AlexNet's): against a naive per-element loop of the definition,
by float64 finite differences, against PyTorch, and its module and errors."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels, models, nn
from harness import check_op, torch

SHAPES = [(2, 4, 5), (2, 6, 3, 4), (2, 3, 2, 3, 2)]  # 1-D, 2-D and 3-D feature maps
# (size, alpha, beta, k): odd and even windows, a window wider than the channels, the two betas
# computed with square roots and a general one; alpha large so the cross-channel term matters
SETTINGS = [(5, 0.8, 0.75, 1.5), (2, 0.5, 0.5, 2.0), (1, 0.3, 0.6, 1.0), (8, 1.2, 0.75, 1.0), (3, 1e-4, 0.75, 1.0)]


def _naive(x, size, alpha, beta, k):
    """out[n, c, p] = x[n, c, p] / (k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x[n, j, p]^2)^beta,
    one element at a time, channels outside the input left out of the sum."""
    out = np.zeros_like(x)
    C = x.shape[1]
    for idx in np.ndindex(x.shape):
        n, c, pos = idx[0], idx[1], idx[2:]
        total = 0.0
        for j in range(c - size // 2, c + (size - 1) // 2 + 1):
            if 0 <= j < C:
                total += x[(n, j) + pos] ** 2
        out[idx] = x[idx] / (k + alpha / size * total) ** beta
    return out


def _x(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape) * 1.5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("setting", SETTINGS)
def test_local_response_norm(shape, setting):
    """The definition, finite differences (not for alpha 1e-4, whose cross-channel term is below the
    differences' resolution) and PyTorch in float64 and float32."""
    check_op(lambda t: F.local_response_norm(t, *setting), [_x(shape, 0)], lambda a: _naive(a, *setting),
             lambda t: torch.nn.functional.local_response_norm(t, *setting), ref_rtol=1e-12, ref_atol=1e-14,
             fd=setting in SETTINGS[:4])


@pytest.mark.parametrize("shape", SHAPES + [(5, 32, 7, 7)])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_loop_equals_the_array_expressions(shape, setting, dtype, monkeypatch):
    """NumPy floats take one compiled pass per image (the batch split over the cores); other
    arrays (CuPy) the vectorised expressions. Both, forward and backward, agree."""
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_BYTES", 0)  # split even these small batches,
    monkeypatch.setattr(kernels.policy, "WORKERS", 3)  # in three parts, on any machine (a pool of three)
    x = _x(shape, 4).astype(dtype)
    g = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    results = []
    for compiled in (True, False):
        with kernels.compiled(compiled):
            t = cnnlab.tensor(x, requires_grad=True)
            out = F.local_response_norm(t, *setting)
            out.backward(cnnlab.tensor(g))
            results.append((out.numpy(), t.grad.numpy()))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for a, b in zip(*results):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", SHAPES + [(5, 32, 7, 7)])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inference_pass_equals_the_recorded_one(shape, setting, dtype, monkeypatch):
    """Without gradients (no_grad, or inputs that need none) NumPy floats take one compiled pass
    that keeps nothing for a backward pass: the same values as the pass that does, and the
    definition's."""
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(kernels.policy, "WORKERS", 3)
    x = _x(shape, 6).astype(dtype)
    recorded = F.local_response_norm(cnnlab.tensor(x, requires_grad=True), *setting)
    assert recorded.requires_grad
    with cnnlab.no_grad():
        plain = F.local_response_norm(cnnlab.tensor(x), *setting)
    tol = 1e-15 if dtype == np.float64 else 3e-7  # a general beta's pow may round one ulp apart
    np.testing.assert_allclose(plain.numpy(), recorded.numpy(), rtol=tol, atol=0)
    np.testing.assert_allclose(plain.numpy(), _naive(x.astype(np.float64), *setting),
                               rtol=1e-12 if dtype == np.float64 else 2e-6, atol=1e-14)


@pytest.mark.parametrize("shape", [(0, 4, 5), (2, 0, 5), (0, 3, 2, 2)])
def test_empty_inputs(shape):
    with cnnlab.no_grad():
        assert F.local_response_norm(cnnlab.tensor(np.zeros(shape)), 3).shape == shape
    x = cnnlab.tensor(np.zeros(shape), requires_grad=True)
    out = F.local_response_norm(x, 3)
    assert out.shape == shape
    out.backward(cnnlab.tensor(np.zeros(shape)))
    assert x.grad.shape == shape


def test_huge_inputs_do_not_overflow_in_float32():
    """(k + alpha/size * x^2)^0.75 for |x| ~ 1e16 is ~1e29, beyond float32, yet its inverse is not."""
    x = np.array([1e16, 1.0, 2.0], dtype=np.float32).reshape(1, 3, 1)
    for beta in (0.75, 0.5, 0.6):
        out = F.local_response_norm(cnnlab.tensor(x), 5, 1e-4, beta, 2.0).numpy()
        np.testing.assert_allclose(out, _naive(x.astype(np.float64), 5, 1e-4, beta, 2.0), rtol=1e-5)


def test_module_keeps_dtype_and_has_no_parameters():
    layer = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    assert repr(layer) == "LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=2.0)"
    assert list(layer.parameters()) == []
    x = cnnlab.tensor(_x((2, 7, 4, 4), 3).astype(np.float32), requires_grad=True)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_errors_name_the_problem():
    x = cnnlab.tensor(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"local_response_norm: expected input of 3 or more dimensions.*\(2, 3\)"):
        F.local_response_norm(cnnlab.tensor(np.ones((2, 3))), 2)
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        F.local_response_norm(x, 0)
    with pytest.raises(ValueError, match="size must be a positive int, got 2.5"):
        nn.LocalResponseNorm(2.5)
    with pytest.raises(ValueError, match="beta must be a finite number, got nan"):
        F.local_response_norm(x, 3, beta=float("nan"))
    with pytest.raises(ValueError, match="k must be positive"):
        F.local_response_norm(x, 3, k=0.0)
    with pytest.raises(ValueError, match="LocalResponseNorm: alpha must be a finite number, got 'big'"):
        nn.LocalResponseNorm(3, alpha="big")
    with pytest.raises(ValueError, match="five channel counts"):
        models.alexnet(c=(8, 8))


def test_alexnet_parameter_count():
    # five convolutions with biases, then FC 512 -> 1024 -> 1024 -> 10
    convs = (25 * 1 * 32 + 32) + (25 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + 2 * (9 * 128 * 128 + 128)
    fcs = (512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
    assert models.build("alexnet").num_parameters() == convs + fcs


def test_alexnet_matches_torch():
    """The zoo's AlexNet-style net (local response norm, overlapping 3x3/2 pools, the fused last
    conv-pool-ReLU block) against the same layers in PyTorch: loss and every gradient, float64."""
    net = models.build("alexnet")
    net.eval()  # dropout off in both
    T = torch.nn
    tnet = T.Sequential(
        T.Conv2d(1, 32, 5, padding=2), T.ReLU(), T.LocalResponseNorm(5, 1e-4, 0.75, 2.0), T.MaxPool2d(3, 2),
        T.Conv2d(32, 64, 5, padding=2), T.ReLU(), T.LocalResponseNorm(5, 1e-4, 0.75, 2.0), T.MaxPool2d(3, 2),
        T.Conv2d(64, 128, 3, padding=1), T.ReLU(), T.Conv2d(128, 128, 3, padding=1), T.ReLU(),
        T.Conv2d(128, 128, 3, padding=1), T.MaxPool2d(3, 2), T.ReLU(),
        T.Flatten(), T.Dropout(0.5), T.Linear(512, 1024), T.ReLU(), T.Dropout(0.5), T.Linear(1024, 1024), T.ReLU(),
        T.Linear(1024, 10)).double().eval()
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()})
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 28, 28)) * 3, rng.integers(0, 10, 4)
    net_params = list(net.parameters())
    for p in net_params:
        p.data = p.data.astype(np.float64)
    loss = F.cross_entropy(net(cnnlab.tensor(x)), y)
    loss.backward()
    tloss = T.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y))
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-10)
    for (name, p), tp in zip(net.named_parameters(), tnet.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)
