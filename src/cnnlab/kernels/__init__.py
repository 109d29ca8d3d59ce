"""The hot loops, chosen by array type in one place.

``generic`` works on any array module (NumPy or CuPy) and any number of spatial dimensions.
``cpu`` holds numba-compiled loops for 2-D work on NumPy arrays. The functions below pick the
fastest implementation that fits the arrays they are given; operators call only these.

Shapes: x (N, C, *S) unpadded; kernel k; output O; L = prod(O); K = prod(k).
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import generic

_compiled_enabled = True


@contextlib.contextmanager
def compiled(enabled: bool):
    """Temporarily switch the numba kernels on or off (tests compare both paths)."""
    global _compiled_enabled
    prev = _compiled_enabled
    _compiled_enabled = enabled
    try:
        yield
    finally:
        _compiled_enabled = prev


def _use_cpu(a, d) -> bool:
    return _compiled_enabled and d == 2 and isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)


def _cpu():
    from . import cpu  # noqa: PLC0415 - import (and numba) only when first needed

    return cpu


def _pad(x, padding, value=0.0):
    if not any(padding):
        return x
    xp = generic.backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding), constant_values=value)


def _unpad(xpad, padding):
    if not any(padding):
        return xpad
    return xpad[(slice(None), slice(None)) + tuple(slice(p, s - p) for p, s in zip(padding, xpad.shape[2:]))]


def _padded_shape(shape, padding):
    return tuple(shape[:2]) + tuple(s + 2 * p for s, p in zip(shape[2:], padding))


def im2col(x, kernel, stride, padding, dilation, out_shape):
    """(N, C, *S) -> (C*K, N*L): every receptive field as one column (zeros where padded)."""
    if _use_cpu(x, len(kernel)):
        return _cpu().im2col2d(np.ascontiguousarray(x), *kernel, *stride, *padding, *dilation, *out_shape)
    return generic.im2col(_pad(x, padding), kernel, stride, dilation, out_shape)


def col2im(cols, x_shape, kernel, stride, padding, dilation, out_shape):
    """Adjoint of im2col: (C*K, N*L) -> (N, C, *S), overlapping fields summed."""
    if _use_cpu(cols, len(kernel)):
        return _cpu().col2im2d(np.ascontiguousarray(cols), *x_shape, *kernel, *stride, *padding, *dilation,
                               *out_shape)
    xpad = generic.col2im(cols, _padded_shape(x_shape, padding), kernel, stride, dilation, out_shape, cols.dtype)
    return _unpad(xpad, padding)


def max_pool_forward(x, kernel, stride, padding, out_shape):
    """Returns (out (N, C, *O), routing information for max_pool_backward)."""
    if _use_cpu(x, len(kernel)):
        out, arg = _cpu().max_pool2d_forward(np.ascontiguousarray(x), *kernel, *stride, *padding, *out_shape)
        return out, ("cpu", arg)
    out, arg = generic.max_pool_forward(_pad(x, padding, -np.inf), kernel, stride, out_shape)
    return out, ("generic", arg)


def max_pool_backward(g, routing, x_shape, kernel, stride, padding, out_shape):
    kind, arg = routing
    if kind == "cpu":
        return _cpu().max_pool2d_backward(np.ascontiguousarray(g), arg, *x_shape[2:])
    dx = generic.max_pool_backward(g, arg, _padded_shape(x_shape, padding), kernel, stride, out_shape, g.dtype)
    return _unpad(dx, padding)


def sum_pool_forward(x, kernel, stride, padding, out_shape):
    """Sum over each window (zero padding): (N, C, *S) -> (N, C, *O)."""
    if _use_cpu(x, len(kernel)):
        return _cpu().sum_pool2d_forward(np.ascontiguousarray(x), *kernel, *stride, *padding, *out_shape)
    return generic.sum_pool_forward(_pad(x, padding), kernel, stride, out_shape)


def sum_pool_backward(g, x_shape, kernel, stride, padding, out_shape):
    if _use_cpu(g, len(kernel)):
        return _cpu().sum_pool2d_backward(np.ascontiguousarray(g), *x_shape[2:], *kernel, *stride, *padding)
    dx = generic.sum_pool_backward(g, _padded_shape(x_shape, padding), kernel, stride, out_shape, g.dtype)
    return _unpad(dx, padding)
