"""Activations, linear, losses, dropout, batch norm: finite differences and PyTorch."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from helpers import check_against_torch, check_gradients, torch

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 7))
TARGET = np.array([0, 6, 3, 3])


def _unary_cases():
    tf = torch.nn.functional if torch is not None else None
    return [
        ("relu", F.relu, lambda t: tf.relu(t)),
        ("sigmoid", F.sigmoid, lambda t: torch.sigmoid(t)),
        ("tanh", F.tanh, lambda t: torch.tanh(t)),
        ("softmax0", lambda t: F.softmax(t, 0), lambda t: torch.softmax(t, 0)),
        ("softmax1", lambda t: F.softmax(t, 1), lambda t: torch.softmax(t, 1)),
        ("log_softmax", lambda t: F.log_softmax(t, 1), lambda t: torch.log_softmax(t, 1)),
        ("flatten", lambda t: F.flatten(t.reshape(2, 2, 7), 1), lambda t: torch.flatten(t.reshape(2, 2, 7), 1)),
        ("flatten0", lambda t: F.flatten(t.reshape(2, 2, 7)), lambda t: torch.flatten(t.reshape(2, 2, 7))),
    ]


@pytest.mark.parametrize("name,fn,_", _unary_cases(), ids=[c[0] for c in _unary_cases()])
def test_unary_gradients(name, fn, _):
    check_gradients(fn, [X])


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,fn,tfn", _unary_cases(), ids=[c[0] for c in _unary_cases()])
def test_unary_against_torch(name, fn, tfn, dtype):
    check_against_torch(fn, tfn, [X], dtype=dtype)


def test_sigmoid_saturates_without_overflow():
    out = F.sigmoid(cnnlab.tensor(np.array([-1000.0, 0.0, 1000.0]))).numpy()
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_linear():
    w, b = rng.standard_normal((3, 7)), rng.standard_normal(3)
    check_gradients(F.linear, [X, w, b])
    if torch is not None:
        for dtype in (np.float64, np.float32):
            check_against_torch(F.linear, torch.nn.functional.linear, [X, w, b], dtype=dtype)
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


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(smoothing, reduction):
    fn = lambda t: F.cross_entropy(t, TARGET, label_smoothing=smoothing, reduction=reduction)  # noqa: E731
    check_gradients(fn, [X])
    if torch is not None:
        tfn = lambda t: torch.nn.functional.cross_entropy(  # noqa: E731
            t, torch.tensor(TARGET), label_smoothing=smoothing, reduction=reduction)
        for dtype in (np.float64, np.float32):
            check_against_torch(fn, tfn, [X], dtype=dtype)


def test_cross_entropy_stable_for_huge_logits():
    logits = cnnlab.tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]]))
    loss = F.cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(0.0, abs=1e-12)


def test_nll_loss():
    fn = lambda t: F.nll_loss(F.log_softmax(t, 1), TARGET)  # noqa: E731
    check_gradients(fn, [X])
    if torch is not None:
        tfn = lambda t: torch.nn.functional.nll_loss(torch.log_softmax(t, 1), torch.tensor(TARGET))  # noqa: E731
        check_against_torch(fn, tfn, [X])


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


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (3, 3, 7)])
def test_batch_norm_training(shape):
    x = rng.standard_normal(shape) * 3 + 1
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    fn = lambda t, ww, bb: F.batch_norm(t, None, None, ww, bb, training=True)  # noqa: E731
    check_gradients(fn, [x, w, b])
    if torch is not None:
        tfn = lambda t, ww, bb: torch.nn.functional.batch_norm(t, None, None, ww, bb, training=True)  # noqa: E731
        for dtype in (np.float64, np.float32):
            check_against_torch(fn, tfn, [x, w, b], dtype=dtype)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
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
    check_against_torch(lambda t: F.batch_norm(t, rmt, rvt, cnnlab.tensor(w), cnnlab.tensor(b), training=False),
                        lambda t: torch.nn.functional.batch_norm(t, trm, trv, torch.tensor(w), torch.tensor(b)),
                        [x])
