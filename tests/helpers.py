"""Shared test machinery: naive references, finite differences, PyTorch comparison."""

from __future__ import annotations

import itertools

import numpy as np

import cnnlab
from cnnlab.numerical import relative_error as rel_error  # noqa: F401 - the tests' name for it

try:  # PyTorch is an optional reference: its tests skip cleanly without it.
    import torch
except ImportError:  # pragma: no cover
    torch = None


# ----------------------------------------------------------------------------- naive references
def naive_conv(x, w, b, stride, padding, dilation, groups):
    """Convolution straight from the definition: one output neuron at a time.

    out[n, f, o] = b[f] + sum_{c in group, j in kernel} w[f, c, j] * xpad[n, c, o*stride + j*dilation]
    """
    d = x.ndim - 2
    N, C = x.shape[:2]
    F, Cg = w.shape[:2]
    k = w.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding))
    out_shape = tuple((x.shape[2 + i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1
                      for i in range(d))
    out = np.zeros((N, F) + out_shape, dtype=x.dtype)
    Fg = F // groups
    for n in range(N):
        for f in range(F):
            g = f // Fg
            for o in itertools.product(*(range(s) for s in out_shape)):
                acc = 0.0 if b is None else b[f]
                for c in range(Cg):
                    for j in itertools.product(*(range(kk) for kk in k)):
                        pos = tuple(o[i] * stride[i] + j[i] * dilation[i] for i in range(d))
                        acc += w[(f, c) + j] * xpad[(n, g * Cg + c) + pos]
                out[(n, f) + o] = acc
    return out


def naive_pool(x, kernel, stride, padding, mode, p=2):
    """Pooling from the definition: max, mean (zeros padded, counted) or (sum x^p)^(1/p)."""
    d = x.ndim - 2
    fill = -np.inf if mode == "max" else 0.0
    xpad = np.pad(x, ((0, 0), (0, 0)) + tuple((q, q) for q in padding), constant_values=fill)
    out_shape = tuple((x.shape[2 + i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(d))
    N, C = x.shape[:2]
    out = np.zeros((N, C) + out_shape, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for o in itertools.product(*(range(s) for s in out_shape)):
                window = [xpad[(n, c) + tuple(o[i] * stride[i] + j[i] for i in range(d))]
                          for j in itertools.product(*(range(kk) for kk in kernel))]
                if mode == "max":
                    v = max(window)
                elif mode == "avg":
                    v = sum(window) / len(window)
                else:
                    v = sum(abs(t) ** p if p % 2 else t ** p for t in window) ** (1.0 / p)
                out[(n, c) + o] = v
    return out


# ----------------------------------------------------------------------------- finite differences
def cnn_forward_backward(fn, arrays, upstream, requires=None):
    """Run fn on cnnlab tensors; return (output array, [grad arrays])."""
    requires = requires or [True] * len(arrays)
    ts = [cnnlab.tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, requires)]
    out = fn(*ts)
    out.backward(cnnlab.tensor(upstream))
    return out.numpy(), [t.grad.numpy() if t.grad is not None else None for t in ts]


def check_gradients(fn, arrays, seed=0, eps=1e-6, tol=1e-7):
    """float64 finite-difference check of every input's gradient (``cnnlab.gradcheck``, which
    tests/test_gradcheck.py shows catching wrong backward passes); returns the worst error."""
    errors = cnnlab.gradcheck(fn, [np.asarray(a, dtype=np.float64) for a in arrays], eps=eps, tol=tol, seed=seed)
    return max(errors.values())


def check_against_torch(fn, torch_fn, arrays, dtype=np.float64, seed=0, rtol=None):
    """Forward and every input gradient of a cnnlab op against the same PyTorch op."""
    rtol = rtol if rtol is not None else (1e-10 if dtype == np.float64 else 1e-4)
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    tout = torch_fn(*tt)
    upstream = rng.standard_normal(tuple(tout.shape)).astype(dtype)
    tout.backward(torch.tensor(upstream))
    out, grads = cnn_forward_backward(fn, arrays, upstream)
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    assert out.shape == tuple(tout.shape), f"shape {out.shape} vs torch {tuple(tout.shape)}"
    err = rel_error(out, tout.detach().numpy())
    assert err < rtol, f"forward relative error {err:.3g} >= {rtol}"
    for i, (g, t) in enumerate(zip(grads, tt)):
        err = rel_error(g, t.grad.numpy())
        assert err < rtol, f"gradient of input {i}: relative error {err:.3g} >= {rtol}"
        assert g.dtype == dtype
