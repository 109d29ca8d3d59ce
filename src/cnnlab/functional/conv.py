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


def _pad(x, padding, value=0.0):
    if not any(padding):
        return x
    xp = backend.get_array_module(x)
    width = ((0, 0), (0, 0)) + tuple((p, p) for p in padding)
    return xp.pad(x, width, mode="constant", constant_values=value)


def _unpad(xpad, padding):
    if not any(padding):
        return xpad
    sl = (slice(None), slice(None)) + tuple(slice(p, xpad.shape[2 + i] - p) for i, p in enumerate(padding))
    return xpad[sl]


class ConvNd(Function):
    """Convolution (cross-correlation, as in every deep-learning library) over d dimensions."""

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups):
        xp = backend.get_array_module(x)
        d = x.ndim - 2
        N, C = x.shape[:2]
        F, Cg = w.shape[:2]
        kernel = w.shape[2:]
        xpad = _pad(x, padding)
        out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, dilation)
        L, K = int(np.prod(out_shape)), int(np.prod(kernel))
        G, Fg = groups, F // groups

        cols = kernels.im2col(xpad, kernel, stride, dilation, out_shape)  # (N*L, C*K)
        w2 = w.reshape(G, Fg, Cg * K)  # (G, Fg, Cg*K)
        if G == 1:
            out = cols @ w2[0].T  # (N*L, F)
        else:
            out = xp.empty((N * L, F), dtype=x.dtype)
            cg = cols.reshape(N * L, G, Cg * K)
            for g in range(G):
                out[:, g * Fg:(g + 1) * Fg] = cg[:, g] @ w2[g].T
        if maybe_bias:
            out += maybe_bias[0]
        # (N*L, F) -> (N, *O, F) -> (N, F, *O)
        out = xp.ascontiguousarray(xp.moveaxis(out.reshape((N, *out_shape, F)), -1, 1))

        self.cols, self.w2, self.has_bias = cols, w2, bool(maybe_bias)
        self.geom = (x.shape, xpad.shape, kernel, stride, padding, dilation, out_shape, G)
        return out

    def backward(self, g):
        xp = backend.get_array_module(g)
        x_shape, xpad_shape, kernel, stride, padding, dilation, out_shape, G = self.geom
        N, F = g.shape[:2]
        d = len(kernel)
        L = int(np.prod(out_shape))
        Fg = F // G
        needs = self.needs_input_grad
        # (N, F, *O) -> (N, *O, F) -> (N*L, F)
        g2 = xp.ascontiguousarray(xp.moveaxis(g, 1, -1)).reshape(N * L, F)
        cols, w2 = self.cols, self.w2
        gx = gw = gb = None
        CgK = w2.shape[2]
        if needs[1]:
            if G == 1:
                gw = g2.T @ cols  # (F, C*K)
            else:
                cg = cols.reshape(N * L, G, CgK)
                gw = xp.stack([g2[:, i * Fg:(i + 1) * Fg].T @ cg[:, i] for i in range(G)])
            gw = gw.reshape((F, CgK // int(np.prod(kernel))) + tuple(kernel))
        if needs[0]:
            if G == 1:
                dcols = g2 @ w2[0]  # (N*L, C*K)
            else:
                dcols = xp.empty((N * L, G, CgK), dtype=g.dtype)
                for i in range(G):
                    dcols[:, i] = g2[:, i * Fg:(i + 1) * Fg] @ w2[i]
                dcols = dcols.reshape(N * L, G * CgK)
            gxpad = kernels.col2im(dcols, xpad_shape, kernel, stride, dilation, out_shape, g.dtype)
            gx = _unpad(gxpad, padding)
        if self.has_bias and needs[2]:
            gb = g2.sum(axis=0)
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
