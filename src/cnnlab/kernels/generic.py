"""Vectorised array-module kernels for any number of spatial dimensions (NumPy or CuPy).

These are the portable fast paths: windows are strided views of the padded input, so no Python
loop ever runs over pixels; the only loops run over the kernel offsets (e.g. 25 for a 5x5
kernel) when gradients are scattered back.

Shapes use d spatial dimensions: input (N, C, *S), kernel window K = (k_1..k_d), output O.
"""

from __future__ import annotations

import itertools
import math

from .. import backend


def window_view(xpad, kernel, stride, dilation, out_shape, columns=False):
    """A strided view of every receptive field of ``xpad`` (N, C, *S), padded already.

    Returns (N, C, *O, *K), or with ``columns`` (N, C, *K, *O): the im2col order.
    """
    xp = backend.get_array_module(xpad)
    d = len(kernel)
    s = xpad.strides
    sN, sC, sS = s[0], s[1], s[2:]
    o_strides = tuple(sS[i] * stride[i] for i in range(d))
    k_strides = tuple(sS[i] * dilation[i] for i in range(d))
    N, C = xpad.shape[:2]
    if columns:
        shape = (N, C, *kernel, *out_shape)
        strides = (sN, sC, *k_strides, *o_strides)
    else:
        shape = (N, C, *out_shape, *kernel)
        strides = (sN, sC, *o_strides, *k_strides)
    return xp.lib.stride_tricks.as_strided(xpad, shape=shape, strides=strides)


def im2col(xpad, kernel, stride, dilation, out_shape):
    """(N, C, *S) padded input -> (N, C*K, L): per image, column j is receptive field j,
    L = prod(O), K = prod(k)."""
    xp = backend.get_array_module(xpad)
    N, C = xpad.shape[:2]
    view = window_view(xpad, kernel, stride, dilation, out_shape, columns=True)
    L, K = math.prod(out_shape), math.prod(kernel)
    return xp.ascontiguousarray(view).reshape(N, C * K, L)


def _offset_slices(k, stride, dilation, out_shape):
    """Slices of the padded input touched by kernel offset ``k`` over all output positions."""
    return tuple(
        slice(k[i] * dilation[i], k[i] * dilation[i] + stride[i] * (out_shape[i] - 1) + 1, stride[i])
        for i in range(len(k))
    )


def col2im(cols, xpad_shape, kernel, stride, dilation, out_shape, dtype):
    """Adjoint of ``im2col``: (N, C*K, L) -> (N, C, *S) padded, overlapping fields summed."""
    xp = backend.get_array_module(cols)
    N, C = xpad_shape[:2]
    t = cols.reshape((N, C, *kernel, *out_shape))
    out = xp.zeros(xpad_shape, dtype=dtype)
    for k in itertools.product(*(range(kk) for kk in kernel)):
        # (N, C, *O) slab of this kernel offset -> added at its strided input positions
        slab = t[(slice(None), slice(None)) + k]
        out[(slice(None), slice(None)) + _offset_slices(k, stride, dilation, out_shape)] += slab
    return out


def pool_windows(xpad, kernel, stride, out_shape):
    """(N, C, *S) padded -> (N, C, *O, K) copy of every pooling window, flattened."""
    xp = backend.get_array_module(xpad)
    view = window_view(xpad, kernel, stride, (1,) * len(kernel), out_shape)
    K = math.prod(kernel)
    return xp.ascontiguousarray(view).reshape(view.shape[: 2 + len(kernel)] + (K,))


def max_pool_forward(xpad, kernel, stride, out_shape):
    """Returns (out (N, C, *O), argmax (N, C, *O) index into the flattened window)."""
    xp = backend.get_array_module(xpad)
    w = pool_windows(xpad, kernel, stride, out_shape)
    arg = w.argmax(axis=-1)  # first maximum wins on ties, like PyTorch's CPU kernel
    out = xp.take_along_axis(w, arg[..., None], axis=-1)[..., 0]
    return out, arg


def max_pool_backward(g, arg, xpad_shape, kernel, stride, out_shape, dtype):
    """Route each output gradient to its window's arg-max; overlapping windows accumulate."""
    xp = backend.get_array_module(g)
    dx = xp.zeros(xpad_shape, dtype=dtype)
    for flat, k in enumerate(itertools.product(*(range(kk) for kk in kernel))):
        sl = (slice(None), slice(None)) + _offset_slices(k, stride, (1,) * len(kernel), out_shape)
        dx[sl] += g * (arg == flat)
    return dx


def sum_pool_forward(xpad, kernel, stride, out_shape):
    """Sum over each window: (N, C, *S) padded -> (N, C, *O)."""
    xp = backend.get_array_module(xpad)
    out = None
    for k in itertools.product(*(range(kk) for kk in kernel)):
        sl = (slice(None), slice(None)) + _offset_slices(k, stride, (1,) * len(kernel), out_shape)
        out = xpad[sl].copy() if out is None else out + xpad[sl]
    return out if out is not None else xp.zeros(xpad.shape[:2] + tuple(out_shape), xpad.dtype)


def sum_pool_backward(g, xpad_shape, kernel, stride, out_shape, dtype):
    """Adjoint of ``sum_pool_forward``: every window position receives its output's gradient."""
    xp = backend.get_array_module(g)
    dx = xp.zeros(xpad_shape, dtype=dtype)
    for k in itertools.product(*(range(kk) for kk in kernel)):
        sl = (slice(None), slice(None)) + _offset_slices(k, stride, (1,) * len(kernel), out_shape)
        dx[sl] += g
    return dx


# ------------------------------------------------------------------ local response normalisation
def _channel_window_sum(a, before, after):
    """s[:, c] = a[:, c - before] + ... + a[:, c + after], channels outside [0, C) counting as 0.

    A few shifted adds rather than a cumulative sum: exact, and the window is small."""
    s = a.copy()
    C = a.shape[1]
    for o in range(1, min(before, C - 1) + 1):
        s[:, o:] += a[:, :C - o]
    for o in range(1, min(after, C - 1) + 1):
        s[:, :C - o] += a[:, o:]
    return s


def _inverse_power(xp, d, beta):
    """d ** -beta, with square roots instead of pow for AlexNet's beta 0.75 and for 0.5."""
    if beta == 0.75:  # r * sqrt(r) with r = 1/sqrt(d): no overflow for huge d, where d * sqrt(d) would
        r = 1.0 / xp.sqrt(d)
        return r * xp.sqrt(r)
    if beta == 0.5:
        return 1.0 / xp.sqrt(d)
    return d ** -beta


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across channels (axis 1) by array expressions: (out, d, scale)
    with d = k + alpha / size * the window sum of squares and scale = d ** -beta."""
    xp = backend.get_array_module(x)
    d = _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    d *= alpha / size
    d += k
    scale = _inverse_power(xp, d, beta)
    return x * scale, d, scale


def lrn_backward(g, x, d, scale, size, alpha, beta):
    """The input gradient of lrn_forward: g * scale - 2 alpha beta / size * x * (the mirrored window
    sum of g x d^(-beta-1))."""
    t = g * x * scale
    t /= d  # g_c x_c d_c^(-beta-1)
    # channel j is in the window of c for c = j - after .. j + before: the mirrored window
    u = _channel_window_sum(t, (size - 1) // 2, size // 2)
    u *= x
    u *= 2.0 * alpha * beta / size
    gx = g * scale
    gx -= u
    return gx
