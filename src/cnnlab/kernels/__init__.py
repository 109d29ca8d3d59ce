"""The hot loops, behind the public functions the operators call.

- ``policy``: which path applies to which arrays, and every threshold (chunk sizes, channels-last,
  Winograd's rule, small batches, when the compiled kernels apply), on one page;
- ``threads``: the thread pool that spreads a batch over the cores, BLAS held to one thread;
- ``cpu``: numba-compiled loops for 2-D work on NumPy arrays (imported on first use);
- ``winograd``: 3x3 convolutions by Winograd F(2x2, 3x3);
- ``generic``: vectorised loops on any array module (NumPy or CuPy) and any number of dimensions.

Each function below picks the fastest implementation that fits the arrays it is given (asking
``policy``); operators call only these, and the ``policy`` rules re-exported here. The
thresholds themselves stay in ``policy`` (patch them there).

Shapes: x (N, C, *S) unpadded; kernel k; output O; L = prod(O); K = prod(k).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from . import generic, policy, threads
from .policy import (
    allow_igemm,
    allow_winograd,
    compiled,
    conv_chunks,
    indirect_chunks,
    use_compiled,
    use_compiled_lrn,
    use_compiled_sgd,
    use_depthwise,
    use_fused_conv,
    use_igemm,
    use_nhwc,
    use_winograd,
    use_winograd_weight_grad,
    winograd_chunks,
)
from .threads import run_chunks, run_compiled
from .winograd import (
    winograd_conv,
    winograd_transposed_weights,
    winograd_weight_grad,
    winograd_weight_grad_part,
    winograd_weights,
)

__all__ = [
    "act_forward_chunk", "act_backward_chunk", "allow_igemm", "allow_winograd", "bn_relu_train_backward",
    "bn_relu_train_forward", "indirect_conv", "over_panels", "use_igemm",
    "col2im", "col2im_nhwc", "compiled", "conv_chunks", "erf", "indirect_chunks", "generic", "im2col", "im2col_nhwc",
    "linear_backward", "linear_forward",
    "lrn_backward", "lrn_forward", "lrn_forward_eval", "max_pool2d_backward_chunk", "max_pool2d_chunk",
    "max_pool_backward",
    "max_pool_forward", "paired", "policy", "relu_backward", "relu_forward", "run_chunks", "run_compiled", "scale_shift_relu",
    "sgd_update", "sigmoid_backward", "sum_pool2d_backward_chunk", "sum_pool2d_chunk", "sum_pool_backward",
    "sum_pool_forward", "tanh_backward", "threads", "use_compiled", "use_compiled_lrn", "use_compiled_sgd",
    "use_depthwise", "use_fused_conv", "depthwise_forward", "depthwise_backward", "depthwise_batch_backward",
    "depthwise_batch_forward", "use_nhwc", "use_winograd",
    "use_winograd_weight_grad", "winograd_chunks", "winograd_conv",
    "winograd_transposed_weights", "winograd_weight_grad", "winograd_weight_grad_part", "winograd_weights",
]


def _cpu():
    """The numba kernels, imported (and compiled) only when first needed; BLAS set up then too."""
    threads.configure_blas()
    from . import cpu  # noqa: PLC0415

    return cpu


def indirect_conv(x_shape, w, stride, padding, dilation, groups, out_shape):
    """An igemm.IndirectConv for one 2-D or 3-D convolution (policy.use_igemm), its weights packed
    over the cores (over_panels)."""
    threads.configure_blas()
    from .igemm import IndirectConv  # noqa: PLC0415 - compiled on first use

    return IndirectConv(x_shape, w, stride, padding, dilation, groups, out_shape, over=over_panels)


def over_panels(fill, source, G, out, count, *order):
    """fill(source, G, out, start, stop, *order) over ``count`` panels (or filters) of weights:
    shared out over the cores as a compiled job where the source reaches igemm.PACK_SPLIT_BYTES,
    else in one call on this thread (igemm.pack_filters)."""
    from .igemm import PACK_SPLIT_BYTES, fill_job  # noqa: PLC0415

    if source.nbytes < PACK_SPLIT_BYTES or policy.WORKERS < 2 or count < 2:
        fill(source, G, out, 0, count, *order)
        return
    job = fill_job(fill, source, G, out, policy.even_ranges(count, min(count, policy.WORKERS)), *order)
    run_compiled(job.fn, job.args, job.count)


def _pad(x, padding, value=0.0):
    """x with ``padding`` values of ``value`` on both sides of each spatial axis: a filled array
    and one copy (np.pad's general machinery costs tens of microseconds a call at batch 1)."""
    if not any(padding):
        return x
    xp = backend.get_array_module(x)
    out = xp.full(x.shape[:2] + tuple(s + 2 * p for s, p in zip(x.shape[2:], padding)), value, dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, x.shape[2:]))] = x
    return out


def _unpad(xpad, padding):
    if not any(padding):
        return xpad
    return xpad[(slice(None), slice(None)) + tuple(slice(p, s - p) for p, s in zip(padding, xpad.shape[2:]))]


def _padded_shape(shape, padding):
    return tuple(shape[:2]) + tuple(s + 2 * p for s, p in zip(shape[2:], padding))


# ------------------------------------------------------------------ convolution: receptive fields
def im2col(x, kernel, stride, padding, dilation, out_shape):
    """(N, C, *S) -> (N, C*K, L): per image, every receptive field as one column (zeros where padded).

    One strided copy of the (padded) input on every device: on the CPU it beat a numba loop
    (benchmarks/README.md, "Compiled loops").
    """
    return generic.im2col(_pad(x, padding), kernel, stride, dilation, out_shape)


def col2im(cols, x_shape, kernel, stride, padding, dilation, out_shape):
    """Adjoint of im2col: (N, C*K, L) -> (N, C, *S), overlapping fields summed."""
    if policy.use_compiled_2d(cols, len(kernel)):
        return _cpu().col2im2d(np.ascontiguousarray(cols), *x_shape, *kernel, *stride, *padding, *dilation,
                               *out_shape)
    xpad = generic.col2im(cols, _padded_shape(x_shape, padding), kernel, stride, dilation, out_shape, cols.dtype)
    return _unpad(xpad, padding)


def im2col_nhwc(x, kernel, stride, padding, dilation, out_shape):
    """(n, C, H, W) -> (n*L, KH*KW*C): receptive field j as row j, ordered (kh, kw, c).

    The chunk is first copied channels-last (and padded) in one pass; then every kernel row of
    a receptive field is a contiguous run of KW*C values (dilation 1), which NumPy copies fast.
    """
    n, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw), (OH, OW) = kernel, stride, padding, dilation, out_shape
    if ph or pw:
        xh = np.zeros((n, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
        xh[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    else:
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    s = xh.strides
    view = np.lib.stride_tricks.as_strided(
        xh, shape=(n, OH, OW, KH, KW, C), strides=(s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]))
    return np.ascontiguousarray(view).reshape(n * OH * OW, KH * KW * C)


def col2im_nhwc(dcols, x_shape, kernel, stride, padding, dilation, out_shape):
    """Adjoint of im2col_nhwc: (n*L, KH*KW*C) -> (n, C, H, W), overlapping fields summed."""
    return _cpu().col2im2d_nhwc(np.ascontiguousarray(dcols), *x_shape, *kernel, *stride, *padding, *dilation,
                                *out_shape)


def _vectors():
    """kernels/depthwise.py, imported (and compiled) only when first needed."""
    threads.configure_blas()
    from . import depthwise  # noqa: PLC0415

    return depthwise


def _takes(out):
    """kernels/depthwise.py can write into ``out``: none given, or a C-contiguous float32 array."""
    return out is None or (out.flags.c_contiguous and out.dtype == np.float32)


def depthwise_forward(x, w, kernel, stride, padding, dilation, out_shape, out=None):
    """Depthwise 2-D convolution of a chunk (policy.use_depthwise): x (n, C, H, W), w (C, 1, KH, KW)
    -> (n, C, OH*OW), without bias. float32 with AVX-512 plane by plane in registers
    (kernels/depthwise.py); otherwise along whole padded (phase) planes (cpu.depthwise_planes).
    Written into ``out`` (n, C, OH*OW) where given."""
    if policy.use_depthwise_vectors(x) and _takes(out):
        return _vectors().forward(x, w, kernel, stride, padding, dilation, out_shape, out)
    n, C = x.shape[:2]
    xp, boff, Wq = _depthwise_padded(x, kernel, stride, padding, dilation)
    OH, OW = out_shape
    buf = np.empty((n, C, OH * Wq), x.dtype)
    _cpu().depthwise_planes(xp, np.ascontiguousarray(w.reshape(C, math.prod(kernel)), dtype=x.dtype), boff, buf, OH * Wq)
    y = buf.reshape(n, C, OH, Wq)[..., :OW]
    if out is None:
        return y.reshape(n, C, OH * OW)
    out.reshape(n, C, OH, OW)[...] = y
    return out


def depthwise_batch_forward(x, w, kernel, stride, padding, dilation, out_shape, out, chunks):
    """depthwise_forward of a whole batch (policy.use_depthwise_vectors; x (N, C, H, W) and out
    (N, C, OH*OW) contiguous float32) as one compiled job over ``chunks`` (image ranges), spread
    over the cores by threads.run_compiled: no Python, no GIL between the chunks."""
    job = _vectors().forward_job(x, w, kernel, stride, padding, dilation, out_shape, out, chunks)
    threads.run_compiled(job.fn, job.args, job.count)


def depthwise_batch_backward(g, x, w, kernel, stride, padding, dilation, out_shape, gx, x_chunks, w_chunks):
    """depthwise_backward of a whole batch as one compiled job: the input gradient into ``gx``
    (N, C, H, W) over ``x_chunks`` where gx is given, and the weight gradient's float64 parts
    (C, KH, KW), one per range of ``w_chunks`` in their order, for the caller to add, where
    w_chunks is not None (returned; else None; x, the input, is needed only for it). g (N, C, OH*OW) and x contiguous float32."""
    dw = _vectors()
    parts = []
    if gx is not None:
        parts.append(dw.input_grad_job(g, w, gx.shape[2:], kernel, stride, padding, dilation, out_shape, gx, x_chunks))
    wj = None
    if w_chunks is not None:
        wj = dw.weight_grad_job(g, x, kernel, stride, padding, dilation, out_shape, w_chunks)
        parts.append(wj)
    if not parts:
        return None
    job = parts[0] if len(parts) == 1 else paired(*parts)
    threads.run_compiled(job.fn, job.args, job.count)
    return None if wj is None else list(wj.sums)


def _depthwise_padded(x, kernel, stride, padding, dilation):
    """(planes (n, C, s0*s1*Hq*Wq + slack), each tap's offset (KH*KW,), Wq) for
    cpu.depthwise_planes: each channel zero-padded and split into its s0 x s1 phases (rows a, a + s0,
    ...; columns b, b + s1, ...; for stride 1 the padded plane itself), so that every tap reads its
    phase at unit stride across the output positions: tap t*d of an axis lies in phase (t*d) % s,
    (t*d) // s steps on."""
    from .igemm import phase_slices  # noqa: PLC0415

    n, C, H, W = x.shape
    (s0, s1), (KH, KW), (dh, dw) = stride, kernel, dilation
    Hp, Wp = H + 2 * padding[0], W + 2 * padding[1]
    Hq, Wq = -(-Hp // s0), -(-Wp // s1)
    plane = s0 * s1 * Hq * Wq
    xp = np.zeros((n, C, plane + (KW - 1) * dw // s1 + 1), x.dtype)  # the last row's taps read past the plane
    xq = xp[:, :, :plane].reshape(n, C, s0, s1, Hq, Wq)
    every = (slice(None), slice(None))
    for a in range(s0):
        for b in range(s1):
            cut = phase_slices((a, b), stride, padding, (H, W))
            if cut is not None:
                xq[every + (a, b) + cut[1]] = x[every + cut[0]]
    th, tw = np.arange(KH, dtype=np.int64) * dh, np.arange(KW, dtype=np.int64) * dw
    boff = (((th % s0)[:, None] * s1 + (tw % s1)[None, :]) * (Hq * Wq)
            + (th // s0)[:, None] * Wq + (tw // s1)[None, :]).ravel()
    return xp, boff, Wq


def depthwise_backward(g, x, w, kernel, stride, padding, dilation, out_shape, needs_x, needs_w, gx_out=None):
    """(dx (n, C, H, W) or None, dW part (C, KH, KW) float64 or None) of depthwise_forward for the
    chunk's output gradient g (n, C, OH*OW). The weight gradient runs along whole (phase) planes,
    as the forward pass; the input gradient as depthwise_input_grad says."""
    cpu, g, x = _cpu(), np.ascontiguousarray(g), np.ascontiguousarray(x)
    n, C = x.shape[:2]
    (KH, KW), (OH, OW) = kernel, out_shape
    gx = depthwise_input_grad(g, w, x.shape[2:], kernel, stride, padding, dilation, out_shape, gx_out) \
        if needs_x else None
    gw = None
    if needs_w and policy.use_depthwise_vectors(x):
        gw = _vectors().weight_grad_part(g, x, kernel, stride, padding, dilation, out_shape)
    elif needs_w:
        xp, boff, Wq = _depthwise_padded(x, kernel, stride, padding, dilation)
        gq = np.zeros((n, C, OH * Wq), g.dtype)  # g over the phase planes' width, zero past each row's outputs
        gq.reshape(n, C, OH, Wq)[..., :OW] = g.reshape(n, C, OH, OW)
        gw = cpu.depthwise_planes_weight(gq, xp, boff, OH * Wq).reshape(C, KH, KW)
    return gx, gw


def depthwise_input_grad(g, w, size, kernel, stride, padding, dilation, out_shape, out=None):
    """The input gradient (n, C, *size) of depthwise_forward for g (n, C, OH*OW): for stride 1 the
    full correlation of g (padded by the kernel's reach) with the taps at mirrored offsets, along
    whole planes; for strided layers of dilation 1 by phases; strided and dilated ones row by row.
    float32 with AVX-512: kernels/depthwise.py's input_grad for every geometry, written into
    ``out`` (n, C, H, W) where given (elsewhere ``out`` is not used)."""
    if policy.use_depthwise_vectors(g) and _takes(out):
        return _vectors().input_grad(g, w, size, kernel, stride, padding, dilation, out_shape, out)
    cpu, g = _cpu(), np.ascontiguousarray(g)
    n, C = g.shape[:2]
    (H, W), (KH, KW), (ph, pw), (dh, dw), (OH, OW) = size, kernel, padding, dilation, out_shape
    if all(s == 1 for s in stride):
        rh, rw = (KH - 1) * dh, (KW - 1) * dw
        Hf, Wg = OH + rh, OW + 2 * rw  # the full correlation's rows (the padded input's), its plane's width
        gp = np.zeros((n, C, (OH + 2 * rh) * Wg + rw), g.dtype)
        gp[:, :, :(OH + 2 * rh) * Wg].reshape(n, C, OH + 2 * rh, Wg)[:, :, rh:rh + OH, rw:rw + OW] = \
            g.reshape(n, C, OH, OW)
        boff = ((rh - np.arange(KH, dtype=np.int64) * dh)[:, None] * Wg
                + (rw - np.arange(KW, dtype=np.int64) * dw)[None, :]).ravel()
        full = np.empty((n, C, Hf * Wg), g.dtype)
        cpu.depthwise_planes(gp, np.ascontiguousarray(w.reshape(C, math.prod(kernel)), dtype=g.dtype), boff, full, Hf * Wg)
        return np.ascontiguousarray(full.reshape(n, C, Hf, Wg)[:, :, ph:ph + H, pw:pw + W])
    if dh == dw == 1:
        return _depthwise_phase_input_grad(cpu, g, w, (H, W), kernel, stride, padding, out_shape)
    geom = (*kernel, *stride, *padding, *dilation, *out_shape)
    return cpu.depthwise2d_backward_input(g, np.ascontiguousarray(w[:, 0]), H, W, *geom)


def _depthwise_phase_input_grad(cpu, g, w, size, kernel, stride, padding, out_shape):
    """A strided depthwise layer's input gradient (dilation 1) by phases, as igemm's _PhaseBack:
    each s0 x s1 phase of the padded input gets a stride-1 correlation of the output gradient with
    that phase's taps, along whole planes (cpu.depthwise_planes), written into its rows and columns."""
    from .igemm import phase_geometry  # noqa: PLC0415

    n, C = g.shape[:2]
    (OH, OW), (H, W) = out_shape, size
    padded = (H + 2 * padding[0], W + 2 * padding[1])
    (E0, E1), Hq, Hg, Wg, P, slack, tables = phase_geometry(tuple(stride), tuple(padding), tuple(size), padded,
                                                             tuple(kernel), 1)
    gp = np.zeros((n, C, Hg * Wg + slack), g.dtype)
    gp[:, :, :Hg * Wg].reshape(n, C, Hg, Wg)[:, :, E0:E0 + OH, E1:E1 + OW] = g.reshape(n, C, OH, OW)
    gx = np.zeros((n, C, H, W), g.dtype)
    buf = np.empty((n, C, P), g.dtype)
    every = (slice(None), slice(None))
    for (a, b), cut, boff in tables:
        if boff is None:
            continue
        taps = np.ascontiguousarray(w[:, 0, a::stride[0], b::stride[1]].reshape(C, -1), dtype=g.dtype)
        cpu.depthwise_planes(gp, taps, boff, buf, P)
        gx[every + cut[0]] = buf.reshape(n, C, Hq, Wg)[every + cut[1]]
    return gx


# ------------------------------------------------------------------ pooling
# 1-D max pooling runs on the 2-D loops (a signal is an image of height 1). 3-D windows are 2-D
# windows over each depth slice (the volume's slices as an image's channels), then a compiled
# pass along the depth (cpu.depth_max, cpu.depth_sum). A window over the whole map (global
# pooling) is one product with a vector of ones. Against PyTorch, forward + backward, before ->
# after: max_pool1d 0.31x -> 1.27-1.40x, max_pool3d 0.21x -> 1.51-2.05x, avg_pool3d 0.62x ->
# 1.39-1.71x, a 7x7 average over 7x7 maps 0.28x -> 1.75-1.87x (benchmarks/README.md, "Ninth
# session of issue 22").
def _whole_map(shape, kernel, padding):
    """One window covers each whole (unpadded) map: pooling is a sum over the map."""
    return tuple(kernel) == tuple(shape[2:]) and not any(padding)


def _lifted(shape, kernel, stride, padding, out_shape):
    """A 1-D pooling's shape and geometry as 2-D: height 1, windows of height 1."""
    return (tuple(shape[:2]) + (1,) + tuple(shape[2:]), (1,) + tuple(kernel), (1,) + tuple(stride),
            (0,) + tuple(padding), (1,) + tuple(out_shape))


def _slices(shape):
    """(N, C, D, H, W) as N images of C*D 2-D slices; and as (N*C, D, H*W) for the depth pass."""
    N, C, D = shape[:3]
    return (N, C * D) + tuple(shape[3:]), (N * C, D, math.prod(shape[3:]))


def max_pool_forward(x, kernel, stride, padding, out_shape):
    """Returns (out (N, C, *O), routing information for max_pool_backward). An input holding a
    NaN takes the NumPy path, where it propagates as in PyTorch (the window's gradient to its first
    NaN; PyTorch's to its last): the compiled loops' strict '>' never takes a NaN, and testing
    for one at every step made them 2.3x slower (a max over the input costs 4% of a 3x3 pooling)."""
    d = len(kernel)
    if policy.use_compiled(x) and d in (1, 2, 3) and not (x.size and np.isnan(x.max())):
        if d == 2:
            return _max_pool2d(x, kernel, stride, padding, out_shape)
        if d == 1:
            shape, *geom = _lifted(x.shape, kernel, stride, padding, out_shape)
            out, routing = _max_pool2d(x.reshape(shape), *geom)
            return out.reshape(out.shape[:2] + out.shape[3:]), ("1d", routing)
        planes, _ = _slices(x.shape)
        m, routing = _max_pool2d(np.ascontiguousarray(x).reshape(planes), kernel[1:], stride[1:], padding[1:],
                                 out_shape[1:])
        _, depth = _slices(x.shape[:3] + tuple(out_shape[1:]))
        best, pick = _cpu().depth_max(m.reshape(depth), kernel[0], stride[0], padding[0], out_shape[0])
        return best.reshape(x.shape[:2] + tuple(out_shape)), ("3d", (routing, pick))
    out, arg = generic.max_pool_forward(_pad(x, padding, -np.inf), kernel, stride, out_shape)
    return out, ("generic", arg)


# The general max-pooling loops compare about one value per ns on one core, the 2x2 stride-2 one
# takes about six inputs per ns, as a streaming pass does: their work counted as bytes for
# policy.batch_ranges is MAX_POOL_BYTES_PER_COMPARE per comparison (a 3x3 stride-2 pooling of
# 4 x 128 maps of 16x16, 0.5 MB: 0.21 ms on one core, left there by its bytes)
MAX_POOL_BYTES_PER_COMPARE = 24


def _max_pool2d(x, kernel, stride, padding, out_shape):
    """2-D max pooling on the compiled loops, over the batch's chunks: (out, ("cpu", arg-max))."""
    x, cpu = np.ascontiguousarray(x), _cpu()
    fast = tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and not any(padding)
    work = x.nbytes if fast else (MAX_POOL_BYTES_PER_COMPARE * x.shape[0] * x.shape[1] * math.prod(out_shape)
                                  * math.prod(kernel))
    (N, C, H, W), (OH, OW) = x.shape, out_shape
    chunks = policy.batch_ranges(N, max(x.nbytes, work))
    if len(chunks) < 2:  # on this thread, no job: its set-up cost a pooling of 12 us 20%
        out, arg = cpu.max_pool2d_forward(x, *kernel, *stride, *padding, *out_shape)
        return out, ("cpu", arg)
    out = np.empty((N, C, OH, OW), x.dtype)
    arg = np.empty((N, C, OH, OW), np.int32)
    from . import jobs  # noqa: PLC0415 - compiled with cpu

    table = jobs.table(chunks)
    fn = cpu.max_pool_forward_job32 if x.dtype == np.float32 else cpu.max_pool_forward_job64
    job = jobs.Job(fn.address, [table, C, H, W, OH, OW, x, out, arg, *kernel, *stride, *padding], len(table), ())
    threads.run_compiled(job.fn, job.args, job.count)
    return out, ("cpu", arg)


def paired(first, second):
    """Two compiled jobs (kernels/jobs.py's Job) as one: run by run_compiled, the first's chunks
    beside the second's."""
    from .jobs import paired as both  # noqa: PLC0415 - compiled with the kernels that make the jobs

    return both(first, second)


def max_pool_backward(g, routing, x_shape, kernel, stride, padding, out_shape):
    kind, arg = routing
    if kind == "1d":
        shape, *geom = _lifted(x_shape, kernel, stride, padding, out_shape)
        return max_pool_backward(g.reshape(g.shape[:2] + (1,) + g.shape[2:]), arg, shape, *geom).reshape(x_shape)
    if kind == "3d":  # each gradient to its window's slice, then within the slice to its maximum
        routing2, pick = arg
        N, C, D = x_shape[:3]
        planes, _ = _slices(x_shape)
        part, _ = _slices((N, C, D) + tuple(out_shape[1:]))
        g2 = _cpu().depth_route(np.ascontiguousarray(g).reshape(pick.shape), pick, D)
        return max_pool_backward(g2.reshape(part), routing2, planes, kernel[1:], stride[1:], padding[1:],
                                 out_shape[1:]).reshape(x_shape)
    if kind == "cpu":  # a compiled job over the batch's chunks (_max_pool2d)
        g, cpu = np.ascontiguousarray(g), _cpu()
        (N, C, H, W), (OH, OW) = x_shape, g.shape[2:]
        chunks = policy.batch_ranges(N, math.prod(x_shape) * g.itemsize)
        if len(chunks) < 2:
            return cpu.max_pool2d_backward(g, arg, H, W)
        dx = np.empty(x_shape, g.dtype)
        from . import jobs  # noqa: PLC0415 - compiled with cpu

        table = jobs.table(chunks)
        fn = cpu.max_pool_backward_job32 if g.dtype == np.float32 else cpu.max_pool_backward_job64
        job = jobs.Job(fn.address, [table, C, H, W, OH, OW, g, arg, dx], len(table), ())
        threads.run_compiled(job.fn, job.args, job.count)
        return dx
    dx = generic.max_pool_backward(g, arg, _padded_shape(x_shape, padding), kernel, stride, out_shape, g.dtype)
    return _unpad(dx, padding)


def sum_pool_forward(x, kernel, stride, padding, out_shape):
    """Sum over each window (zero padding): (N, C, *S) -> (N, C, *O). 2-D windows other than 2x2/2
    are a depthwise convolution with unit weights, along whole (phase) planes."""
    d = len(kernel)
    if _whole_map(x.shape, kernel, padding):
        xp = backend.get_array_module(x)
        flat = xp.ascontiguousarray(x).reshape(x.shape[0] * x.shape[1], math.prod(x.shape[2:]))
        return (flat @ xp.ones(flat.shape[1], x.dtype)).reshape(x.shape[:2] + (1,) * d)
    if d == 3 and policy.use_compiled(x):
        planes, _ = _slices(x.shape)
        s2 = sum_pool_forward(np.ascontiguousarray(x).reshape(planes), kernel[1:], stride[1:], padding[1:],
                              out_shape[1:])
        _, depth = _slices(x.shape[:3] + tuple(out_shape[1:]))
        out = _cpu().depth_sum(s2.reshape(depth), kernel[0], stride[0], padding[0], out_shape[0])
        return out.reshape(x.shape[:2] + tuple(out_shape))
    if policy.use_compiled_2d(x, d) and _sum_pool_jobs(x, kernel, stride, padding):
        x = np.ascontiguousarray(x)
        N, C = x.shape[:2]
        out = np.empty((N, C) + tuple(out_shape), x.dtype)
        depthwise_batch_forward(x, np.ones((C, 1) + tuple(kernel), x.dtype), kernel, stride, padding, (1, 1),
                                out_shape, out.reshape(N, C, math.prod(out_shape)),
                                policy.batch_ranges(N, x.nbytes) or [(0, 0)])
        return out
    if policy.use_compiled_2d(x, d):
        x = np.ascontiguousarray(x)
        return _into_batch(lambda n0, n1, part: sum_pool2d_chunk(x[n0:n1], kernel, stride, padding, out_shape, part),
                           x.shape[:2] + tuple(out_shape), x.dtype, x.nbytes)
    return generic.sum_pool_forward(_pad(x, padding), kernel, stride, out_shape)


def _into_batch(fn, shape, dtype, nbytes):
    """An array of ``shape`` whose batch slices ``fn(n0, n1, out[n0:n1])`` write in place, over the
    cores as threads.over_batch: no join of the parts after them (a serial copy of the whole
    result: 0.3 ms of a 5x5 average pooling's 2.2 on 6.4 MB of input gradient)."""
    out = np.empty(shape, dtype)
    run_chunks(lambda n0, n1: fn(n0, n1, out[n0:n1]), policy.batch_ranges(shape[0], nbytes) or [(0, 0)])
    return out


def _sum_pool_jobs(a, kernel, stride, padding):
    """2-D window sums as one compiled job over the batch (depthwise_batch_forward, _backward):
    float32 with AVX-512, windows other than sum_pool2d_2x2's."""
    return policy.use_depthwise_vectors(a) and not _sum_pool_2x2(kernel, stride, padding)


def _sum_pool_2x2(kernel, stride, padding):
    """The 2x2, stride-2, unpadded window: cpu.sum_pool2d_2x2_forward's own loop."""
    return tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and not any(padding)


def sum_pool_backward(g, x_shape, kernel, stride, padding, out_shape):
    d = len(kernel)
    if _whole_map(x_shape, kernel, padding):
        xp = backend.get_array_module(g)
        dx = xp.empty(x_shape, g.dtype)
        dx[...] = g.reshape(tuple(x_shape[:2]) + (1,) * d)
        return dx
    if d == 3 and policy.use_compiled(g):
        N, C, D = x_shape[:3]
        planes, _ = _slices(x_shape)
        part, _ = _slices((N, C, D) + tuple(out_shape[1:]))
        g3 = np.ascontiguousarray(g).reshape(N * C, out_shape[0], math.prod(out_shape[1:]))
        g2 = _cpu().depth_sum_adjoint(g3, kernel[0], stride[0], padding[0], D)
        return sum_pool_backward(g2.reshape(part), planes, kernel[1:], stride[1:], padding[1:],
                                 out_shape[1:]).reshape(x_shape)
    if policy.use_compiled_2d(g, len(kernel)) and _sum_pool_jobs(g, kernel, stride, padding):
        g = np.ascontiguousarray(g)
        N, C = x_shape[:2]
        dx = np.empty(x_shape, g.dtype)
        ones = np.ones((C, 1) + tuple(kernel), g.dtype)
        depthwise_batch_backward(g.reshape(N, C, math.prod(out_shape)), None, ones, kernel, stride, padding, (1, 1),
                                 out_shape, dx, policy.batch_ranges(N, dx.nbytes) or [(0, 0)], None)
        return dx
    if policy.use_compiled_2d(g, len(kernel)):
        g = np.ascontiguousarray(g)
        return _into_batch(lambda n0, n1, part: sum_pool2d_backward_chunk(g[n0:n1], x_shape[2:], kernel, stride,
                                                                          padding, part),
                           tuple(x_shape), g.dtype, math.prod(x_shape) * g.itemsize)
    dx = generic.sum_pool_backward(g, _padded_shape(x_shape, padding), kernel, stride, out_shape, g.dtype)
    return _unpad(dx, padding)


# ------------------------------------------------------------------ activations
def erf(x):
    """The error function, elementwise (GELU's exact form): on NumPy floats a compiled loop of
    ``math.erf`` (float64) or of a rational approximation within 6.5e-8 of it (float32, several times
    faster: cpu.erf_rational_range); CuPy's ``cupyx.scipy.special.erf`` on the GPU; ``math.erf`` one
    value at a time otherwise (kernels off, other dtypes)."""
    xp = backend.get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special  # noqa: PLC0415 - only reached with CuPy arrays

        return cupyx.scipy.special.erf(x)
    if not policy.use_compiled(x):
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    xf, of = x.reshape(-1), out.reshape(-1)
    cpu = _cpu()
    loop = cpu.erf_rational_range if x.dtype == np.float32 else cpu.erf_range
    run_chunks(lambda lo, hi: loop(xf, of, lo, hi), policy.flat_chunks(x.size, x.itemsize))
    return out


def relu_forward(x):
    """max(x, 0), elementwise."""
    if not policy.use_compiled(x):
        return backend.get_array_module(x).maximum(x, 0)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    xf, of = x.reshape(-1), out.reshape(-1)
    cpu = _cpu()
    run_chunks(lambda lo, hi: cpu.relu_forward_range(xf, of, lo, hi), policy.flat_chunks(x.size, x.itemsize))
    return out


def _elementwise_backward(name, g, out):
    """dx from the upstream gradient and the activation's output, one fused pass per core."""
    g, out = np.ascontiguousarray(g), np.ascontiguousarray(out)
    dx = np.empty_like(g)
    gf, of, df = g.reshape(-1), out.reshape(-1), dx.reshape(-1)
    kernel = getattr(_cpu(), f"{name}_backward_range")
    run_chunks(lambda lo, hi: kernel(gf, of, df, lo, hi), policy.flat_chunks(g.size, g.itemsize))
    return dx


def relu_backward(g, out):
    """g where the ReLU's output is positive, else 0."""
    if not policy.use_compiled(g):
        return g * (out > 0)
    return _elementwise_backward("relu", g, out)


def tanh_backward(g, out):
    """g * (1 - out^2) for out = tanh(x)."""
    if not policy.use_compiled(g):
        return g * (1 - out * out)
    return _elementwise_backward("tanh", g, out)


def sigmoid_backward(g, out):
    """g * out * (1 - out) for out = sigmoid(x)."""
    if not policy.use_compiled(g):
        return g * out * (1 - out)
    return _elementwise_backward("sigmoid", g, out)


# ------------------------------------------------------------------ one chunk, on the calling thread
# functional/fused.py convolves, pools and activates each chunk of the batch inside run_chunks:
# these loops run on the thread that called them (no splitting of their own, which must not nest
# inside a chunk), on C-contiguous NumPy float arrays, with the same compiled loops and roundings
# as the whole-batch functions above.
def act_forward_chunk(act, a):
    """a = act(a) in place for act None, 'relu', 'tanh' or 'sigmoid', computed exactly as F.relu,
    F.tanh and F.sigmoid compute it; returns a."""
    if act == "relu":
        flat = a.reshape(-1)
        _cpu().relu_forward_range(flat, flat, 0, flat.size)
    elif act == "tanh":
        np.tanh(a, out=a)
    elif act == "sigmoid":  # 0.5 * (1 + tanh(a / 2)), as F.sigmoid computes it
        a *= 0.5
        np.tanh(a, out=a)
        a += 1
        a *= 0.5
    return a


def act_backward_chunk(act, g, out):
    """The activation's input gradient from the upstream gradient g and its output ``out`` (the
    same compiled loops as relu_backward, tanh_backward, sigmoid_backward); g itself for None."""
    if act is None:
        return np.ascontiguousarray(g)
    g, out = np.ascontiguousarray(g), np.ascontiguousarray(out)
    dx = np.empty_like(g)
    getattr(_cpu(), f"{act}_backward_range")(g.reshape(-1), out.reshape(-1), dx.reshape(-1), 0, g.size)
    return dx


def max_pool2d_chunk(x, kernel, stride, padding, out_shape):
    """2-D max pooling of (n, C, H, W): (out (n, C, *out_shape), arg-max as flat h*W + w, int32)."""
    return _cpu().max_pool2d_forward(x, *kernel, *stride, *padding, *out_shape)


def max_pool2d_backward_chunk(g, arg, in_shape):
    """Adjoint of max_pool2d_chunk: each gradient of g (n, C, PH, PW) to its arg-max in an
    (n, C, *in_shape) array; overlapping windows accumulate."""
    return _cpu().max_pool2d_backward(g, arg, *in_shape)


def sum_pool2d_chunk(x, kernel, stride, padding, out_shape, out=None):
    """Window sums (zero padding) of (n, C, H, W) -> (n, C, *out_shape): the 2x2/2 loop, else a
    depthwise convolution with unit weights (sum_pool_forward's chunks); into ``out`` (contiguous)
    where given."""
    if _sum_pool_2x2(kernel, stride, padding):
        return _written(_cpu().sum_pool2d_2x2_forward(x, *out_shape), out)
    n, C = x.shape[:2]
    ones = np.ones((C, 1) + tuple(kernel), x.dtype)
    flat = None if out is None else out.reshape(n, C, math.prod(out_shape))
    y = depthwise_forward(np.ascontiguousarray(x), ones, kernel, stride, padding, (1, 1), out_shape, flat)
    return _written(y.reshape((n, C) + tuple(out_shape)), out)


def sum_pool2d_backward_chunk(g, in_shape, kernel, stride, padding, out=None):
    """Adjoint of sum_pool2d_chunk: (n, C, PH, PW) -> (n, C, *in_shape), into ``out`` where given."""
    if _sum_pool_2x2(kernel, stride, padding):
        return _written(_cpu().sum_pool2d_2x2_backward(g, *in_shape), out)
    n, C, PH, PW = g.shape
    ones = np.ones((C, 1) + tuple(kernel), g.dtype)
    return _written(depthwise_input_grad(g.reshape(n, C, PH * PW), ones, in_shape, kernel, stride, padding, (1, 1),
                                         (PH, PW), out), out)


def _written(y, out):
    """y, or ``out`` holding y where given: copied unless y was written there (a view of out's data)."""
    if out is None:
        return y
    if y.__array_interface__["data"][0] != out.__array_interface__["data"][0]:
        out[...] = y
    return out


# ------------------------------------------------------------------ normalisation
def _ncs(a):
    # (N, C, *S) -> (N, C, prod(S)), the size given: -1 cannot be inferred for an empty batch
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def bn_relu_train_forward(x, w, b, eps):
    """relu(batch_norm(x)) with batch statistics over all axes but 1, in one compiled pass per
    channel (NumPy float arrays). Returns (out, mean, var, inv) with var the biased batch
    variance and inv = 1 / sqrt(var + eps); mean, var and inv are float64 (C,)."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty_like(x3)
    C = x.shape[1]
    mean, var, inv = np.empty(C), np.empty(C), np.empty(C)
    w, b = np.ascontiguousarray(w, dtype=x.dtype), np.ascontiguousarray(b, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.bn_relu_train_forward(x3, w, b, float(eps), out, mean, var, inv, c0, c1),
               policy.channel_chunks(x3))
    return out.reshape(x.shape), mean, var, inv


def bn_relu_train_backward(g, x, out, w, mean, inv):
    """(dx, dw, db) of bn_relu_train_forward for the upstream gradient g; dw and db float64."""
    g3, x3, o3, cpu = _ncs(g), _ncs(x), _ncs(out), _cpu()
    dx = np.empty_like(g3)
    C = x.shape[1]
    gw, gb = np.empty(C), np.empty(C)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.bn_relu_train_backward(g3, x3, o3, w, mean, inv, dx, gw, gb, c0, c1),
               policy.channel_chunks(x3))
    return dx.reshape(x.shape), gw, gb


def compiled_applies(a) -> bool:
    """Whether the compiled CPU kernels take ``a``: a float NumPy array, with the kernels on."""
    return policy.use_compiled(a)


def set_workers(n: int) -> None:
    """Use ``n`` threads for the batch-splitting loops from now on (e.g. one per core when several
    data-parallel processes share a machine: see ``cnnlab.distributed``)."""
    policy.WORKERS = max(1, int(n))  # the pool is rebuilt at its next use (threads.py)


def bn_sums(x, mean=None):
    """(C,) float64: the sum of each channel of x (N, C, ...), or of its squared deviations from
    ``mean`` (C,) float64. The parts of synchronised batch norm (cnnlab.distributed)."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty(x.shape[1])
    if mean is None:
        run_chunks(lambda c0, c1: cpu.bn_channel_sums(x3, out, c0, c1), policy.channel_chunks(x3))
    else:
        mean = np.ascontiguousarray(mean, dtype=np.float64)
        run_chunks(lambda c0, c1: cpu.bn_channel_sq_dev(x3, mean, out, c0, c1), policy.channel_chunks(x3))
    return out


def bn_apply(x, scale, shift, relu: bool):
    """x * scale[c] + shift[c] computed in float64 (scale, shift float64), rounded to x's dtype,
    then ReLU'd if ``relu``: the values of bn_relu_train_forward for given statistics."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty_like(x3)
    k, t = np.ascontiguousarray(scale, dtype=np.float64), np.ascontiguousarray(shift, dtype=np.float64)
    run_chunks(lambda c0, c1: cpu.bn_scale_shift(x3, k, t, relu, out, c0, c1), policy.channel_chunks(x3))
    return out.reshape(x.shape)


def bn_grad_sums(g, x, out, mean, relu: bool):
    """(sum(gm), sum(gm * (x - mean))) per channel, float64, gm = g masked by out > 0 if ``relu``."""
    g3, x3, o3, cpu = _ncs(g), _ncs(x), _ncs(out), _cpu()
    sb, sw = np.empty(x.shape[1]), np.empty(x.shape[1])
    run_chunks(lambda c0, c1: cpu.bn_grad_sums(g3, x3, o3, relu, mean, sb, sw, c0, c1), policy.channel_chunks(x3))
    return sb, sw


def bn_grad_input(g, x, out, w, mean, inv, a, q, relu: bool):
    """dx of batch norm (+ ReLU) given the batch's a = sum(gm) / m and q = sum(gm * xhat) / m."""
    g3, x3, o3, cpu = _ncs(g), _ncs(x), _ncs(out), _cpu()
    dx = np.empty_like(g3)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.bn_grad_input(g3, x3, o3, relu, w, mean, inv, a, q, dx, c0, c1),
               policy.channel_chunks(x3))
    return dx.reshape(x.shape)


def scale_shift_relu(x, scale, shift):
    """max(x * scale[c] + shift[c], 0) per channel c of an (N, C, ...) NumPy float array."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty_like(x3)
    scale, shift = np.ascontiguousarray(scale, dtype=x.dtype), np.ascontiguousarray(shift, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.scale_shift_relu(x3, scale, shift, out, c0, c1), policy.channel_chunks(x3))
    return out.reshape(x.shape)


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across the channels of a NumPy float (N, C, ...) array, the
    batch split over the cores (NumPy's array expressions on each part: a numba loop was slower;
    benchmarks/README.md, "Compiled loops").
    Returns (out, d, scale) shaped like x: d = k + alpha / size * window sum of squares and
    scale = d ** -beta, for lrn_backward."""
    def part(n0, n1):
        return generic.lrn_forward(x[n0:n1], size, alpha, beta, k)
    return threads.over_batch(part, x.shape[0], x.nbytes)


def lrn_forward_eval(x, size, alpha, beta, k):
    """lrn_forward's output alone, in one compiled pass over the batch split over the cores: for
    inference, where nothing keeps d and scale (a tenth of the memory traffic; the same values)."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty_like(x3)
    t = x3.dtype.type
    a, kk, b = t(alpha / size), t(k), t(beta)
    run_chunks(lambda n0, n1: cpu.lrn_forward_eval(x3, out, size // 2, (size - 1) // 2, a, kk, b, n0, n1),
               policy.batch_ranges(x3.shape[0], x3.nbytes))
    return out.reshape(x.shape)


def lrn_backward(g, x, d, scale, size, alpha, beta):
    """The input gradient of lrn_forward for the upstream gradient g."""
    g3, x3, d3, s3, cpu = _ncs(g), _ncs(x), _ncs(d), _ncs(scale), _cpu()
    dx = np.empty_like(g3)
    before, after = size // 2, (size - 1) // 2
    coef = x3.dtype.type(2.0 * alpha * beta / size)
    run_chunks(lambda n0, n1: cpu.lrn_backward(g3, x3, d3, s3, dx, before, after, coef, n0, n1),
               policy.batch_ranges(g3.shape[0], g3.nbytes))
    return dx.reshape(g.shape)


# ------------------------------------------------------------------ fully connected, optimizer
def linear_forward(x2, w):
    """x2 (M, in) @ w.T -> (M, out) for weight w (out, in), C-contiguous. A NumPy input of a few
    rows (policy.use_transposed_linear) is multiplied as (w @ x2.T).T: the same product, faster;
    float32 batches of policy.use_igemm_linear's size on the indirect GEMM."""
    if isinstance(x2, np.ndarray):
        threads.configure_blas()
    if policy.use_igemm_linear(x2, w):
        from .igemm import matmul  # noqa: PLC0415

        return matmul(x2, w, transpose_b=True)
    if policy.use_transposed_linear(x2):
        return np.ascontiguousarray((w @ x2.T).T)
    return x2 @ w.T  # (M, in) @ (in, out) -> (M, out)


def linear_backward(g2, x2, w, needs_x, needs_w):
    """Linear's gradients (g2 @ w, g2.T @ x2), None where not needed; on the indirect GEMM where
    policy.use_igemm_linear holds for its forward pass."""
    if not policy.use_igemm_linear(x2, w) or g2.dtype != np.float32:
        return (g2 @ w if needs_x else None), (g2.T @ x2 if needs_w else None)
    from .igemm import matmul  # noqa: PLC0415

    g2 = np.ascontiguousarray(g2)
    return (matmul(g2, w) if needs_x else None), (matmul(g2, x2, transpose_a=True) if needs_w else None)


def sgd_update(p, g, buf, lr, decay, momentum, damp1, nesterov, first):
    """optim.SGD's step for one parameter in a single compiled pass, in place on p (and buf); see
    kernels/cpu.py: sgd_update. For arrays where policy.use_compiled_sgd holds; one core."""
    _cpu().sgd_update(p, g, buf, lr, decay, momentum, damp1, nesterov, first)
