"""Depthwise 2-D convolution of float32 planes with 16-lane micro-kernels (policy.use_depthwise_vectors):
the forward pass, the input gradient and the weight gradient, one image plane at a time.

Each plane is first laid into a zeroed scratch plane that stays in the L1 cache: at an offset (the
padding), and for the input gradient of a strided layer with its values s apart (the zeros
between them make the strided layer's adjoint a stride-1 correlation). Every output row is then
a stride-1 run along one scratch row: ``rows`` keeps the sums of RD output rows x 32 positions
in registers across all the taps (one broadcast weight and RD*2 loads per tap), and a strided
layer takes every s-th position of the run. The weight gradient keeps one tap block's sums over
positions in registers (igemm.make_wblock with one filter), the output gradient laid the same
way, s apart and zero between, and adds each plane's lane sums to float64 totals.

Nothing the size of the batch is copied: the old path (kernels/cpu.py's depthwise_planes, kept
for float64 and for CPUs without AVX-512) zero-padded and phase-split the whole chunk, cropped
the result and summed the weight gradient in float64 lane by lane. Measured:
benchmarks/README.md, "Depthwise in registers".
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .igemm import W, based, broadcast, count_loop, make_wblock, outlined, sum_loop, vector_fma

RD, NVD = 4, 2  # output rows x vectors of positions per block: 8 sums in registers
SPAN = NVD * W  # positions per block along a row
NKD = 9  # taps per weight-gradient block (one 3x3 kernel), NKD_SMALL for kernels of < 6 taps
NKD_SMALL = 3
WSLICE = 64  # weight-gradient steps (of 16 positions) per float32 pass before the float64 totals


def _make_rows(R, NV):
    """The forward micro-kernel as a numba intrinsic: for blocks b < nb, r < R, j < NV*16,
    o[(b*R + r)*ldo + j] = sum_k w[k] * x[xrow[r] + b*xstep + boff[k] + j], k < K, each block's
    sums in R*NV registers; one call for all the row blocks of a plane."""

    def body(builder, args):
        w_base, x_base, xrow_ptr, boff_ptr, o_base, ldo, K, nb, xstep = args
        f32, i64 = ir.FloatType(), ir.IntType(64)
        vt = ir.VectorType(f32, W)
        fma = vector_fma(builder)
        w = builder.inttoptr(w_base, f32.as_pointer())
        boffs = builder.inttoptr(boff_ptr, i64.as_pointer())
        o = builder.inttoptr(o_base, f32.as_pointer())
        xrows0 = based(builder, x_base, xrow_ptr, R)

        def block(bi):  # one block of R rows: its sums over the taps, then stored
            shift = builder.mul(bi, xstep)
            xrows = [builder.gep(xr, [shift]) for xr in xrows0]

            def step(k, acc):
                off = builder.load(builder.gep(boffs, [k]))
                wv = broadcast(builder, builder.load(builder.gep(w, [k])))
                new = []
                for r in range(R):
                    at = builder.gep(xrows[r], [off])
                    for j in range(NV):
                        xv = builder.load(builder.bitcast(builder.gep(at, [ir.Constant(i64, j * W)]), vt.as_pointer()),
                                          align=4)
                        new.append(builder.call(fma, [wv, xv, acc[r * NV + j]]))
                return new

            totals = sum_loop(builder, K, R * NV, step, "dwrows")
            for r in range(R):
                row = builder.gep(o, [builder.mul(builder.add(builder.mul(bi, ir.Constant(i64, R)),
                                                              ir.Constant(i64, r)), ldo)])
                for j in range(NV):
                    ptr = builder.bitcast(builder.gep(row, [ir.Constant(i64, j * W)]), vt.as_pointer())
                    builder.store(totals[r * NV + j], ptr, align=4)

        count_loop(builder, nb, "dwblocks", block)

    codegen = outlined(f"cnnlab_depthwise_rows_{R}x{NV * W}", body, nargs=9)

    def rows(typingctx, w_base, x_base, xrow_ptr, boff_ptr, o_base, ldo, K, nb, xstep):
        """See _make_rows; every argument an int64 (addresses, offsets in elements, counts)."""
        return types.void(*([types.int64] * 9)), codegen

    return intrinsic(rows)


def _copy_codegen(context, builder, signature, args):
    """dst[0:n] = src[0:n] (float32 addresses): whole 16-float vectors, then one masked vector
    for the last n % 16, so a 28-float row is two vector moves rather than one and 12 scalars."""
    dst, src, n = args
    f32, i1, i32, i64 = ir.FloatType(), ir.IntType(1), ir.IntType(32), ir.IntType(64)
    vt, it = ir.VectorType(f32, W), ir.VectorType(i32, W)
    pt = vt.as_pointer()
    d, s = builder.inttoptr(dst, f32.as_pointer()), builder.inttoptr(src, f32.as_pointer())
    full = builder.sdiv(n, ir.Constant(i64, W))

    def whole(i):
        off = builder.mul(i, ir.Constant(i64, W))
        builder.store(builder.load(builder.bitcast(builder.gep(s, [off]), pt), align=4),
                      builder.bitcast(builder.gep(d, [off]), pt), align=4)

    count_loop(builder, full, "copy", whole)
    base = builder.mul(full, ir.Constant(i64, W))
    rem = broadcast(builder, builder.trunc(builder.sub(n, base), i32))
    mask = builder.icmp_signed("<", ir.Constant(it, list(range(W))), rem)
    mt = ir.VectorType(i1, W)
    mload = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [pt, i32, mt, vt]),
                                           "llvm.masked.load.v16f32.p0")
    mstore = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [vt, pt, i32, mt]),
                                            "llvm.masked.store.v16f32.p0")
    v = builder.call(mload, [builder.bitcast(builder.gep(s, [base]), pt), ir.Constant(i32, 4), mask,
                             ir.Constant(vt, [0.0] * W)])
    builder.call(mstore, [v, builder.bitcast(builder.gep(d, [base]), pt), ir.Constant(i32, 4), mask])
    return context.get_dummy_value()


@intrinsic
def _copy(typingctx, dst, src, n):
    """Copy n floats from address src to address dst (int64 addresses)."""
    return types.void(types.int64, types.int64, types.int64), _copy_codegen


_rows = _make_rows(RD, NVD)
_wblock = make_wblock(1, NKD)
_wblock_small = make_wblock(1, NKD_SMALL)

_OPTS = dict(cache=True, nogil=True, boundscheck=False)


@njit(**_OPTS)
def _u(i):
    """An index as unsigned: numba then drops its negative-index wrap-around, and the copy loops
    vectorise (a plane's copy 8x faster)."""
    return np.uint64(i)


@njit(**_OPTS)
def _lay(src, sb, H, W_, scratch, up0, up1, top, left, Hs, Ws):
    """Lay plane src[sb : sb + H*W_] into scratch: value (h, w) at row top + h*up0, column
    left + w*up1 of the Hs x Ws scratch plane, those that fall outside dropped (never read)."""
    for h in range(H):
        r = top + h * up0
        if r < 0 or r >= Hs:
            continue
        rb, s = r * Ws + left, sb + h * W_
        if up1 == 1:
            w0, w1 = max(0, -left), min(W_, Ws - left)
            if w1 > w0:
                _copy(scratch.ctypes.data + (rb + w0) * 4, src.ctypes.data + (s + w0) * 4, w1 - w0)
        else:
            w0, w1 = max(0, (-left + up1 - 1) // up1), min(W_, (Ws - left + up1 - 1) // up1)
            for w in range(w0, w1):
                scratch[_u(rb + w * up1)] = src[_u(s + w)]


@njit(**_OPTS)
def _scratch_size(Hs, Ws, OH, s0, span_r, boff):
    """Elements of a scratch plane that every read of a block can reach: the plane, and past it
    the last block row's run and taps."""
    return max(Hs * Ws, (OH - 1) * s0 * Ws + span_r + boff.max() + 1)


@njit(**_OPTS)
def correlate(src, taps, out, n, C, H, W_, up0, up1, top, left, Hs, Ws, s0, s1, boff, kstart, OH, OW):
    """For images i < n and channels c < C of src (n, C, H*W_) laid into an Hs x Ws scratch plane
    (see _lay): out[i, c, oh*OW + ow] = sum_k taps[c, k] * scratch[oh*s0*Ws + ow*s1 + boff[k]],
    the output rows in P = len(kstart) - 1 phases: rows oh = a (mod P) take the taps
    kstart[a] <= k < kstart[a + 1] (zero where there are none). float32 throughout, contiguous
    arrays; boff's offsets >= 0."""
    K, P = taps.shape[1], kstart.shape[0] - 1
    if n == 0 or C == 0 or OH == 0 or OW == 0:
        return
    span = (OW - 1) * s1 + 1
    span_r = (span + SPAN - 1) // SPAN * SPAN
    rows_r = (OH + RD * P - 1) // (RD * P) * RD * P + P  # every phase's blocks, rounded up to whole blocks
    scratch = np.zeros(_scratch_size(Hs, Ws, rows_r, s0, span_r, boff), np.float32)
    rb = np.empty(rows_r * span_r, np.float32)
    xrow = np.empty(RD, np.int64)
    s_flat, o_flat = src.reshape(-1), out.reshape(-1)
    t_addr, b_addr = taps.ctypes.data, boff.ctypes.data  # arguments: alive for the whole call
    HW, L = H * W_, OH * OW
    for i in range(n):
        for c in range(C):
            _lay(s_flat, (i * C + c) * HW, H, W_, scratch, up0, up1, top, left, Hs, Ws)
            ob = (i * C + c) * L
            for a in range(min(P, OH)):
                M, k0, Ka = (OH - a + P - 1) // P, kstart[a], kstart[a + 1] - kstart[a]
                if Ka == 0:
                    for m in range(M):
                        o = ob + (a + m * P) * OW
                        for q in range(OW):
                            o_flat[_u(o + q)] = 0.0
                    continue
                for r in range(RD):  # the last block's rows past M read the scratch's spare rows
                    xrow[r] = (a + r * P) * s0 * Ws
                for j0 in range(0, span_r, SPAN):
                    _rows(t_addr + (c * K + k0) * 4, scratch.ctypes.data + j0 * 4, xrow.ctypes.data, b_addr + k0 * 8,
                          rb.ctypes.data + j0 * 4, span_r, Ka, (M + RD - 1) // RD, RD * P * s0 * Ws)
                for m in range(M):
                    o, q0 = ob + (a + m * P) * OW, m * span_r
                    if s1 == 1:
                        _copy(o_flat.ctypes.data + o * 4, rb.ctypes.data + q0 * 4, OW)
                    else:
                        for q in range(OW):
                            o_flat[_u(o + q)] = rb[_u(q0 + q * s1)]


@njit(**_OPTS)
def weight_grad(g, x, totals, n, C, H, W_, top, left, Hs, Ws, s0, s1, boff, OH, OW):
    """totals[c, k] (float64, added to) += sum over images i < n and outputs (oh, ow) of
    g[i, c, oh*OW + ow] * scratch[oh*s0*Ws + ow*s1 + boff[k]], x's planes laid as in correlate
    (with their values 1 apart). The output gradient is laid in rows of 16-position steps, its
    values s1 apart and zero between, so every step reads x contiguously."""
    K = boff.shape[0]
    if n == 0 or C == 0 or OH == 0 or OW == 0 or K == 0:
        return
    NK = NKD if K >= 6 else NKD_SMALL
    span = (OW - 1) * s1 + 1
    span_r = (span + W - 1) // W * W
    T = span_r // W
    S = OH * T
    gpos = np.empty(S, np.int64)
    xpos = np.empty(S, np.int64)
    for oh in range(OH):
        for t in range(T):
            gpos[oh * T + t] = oh * span_r + t * W
            xpos[oh * T + t] = oh * s0 * Ws + t * W
    nkb = (K + NK - 1) // NK
    xcol = np.empty(nkb * NK, np.int64)
    for j in range(nkb * NK):  # taps past the last repeat it (computed, not kept)
        xcol[j] = boff[min(j, K - 1)]
    grow = np.zeros(1, np.int64)
    scratch = np.zeros(_scratch_size(Hs, Ws, OH, s0, span_r, boff), np.float32)
    gl = np.zeros(OH * span_r, np.float32)
    part = np.empty(nkb * NK * W, np.float32)
    lanes = np.zeros((C, nkb * NK * W))
    g_flat, x_flat = g.reshape(-1), x.reshape(-1)
    HW, L, E = H * W_, OH * OW, nkb * NK * W
    for i in range(n):
        for c in range(C):
            _lay(x_flat, (i * C + c) * HW, H, W_, scratch, 1, 1, top, left, Hs, Ws)
            gb = (i * C + c) * L
            for oh in range(OH):
                if s1 == 1:
                    _copy(gl.ctypes.data + oh * span_r * 4, g_flat.ctypes.data + (gb + oh * OW) * 4, OW)
                else:
                    for ow in range(OW):
                        gl[_u(oh * span_r + ow * s1)] = g_flat[_u(gb + oh * OW + ow)]
            for q0 in range(0, S, WSLICE):
                ns = min(WSLICE, S - q0)
                for kb in range(nkb):
                    xc, gp, xp, pp = (xcol.ctypes.data + kb * NK * 8, gpos.ctypes.data + q0 * 8,
                                      xpos.ctypes.data + q0 * 8, part.ctypes.data + kb * NK * W * 4)
                    if NK == NKD:
                        _wblock(gl.ctypes.data, grow.ctypes.data, scratch.ctypes.data, xc, gp, xp, ns, pp, 0)
                    else:
                        _wblock_small(gl.ctypes.data, grow.ctypes.data, scratch.ctypes.data, xc, gp, xp, ns, pp, 0)
                for e in range(E):
                    lanes[c, e] += part[e]
    for c in range(C):
        for k in range(K):
            s = 0.0
            for lane in range(W):
                s += lanes[c, k * W + lane]
            totals[c, k] += s


def _taps(w, C):
    return np.ascontiguousarray(w.reshape(C, -1), dtype=np.float32)


@functools.lru_cache(maxsize=256)
def _forward_plane(size, kernel, stride, padding, dilation, out_shape):
    """(Hs, Ws, boff) of the forward pass and the weight gradient: the zero-padded plane, large
    enough for every window (Hs x Ws), and each tap's offset in it."""
    (H, W_), (KH, KW), (s0, s1), (ph, pw), (dh, dw), (OH, OW) = size, kernel, stride, padding, dilation, out_shape
    Hs = max(H + 2 * ph, (OH - 1) * s0 + (KH - 1) * dh + 1)
    Ws = max(W_ + 2 * pw, (OW - 1) * s1 + (KW - 1) * dw + 1)
    boff = ((np.arange(KH, dtype=np.int64) * dh * Ws)[:, None] + np.arange(KW, dtype=np.int64) * dw).ravel()
    return Hs, Ws, boff


@functools.lru_cache(maxsize=256)
def _back_plane(size, kernel, dilation):
    """(Hs, Ws, boff) of the input gradient: the output gradient's plane, reaching the kernel's
    extent past the input's size, and each tap's mirrored offset in it."""
    (H, W_), (KH, KW), (dh, dw) = size, kernel, dilation
    rh, rw = (KH - 1) * dh, (KW - 1) * dw
    Hs, Ws = H + rh, W_ + rw
    boff = (((rh - np.arange(KH, dtype=np.int64) * dh) * Ws)[:, None]
            + (rw - np.arange(KW, dtype=np.int64) * dw)).ravel()
    return Hs, Ws, boff


def _key(*geometry):
    return tuple(tuple(int(v) for v in g) for g in geometry)


def forward(x, w, kernel, stride, padding, dilation, out_shape, out=None):
    """The layer's output (n, C, OH*OW) for x (n, C, H, W) and weights w (C, 1, KH, KW), float32,
    no bias; written into ``out`` (contiguous) where given."""
    x = np.ascontiguousarray(x)
    n, C, H, W_ = x.shape
    Hs, Ws, boff = _forward_plane(*_key((H, W_), kernel, stride, padding, dilation, out_shape))
    if out is None:
        out = np.empty((n, C, out_shape[0] * out_shape[1]), np.float32)
    correlate(x, _taps(w, C), out, n, C, H, W_, 1, 1, padding[0], padding[1], Hs, Ws, *stride, boff, _ALL[boff.shape[0]],
              *out_shape)
    return out


def input_grad(g, w, size, kernel, stride, padding, dilation, out_shape, out=None):
    """The input gradient (n, C, H, W) of forward for its output gradient g (n, C, OH*OW): g laid
    s apart (zeros between) and correlated at stride 1 with the taps at mirrored offsets. With a
    row stride s0 > 1, the rows h of one phase h % s0 see only the kernel rows kh with
    (h + ph - kh*dh) % s0 == 0 (the others read the zero rows): one pass per phase, with those
    taps. Written into ``out`` (contiguous) where given."""
    g = np.ascontiguousarray(g)
    n, C = g.shape[:2]
    (H, W_), (KH, KW), (s0, s1), (ph, pw), (dh, dw), (OH, OW) = size, kernel, stride, padding, dilation, out_shape
    Hs, Ws, boff = _back_plane(*_key(size, kernel, dilation))
    cols, kstart = _row_phases(s0, ph, KH, KW, dh)
    gx = np.empty((n, C, H, W_), np.float32) if out is None else out
    taps = _taps(w, C)
    if cols is not None:
        taps, boff = np.ascontiguousarray(taps[:, cols]), boff[cols]
    correlate(g, taps, gx, n, C, OH, OW, s0, s1, (KH - 1) * dh - ph, (KW - 1) * dw - pw, Hs, Ws, 1, 1, boff, kstart,
              H, W_)
    return gx


@functools.lru_cache(maxsize=256)
def _row_phases(s0, ph, KH, KW, dh):
    """(the taps' order by row phase, kstart) for correlate: phase a < s0 takes the kernel rows kh
    with (a + ph - kh*dh) % s0 == 0. (None, [0, K]) for stride 1."""
    if s0 == 1:
        return None, _ALL[KH * KW]
    rows = [[kh for kh in range(KH) if (a + ph - kh * dh) % s0 == 0] for a in range(s0)]
    cols = np.array([kh * KW + kw for ks in rows for kh in ks for kw in range(KW)], np.int64)
    kstart = np.cumsum([0] + [len(ks) * KW for ks in rows]).astype(np.int64)
    return cols, kstart


class _All(dict):
    """_ALL[K]: the kstart of one phase with all K taps, made once per K."""

    def __missing__(self, K):
        self[K] = v = np.array([0, K], np.int64)
        return v


_ALL = _All()


def weight_grad_part(g, x, kernel, stride, padding, dilation, out_shape):
    """The weight gradient (C, KH, KW), float64, of forward over the images of x (n, C, H, W) for
    the output gradient g (n, C, OH*OW)."""
    g, x = np.ascontiguousarray(g), np.ascontiguousarray(x)
    n, C, H, W_ = x.shape
    Hs, Ws, boff = _forward_plane(*_key((H, W_), kernel, stride, padding, dilation, out_shape))
    totals = np.zeros((C, boff.shape[0]))
    weight_grad(g, x, totals, n, C, H, W_, padding[0], padding[1], Hs, Ws, *stride, boff, *out_shape)
    return totals.reshape(C, *kernel)
