"""Gradient clipping with PyTorch's names and semantics: ``clip_grad_norm_`` and ``clip_grad_value_``.

Call them between ``loss.backward()`` and ``optimizer.step()``; both change the ``.grad`` of the
parameters in place, on whichever device the gradients are (NumPy or CuPy)."""

from __future__ import annotations

import math

from .. import backend
from ..autograd import Tensor


def _grads(name, parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    try:
        params = list(parameters)
    except TypeError:
        raise TypeError(f"{name}: parameters must be a Tensor or an iterable of Tensors, "
                        f"got {type(parameters).__name__}") from None
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}: parameters must be Tensors, got a {type(p).__name__}")
    return [p.grad for p in params if p.grad is not None]


def _number(name, what, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}")
    return float(value)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> Tensor:
    """Scale the gradients together so that their joint ``norm_type``-norm (that of all of them as one
    vector; ``inf`` for the largest magnitude) is at most ``max_norm``: each is multiplied by
    ``min(1, max_norm / (total + 1e-6))``. Returns the total norm before clipping, as a 0-d Tensor.

    Raises RuntimeError when the total is NaN or infinite and ``error_if_nonfinite`` is set (else the
    gradients are scaled by a non-finite factor, as in PyTorch)."""
    max_norm = _number("clip_grad_norm_", "max_norm", max_norm)
    norm_type = _number("clip_grad_norm_", "norm_type", norm_type)
    grads = _grads("clip_grad_norm_", parameters)
    if not grads:
        return Tensor(backend.DEFAULT_DTYPE(0.0))
    xp = backend.get_array_module(grads[0].data)
    if math.isinf(norm_type):
        norms = [xp.abs(g.data).max() if g.size else xp.zeros((), g.dtype) for g in grads]
        total = xp.stack([xp.asarray(n, dtype=grads[0].dtype) for n in norms]).max()
    else:
        norms = [xp.linalg.norm(g.data.reshape(-1), ord=norm_type) for g in grads]
        total = xp.linalg.norm(xp.stack([xp.asarray(n, dtype=grads[0].dtype) for n in norms]), ord=norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                           f"{float(total)}; pass error_if_nonfinite=False to clip anyway")
    coef = min(max_norm / (float(total) + 1e-6), 1.0) if math.isfinite(float(total)) else max_norm / float(total)
    for g in grads:
        g.data *= g.dtype.type(coef)
    return Tensor(xp.asarray(total))


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient entry into [-clip_value, clip_value], in place."""
    clip_value = _number("clip_grad_value_", "clip_value", clip_value)
    for g in _grads("clip_grad_value_", parameters):
        xp = backend.get_array_module(g.data)
        g.data = xp.clip(g.data, -clip_value, clip_value, out=g.data)
