"""Batch norm followed by ReLU as one operator (F.batch_norm_relu) and its use by nn.fuse:
against a naive per-channel loop of the definition, by float64 finite differences, against
PyTorch, against the separate operators, and in the zoo's batch-norm nets."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels, models, nn
from cnnlab.functional.layers import BatchNormReLUEval, BatchNormReLUTrain
from harness import check_op, rel_error, torch

SHAPES = [(6, 3), (5, 4, 7), (4, 3, 5, 6)]  # (N, C), (N, C, L), (N, C, H, W)


def _naive(x, w, b, eps, mean=None, var=None):
    """relu(w * (x - mean) / sqrt(var + eps) + b), channel by channel and element by element; the
    batch's own (biased) statistics unless mean and var are given."""
    out = np.zeros_like(x)
    for c in range(x.shape[1]):
        vals = x[:, c].ravel()
        mu = sum(vals) / len(vals) if mean is None else mean[c]
        vr = sum((v - mu) ** 2 for v in vals) / len(vals) if var is None else var[c]
        for idx in np.ndindex(x[:, c].shape):
            full = (idx[0], c) + idx[1:]
            out[full] = max(0.0, w[c] * (x[full] - mu) / np.sqrt(vr + eps) + b[c])
    return out


def _arrays(shape, seed):
    rng = np.random.default_rng(seed)
    C = shape[1]
    return rng.standard_normal(shape) * 2 + 0.3, rng.standard_normal(C), rng.standard_normal(C)


def _fused_train(x, w, b):
    return F.batch_norm_relu(x, None, None, w, b, training=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_training_mode(shape):
    """Batch statistics: the definition, finite differences, PyTorch in float64 and float32."""
    check_op(_fused_train, list(_arrays(shape, 0)), lambda x, w, b: _naive(x, w, b, 1e-5),
             lambda t, ww, bb: torch.relu(torch.nn.functional.batch_norm(t, None, None, ww, bb, training=True)),
             ref_rtol=1e-12, ref_atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_eval_mode(shape, dtype):
    """Running statistics: the definition, finite differences, PyTorch (running statistics of the input's dtype)."""
    C = shape[1]
    rm, rv = np.linspace(-0.5, 0.5, C).astype(dtype), np.linspace(0.5, 2.0, C).astype(dtype)
    check_op(lambda t, ww, bb: F.batch_norm_relu(t, cnnlab.tensor(rm), cnnlab.tensor(rv), ww, bb),
             list(_arrays(shape, 5)),
             lambda x, w, b: _naive(x, w, b, 1e-5, rm.astype(np.float64), rv.astype(np.float64)),
             lambda t, ww, bb: torch.relu(torch.nn.functional.batch_norm(t, torch.tensor(rm), torch.tensor(rv), ww, bb)),
             ref_rtol=1e-12, ref_atol=1e-12, fd=dtype == np.float64, dtypes=(dtype,))


def test_the_fused_operators_are_the_ones_tested():
    x, w, b = (cnnlab.tensor(a, requires_grad=True) for a in _arrays((4, 3, 5, 5), 4))
    assert isinstance(_fused_train(x, w, b)._ctx, BatchNormReLUTrain)
    rm, rv = cnnlab.tensor(np.zeros(3)), cnnlab.tensor(np.ones(3))
    assert isinstance(F.batch_norm_relu(x, rm, rv, w, b)._ctx, BatchNormReLUEval)
    with kernels.compiled(False):  # the separate operators: ReLU last
        assert type(_fused_train(x, w, b)._ctx).__name__ == "ReLU"


def test_running_statistics_match_torch():
    x = np.random.default_rng(6).standard_normal((8, 3, 4, 4)) * 2 + 0.5
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    rm, rv = cnnlab.tensor(np.zeros(3)), cnnlab.tensor(np.ones(3))
    for i in range(3):
        F.batch_norm_relu(cnnlab.tensor(x * (i + 1)), rm, rv, training=True, momentum=0.2)
        torch.nn.functional.batch_norm(torch.tensor(x * (i + 1)), trm, trv, training=True, momentum=0.2)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_the_separate_operators(dtype):
    x, w, b = (a.astype(dtype) for a in _arrays((16, 8, 9, 9), 7))
    upstream = np.random.default_rng(8).standard_normal(x.shape).astype(dtype)
    results = []
    for compiled in (True, False):
        ts = [cnnlab.tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
        rm, rv = cnnlab.tensor(np.zeros(8, dtype)), cnnlab.tensor(np.ones(8, dtype))
        with kernels.compiled(compiled):
            out = F.batch_norm_relu(*ts[:1], rm, rv, *ts[1:], training=True)
            out.backward(cnnlab.tensor(upstream))
        results.append([out.numpy(), *(t.grad.numpy() for t in ts), rm.numpy(), rv.numpy()])
        assert all(r.dtype == dtype for r in results[-1])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for fused, separate in zip(*results):
        assert rel_error(fused, separate) < tol


@pytest.mark.parametrize("name", ["best-vgg", "default"])
def test_fuse_fuses_batch_norm_and_relu(name, monkeypatch):
    cnnlab.manual_seed(0)
    model = models.build(name)
    fused_model = nn.fuse(model)
    x = np.random.default_rng(9).standard_normal((6, 1, 28, 28)).astype(np.float32)
    calls = []
    real = F.batch_norm_relu
    monkeypatch.setattr(F, "batch_norm_relu", lambda *a, **k: calls.append(1) or real(*a, **k))
    for training in (True, False):
        model.train(training)
        cnnlab.manual_seed(1)  # the same dropout masks for both ways of running the layers
        fused = fused_model(cnnlab.tensor(x))
        cnnlab.manual_seed(1)
        n = len(calls)
        separate = model(cnnlab.tensor(x))  # the unfused model: its layers one by one
        assert len(calls) == n
        assert rel_error(fused.numpy(), separate.numpy()) < 1e-5
    bns = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.layers)
    assert len(calls) == 2 * bns > 0  # every batch norm here is followed by a ReLU


def test_errors_name_the_problem():
    x = cnnlab.tensor(np.ones((4, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"batch_norm_relu: weight must have shape \(3,\)"):
        F.batch_norm_relu(x, None, None, cnnlab.tensor(np.ones(2)), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm_relu(cnnlab.tensor(np.ones((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        F.batch_norm_relu(cnnlab.tensor(np.ones(3)), None, None, training=True)
    for model in (nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()), nn.fuse(nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))):
        with pytest.raises(ValueError, match=r"BatchNorm2d\(4\): input has 3 channels"):
            model(x)
