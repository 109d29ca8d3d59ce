"""Max, average and L2 (Lp) pooling in 1-3 D: naive definition, finite differences, PyTorch."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels
from harness import check_op, torch
from helpers import naive_pool

MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
LP = {1: F.lp_pool1d, 2: F.lp_pool2d, 3: F.lp_pool3d}


def random_config(rng, d, allow_padding=True):
    k = tuple(int(v) for v in rng.integers(1, 4, size=d))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=d))  # stride < k: overlapping windows
    padding = tuple(int(rng.integers(0, kk // 2 + 1)) if allow_padding else 0 for kk in k)
    size = tuple(int(k[i] + rng.integers(0, 5 if d < 3 else 3)) for i in range(d))
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    # Distinct values spaced apart: no ties, and finite differences never flip an arg-max.
    n = N * C * int(np.prod(size))
    x = (rng.permutation(n) * 0.01 + 0.5).reshape((N, C) + size) * rng.choice([-1, 1], size=(N, C) + size)
    return x, k, stride, padding


# 54 random configurations; each goes through every check of the harness, for each kind of pool
CASES = [(d, seed) for d in (1, 2, 3) for seed in (*range(6), *range(100, 106), *range(200, 206))]
TF = torch.nn.functional
TMAX = {1: TF.max_pool1d, 2: TF.max_pool2d, 3: TF.max_pool3d}
TAVG = {1: TF.avg_pool1d, 2: TF.avg_pool2d, 3: TF.avg_pool3d}
TLP = {1: TF.lp_pool1d, 2: TF.lp_pool2d, 3: TF.lp_pool3d}


@pytest.mark.parametrize("d,seed", CASES)
def test_pools(d, seed):
    x, k, s, p = random_config(np.random.default_rng(seed), d)
    tk = k[0] if d == 1 else k  # torch.lp_pool1d wants an int
    check_op(lambda t: MAX[d](t, k, s, p), [x], lambda a: naive_pool(a, k, s, p, "max"),
             lambda t: TMAX[d](t, k, s, p), ref_rtol=1e-12)
    check_op(lambda t: AVG[d](t, k, s, p), [x], lambda a: naive_pool(a, k, s, p, "avg"),
             lambda t: TAVG[d](t, k, s, p), ref_rtol=1e-12)
    check_op(lambda t: LP[d](t, 2, k, s), [x], lambda a: naive_pool(a, k, s, (0,) * d, "lp", 2),
             lambda t: TLP[d](t, 2, tk, s), ref_rtol=1e-12)
    # p = 3 on |x| (a negative window sum has no real cube root); no finite differences through the abs
    np.testing.assert_allclose(LP[d](cnnlab.tensor(np.abs(x)), 3, k, s).numpy(),
                               naive_pool(np.abs(x), k, s, (0,) * d, "lp", 3), rtol=1e-12)


@pytest.mark.parametrize("size", [(6, 6), (5, 7), (4, 5)])
def test_the_compiled_2x2_stride_2_paths(size):
    # The commonest pooling has its own compiled loops (max and sum): even and ragged sizes, whose
    # last row or column belongs to no window, against the definition, finite differences and torch.
    rng = np.random.default_rng(sum(size))
    n = 2 * 3 * size[0] * size[1]
    x = ((rng.permutation(n) * 0.01 + 0.5) * rng.choice([-1, 1], n)).reshape((2, 3) + size)
    for name, fn in (("max", F.max_pool2d), ("avg", F.avg_pool2d)):
        np.testing.assert_allclose(fn(cnnlab.tensor(x), 2).numpy(), naive_pool(x, (2, 2), (2, 2), (0, 0), name),
                                   rtol=1e-12)
        tf = {"max": TF.max_pool2d, "avg": TF.avg_pool2d}[name]
        check_op(lambda t, f=fn: f(t, 2), [x], None, lambda t, f=tf: f(t, 2))


def test_max_pool_ties_route_to_one_winner_and_overlaps_accumulate():
    # All-equal window: exactly one element (the first) receives the gradient.
    x = cnnlab.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 0], [0, 0]])
    # Overlapping windows (stride 1) that share their maximum add up its gradient.
    x = cnnlab.tensor(np.array([[[[0., 0, 0], [0, 9, 0], [0, 0, 0]]]]), requires_grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    assert x.grad.numpy()[0, 0, 1, 1] == 4 and x.grad.numpy().sum() == 4
    # PyTorch also routes a tied window's gradient to its first element
    t = torch.ones((1, 1, 4, 4), dtype=torch.float64, requires_grad=True)
    torch.nn.functional.max_pool2d(t, 2).sum().backward()
    y = cnnlab.tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    F.max_pool2d(y, 2).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), t.grad.numpy())


def _naive_max_pool_grad(x, kernel, stride, padding, g):
    """Each output's gradient to the first position (C order within the window) holding its window's
    maximum; padding never wins; overlapping windows add up."""
    d = x.ndim - 2
    dx = np.zeros_like(x)
    for n, c in np.ndindex(*x.shape[:2]):
        for o in np.ndindex(*g.shape[2:]):
            best, where = -np.inf, None
            for j in np.ndindex(*kernel):
                pos = tuple(o[i] * stride[i] + j[i] - padding[i] for i in range(d))
                if all(0 <= pos[i] < x.shape[2 + i] for i in range(d)) and x[(n, c) + pos] > best:
                    best, where = x[(n, c) + pos], pos
            dx[(n, c) + where] += g[(n, c) + o]
    return dx


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_tied_windows_send_the_gradient_to_the_first_maximum_on_every_path(d, compiled):
    """Windows of equal values (0/1 inputs), overlapping and padded: the definition, PyTorch's CPU
    kernel, and both cnnlab paths (the compiled 2-D loops and the NumPy one) pick the first maximum."""
    rng = np.random.default_rng(d)
    x = rng.integers(0, 2, size=(2, 2) + (5,) * d).astype(np.float64)
    k, s, p = (3,) * d, (1,) * d, (1,) * d
    with kernels.compiled(compiled):
        out, grad, g, tout, tgrad = _max_pool_and_pytorch(x, d, k, s, p, rng)
    np.testing.assert_array_equal(out, naive_pool(x, k, s, p, "max"))
    np.testing.assert_array_equal(out, tout)
    np.testing.assert_allclose(grad, _naive_max_pool_grad(x, k, s, p, g), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, tgrad, rtol=1e-12, atol=1e-12)


def _max_pool_and_pytorch(x, d, k, s, p, rng):
    """cnnlab's d-D max pooling of x (float64) and PyTorch's, both differentiated with one random
    output gradient g: (out, x's gradient, g, PyTorch's out, PyTorch's x gradient), as arrays."""
    t = cnnlab.tensor(x, requires_grad=True)
    out = MAX[d](t, k, s, p)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    tt = torch.tensor(x, requires_grad=True)
    tout = TMAX[d](tt, k, s, p)
    tout.backward(torch.tensor(g))
    return out.numpy(), t.grad.numpy(), g, tout.detach().numpy(), tt.grad.numpy()


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_windows_over_the_whole_map(d, dtype):
    """Global pooling (one window the size of the map, the sum one product with ones), and 3-D and
    1-D windows in float32 (the compiled depth pass, the 2-D loops), against the definition and
    PyTorch; every path's gradient by finite differences in float64."""
    rng = np.random.default_rng(d)
    size = (7, 5, 4)[:d]
    n = 2 * 3 * int(np.prod(size))
    x = ((rng.permutation(n) * 0.01 + 0.5) * rng.choice([-1, 1], n)).reshape((2, 3) + size).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for k, s, p in ((size, size, (0,) * d), ((3,) * d, (2,) * d, (1,) * d)):
        for name, fn, tf in (("max", MAX[d], TMAX[d]), ("avg", AVG[d], TAVG[d])):
            t = cnnlab.tensor(x, requires_grad=True)
            out = fn(t, k, s, p)
            g = rng.standard_normal(out.shape)
            out.backward(g.astype(dtype))
            tt = torch.tensor(x.astype(np.float64), requires_grad=True)
            tout = tf(tt, k, s, p)
            tout.backward(torch.tensor(g))
            np.testing.assert_allclose(out.numpy(), naive_pool(x.astype(np.float64), k, s, p, name), rtol=tol,
                                       atol=tol)
            np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=tol, atol=tol)
            if dtype == np.float64:
                check_op(lambda a, f=fn, k=k, s=s, p=p: f(a, k, s, p), [x], None, None)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k,stride,padding", [(2, 2, 0), (3, 1, 1), (2, 1, 0)])
def test_max_pooling_propagates_nan_as_pytorch(d, k, stride, padding):
    """A window holding a NaN gives NaN, as in PyTorch, in every dimension and window (2x2/2,
    padded, overlapping); the other windows' values and gradients are PyTorch's, and each NaN
    window's gradient goes to one of its NaNs (the first; PyTorch's to the last)."""
    rng = np.random.default_rng(d * 10 + k)
    x = rng.standard_normal((2, 2) + (5,) * d)
    x.reshape(-1)[rng.choice(x.size, 6, replace=False)] = np.nan
    out, grad, _, tout, tgrad = _max_pool_and_pytorch(x, d, k, stride, padding, rng)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(tout))
    np.testing.assert_allclose(out, tout, rtol=0, atol=0)
    ok = ~np.isnan(x)
    np.testing.assert_allclose(grad[ok], tgrad[ok], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad.sum(), tgrad.sum(), rtol=1e-12)


@pytest.mark.parametrize("shape,fn", [((0, 3, 9, 9), lambda t: F.avg_pool2d(t, 3, 2, 1)),
                                      ((2, 0, 4, 4, 4), lambda t: F.avg_pool3d(t, 3, 1, 1)),
                                      ((0, 3, 4, 4, 4), lambda t: F.max_pool3d(t, 2)),
                                      ((0, 3, 8), lambda t: F.max_pool1d(t, 2)),
                                      ((2, 0, 7, 7), lambda t: F.avg_pool2d(t, 7))])
def test_empty_batches_and_channels(shape, fn):
    """No images or no channels: empty outputs and gradients of the right shapes, float32 (the
    depthwise kernels with unit weights, the depth pass, the global window)."""
    t = cnnlab.tensor(np.zeros(shape, np.float32), requires_grad=True)
    out = fn(t)
    out.backward(np.zeros(out.shape, np.float32))
    assert out.numpy().size == 0 and t.grad.numpy().shape == shape


def test_l2_pooling_is_the_articles_definition():
    x = np.array([[[[3., 4, 0, 0], [0, 0, 1, 1], [1, 2, 0, 0], [2, 4, 0, 0]]]])
    out = F.lp_pool2d(cnnlab.tensor(x), 2, 2).numpy()
    np.testing.assert_allclose(out[0, 0], [[5, np.sqrt(2)], [5, 0]])
    # A window of zeros has zero gradient (not NaN), as in PyTorch.
    t = cnnlab.tensor(x, requires_grad=True)
    F.lp_pool2d(t, 2, 2).sum().backward()
    assert np.isfinite(t.grad.numpy()).all()
    assert (t.grad.numpy()[0, 0, 2:, 2:] == 0).all()


def test_article_pooling_shape():
    x = cnnlab.tensor(np.zeros((5, 3, 24, 24), dtype=np.float32))
    assert F.max_pool2d(x, 2).shape == (5, 3, 12, 12)
    assert cnnlab.nn.MaxPool2d(2)(x).dtype == np.float32


@pytest.mark.parametrize("call,match", [
    (lambda: F.max_pool2d(cnnlab.tensor(np.ones((4, 4))), 2), "4-D input"),
    (lambda: F.max_pool2d(cnnlab.tensor(np.ones((1, 1, 4, 4))), 2, stride=0), "stride"),
    (lambda: F.max_pool2d(cnnlab.tensor(np.ones((1, 1, 4, 4))), 2, padding=2), "padding"),
    (lambda: F.avg_pool1d(cnnlab.tensor(np.ones((1, 1, 3))), 5), "larger than the padded input"),
    (lambda: F.lp_pool2d(cnnlab.tensor(np.ones((1, 1, 4, 4))), 0, 2), "norm_type"),
])
def test_pool_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
