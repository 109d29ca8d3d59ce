"""The operator check every operator test goes through (tinygrad's ``helper_test_op``, with a
naive reference and finite differences added).

One call holds a cnnlab operator against three independent things::

    check_op(F.relu, [(4, 7)], reference=lambda x: np.where(x > 0, x, 0.0), torch_fn=torch.relu)

1. the naive reference, a NumPy function written straight from the definition (loops welcome),
   on float64 inputs: forward values, shape and dtype;
2. float64 central finite differences of every input's gradient, through ``cnnlab.gradcheck``
   (relative error below ``FD_TOL``);
3. the same PyTorch function (CPU), forward values and every input gradient for one random
   upstream gradient: float64 to ``F64_RTOL`` and float32 to ``F32_RTOL`` (cs231n's relative
   error over the whole array), the output keeping the input's dtype.

``inputs`` are arrays, or shapes (filled with standard normal numbers from ``seed``); every one of
them is differentiated. Constants (integer targets, running statistics, settings) belong in a
closure, or in ``kwargs``, which all three functions receive: cnnlab uses PyTorch's argument names.
"""

from __future__ import annotations

import numpy as np
import torch  # the test extra installs it; a missing PyTorch is an error, not a skip

import cnnlab
from cnnlab.numerical import relative_error as rel_error

F64_RTOL = 1e-10  # float64 against PyTorch: a few roundings apart (measured: below 1e-15)
F32_RTOL = 1e-5  # float32 against PyTorch (measured: below 5e-7 over every operator test)
FD_TOL = 1e-7  # float64 finite differences: a correct backward scores ~1e-9, a wrong one ~1e-2


def make_inputs(inputs, seed=0):
    """Shapes become standard normal float64 arrays (from ``seed``); arrays are copied as float64."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(a) if isinstance(a, tuple) else np.array(a, dtype=np.float64) for a in inputs]


def cnn_forward_backward(fn, arrays, upstream, requires=None):
    """Run fn on cnnlab tensors; return (output array, [grad arrays])."""
    requires = requires or [True] * len(arrays)
    ts = [cnnlab.tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, requires)]
    out = fn(*ts)
    out.backward(cnnlab.tensor(upstream))
    return out.numpy(), [t.grad.numpy() if t.grad is not None else None for t in ts]


def check_reference(fn, reference, arrays, rtol=1e-10, atol=1e-12):
    """fn on float64 tensors against ``reference`` on the same arrays: shape, dtype and values."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    out = fn(*[cnnlab.tensor(a.copy()) for a in arrays])
    ref = np.asarray(reference(*[a.copy() for a in arrays]))
    assert out.shape == ref.shape, f"shape {out.shape}, the definition gives {ref.shape}"
    assert out.dtype == np.float64, f"float64 in, {out.dtype} out"
    np.testing.assert_allclose(out.numpy(), ref, rtol=rtol, atol=atol, err_msg="forward against the definition")


def check_gradients(fn, arrays, seed=0, eps=1e-6, tol=FD_TOL):
    """float64 finite-difference check of every input's gradient (``cnnlab.gradcheck``, which
    tests/test_numerical.py shows catching wrong backward passes); returns the worst error."""
    errors = cnnlab.gradcheck(fn, [np.asarray(a, dtype=np.float64) for a in arrays], eps=eps, tol=tol, seed=seed)
    return max(errors.values())


def check_against_torch(fn, torch_fn, arrays, dtype=np.float64, seed=0, rtol=None):
    """Forward and every input gradient of a cnnlab op against the same PyTorch op."""
    rtol = rtol if rtol is not None else (F64_RTOL if dtype == np.float64 else F32_RTOL)
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
        assert g is not None, f"input {i} got no gradient (PyTorch gives one)"
        err = rel_error(g, t.grad.numpy())
        assert err < rtol, f"gradient of input {i}: relative error {err:.3g} >= {rtol}"
        assert g.dtype == dtype


def check_op(fn, inputs, reference=None, torch_fn=None, *, kwargs=None, seed=0, ref_rtol=1e-10, ref_atol=1e-12,
             fd=True, eps=1e-6, fd_tol=FD_TOL, f64_rtol=F64_RTOL, f32_rtol=F32_RTOL,
             dtypes=(np.float64, np.float32)):
    """Check ``fn(*tensors, **kwargs)`` against ``reference`` (NumPy, from the definition), float64
    finite differences and ``torch_fn`` in each of ``dtypes`` (see the module's docstring).

    Args:
        fn: the cnnlab operator (takes one Tensor per input).
        inputs: arrays or shapes, one per differentiated input.
        reference: NumPy function of the float64 arrays (None: no naive check).
        torch_fn: the matching PyTorch function (None: no PyTorch check).
        kwargs: keyword arguments passed to all three.
        fd: whether to run the finite-difference check (off where a kink makes it meaningless).
    Returns the float64 input arrays, for further checks.
    """
    kwargs = kwargs or {}
    arrays = make_inputs(inputs, seed)

    def ours(*t):
        return fn(*t, **kwargs)

    if reference is not None:
        check_reference(ours, lambda *a: reference(*a, **kwargs), arrays, ref_rtol, ref_atol)
    if fd:
        check_gradients(ours, arrays, seed=seed, eps=eps, tol=fd_tol)
    if torch_fn is not None:
        for dtype in dtypes:
            check_against_torch(ours, lambda *t: torch_fn(*t, **kwargs), arrays, dtype=dtype, seed=seed,
                                rtol=f64_rtol if dtype == np.float64 else f32_rtol)
    return arrays
