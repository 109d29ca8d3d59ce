"""The hot loops, chosen by array type in one place.

``generic`` works on any array module (NumPy or CuPy) and any number of spatial dimensions.
``cpu`` holds numba-compiled loops for 2-D work on NumPy arrays. The functions below pick the
fastest implementation that fits the arrays they are given; operators call only these.

Shapes: x (N, C, *S) unpadded; kernel k; output O; L = prod(O); K = prod(k).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

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
    """The numba 2-D kernels apply: a float NumPy array with two spatial dimensions."""
    return d == 2 and _use_cpu_flat(a)


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


# Bytes of one chunk's receptive fields: small enough to stay in the CPU's shared L3 cache while
# its GEMMs, pooling and activation use it, large enough that per-chunk overheads stay small
# (see benchmarks/README.md for the sweep that chose it).
CPU_CHUNK_BYTES = 4 << 20


# Work smaller than this (bytes touched) runs on one core: a thread hand-off costs more.
_SPLIT_MIN_BYTES = 2 << 20
WORKERS = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))
_executor = None


def set_workers(n: int) -> None:
    """Use ``n`` threads for the batch-splitting loops from now on (e.g. one per core when several
    data-parallel processes share a machine: see ``cnnlab.distributed``)."""
    global WORKERS, _executor
    n = max(1, int(n))
    if n != WORKERS and _executor is not None:
        _executor.shutdown(wait=True)
        _executor = None
    WORKERS = n


def _single_threaded_blas():
    """cnnlab spreads each batch over the cores itself, so NumPy's BLAS runs one thread per call.

    A multi-threaded OpenBLAS busy-waits after every call and starves the other core's work:
    on the 2-core reference machine a training step ran up to 3x slower with it (see
    benchmarks/README.md). Set CNNLAB_BLAS_THREADS to keep another count.
    """
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    return threadpool_limits(limits=int(os.environ.get("CNNLAB_BLAS_THREADS", "1")), user_api="blas")


_blas_limits = _single_threaded_blas()


def conv_chunks(x, CK, L, target=None):
    """(start, stop) ranges over the batch of ``x``: cache-sized chunks on the CPU (at least one
    per core when the batch allows; ``target`` bytes of CK*L values per chunk, CPU_CHUNK_BYTES by
    default), a single chunk on a GPU."""
    N = x.shape[0]
    if not isinstance(x, np.ndarray) or N <= 1:
        return [(0, N)]
    per_image = max(CK * L * x.dtype.itemsize, 1)
    # small layers are not split across cores: a thread hand-off costs more than it saves
    cores = WORKERS if N * per_image >= _SPLIT_MIN_BYTES else 1
    count = -(-N // max(1, (target or CPU_CHUNK_BYTES) // per_image))  # chunks of at most the target
    count = min(N, -(-count // cores) * cores)  # a multiple of the cores, so none idles at the end
    bounds = [N * i // count for i in range(count + 1)]  # equal sizes, to within one image
    return list(zip(bounds[:-1], bounds[1:]))


def run_chunks(fn, chunks, on_cpu=True):
    """``[fn(n0, n1) for (n0, n1) in chunks]``, spread over the CPU cores.

    Every core works on its own images (im2col, a single-threaded GEMM, col2im), so nothing is
    shared but the inputs. Results come back in chunk order, so sums over them are deterministic.
    """
    global _executor
    if not on_cpu or len(chunks) < 2 or WORKERS < 2 or not _compiled_enabled:
        return [fn(n0, n1) for n0, n1 in chunks]
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cnnlab")
    return list(_executor.map(lambda c: fn(*c), chunks))


def im2col(x, kernel, stride, padding, dilation, out_shape):
    """(N, C, *S) -> (N, C*K, L): per image, every receptive field as one column (zeros where padded).

    One strided copy of the (padded) input on every device: on the CPU it beat a numba loop.
    """
    return generic.im2col(_pad(x, padding), kernel, stride, dilation, out_shape)


def col2im(cols, x_shape, kernel, stride, padding, dilation, out_shape):
    """Adjoint of im2col: (N, C*K, L) -> (N, C, *S), overlapping fields summed."""
    if _use_cpu(cols, len(kernel)):
        return _cpu().col2im2d(np.ascontiguousarray(cols), *x_shape, *kernel, *stride, *padding, *dilation,
                               *out_shape)
    xpad = generic.col2im(cols, _padded_shape(x_shape, padding), kernel, stride, dilation, out_shape, cols.dtype)
    return _unpad(xpad, padding)


# Channels-last im2col copies each kernel row as one run of KW*C values; below this many values
# per run the column layout's runs along an output row are longer, and it wins (e.g. C = 1:
# 0.5 ms vs 1.8 ms to copy the fields of 128 images for a 1->20 5x5 layer).
NHWC_MIN_RUN = 16


def use_nhwc(x, w_shape, groups) -> bool:
    """The channels-last 2-D convolution path applies: NumPy floats, one group, long kernel rows."""
    return (groups == 1 and len(w_shape) == 4 and _use_cpu(x, 2)
            and w_shape[1] * w_shape[3] >= NHWC_MIN_RUN)


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


def _batch_ranges(N, nbytes):
    """(n0, n1) slices of a batch of N: one per core when the work (``nbytes``) is large enough."""
    step = max(1, -(-N // (WORKERS if nbytes >= _SPLIT_MIN_BYTES else 1)))
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


def _over_batch(fn, N, nbytes):
    """``fn(n0, n1)`` over slices of the batch, on all cores when the work (``nbytes``) is large
    enough; the results (arrays, or tuples of arrays) are joined along the batch axis."""
    parts = run_chunks(fn, _batch_ranges(N, nbytes))
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(items) for items in zip(*parts))
    return np.concatenate(parts)


def max_pool_forward(x, kernel, stride, padding, out_shape):
    """Returns (out (N, C, *O), routing information for max_pool_backward)."""
    if _use_cpu(x, len(kernel)):
        x, cpu = np.ascontiguousarray(x), _cpu()
        out, arg = _over_batch(lambda n0, n1: cpu.max_pool2d_forward(x[n0:n1], *kernel, *stride, *padding, *out_shape),
                               x.shape[0], x.nbytes)
        return out, ("cpu", arg)
    out, arg = generic.max_pool_forward(_pad(x, padding, -np.inf), kernel, stride, out_shape)
    return out, ("generic", arg)


def max_pool_backward(g, routing, x_shape, kernel, stride, padding, out_shape):
    kind, arg = routing
    if kind == "cpu":
        g, cpu = np.ascontiguousarray(g), _cpu()
        return _over_batch(lambda n0, n1: cpu.max_pool2d_backward(g[n0:n1], arg[n0:n1], *x_shape[2:]),
                           g.shape[0], int(np.prod(x_shape)) * g.itemsize)
    dx = generic.max_pool_backward(g, arg, _padded_shape(x_shape, padding), kernel, stride, out_shape, g.dtype)
    return _unpad(dx, padding)


def sum_pool_forward(x, kernel, stride, padding, out_shape):
    """Sum over each window (zero padding): (N, C, *S) -> (N, C, *O)."""
    if _use_cpu(x, len(kernel)):
        x, cpu = np.ascontiguousarray(x), _cpu()
        return _over_batch(lambda n0, n1: cpu.sum_pool2d_forward(x[n0:n1], *kernel, *stride, *padding, *out_shape),
                           x.shape[0], x.nbytes)
    return generic.sum_pool_forward(_pad(x, padding), kernel, stride, out_shape)


def sum_pool_backward(g, x_shape, kernel, stride, padding, out_shape):
    if _use_cpu(g, len(kernel)):
        g, cpu = np.ascontiguousarray(g), _cpu()
        return _over_batch(lambda n0, n1: cpu.sum_pool2d_backward(g[n0:n1], *x_shape[2:], *kernel, *stride, *padding),
                           g.shape[0], int(np.prod(x_shape)) * g.itemsize)
    dx = generic.sum_pool_backward(g, _padded_shape(x_shape, padding), kernel, stride, out_shape, g.dtype)
    return _unpad(dx, padding)


def _flat_chunks(size, itemsize=4):
    step = max(_SPLIT_MIN_BYTES // itemsize, -(-size // WORKERS))
    return [(lo, min(size, lo + step)) for lo in range(0, size, step)]


def _use_cpu_flat(a) -> bool:
    return _compiled_enabled and isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)


def relu_forward(x):
    """max(x, 0), elementwise."""
    if not _use_cpu_flat(x):
        return generic.backend.get_array_module(x).maximum(x, 0)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    xf, of = x.reshape(-1), out.reshape(-1)
    cpu = _cpu()
    run_chunks(lambda lo, hi: cpu.relu_forward_range(xf, of, lo, hi), _flat_chunks(x.size, x.itemsize))
    return out


def _elementwise_backward(name, g, out):
    """dx from the upstream gradient and the activation's output, one fused pass per core."""
    g, out = np.ascontiguousarray(g), np.ascontiguousarray(out)
    dx = np.empty_like(g)
    gf, of, df = g.reshape(-1), out.reshape(-1), dx.reshape(-1)
    kernel = getattr(_cpu(), f"{name}_backward_range")
    run_chunks(lambda lo, hi: kernel(gf, of, df, lo, hi), _flat_chunks(g.size, g.itemsize))
    return dx


def relu_backward(g, out):
    """g where the ReLU's output is positive, else 0."""
    if not _use_cpu_flat(g):
        return g * (out > 0)
    return _elementwise_backward("relu", g, out)


def tanh_backward(g, out):
    """g * (1 - out^2) for out = tanh(x)."""
    if not _use_cpu_flat(g):
        return g * (1 - out * out)
    return _elementwise_backward("tanh", g, out)


def sigmoid_backward(g, out):
    """g * out * (1 - out) for out = sigmoid(x)."""
    if not _use_cpu_flat(g):
        return g * out * (1 - out)
    return _elementwise_backward("sigmoid", g, out)


def _channel_chunks(x):
    """(c0, c1) channel ranges of an (N, C, ...) array: one per core when the work is large enough."""
    C = x.shape[1]
    parts = min(C, WORKERS if x.nbytes >= _SPLIT_MIN_BYTES else 1)
    bounds = [C * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _ncs(a):
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


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
               _channel_chunks(x3))
    return out.reshape(x.shape), mean, var, inv


def bn_relu_train_backward(g, x, out, w, mean, inv):
    """(dx, dw, db) of bn_relu_train_forward for the upstream gradient g; dw and db float64."""
    g3, x3, o3, cpu = _ncs(g), _ncs(x), _ncs(out), _cpu()
    dx = np.empty_like(g3)
    C = x.shape[1]
    gw, gb = np.empty(C), np.empty(C)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.bn_relu_train_backward(g3, x3, o3, w, mean, inv, dx, gw, gb, c0, c1),
               _channel_chunks(x3))
    return dx.reshape(x.shape), gw, gb


def compiled_applies(a) -> bool:
    """Whether the compiled CPU kernels take ``a``: a float NumPy array, with the kernels on."""
    return _use_cpu_flat(a)


def bn_sums(x, mean=None):
    """(C,) float64: the sum of each channel of x (N, C, ...), or of its squared deviations from
    ``mean`` (C,) float64. The parts of synchronised batch norm (cnnlab.distributed)."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty(x.shape[1])
    if mean is None:
        run_chunks(lambda c0, c1: cpu.bn_channel_sums(x3, out, c0, c1), _channel_chunks(x3))
    else:
        mean = np.ascontiguousarray(mean, dtype=np.float64)
        run_chunks(lambda c0, c1: cpu.bn_channel_sq_dev(x3, mean, out, c0, c1), _channel_chunks(x3))
    return out


def bn_apply(x, scale, shift, relu: bool):
    """x * scale[c] + shift[c] computed in float64 (scale, shift float64), rounded to x's dtype,
    then ReLU'd if ``relu``: the values of bn_relu_train_forward for given statistics."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty_like(x3)
    k, t = np.ascontiguousarray(scale, dtype=np.float64), np.ascontiguousarray(shift, dtype=np.float64)
    run_chunks(lambda c0, c1: cpu.bn_scale_shift(x3, k, t, relu, out, c0, c1), _channel_chunks(x3))
    return out.reshape(x.shape)


def bn_grad_sums(g, x, out, mean, relu: bool):
    """(sum(gm), sum(gm * (x - mean))) per channel, float64, gm = g masked by out > 0 if ``relu``."""
    g3, x3, o3, cpu = _ncs(g), _ncs(x), _ncs(out), _cpu()
    sb, sw = np.empty(x.shape[1]), np.empty(x.shape[1])
    run_chunks(lambda c0, c1: cpu.bn_grad_sums(g3, x3, o3, relu, mean, sb, sw, c0, c1), _channel_chunks(x3))
    return sb, sw


def bn_grad_input(g, x, out, w, mean, inv, a, q, relu: bool):
    """dx of batch norm (+ ReLU) given the batch's a = sum(gm) / m and q = sum(gm * xhat) / m."""
    g3, x3, o3, cpu = _ncs(g), _ncs(x), _ncs(out), _cpu()
    dx = np.empty_like(g3)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.bn_grad_input(g3, x3, o3, relu, w, mean, inv, a, q, dx, c0, c1),
               _channel_chunks(x3))
    return dx.reshape(x.shape)


def scale_shift_relu(x, scale, shift):
    """max(x * scale[c] + shift[c], 0) per channel c of an (N, C, ...) NumPy float array."""
    x3, cpu = _ncs(x), _cpu()
    out = np.empty_like(x3)
    scale, shift = np.ascontiguousarray(scale, dtype=x.dtype), np.ascontiguousarray(shift, dtype=x.dtype)
    run_chunks(lambda c0, c1: cpu.scale_shift_relu(x3, scale, shift, out, c0, c1), _channel_chunks(x3))
    return out.reshape(x.shape)


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across the channels of a NumPy float (N, C, ...) array, the
    batch split over the cores (NumPy's array expressions on each part: a numba loop was slower).
    Returns (out, d, scale) shaped like x: d = k + alpha / size * window sum of squares and
    scale = d ** -beta, for lrn_backward."""
    def part(n0, n1):
        return generic.lrn_forward(x[n0:n1], size, alpha, beta, k)
    return _over_batch(part, x.shape[0], x.nbytes)


def lrn_backward(g, x, d, scale, size, alpha, beta):
    """The input gradient of lrn_forward for the upstream gradient g."""
    g3, x3, d3, s3, cpu = _ncs(g), _ncs(x), _ncs(d), _ncs(scale), _cpu()
    dx = np.empty_like(g3)
    before, after = size // 2, (size - 1) // 2
    coef = x3.dtype.type(2.0 * alpha * beta / size)
    run_chunks(lambda n0, n1: cpu.lrn_backward(g3, x3, d3, s3, dx, before, after, coef, n0, n1),
               _batch_ranges(g3.shape[0], g3.nbytes))
    return dx.reshape(g.shape)


# ------------------------------------------------------------------ Winograd F(2x2, 3x3)
_winograd_enabled = True
_winograd_weight_grad_enabled = True
# Bytes of one chunk's transformed input (16 values per 2x2 output tile and channel), so that the
# chunk's transforms and its 16 matrix products stay in cache. Swept on vgg_small's 3x3 layers
# (forward + backward, batch 64, one core shared with a training job): chunks of 384 KiB /
# 768 KiB / 1.5 MiB / 3 MiB / 6 MiB took 85.7 / 84.3 / 86.5 / 102.3 / 115.9 ms for 32->32 maps
# of 28x28, 67.9 / 62.8 / 69.3 / 75.0 / 78.2 ms for 64->64 of 14x14 (on two idle cores the
# differences up to 3 MiB were within the noise).
WINOGRAD_CHUNK_BYTES = 768 << 10
# Fewer channels than this in or out and the 16 products are too thin for BLAS to gain.
WINOGRAD_MIN_CHANNELS = 8
# Small maps and many channels take im2col instead: with few 2x2 tiles per image, or chunks of one
# or two images, the transforms cost more than the multiplications saved. im2col's time over
# Winograd's, forward + backward, batch 64, one core (process time, two training jobs on the
# machine), by output size: 32->32 maps 0.43 (6x6), 0.36 (7x7), 0.71 (8x8), 1.29 (10x10), 1.98
# (12x12), 1.90 (14x14); 64->64 0.53 (6x6), 0.59 (8x8), 0.81 (9x9), 1.27-1.40 (10x10), 1.60
# (14x14); 128->128 0.71 (6x6), 0.97 (10x10), 0.76 (12x12), 1.16 (14x14), 0.72 (16x16).
WINOGRAD_MIN_OUT = 10
WINOGRAD_MAX_CHANNELS = 64


@contextlib.contextmanager
def winograd(enabled: bool, weight_grad: bool | None = None):
    """Temporarily allow or forbid the Winograd path for 3x3 convolutions (tests and benchmarks
    compare both); ``weight_grad`` (default: ``enabled``) alone switches the weight gradient's."""
    global _winograd_enabled, _winograd_weight_grad_enabled
    prev = _winograd_enabled, _winograd_weight_grad_enabled
    _winograd_enabled = enabled
    _winograd_weight_grad_enabled = enabled if weight_grad is None else weight_grad
    try:
        yield
    finally:
        _winograd_enabled, _winograd_weight_grad_enabled = prev


def use_winograd_weight_grad() -> bool:
    """Where use_winograd holds, the weight gradient takes the Winograd path too (else im2col)."""
    return _winograd_weight_grad_enabled


def use_winograd(x, w_shape, stride, padding, dilation, groups) -> bool:
    """The Winograd F(2x2, 3x3) path applies: a 3x3, stride-1, undilated, ungrouped 2-D
    convolution of NumPy floats with padding at most 2, output maps of at least WINOGRAD_MIN_OUT
    on each side, and WINOGRAD_MIN_CHANNELS to WINOGRAD_MAX_CHANNELS channels in and out."""
    return (_winograd_enabled and use_nhwc(x, w_shape, groups) and tuple(w_shape[2:]) == (3, 3)
            and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and max(padding) <= 2
            and WINOGRAD_MIN_CHANNELS <= min(w_shape[0], w_shape[1])
            and max(w_shape[0], w_shape[1]) <= WINOGRAD_MAX_CHANNELS
            and min(s + 2 * p - 2 for s, p in zip(x.shape[2:], padding)) >= WINOGRAD_MIN_OUT)


# F(2x2, 3x3)'s kernel transform (Lavin and Gray): U = G w G^T, 4x4 from 3x3
_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def winograd_weights(w):
    """(F, C, 3, 3) kernels -> (16, C, F): U[4a + b, c, f] = (G w[f, c] G^T)[a, b], computed in
    float64, returned in w's dtype."""
    g = _WINOGRAD_G
    u = np.einsum("ai,fcij,bj->abcf", g, np.asarray(w, dtype=np.float64), g)
    return np.ascontiguousarray(u.reshape(16, w.shape[1], w.shape[0]), dtype=w.dtype)


def winograd_transposed_weights(w):
    """The weights whose convolution (padding 2 - p) is the input gradient of the one with ``w``
    (padding p): kernels flipped in both axes, input and output channels swapped; as (16, F, C)."""
    return winograd_weights(np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]))


def _winograd_tiles(out_shape):
    """2x2 output tiles per column and row; a ragged last row/column is cropped."""
    return -(-out_shape[0] // 2), -(-out_shape[1] // 2)


def _winograd_input(x, padding, TH, TW):
    """V (16, n*TH*TW, C): the transformed 4x4 input blocks of x (n, C, H, W) with zero padding."""
    n, C, H, W = x.shape
    ph, pw = padding
    # the tiles read 2*T + 2 padded rows, which covers ph + H (since 2*T >= OH = H + 2*ph - 2)
    xh = np.zeros((n, 2 * TH + 2, 2 * TW + 2, C), dtype=x.dtype)
    xh[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    v = np.empty((16, n * TH * TW, C), dtype=x.dtype)
    _cpu().winograd_input(xh, v, TH, TW)
    return v


def winograd_conv(x, u, padding, out_shape, out=None):
    """3x3 convolution (stride 1) of x (n, C, H, W) with transformed weights u (16, C, F) and
    zero padding (ph, pw) by Winograd F(2x2, 3x3), written into ``out`` (n, F, OH*OW) (a new
    array if None), which is returned."""
    n = x.shape[0]
    OH, OW = out_shape
    TH, TW = _winograd_tiles(out_shape)
    m = np.matmul(_winograd_input(x, padding, TH, TW), u)  # (16, tiles, F): 16 BLAS products
    F = u.shape[2]
    y = np.empty((n, 2 * TH, 2 * TW, F), dtype=x.dtype)
    _cpu().winograd_output(m, y, TH, TW)
    if out is None:
        out = np.empty((n, F, OH * OW), dtype=x.dtype)
    out.reshape(n, F, OH, OW)[...] = y[:, :OH, :OW, :].transpose(0, 3, 1, 2)
    return out


def winograd_weight_grad_part(x, g, padding, out_shape):
    """One chunk's share of the weight gradient of winograd_conv, still transformed: (16, C, F),
    sum over tiles of V[k]^T @ M[k], where V is the input's transform and M the output
    gradient's (the adjoint of the output transform). ``g`` is the output gradient channels-last,
    (n*OH*OW, F) or (n, OH, OW, F). Sum the chunks' parts, then winograd_weight_grad."""
    n = x.shape[0]
    OH, OW = out_shape
    TH, TW = _winograd_tiles(out_shape)
    F = g.shape[-1]
    if (2 * TH, 2 * TW) == (OH, OW):
        gh = np.ascontiguousarray(g).reshape(n, OH, OW, F)
    else:  # the cropped outputs of the ragged tiles get no gradient
        gh = np.zeros((n, 2 * TH, 2 * TW, F), dtype=g.dtype)
        gh[:, :OH, :OW, :] = g.reshape(n, OH, OW, F)
    m = np.empty((16, n * TH * TW, F), dtype=g.dtype)
    _cpu().winograd_output_adjoint(gh, m, TH, TW)
    return np.matmul(_winograd_input(x, padding, TH, TW).transpose(0, 2, 1), m)  # 16 BLAS products


def winograd_weight_grad(du, dtype):
    """(16, C, F) transformed weight gradient -> (F, C, 3, 3): G^T du G, the adjoint of
    winograd_weights' transform, computed in float64, returned in ``dtype``."""
    g = _WINOGRAD_G
    C, F = du.shape[1:]
    dw = np.einsum("ai,abcf,bj->fcij", g, np.asarray(du, dtype=np.float64).reshape(4, 4, C, F), g)
    return np.ascontiguousarray(dw, dtype=dtype)
