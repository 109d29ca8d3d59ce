"""Depthwise layers on narrow planes, read in place: float32 planes of at most MAX_WIDTH = 32
columns whose output rows have at most 16 columns (the strided layers on 28x28, 14x14 and 7x7
planes), for the forward pass, the input gradient and the weight gradient (kernels/depthwise.py
hands them these layers).

A row of such a plane is two 16-lane vectors (one where it has at most 16 columns), loaded from
the plane where it lies. Every tap's columns along an output row are then one permute of those
vectors: lane j takes column j*s1 - p1 + kw*d1, and a lane mask zeroes the lanes whose column is
padding or past the output (a table of KW index vectors and masks, made once per geometry). The
input gradient runs the other way: lane c of an input row takes the output gradient's column
(c + p1 - kw*d1) / s1 where that divides and lies in the row, one permute of the gradient row.
Rows above or below the plane are read from a zero row. Nothing is copied: the scratch planes of
kernels/depthwise.py laid every plane into a padded, phase-split copy first, which cost as much
as the products on planes this small (one core, 28x28 x64 at stride 2: forward 0.24 ms there,
0.17 here; benchmarks/README.md, "Ninth session of issue 22").
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .igemm import W, broadcast, count_loop, loop_head, masked_ops, outlined, prefetch, store_sums, vector_fma

MAX_WIDTH = 2 * W  # input columns: a row is at most two vectors
R = 4  # output rows per block of the forward pass and the input gradient, their sums in registers
TH, TW = 3, 3  # the weight gradient's taps per block: 3 kernel rows x 3 kernel columns, 9 sums
ZERO_ROW = 2 * W  # floats of the zero row read for rows outside the plane

_OPTS = dict(cache=True, nogil=True, boundscheck=False)


def carried_loop(builder, count, init, step, name):
    """Emit ``for k in range(count)`` carrying values from ``init`` (IR values), ``step(k, vals)``
    giving the next ones (it may open loops of its own); returns the values after the loop (init
    where count <= 0)."""
    i64 = ir.IntType(64)
    entry, loop, done = loop_head(builder, count, name)
    k = builder.phi(i64)
    vals = [builder.phi(v.type) for v in init]
    new = step(k, vals)
    end = builder.block
    k1 = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(ir.Constant(i64, 0), entry)
    k.add_incoming(k1, end)
    for phi, v0, v in zip(vals, init, new):
        phi.add_incoming(v0, entry)
        phi.add_incoming(v, end)
    builder.cbranch(builder.icmp_signed("<", k1, count), loop, done)
    builder.position_at_end(done)
    out = []
    for v0, v in zip(init, new):
        phi = builder.phi(v.type)
        phi.add_incoming(v0, entry)
        phi.add_incoming(v, end)
        out.append(phi)
    return out


def _permutes(builder):
    """(two-source permute, one-source permute) of <16 x float> by a <16 x i32> index vector:
    vpermi2ps (lane j takes lane idx[j] of the 32 lanes of a, b) and vpermps."""
    vt, it = ir.VectorType(ir.FloatType(), W), ir.VectorType(ir.IntType(32), W)
    two = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, it, vt]),
                                         "llvm.x86.avx512.vpermi2var.ps.512")
    one = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, it]), "llvm.x86.avx512.permvar.sf.512")
    return two, one


class _Kernel:
    """What every micro-kernel needs: types, constants, the masked loads and stores, the permutes,
    and int64 scalars read from a geometry table."""

    def __init__(self, builder):
        self.b = builder
        self.f32, self.i1, self.i16, self.i32, self.i64 = (ir.FloatType(), ir.IntType(1), ir.IntType(16),
                                                           ir.IntType(32), ir.IntType(64))
        self.vt, self.it = ir.VectorType(self.f32, W), ir.VectorType(self.i32, W)
        self.fma = vector_fma(builder)
        self.perm2, self.perm1 = _permutes(builder)
        self.load, self.store, self.lanes_below = masked_ops(builder)
        self.zero = ir.Constant(self.vt, [0.0] * W)

    def c(self, v):
        return ir.Constant(self.i64, v)

    def floats(self, addr):
        return self.b.inttoptr(addr, self.f32.as_pointer())

    def scalars(self, addr, n):
        p = self.b.inttoptr(addr, self.i64.as_pointer())
        return [self.b.load(self.b.gep(p, [self.c(j)])) for j in range(n)]

    def below(self, n):
        """The mask of lanes < n (an i64 IR value)."""
        return self.lanes_below(self.b.trunc(n, self.i32))

    def index(self, base, at):
        """The <16 x i32> index vector and <16 x i1> mask number ``at`` of the tables whose
        addresses ``base`` holds: (index vectors, int32 (., 16); masks, int16 (.))."""
        idx_base, mask_base = base
        idx = self.b.load(self.b.gep(self.b.inttoptr(idx_base, self.it.as_pointer()), [at]), align=4)
        m = self.b.load(self.b.gep(self.b.inttoptr(mask_base, self.i16.as_pointer()), [at]))
        return idx, self.b.bitcast(m, ir.VectorType(self.i1, W))

    def row(self, plane, rr, ok, width, zrow):
        """The row rr of a plane of ``width`` columns where ok (an i1), else the zero row."""
        b = self.b
        return b.select(ok, b.gep(plane, [b.mul(rr, width)]), zrow)


def _make_forward():
    """The forward micro-kernel as a numba intrinsic, one plane per call: out[oh, j] = sum over
    taps (kh, kw) of w[kh*KW + kw] * x[oh*s0 - p0 + kh*d0, j*s1 - p1 + kw*d1] (zero outside x),
    R output rows at a time; geo = (H, W, OH, OW, KH, KW, s0, p0, d0), the columns' index vectors
    and masks per kw in (idx, masks)."""

    def body(builder, args):
        w_base, x_base, o_base, idx_base, mask_base, geo, z_base = args
        k, b = _Kernel(builder), builder
        H, Wd, OH, OW, KH, KW, s0, p0, d0 = k.scalars(geo, 9)
        w, x, o, zrow = k.floats(w_base), k.floats(x_base), k.floats(o_base), k.floats(z_base)
        lo_m, hi_m, out_m = k.below(Wd), k.below(b.sub(Wd, k.c(W))), k.below(OW)
        none = ir.Constant(lo_m.type, [0] * W)

        def block(ob):
            oh0 = b.mul(ob, k.c(R))
            ohs = [b.add(oh0, k.c(r)) for r in range(R)]
            live = [b.icmp_signed("<", oh, OH) for oh in ohs]

            def tap_row(kh, acc):
                base = b.sub(b.mul(kh, d0), p0)
                lo, hi = [], []
                for r in range(R):
                    rr = b.add(b.mul(ohs[r], s0), base)
                    p = k.row(x, rr, b.and_(b.icmp_unsigned("<", rr, H), live[r]), Wd, zrow)
                    lo.append(k.load(p, lo_m))
                    hi.append(k.load(b.gep(p, [k.c(W)]), hi_m))
                wrow = b.gep(w, [b.mul(kh, KW)])

                def tap(kw, sums):
                    idx, m = k.index((idx_base, mask_base), kw)
                    wv = broadcast(b, b.load(b.gep(wrow, [kw])))
                    return [b.call(k.fma, [wv, b.select(m, b.call(k.perm2, [lo[r], idx, hi[r]]), k.zero), sums[r]])
                            for r in range(R)]

                return carried_loop(b, KW, acc, tap, "nfkw")

            sums = carried_loop(b, KH, [k.zero] * R, tap_row, "nfkh")
            for r in range(R):
                k.store(sums[r], b.gep(o, [b.mul(ohs[r], OW)]), b.select(live[r], out_m, none))

        count_loop(b, b.sdiv(b.add(OH, k.c(R - 1)), k.c(R)), "nfblocks", block)

    codegen = outlined("cnnlab_narrow_forward", body, nargs=7)

    def forward_rows(typingctx, w_base, x_base, o_base, idx_base, mask_base, geo, z_base):
        """See _make_forward; every argument an int64 address."""
        return types.void(*([types.int64] * 7)), codegen

    return intrinsic(forward_rows)


def _make_input_grad(NV):
    """The input gradient's micro-kernel, one row phase of one plane per call: rows h = a + s0*m,
    m < M, of the input gradient (NV vectors of columns) get sum over the phase's kernel rows
    kh = kh0 + t*kst (t < nkh; input row h reaches output row m + e0 - t*estep) and the kernel
    columns kw of w[kh*KW + kw] * g[that row, (c + p1 - kw*d1) / s1] (where it divides and lies in
    the row: the index vectors and masks (idx, masks) per kw and vector). geo = (H, W, OH, OW, KW,
    s0, kst, estep), phase = (a, kh0, nkh, e0, M)."""

    def body(builder, args):
        w_base, g_base, o_base, idx_base, mask_base, geo, phase, z_base = args
        k, b = _Kernel(builder), builder
        H, Wd, OH, OW, KW, s0, kst, estep = k.scalars(geo, 8)
        a, kh0, nkh, e0, M = k.scalars(phase, 5)
        w, g, o, zrow = k.floats(w_base), k.floats(g_base), k.floats(o_base), k.floats(z_base)
        g_m = k.below(OW)
        col_m = [k.below(b.sub(Wd, k.c(v * W))) for v in range(NV)]
        none = ir.Constant(g_m.type, [0] * W)

        def block(ob):
            ms = [b.add(b.mul(ob, k.c(R)), k.c(r)) for r in range(R)]
            live = [b.icmp_signed("<", m, M) for m in ms]

            def tap_row(t, acc):
                kh = b.add(kh0, b.mul(t, kst))
                e = b.sub(e0, b.mul(t, estep))
                gv = []
                for r in range(R):
                    gr = b.add(ms[r], e)
                    gv.append(k.load(k.row(g, gr, b.and_(b.icmp_unsigned("<", gr, OH), live[r]), OW, zrow), g_m))
                wrow = b.gep(w, [b.mul(kh, KW)])

                def tap(kw, sums):
                    wv = broadcast(b, b.load(b.gep(wrow, [kw])))
                    new = list(sums)
                    for v in range(NV):
                        idx, m = k.index((idx_base, mask_base), b.add(b.mul(kw, k.c(NV)), k.c(v)))
                        for r in range(R):
                            picked = b.select(m, b.call(k.perm1, [gv[r], idx]), k.zero)
                            new[r * NV + v] = b.call(k.fma, [wv, picked, sums[r * NV + v]])
                    return new

                return carried_loop(b, KW, acc, tap, "nbkw")

            sums = carried_loop(b, nkh, [k.zero] * (R * NV), tap_row, "nbkh")
            for r in range(R):
                row = b.gep(o, [b.mul(b.add(a, b.mul(ms[r], s0)), Wd)])
                for v in range(NV):
                    k.store(sums[r * NV + v], b.gep(row, [k.c(v * W)]), b.select(live[r], col_m[v], none))

        count_loop(b, b.sdiv(b.add(M, k.c(R - 1)), k.c(R)), "nbblocks", block)

    codegen = outlined(f"cnnlab_narrow_input_grad_{NV}", body, nargs=8)

    def input_grad_rows(typingctx, w_base, g_base, o_base, idx_base, mask_base, geo, phase, z_base):
        """See _make_input_grad; every argument an int64 address."""
        return types.void(*([types.int64] * 8)), codegen

    return intrinsic(input_grad_rows)


def _make_weight_grad():
    """The weight gradient's micro-kernel, one block of TH x TW taps of one plane per call:
    part[u*TW + j, 0:16] (+ part if beta) = sum over output rows oh0 <= oh < oh0 + noh of
    g[oh, 0:16] * x[oh*s0 - p0 + (kh + u)*d0, lane's column for kernel column j] (zero outside x
    and for kernel rows kh + u >= KH; the columns' index vectors and masks for the block's TW
    kernel columns in (idx, masks)); the 16 lanes are summed later. geo = (H, W, OH, OW, KH, s0,
    p0, d0)."""

    def body(builder, args):
        g_base, x_base, z_base, p_base, geo, idx_base, mask_base, kh, oh0, noh, beta = args
        k, b = _Kernel(builder), builder
        H, Wd, OH, OW, KH, s0, p0, d0 = k.scalars(geo, 8)
        g, x, zrow, part = k.floats(g_base), k.floats(x_base), k.floats(z_base), k.floats(p_base)
        lo_m, hi_m, g_m = k.below(Wd), k.below(b.sub(Wd, k.c(W))), k.below(OW)
        cols = [k.index((idx_base, mask_base), k.c(j)) for j in range(TW)]

        def step(s, acc):
            oh = b.add(oh0, s)
            gv = k.load(b.gep(g, [b.mul(oh, OW)]), g_m)
            new = list(acc)
            for u in range(TH):
                khu = b.add(kh, k.c(u))
                rr = b.add(b.mul(oh, s0), b.sub(b.mul(khu, d0), p0))
                p = k.row(x, rr, b.and_(b.icmp_unsigned("<", rr, H), b.icmp_signed("<", khu, KH)), Wd, zrow)
                lo, hi = k.load(p, lo_m), k.load(b.gep(p, [k.c(W)]), hi_m)
                for j, (idx, m) in enumerate(cols):
                    xv = b.select(m, b.call(k.perm2, [lo, idx, hi]), k.zero)
                    new[u * TW + j] = b.call(k.fma, [gv, xv, acc[u * TW + j]])
            return new

        sums = carried_loop(b, noh, [k.zero] * (TH * TW), step, "nwrows")
        store_sums(b, [b.gep(part, [k.c(i * W)]) for i in range(TH * TW)], sums, beta)

    codegen = outlined("cnnlab_narrow_weight_grad", body, nargs=11)

    def weight_grad_rows(typingctx, g_base, x_base, z_base, p_base, geo, idx_base, mask_base, kh, oh0, noh, beta):
        """See _make_weight_grad; every argument an int64 (addresses, counts)."""
        return types.void(*([types.int64] * 11)), codegen

    return intrinsic(weight_grad_rows)


_forward_rows = _make_forward()
_input_grad_rows1 = _make_input_grad(1)
_input_grad_rows2 = _make_input_grad(2)
_weight_grad_rows = _make_weight_grad()


def use_narrow(size, out_shape):
    """Whether these kernels serve a depthwise layer on planes of ``size`` with outputs of
    ``out_shape``: at most MAX_WIDTH input columns and 16 output columns, a non-empty output."""
    return 0 < size[1] <= MAX_WIDTH and 0 < out_shape[1] <= W and out_shape[0] > 0 and size[0] > 0


def _bits(ok):
    """16 lane flags as one int16."""
    return np.int16(np.uint16((np.asarray(ok, np.int64) << np.arange(W)).sum()))


@functools.lru_cache(maxsize=256)
def forward_tables(size, kernel, stride, padding, dilation, out_shape):
    """(idx (KW, 16) int32, masks (KW,) int16, geo) of the forward pass and the weight gradient:
    lane j of kernel column kw reads input column j*s1 - p1 + kw*d1, kept where that lies in the
    row and j < OW."""
    (H, Wd), (KH, KW), (s0, s1), (p0, p1), (d0, d1), (OH, OW) = size, kernel, stride, padding, dilation, out_shape
    j = np.arange(W)
    idx, masks = np.zeros((KW, W), np.int32), np.zeros(KW, np.int16)
    for kw in range(KW):
        col = j * s1 - p1 + kw * d1
        ok = (j < OW) & (col >= 0) & (col < Wd)
        idx[kw], masks[kw] = np.where(ok, col, 0), _bits(ok)
    geo = np.array([H, Wd, OH, OW, KH, KW, s0, p0, d0], np.int64)
    for a in (idx, masks, geo):
        a.flags.writeable = False
    return idx, masks, geo


@functools.lru_cache(maxsize=256)
def back_tables(size, kernel, stride, padding, dilation, out_shape):
    """(idx (KW, NV, 16) int32, masks (KW, NV) int16, geo, phases (P, 5) int64, NV) of the input
    gradient: lane c of vector v and kernel column kw reads output-gradient column
    (16v + c + p1 - kw*d1) / s1, kept where that divides, lies in the row and 16v + c < W; row
    phase a (rows a + s0*m) takes the kernel rows kh with (a + p0 - kh*d0) % s0 == 0, which are
    kh0 + t*kst (t < nkh), reaching output row m + e0 - t*estep."""
    (H, Wd), (KH, KW), (s0, s1), (p0, p1), (d0, d1), (OH, OW) = size, kernel, stride, padding, dilation, out_shape
    NV = 2 if Wd > W else 1
    c = np.arange(NV * W).reshape(NV, W)
    idx, masks = np.zeros((KW, NV, W), np.int32), np.zeros((KW, NV), np.int16)
    for kw in range(KW):
        num = c + p1 - kw * d1
        col = num // s1
        ok = (num % s1 == 0) & (col >= 0) & (col < OW) & (c < Wd)
        idx[kw] = np.where(ok, col, 0)
        masks[kw] = [_bits(ok[v]) for v in range(NV)]
    kst = s0 // math.gcd(d0, s0)
    phases = []
    for a in range(min(s0, H)):
        khs = [kh for kh in range(KH) if (a + p0 - kh * d0) % s0 == 0]
        kh0 = khs[0] if khs else 0
        phases.append([a, kh0, len(khs), (a + p0 - kh0 * d0) // s0, -(-(H - a) // s0)])
    geo = np.array([H, Wd, OH, OW, KW, s0, kst, kst * d0 // s0], np.int64)
    phases = np.array(phases, np.int64)
    for t in (idx, masks, geo, phases):
        t.flags.writeable = False
    return idx, masks, geo, phases, NV


@functools.lru_cache(maxsize=256)
def grad_tables(size, kernel, stride, padding, dilation, out_shape):
    """(idx (blocks, TW, 16) int32, masks (blocks, TW) int16, kh (blocks,) int64, geo, slot (K,)
    int64) of the weight gradient: the taps in blocks of TH kernel rows x TW kernel columns (those
    past the kernel read nothing), tap kh*KW + kw at part row slot[k]."""
    idx1, masks1, _ = forward_tables(size, kernel, stride, padding, dilation, out_shape)
    (H, Wd), (KH, KW), (s0, _), (p0, _), (d0, _), (OH, OW) = size, kernel, stride, padding, dilation, out_shape
    bh, bw = -(-KH // TH), -(-KW // TW)
    idx, masks = np.zeros((bh * bw, TW, W), np.int32), np.zeros((bh * bw, TW), np.int16)
    kh, slot = np.zeros(bh * bw, np.int64), np.zeros(KH * KW, np.int64)
    for i in range(bh):
        for j in range(bw):
            blk = i * bw + j
            kh[blk] = i * TH
            for v in range(TW):
                if j * TW + v < KW:
                    idx[blk, v], masks[blk, v] = idx1[j * TW + v], masks1[j * TW + v]
    for r in range(KH):
        for q in range(KW):
            slot[r * KW + q] = ((r // TH) * bw + q // TW) * TH * TW + (r % TH) * TW + q % TW
    geo = np.array([H, Wd, OH, OW, KH, s0, p0, d0], np.int64)
    for t in (idx, masks, kh, geo, slot):
        t.flags.writeable = False
    return idx, masks, kh, geo, slot


@njit(**_OPTS)
def forward(x, taps, out, idx, masks, geo):
    """out[i, c] (OH*OW) = the layer's output for the plane x[i, c] (n, C, H, W) and taps[c]
    (C, KH*KW), float32, contiguous; forward_tables' idx, masks, geo."""
    n, C, H, Wd = x.shape
    K, L, HW = taps.shape[1], out.shape[2], H * Wd
    z = np.zeros(ZERO_ROW, np.float32)
    x_addr, t_addr, o_addr = x.ctypes.data, taps.ctypes.data, out.ctypes.data
    for q in range(n * C):
        if q + 1 < n * C:  # the next plane, while this one is worked on
            prefetch(x_addr + (q + 1) * HW * 4, HW)
        _forward_rows(t_addr + (q % C) * K * 4, x_addr + q * HW * 4, o_addr + q * L * 4, idx.ctypes.data,
                      masks.ctypes.data, geo.ctypes.data, z.ctypes.data)


@njit(**_OPTS)
def input_grad(g, taps, out, idx, masks, geo, phases, NV):
    """out[i, c] (H, W) = the input gradient for the output gradient g[i, c] (n, C, OH*OW) and
    taps[c] (C, KH*KW), float32, contiguous; back_tables' idx, masks, geo, phases, NV. Every
    element of out is written."""
    n, C, H, Wd = out.shape
    K, L, HW = taps.shape[1], g.shape[2], H * Wd
    z = np.zeros(ZERO_ROW, np.float32)
    g_addr, t_addr, o_addr = g.ctypes.data, taps.ctypes.data, out.ctypes.data
    for q in range(n * C):
        if q + 1 < n * C:
            prefetch(g_addr + (q + 1) * L * 4, L)
        for a in range(phases.shape[0]):
            args = (t_addr + (q % C) * K * 4, g_addr + q * L * 4, o_addr + q * HW * 4, idx.ctypes.data,
                    masks.ctypes.data, geo.ctypes.data, phases.ctypes.data + a * 5 * 8, z.ctypes.data)
            if NV == 1:
                _input_grad_rows1(*args)
            else:
                _input_grad_rows2(*args)


@njit(**_OPTS)
def weight_grad(g, x, totals, idx, masks, kh, geo, slot, steps):
    """totals[c, k] (float64, added to) += sum over images and output positions of g[i, c] (n, C,
    OH*OW) times the input x[i, c] (n, C, H, W) under tap k; grad_tables' idx, masks, kh, geo,
    slot. Image after image, each channel's float32 sums carried across planes (and a tall
    plane cut in pieces) up to ``steps`` output rows before they go to float64 lanes."""
    n, C, H, Wd = x.shape
    L, HW, OH = g.shape[2], H * Wd, geo[2]
    blocks = kh.shape[0]
    E = blocks * TH * TW * W
    part = np.empty(C * E, np.float32)
    lanes = np.zeros(C * E)
    z = np.zeros(ZERO_ROW, np.float32)
    g_addr, x_addr, p_addr = g.ctypes.data, x.ctypes.data, part.ctypes.data
    held = 0  # output rows in every channel's part not yet added to its lanes
    for i in range(n):
        for oh0 in range(0, OH, steps):
            noh = min(steps, OH - oh0)
            if held + noh > steps and held:
                add_parts(lanes, part)
                held = 0
            for c in range(C):
                q = i * C + c
                if q + 1 < n * C and oh0 == 0:
                    prefetch(x_addr + (q + 1) * HW * 4, HW)
                    prefetch(g_addr + (q + 1) * L * 4, L)
                for blk in range(blocks):
                    _weight_grad_rows(g_addr + q * L * 4, x_addr + q * HW * 4, z.ctypes.data,
                                      p_addr + (c * E + blk * TH * TW * W) * 4, geo.ctypes.data,
                                      idx.ctypes.data + blk * TW * W * 4, masks.ctypes.data + blk * TW * 2, kh[blk],
                                      oh0, noh, 1 if held else 0)
            held += noh
    if held:
        add_parts(lanes, part)
    sum_lanes(lanes, E, slot, totals)


@njit(**_OPTS)
def add_parts(lanes, part):
    """lanes (float64) += part (float32), element by element: float32 sums handed on."""
    for e in range(part.shape[0]):
        lanes[e] += part[e]


@njit(**_OPTS)
def sum_lanes(lanes, E, slot, totals):
    """totals[c, k] += the 16 lanes of channel c's row slot[k] in lanes (E per channel)."""
    for c in range(totals.shape[0]):
        for k in range(totals.shape[1]):
            t = 0.0
            for lane in range(W):
                t += lanes[c * E + slot[k] * W + lane]
            totals[c, k] += t
