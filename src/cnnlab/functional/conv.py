"""Convolution in 1, 2 and 3 dimensions: local receptive fields with shared weights.

Every output neuron of feature map ``f`` at position ``o`` sees one receptive field of the input
(a window of ``k`` pixels in every input channel of its group) and computes

    out[n, f, o] = bias[f] + sum_{c, j} weight[f, c, j] * xpad[n, g*Cg + c, o*stride + j*dilation]

with the same ``weight[f]`` and ``bias[f]`` at every ``o`` (shared weights). The fast path lays
the receptive fields out as the columns of a matrix per image (im2col; channels-last rows for
many-channel 2-D layers on the CPU, see ConvPlan), so that a layer becomes matrix multiplies
with the weights; the backward pass scatters the fields back (col2im). 3x3 stride-1 layers with
enough channels use Winograd F(2x2, 3x3) on the CPU instead (kernels.winograd_conv).

Output size per spatial dimension: O = floor((S + 2*padding - dilation*(k - 1) - 1) / stride) + 1.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, kernels
from ..autograd import Function, Tensor
from .utils import LAYOUTS, as_tuple


def conv_output_shape(size, kernel, stride, padding, dilation):
    return tuple(
        (s + 2 * p - dl * (k - 1) - 1) // st + 1
        for s, k, st, p, dl in zip(size, kernel, stride, padding, dilation)
    )


class ConvPlan:
    """One convolution's geometry and weights, and its work on one chunk of the batch.

    The batch is processed in chunks sized so that a chunk's receptive fields stay in the CPU
    cache (kernels.conv_chunks), spread over the cores; the backward pass rebuilds each chunk's
    fields instead of keeping all of them, which costs one cheap in-cache copy and saves memory.
    Two layouts of the receptive fields:

    - columns (n, C*K, L): one GEMM per image and group, weight (F, C*K) @ cols[i] -> (F, L),
      written straight into the output's (N, F, L) layout; any d, any device;
    - channels-last rows (n*L, K*C) for 2-D convolutions with many channels on the CPU
      (kernels.use_nhwc): each kernel row of a field is then one contiguous run of KW*C values,
      so building and scattering the fields moves long runs instead of short output rows;
    - Winograd F(2x2, 3x3) for 3x3, stride-1 layers of that kind (kernels.use_winograd): the
      output and the input gradient from 16 products (tiles x C) @ (C x F) between compiled
      transforms, in chunks whose transformed input fits the cache; the weight gradient from 16
      products (C x tiles) @ (tiles x F) of the input's and the output gradient's transforms.

    The bias is added, and its gradient summed, chunk by chunk while the chunk is in cache.
    """

    def __init__(self, x, w, bias, stride, padding, dilation, groups):
        self.xp = xp = backend.get_array_module(x)
        F, Cg = w.shape[:2]
        kernel = tuple(w.shape[2:])
        self.out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, dilation)
        self.L, K = math.prod(self.out_shape), math.prod(kernel)
        self.F, self.Cg, self.G, self.K, self.kernel = F, Cg, groups, K, kernel
        self.geom = (kernel, stride, padding, dilation, self.out_shape)
        self.bias = bias.reshape(F, 1) if bias is not None else None
        self.nhwc = kernels.use_nhwc(x, w.shape, groups)
        # 3x3 stride-1 layers on the CPU: Winograd F(2x2, 3x3) for the output, the input gradient
        # and the weight gradient (2.25x fewer multiplications)
        self.winograd = kernels.use_winograd(x, w.shape, stride, padding, dilation, groups)
        self.winograd_dw = self.winograd and kernels.use_winograd_weight_grad()
        if self.winograd:
            self.w, self.padding = w, tuple(padding)
            self.u = kernels.winograd_weights(w)
        elif self.nhwc:
            self.wk = xp.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(F, K * Cg)  # rows' (kh, kw, c) order
        else:
            self.wk = w.reshape(groups, F // groups, Cg * K)  # (G, F/G, Cg*K)
        if self.winograd:
            self.chunks = kernels.winograd_chunks(x, Cg, self.L)
        else:
            self.chunks = kernels.conv_chunks(x, Cg * groups * K, self.L)

    def forward_chunk(self, xc, out):
        """out (n, F, L) = conv(xc) + bias for a chunk xc of n images."""
        xp, n, L, F = self.xp, xc.shape[0], self.L, self.F
        if self.winograd:
            kernels.winograd_conv(xc, self.u, self.padding, self.out_shape, out=out)
            if self.bias is not None:
                out += self.bias
            return
        if self.nhwc:
            rows = kernels.im2col_nhwc(xc, *self.geom)  # (n*L, K*C)
            y = (rows @ self.wk.T).reshape(n, L, F).transpose(0, 2, 1)
            if self.bias is None:
                out[...] = y
            else:
                xp.add(y, self.bias, out=out)
            return
        G = self.G
        cols = kernels.im2col(xc, *self.geom).reshape(n, G, self.Cg * self.K, L)
        # one GEMM per image and group, written straight into (n, F, L)
        xp.matmul(self.wk, cols, out=out.reshape(n, G, F // G, L))
        if self.bias is not None:
            out += self.bias

    def backward_chunk(self, xc, g, needs_x, needs_w, needs_b):
        """For a chunk xc and its output gradient g (n, F, L): (dx chunk, dW part, db part),
        each None where not needed."""
        xp, n, L, F = self.xp, xc.shape[0], self.L, self.F
        gx = gw = gb = None
        if self.nhwc:
            gr = xp.ascontiguousarray(g.transpose(0, 2, 1)).reshape(n * L, F)  # (n*L, F)
            if needs_w and self.winograd_dw:  # transformed (16, C, F); see _weight_grad
                gw = kernels.winograd_weight_grad_part(xc, gr, self.padding, self.out_shape)
            elif needs_w:
                gw = gr.T @ kernels.im2col_nhwc(xc, *self.geom)  # (F, K*C)
            if needs_x and self.winograd:  # the input gradient is a 3x3 convolution of g too
                ph, pw = self.padding
                gx = kernels.winograd_conv(g.reshape((n, F) + tuple(self.out_shape)), self.u_back,
                                           (2 - ph, 2 - pw), xc.shape[2:]).reshape(xc.shape)
            elif needs_x:
                gx = kernels.col2im_nhwc(gr @ self.wk, xc.shape, *self.geom)
            if needs_b:
                gb = gr.sum(axis=0)
            return gx, gw, gb
        G, CgK = self.G, self.Cg * self.K
        g4 = g.reshape(n, G, F // G, L)
        if needs_w:
            cols = kernels.im2col(xc, *self.geom).reshape(n, G, CgK, L)
            if xp is np:  # per image and group (F/G, L) @ (L, Cg*K), summed over the chunk's images
                gw = xp.matmul(g4, cols.transpose(0, 1, 3, 2)).sum(axis=0)
            else:  # one chunk of the whole batch: no (n, G, F/G, Cg*K) intermediate
                gw = xp.einsum("ngfl,ngkl->gfk", g4, cols)
        if needs_x:
            dcols = xp.matmul(self.wk.transpose(0, 2, 1), g4).reshape(n, G * CgK, L)  # (n, C*K, L)
            gx = kernels.col2im(dcols, xc.shape, *self.geom)
        if needs_b:
            gb = g4.sum(axis=(0, 3)).reshape(F)
        return gx, gw, gb

    def backward(self, x, out_grad, needs, has_bias):
        """The gradients (x, w[, b]) over all chunks, None where not needed; ``out_grad(n0, n1)``
        gives a chunk's gradient at the convolution's output, (n, F, L)."""
        xp = self.xp
        want_b = has_bias and needs[2]
        gx = xp.empty(x.shape, dtype=x.dtype) if needs[0] else None
        if self.winograd and needs[0]:  # the input gradient's weights, once for all chunks
            self.u_back = kernels.winograd_transposed_weights(self.w)

        def chunk(n0, n1):
            gxc, gw, gb = self.backward_chunk(x[n0:n1], out_grad(n0, n1), needs[0], needs[1], want_b)
            if gxc is not None:
                gx[n0:n1] = gxc
            return gw, gb

        partial = kernels.run_chunks(chunk, self.chunks, xp is np)
        gw = self._weight_grad([p[0] for p in partial]) if needs[1] else None
        if not has_bias:
            return gx, gw
        return gx, gw, (_sum_parts([p[1] for p in partial]) if want_b else None)

    def _weight_grad(self, parts):
        """The chunks' dW parts summed in chunk order (deterministic), as (F, C/G, *kernel)."""
        gw = _sum_parts(parts)
        if self.winograd_dw:
            return kernels.winograd_weight_grad(gw, self.w.dtype)
        if self.nhwc:  # (F, KH*KW*C) -> (F, C, KH, KW)
            gw = gw.reshape((self.F,) + self.kernel + (self.Cg,)).transpose(0, 3, 1, 2)
        return self.xp.ascontiguousarray(gw).reshape((self.F, self.Cg) + self.kernel)


class ConvNd(Function):
    """Convolution (cross-correlation, as in every deep-learning library) over d dimensions,
    chunk by chunk over the batch (see ConvPlan)."""

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups):
        plan = ConvPlan(x, w, maybe_bias[0] if maybe_bias else None, stride, padding, dilation, groups)
        N, xp = x.shape[0], plan.xp
        out = xp.empty((N, plan.F, plan.L), dtype=x.dtype)
        kernels.run_chunks(lambda n0, n1: plan.forward_chunk(x[n0:n1], out[n0:n1]), plan.chunks, xp is np)
        self.x, self.plan, self.has_bias = x, plan, bool(maybe_bias)
        return out.reshape((N, plan.F) + tuple(plan.out_shape))

    def backward(self, g):
        x, plan = self.x, self.plan
        g3 = g.reshape(x.shape[0], plan.F, plan.L)
        return plan.backward(x, lambda n0, n1: g3[n0:n1], self.needs_input_grad, self.has_bias)


def _sum_parts(parts):
    """Sum of per-chunk partial results in chunk order (deterministic)."""
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _check_conv(name, d, x, weight, bias, stride, padding, dilation, groups):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim != d + 2:
        raise ValueError(
            f"{name}: expected a {d + 2}-D input {LAYOUTS[d]} (or {d + 1}-D without the batch), "
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
    stride, padding, dilation = conv_params(name, d, x, weight, bias, stride, padding, dilation, groups)
    args = (x, weight) if bias is None else (x, weight, bias)
    out = ConvNd.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=int(groups))
    return out.reshape(out.shape[1:]) if unbatched else out


def conv_params(name, d, x, weight, bias, stride, padding, dilation, groups):
    """Checked (stride, padding, dilation) tuples for a batched input x; 'same'/'valid' resolved."""
    stride = as_tuple(stride, d, "stride")
    dilation = as_tuple(dilation, d, "dilation")
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
    padding = as_tuple(padding, d, "padding")
    _check_conv(name, d, x, weight, bias, stride, padding, dilation, groups)
    return stride, padding, dilation


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution. x (N, C, L), weight (F, C/groups, k) -> (N, F, L_out)."""
    return _conv("conv1d", 1, x, weight, bias, stride, padding, dilation, groups)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution. x (N, C, H, W), weight (F, C/groups, kh, kw) -> (N, F, OH, OW)."""
    return _conv("conv2d", 2, x, weight, bias, stride, padding, dilation, groups)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution. x (N, C, D, H, W), weight (F, C/groups, kd, kh, kw) -> (N, F, OD, OH, OW)."""
    return _conv("conv3d", 3, x, weight, bias, stride, padding, dilation, groups)
