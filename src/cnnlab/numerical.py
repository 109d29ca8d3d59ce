"""Check a backward pass against finite differences, the way cs231n and Nielsen teach it.

``gradcheck(fn, inputs)`` runs ``fn`` on float64 copies of the inputs, back-propagates a random
upstream gradient ``u`` through cnnlab's autograd, and compares every input's gradient with the
central difference of ``sum(fn(x) * u)``:

    d/dx[i] ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

The score per input is cs231n's relative error ``|a - n| / (|a| + |n|)`` over the whole array
(Euclidean norms). In float64 a correct backward pass scores about 1e-9 or better; a wrong one
scores 1e-2 or more. Use it on your own :class:`cnnlab.Function` before you train with it.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .autograd import Tensor, no_grad

__all__ = ["GradcheckError", "gradcheck", "relative_error"]


class GradcheckError(AssertionError):
    """A gradient from backward disagrees with its finite difference."""


def relative_error(a, b) -> float:
    """||a - b|| / (||a|| + ||b||) (0 when both are zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den > 0 else 0.0


def _prepare(i, x):
    """Input ``i`` as (value, checked): a float64 NumPy copy if its gradient is checked (arrays, and
    Tensors with requires_grad), else the value as given (a constant, e.g. integer labels)."""
    if isinstance(x, Tensor) and not x.requires_grad:
        return x, False
    if isinstance(x, Tensor):
        x = x.data
    if hasattr(x, "__cuda_array_interface__"):  # a CuPy array: checked on the CPU
        x = backend.to_device(x, "cpu")
    a = np.array(x, copy=True)
    if a.dtype.kind != "f":
        raise TypeError(f"gradcheck: input {i} holds {a.dtype} values; finite differences need floating-point "
                        f"inputs (give a float64 array, or a Tensor with requires_grad=False for a constant)")
    return a.astype(np.float64), True


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0:
        raise ValueError(f"gradcheck: {name} must be a positive number, got {v!r}")


def gradcheck(fn, inputs, *, eps: float = 1e-6, tol: float = 1e-7, seed: int = 0,
              raise_exception: bool = True) -> dict[int, float]:
    """Compare ``fn``'s autograd gradients with central finite differences, in float64.

    Args:
        fn: takes one Tensor per input and returns a Tensor (of any shape) built with cnnlab
            operations; it must keep float64 (no cast to float32 inside).
        inputs: arrays or Tensors. Arrays are all checked; a Tensor only if it has
            ``requires_grad=True`` (the others are passed as constants).
        eps: the finite-difference step.
        tol: the largest relative error accepted.
        seed: seed of the random upstream gradient.
        raise_exception: raise :class:`GradcheckError` on a failure (else just return the errors).

    Returns:
        ``{input index: relative error}`` for every checked input.

    Cost: two calls of ``fn`` per input element, so keep the inputs small (tens to hundreds
    of numbers), as cs231n does.
    """
    if not callable(fn):
        raise TypeError(f"gradcheck: fn must be callable, got {type(fn).__name__}")
    if isinstance(inputs, (Tensor, np.ndarray)):
        inputs = (inputs,)
    inputs = list(inputs)
    if not inputs:
        raise ValueError("gradcheck: no inputs given")
    _positive("eps", eps)
    _positive("tol", tol)
    arrays, checked = zip(*(_prepare(i, x) for i, x in enumerate(inputs)))
    arrays = list(arrays)
    if not any(checked):
        raise ValueError("gradcheck: no input to check (every Tensor given has requires_grad=False)")

    def call(arrs, grad):
        """fn on the checked inputs as Tensors (requiring grad or not) and the constants as given."""
        ts = [Tensor(a, requires_grad=grad) if on else a for a, on in zip(arrs, checked)]
        out = fn(*ts)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a cnnlab Tensor, got {type(out).__name__}")
        if out.dtype != np.float64:
            raise TypeError(f"gradcheck: fn returned {out.dtype} values from float64 inputs; finite differences "
                            f"need float64 all the way through (is there a cast inside fn?)")
        return ts, out

    tensors, out = call([a.copy() if on else a for a, on in zip(arrays, checked)], True)
    upstream = np.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    out.backward(Tensor(upstream.copy()))

    def objective(arrs):
        with no_grad():
            return float((backend.to_device(call(arrs, False)[1].data, "cpu") * upstream).sum())

    errors = {}
    for i, (t, on) in enumerate(zip(tensors, checked)):
        if not on:
            continue
        analytic = np.zeros_like(arrays[i]) if t.grad is None else backend.to_device(t.grad.data, "cpu")
        numeric = np.zeros_like(arrays[i])
        work = [a.copy() if on_ else a for a, on_ in zip(arrays, checked)]
        flat, nflat = work[i].reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            plus = objective(work)
            flat[j] = old - eps
            minus = objective(work)
            flat[j] = old
            nflat[j] = (plus - minus) / (2 * eps)
        errors[i] = relative_error(analytic, numeric)
        if raise_exception and not errors[i] < tol:
            diff = np.abs(np.asarray(analytic, dtype=np.float64) - numeric)
            worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
            where = (f"; the largest difference at index {tuple(int(k) for k in worst)}: backward "
                     f"{float(np.asarray(analytic)[worst]):.6g}, finite difference {float(numeric[worst]):.6g}"
                     if diff.size else "")
            raise GradcheckError(f"gradcheck: the gradient of input {i} (shape {tuple(arrays[i].shape)}) has "
                                 f"relative error {errors[i]:.3g} against finite differences, above the "
                                 f"tolerance {tol:g}{where}")
    return errors
