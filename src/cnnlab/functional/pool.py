"""Pooling in 1, 2 and 3 dimensions: max, average and Lp (L2) pooling.

Pooling condenses each feature map: every output keeps one number per window. Max pooling keeps
whether a feature occurred in the window (its strongest response); L2 pooling keeps the square
root of the sum of squares of the window; average pooling keeps the mean.

Output size per spatial dimension: O = floor((S + 2*padding - k) / stride) + 1; stride defaults
to the kernel size (non-overlapping windows).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, kernels
from ..autograd import Function, Tensor
from .conv import conv_output_shape
from .utils import LAYOUTS, as_tuple


class MaxPoolNd(Function):
    def forward(self, x, kernel, stride, padding):
        out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, (1,) * len(kernel))
        out, self.routing = kernels.max_pool_forward(x, kernel, stride, padding, out_shape)
        self.geom = (x.shape, kernel, stride, padding, out_shape)
        return out

    def backward(self, g):
        return kernels.max_pool_backward(g, self.routing, *self.geom)


class SumPoolNd(Function):
    """Sum over each window (zero padding); average pooling is this divided by the window size."""

    def forward(self, x, kernel, stride, padding):
        out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, (1,) * len(kernel))
        self.geom = (x.shape, kernel, stride, padding, out_shape)
        return kernels.sum_pool_forward(x, kernel, stride, padding, out_shape)

    def backward(self, g):
        return kernels.sum_pool_backward(g, *self.geom)


class LPPoolNd(Function):
    """out = (sum over the window of x**p) ** (1/p); p = 2 is L2 pooling.

    Where a window sums to zero the gradient is taken as zero (the function is not
    differentiable there), as PyTorch does.
    """

    def forward(self, x, p, kernel, stride):
        xp = backend.get_array_module(x)
        zero = (0,) * len(kernel)
        out_shape = conv_output_shape(x.shape[2:], kernel, stride, zero, (1,) * len(kernel))
        x_p = x * x if p == 2 else x ** p
        s = xp.maximum(kernels.sum_pool_forward(x_p, kernel, stride, zero, out_shape), 0)
        out = xp.sqrt(s) if p == 2 else s ** (1.0 / p)
        self.x, self.s, self.out, self.p = x, s, out, p
        self.geom = (x.shape, kernel, stride, zero, out_shape)
        return out

    def backward(self, g):
        xp = backend.get_array_module(g)
        p, s, out = self.p, self.s, self.out
        pos = s > 0
        # d out / d s = (1/p) * s**(1/p - 1) = out / (p * s), zero where s == 0
        gs = xp.where(pos, g * out / (p * xp.where(pos, s, 1)), 0).astype(g.dtype)
        gsum = kernels.sum_pool_backward(gs, *self.geom)
        # d (x**p) / dx = p * x**(p-1)
        return gsum * (2 * self.x if p == 2 else p * self.x ** (p - 1))


def _pool_args(name, d, x, kernel_size, stride, padding):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    return pool_geometry(name, d, x.shape, kernel_size, stride, padding)


def pool_geometry(name, d, shape, kernel_size, stride, padding):
    """Checked (kernel, stride, padding) tuples for pooling an input of this shape."""
    if len(shape) not in (d + 1, d + 2):
        raise ValueError(f"{name}: expected a {d + 2}-D input {LAYOUTS[d]} (or {d + 1}-D without the batch), "
                         f"got shape {shape}")
    kernel = as_tuple(kernel_size, d, "kernel_size")
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else as_tuple(stride, d, "stride")
    padding = as_tuple(padding, d, "padding")
    if any(k <= 0 for k in kernel):
        raise ValueError(f"{name}: kernel_size must be positive, got kernel_size={kernel}")
    if any(s <= 0 for s in stride):
        raise ValueError(f"{name}: stride must be positive, got stride={stride}")
    if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{name}: padding must be between 0 and half the kernel size, got padding={padding} "
                         f"with kernel_size={kernel}")
    spatial = shape[-d:]
    for i in range(d):
        if kernel[i] > spatial[i] + 2 * padding[i]:
            raise ValueError(f"{name}: kernel_size {kernel} is larger than the padded input "
                             f"{tuple(s + 2 * p for s, p in zip(spatial, padding))} (input {tuple(shape)})")
    return kernel, stride, padding


def _batched(x, d, fn):
    if x.ndim == d + 1:
        out = fn(x.reshape((1,) + x.shape))
        return out.reshape(out.shape[1:])
    return fn(x)


def _max_pool(name, d, x, kernel_size, stride, padding):
    kernel, stride, padding = _pool_args(name, d, x, kernel_size, stride, padding)
    return _batched(x, d, lambda t: MaxPoolNd.apply(t, kernel=kernel, stride=stride, padding=padding))


def _avg_pool(name, d, x, kernel_size, stride, padding):
    kernel, stride, padding = _pool_args(name, d, x, kernel_size, stride, padding)
    inv = 1.0 / math.prod(kernel)  # count_include_pad=True, as PyTorch's default
    return _batched(x, d, lambda t: SumPoolNd.apply(t, kernel=kernel, stride=stride, padding=padding) * inv)


def _lp_pool(name, d, x, norm_type, kernel_size, stride):
    if not (isinstance(norm_type, (int, float)) and norm_type > 0):
        raise ValueError(f"{name}: norm_type must be a positive number, got {norm_type!r}")
    kernel, stride, _ = _pool_args(name, d, x, kernel_size, stride, 0)
    return _batched(x, d, lambda t: LPPoolNd.apply(t, p=norm_type, kernel=kernel, stride=stride))


def max_pool1d(x, kernel_size, stride=None, padding=0):
    """1-D max pooling. (N, C, L) -> (N, C, L_out)."""
    return _max_pool("max_pool1d", 1, x, kernel_size, stride, padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """2-D max pooling. (N, C, H, W) -> (N, C, OH, OW); 2x2 turns 24x24 maps into 12x12."""
    return _max_pool("max_pool2d", 2, x, kernel_size, stride, padding)


def max_pool3d(x, kernel_size, stride=None, padding=0):
    """3-D max pooling. (N, C, D, H, W) -> (N, C, OD, OH, OW)."""
    return _max_pool("max_pool3d", 3, x, kernel_size, stride, padding)


def avg_pool1d(x, kernel_size, stride=None, padding=0):
    """1-D average pooling (padding counts as zeros in the mean)."""
    return _avg_pool("avg_pool1d", 1, x, kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """2-D average pooling (padding counts as zeros in the mean)."""
    return _avg_pool("avg_pool2d", 2, x, kernel_size, stride, padding)


def avg_pool3d(x, kernel_size, stride=None, padding=0):
    """3-D average pooling (padding counts as zeros in the mean)."""
    return _avg_pool("avg_pool3d", 3, x, kernel_size, stride, padding)


def lp_pool1d(x, norm_type, kernel_size, stride=None):
    """1-D power-average pooling: (sum of x**p over the window) ** (1/p)."""
    return _lp_pool("lp_pool1d", 1, x, norm_type, kernel_size, stride)


def lp_pool2d(x, norm_type, kernel_size, stride=None):
    """2-D power-average pooling; norm_type=2 is the article's L2 pooling."""
    return _lp_pool("lp_pool2d", 2, x, norm_type, kernel_size, stride)


def lp_pool3d(x, norm_type, kernel_size, stride=None):
    """3-D power-average pooling: (sum of x**p over the window) ** (1/p)."""
    return _lp_pool("lp_pool3d", 3, x, norm_type, kernel_size, stride)


def adaptive_bins(size, out):
    """PyTorch's adaptive pooling windows along one axis of ``size`` values into ``out`` bins: bin i
    covers [floor(i * size / out), ceil((i + 1) * size / out)), so windows may overlap or differ in length."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _averaging_matrix(xp, size, out, dtype):
    """(out, size): row i holds 1 / len over bin i's window, 0 elsewhere."""
    a = np.zeros((out, size))
    for i, (lo, hi) in enumerate(adaptive_bins(size, out)):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return Tensor(xp.asarray(a.astype(dtype)))


def adaptive_avg_pool2d(x, output_size):
    """2-D adaptive average pooling: (N, C, H, W) or (C, H, W) -> (..., OH, OW), each output the mean of
    its window (``adaptive_bins``); an entry None of ``output_size`` keeps that input size.

    The windows are rectangles, so the mean is separable: one averaging matrix per axis,
    (OH, H) @ x @ (W, OW), which is differentiable through ``matmul``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"adaptive_avg_pool2d: input must be a Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: expected a 4-D input (N, C, H, W) (or 3-D without the batch), "
                         f"got shape {x.shape}")
    sizes = (output_size, output_size) if output_size is None or isinstance(output_size, (int, np.integer)) \
        else tuple(output_size)
    if len(sizes) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    H, W = x.shape[-2:]
    oh, ow = (H if sizes[0] is None else sizes[0]), (W if sizes[1] is None else sizes[1])
    for v in (oh, ow):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"adaptive_avg_pool2d: output_size must hold positive ints (or None), got "
                             f"{output_size!r}")
    if H == 0 or W == 0:
        raise ValueError(f"adaptive_avg_pool2d: the input has an empty spatial axis, shape {x.shape}")
    xp = backend.get_array_module(x.data)
    out = x if ow == W else x @ _averaging_matrix(xp, W, int(ow), x.dtype).T
    return out if oh == H else _averaging_matrix(xp, H, int(oh), x.dtype) @ out
