"""Activations, linear, losses, dropout, batch norm: finite differences and PyTorch."""

import math

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from harness import check_op, torch

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 7))
TARGET = np.array([0, 6, 3, 3])


def _along(a, dim, f):
    """f applied to every 1-D slice of a along dim."""
    return np.apply_along_axis(f, dim, a)


def _softmax(v):
    e = np.array([math.exp(t) for t in v])
    return e / math.fsum(e)


def _log_softmax(v):
    return np.array([t - math.log(math.fsum(math.exp(u) for u in v)) for t in v])


TF = torch.nn.functional
# name, cnnlab, the definition (NumPy), PyTorch
UNARY = [
    ("relu", F.relu, lambda a: np.where(a > 0, a, 0.0), TF.relu),
    ("sigmoid", F.sigmoid, lambda a: 1 / (1 + np.exp(-a)), torch.sigmoid),
    ("tanh", F.tanh, lambda a: (np.exp(a) - np.exp(-a)) / (np.exp(a) + np.exp(-a)), torch.tanh),
    ("softmax0", lambda t: F.softmax(t, 0), lambda a: _along(a, 0, _softmax), lambda t: torch.softmax(t, 0)),
    ("softmax1", lambda t: F.softmax(t, 1), lambda a: _along(a, 1, _softmax), lambda t: torch.softmax(t, 1)),
    ("log_softmax", lambda t: F.log_softmax(t, 1), lambda a: _along(a, 1, _log_softmax),
     lambda t: torch.log_softmax(t, 1)),
    ("log_softmax0", lambda t: F.log_softmax(t, 0), lambda a: _along(a, 0, _log_softmax),
     lambda t: torch.log_softmax(t, 0)),
    ("flatten", lambda t: F.flatten(t.reshape(2, 2, 7), 1), lambda a: a.reshape(2, 14),
     lambda t: torch.flatten(t.reshape(2, 2, 7), 1)),
    ("flatten0", lambda t: F.flatten(t.reshape(2, 2, 7)), lambda a: a.reshape(28),
     lambda t: torch.flatten(t.reshape(2, 2, 7))),
]


@pytest.mark.parametrize("name,fn,ref,tfn", UNARY, ids=[c[0] for c in UNARY])
def test_unary(name, fn, ref, tfn):
    check_op(fn, [X], ref, tfn)


def test_sigmoid_saturates_without_overflow():
    out = F.sigmoid(cnnlab.tensor(np.array([-1000.0, 0.0, 1000.0]))).numpy()
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def _naive_linear(x, w, b=None):
    """out[n, o] = b[o] + sum_i x[n, i] * w[o, i], one number at a time."""
    out = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[n, o] = (0.0 if b is None else b[o]) + math.fsum(x[n, i] * w[o, i] for i in range(w.shape[1]))
    return out


def test_linear():
    w, b = rng.standard_normal((3, 7)), rng.standard_normal(3)
    check_op(F.linear, [X, w, b], _naive_linear, TF.linear)
    check_op(F.linear, [X, w], _naive_linear, TF.linear)  # no bias
    with pytest.raises(ValueError, match="features"):
        F.linear(cnnlab.tensor(X), cnnlab.tensor(np.ones((3, 5))))


@pytest.mark.parametrize("shape", [(3, 7), (64, 7), (65, 7), (200, 7), (2, 5, 7), (40, 3, 7)])
def test_linear_both_product_orders_match_the_definition(shape, monkeypatch):
    """Up to LINEAR_SMALL_BATCH rows the forward multiplies w @ x.T; more rows, x @ w.T. Both are the
    definition."""
    from cnnlab.kernels import policy

    x = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal((4, 7)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    naive = np.zeros(shape[:-1] + (4,), np.float64)
    for idx in np.ndindex(*shape[:-1]):
        for o in range(4):
            naive[idx + (o,)] = b[o] + sum(float(x[idx + (i,)]) * float(w[o, i]) for i in range(7))
    outs = []
    for small in (0, policy.LINEAR_SMALL_BATCH):
        monkeypatch.setattr(policy, "LINEAR_SMALL_BATCH", small)
        out = F.linear(cnnlab.tensor(x), cnnlab.tensor(w), cnnlab.tensor(b)).numpy()
        assert out.shape == naive.shape and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out, naive, rtol=1e-5, atol=1e-5)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)


def _naive_cross_entropy(x, target, smoothing, reduction):
    """loss[n] = -(1 - s) log p[n, target[n]] - s/C sum_c log p[n, c], p = softmax(x[n]), row by row."""
    C = x.shape[1]
    losses = []
    for row, t in zip(x, target):
        logp = _log_softmax(row)
        losses.append(-(1 - smoothing) * logp[t] - smoothing / C * math.fsum(logp))
    losses = np.array(losses)
    return {"none": losses, "sum": math.fsum(losses), "mean": math.fsum(losses) / len(losses)}[reduction]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(smoothing, reduction):
    check_op(lambda t: F.cross_entropy(t, TARGET, label_smoothing=smoothing, reduction=reduction), [X],
             lambda a: _naive_cross_entropy(a, TARGET, smoothing, reduction),
             lambda t: TF.cross_entropy(t, torch.tensor(TARGET), label_smoothing=smoothing, reduction=reduction))


def test_cross_entropy_stable_for_huge_logits():
    logits = cnnlab.tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]]))
    loss = F.cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(reduction):
    # loss[n] = -log_probs[n, target[n]]
    picked = lambda a: np.array([-a[n, t] for n, t in enumerate(TARGET)])  # noqa: E731
    check_op(lambda t: F.nll_loss(t, TARGET, reduction=reduction), [X],
             lambda a: {"none": picked(a), "sum": picked(a).sum(), "mean": picked(a).mean()}[reduction],
             lambda t: TF.nll_loss(t, torch.tensor(TARGET), reduction=reduction))
    check_op(lambda t: F.nll_loss(F.log_softmax(t, 1), TARGET), [X], None,
             lambda t: TF.nll_loss(torch.log_softmax(t, 1), torch.tensor(TARGET)))


@pytest.mark.parametrize("target,match", [
    (np.array([0, 1]), "shape"), (np.array([0, 1, 2, 7]), r"\[0, 6\]"), (np.array([0., 1, 2, 3]), "integer"),
])
def test_loss_target_errors(target, match):
    with pytest.raises(ValueError, match=match):
        F.cross_entropy(cnnlab.tensor(X), target)


def test_dropout_inverted_and_seeded():
    x = cnnlab.tensor(np.ones((200, 50)), requires_grad=True)
    cnnlab.manual_seed(3)
    y = F.dropout(x, 0.3, training=True)
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7)
    cnnlab.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.3, training=True).numpy(), y.numpy())
    assert F.dropout(x, 0.3, training=False) is x
    with pytest.raises(ValueError, match="p must be"):
        F.dropout(x, 1.5)


def _naive_batch_norm(x, w, b, eps=1e-5):
    """w[c] (x - mean_c) / sqrt(var_c + eps) + b[c] with channel c's (biased) batch statistics."""
    out = np.zeros_like(x)
    for c in range(x.shape[1]):
        vals = x[:, c].ravel()
        mu = math.fsum(vals) / len(vals)
        var = math.fsum((v - mu) ** 2 for v in vals) / len(vals)
        out[:, c] = w[c] * (x[:, c] - mu) / math.sqrt(var + eps) + b[c]
    return out


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (3, 3, 7)])
def test_batch_norm_training(shape):
    x = rng.standard_normal(shape) * 3 + 1
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    check_op(lambda t, ww, bb: F.batch_norm(t, None, None, ww, bb, training=True), [x, w, b], _naive_batch_norm,
             lambda t, ww, bb: TF.batch_norm(t, None, None, ww, bb, training=True))


def test_batch_norm_running_stats_and_eval_match_torch():
    x = rng.standard_normal((8, 3, 4, 4)) * 2 + 0.5
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    rmt, rvt = cnnlab.tensor(np.zeros(3)), cnnlab.tensor(np.ones(3))
    for i in range(3):
        xi = x * (i + 1)
        F.batch_norm(cnnlab.tensor(xi), rmt, rvt, training=True, momentum=0.2)  # updates in place
        torch.nn.functional.batch_norm(torch.tensor(xi), trm, trv, training=True, momentum=0.2)
    np.testing.assert_allclose(rmt.numpy(), trm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rvt.numpy(), trv.numpy(), rtol=1e-12)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rmt.numpy().copy(), rvt.numpy().copy()
    check_op(lambda t: F.batch_norm(t, rmt, rvt, cnnlab.tensor(w), cnnlab.tensor(b), training=False), [x],
             lambda a: w[None, :, None, None] * (a - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
             + b[None, :, None, None],
             lambda t: torch.nn.functional.batch_norm(t, trm, trv, torch.tensor(w), torch.tensor(b)),
             dtypes=(np.float64,))
