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

    Layout: the receptive fields of a chunk of n images are the columns of cols (C*K, n*L), so
    each chunk is one GEMM per group, weight (F, C*K) @ cols -> (F, n*L), followed by a small
    block transpose (F, n, L) -> (n, F, L). The batch is processed in chunks sized so that cols
    stays in the CPU cache (kernels.conv_chunk); the backward pass rebuilds each chunk's cols
    instead of keeping all of them, which costs one cheap in-cache im2col and saves memory.
    """

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups):
        xp = backend.get_array_module(x)
        N = x.shape[0]
        F, Cg = w.shape[:2]
        kernel = w.shape[2:]
        out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, dilation)
        L, K = int(np.prod(out_shape)), int(np.prod(kernel))
        G = groups
        w2 = w.reshape(G, F // G, Cg * K)  # (G, F/G, Cg*K)
        out = xp.empty((N, F, L), dtype=x.dtype)
        geom = (kernel, stride, padding, dilation, out_shape)

        def chunk(n0, n1):
            cols = kernels.im2col(x[n0:n1], *geom)  # (C*K, n*L)
            rows = _group_matmul(xp, w2, cols, G)  # (F, n*L)
            out[n0:n1] = rows.reshape(F, n1 - n0, L).transpose(1, 0, 2)

        kernels.run_chunks(chunk, kernels.conv_chunks(x, Cg * G * K, L), xp is np)
        if maybe_bias:
            out += maybe_bias[0].reshape(1, F, 1)
        self.x, self.w2, self.has_bias, self.geom = x, w2, bool(maybe_bias), geom
        return out.reshape((N, F) + tuple(out_shape))

    def backward(self, g):
        xp = backend.get_array_module(g)
        x, w2, geom = self.x, self.w2, self.geom
        kernel, out_shape = geom[0], geom[4]
        N, F = g.shape[:2]
        L = int(np.prod(out_shape))
        G, Fg, CgK = w2.shape
        needs = self.needs_input_grad
        g3 = g.reshape(N, F, L)
        gx = xp.empty(x.shape, dtype=x.dtype) if needs[0] else None

        def chunk(n0, n1):
            n = n1 - n0
            # (n, F, L) -> (F, n, L) -> (G, F/G, n*L): the GEMM layout
            g2 = xp.ascontiguousarray(g3[n0:n1].transpose(1, 0, 2)).reshape(G, Fg, n * L)
            gw = None
            if needs[1]:
                cols = kernels.im2col(x[n0:n1], *geom).reshape(G, CgK, n * L)
                gw = xp.matmul(g2, cols.transpose(0, 2, 1))  # (G, F/G, n*L) @ (G, n*L, Cg*K)
            if needs[0]:
                dcols = xp.matmul(w2.transpose(0, 2, 1), g2).reshape(G * CgK, n * L)  # (C*K, n*L)
                gx[n0:n1] = kernels.col2im(dcols, (n,) + x.shape[1:], *geom)
            return gw

        partial = kernels.run_chunks(chunk, kernels.conv_chunks(x, G * CgK, L), xp is np)
        gw = None
        if needs[1]:
            gw = partial[0]
            for p in partial[1:]:
                gw = gw + p
            gw = gw.reshape((F, CgK // int(np.prod(kernel))) + tuple(kernel))
        if self.has_bias:
            gb = g3.sum(axis=(0, 2)) if needs[2] else None
            return gx, gw, gb
        return gx, gw


def _group_matmul(xp, w2, cols, G):
    """(G, F/G, Cg*K) weights times (C*K, M) columns, group by group -> (F, M)."""
    if G == 1:
        return w2[0] @ cols
    M = cols.shape[1]
    return xp.matmul(w2, cols.reshape(G, -1, M)).reshape(-1, M)


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
