"""numba-compiled loops for 2-D col2im (column and channels-last layouts), pooling, the
activations' backward passes and local response normalisation's backward pass on NumPy arrays.

im2col itself is left to NumPy's strided copy (kernels/generic.py), which copied receptive fields
faster than a numba loop did, while numba wins for the scatter-add of col2im (benchmarks/README.md,
"Compiled loops").

Every loop here is compiled serial (numba's own threads would contend with BLAS); both cores
are used by running them on separate chunks of the batch from kernels/threads.py: run_chunks,
with BLAS held to one thread per call. Padding is handled by bounds checks instead of a padded copy
of the input (except in the channels-last col2im, which accumulates into a padded buffer).
Compilation is lazy (only the dtypes actually used are compiled) and cached on disk, so a second
run does not compile again.

Shapes: x (N, C, H, W); kernel (KH, KW); output (OH, OW); L = OH*OW; K = KH*KW.
"""

from __future__ import annotations

import math

import numpy as np
from numba import carray, njit, prange

from . import jobs

_OPTS = dict(parallel=False, cache=True, nogil=True)


@njit(**_OPTS)
def _valid_range(O, s, p, k, d, S):  # noqa: E741 - O, S: output and input sizes, as in the docs
    """Output positions o in [lo, hi) whose input o*s - p + k*d lies inside [0, S)."""
    off = k * d - p
    lo = 0
    while lo < O and lo * s + off < 0:
        lo += 1
    hi = O
    while hi > lo and (hi - 1) * s + off >= S:
        hi -= 1
    return lo, hi, off


@njit(**_OPTS)
def _col2im2d_dense(cols, N, C, H, W, KH, KW, OH, OW):
    """col2im for stride 1, no padding, no dilation, with flat indices (the common case)."""
    L = OH * OW
    CK = C * KH * KW
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    df = dx.reshape(-1)
    cf = cols.reshape(-1)
    for n in range(N):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    r = (c * KH + kh) * KW + kw
                    dst0 = ((n * C + c) * H + kh) * W + kw
                    src0 = (n * CK + r) * L
                    for oh in range(OH):
                        d = dst0 + oh * W
                        s = src0 + oh * OW
                        for ow in range(OW):
                            df[d + ow] += cf[s + ow]
    return dx


@njit(**_OPTS)
def col2im2d(cols, N, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW):
    """Adjoint of im2col: (N, C*KH*KW, OH*OW) -> (N, C, H, W), overlaps summed, padding dropped.

    Column j of image n holds receptive field j; row r = (c, kh, kw) one kernel tap.
    """
    if sh == 1 and sw == 1 and ph == 0 and pw == 0 and dh == 1 and dw == 1:
        return _col2im2d_dense(cols, N, C, H, W, KH, KW, OH, OW)
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    for n in range(N):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    r = (c * KH + kh) * KW + kw
                    lo, hi, off_w = _valid_range(OW, sw, pw, kw, dw, W)
                    for oh in range(OH):
                        ih = oh * sh - ph + kh * dh
                        if ih < 0 or ih >= H:
                            continue
                        base = oh * OW
                        for ow in range(lo, hi):
                            dx[n, c, ih, ow * sw + off_w] += cols[n, r, base + ow]
    return dx


@njit(**_OPTS)
def _max_pool2d_forward_2x2(x, out, arg):
    """The most common pooling, 2x2 windows with stride 2: four explicit comparisons."""
    N, C, H, W = x.shape
    OH, OW = out.shape[2:]
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                r0 = x[n, c, 2 * oh]
                r1 = x[n, c, 2 * oh + 1]
                o = out[n, c, oh]
                a = arg[n, c, oh]
                for ow in range(OW):
                    j = 2 * ow
                    best, where = r0[j], 2 * oh * W + j
                    if r0[j + 1] > best:  # strict '>': the first maximum wins ties
                        best, where = r0[j + 1], where + 1
                    if r1[j] > best:
                        best, where = r1[j], (2 * oh + 1) * W + j
                    if r1[j + 1] > best:
                        best, where = r1[j + 1], (2 * oh + 1) * W + j + 1
                    o[ow] = best
                    a[ow] = where


@njit(**_OPTS)
def _max_pool2d_forward_nopad(x, KH, KW, sh, sw, out, arg):
    """The common case without padding: every window lies inside the input, no bounds checks."""
    N, C, H, W = x.shape
    OH, OW = out.shape[2:]
    for n in prange(N):
        for c in range(C):
            plane = x[n, c]
            for oh in range(OH):
                for ow in range(OW):
                    ih0, iw0 = oh * sh, ow * sw
                    best = plane[ih0, iw0]
                    where = ih0 * W + iw0
                    for kh in range(KH):
                        for kw in range(KW):
                            v = plane[ih0 + kh, iw0 + kw]
                            if v > best:  # strict '>': the first maximum wins ties
                                best = v
                                where = (ih0 + kh) * W + iw0 + kw
                    out[n, c, oh, ow] = best
                    arg[n, c, oh, ow] = where


@njit(**_OPTS)
def _window_ranges(count, s, p, K, S):
    """For each of ``count`` outputs o along an axis: the window's first and last-plus-one taps k
    whose input o*s - p + k lies in [0, S)."""
    k0, k1 = np.empty(count, np.int64), np.empty(count, np.int64)
    for o in range(count):
        k0[o], k1[o] = max(0, p - o * s), min(K, S + p - o * s)
    return k0, k1


@njit(**_OPTS)
def max_pool2d_forward(x, KH, KW, sh, sw, ph, pw, OH, OW):
    """Max over each window; also the flat input index (ih*W + iw) of the first maximum."""
    N, C = x.shape[:2]
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    arg = np.empty((N, C, OH, OW), dtype=np.int32)
    max_pool2d_forward_into(x, KH, KW, sh, sw, ph, pw, out, arg)
    return out, arg


@njit(**_OPTS)
def max_pool2d_forward_into(x, KH, KW, sh, sw, ph, pw, out, arg):
    """max_pool2d_forward into out (N, C, OH, OW) and arg (int32, the same shape)."""
    N, C, H, W = x.shape
    OH, OW = out.shape[2:]
    if ph == 0 and pw == 0:
        if KH == 2 and KW == 2 and sh == 2 and sw == 2:
            _max_pool2d_forward_2x2(x, out, arg)
        else:
            _max_pool2d_forward_nopad(x, KH, KW, sh, sw, out, arg)
        return
    # padded: each window's rows and columns inside the input, found once per output row and
    # column, so the loops test no bounds (3x3/2 with padding 1, 16 x 64 maps of 56x56, forward:
    # 11.3 -> 4.5 ms; PyTorch 9.4)
    kh0, kh1 = _window_ranges(OH, sh, ph, KH, H)
    kw0, kw1 = _window_ranges(OW, sw, pw, KW, W)
    for n in prange(N):
        for c in range(C):
            plane = x[n, c]
            for oh in range(OH):
                ih0 = oh * sh - ph
                for ow in range(OW):
                    iw0 = ow * sw - pw
                    best = plane[ih0 + kh0[oh], iw0 + kw0[ow]]  # the window's first element inside
                    where = (ih0 + kh0[oh]) * W + iw0 + kw0[ow]
                    for kh in range(kh0[oh], kh1[oh]):
                        for kw in range(kw0[ow], kw1[ow]):
                            v = plane[ih0 + kh, iw0 + kw]
                            if v > best:  # strict '>': the first maximum wins ties
                                best = v
                                where = (ih0 + kh) * W + iw0 + kw
                    out[n, c, oh, ow] = best
                    arg[n, c, oh, ow] = where


@njit(**_OPTS)
def max_pool2d_backward(g, arg, H, W):
    """Send each output's gradient to its arg-max; overlapping windows accumulate."""
    N, C = g.shape[:2]
    dx = np.empty((N, C, H * W), dtype=g.dtype)
    max_pool2d_backward_into(g, arg, dx)
    return dx.reshape((N, C, H, W))


@njit(**_OPTS)
def max_pool2d_backward_into(g, arg, dx):
    """max_pool2d_backward into dx (N, C, H*W), every element written."""
    N, C, OH, OW = g.shape
    dx[...] = 0
    for n in prange(N):
        for c in range(C):
            d = dx[n, c]
            gg = g[n, c]
            aa = arg[n, c]
            for oh in range(OH):
                for ow in range(OW):
                    d[aa[oh, ow]] += gg[oh, ow]


# ------------------------------------------------------------------ max pooling as compiled jobs
# (kernels/jobs.py): chunk j pools the images chunks[j, 0] .. chunks[j, 1] - 1 of the batch, the
# whole layer one job without Python between its chunks. Slots: the chunk table, C, H, W, OH, OW,
# the input (or output gradient), the output (or arg-max), the arg-max (or input gradient), then
# the forward pass's KH, KW, sh, sw, ph, pw.
@njit(**_OPTS)
def _pool_chunk(a, i):
    t = jobs.slot(a, 0)
    n0 = jobs.slot(t, 2 * i)
    return (n0, jobs.slot(t, 2 * i + 1) - n0, jobs.slot(a, 1), jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 4),
            jobs.slot(a, 5))


@njit(**_OPTS)
def _max_pool_forward_chunk(a, i, x, out):
    n0, n, C, H, W, OH, OW = _pool_chunk(a, i)
    arg = carray(jobs.i32(jobs.slot(a, 8) + n0 * C * OH * OW * 4), (n, C, OH, OW))
    s = [jobs.slot(a, 9 + k) for k in range(6)]
    max_pool2d_forward_into(x, s[0], s[1], s[2], s[3], s[4], s[5], out, arg)


@jobs.job
def max_pool_forward_job32(a, i):
    """max_pool2d_forward_into on chunk i of a float32 batch."""
    n0, n, C, H, W, OH, OW = _pool_chunk(a, i)
    _max_pool_forward_chunk(a, i, carray(jobs.f32(jobs.slot(a, 6) + n0 * C * H * W * 4), (n, C, H, W)),
                            carray(jobs.f32(jobs.slot(a, 7) + n0 * C * OH * OW * 4), (n, C, OH, OW)))


@jobs.job
def max_pool_forward_job64(a, i):
    """max_pool2d_forward_into on chunk i of a float64 batch."""
    n0, n, C, H, W, OH, OW = _pool_chunk(a, i)
    _max_pool_forward_chunk(a, i, carray(jobs.f64(jobs.slot(a, 6) + n0 * C * H * W * 8), (n, C, H, W)),
                            carray(jobs.f64(jobs.slot(a, 7) + n0 * C * OH * OW * 8), (n, C, OH, OW)))


@njit(**_OPTS)
def _max_pool_backward_chunk(a, i, g, dx):
    n0, n, C, H, W, OH, OW = _pool_chunk(a, i)
    max_pool2d_backward_into(g, carray(jobs.i32(jobs.slot(a, 7) + n0 * C * OH * OW * 4), (n, C, OH, OW)), dx)


@jobs.job
def max_pool_backward_job32(a, i):
    """max_pool2d_backward_into on chunk i of a float32 batch."""
    n0, n, C, H, W, OH, OW = _pool_chunk(a, i)
    _max_pool_backward_chunk(a, i, carray(jobs.f32(jobs.slot(a, 6) + n0 * C * OH * OW * 4), (n, C, OH, OW)),
                             carray(jobs.f32(jobs.slot(a, 8) + n0 * C * H * W * 4), (n, C, H * W)))


@jobs.job
def max_pool_backward_job64(a, i):
    """max_pool2d_backward_into on chunk i of a float64 batch."""
    n0, n, C, H, W, OH, OW = _pool_chunk(a, i)
    _max_pool_backward_chunk(a, i, carray(jobs.f64(jobs.slot(a, 6) + n0 * C * OH * OW * 8), (n, C, OH, OW)),
                             carray(jobs.f64(jobs.slot(a, 8) + n0 * C * H * W * 8), (n, C, H * W)))


@njit(**_OPTS)
def sum_pool2d_2x2_forward(x, OH, OW):
    """2x2 windows with stride 2, no padding: four additions per output, no bounds tests (other
    windows run as a depthwise convolution with unit weights: kernels.sum_pool_forward)."""
    N, C = x.shape[0], x.shape[1]
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                r0 = x[n, c, 2 * oh]
                r1 = x[n, c, 2 * oh + 1]
                o = out[n, c, oh]
                for ow in range(OW):
                    j = 2 * ow
                    o[ow] = (r0[j] + r0[j + 1]) + (r1[j] + r1[j + 1])
    return out


@njit(**_OPTS)
def sum_pool2d_2x2_backward(g, H, W):
    """Adjoint of sum_pool2d_2x2_forward: each window's four inputs get its gradient; rows and
    columns past the last whole window get zero."""
    N, C, OH, OW = g.shape
    dx = np.zeros((N, C, H, W), dtype=g.dtype)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                gr = g[n, c, oh]
                d0 = dx[n, c, 2 * oh]
                d1 = dx[n, c, 2 * oh + 1]
                for ow in range(OW):
                    v = gr[ow]
                    j = 2 * ow
                    d0[j] = v
                    d0[j + 1] = v
                    d1[j] = v
                    d1[j + 1] = v
    return dx


@njit(**_OPTS)
def depth_max(m, KD, sd, pd, OD):
    """The depth pass of 3-D max pooling: m (A, D, P) holds each depth slice's 2-D window maxima;
    best[a, od, q] = the first largest of m[a, od*sd - pd + kd, q] over the kernel depths kd whose
    slice lies in [0, D) (strict '>': with the 2-D loop's own order, the first maximum of the
    window in (d, h, w) order), pick = that slice (int32)."""
    A, D, P = m.shape
    best = np.empty((A, OD, P), dtype=m.dtype)
    pick = np.empty((A, OD, P), dtype=np.int32)
    k0, k1 = _window_ranges(OD, sd, pd, KD, D)
    for a in range(A):
        for od in range(OD):
            first = od * sd - pd + k0[od]
            b, pk = best[a, od], pick[a, od]
            src = m[a, first]
            for q in range(P):
                b[q] = src[q]
                pk[q] = first
            for kd in range(k0[od] + 1, k1[od]):
                d = od * sd - pd + kd
                src = m[a, d]
                for q in range(P):
                    if src[q] > b[q]:
                        b[q] = src[q]
                        pk[q] = d
    return best, pick


@njit(**_OPTS)
def depth_route(g, pick, D):
    """Adjoint of depth_max's selection: g (A, OD, P) summed into (A, D, P) at each output's
    picked slice."""
    A, OD, P = g.shape
    out = np.zeros((A, D, P), dtype=g.dtype)
    for a in range(A):
        for od in range(OD):
            for q in range(P):
                out[a, pick[a, od, q], q] += g[a, od, q]
    return out


@njit(**_OPTS)
def depth_sum(s, KD, sd, pd, OD):
    """The depth pass of 3-D sum pooling: out[a, od] = sum of s[a, od*sd - pd + kd] (A, D, P) over
    the kernel depths whose slice lies in [0, D)."""
    return _depth_add(s, KD, sd, pd, OD, s.shape[1], False)


@njit(**_OPTS)
def depth_sum_adjoint(g, KD, sd, pd, D):
    """Adjoint of depth_sum: g (A, OD, P) -> (A, D, P)."""
    return _depth_add(g, KD, sd, pd, g.shape[1], D, True)


@njit(**_OPTS)
def _depth_add(src, KD, sd, pd, OD, D, adjoint):
    """For every output depth od and kernel depth kd whose slice d = od*sd - pd + kd lies in
    [0, D): out[a, od] += src[a, d] (depth_sum), or with ``adjoint`` out[a, d] += src[a, od]."""
    A, P = src.shape[0], src.shape[2]
    out = np.zeros((A, D if adjoint else OD, P), dtype=src.dtype)
    k0, k1 = _window_ranges(OD, sd, pd, KD, D)
    for a in range(A):
        for od in range(OD):
            for kd in range(k0[od], k1[od]):
                d = od * sd - pd + kd
                o, i = (out[a, d], src[a, od]) if adjoint else (out[a, od], src[a, d])
                for q in range(P):
                    o[q] += i[q]
    return out


# The elementwise loops index with unsigned offsets and select a zero of the array's type: with signed indices
# (numba's negative-index wrap-around) and an integer 0 the ReLU's loops stayed scalar, a branch per
# element on a sign no CPU predicts: one core, 1.6M elements, backward 7.7 -> 0.19 ms, forward
# 0.92 -> 0.10 (benchmarks/README.md, "Eleventh session of issue 22")
@njit(**_OPTS)
def relu_forward_range(x, out, lo, hi):
    """out[i] = max(x[i], 0) for i in [lo, hi) of flat arrays."""
    zero = x.dtype.type(0)
    for i in range(lo, hi):
        j = _u(i)
        v = x[j]
        out[j] = v if v > zero else zero


@njit(**_OPTS)
def relu_backward_range(g, out, dx, lo, hi):
    """dx[i] = g[i] where the ReLU's output is positive, else 0."""
    zero = g.dtype.type(0)
    for i in range(lo, hi):
        j = _u(i)
        dx[j] = g[j] if out[j] > zero else zero


@njit(**_OPTS)
def tanh_backward_range(g, out, dx, lo, hi):
    """dx = g * (1 - out^2), out = tanh(x)."""
    for i in range(lo, hi):
        j = _u(i)
        o = out[j]
        dx[j] = g[j] * (1 - o * o)


@njit(**_OPTS)
def sigmoid_backward_range(g, out, dx, lo, hi):
    """dx = g * out * (1 - out), out = sigmoid(x)."""
    for i in range(lo, hi):
        j = _u(i)
        o = out[j]
        dx[j] = g[j] * o * (1 - o)


@njit(**_OPTS)
def _u(i):
    """An index as unsigned: numba then drops its negative-index wrap-around, and loops vectorise."""
    return np.uint64(i)


@njit(**_OPTS)
def col2im3d_nhwc(dcols, n, C, D, H, W, KD, KH, KW, sd, sh, sw, pd, ph, pw, dd, dh, dw, OD, OH, OW):
    """Adjoint of the channels-last im2col of volumes: (n*OD*OH*OW, KD*KH*KW*C) -> (n, C, D, H, W).

    Row (i, od, oh, ow) of ``dcols`` holds one receptive field as (kd, kh, kw, c); with dw == 1
    the (kw, c) part of a kernel row is one contiguous run in both arrays, so the inner loop is a
    vector add. Accumulates in a padded channels-last buffer, then writes NCDHW without padding.
    Flat unsigned indices (no negative-index wrap-around), so that the adds vectorise: indexed
    as 2-D and 4-D arrays they ran at about 2 ns per element. Images are volumes of depth 1
    (col2im2d_nhwc).
    """
    Dp, Hp, Wp = D + 2 * pd, H + 2 * ph, W + 2 * pw
    KC, WC = KW * C, Wp * C
    src = dcols.reshape(-1)
    acc = np.zeros(n * Dp * Hp * WC, dtype=dcols.dtype)
    out = np.empty((n, C, D, H, W), dtype=dcols.dtype)
    of = out.reshape(-1)
    row_len = KD * KH * KC
    for i in range(n):
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    s_row = ((i * OD + od) * OH + oh) * OW + ow
                    for kd in range(KD):
                        for kh in range(KH):
                            s0 = s_row * row_len + (kd * KH + kh) * KC
                            r0 = ((i * Dp + od * sd + kd * dd) * Hp + oh * sh + kh * dh) * WC + ow * sw * C
                            if dw == 1:
                                for j in range(KC):
                                    acc[_u(r0 + j)] += src[_u(s0 + j)]
                            else:
                                for kw in range(KW):
                                    for c in range(C):
                                        acc[_u(r0 + kw * dw * C + c)] += src[_u(s0 + kw * C + c)]
        for c in range(C):
            for dz in range(D):
                for h in range(H):
                    r0 = ((i * Dp + dz + pd) * Hp + h + ph) * WC + pw * C + c
                    o0 = (((i * C + c) * D + dz) * H + h) * W
                    for w in range(W):
                        of[_u(o0 + w)] = acc[_u(r0 + w * C)]
    return out


@njit(**_OPTS)
def col2im2d_nhwc(dcols, n, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW):
    """Adjoint of the channels-last im2col: (n*OH*OW, KH*KW*C) -> (n, C, H, W) (col2im3d_nhwc
    at depth 1)."""
    return col2im3d_nhwc(dcols, n, C, 1, H, W, 1, KH, KW, 1, sh, sw, 0, ph, pw, 1, dh, dw, 1, OH, OW).reshape(
        (n, C, H, W))


@njit(**_OPTS)
def sgd_update(p, g, buf, lr, decay, momentum, damp1, nesterov, first):
    """One SGD step of optim.SGD in a single pass over the parameter, in place (and on ``buf``).

    The same operations in the same order as the NumPy path (each rounded in the parameter's
    dtype: the scalars come in that dtype), so the two agree bit for bit:
        d = g + decay * p;  buf = d (first step) or momentum * buf + damp1 * d;
        d = d + momentum * buf (Nesterov) or buf;  p = p - lr * d.
    ``momentum == 0`` skips the buffer (then ``buf`` may be any array). All arrays C-contiguous.
    """
    pf = p.reshape(-1)
    gf = g.reshape(-1)
    bf = buf.reshape(-1)
    use_buf = momentum != 0
    use_decay = decay != 0
    for i in range(pf.size):
        d = gf[i]
        if use_decay:
            d = d + decay * pf[i]
        if use_buf:
            if first:
                b = d
            else:
                b = momentum * bf[i] + damp1 * d
            bf[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        pf[i] = pf[i] - lr * d


# ---------------------------------------------------------------- batch norm + ReLU, fused
# x, out, g, dx are (N, C, S) views of (N, C, *spatial) arrays; each call handles channels
# [c0, c1), so kernels.run_chunks can give each core its own channels. Sums are in float64, and
# may be reassociated (fastmath "reassoc" only: NaN and infinity keep their meaning), which lets
# LLVM vectorise them (benchmarks/README.md, "Compiled loops").
_SUMS = dict(_OPTS, fastmath={"reassoc"})
# BN_ROWS: batch norm's float64 sums over a channel add each row's (image's) sum to the channel's,
# rather than every value to one running sum across the rows: one core, el/ns, a channel's sum
# across rows / by rows: 64x64 7x7 4.0 / 12.9, 256x32 5x5 3.8 / 9.2, 128x16 12x12 9.9 / 16.1,
# 64x32 28x28 19.6 / 19.8 (benchmarks/README.md, "Eleventh session of issue 22")

@njit(**_SUMS)
def bn_relu_train_forward(x, w, b, eps, out, mean, var, inv, c0, c1):
    """Per channel c: batch mean and (biased) variance of x[:, c]; then
    out = max((x - mean) * inv * w + b, 0) with inv = 1 / sqrt(var + eps). Fills mean[c], var[c]
    and inv[c]."""
    N, _, S = x.shape
    m = N * S
    for c in range(c0, c1):
        acc = 0.0
        for n in range(N):  # each row's sum first (BN_ROWS)
            r = 0.0
            for s in range(S):
                r += x[n, c, s]
            acc += r
        mu = acc / m
        acc = 0.0
        for n in range(N):
            r = 0.0
            for s in range(S):
                d = x[n, c, s] - mu
                r += d * d
            acc += r
        vr = acc / m
        iv = 1.0 / np.sqrt(vr + eps)
        mean[c], var[c], inv[c] = mu, vr, iv
        scale = w[c] * iv
        _scale_shift_relu_channel(x, out, c, scale, b[c] - mu * scale)


@njit(**_SUMS)
def bn_relu_train_backward(g, x, out, w, mean, inv, dx, gw, gb, c0, c1):
    """The gradient of bn_relu_train_forward: with gm = g where out > 0 (else 0) and
    xhat = (x - mean) * inv, gb = sum(gm), gw = sum(gm * xhat) and
    dx = w * inv * (gm - gb / m - xhat * gw / m), over the channel's m = N * S values."""
    N, _, S = x.shape
    m = N * S
    for c in range(c0, c1):
        mu, iv = mean[c], inv[c]
        sb = 0.0
        sw = 0.0
        for n in range(N):  # each row's sums first (BN_ROWS)
            rb = 0.0
            rw = 0.0
            for s in range(S):
                # a select, not a branch: the sign of out is a coin toss the CPU cannot predict
                gv = g[n, c, s] if out[n, c, s] > 0 else 0.0
                rb += gv
                rw += gv * (x[n, c, s] - mu)
            sb += rb
            sw += rw
        sw *= iv
        gb[c], gw[c] = sb, sw
        k = w[c] * iv
        a = sb / m
        q = sw / m
        for n in range(N):
            for s in range(S):
                gv = g[n, c, s] if out[n, c, s] > 0 else 0.0
                dx[n, c, s] = k * (gv - a - (x[n, c, s] - mu) * iv * q)


# ---- the same batch norm in parts, for synchronised batch norm (cnnlab.distributed): the sums
# are summed over the processes between the parts; each value is computed as above.
@njit(**_SUMS)
def bn_channel_sums(x, out, c0, c1):
    """out[c] = the float64 sum of x[:, c]."""
    N, _, S = x.shape
    for c in range(c0, c1):
        acc = 0.0
        for n in range(N):  # each row's sum first (BN_ROWS)
            r = 0.0
            for s in range(S):
                r += x[n, c, s]
            acc += r
        out[c] = acc


@njit(**_SUMS)
def bn_channel_sq_dev(x, mean, out, c0, c1):
    """out[c] = the float64 sum of (x[:, c] - mean[c]) ** 2."""
    N, _, S = x.shape
    for c in range(c0, c1):
        mu = mean[c]
        acc = 0.0
        for n in range(N):  # each row's sum first (BN_ROWS)
            r = 0.0
            for s in range(S):
                d = x[n, c, s] - mu
                r += d * d
            acc += r
        out[c] = acc


@njit(**_OPTS)
def bn_scale_shift(x, k, t, relu, out, c0, c1):
    """out = x * k[c] + t[c] (float64 k, t), ReLU'd if ``relu``, for channels [c0, c1)."""
    N, _, S = x.shape
    for c in range(c0, c1):
        if relu:
            _scale_shift_relu_channel(x, out, c, k[c], t[c])
        else:
            kc, tc = k[c], t[c]
            for n in range(N):
                for s in range(S):
                    out[n, c, s] = x[n, c, s] * kc + tc


@njit(**_SUMS)
def bn_grad_sums(g, x, out, relu, mean, sb, sw, c0, c1):
    """sb[c] = sum(gm), sw[c] = sum(gm * (x - mean[c])) with gm = g where out > 0 (all of g
    without ``relu``), float64."""
    N, _, S = x.shape
    for c in range(c0, c1):
        mu = mean[c]
        b = 0.0
        w = 0.0
        for n in range(N):  # each row's sums first (BN_ROWS)
            rb = 0.0
            rw = 0.0
            for s in range(S):
                gv = g[n, c, s] if (not relu or out[n, c, s] > 0) else 0.0
                rb += gv
                rw += gv * (x[n, c, s] - mu)
            b += rb
            w += rw
        sb[c], sw[c] = b, w


@njit(**_OPTS)
def bn_grad_input(g, x, out, relu, w, mean, inv, a, q, dx, c0, c1):
    """dx = w * inv * (gm - a[c] - (x - mean) * inv * q[c]), gm as in bn_grad_sums."""
    N, _, S = x.shape
    for c in range(c0, c1):
        mu, iv = mean[c], inv[c]
        k = w[c] * iv
        ac, qc = a[c], q[c]
        for n in range(N):
            for s in range(S):
                gv = g[n, c, s] if (not relu or out[n, c, s] > 0) else 0.0
                dx[n, c, s] = k * (gv - ac - (x[n, c, s] - mu) * iv * qc)


@njit(**_OPTS)
def _scale_shift_relu_channel(x, out, c, k, t):
    """out[:, c] = max(x[:, c] * k + t, 0): batch norm folded into one scale and shift, then ReLU."""
    N, _, S = x.shape
    for n in range(N):
        for s in range(S):
            v = x[n, c, s] * k + t
            out[n, c, s] = v if v > 0 else 0


@njit(**_OPTS)
def scale_shift_relu(x, scale, shift, out, c0, c1):
    """out = max(x * scale[c] + shift[c], 0) for channels [c0, c1): batch norm with fixed
    (running) statistics folded into one scale and shift per channel, then ReLU."""
    for c in range(c0, c1):
        _scale_shift_relu_channel(x, out, c, scale[c], shift[c])


# ---------------------------------------------------------------- Winograd F(2x2, 3x3)
# A 3x3 convolution with stride 1 computes each 2x2 block of outputs from a 4x4 block of inputs
# with 16 multiplications per (input, output) channel pair instead of 36: Y = A^T [(G g G^T) *
# (B^T d B)] A (Lavin and Gray, 2016). Summed over channels, the 16 elementwise products become
# 16 matrix products (tiles x C) @ (C x F), done by BLAS; these loops do the transforms.
#     B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
#     A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

@njit(**_OPTS)
def winograd_input(xh, V, TH, TW):
    """V[4a + b, tile, c] = (B^T d B)[a, b] for the 4x4 block d of padded channels-last input xh
    (n, 2TH + 2, 2TW + 2, C) at (2ty, 2tx); tile = (i * TH + ty) * TW + tx. The innermost loop
    runs over channels, contiguous in both arrays."""
    n, C = xh.shape[0], xh.shape[3]
    for i in range(n):
        for ty in range(TH):
            for tx in range(TW):
                t = (i * TH + ty) * TW + tx
                y, x = 2 * ty, 2 * tx
                for c in range(C):
                    d00, d01, d02, d03 = xh[i, y, x, c], xh[i, y, x + 1, c], xh[i, y, x + 2, c], xh[i, y, x + 3, c]
                    d10, d11, d12, d13 = (xh[i, y + 1, x, c], xh[i, y + 1, x + 1, c], xh[i, y + 1, x + 2, c],
                                          xh[i, y + 1, x + 3, c])
                    d20, d21, d22, d23 = (xh[i, y + 2, x, c], xh[i, y + 2, x + 1, c], xh[i, y + 2, x + 2, c],
                                          xh[i, y + 2, x + 3, c])
                    d30, d31, d32, d33 = (xh[i, y + 3, x, c], xh[i, y + 3, x + 1, c], xh[i, y + 3, x + 2, c],
                                          xh[i, y + 3, x + 3, c])
                    # rows: B^T d
                    r00, r01, r02, r03 = d00 - d20, d01 - d21, d02 - d22, d03 - d23
                    r10, r11, r12, r13 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
                    r20, r21, r22, r23 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
                    r30, r31, r32, r33 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
                    # columns: (B^T d) B
                    V[0, t, c], V[1, t, c], V[2, t, c], V[3, t, c] = r00 - r02, r01 + r02, r02 - r01, r01 - r03
                    V[4, t, c], V[5, t, c], V[6, t, c], V[7, t, c] = r10 - r12, r11 + r12, r12 - r11, r11 - r13
                    V[8, t, c], V[9, t, c], V[10, t, c], V[11, t, c] = r20 - r22, r21 + r22, r22 - r21, r21 - r23
                    V[12, t, c], V[13, t, c], V[14, t, c], V[15, t, c] = r30 - r32, r31 + r32, r32 - r31, r31 - r33


@njit(**_OPTS)
def winograd_output_adjoint(gh, M, TH, TW):
    """The adjoint of winograd_output: M[4a + b, tile, f] = (A g A^T)[a, b] for the 2x2 block g of
    the channels-last output gradient gh (n, 2TH, 2TW, F) at (2ty, 2tx). With the input's
    transform V, the weight gradient's transform is then sum over tiles of V[k]^T @ M[k]."""
    n, F = gh.shape[0], gh.shape[3]
    for i in range(n):
        for ty in range(TH):
            for tx in range(TW):
                t = (i * TH + ty) * TW + tx
                y, x = 2 * ty, 2 * tx
                for f in range(F):
                    g00, g01, g10, g11 = gh[i, y, x, f], gh[i, y, x + 1, f], gh[i, y + 1, x, f], gh[i, y + 1, x + 1, f]
                    # rows: A g, A = [[1, 0], [1, 1], [1, -1], [0, -1]]
                    s0, s1, d0, d1 = g00 + g10, g01 + g11, g00 - g10, g01 - g11
                    # columns: (A g) A^T
                    M[0, t, f], M[1, t, f], M[2, t, f], M[3, t, f] = g00, g00 + g01, g00 - g01, -g01
                    M[4, t, f], M[5, t, f], M[6, t, f], M[7, t, f] = s0, s0 + s1, s0 - s1, -s1
                    M[8, t, f], M[9, t, f], M[10, t, f], M[11, t, f] = d0, d0 + d1, d0 - d1, -d1
                    M[12, t, f], M[13, t, f], M[14, t, f], M[15, t, f] = -g10, -g10 - g11, g11 - g10, g11


@njit(**_OPTS)
def winograd_output(M, out, TH, TW):
    """out[i, 2ty:2ty + 2, 2tx:2tx + 2, f] = A^T m A for the 4x4 products m[a, b] = M[4a + b, tile, f];
    out is channels-last (n, 2TH, 2TW, F)."""
    n, F = out.shape[0], out.shape[3]
    for i in range(n):
        for ty in range(TH):
            for tx in range(TW):
                t = (i * TH + ty) * TW + tx
                y, x = 2 * ty, 2 * tx
                for f in range(F):
                    # rows: A^T m
                    s0 = M[0, t, f] + M[4, t, f] + M[8, t, f]
                    s1 = M[1, t, f] + M[5, t, f] + M[9, t, f]
                    s2 = M[2, t, f] + M[6, t, f] + M[10, t, f]
                    s3 = M[3, t, f] + M[7, t, f] + M[11, t, f]
                    u0 = M[4, t, f] - M[8, t, f] - M[12, t, f]
                    u1 = M[5, t, f] - M[9, t, f] - M[13, t, f]
                    u2 = M[6, t, f] - M[10, t, f] - M[14, t, f]
                    u3 = M[7, t, f] - M[11, t, f] - M[15, t, f]
                    # columns: (A^T m) A
                    out[i, y, x, f] = s0 + s1 + s2
                    out[i, y, x + 1, f] = s1 - s2 - s3
                    out[i, y + 1, x, f] = u0 + u1 + u2
                    out[i, y + 1, x + 1, f] = u1 - u2 - u3


# ------------------------------------------------------------------ local response normalisation
@njit(**_OPTS)
def lrn_backward(g, x, d, scale, dx, before, after, coef, n0, n1):
    """dx = g * scale - coef * x * (sum of t[c] over the c whose window holds j), t = g x scale / d,
    for images n0..n1 (coef = 2 alpha beta / size, a scalar of x's dtype)."""
    C, S = x.shape[1], x.shape[2]
    t = np.empty((C, S), dtype=x.dtype)
    for n in range(n0, n1):
        for c in range(C):
            for s in range(S):
                t[c, s] = g[n, c, s] * x[n, c, s] * scale[n, c, s] / d[n, c, s]
        for j in range(C):
            for s in range(S):
                dx[n, j, s] = 0
            # channel j is in the window of c for c = j - after .. j + before: the mirrored window
            for c in range(max(j - after, 0), min(j + before + 1, C)):
                for s in range(S):
                    dx[n, j, s] += t[c, s]
            for s in range(S):
                dx[n, j, s] = g[n, j, s] * scale[n, j, s] - coef * x[n, j, s] * dx[n, j, s]


@njit(**_OPTS)
def erf_range(x, out, lo, hi):
    """out[i] = erf(x[i]) for i in [lo, hi) (the error function, in float64; GELU's exact form)."""
    for i in range(lo, hi):
        out[i] = math.erf(x[i])


@njit(**_OPTS)
def erf_rational_range(x, out, lo, hi):
    """out[i] = erf(x[i]) for float32 x: x * P(x^2) / Q(x^2) on x clamped to [-4, 4] (the rational
    approximation of Eigen's fast float erf), evaluated in float64: at most 6.5e-8 from math.erf over
    [-6, 6] (measured on 2,000,001 points), below float32's resolution near 1, and no libm call."""
    for i in range(lo, hi):
        v = min(max(np.float64(x[i]), -4.0), 4.0)
        v2 = v * v
        p = -2.72614225801306e-10
        p = p * v2 + 2.77068142495902e-08
        p = p * v2 - 2.10102402082508e-06
        p = p * v2 - 5.69250639462346e-05
        p = p * v2 - 7.34990630326855e-04
        p = p * v2 - 2.95459980854025e-03
        p = p * v2 - 1.60960333262415e-02
        q = -1.45660718464996e-05
        q = q * v2 - 2.13374055278905e-04
        q = q * v2 - 1.68282697438203e-03
        q = q * v2 - 7.37332916720468e-03
        q = q * v2 - 1.42647390514189e-02
        out[i] = v * p / q
# ------------------------------------------------------------------ depthwise 2-D convolution
# One input channel per output channel (groups == C == F): each output map is a KHxKW filter of one
# input map, a few multiply-adds per output, which a matrix product per image and channel does
# badly. These loops take one map at a time, flat, and for each kernel tap run along the output
# rows over the outputs whose tap lies inside the input (ranges found once per call), on one
# chunk of the batch each; x (n, C, H, W), w (C, KH, KW).
@njit(**_OPTS)
def _tap_ranges(KW, sw, pw, dw, W, OW):
    """For each kernel column kw: the outputs [lo, hi) whose tap lies inside the row, and the offset."""
    r = np.empty((KW, 3), np.int64)
    for kw in range(KW):
        lo, hi, off = _valid_range(OW, sw, pw, kw, dw, W)
        r[kw, 0], r[kw, 1], r[kw, 2] = lo, hi, off
    return r


@njit(**_OPTS)
def depthwise2d_backward_input(g, w, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW):
    """The input gradient (n, C, H, W) of a depthwise layer, out[i, c, o] = sum over taps of
    w[c, kh, kw] * x[i, c, ih, iw] (zero padding), for its output gradient g (n, C, OH*OW), row by
    row: the strided, dilated layers' (the others run along whole planes: depthwise_planes)."""
    n, C = g.shape[0], g.shape[1]
    gx = np.zeros((n, C, H * W), dtype=g.dtype)
    r = _tap_ranges(KW, sw, pw, dw, W, OW)
    for i in range(n):
        for c in range(C):
            gm = g[i, c]
            d = gx[i, c]
            for kh in range(KH):
                for kw in range(KW):
                    wv = w[c, kh, kw]
                    lo, hi, off = r[kw, 0], r[kw, 1], r[kw, 2]
                    for oh in range(OH):
                        ih = oh * sh - ph + kh * dh
                        if ih < 0 or ih >= H:
                            continue
                        gb, db = oh * OW, ih * W + off
                        if sw == 1:
                            for ow in range(lo, hi):
                                d[db + ow] += wv * gm[gb + ow]
                        else:
                            for ow in range(lo, hi):
                                d[db + ow * sw] += wv * gm[gb + ow]
    return gx.reshape(n, C, H, W)


@njit(**_OPTS)
def depthwise_planes(x, w, boff, out, P):
    """A stride-1 depthwise layer along whole padded planes: out[i, c, p] = sum_k w[c, k] *
    x[i, c, p + boff[k]] for p < P, x (n, C, plane) the zero-padded planes (followed by enough zeros
    for the last tap's reads), positions p = oh * Wp + ow over the padded width (the caller drops
    the last Wp - OW of each row). One long loop per tap instead of one per output row: the
    kernel alone 2.31 -> 0.29 ms for 32 x 32 planes of 28x28 (benchmarks/README.md, "Depthwise
    along whole planes")."""
    n, C = x.shape[0], x.shape[1]
    K = boff.shape[0]
    for i in range(n):
        for c in range(C):
            o = out[i, c, :P]
            w0, xs = w[c, 0], x[i, c, boff[0]:boff[0] + P]  # slices: plain indices, so the loops vectorise
            for p in range(P):
                o[p] = w0 * xs[p]
            for k in range(1, K):
                wk, xs = w[c, k], x[i, c, boff[k]:boff[k] + P]
                for p in range(P):
                    o[p] += wk * xs[p]


@njit(**_SUMS)
def depthwise_planes_weight(g, x, boff, P):
    """The weight gradient (C, K), float64, of depthwise_planes: sum over images and p < P of
    g[i, c, p] * x[i, c, p + boff[k]], g spread over the padded width (zero where p is not an
    output). The float64 sums are vectorised (reassociated): the order is fixed by the compiled
    loop, so the result is the same every run."""
    n, C = g.shape[0], g.shape[1]
    K = boff.shape[0]
    gw = np.zeros((C, K))
    for c in range(C):
        for k in range(K):
            acc = 0.0
            for i in range(n):
                gm, xs = g[i, c, :P], x[i, c, boff[k]:boff[k] + P]
                for p in range(P):
                    acc += np.float64(gm[p]) * np.float64(xs[p])
            gw[c, k] = acc
    return gw


@njit(**_OPTS)
def lrn_forward_eval(x, out, before, after, a, k, beta, n0, n1):
    """out = x * d ** -beta with d = k + a * (x[c]^2 + x[c-1]^2 .. x[c-before]^2 + x[c+1]^2 ..
    x[c+after]^2), for images n0..n1, in one pass and without keeping d: inference, where no
    backward pass needs it. The same operations in the same order as kernels.generic.lrn_forward
    (a = alpha / size and k of x's dtype), so the same values; beta 0.75 and 0.5 by square roots."""
    C, S = x.shape[1], x.shape[2]
    acc = np.empty(S, dtype=x.dtype)
    one = x.dtype.type(1.0)
    for n in range(n0, n1):
        for c in range(C):
            for s in range(S):
                acc[s] = x[n, c, s] * x[n, c, s]
            for o in range(1, before + 1):
                if c - o >= 0:
                    for s in range(S):
                        acc[s] += x[n, c - o, s] * x[n, c - o, s]
            for o in range(1, after + 1):
                if c + o < C:
                    for s in range(S):
                        acc[s] += x[n, c + o, s] * x[n, c + o, s]
            for s in range(S):
                d = acc[s] * a + k
                if beta == 0.75:
                    r = one / np.sqrt(d)
                    scale = r * np.sqrt(r)
                elif beta == 0.5:
                    scale = one / np.sqrt(d)
                else:
                    scale = d ** -beta
                out[n, c, s] = x[n, c, s] * scale
