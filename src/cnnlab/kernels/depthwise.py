"""Depthwise 2-D convolution of float32 planes with 16-lane micro-kernels (policy.use_depthwise_vectors):
the forward pass, the input gradient and the weight gradient, one image plane at a time.

Each plane is first laid into a zeroed scratch plane that stays in the L1 cache, at an offset (the
padding); the next plane is prefetched meanwhile. For the forward pass and the weight gradient of
a layer with column stride s1 > 1, each scratch row holds its s1 column phases side by side
(columns b, b + s1, ... of the padded row), so that every tap reads a stride-1 run along the
outputs. For the input gradient the output gradient is laid with its rows s0 apart (zero rows
between) and the input's s0 x s1 phases are computed apart, each with the taps that reach it;
the column phases are interleaved on the way out. Every output row is then a stride-1 run along
one scratch row: ``rows`` keeps the sums of RD output rows x 32 positions (RN x 16 for rows of at
most 16) in registers across all the taps (one broadcast weight and one load per sum and tap) and
stores them straight into the output. The weight gradient keeps one tap block's sums over
positions in registers (igemm.make_wblock with one filter), the output gradient laid in rows of
whole vectors, and adds each channel's lane sums to float64 totals.

Layers that keep their size (stride 1, 2p = d(k - 1): the usual 3x3 padding 1) read their planes
in place instead, no scratch copy: along the flat plane every tap is one offset, and the lanes
whose source falls outside the plane (a row above or below, a column wrapped round) are masked to
zero by a table made once per geometry (same_correlate for the output and the input gradient of
planes up to SAME_MAX_WIDTH columns, same_weight_grad for the weight gradient at any width). For
7x7 planes that is 2.4x faster than the scratch planes, whose rows of 7 used 7 of 16 lanes.

Nothing the size of the batch is copied: the old path (kernels/cpu.py's depthwise_planes, kept
for float64 and for CPUs without AVX-512) zero-padded and phase-split the whole chunk, cropped
the result and summed the weight gradient in float64 lane by lane. Measured:
benchmarks/README.md, "Depthwise in registers" and "Sixth session of issue 22".
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

from . import jobs, narrow
from .igemm import (
    W,
    based,
    broadcast,
    copy_floats,
    count_loop,
    make_wblock,
    masked_ops,
    outlined,
    prefetch,
    split2,
    store_sums,
    sum_loop,
    vector_fma,
    zip2,
)

RD, NVD = 4, 2  # output rows x vectors of positions per block: 8 sums in registers
RN = 8  # output rows per block of one vector, for rows of at most 16 outputs
SPAN = NVD * W  # positions per block along a row
NKD = 9  # taps per weight-gradient block (one 3x3 kernel), NKD_SMALL for kernels of < 6 taps
NKD_SMALL = 3
# The in-place kernels of "same" stride-1 layers (use_same) against the padded scratch planes, one
# core, ms ratio in-place / scratch for 16-144 channels, fwd / input grad / weight grad: 7x7 0.41 /
# 0.41 / 0.53, 8x8 0.43 / 0.43 / 0.53, 14x14 0.91 / 0.89 / 0.73, 16x16 0.78 / 0.75 / 0.65, 20x20
# 0.80 / 0.79 / 0.59, 28x28 0.98-1.13 / 1.00-1.10 / 0.70-0.84, 112x112 0.91 / 0.86 / 0.77: the
# weight gradient takes them at every width, the other two up to 20 columns (benchmarks/README.md,
# "Eighth session of issue 22")
SAME_MAX_WIDTH = 20
# Planes of at most this many columns, whose output rows have at most 16, go to kernels/narrow.py
# (read in place, every tap's columns one permute of the row): one core, 28x28 x64 at stride 2,
# forward / input grad / weight grad 0.17 / 0.21 / 0.12 ms against 0.24 / 0.40 / 0.27 here, 14x14
# x96 0.22 / 0.25 / 0.19 against 0.35 / 0.59 / 0.43 (benchmarks/README.md, "Ninth session of
# issue 22")
NARROW_MAX_WIDTH = narrow.MAX_WIDTH
WSLICE = 64  # weight-gradient steps (of 16 positions) per float32 pass before the float64 totals


def _make_rows(R, NV):
    """The forward micro-kernel as a numba intrinsic: for blocks b < nb, r < R, j < NV*16,
    o[(b*R + r)*ldo + j] = sum_k w[k] * x[xrow[r] + b*xstep + boff[k] + j], k < K, each block's
    sums in R*NV registers; one call for all the row blocks of a plane. Only rows b*R + r < nrows
    and positions j < width are stored (masked stores), so o may be the output itself."""

    def body(builder, args):
        w_base, x_base, xrow_ptr, boff_ptr, o_base, ldo, K, nb, xstep, width, nrows = args
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        vt = ir.VectorType(f32, W)
        fma = vector_fma(builder)
        _, store, lanes_below = masked_ops(builder)
        w = builder.inttoptr(w_base, f32.as_pointer())
        boffs = builder.inttoptr(boff_ptr, i64.as_pointer())
        o = builder.inttoptr(o_base, f32.as_pointer())
        xrows0 = based(builder, x_base, xrow_ptr, R)
        width32 = builder.trunc(width, i32)
        masks = [lanes_below(builder.sub(width32, ir.Constant(i32, j * W))) for j in range(NV)]
        none = ir.Constant(masks[0].type, [0] * W)

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
                at = builder.add(builder.mul(bi, ir.Constant(i64, R)), ir.Constant(i64, r))
                row = builder.gep(o, [builder.mul(at, ldo)])
                kept = builder.icmp_signed("<", at, nrows)
                for j in range(NV):
                    store(totals[r * NV + j], builder.gep(row, [ir.Constant(i64, j * W)]),
                          builder.select(kept, masks[j], none))

        count_loop(builder, nb, "dwblocks", block)

    codegen = outlined(f"cnnlab_depthwise_rows_{R}x{NV * W}", body, nargs=11)

    def rows(typingctx, w_base, x_base, xrow_ptr, boff_ptr, o_base, ldo, K, nb, xstep, width, nrows):
        """See _make_rows; every argument an int64 (addresses, offsets in elements, counts)."""
        return types.void(*([types.int64] * 11)), codegen

    return intrinsic(rows)


def _pointers(builder, f0, f1, f2, offsets, masks):
    """Three float pointers, an int64 pointer (tap offsets) and an int16 pointer (lane masks) from
    their int64 addresses: the in-place kernels' arguments."""
    f32p = ir.FloatType().as_pointer()
    return ([builder.inttoptr(a, f32p) for a in (f0, f1, f2)]
            + [builder.inttoptr(offsets, ir.IntType(64).as_pointer()), builder.inttoptr(masks, ir.IntType(16).as_pointer())])


def _lane_mask(builder, masks, index):
    """The <16 x i1> lane mask kept as 16 bits at masks[index] (an int16 pointer)."""
    return builder.bitcast(builder.load(builder.gep(masks, [index])), ir.VectorType(ir.IntType(1), W))


def _make_same(G):
    """The micro-kernel of a "same" stride-1 layer on small planes, as a numba intrinsic: G vectors
    of the plane's positions, read in place (no padded copy), for o[g*16 + j] = sum_k w[k] *
    x[g*16 + j + off[k]] over the lanes that mask[k*G + g] (16 bits) keeps, the others zero; the
    sums stored at positions g*16 + j < count."""

    def body(builder, args):
        w_base, x_base, off_ptr, mask_ptr, o_base, K, count = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fma = vector_fma(builder)
        load, store, lanes_below = masked_ops(builder)
        w, x, o, offs, masks = _pointers(builder, w_base, x_base, o_base, off_ptr, mask_ptr)

        def step(k, acc):
            at = builder.gep(x, [builder.load(builder.gep(offs, [k]))])
            wv = broadcast(builder, builder.load(builder.gep(w, [k])))
            row = builder.mul(k, ir.Constant(i64, G))
            new = []
            for g in range(G):
                xv = load(builder.gep(at, [ir.Constant(i64, g * W)]),
                          _lane_mask(builder, masks, builder.add(row, ir.Constant(i64, g))))
                new.append(builder.call(fma, [wv, xv, acc[g]]))
            return new

        totals = sum_loop(builder, K, G, step, "dwsame")
        left = builder.trunc(count, i32)
        for g in range(G):
            store(totals[g], builder.gep(o, [ir.Constant(i64, g * W)]),
                  lanes_below(builder.sub(left, ir.Constant(i32, g * W))))

    codegen = outlined(f"cnnlab_depthwise_same_{G}", body, nargs=7)

    def same(typingctx, w_base, x_base, off_ptr, mask_ptr, o_base, K, count):
        """See _make_same; every argument an int64 (addresses, counts)."""
        return types.void(*([types.int64] * 7)), codegen

    return intrinsic(same)


def _make_same_grad(NK):
    """The weight gradient's micro-kernel of a "same" stride-1 layer on small planes (see
    _make_same): p[j*16 : +16] (+ p if beta) = sum over the plane's V vectors v of
    g[v*16 : +16] * x[v*16 + off[j] : +16], x's lanes kept by mask[v*ldm + j], g's below count;
    NK taps, NK sums in registers, summed across the lanes later."""

    def body(builder, args):
        g_base, x_base, off_ptr, mask_ptr, p_base, V, count, ldm, beta = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fma = vector_fma(builder)
        load, _, lanes_below = masked_ops(builder)
        g, x, part, offs, masks = _pointers(builder, g_base, x_base, p_base, off_ptr, mask_ptr)
        taps = [builder.gep(x, [builder.load(builder.gep(offs, [ir.Constant(i64, j)]))]) for j in range(NK)]
        left = builder.trunc(count, i32)

        def step(v, acc):
            at = builder.mul(v, ir.Constant(i64, W))
            gv = load(builder.gep(g, [at]), lanes_below(builder.sub(left, builder.trunc(at, i32))))
            row = builder.mul(v, ldm)
            new = []
            for j in range(NK):
                xv = load(builder.gep(taps[j], [at]), _lane_mask(builder, masks, builder.add(row, ir.Constant(i64, j))))
                new.append(builder.call(fma, [gv, xv, acc[j]]))
            return new

        totals = sum_loop(builder, V, NK, step, "dwsamegrad")
        store_sums(builder, [builder.gep(part, [ir.Constant(i64, j * W)]) for j in range(NK)], totals, beta)

    codegen = outlined(f"cnnlab_depthwise_same_grad_{NK}", body)

    def same_grad(typingctx, g_base, x_base, off_ptr, mask_ptr, p_base, V, count, ldm, beta):
        """See _make_same_grad; every argument an int64 (addresses, counts)."""
        return types.void(*([types.int64] * 9)), codegen

    return intrinsic(same_grad)


_rows = _make_rows(RD, NVD)
_rows_narrow = _make_rows(RN, 1)
_same4 = _make_same(4)
_same8 = _make_same(8)
_same_grad = _make_same_grad(NKD)
_wblock = make_wblock(1, NKD)
_wblock_small = make_wblock(1, NKD_SMALL)

_OPTS = dict(cache=True, nogil=True, boundscheck=False)


@njit(**_OPTS)
def _u(i):
    """An index as unsigned: numba then drops its negative-index wrap-around, and the copy loops
    vectorise (a plane's copy 8x faster)."""
    return np.uint64(i)


@njit(**_OPTS)
def _lay(src, sb, H, W_, scratch, up0, top, left, Hs, Ws):
    """Lay plane src[sb : sb + H*W_] into scratch: value (h, w) at row top + h*up0, column
    left + w of the Hs x Ws scratch plane, those that fall outside dropped (never read)."""
    for h in range(H):
        r = top + h * up0
        if r < 0 or r >= Hs:
            continue
        w0, w1 = max(0, -left), min(W_, Ws - left)
        if w1 > w0:
            copy_floats(scratch.ctypes.data + (r * Ws + left + w0) * 4, src.ctypes.data + (sb + h * W_ + w0) * 4, w1 - w0)


@njit(**_OPTS)
def _lay_split(src, sb, H, W_, scratch, top, left, Hs, Ws, split, Wq):
    """_lay (rows 1 apart) with each scratch row's columns split into ``split`` phases of Wq:
    padded column p = left + w at column (p % split)*Wq + p // split of the row (Ws = split*Wq)."""
    w0, w1 = max(0, -left), min(W_, Ws - left)
    h0, h1 = max(0, -top), min(H, Hs - top)
    if w1 <= w0 or h1 <= h0:
        return
    p, q = left + w0, left + w0 + 1  # where the row's first two values go, the same for every row
    d0 = scratch.ctypes.data + ((top + h0) * Ws + (p % split) * Wq + p // split) * 4
    d1 = scratch.ctypes.data + ((top + h0) * Ws + (q % split) * Wq + q // split) * 4
    s0 = src.ctypes.data + (sb + h0 * W_ + w0) * 4
    for h in range(h1 - h0):
        if split == 2:
            split2(d0 + h * Ws * 4, d1 + h * Ws * 4, s0 + h * W_ * 4, w1 - w0)
        else:  # phase by phase, no division per value (a 5x5/3 pooling forward: 3.5 -> 1.3-1.9 ms)
            rb, s = (top + h0 + h) * Ws, sb + (h0 + h) * W_
            for ph in range(split):
                wa = w0 + (ph - (left + w0)) % split  # the first column of this phase
                d = rb + ph * Wq + (left + wa) // split
                for w in range(wa, w1, split):
                    scratch[_u(d)] = src[_u(s + w)]
                    d += 1


@njit(**_OPTS)
def _scratch_size(Hs, Ws, OH, s0, span_r, boff):
    """Elements of a scratch plane that every read of a block can reach: the plane, and past it
    the last block row's run and taps."""
    return max(Hs * Ws, (OH - 1) * s0 * Ws + span_r + boff.max() + 1)


@njit(**_OPTS)
def correlate(src, taps, out, n, C, H, W_, up0, split, Wq, top, left, Hs, Ws, s0, Q, boff, kstart, OH, OW):
    """For images i < n and channels c < C of src (n, C, H*W_) laid into an Hs x Ws scratch plane
    (see _lay): out[i, c, oh*OW + ow] = sum_k taps[c, k] * scratch[oh*s0*Ws + j + boff[k]], the
    outputs in P x Q phases, P = (len(kstart) - 1) / Q: rows oh = a (mod P) and columns
    ow = b + Q*j of phase (a, b) take the taps kstart[a*Q + b] <= k < kstart[a*Q + b + 1] (zero
    where there are none). float32 throughout, contiguous arrays; boff's offsets >= 0."""
    K, P = taps.shape[1], (kstart.shape[0] - 1) // Q
    if n == 0 or C == 0 or OH == 0 or OW == 0:
        return
    J = (OW + Q - 1) // Q  # outputs along a row of the widest column phase
    narrow = J <= W  # one vector per row: blocks of RN rows x 16, else RD rows x 32
    R = RN if narrow else RD
    step = W if narrow else SPAN
    span_r = (J + step - 1) // step * step
    rows_r = (OH + R * P - 1) // (R * P) * R * P + P  # every phase's blocks, rounded up to whole blocks
    scratch = np.zeros(_scratch_size(Hs, Ws, rows_r, s0, span_r, boff), np.float32)
    Mr = ((OH + P - 1) // P + R - 1) // R * R  # a phase's rows in whole blocks
    RB = Mr * span_r  # one phase's sums
    # one phase (the forward pass): straight into the output, row after row; several (a strided
    # layer's input gradient): every phase's sums into rb, then the output's rows in order, the
    # column phases interleaved. Written phase by phase, the plane's rows came P apart and each
    # cache line of a cold output was fetched and written twice: 0.35 ms for 8 images of the
    # stride-2 layer against 0.10 into a warm output (benchmarks/README.md, "Eighth session of
    # issue 22")
    direct = P == 1 and Q == 1
    rb = np.zeros(0 if direct else P * Q * RB, np.float32)
    xrow = np.empty(max(RN, RD), np.int64)
    s_flat, o_flat = src.reshape(-1), out.reshape(-1)
    t_addr, b_addr = taps.ctypes.data, boff.ctypes.data  # arguments: alive for the whole call
    HW, L = H * W_, OH * OW
    if direct:  # one phase with every tap: the loop below without its per-plane set-up, 21% faster
        K0 = kstart[1] - kstart[0]  # for 14x14 planes at stride 2 (benchmarks/README.md, "Eighth session")
        for r in range(R):
            xrow[r] = r * s0 * Ws
        x_addr, sc_addr, o_addr = xrow.ctypes.data, scratch.ctypes.data, o_flat.ctypes.data
        nb = (OH + R - 1) // R
        for q in range(n * C):
            if q + 1 < n * C:  # the next plane, while this one is worked on
                prefetch(s_flat.ctypes.data + (q + 1) * HW * 4, HW)
            if split == 1:
                _lay(s_flat, q * HW, H, W_, scratch, up0, top, left, Hs, Ws)
            else:
                _lay_split(s_flat, q * HW, H, W_, scratch, top, left, Hs, Ws, split, Wq)
            w_at = t_addr + ((q % C) * K + kstart[0]) * 4
            if K0 == 0:
                for e in range(L):
                    o_flat[_u(q * L + e)] = 0.0
                continue
            for j0 in range(0, span_r, step):
                if narrow:
                    _rows_narrow(w_at, sc_addr + j0 * 4, x_addr, b_addr + kstart[0] * 8, o_addr + (q * L + j0) * 4, OW,
                                 K0, nb, R * s0 * Ws, min(step, OW - j0), OH)
                else:
                    _rows(w_at, sc_addr + j0 * 4, x_addr, b_addr + kstart[0] * 8, o_addr + (q * L + j0) * 4, OW, K0,
                          nb, R * s0 * Ws, min(step, OW - j0), OH)
        return
    # several phases: each phase's rows (xrows[a]), row count and taps made once, not per plane
    nph = min(P, OH)
    xrows = np.empty((nph, max(RN, RD)), np.int64)
    Ms = np.empty(nph, np.int64)
    for a in range(nph):
        Ms[a] = (OH - a + P - 1) // P
        for r in range(R):  # the last block's rows past M read the scratch's spare rows
            xrows[a, r] = (a + r * P) * s0 * Ws
    rb_addr, sc_addr, o_addr = rb.ctypes.data, scratch.ctypes.data, o_flat.ctypes.data
    for q in range(n * C):
        c = q % C
        if q + 1 < n * C:  # the next plane, while this one is worked on
            prefetch(s_flat.ctypes.data + (q + 1) * HW * 4, HW)
        if split == 1:
            _lay(s_flat, q * HW, H, W_, scratch, up0, top, left, Hs, Ws)
        else:
            _lay_split(s_flat, q * HW, H, W_, scratch, top, left, Hs, Ws, split, Wq)
        for a in range(nph):
            M = Ms[a]
            x_addr = xrows.ctypes.data + a * xrows.shape[1] * 8
            for b in range(Q):
                k0, Ka = kstart[a * Q + b], kstart[a * Q + b + 1] - kstart[a * Q + b]
                dst = rb_addr + (a * Q + b) * RB * 4
                if Ka == 0:  # no taps reach these outputs
                    for e in range(M * span_r):
                        rb[_u((a * Q + b) * RB + e)] = 0.0
                    continue
                for j0 in range(0, span_r, step):
                    if narrow:
                        _rows_narrow(t_addr + (c * K + k0) * 4, sc_addr + j0 * 4, x_addr, b_addr + k0 * 8, dst + j0 * 4,
                                     span_r, Ka, (M + R - 1) // R, R * P * s0 * Ws, step, M)
                    else:
                        _rows(t_addr + (c * K + k0) * 4, sc_addr + j0 * 4, x_addr, b_addr + k0 * 8, dst + j0 * 4,
                              span_r, Ka, (M + R - 1) // R, R * P * s0 * Ws, step, M)
        ob = q * L
        for oh in range(OH):  # the output's rows in order
            o, q0 = ob + oh * OW, (oh % P) * Q * RB + (oh // P) * span_r
            if Q == 1:
                copy_floats(o_addr + o * 4, rb_addr + q0 * 4, OW)
            elif Q == 2:
                zip2(o_addr + o * 4, rb_addr + q0 * 4, rb_addr + (RB + q0) * 4, OW)
            else:  # column phase by phase: no division per value
                for b in range(Q):
                    e = q0 + b * RB
                    for u in range(b, OW, Q):
                        o_flat[_u(o + u)] = rb[_u(e)]
                        e += 1


@njit(**_OPTS)
def weight_grad(g, x, totals, n, C, H, W_, top, left, Hs, Ws, split, Wq, s0, boff, OH, OW):
    """totals[c, k] (float64, added to) += sum over images i < n and outputs (oh, ow) of
    g[i, c, oh*OW + ow] * scratch[oh*s0*Ws + ow + boff[k]], x's planes laid as in correlate (its
    columns split into the stride's phases). The output gradient is laid in rows of 16-position
    steps, zero past OW, so every step reads x contiguously."""
    K = boff.shape[0]
    if n == 0 or C == 0 or OH == 0 or OW == 0 or K == 0:
        return
    NK = NKD if K >= 6 else NKD_SMALL
    span_r = (OW + W - 1) // W * W
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
    # channel by channel, the float32 sums of up to WSLICE steps carried from one image's plane to
    # the next before they go to the float64 lanes: for small planes (7x7: 7 steps) adding all
    # 9 x 16 lanes after every plane took longer than the products
    for c in range(C):
        held = 0  # steps in part not yet added to the lanes
        for i in range(n):
            nxt = (i + 1) * C + c if i + 1 < n else c + 1  # the next plane, while this one is worked on
            if nxt < n * C:
                prefetch(x_flat.ctypes.data + nxt * HW * 4, HW)
                prefetch(g_flat.ctypes.data + nxt * L * 4, L)
            if split == 1:
                _lay(x_flat, (i * C + c) * HW, H, W_, scratch, 1, top, left, Hs, Ws)
            else:
                _lay_split(x_flat, (i * C + c) * HW, H, W_, scratch, top, left, Hs, Ws, split, Wq)
            gb = (i * C + c) * L
            for oh in range(OH):
                copy_floats(gl.ctypes.data + oh * span_r * 4, g_flat.ctypes.data + (gb + oh * OW) * 4, OW)
            for q0 in range(0, S, WSLICE):
                ns = min(WSLICE, S - q0)
                if held + ns > WSLICE:
                    for e in range(E):
                        lanes[c, e] += part[e]
                    held = 0
                for kb in range(nkb):
                    xc, gp, xp, pp = (xcol.ctypes.data + kb * NK * 8, gpos.ctypes.data + q0 * 8,
                                      xpos.ctypes.data + q0 * 8, part.ctypes.data + kb * NK * W * 4)
                    beta = 1 if held > 0 else 0
                    if NK == NKD:
                        _wblock(gl.ctypes.data, grow.ctypes.data, scratch.ctypes.data, xc, gp, xp, ns, pp, beta)
                    else:
                        _wblock_small(gl.ctypes.data, grow.ctypes.data, scratch.ctypes.data, xc, gp, xp, ns, pp, beta)
                held += ns
        if held:
            for e in range(E):
                lanes[c, e] += part[e]
    for c in range(C):
        for k in range(K):
            s = 0.0
            for lane in range(W):
                s += lanes[c, k * W + lane]
            totals[c, k] += s


def _taps(w, C):
    return np.ascontiguousarray(w.reshape(C, math.prod(w.shape[2:])), dtype=np.float32)  # C may be 0


@functools.lru_cache(maxsize=256)
def _forward_plane(size, kernel, stride, padding, dilation, out_shape):
    """(Hs, Ws, Wq, boff) of the forward pass and the weight gradient: the zero-padded plane, large
    enough for every window, Hs rows of Ws = s1*Wq, each row's columns split into the column
    stride's s1 phases of Wq (padded column p at (p % s1)*Wq + p // s1), and each tap's offset:
    output column ow and tap kw read padded column ow*s1 + kw*dw, column ow + kw*dw // s1 of
    phase kw*dw % s1, so every tap reads a stride-1 run along the outputs."""
    (H, W_), (KH, KW), (s0, s1), (ph, pw), (dh, dw), (OH, OW) = size, kernel, stride, padding, dilation, out_shape
    Hs = max(H + 2 * ph, (OH - 1) * s0 + (KH - 1) * dh + 1)
    Wq = -(-max(W_ + 2 * pw, (OW - 1) * s1 + (KW - 1) * dw + 1) // s1)
    Ws = s1 * Wq
    tw = np.arange(KW, dtype=np.int64) * dw
    boff = ((np.arange(KH, dtype=np.int64) * dh * Ws)[:, None] + (tw % s1) * Wq + tw // s1).ravel()
    return Hs, Ws, Wq, boff


@functools.lru_cache(maxsize=256)
def _back_plane(size, kernel, stride, padding, dilation):
    """(Hs, Ws, top, left, taps' order, boff, kstart) of the input gradient: the output gradient
    laid with its rows s0 apart (row top + oh*s0) and its columns in place (column left + ow), and
    the input's s0 x s1 phases: rows h = a (mod s0) see the kernel rows kh with
    (a + ph - kh*dh) % s0 == 0 (the others read the zero rows), columns w = b + s1*j the kernel
    columns kw with (b + pw - kw*dw) % s1 == 0, at gradient column j + (b + pw - kw*dw) / s1.
    The taps are ordered by phase (a, b); kstart[a*s1 + b] is where phase (a, b)'s begin."""
    (H, W_), (KH, KW), (s0, s1), (ph, pw), (dh, dw) = size, kernel, stride, padding, dilation
    rh = (KH - 1) * dh
    Hs = H + rh
    rows = [[kh for kh in range(KH) if (a + ph - kh * dh) % s0 == 0] for a in range(s0)]
    cols = [[kw for kw in range(KW) if (b + pw - kw * dw) % s1 == 0] for b in range(s1)]
    shift = {(b, kw): (b + pw - kw * dw) // s1 for b in range(s1) for kw in cols[b]}
    left = max([0] + [-e for e in shift.values()])
    J = [-(-(W_ - b) // s1) for b in range(s1)]
    Ws = max([1] + [left + e + J[b] for (b, kw), e in shift.items()])
    order, boff, kstart = [], [], [0]
    for a in range(s0):
        for b in range(s1):
            for kh in rows[a]:
                for kw in cols[b]:
                    order.append(kh * KW + kw)
                    boff.append((rh - kh * dh) * Ws + left + shift[b, kw])
            kstart.append(len(order))
    return (Hs, Ws, rh - ph, left, np.array(order, np.int64), np.array(boff, np.int64),
            np.array(kstart, np.int64))


@functools.lru_cache(maxsize=256)
def _same_plane(size, kernel, padding, dilation, flip):
    """(offsets (K,), masks (groups, K, G) of 16 lane bits, G) for same_correlate over an H x W
    plane of a stride-1 layer that keeps its size: tap k = (kh, kw) reads the source at row
    h + e0, column w + e1, e = k*d - p (flip: p - k*d, the input gradient's mirrored taps), which
    is offset e0*W + e1 along the flat plane; a lane is kept where its position lies in the plane
    and its source in the source plane. G vectors of 16 positions per call, 8 where the plane has
    more than 4."""
    (H, W_), (KH, KW), (ph, pw), (dh, dw) = size, kernel, padding, dilation
    HW = H * W_
    V = -(-HW // W)
    G = 8 if V > 4 else 4
    groups = -(-V // G)
    pos = np.arange(groups * G * W)
    h, w = pos // W_, pos % W_
    sign = -1 if flip else 1
    offs, masks = [], []
    for kh in range(KH):
        for kw in range(KW):
            e0, e1 = sign * (kh * dh - ph), sign * (kw * dw - pw)
            ok = (pos < HW) & (h + e0 >= 0) & (h + e0 < H) & (w + e1 >= 0) & (w + e1 < W_)
            offs.append(e0 * W_ + e1)
            masks.append((ok.reshape(groups, G, W).astype(np.int64) << np.arange(W)).sum(axis=2))
    m = np.stack(masks, axis=1).astype(np.uint16).view(np.int16)  # (groups, K, G)
    offs = np.array(offs, np.int64)
    m.flags.writeable = offs.flags.writeable = False
    return offs, np.ascontiguousarray(m), G


@functools.lru_cache(maxsize=256)
def _same_grad_plane(size, kernel, padding, dilation):
    """(offsets (Kpad,), masks (V, Kpad) of 16 lane bits) of the forward pass's taps for
    same_weight_grad: V vectors of the plane's positions, the taps padded with unused ones (no
    lane kept) to whole blocks of NKD."""
    offs, masks, G = _same_plane(size, kernel, padding, dilation, False)
    K = offs.shape[0]
    V = -(-(size[0] * size[1]) // W)
    Kpad = -(-K // NKD) * NKD
    per_vector = masks.view(np.uint16).transpose(0, 2, 1).reshape(-1, K)[:V]  # (V, K)
    m = np.zeros((V, Kpad), np.uint16)
    m[:, :K] = per_vector
    o = np.zeros(Kpad, np.int64)
    o[:K] = offs
    m = m.view(np.int16)
    m.flags.writeable = o.flags.writeable = False
    return o, m


def use_same(size, kernel, stride, padding, dilation, weight_grad=False):
    """Whether the in-place kernels serve a layer (same_correlate; same_weight_grad with
    ``weight_grad``): stride 1, the output the input's size (2p = d(k - 1) on both axes), and for
    the forward pass and input gradient planes of at most SAME_MAX_WIDTH columns."""
    return (all(s == 1 for s in stride) and (weight_grad or size[1] <= SAME_MAX_WIDTH)
            and all(2 * p == d * (k - 1) for p, d, k in zip(padding, dilation, kernel)))


@njit(**_OPTS)
def same_correlate(src, taps, out, offs, masks, G):
    """out[i, c, q] = sum_k taps[c, k] * src[i, c, q + offs[k]] over the lanes masks keeps (see
    _same_plane), src and out (n, C, HW) float32, contiguous: every plane read in place, G
    vectors of positions per micro-kernel call."""
    n, C, HW = src.shape
    K, groups = taps.shape[1], masks.shape[0]
    t_addr, s_addr, o_addr = taps.ctypes.data, src.ctypes.data, out.ctypes.data  # arguments
    o_addr_, m_addr = offs.ctypes.data, masks.ctypes.data
    for p in range(n * C):
        c = p % C
        for grp in range(groups):
            q0 = grp * G * W
            at = (p * HW + q0) * 4
            if G == 8:
                _same8(t_addr + c * K * 4, s_addr + at, o_addr_, m_addr + grp * K * G * 2, o_addr + at, K, HW - q0)
            else:
                _same4(t_addr + c * K * 4, s_addr + at, o_addr_, m_addr + grp * K * G * 2, o_addr + at, K, HW - q0)


@njit(**_OPTS)
def same_weight_grad(g, x, totals, offs, masks):
    """totals[c, k] (float64, added to) += sum over images and positions q of g[i, c, q] *
    x[i, c, q + offs[k]] over the lanes masks keeps (_same_grad_plane), g and x (n, C, HW)
    float32, contiguous, read in place, plane after plane; each channel's float32 sums carried
    across images up to WSLICE vectors before they go to float64 lanes, as weight_grad."""
    n, C, HW = x.shape
    K = totals.shape[1]
    V, Kpad = masks.shape
    nkb, E = Kpad // NKD, Kpad * W
    part = np.empty(C * E, np.float32)
    lanes = np.zeros(C * E)
    g_addr, x_addr, o_addr, m_addr = g.ctypes.data, x.ctypes.data, offs.ctypes.data, masks.ctypes.data
    held = 0  # vectors in every channel's part not yet added to its lanes
    for i in range(n):
        for v0 in range(0, V, WSLICE):  # a large plane in pieces of at most WSLICE vectors
            nv = min(WSLICE, V - v0)
            if held + nv > WSLICE and held:
                narrow.add_parts(lanes, part)
                held = 0
            for c in range(C):
                at = ((i * C + c) * HW + v0 * W) * 4
                for kb in range(nkb):
                    _same_grad(g_addr + at, x_addr + at, o_addr + kb * NKD * 8, m_addr + (v0 * Kpad + kb * NKD) * 2,
                               part.ctypes.data + (c * E + kb * NKD * W) * 4, nv, HW - v0 * W, Kpad,
                               1 if held else 0)
            held += nv
    if held:
        narrow.add_parts(lanes, part)
    narrow.sum_lanes(lanes, E, np.arange(K), totals)


class _All(dict):
    """_ALL[K]: the kstart of one phase with all K taps, made once per K."""

    def __missing__(self, K):
        self[K] = v = np.array([0, K], np.int64)
        return v


_ALL = _All()


# ------------------------------------------------------------------ passes as compiled jobs
# Each pass below is a job of kernels/jobs.py over chunks of the batch: chunk j, images
# [chunks[j, 0], chunks[j, 1]), runs the loops above on those images' planes (arrays rebuilt from
# the addresses in the job's arguments), so the thread pool's helpers run a whole layer without
# Python or the GIL. Every job's arguments begin alike (_BASE slots): the chunk table, C, the
# elements of a source plane and of an output plane, the source, taps and output addresses, K.
_BASE = 8


@njit(**_OPTS)
def _images(a, i):
    """(first image, image count) of chunk i of a job's chunk table."""
    t = jobs.slot(a, 0)
    n0 = jobs.slot(t, 2 * i)
    return n0, jobs.slot(t, 2 * i + 1) - n0


@njit(**_OPTS)
def _planes(a, i):
    """Chunk i's source planes (n, C, source plane), taps (C, K) and output planes (n, C, output
    plane) of a job whose arguments begin with the _BASE slots."""
    n0, n = _images(a, i)
    C, P, L, K = jobs.slot(a, 1), jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 7)
    src = carray(jobs.f32(jobs.slot(a, 4) + n0 * C * P * 4), (n, C, P))
    taps = carray(jobs.f32(jobs.slot(a, 5)), (C, K))
    out = carray(jobs.f32(jobs.slot(a, 6) + n0 * C * L * 4), (n, C, L))
    return src, taps, out


@jobs.job
def _same_job(a, i):
    """same_correlate on chunk i (slots after _BASE: offsets, masks, mask groups, G)."""
    src, taps, out = _planes(a, i)
    K, groups, G = taps.shape[1], jobs.slot(a, 10), jobs.slot(a, 11)
    offs = carray(jobs.i64(jobs.slot(a, 8)), (K,))
    masks = carray(jobs.i16(jobs.slot(a, 9)), (groups, K, G))
    same_correlate(src, taps, out, offs, masks, G)


@jobs.job
def _narrow_forward_job(a, i):
    """narrow.forward on chunk i (slots after _BASE: H, W, idx, masks, geo, KW)."""
    src, taps, out = _planes(a, i)
    n, C, KW = src.shape[0], src.shape[1], jobs.slot(a, 13)
    x = src.reshape((n, C, jobs.slot(a, 8), jobs.slot(a, 9)))
    idx = carray(jobs.i32(jobs.slot(a, 10)), (KW, W))
    masks = carray(jobs.i16(jobs.slot(a, 11)), (KW,))
    narrow.forward(x, taps, out, idx, masks, carray(jobs.i64(jobs.slot(a, 12)), (9,)))


@jobs.job
def _narrow_input_grad_job(a, i):
    """narrow.input_grad on chunk i (slots after _BASE: H, W, idx, masks, geo, phases, their
    count, NV, KW)."""
    g, taps, gx = _planes(a, i)
    n, C = g.shape[0], g.shape[1]
    NV, KW, P = jobs.slot(a, 15), jobs.slot(a, 16), jobs.slot(a, 14)
    out = gx.reshape((n, C, jobs.slot(a, 8), jobs.slot(a, 9)))
    idx = carray(jobs.i32(jobs.slot(a, 10)), (KW, NV, W))
    masks = carray(jobs.i16(jobs.slot(a, 11)), (KW, NV))
    geo = carray(jobs.i64(jobs.slot(a, 12)), (8,))
    phases = carray(jobs.i64(jobs.slot(a, 13)), (P, 5))
    narrow.input_grad(g, taps, out, idx, masks, geo, phases, NV)


@jobs.job
def _correlate_job(a, i):
    """correlate on chunk i (slots after _BASE: H, W, up0, split, Wq, top, left, Hs, Ws, s0, Q,
    boff, its length, kstart, its length, OH, OW)."""
    src, taps, out = _planes(a, i)
    s = [jobs.slot(a, _BASE + k) for k in range(17)]
    boff = carray(jobs.i64(s[11]), (s[12],))
    kstart = carray(jobs.i64(s[13]), (s[14],))
    correlate(src, taps, out, src.shape[0], src.shape[1], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
              s[9], s[10], boff, kstart, s[15], s[16])


@njit(**_OPTS)
def _grad_planes(a, i):
    """Chunk i's output-gradient planes (n, C, output plane), input planes (n, C, input plane) and
    float64 sums (C, K), the chunk's own, of a weight-gradient job: slots the chunk table, C, the
    input plane's elements, the output plane's, g, x, the sums (chunks x C x K), K."""
    n0, n = _images(a, i)
    C, P, L, K = jobs.slot(a, 1), jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 7)
    g = carray(jobs.f32(jobs.slot(a, 4) + n0 * C * L * 4), (n, C, L))
    x = carray(jobs.f32(jobs.slot(a, 5) + n0 * C * P * 4), (n, C, P))
    totals = carray(jobs.f64(jobs.slot(a, 6) + i * C * K * 8), (C, K))
    return g, x, totals


@jobs.job
def _same_grad_job(a, i):
    """same_weight_grad on chunk i (slots after _BASE: offsets, masks, V, Kpad)."""
    g, x, totals = _grad_planes(a, i)
    V, Kpad = jobs.slot(a, 10), jobs.slot(a, 11)
    offs = carray(jobs.i64(jobs.slot(a, 8)), (Kpad,))
    masks = carray(jobs.i16(jobs.slot(a, 9)), (V, Kpad))
    same_weight_grad(g, x, totals, offs, masks)


@jobs.job
def _narrow_grad_job(a, i):
    """narrow.weight_grad on chunk i (slots after _BASE: H, W, idx, masks, kh, blocks, geo, slot)."""
    g, x, totals = _grad_planes(a, i)
    n, C, K, blocks = x.shape[0], x.shape[1], totals.shape[1], jobs.slot(a, 13)
    xs = x.reshape((n, C, jobs.slot(a, 8), jobs.slot(a, 9)))
    idx = carray(jobs.i32(jobs.slot(a, 10)), (blocks, narrow.TW, W))
    masks = carray(jobs.i16(jobs.slot(a, 11)), (blocks, narrow.TW))
    kh = carray(jobs.i64(jobs.slot(a, 12)), (blocks,))
    geo = carray(jobs.i64(jobs.slot(a, 14)), (8,))
    slots = carray(jobs.i64(jobs.slot(a, 15)), (K,))
    narrow.weight_grad(g, xs, totals, idx, masks, kh, geo, slots, WSLICE)


@jobs.job
def _scratch_grad_job(a, i):
    """weight_grad on chunk i (slots after _BASE: H, W, top, left, Hs, Ws, split, Wq, s0, boff,
    OH, OW)."""
    g, x, totals = _grad_planes(a, i)
    s = [jobs.slot(a, _BASE + k) for k in range(12)]
    boff = carray(jobs.i64(s[9]), (totals.shape[1],))
    weight_grad(g, x, totals, x.shape[0], x.shape[1], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], boff,
                s[10], s[11])


def _key(*geometry):
    return tuple(tuple(int(v) for v in g) for g in geometry)


def use_narrow(size, out_shape):
    """Whether kernels/narrow.py can serve a layer (forward, input_grad and weight_grad_part try
    use_same first): planes of at most NARROW_MAX_WIDTH columns, output rows of at most 16."""
    return size[1] <= NARROW_MAX_WIDTH and narrow.use_narrow(size, out_shape)


# the passes' job arguments per (pass, shapes, chunking): jobs.Templates
_templates = jobs.Templates(32)


def _shapes(*parts):
    """A template's key from a pass's geometry and chunks (tuples or lists)."""
    return tuple(tuple(map(tuple, p)) if p and isinstance(p[0], (tuple, list)) else tuple(p) for p in parts)


def forward_job(x, w, kernel, stride, padding, dilation, out_shape, out, chunks):
    """The forward pass (forward) of x (N, C, H, W) into out (N, C, OH*OW), both float32 and
    contiguous, as a Job over ``chunks`` (image ranges)."""
    taps = _taps(w, x.shape[1])
    key = ("forward", x.shape) + _shapes(kernel, stride, padding, dilation, out_shape, chunks)
    at = jobs.address
    return _templates.job(key, (at(x), at(taps), at(out)), (4, 5, 6), (x, taps, out),
                          lambda: _forward_args(x, taps, kernel, stride, padding, dilation, out_shape, out, chunks))


def _forward_args(x, taps, kernel, stride, padding, dilation, out_shape, out, chunks):
    """forward_job's (function, arguments, chunk count, arrays kept with its template)."""
    N, C, H, W_ = x.shape
    L, table = out_shape[0] * out_shape[1], jobs.table(chunks)
    base = [table, C, H * W_, L, x, taps, out]
    if use_same((H, W_), kernel, stride, padding, dilation):
        offs, masks, G = _same_plane(*_key((H, W_), kernel, padding, dilation), False)
        return _same_job.address, base + [offs.shape[0], offs, masks, masks.shape[0], G], len(table), (table, offs, masks)
    if use_narrow((H, W_), out_shape):
        idx, masks, geo = narrow.forward_tables(*_key((H, W_), kernel, stride, padding, dilation, out_shape))
        return (_narrow_forward_job.address, base + [taps.shape[1], H, W_, idx, masks, geo, idx.shape[0]], len(table),
                (table, idx, masks, geo))
    Hs, Ws, Wq, boff = _forward_plane(*_key((H, W_), kernel, stride, padding, dilation, out_shape))
    kstart = _ALL[boff.shape[0]]
    return (_correlate_job.address, base + [taps.shape[1], H, W_, 1, stride[1], Wq, padding[0], padding[1], Hs, Ws,
                                            stride[0], 1, boff, boff.shape[0], kstart, kstart.shape[0], *out_shape],
            len(table), (table, boff, kstart))


def input_grad_job(g, w, size, kernel, stride, padding, dilation, out_shape, gx, chunks):
    """The input gradient (input_grad) of g (N, C, OH*OW) into gx (N, C, H, W), both float32 and
    contiguous, as a Job over ``chunks``."""
    C = g.shape[1]
    taps = _taps(w, C)
    if not use_same(size, kernel, stride, padding, dilation) and not use_narrow(size, out_shape):
        order = _back_plane(*_key(size, kernel, stride, padding, dilation))[4]
        taps = np.ascontiguousarray(taps[:, order])  # the correlation's taps in the phases' order
    key = ("input_grad", g.shape) + _shapes(size, kernel, stride, padding, dilation, out_shape, chunks)
    at = jobs.address
    return _templates.job(key, (at(g), at(taps), at(gx)), (4, 5, 6), (g, taps, gx),
                          lambda: _input_grad_args(g, taps, size, kernel, stride, padding, dilation, out_shape, gx,
                                                   chunks))


def _input_grad_args(g, taps, size, kernel, stride, padding, dilation, out_shape, gx, chunks):
    """input_grad_job's (function, arguments, chunk count, arrays kept with its template)."""
    C = g.shape[1]
    (H, W_), (OH, OW) = size, out_shape
    table = jobs.table(chunks)
    base = [table, C, OH * OW, H * W_, g, taps, gx]
    if use_same(size, kernel, stride, padding, dilation):
        offs, masks, G = _same_plane(*_key(size, kernel, padding, dilation), True)
        return _same_job.address, base + [offs.shape[0], offs, masks, masks.shape[0], G], len(table), (table, offs, masks)
    if use_narrow(size, out_shape):
        idx, masks, geo, phases, NV = narrow.back_tables(*_key(size, kernel, stride, padding, dilation, out_shape))
        return (_narrow_input_grad_job.address, base + [taps.shape[1], H, W_, idx, masks, geo, phases, phases.shape[0],
                                                        NV, idx.shape[0]],
                len(table), (table, idx, masks, geo, phases))
    Hs, Ws, top, left, order, boff, kstart = _back_plane(*_key(size, kernel, stride, padding, dilation))
    return (_correlate_job.address, base + [taps.shape[1], OH, OW, stride[0], 1, Ws, top, left, Hs, Ws, 1, stride[1],
                                            boff, boff.shape[0], kstart, kstart.shape[0], H, W_],
            len(table), (table, boff, kstart))


def weight_grad_job(g, x, kernel, stride, padding, dilation, out_shape, chunks):
    """The weight gradient (weight_grad_part) of g (N, C, OH*OW) and x (N, C, H, W), float32,
    contiguous, as a Job over ``chunks``: each chunk's float64 sums its own, in ``sums`` (added in
    chunk order by the caller)."""
    sums = np.zeros((len(chunks) or 1, x.shape[1]) + tuple(kernel))
    key = ("weight_grad", x.shape) + _shapes(kernel, stride, padding, dilation, out_shape, chunks)
    at = jobs.address
    return _templates.job(key, (at(g), at(x), at(sums)), (4, 5, 6), (g, x, sums),
                          lambda: _weight_grad_args(g, x, sums, kernel, stride, padding, dilation, out_shape, chunks),
                          sums)


def _weight_grad_args(g, x, sums, kernel, stride, padding, dilation, out_shape, chunks):
    """weight_grad_job's (function, arguments, chunk count, arrays kept with its template)."""
    N, C, H, W_ = x.shape
    K, L, table = math.prod(kernel), out_shape[0] * out_shape[1], jobs.table(chunks)
    base = [table, C, H * W_, L, g, x, sums, K]
    if use_same((H, W_), kernel, stride, padding, dilation, weight_grad=True):
        offs, masks = _same_grad_plane(*_key((H, W_), kernel, padding, dilation))
        return _same_grad_job.address, base + [offs, masks, masks.shape[0], masks.shape[1]], len(table), (table, offs, masks)
    if use_narrow((H, W_), out_shape):
        idx, masks, kh, geo, slots = narrow.grad_tables(*_key((H, W_), kernel, stride, padding, dilation, out_shape))
        return (_narrow_grad_job.address, base + [H, W_, idx, masks, kh, kh.shape[0], geo, slots], len(table),
                (table, idx, masks, kh, geo, slots))
    Hs, Ws, Wq, boff = _forward_plane(*_key((H, W_), kernel, stride, padding, dilation, out_shape))
    return (_scratch_grad_job.address, base + [H, W_, padding[0], padding[1], Hs, Ws, stride[1], Wq, stride[0], boff,
                                               *out_shape],
            len(table), (table, boff))


def forward(x, w, kernel, stride, padding, dilation, out_shape, out=None):
    """The layer's output (n, C, OH*OW) for x (n, C, H, W) and weights w (C, 1, KH, KW), float32,
    no bias; written into ``out`` (contiguous) where given."""
    x = np.ascontiguousarray(x)
    n = x.shape[0]
    if out is None:
        out = np.empty((n, x.shape[1], out_shape[0] * out_shape[1]), np.float32)
    forward_job(x, w, kernel, stride, padding, dilation, out_shape, out, [(0, n)]).run_here()
    return out


def input_grad(g, w, size, kernel, stride, padding, dilation, out_shape, out=None):
    """The input gradient (n, C, H, W) of forward for its output gradient g (n, C, OH*OW): by the
    input's s0 x s1 phases (_back_plane), each a stride-1 correlation of g with the taps that reach
    it at mirrored offsets; column phases interleaved on the way out. Written into ``out``
    (contiguous) where given."""
    g = np.ascontiguousarray(g)
    n, C = g.shape[:2]
    gx = np.empty((n, C) + tuple(size), np.float32) if out is None else out
    input_grad_job(g, w, size, kernel, stride, padding, dilation, out_shape, gx, [(0, n)]).run_here()
    return gx


def weight_grad_part(g, x, kernel, stride, padding, dilation, out_shape):
    """The weight gradient (C, KH, KW), float64, of forward over the images of x (n, C, H, W) for
    the output gradient g (n, C, OH*OW)."""
    g, x = np.ascontiguousarray(g), np.ascontiguousarray(x)
    return weight_grad_job(g, x, kernel, stride, padding, dilation, out_shape, [(0, x.shape[0])]).run_here().sums[0]
