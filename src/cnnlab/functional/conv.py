"""Convolution in 1, 2 and 3 dimensions: local receptive fields with shared weights.

Every output neuron of feature map ``f`` at position ``o`` sees one receptive field of the input
(a window of ``k`` pixels in every input channel of its group) and computes

    out[n, f, o] = bias[f] + sum_{c, j} weight[f, c, j] * xpad[n, g*Cg + c, o*stride + j*dilation]

with the same ``weight[f]`` and ``bias[f]`` at every ``o`` (shared weights). float32 layers on a
CPU with AVX-512 run on cnnlab's own micro-kernel, which reads the receptive fields in place
through offset tables (kernels/igemm.py, policy.use_igemm). Elsewhere the fields are laid out as
the columns of a matrix per image (im2col; channels-last rows for many-channel 2-D layers on the
CPU, see ConvPlan), so that a layer becomes matrix multiplies with the weights, and the backward
pass scatters the fields back (col2im); 3x3 stride-1 layers with enough channels use Winograd
F(2x2, 3x3) on the CPU instead (kernels.winograd_conv).

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

    The batch is processed in chunks sized so that a chunk's receptive fields would stay in the
    CPU cache (kernels.conv_chunks), spread over the cores; the backward pass rebuilds each chunk's
    fields instead of keeping all of them, which costs one cheap in-cache copy and saves memory.
    The paths:

    - indirect (kernels/igemm.py, float32 on AVX-512 CPUs, first where it applies): the fields
      read in place through offset tables for the output, the weight gradient and the input
      gradient (igemm.IndirectConv); no fields are copied;
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
        self.depthwise = kernels.use_depthwise(x, w.shape, groups)
        # float32 on a CPU with AVX-512: the indirect GEMM (kernels/igemm.py; never depthwise), no
        # fields copied; elsewhere 3x3 stride-1 layers take Winograd F(2x2, 3x3) for the output,
        # the input gradient and the weight gradient (2.25x fewer multiplications)
        self.indirect = kernels.use_igemm(x, w.shape, stride, padding, dilation, groups)
        self.nhwc = not (self.depthwise or self.indirect) and kernels.use_nhwc(x, w.shape, groups)
        self.winograd = not self.indirect and kernels.use_winograd(x, w.shape, stride, padding, dilation, groups)
        self.winograd_dw = self.winograd and kernels.use_winograd_weight_grad()
        if self.indirect:
            self.ig = kernels.indirect_conv(x.shape[1:], w, stride, padding, dilation, groups, self.out_shape)
            self.ig.prepare_forward()  # the weights' layout, once, before the chunks' job
            self.w = w
        elif self.depthwise:
            self.w = w
        elif self.winograd:
            self.w, self.padding = w, tuple(padding)
            self.u = kernels.winograd_weights(w)
        elif self.nhwc:
            # rows' (kh, kw, c) order; group g's filters are rows [g F/G, (g + 1) F/G) and see its Cg channels
            self.wk = xp.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(F, K * Cg)
        else:
            self.wk = w.reshape(groups, F // groups, Cg * K)  # (G, F/G, Cg*K)
        if self.winograd:
            self.chunks = kernels.winograd_chunks(x, Cg, self.L)
        elif self.indirect:
            self.chunks = kernels.indirect_chunks(x, self.ig.C * self.ig.plane + F * self.L, 2 * F * Cg * K * self.L)
        elif self.depthwise and kernels.policy.use_depthwise_vectors(x):
            self.chunks = kernels.policy.depthwise_chunks(x, self.L)
        else:
            self.chunks = kernels.conv_chunks(x, Cg * groups * K, self.L)
        # a whole batch's depthwise pass as one compiled job (kernels/depthwise.py's Job): no
        # Python between its chunks
        self.jobs = self.depthwise and xp is np and kernels.policy.use_depthwise_vectors(x)
        # the indirect GEMM's passes as compiled jobs over the batch: its jobs read one offset
        # table per chunk size, and keep two (policy.even_ranges makes at most two sizes)
        self.indirect_jobs = (self.indirect and xp is np and x.shape[0] > 0
                              and len({b - a for a, b in self.chunks}) <= 2)

    def forward_batch(self, x, out):
        """out (N, F, L) = conv(x) + bias for the whole batch x, chunk by chunk over the cores."""
        if self.jobs:
            kernels.depthwise_batch_forward(np.ascontiguousarray(x), self.w, *self.geom, out, self.chunks)
            if self.bias is not None:
                out += self.bias
            return
        if self.indirect_jobs:
            bias = None if self.bias is None else np.ascontiguousarray(self.bias.reshape(-1), dtype=np.float32)
            job = self.ig.forward_job(np.ascontiguousarray(x, dtype=np.float32), out, self.chunks, bias)
            kernels.run_compiled(job.fn, job.args, job.count)
            return
        kernels.run_chunks(lambda n0, n1: self.forward_chunk(x[n0:n1], out[n0:n1]), self.chunks, self.xp is np)

    def forward_chunk(self, xc, out):
        """out (n, F, L) = conv(xc) + bias for a chunk xc of n images."""
        xp, n, L, F = self.xp, xc.shape[0], self.L, self.F
        if self.depthwise:
            kernels.depthwise_forward(xc, self.w, *self.geom, out=out)
            if self.bias is not None:
                out += self.bias
            return
        if self.indirect:
            self.ig.forward(xc, out)
            if self.bias is not None:
                out += self.bias
            return
        if self.winograd:
            kernels.winograd_conv(xc, self.u, self.padding, self.out_shape, out=out)
            if self.bias is not None:
                out += self.bias
            return
        if self.nhwc:
            G, Fg, Cg = self.G, F // self.G, self.Cg
            for g in range(G):  # grouped: one channels-last product per group, n*L rows each
                rows = kernels.im2col_nhwc(xc if G == 1 else xc[:, g * Cg:(g + 1) * Cg], *self.geom)  # (n*L, K*Cg)
                y = (rows @ self.wk[g * Fg:(g + 1) * Fg].T).reshape(n, L, Fg).transpose(0, 2, 1)
                o = out[:, g * Fg:(g + 1) * Fg]
                if self.bias is None:
                    o[...] = y
                else:
                    xp.add(y, self.bias[g * Fg:(g + 1) * Fg], out=o)
            return
        G = self.G
        cols = kernels.im2col(xc, *self.geom).reshape(n, G, self.Cg * self.K, L)
        # one GEMM per image and group, written straight into (n, F, L)
        xp.matmul(self.wk, cols, out=out.reshape(n, G, F // G, L))
        if self.bias is not None:
            out += self.bias

    def backward_chunk(self, xc, g, needs_x, needs_w, needs_b, gx_out=None):
        """For a chunk xc and its output gradient g (n, F, L): (dx chunk, dW part, db part),
        each None where not needed. The depthwise and indirect paths may write dx into
        ``gx_out`` (the chunk's rows of the whole gradient) and return it."""
        xp, n, L, F = self.xp, xc.shape[0], self.L, self.F
        gx = gw = gb = None
        if self.depthwise:
            gx, gw = kernels.depthwise_backward(g, xc, self.w, *self.geom, needs_x, needs_w, gx_out)
            return gx, gw, (g.sum(axis=2).sum(axis=0) if needs_b else None)
        if self.indirect:
            gx, gw = self.ig.backward(xc, g, needs_x, needs_w, gx_out)
            return gx, gw, (g.sum(axis=2).sum(axis=0) if needs_b else None)
        if self.nhwc and self.G > 1:
            return self._grouped_backward_chunk(xc, g, needs_x, needs_w, needs_b)
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

    def _grouped_backward_chunk(self, xc, g, needs_x, needs_w, needs_b):
        """backward_chunk of a grouped channels-last layer: each group's products on its own rows."""
        xp, n, L, F, G, Cg = self.xp, xc.shape[0], self.L, self.F, self.G, self.Cg
        Fg = F // G
        gx = xp.empty(xc.shape, dtype=xc.dtype) if needs_x else None
        gws = []
        for k in range(G):
            xg = xc[:, k * Cg:(k + 1) * Cg]
            gr = xp.ascontiguousarray(g[:, k * Fg:(k + 1) * Fg].transpose(0, 2, 1)).reshape(n * L, Fg)
            if needs_w:
                gws.append(gr.T @ kernels.im2col_nhwc(xg, *self.geom))  # (F/G, K*Cg)
            if needs_x:
                gx[:, k * Cg:(k + 1) * Cg] = kernels.col2im_nhwc(gr @ self.wk[k * Fg:(k + 1) * Fg], xg.shape,
                                                                 *self.geom)
        gw = xp.concatenate(gws) if needs_w else None
        gb = g.sum(axis=2).sum(axis=0) if needs_b else None
        return gx, gw, gb

    def backward(self, x, out_grad, needs, has_bias, whole=None):
        """The gradients (x, w[, b]) over all chunks, None where not needed; ``out_grad(n0, n1)``
        gives a chunk's gradient at the convolution's output, (n, F, L), ``whole`` the whole
        batch's where the caller has it."""
        xp = self.xp
        want_b = has_bias and needs[2]
        gx = xp.empty(x.shape, dtype=x.dtype) if needs[0] else None
        if self.winograd and needs[0]:  # the input gradient's weights, once for all chunks
            self.u_back = kernels.winograd_transposed_weights(self.w)
        if self.indirect:
            self.ig.prepare_backward(needs[0])
        if self.jobs and whole is not None:
            return self._depthwise_batch_backward(x, whole, needs, has_bias, gx)
        if self.indirect and xp is np and whole is not None and x.shape[0] and (needs[0] or needs[1]):
            done = self._indirect_batch_backward(x, whole, needs, has_bias, gx)
            if done is not None:
                return done
        if (self.indirect and needs[1] and xp is np and not self.ig.direct_w
                and kernels.policy.weight_rows(self.chunks, self.L)):
            if whole is None:  # the chunks' gradients gathered first (the fused layers': the same bits)
                whole = np.empty((x.shape[0], self.F, self.L), x.dtype)

                def gather(n0, n1):
                    whole[n0:n1] = out_grad(n0, n1)

                kernels.run_chunks(gather, self.chunks)
                done = x.shape[0] and self._indirect_batch_backward(x, whole, needs, has_bias, gx)
                if done:
                    return done
            return self._backward_weight_rows(x, whole, needs, has_bias, gx)

        def chunk(n0, n1):
            part = gx[n0:n1] if needs[0] and xp is np else None
            gxc, gw, gb = self.backward_chunk(x[n0:n1], out_grad(n0, n1), needs[0], needs[1], want_b, part)
            if gxc is not None and gxc is not part:
                gx[n0:n1] = gxc
            return gw, gb

        if self._split_backward(x, needs):  # one chunk: the two gradients as two jobs, side by side
            N = x.shape[0]

            def job(which, _):
                gxc, gw, gb = self.backward_chunk(x, out_grad(0, N), which == 0, which == 1, want_b and which == 1,
                                                  gx if which == 0 else None)
                if gxc is not None and gxc is not gx:
                    gx[...] = gxc
                return gw, gb

            partial = kernels.run_chunks(job, [(0, 0), (1, 1)])[1:]
        else:
            partial = kernels.run_chunks(chunk, self.chunks, xp is np)
        gw = self._weight_grad([p[0] for p in partial]) if needs[1] else None
        if not has_bias:
            return gx, gw
        return gx, gw, (_sum_parts([p[1] for p in partial]) if want_b else None)

    def _depthwise_batch_backward(self, x, whole, needs, has_bias, gx):
        """backward of a depthwise layer as one compiled job (kernels.depthwise_batch_backward):
        the input gradient's chunks beside the weight gradient's, each chunk's sums added in
        chunk order as backward's."""
        parts = kernels.depthwise_batch_backward(np.ascontiguousarray(whole), np.ascontiguousarray(x), self.w,
                                                 *self.geom, gx, self.chunks, self.chunks if needs[1] else None)
        gw = self._weight_grad(parts) if needs[1] else None
        if not has_bias:
            return gx, gw
        gb = self._bias_grad(whole) if needs[2] else None
        return gx, gw, gb

    def _indirect_batch_backward(self, x, whole, needs, has_bias, gx):
        """backward of an indirect-GEMM layer as one compiled job (kernels/igemm.py's
        input_grad_job beside weight_grad_job): the weight gradient's parts per chunk added in
        chunk order, or its columns over the whole batch (policy.weight_rows), as backward's
        Python chunks would; None where the input gradient takes the col2im product."""
        ig, chunks = self.ig, self.chunks
        if not self.indirect_jobs:
            return None
        ig.prepare_backward(needs[0])
        g = np.ascontiguousarray(whole, dtype=np.float32)
        parts = []
        if needs[0]:
            job = ig.input_grad_job(g, gx, chunks)
            if job is None:
                return None
            parts.append(job)
        if needs[1]:
            xc = np.ascontiguousarray(x, dtype=np.float32)
            columns = not ig.direct_w and kernels.policy.weight_rows(chunks, self.L)
            CgK = self.Cg * self.K
            ranges = kernels.policy.even_ranges(CgK, min(CgK, kernels.policy.WORKERS)) if columns else chunks
            parts.append(ig.weight_grad_job(xc, g, ranges, columns))
        job = parts[0] if len(parts) == 1 else kernels.paired(*parts)
        kernels.run_compiled(job.fn, job.args, job.count)
        gw = self._weight_grad(list(parts[-1].sums)) if needs[1] else None
        if not has_bias:
            return gx, gw
        gb = self._bias_grad(whole) if needs[2] else None
        return gx, gw, gb

    def _bias_grad(self, whole):
        """The bias gradient from the whole batch's output gradient (N, F, L): each chunk's sums
        added in chunk order, as backward's chunks add theirs."""
        return _sum_parts([whole[n0:n1].sum(axis=2).sum(axis=0) for n0, n1 in self.chunks])

    def _backward_weight_rows(self, x, whole, needs, has_bias, gx):
        """backward where the chunks' reductions are short (policy.weight_rows): the weight
        gradient as one job per core over the whole batch, each for its share of the fields'
        elements (rows of the product, columns of gw), written in place, beside the chunks' input
        gradients (and bias parts)."""
        want_b = has_bias and needs[2]
        CgK = self.Cg * self.K
        gw = np.empty((self.F, CgK), np.float32)

        def job(kind, a, b):
            if kind == 0:  # columns [a, b) of gw
                self.ig.weight_grad_rows(x, whole, a, b, gw)
                return None
            part = gx[a:b] if needs[0] else None
            gxc, _, gb = self.backward_chunk(x[a:b], whole[a:b], needs[0], False, want_b, part)
            if gxc is not None and gxc is not part:
                gx[a:b] = gxc
            return gb

        rows = kernels.policy.even_ranges(CgK, min(CgK, kernels.policy.WORKERS))
        jobs = [(0, m0, m1) for m0, m1 in rows] + [(1, n0, n1) for n0, n1 in self.chunks]
        parts = kernels.run_chunks(job, jobs)[len(rows):]
        gw = self._weight_grad([gw])
        if not has_bias:
            return gx, gw
        return gx, gw, (_sum_parts(parts) if want_b else None)

    def _split_backward(self, x, needs):
        """Whether backward runs the input gradient and the weight gradient as two jobs
        (policy.split_backward): NumPy arrays, both wanted, the indirect GEMM or the depthwise
        kernels (which compute the two apart anyway)."""
        return (self.xp is np and needs[0] and needs[1] and (self.indirect or self.depthwise)
                and kernels.policy.split_backward(self.chunks, 2 * x.shape[0] * self.F * self.Cg * self.K * self.L))

    def _weight_grad(self, parts):
        """The chunks' dW parts summed in chunk order (deterministic), as (F, C/G, *kernel)."""
        gw = _sum_parts(parts)
        if self.depthwise:  # float64 (C, KH, KW) sums
            return gw.astype(self.w.dtype).reshape(self.w.shape)
        if self.winograd_dw:
            return kernels.winograd_weight_grad(gw, self.w.dtype)
        if self.nhwc:  # (F, KH*KW*C) -> (F, C, KH, KW)
            gw = gw.reshape((self.F,) + self.kernel + (self.Cg,)).transpose(0, 3, 1, 2)
        return self.xp.ascontiguousarray(gw).reshape((self.F, self.Cg) + self.kernel)


class ConvNd(Function):
    """Convolution (cross-correlation, as in every deep-learning library) over d dimensions,
    chunk by chunk over the batch (see ConvPlan).

    Where the compiled CPU kernels apply, 1-D and most 3-D convolutions run as 2-D ones, so they
    get the 2-D paths (indirect GEMM, channels-last layout, compiled scatter): a 1-D signal is an
    image of height 1, and a 3-D volume (one group) becomes N*OD images whose channels are the KD
    input slices each output slice sees, (kd, c), convolved with the weight's (kd, c) channels.
    3-D layers the indirect GEMM takes as they are (policy.use_igemm) read the padded volumes in
    place instead, without those stacked copies."""

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups):
        bias = maybe_bias[0] if maybe_bias else None
        self.lift, self.has_bias, self.x_shape, self.w_shape = None, bool(maybe_bias), x.shape, w.shape
        if x.ndim == 3 and kernels.use_compiled(x):
            self.lift = "1d"
            x, w = x[:, :, None, :], w[:, :, None, :]
            stride, padding, dilation = (1,) + tuple(stride), (0,) + tuple(padding), (1,) + tuple(dilation)
        elif (x.ndim == 5 and groups == 1 and kernels.use_compiled(x)
              and not kernels.use_igemm(x, w.shape, stride, padding, dilation, groups)):
            self.lift = "3d"
            self.depth = (stride[0], padding[0], dilation[0], w.shape[2])
            x, w, od = _stack_depth(x, w, *self.depth)
            stride, padding, dilation = stride[1:], padding[1:], dilation[1:]
        plan = ConvPlan(x, w, bias, stride, padding, dilation, groups)
        N, xp = x.shape[0], plan.xp
        out = xp.empty((N, plan.F, plan.L), dtype=x.dtype)
        plan.forward_batch(x, out)
        self.x, self.plan = x, plan
        if self.lift == "1d":
            return out.reshape((N, plan.F, plan.out_shape[1]))
        if self.lift == "3d":  # (N*OD, F, OH, OW) -> (N, F, OD, OH, OW)
            self.od = od
            out = out.reshape((N // od, od, plan.F) + tuple(plan.out_shape))
            return np.ascontiguousarray(out.transpose(0, 2, 1, 3, 4))
        return out.reshape((N, plan.F) + tuple(plan.out_shape))

    def backward(self, g):
        x, plan = self.x, self.plan
        if self.lift == "3d":  # (N, F, OD, OH, OW) -> (N*OD, F, L)
            g = np.ascontiguousarray(g.transpose(0, 2, 1, 3, 4))
        g3 = g.reshape(x.shape[0], plan.F, plan.L)
        grads = list(plan.backward(x, lambda n0, n1: g3[n0:n1], self.needs_input_grad, self.has_bias, g3))
        if self.lift == "1d":
            grads[0] = None if grads[0] is None else grads[0].reshape(self.x_shape)
            grads[1] = None if grads[1] is None else grads[1].reshape(self.w_shape)
        elif self.lift == "3d":
            grads[0] = None if grads[0] is None else _unstack_depth(grads[0], self.x_shape, self.od, *self.depth)
            if grads[1] is not None:  # (F, KD*C, KH, KW) -> (F, C, KD, KH, KW)
                F_, C, KD = self.w_shape[0], self.w_shape[1], self.w_shape[2]
                grads[1] = np.ascontiguousarray(
                    grads[1].reshape((F_, KD, C) + tuple(self.w_shape[3:])).transpose(0, 2, 1, 3, 4))
        return tuple(grads)


def _stack_depth(x, w, sd, pd, dd, KD):
    """A 3-D convolution as a 2-D one: x (N, C, D, H, W) -> (N*OD, KD*C, H, W), image (n, od)
    holding the KD (zero-padded) depth slices od*sd - pd + kd*dd, kd = 0..KD-1, channel kd*C + c;
    w (F, C, KD, KH, KW) -> (F, KD*C, KH, KW). Returns (x2, w2, OD)."""
    N, C, D = x.shape[:3]
    if pd:
        x = np.pad(x, ((0, 0), (0, 0), (pd, pd), (0, 0), (0, 0)))
    OD = (D + 2 * pd - dd * (KD - 1) - 1) // sd + 1
    s = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(N, OD, KD, C) + x.shape[3:], strides=(s[0], s[2] * sd, s[2] * dd, s[1], s[3], s[4]))
    x2 = np.ascontiguousarray(view).reshape((N * OD, KD * C) + x.shape[3:])
    w2 = np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape((w.shape[0], KD * C) + w.shape[3:])
    return x2, w2, OD


def _unstack_depth(gx2, x_shape, OD, sd, pd, dd, KD):
    """Adjoint of _stack_depth's input: (N*OD, KD*C, H, W) -> (N, C, D, H, W), overlaps summed."""
    N, C, D = x_shape[:3]
    g = gx2.reshape((N, OD, KD, C) + tuple(x_shape[3:]))
    gx = np.zeros((N, C, D + 2 * pd) + tuple(x_shape[3:]), dtype=gx2.dtype)
    for kd in range(KD):
        gx[:, :, kd * dd:kd * dd + sd * (OD - 1) + 1:sd] += g[:, :, kd].transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(gx[:, :, pd:pd + D]) if pd else gx


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


# ------------------------------------------------------------------------ transposed convolution
class Spread(Function):
    """Zeros inserted between the input's values (``stride - 1`` along each spatial axis), then ``lo``
    zeros before and ``hi`` after each axis (a negative number crops instead): the input of the ordinary
    convolution that computes a transposed one."""

    def forward(self, x, stride, lo, hi):
        xp = backend.get_array_module(x)
        plo, phi = tuple(max(v, 0) for v in lo), tuple(max(v, 0) for v in hi)
        spread = tuple((s - 1) * st + 1 for s, st in zip(x.shape[2:], stride))
        full = x.shape[:2] + tuple(a + b + c for a, b, c in zip(spread, plo, phi))
        self.full, self.dtype = full, x.dtype
        self.place = (slice(None), slice(None)) + tuple(slice(p, p + s, st) for p, s, st in zip(plo, spread, stride))
        self.crop = (slice(None), slice(None)) + tuple(slice(p - lo_, f - (ph - hi_))
                                                       for p, lo_, f, ph, hi_ in zip(plo, lo, full[2:], phi, hi))
        buf = xp.zeros(full, dtype=x.dtype)
        buf[self.place] = x
        return xp.ascontiguousarray(buf[self.crop])

    def backward(self, g):
        xp = backend.get_array_module(g)
        buf = xp.zeros(self.full, dtype=self.dtype)
        buf[self.crop] = g
        return xp.ascontiguousarray(buf[self.place])


class ConvTransposeNd(Function):
    """Transposed convolution: the input gradient of the convolution whose input has the output's
    shape, with the same weight (C, F/groups, *kernel) read as a convolution's (out, in/groups, *kernel).
    Its forward is that convolution's backward pass for the input (whichever path it takes), its input
    gradient that convolution's forward pass, its weight gradient that convolution's weight gradient,
    all through ConvPlan: the same kernels, chunking and threads as conv2d."""

    def forward(self, x, w, *maybe_bias, stride, padding, dilation, groups, out_shape):
        xp = backend.get_array_module(x)
        N, F = x.shape[0], w.shape[1] * groups
        # the convolution's input: only its shape and dtype are read when only the input gradient is wanted
        ghost = xp.broadcast_to(xp.zeros((), dtype=x.dtype), (N, F) + tuple(out_shape))
        plan = ConvPlan(ghost, w, None, stride, padding, dilation, groups)
        if tuple(plan.out_shape) != tuple(x.shape[2:]):  # _conv_transpose sends only shapes where they agree
            raise RuntimeError(f"conv_transpose: output {out_shape} convolves to {plan.out_shape}, not {x.shape[2:]}")
        x3 = x.reshape(N, x.shape[1], plan.L)
        out = plan.backward(ghost, lambda n0, n1: x3[n0:n1], (True, False), False)[0]
        if maybe_bias:
            out += maybe_bias[0].reshape((1, F) + (1,) * len(out_shape))
        self.x, self.w, self.has_bias = x, w, bool(maybe_bias)
        self.geom = (stride, padding, dilation, groups)
        return out

    def backward(self, g):
        x, w, needs = self.x, self.w, self.needs_input_grad
        stride, padding, dilation, groups = self.geom
        plan = ConvPlan(g, w, None, stride, padding, dilation, groups)
        gx = gw = None
        if needs[0]:  # the convolution of g
            gx = plan.xp.empty((g.shape[0], plan.F, plan.L), dtype=g.dtype)
            kernels.run_chunks(lambda n0, n1: plan.forward_chunk(g[n0:n1], gx[n0:n1]), plan.chunks,
                               plan.xp is np)
            gx = gx.reshape(x.shape)
        if needs[1]:  # that convolution's weight gradient, x in the place of its output gradient
            x3 = x.reshape(x.shape[0], x.shape[1], plan.L)
            gw = plan.backward(g, lambda n0, n1: x3[n0:n1], (False, True), False)[1]
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g.sum(axis=(0,) + tuple(range(2, g.ndim))) if needs[2] else None)


def conv_transpose_output_shape(size, kernel, stride, padding, output_padding, dilation):
    """(S - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 per spatial axis."""
    return tuple((s - 1) * st - 2 * p + dl * (k - 1) + op + 1
                 for s, k, st, p, op, dl in zip(size, kernel, stride, padding, output_padding, dilation))


def _conv_transpose(name, d, x, weight, bias, stride, padding, output_padding, groups, dilation):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    unbatched = x.ndim == d + 1
    if unbatched:
        x = x.reshape((1,) + x.shape)
    if x.ndim != d + 2 or weight.ndim != d + 2:
        raise ValueError(f"{name}: expected a {d + 2}-D input {LAYOUTS[d]} (or {d + 1}-D without the batch) and a "
                         f"{d + 2}-D weight (in_channels, out_channels/groups, *kernel), got input {x.shape} and "
                         f"weight {weight.shape}")
    stride, padding = as_tuple(stride, d, "stride"), as_tuple(padding, d, "padding")
    output_padding, dilation = as_tuple(output_padding, d, "output_padding"), as_tuple(dilation, d, "dilation")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
    C, Fg, kernel = x.shape[1], weight.shape[1], tuple(weight.shape[2:])
    if weight.shape[0] != C or C % groups:
        raise ValueError(f"{name}: input has {C} channels; weight {weight.shape} expects {weight.shape[0]} "
                         f"(in_channels, divisible by groups={groups})")
    if bias is not None and tuple(bias.shape) != (Fg * groups,):
        raise ValueError(f"{name}: bias must have shape ({Fg * groups},) for weight {weight.shape} and "
                         f"groups={groups}, got {tuple(bias.shape)}")
    if x.dtype != weight.dtype:
        raise ValueError(f"{name}: input dtype {x.dtype} and weight dtype {weight.dtype} differ")
    if any(s <= 0 for s in stride) or any(dl <= 0 for dl in dilation) or any(p < 0 for p in padding):
        raise ValueError(f"{name}: stride and dilation must be positive and padding non-negative, got "
                         f"stride={stride}, dilation={dilation}, padding={padding}")
    if any(not 0 <= op < max(st, dl) for op, st, dl in zip(output_padding, stride, dilation)):
        raise ValueError(f"{name}: output_padding must be non-negative and smaller than stride or dilation, got "
                         f"output_padding={output_padding} with stride={stride}, dilation={dilation}")
    out_shape = conv_transpose_output_shape(x.shape[2:], kernel, stride, padding, output_padding, dilation)
    if any(o <= 0 for o in out_shape):
        raise ValueError(f"{name}: the output would have size {out_shape} for input {x.shape}, kernel {kernel}, "
                         f"padding={padding}: padding is too large")
    if all(op < st for op, st in zip(output_padding, stride)):
        args = (x, weight) if bias is None else (x, weight, bias)
        out = ConvTransposeNd.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=int(groups),
                                    out_shape=out_shape)
        return out.reshape(out.shape[1:]) if unbatched else out
    # output_padding >= stride (allowed with a larger dilation): the convolution of the spread input
    # (zeros between values, edges padded or cropped) with the flipped kernels whose in- and
    # out-channels trade places in each group
    edge = tuple(dl * (k - 1) - p for dl, k, p in zip(dilation, kernel, padding))
    spread = Spread.apply(x, stride=stride, lo=edge, hi=tuple(e + op for e, op in zip(edge, output_padding)))
    G, Cg = int(groups), C // int(groups)
    w = weight.reshape((G, Cg, Fg) + kernel).permute((0, 2, 1) + tuple(range(3, d + 3)))
    w = w.reshape((G * Fg, Cg) + kernel)[(slice(None), slice(None)) + (slice(None, None, -1),) * d]
    out = _conv(name, d, spread, w, bias, 1, 0, dilation, G)
    return out.reshape(out.shape[1:]) if unbatched else out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution (the gradient of conv2d with respect to its input, used to upsample):
    x (N, C, H, W), weight (C, F/groups, kh, kw) -> (N, F, OH, OW) with
    OH = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1. PyTorch's arguments."""
    return _conv_transpose("conv_transpose2d", 2, x, weight, bias, stride, padding, output_padding, groups, dilation)
