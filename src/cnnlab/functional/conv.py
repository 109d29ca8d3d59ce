"""Convolution in 1, 2 and 3 dimensions: local receptive fields with shared weights.

Every output neuron of feature map ``f`` at position ``o`` sees one receptive field of the input
(a window of ``k`` pixels in every input channel of its group) and computes

    out[n, f, o] = bias[f] + sum_{c, j} weight[f, c, j] * xpad[n, g*Cg + c, o*stride + j*dilation]

with the same ``weight[f]`` and ``bias[f]`` at every ``o`` (shared weights). The fast path lays
all receptive fields out as the rows of one matrix (im2col) so that the whole layer becomes one
matrix multiply; the backward pass scatters the rows back (col2im).

Output size per spatial dimension: O = floor((S + 2*padding - dilation*(k - 1) - 1) / stride) + 1.
"""

from __future__ import annotations

import numpy as np

from .. import backend, kernels
from ..autograd import Function, Tensor


def _tuple(value, d, name):
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    value = tuple(int(v) for v in value)
    if len(value) != d:
        raise ValueError(f"{name} must be an int or a tuple of {d} ints, got {value}")
    return value


def conv_output_shape(size, kernel, stride, padding, dilation):
    return tuple(
        (s + 2 * p - dl * (k - 1) - 1) // st + 1
        for s, k, st, p, dl in zip(size, kernel, stride, padding, dilation)
    )


class ConvNd(Function):
    """Convolution (cross-correlation, as in every deep-learning library) over d dimensions.

    Layout: the receptive fields are the columns of cols (C*K, N*L), so the whole layer is one
    GEMM per group, weight (F, C*K) @ cols -> (F, N*L), and only a cheap block transpose
    (F, N, L) -> (N, F, L) remains.
    """

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups):
        xp = backend.get_array_module(x)
        N = x.shape[0]
        F, Cg = w.shape[:2]
        kernel = w.shape[2:]
        out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, dilation)
        L, K = int(np.prod(out_shape)), int(np.prod(kernel))
        G = groups

        cols = kernels.im2col(x, kernel, stride, padding, dilation, out_shape)  # (C*K, N*L)
        w2 = w.reshape(G, F // G, Cg * K)  # (G, F/G, Cg*K)
        if G == 1:
            rows = w2[0] @ cols  # (F, C*K) @ (C*K, N*L) -> (F, N*L)
        else:
            rows = xp.matmul(w2, cols.reshape(G, Cg * K, N * L)).reshape(F, N * L)
        # (F, N*L) -> (F, N, L) -> (N, F, L)
        out = rows.reshape(F, N, L).transpose(1, 0, 2)
        if maybe_bias:
            out = out + maybe_bias[0].reshape(1, F, 1)
        else:
            out = xp.ascontiguousarray(out)
        self.cols, self.w2, self.has_bias = cols, w2, bool(maybe_bias)
        self.geom = (x.shape, kernel, stride, padding, dilation, out_shape, G)
        return out.reshape((N, F) + tuple(out_shape))

    def backward(self, g):
        xp = backend.get_array_module(g)
        x_shape, kernel, stride, padding, dilation, out_shape, G = self.geom
        N, F = g.shape[:2]
        L = int(np.prod(out_shape))
        needs = self.needs_input_grad
        cols, w2 = self.cols, self.w2
        CgK = w2.shape[2]
        # (N, F, *O) -> (F, N, L) -> (F, N*L)
        g2 = xp.ascontiguousarray(g.reshape(N, F, L).transpose(1, 0, 2)).reshape(F, N * L)
        gx = gw = gb = None
        if needs[1]:
            if G == 1:
                gw = g2 @ cols.T  # (F, N*L) @ (N*L, C*K) -> (F, C*K)
            else:
                gw = xp.matmul(g2.reshape(G, F // G, N * L), cols.reshape(G, CgK, N * L).transpose(0, 2, 1))
            gw = gw.reshape((F, CgK // int(np.prod(kernel))) + tuple(kernel))
        if needs[0]:
            if G == 1:
                dcols = w2[0].T @ g2  # (C*K, F) @ (F, N*L) -> (C*K, N*L)
            else:
                dcols = xp.matmul(w2.transpose(0, 2, 1), g2.reshape(G, F // G, N * L)).reshape(G * CgK, N * L)
            gx = kernels.col2im(dcols, x_shape, kernel, stride, padding, dilation, out_shape)
        if self.has_bias and needs[2]:
            gb = g2.sum(axis=1)
        return (gx, gw, gb) if self.has_bias else (gx, gw)


_LAYOUT = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def _check_conv(name, d, x, weight, bias, stride, padding, dilation, groups):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim != d + 2:
        raise ValueError(
            f"{name}: expected a {d + 2}-D input {_LAYOUT[d]} (or {d + 1}-D without the batch), "
            f"got shape {x.shape}")
    if weight.ndim != d + 2:
        raise ValueError(f"{name}: expected a {d + 2}-D weight (out_channels, in_channels/groups, *kernel), "
                         f"got shape {weight.shape}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
    C, F, Cg = x.shape[1], weight.shape[0], weight.shape[1]
    if C % groups or F % groups:
        raise ValueError(f"{name}: in_channels ({C}) and out_channels ({F}) must both be divisible by "
                         f"groups ({groups}); input {x.shape}, weight {weight.shape}")
    if Cg * groups != C:
        raise ValueError(f"{name}: input has {C} channels but weight {weight.shape} expects "
                         f"{Cg} x groups ({groups}) = {Cg * groups}")
    if bias is not None and tuple(bias.shape) != (F,):
        raise ValueError(f"{name}: bias must have shape ({F},) for weight {weight.shape}, got {bias.shape}")
    if x.dtype != weight.dtype:
        raise ValueError(f"{name}: input dtype {x.dtype} and weight dtype {weight.dtype} differ")
    if any(s <= 0 for s in stride):
        raise ValueError(f"{name}: stride must be positive, got stride={stride}")
    if any(p < 0 for p in padding):
        raise ValueError(f"{name}: padding must be non-negative, got padding={padding}")
    if any(dl <= 0 for dl in dilation):
        raise ValueError(f"{name}: dilation must be positive, got dilation={dilation}")
    for i in range(d):
        eff = dilation[i] * (weight.shape[2 + i] - 1) + 1
        padded = x.shape[2 + i] + 2 * padding[i]
        if eff > padded:
            raise ValueError(
                f"{name}: kernel size {tuple(weight.shape[2:])} (dilation {dilation}) is larger than the "
                f"padded input {tuple(s + 2 * p for s, p in zip(x.shape[2:], padding))} "
                f"(input {x.shape}, padding={padding})")


def _conv(name, d, x, weight, bias, stride, padding, dilation, groups):
    if not isinstance(x, Tensor):
        x = Tensor(x)
    unbatched = x.ndim == d + 1
    if unbatched:
        x = x.reshape((1,) + x.shape)
    stride = _tuple(stride, d, "stride")
    dilation = _tuple(dilation, d, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * d
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride={stride}")
            total = [dilation[i] * (weight.shape[2 + i] - 1) for i in range(d)]
            if any(t % 2 for t in total):
                raise ValueError(f"{name}: padding='same' needs an odd effective kernel size, got kernel "
                                 f"{tuple(weight.shape[2:])} with dilation {dilation}")
            padding = tuple(t // 2 for t in total)
        else:
            raise ValueError(f"{name}: padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    padding = _tuple(padding, d, "padding")
    _check_conv(name, d, x, weight, bias, stride, padding, dilation, groups)
    args = (x, weight) if bias is None else (x, weight, bias)
    out = ConvNd.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=int(groups))
    return out.reshape(out.shape[1:]) if unbatched else out


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution. x (N, C, L), weight (F, C/groups, k) -> (N, F, L_out)."""
    return _conv("conv1d", 1, x, weight, bias, stride, padding, dilation, groups)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution. x (N, C, H, W), weight (F, C/groups, kh, kw) -> (N, F, OH, OW)."""
    return _conv("conv2d", 2, x, weight, bias, stride, padding, dilation, groups)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution. x (N, C, D, H, W), weight (F, C/groups, kd, kh, kw) -> (N, F, OD, OH, OW)."""
    return _conv("conv3d", 3, x, weight, bias, stride, padding, dilation, groups)
