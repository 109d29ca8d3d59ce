"""Indirect matrix products with a register-blocked, 16-lane micro-kernel: the convolutions' work
on float32 NumPy arrays where the CPU has AVX-512 (policy.use_igemm).

    C[i, j] = sum_k A[row[i] + col[k]] * B[k, j]

A is any flat float32 array read through two offset tables: ``row`` (one offset per output row)
and ``col`` (one per reduction index). A convolution's receptive fields are such a matrix without
being copied out (no im2col): for the output, row[i] is where output position i's field starts in
the (padded) input and col[k] the offset of field element k = (c, kh, kw) from there; for the
weight gradient the two tables trade places; for the input gradient, A is the output gradient
read in its own (n, F, L) layout. B comes packed in panels of NR = 32 columns (16 where it has
at most 16; zero-padded), and C is written through a row table and a column stride, so the
output lands in (n, F, L) directly. ``dconv`` is the direct form for stride-1 layers: positions
along the vectors, B's rows read in place from the padded input through an offset table;
``wgrad`` the weight gradient's direct form, a 4 x 4 block of sums over positions along the
vectors (summed across the lanes at the end), which keeps every lane busy however few filters a
group has.

The micro-kernel keeps an MR x NR = 8 x 32 block of C in sixteen 16-float registers, and per
reduction step loads two vectors of B and broadcasts eight values of A into 16 fused
multiply-adds. It is written as LLVM IR through numba's ``intrinsic`` (vector types and
``llvm.fma``), which numba's own loops do not reach: their autovectorised form kept the block in
memory and ran 30x slower. The summation order is fixed (k ascending), so results are
deterministic. Measured against NumPy's OpenBLAS on one core: benchmarks/README.md, "Indirect
GEMM".
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import cpu, jobs

W = 16  # lanes per vector
MR, NR = 8, 32  # the wide block: 8 rows of two vectors; NR is also the width of B's packed panels
# the narrow block, for panels with at most 16 columns in use: 8 rows of one vector. 16 rows kept
# more sums in registers but spilled 7 of their 16 row pointers, reloaded every step; 8 rows were
# 0-8% faster on layers of 16 filters per group (benchmarks/README.md, "Tenth session of issue 22")
MR1 = 8
# Reduction steps per pass: each block's sums start from zero every slice and are then added to
# C, a two-level sum that keeps float32 rounding near BLAS's (data-parallel against one process
# after an epoch: 1.2e-7 with slices of 256, as with BLAS, against 4.8e-5 with 2048); a 256 x 32
# slice of B (32 KiB) also stays in the L1 cache (a long weight gradient: 198 GFLOP/s, 170 at
# 2048). KC is that measured length; a reduction is cut into ceil(K / KC_MAX) slices of equal
# length, at most KC_MAX = 1.25 KC: K = 288 in one pass rather than 256 + 32, whose short second
# pass paid a whole block's set-up and reloaded sums (benchmarks/README.md, "Fifth session of
# issue 22", "Smaller changes")
KC = 256
KC_MAX = KC + KC // 4


@njit(cache=True, nogil=True)
def tap_slices(Cg, K):
    """igemm's slices of a reduction over Cg channels of K taps each in tap order: as many as
    ``slices`` makes, of whole channels."""
    return min(Cg, slices(Cg * K))


@njit(cache=True, nogil=True)
def slice_start(K, i):
    """Where reduction slice i starts (i = slices(K) gives K)."""
    return K * i // max(1, -(-K // KC_MAX))


@njit(cache=True, nogil=True)
def slices(K):
    """How many equal reduction slices a reduction of K steps runs in."""
    return max(1, -(-K // KC_MAX))
# The weight gradient packs the output gradient (positions x filters, zero-padded to 16 or 32
# columns) for about this many positions at a time, so the packed copy stays small (2 MiB per 32
# filters at 16,384)
PACK_POSITIONS = 16384


def outlined(name, body, nargs=9):
    """A numba intrinsic's codegen that calls ``name``, a function of ``nargs`` int64 arguments
    built by ``body(builder, args)`` once per module and kept out of line (noinline): the
    micro-kernel's loop gets the registers to itself rather than sharing them with the driver's
    loops around the call site."""

    def codegen(context, builder, signature, args):
        module = builder.module
        fn = module.globals.get(name)
        if fn is None:
            i64 = ir.IntType(64)
            fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64] * nargs), name)
            fn.linkage = "internal"
            for attr in OUTLINE_ATTRS:
                fn.attributes.add(attr)
            inner = ir.IRBuilder(fn.append_basic_block("entry"))
            body(inner, list(fn.args))
            inner.ret_void()
        builder.call(fn, args)
        return context.get_dummy_value()

    return codegen


# The micro-kernels' functions: out of line, and optimised for size, which keeps LLVM from
# unrolling their loops twice (the unrolled 8 x 32 block spilled vector registers to the stack).
# One core: igemm's block 172-191 GF/s inlined or noinline alone, 220-238 with both; dconv's
# 162-185 -> 228-252 (benchmarks/README.md, "Micro-kernels out of line")
OUTLINE_ATTRS = ("noinline", "optsize")


def vector_fma(builder):
    """LLVM's fused multiply-add of two <16 x float> vectors into a third."""
    vt = ir.VectorType(ir.FloatType(), W)
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{W}f32")


def broadcast(builder, value):
    """A 16-lane vector of ``value`` (a float32 or int32 IR value) in every lane."""
    vt = ir.VectorType(value.type, W)
    undef = ir.Constant(vt, ir.Undefined)
    lane0 = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(lane0, undef, ir.Constant(ir.VectorType(ir.IntType(32), W), [0] * W))


def based(builder, base, table, n, every=1):
    """float pointers base + table[i] for i < n, every ``every``-th i: ``base`` the address of a
    float32 array, ``table`` that of an int64 offset table (in elements)."""
    i64 = ir.IntType(64)
    start = builder.inttoptr(base, ir.FloatType().as_pointer())
    offsets = builder.inttoptr(table, i64.as_pointer())
    return [builder.gep(start, [builder.load(builder.gep(offsets, [ir.Constant(i64, i)]))])
            for i in range(0, n, every)]


def loop_head(builder, count, name):
    """Open a loop of ``count`` (an int64 IR value) turns: (entry, loop, done) blocks, the loop
    entered only where count > 0, the builder at the loop's head."""
    entry = builder.block
    loop = builder.function.append_basic_block(f"{name}_loop")
    done = builder.function.append_basic_block(f"{name}_done")
    builder.cbranch(builder.icmp_signed(">", count, ir.Constant(ir.IntType(64), 0)), loop, done)
    builder.position_at_end(loop)
    return entry, loop, done


def count_loop(builder, count, name, body):
    """Emit ``for j in range(count): body(j)`` (count an int64 IR value; body may open blocks of
    its own), leaving the builder after the loop."""
    i64 = ir.IntType(64)
    entry, loop, done = loop_head(builder, count, name)
    j = builder.phi(i64)
    j.add_incoming(ir.Constant(i64, 0), entry)
    body(j)
    j_next = builder.add(j, ir.Constant(i64, 1))
    j.add_incoming(j_next, builder.block)
    builder.cbranch(builder.icmp_signed("<", j_next, count), loop, done)
    builder.position_at_end(done)


def sum_loop(builder, count, n, step, name):
    """Emit ``for k in range(count)`` carrying n <16 x float> sums from zero, ``step(k, sums)``
    giving the next ones (built in the loop's one block); returns the final sums (zero where count
    <= 0), as phis at the head of the block after the loop."""
    i64, vt = ir.IntType(64), ir.VectorType(ir.FloatType(), W)
    zero = ir.Constant(vt, [0.0] * W)
    entry, loop, done = loop_head(builder, count, name)
    k = builder.phi(i64)
    acc = [builder.phi(vt) for _ in range(n)]
    new = step(k, acc)
    k1 = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(ir.Constant(i64, 0), entry)
    k.add_incoming(k1, loop)
    for phi, v in zip(acc, new):
        phi.add_incoming(zero, entry)
        phi.add_incoming(v, loop)
    builder.cbranch(builder.icmp_signed("<", k1, count), loop, done)
    builder.position_at_end(done)  # the phis first, as LLVM requires
    totals = []
    for v in new:
        total = builder.phi(vt)
        total.add_incoming(zero, entry)
        total.add_incoming(v, loop)
        totals.append(total)
    return totals


def store_sums(builder, ptrs, sums, beta):
    """Store each <16 x float> sum at its float pointer, added to what is there where beta != 0."""
    vt = ir.VectorType(ir.FloatType(), W)
    add_old = builder.icmp_signed("!=", beta, ir.Constant(ir.IntType(64), 0))
    for ptr, total in zip(ptrs, sums):
        ptr = builder.bitcast(ptr, vt.as_pointer())
        old = builder.load(ptr, align=4)
        builder.store(builder.select(add_old, builder.fadd(total, old), total), ptr, align=4)


def columns_of(builder, rows):
    """The columns of the matrix whose rows are ``rows`` (n <16 x float> vectors, n 8 or 16): 16
    <n x float> vectors, column j holding rows[i][j] in lane i. log2(n) rounds of two-vector
    shuffles, each merging groups of lanes (the columns' parts) of two vectors in turn."""
    n, undef = len(rows), ir.Constant(ir.VectorType(ir.FloatType(), W), ir.Undefined)
    level, width = [[(list(range(W)), v)] for v in rows], 1  # per set of rows: (columns, vector)
    while len(level) > 1:
        merged = []
        for a_set, b_set in zip(level[0::2], level[1::2]):
            out = []
            for (cols, a), (_, b) in zip(a_set, b_set):
                half = len(cols) // 2
                for part in (range(half), range(half, len(cols))):
                    mask = [o + g * width + i for g in part for o in (0, W) for i in range(width)]
                    out.append(([cols[g] for g in part], builder.shuffle_vector(a, b, ir.Constant(
                        ir.VectorType(ir.IntType(32), W), mask))))
            merged.append(out)
        level, width = merged, 2 * width
    columns = [None] * W
    for cols, v in level[0]:
        for g, j in enumerate(cols):
            columns[j] = v if n == W else builder.shuffle_vector(v, undef, ir.Constant(
                ir.VectorType(ir.IntType(32), n), list(range(g * n, g * n + n))))
    return columns


def store_columns(builder, c, ldc, sums, MR, NV, beta, nj):
    """Store an MR x NV*W block of sums (row r, vector j at sums[r*NV + j]) transposed: column j's
    MR values at c + j*ldc, consecutive, added to what is there where beta != 0, for j < nj."""
    i64 = ir.IntType(64)
    vt = ir.VectorType(ir.FloatType(), MR)
    add_old = builder.icmp_signed("!=", beta, ir.Constant(i64, 0))
    for jv in range(NV):
        for j, col in enumerate(columns_of(builder, [sums[r * NV + jv] for r in range(MR)])):
            f = jv * W + j
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, f), nj)):
                ptr = builder.bitcast(builder.gep(c, [builder.mul(ir.Constant(i64, f), ldc)]), vt.as_pointer())
                old = builder.load(ptr, align=4)
                builder.store(builder.select(add_old, builder.fadd(col, old), col), ptr, align=4)


def _make_block(MR, NV, b_rows=False, transposed=False, seg=0, apart=1):
    """The micro-kernel for an MR x NV*W block of C, as a numba intrinsic. With ``b_rows``, B's
    row k starts at b + boff[k] (an offset table, passed in place of ldb) instead of b + k*ldb.
    ``transposed``: C's rows are consecutive elements and its columns ldc apart (an (F, L) layout,
    positions as rows), the first nj columns stored (a tenth argument). ``seg``: A's rows come in
    runs of ``seg`` rows ``apart`` elements apart, only each run's first offset read from the row
    table (row[q*seg + t] = row[q*seg] + t*apart): MR/seg base pointers instead of MR, each row's
    broadcast one constant displacement from its run's."""

    def body(builder, args):
        a_base, row_ptr, col_ptr, b_base, ldb, c_base, ldc, K, beta = args[:9]
        f32, i64 = ir.FloatType(), ir.IntType(64)
        vt = ir.VectorType(f32, W)
        fma = vector_fma(builder)
        cols = builder.inttoptr(col_ptr, i64.as_pointer())
        b = builder.inttoptr(b_base, f32.as_pointer())
        c = builder.inttoptr(c_base, f32.as_pointer())
        if seg:
            heads = based(builder, a_base, row_ptr, MR, seg)
            arows = [builder.gep(heads[r // seg], [ir.Constant(i64, (r % seg) * apart)]) for r in range(MR)]
        else:
            arows = based(builder, a_base, row_ptr, MR)

        def step(k, acc):
            koff = builder.load(builder.gep(cols, [k]))
            if b_rows:
                boffs = builder.inttoptr(ldb, i64.as_pointer())
                bk = builder.gep(b, [builder.load(builder.gep(boffs, [k]))])
            else:
                bk = builder.gep(b, [builder.mul(k, ldb)])
            bv = [builder.load(builder.bitcast(builder.gep(bk, [ir.Constant(i64, j * W)]), vt.as_pointer()), align=4)
                  for j in range(NV)]
            new = []
            for r in range(MR):
                s = builder.load(builder.gep(arows[r], [koff]))
                sv = broadcast(builder, s)
                new.extend(builder.call(fma, [sv, bv[j], acc[r * NV + j]]) for j in range(NV))
            return new

        totals = sum_loop(builder, K, MR * NV, step, "block")
        if transposed:
            store_columns(builder, c, ldc, totals, MR, NV, beta, args[9])
            return
        ptrs = [builder.gep(builder.gep(c, [builder.mul(ir.Constant(i64, r), ldc)]), [ir.Constant(i64, j * W)])
                for r in range(MR) for j in range(NV)]
        store_sums(builder, ptrs, totals, beta)

    name = (f"cnnlab_igemm_block_{MR}x{NV * W}{'_rows' if b_rows else ''}{'_t' if transposed else ''}"
            f"{f'_runs{seg}x{apart}' if seg else ''}")
    codegen = outlined(name, body, 10 if transposed else 9)

    if transposed:
        def block(typingctx, a_base, row_ptr, col_ptr, b_base, ldb, c_base, ldc, K, beta, nj):
            """C[r, j] (+ C if beta) at c + r + j*ldc = sum_k A[row[r] + col[k]] * B[k, j] for r < MR,
            j < nj, all addresses int64 (offsets in elements): A, B and C float32, row and col int64."""
            return types.void(*([types.int64] * 10)), codegen
    else:
        def block(typingctx, a_base, row_ptr, col_ptr, b_base, ldb, c_base, ldc, K, beta):
            """C[r, 0:NV*W] (+ C if beta) = sum_k A[row[r] + col[k]] * B[k, 0:NV*W] for r < MR, all
            addresses int64 (offsets in elements): A, B and C float32, row and col int64."""
            return types.void(*([types.int64] * 9)), codegen

    return intrinsic(block)


_block = _make_block(MR, 2)
_block1 = _make_block(MR1, 1)
_dblock = _make_block(MR, 2, b_rows=True)
_dblock1 = _make_block(MR, 1, b_rows=True)  # dconv's last block of a row of at most 16 positions
_tblock = _make_block(MR, 2, transposed=True)  # C in (F, L) layout: the forward pass's output
_tblock1 = _make_block(MR1, 1, transposed=True)
# The narrow block on RUN_ROWS rows where they come in runs of RUN_LENGTH positions 1 or 2 elements
# apart (consecutive outputs of a row at stride 1 or 2): 16 sums in registers from 8 base pointers
# (16 pointers spilled; 8 rows kept the two FMA pipes' 4-cycle latency only just covered). Runs of
# 2 rather than 4: as fast (16 filters, one core: 183-185 against 173-181 GFLOP/s), and any even
# output width keeps every block in runs (64->64 g4 s2 on 28x28, rows of 14: 148-177 -> 186-194)
RUN_ROWS, RUN_LENGTH = 16, 2
# The forward pass skips the padding's taps where that saves at least this share of its products
# (skipped_share): the blocks' pieces and the reduction in tap order cost about 2% (64->64 3x3 on
# 7x7 maps, share 0.026: 0.977x); saving 0.065 (5x5 on 14x14) ran 1.05x, 0.16 (3x3x3 on 8^3) 1.10x
TAPS_MIN_SKIPPED = 0.05
# The forward pass runs igemm over at most this many positions of a chunk at a time, so that the
# block of the output that each reduction slice adds to stays in cache between slices (a multiple
# of RUN_ROWS): two cores, 32->32 3x3x3 on 16^3 at batch 2 1.05x, 64->64 1.02x, 2-D layers of
# up to 784 positions an image within 1%
FORWARD_ROWS = 2048
# no tap order (pack_panels), no tap limits (igemm)
NO_ORDER = np.zeros(0, np.int64)
NO_LIMITS = np.zeros((0, 4), np.int64)
NO_ORDER.flags.writeable = NO_LIMITS.flags.writeable = False
# igemm's blocks start every LIM_ROWS rows (MR, MR1 and RUN_ROWS are multiples of it): the rows'
# tap limits come per LIM_ROWS rows (position_limits)
LIM_ROWS = 8
assert MR % LIM_ROWS == 0 and MR1 % LIM_ROWS == 0 and RUN_ROWS % LIM_ROWS == 0 and FORWARD_ROWS % RUN_ROWS == 0
_rblock1_1 = _make_block(RUN_ROWS, 1, seg=RUN_LENGTH, apart=1)
_rblock1_2 = _make_block(RUN_ROWS, 1, seg=RUN_LENGTH, apart=2)
_rtblock1_1 = _make_block(RUN_ROWS, 1, transposed=True, seg=RUN_LENGTH, apart=1)
_rtblock1_2 = _make_block(RUN_ROWS, 1, transposed=True, seg=RUN_LENGTH, apart=2)


def masked_ops(builder):
    """(masked load, masked store) of <16 x float> at a float pointer (llvm.masked.*), and
    lanes_below(n): the mask of lanes < n (n an i32 IR value; no lane where n <= 0)."""
    f32, i1, i32 = ir.FloatType(), ir.IntType(1), ir.IntType(32)
    vt, it, mt = ir.VectorType(f32, W), ir.VectorType(i32, W), ir.VectorType(i1, W)
    pt = vt.as_pointer()
    mload = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [pt, i32, mt, vt]),
                                           "llvm.masked.load.v16f32.p0")
    mstore = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [vt, pt, i32, mt]),
                                            "llvm.masked.store.v16f32.p0")

    def lanes_below(n):
        return builder.icmp_signed("<", ir.Constant(it, list(range(W))), broadcast(builder, n))

    def load(ptr, mask):
        return builder.call(mload, [builder.bitcast(ptr, pt), ir.Constant(i32, 4), mask, ir.Constant(vt, [0.0] * W)])

    def store(v, ptr, mask):
        builder.call(mstore, [v, builder.bitcast(ptr, pt), ir.Constant(i32, 4), mask])

    return load, store, lanes_below


def vector_at(builder, ptr):
    """A float pointer as a <16 x float> pointer."""
    return builder.bitcast(ptr, ir.VectorType(ir.FloatType(), W).as_pointer())


def copy_codegen(context, builder, signature, args):
    """dst[0:n] = src[0:n] (float32 addresses): whole 16-float vectors, then one masked vector
    for the last n % 16, so a 28-float row is two vector moves rather than one and 12 scalars."""
    dst, src, n = args
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    load, store, lanes_below = masked_ops(builder)
    d, s = builder.inttoptr(dst, f32.as_pointer()), builder.inttoptr(src, f32.as_pointer())
    full = builder.sdiv(n, ir.Constant(i64, W))

    def whole(i):
        off = builder.mul(i, ir.Constant(i64, W))
        builder.store(builder.load(vector_at(builder, builder.gep(s, [off])), align=4),
                      vector_at(builder, builder.gep(d, [off])), align=4)

    count_loop(builder, full, "copy", whole)
    base = builder.mul(full, ir.Constant(i64, W))
    mask = lanes_below(builder.trunc(builder.sub(n, base), i32))
    store(load(builder.gep(s, [base]), mask), builder.gep(d, [base]), mask)
    return context.get_dummy_value()


@intrinsic
def copy_floats(typingctx, dst, src, n):
    """Copy n floats from address src to address dst (int64 addresses)."""
    return types.void(types.int64, types.int64, types.int64), copy_codegen


def prefetch_codegen(context, builder, signature, args):
    """llvm.prefetch (read, keep in all cache levels) of every 64-byte line of [addr, addr + n*4)."""
    addr, n = args
    i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
    fetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                           "llvm.prefetch.p0")
    lines = builder.sdiv(builder.add(builder.mul(n, ir.Constant(i64, 4)), ir.Constant(i64, 63)), ir.Constant(i64, 64))
    base = builder.inttoptr(addr, i8p)
    count_loop(builder, lines, "prefetch", lambda j: builder.call(
        fetch, [builder.gep(base, [builder.mul(j, ir.Constant(i64, 64))]), ir.Constant(i32, 0), ir.Constant(i32, 3),
                ir.Constant(i32, 1)]))
    return context.get_dummy_value()


@intrinsic
def prefetch(typingctx, addr, n):
    """Ask the cache for the n floats at address addr (an int64) ahead of their use: a plane's
    loads otherwise waited behind the previous plane's arithmetic (benchmarks/README.md,
    "Sixth session of issue 22")."""
    return types.void(types.int64, types.int64), prefetch_codegen


def tile_codegen(context, builder, signature, args):
    """dst[j*ldd + r] = src[r*lds + j] for r < 16, j < ncols (ncols <= 16), zeros for rows r >= nrows:
    a 16 x 16 tile transposed in registers (columns_of), each row of the result one vector store."""
    dst, ldd, src, lds, nrows, ncols = args
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    load, _, lanes_below = masked_ops(builder)
    d, s = builder.inttoptr(dst, f32.as_pointer()), builder.inttoptr(src, f32.as_pointer())
    mask = lanes_below(builder.trunc(ncols, i32))
    zero = ir.Constant(ir.VectorType(f32, W), [0.0] * W)
    last = builder.sub(nrows, ir.Constant(i64, 1))
    last = builder.select(builder.icmp_signed("<", last, ir.Constant(i64, 0)), ir.Constant(i64, 0), last)
    rows = []
    for r in range(W):  # rows past nrows read the last row (or the first) and are then zeroed
        rr = builder.select(builder.icmp_signed("<", ir.Constant(i64, r), last), ir.Constant(i64, r), last)
        v = load(builder.gep(s, [builder.mul(rr, lds)]), mask)
        rows.append(builder.select(builder.icmp_signed("<", ir.Constant(i64, r), nrows), v, zero))
    for j, col in enumerate(columns_of(builder, rows)):
        with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, j), ncols)):
            builder.store(col, vector_at(builder, builder.gep(d, [builder.mul(ir.Constant(i64, j), ldd)])), align=4)
    return context.get_dummy_value()


@intrinsic
def transpose_tile(typingctx, dst, ldd, src, lds, nrows, ncols):
    """See tile_codegen; float32 addresses, strides and counts in elements, all int64."""
    return types.void(*([types.int64] * 6)), tile_codegen


def plane_codegen(context, builder, signature, args):
    """dst (Hp x Wp, flat) = an H x W plane at src placed at row ``top``, column ``left``, zeros
    around it, a column of vectors at a time (each vector's masks made once): the rows above and
    below zero vectors; each row between, a masked load of its inputs (no lane reads outside them)
    and one store, masked for the last Wp % 16. Planes of fewer than PLANE_ROWS_MIN rows row by
    row instead, the same loads and stores."""
    dst, src, top, left, H, W_, Hp, Wp = args
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    load, store, lanes_below = masked_ops(builder)
    d, s = builder.inttoptr(dst, f32.as_pointer()), builder.inttoptr(src, f32.as_pointer())
    lanes = ir.Constant(ir.VectorType(i32, W), list(range(W)))
    zero = ir.Constant(ir.VectorType(f32, W), [0.0] * W)
    nv = builder.sdiv(builder.add(Wp, ir.Constant(i64, W - 1)), ir.Constant(i64, W))
    full = builder.sdiv(Wp, ir.Constant(i64, W))
    lo, hi = builder.trunc(left, i32), builder.trunc(builder.add(left, W_), i32)
    bottom = builder.add(top, H)

    def put(v, j0, value, at):  # vector v of a padded row (its first column j0) at ``at``
        with builder.if_else(builder.icmp_signed("<", v, full)) as (whole, part):
            with whole:
                builder.store(value, vector_at(builder, at), align=4)
            with part:
                store(value, at, lanes_below(builder.trunc(builder.sub(Wp, j0), i32)))

    def column(v):
        j0 = builder.mul(v, ir.Constant(i64, W))
        idx = builder.add(lanes, broadcast(builder, builder.trunc(j0, i32)))
        inside = builder.and_(builder.icmp_signed(">=", idx, broadcast(builder, lo)),
                              builder.icmp_signed("<", idx, broadcast(builder, hi)))
        src0 = builder.gep(s, [builder.sub(builder.sub(j0, left), builder.mul(top, W_))])  # row i: + i*W_
        dst0 = builder.gep(d, [j0])

        def row_put(i, value):
            put(v, j0, value, builder.gep(dst0, [builder.mul(i, Wp)]))

        count_loop(builder, top, "plane_top", lambda i: row_put(i, zero))
        count_loop(builder, H, "plane_in", lambda h: row_put(builder.add(h, top), load(
            builder.gep(src0, [builder.mul(builder.add(h, top), W_)]), inside)))
        count_loop(builder, builder.sub(Hp, bottom), "plane_bottom",
                   lambda i: row_put(builder.add(i, bottom), zero))

    def row(i):  # a padded row's vectors, their masks made here
        h = builder.sub(i, top)
        inside = builder.and_(builder.icmp_signed(">=", h, ir.Constant(i64, 0)), builder.icmp_signed("<", h, H))
        on = builder.trunc(broadcast(builder, builder.trunc(builder.select(inside, ir.Constant(i64, -1),
                                                                              ir.Constant(i64, 0)), i32)),
                           ir.VectorType(ir.IntType(1), W))
        src_row = builder.gep(s, [builder.sub(builder.mul(builder.select(inside, h, ir.Constant(i64, 0)), W_), left)])
        dst_row = builder.gep(d, [builder.mul(i, Wp)])

        def vec(v):
            j0 = builder.mul(v, ir.Constant(i64, W))
            idx = builder.add(lanes, broadcast(builder, builder.trunc(j0, i32)))
            mask = builder.and_(builder.and_(builder.icmp_signed(">=", idx, broadcast(builder, lo)),
                                             builder.icmp_signed("<", idx, broadcast(builder, hi))), on)
            put(v, j0, load(builder.gep(src_row, [j0]), mask), builder.gep(dst_row, [j0]))

        count_loop(builder, nv, "plane_row_vec", vec)

    # a plane of few rows (a 1-D signal's one) row by row: a column of vectors set up three loops
    # for one store (16 signals of 1 x 1030: 2.4 us a column at a time, 1.5-2.0 row by row)
    with builder.if_else(builder.icmp_signed("<", Hp, ir.Constant(i64, PLANE_ROWS_MIN))) as (few, many):
        with few:
            count_loop(builder, Hp, "plane_row", row)
        with many:
            count_loop(builder, nv, "plane_column", column)
    return context.get_dummy_value()


# planes of fewer padded rows than this are placed row by row (place_plane)
PLANE_ROWS_MIN = 4


@intrinsic
def place_plane(typingctx, dst, src, top, left, H, W_, Hp, Wp):
    """See plane_codegen; float32 addresses, the rest counts in elements, all int64."""
    return types.void(*([types.int64] * 8)), plane_codegen


def pairs_codegen(split):
    """Codegen of split2 (split: each 32 floats of the source -> their 16 even ones into the
    first target, the 16 odd ones into the second) or of zip2 (the reverse: 16 floats of each
    source interleaved into 32 of the target): whole blocks of 32, then one masked block."""

    def codegen(context, builder, signature, args):
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        it = ir.VectorType(i32, W)
        ptrs = [builder.inttoptr(v, f32.as_pointer()) for v in args[:3]]
        even, odd, whole = ptrs if split else ptrs[1:] + ptrs[:1]  # (d0, d1, src) or (dst, s0, s1)
        n = args[3]
        # lanes of the (first, second) 16 floats of a 32-float run from or to the even and odd halves
        picks = (ir.Constant(it, [2 * j for j in range(W)]), ir.Constant(it, [2 * j + 1 for j in range(W)]))
        zips = (ir.Constant(it, [v for j in range(W // 2) for v in (j, W + j)]),
                ir.Constant(it, [v for j in range(W // 2, W) for v in (j, W + j)]))
        load, store, lanes_below = masked_ops(builder)

        def block(i, get, put):
            """The i-th block of 32: get(ptr, which) loads a vector, put(value, ptr, which) stores one,
            ``which`` 0 or 1 naming its half (of the run, or even / odd)."""
            o32, o16 = builder.mul(i, ir.Constant(i64, 2 * W)), builder.mul(i, ir.Constant(i64, W))
            runs = (builder.gep(whole, [o32]), builder.gep(whole, [builder.add(o32, ir.Constant(i64, W))]))
            halves = (builder.gep(even, [o16]), builder.gep(odd, [o16]))
            if split:
                v0, v1 = get(runs[0], 0), get(runs[1], 1)
                for h in range(2):
                    put(builder.shuffle_vector(v0, v1, picks[h]), halves[h], h)
            else:
                v0, v1 = get(halves[0], 0), get(halves[1], 1)
                for h in range(2):
                    put(builder.shuffle_vector(v0, v1, zips[h]), runs[h], h)

        full = builder.sdiv(n, ir.Constant(i64, 2 * W))
        count_loop(builder, full, "pairs", lambda i: block(
            i, lambda p, h: builder.load(vector_at(builder, p), align=4),
            lambda v, p, h: builder.store(v, vector_at(builder, p), align=4)))
        rest = builder.trunc(builder.sub(n, builder.mul(full, ir.Constant(i64, 2 * W))), i32)
        one = ir.Constant(i32, 1)
        run = (lanes_below(rest), lanes_below(builder.sub(rest, ir.Constant(i32, W))))
        half = (lanes_below(builder.ashr(builder.add(rest, one), one)), lanes_below(builder.ashr(rest, one)))
        loads, stores = (run, half) if split else (half, run)
        block(full, lambda p, h: load(p, loads[h]), lambda v, p, h: store(v, p, stores[h]))
        return context.get_dummy_value()

    return codegen


@intrinsic
def split2(typingctx, d0, d1, src, n):
    """d0[j] = src[2j] for 2j < n, d1[j] = src[2j + 1] for 2j + 1 < n (int64 float32 addresses)."""
    return types.void(types.int64, types.int64, types.int64, types.int64), pairs_codegen(True)


@intrinsic
def zip2(typingctx, dst, s0, s1, n):
    """dst[2j] = s0[j] for 2j < n, dst[2j + 1] = s1[j] for 2j + 1 < n (int64 float32 addresses)."""
    return types.void(types.int64, types.int64, types.int64, types.int64), pairs_codegen(False)


_OPTS = dict(cache=True, nogil=True, boundscheck=False)


@njit(inline="always", **_OPTS)
def _kernel(code, a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta, nj):
    """Run micro-kernel ``code``: 0 the wide block, 1 the narrow one, 4 and 5 the narrow one on
    runs of rows 1 or 2 apart; code + 2 its transposed form (C's columns ldc apart, nj stored)."""
    if code == 0:
        _block(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta)
    elif code == 1:
        _block1(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta)
    elif code == 2:
        _tblock(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta, nj)
    elif code == 3:
        _tblock1(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta, nj)
    elif code == 4:
        _rblock1_1(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta)
    elif code == 5:
        _rblock1_2(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta)
    elif code == 6:
        _rtblock1_1(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta, nj)
    else:
        _rtblock1_2(a_addr, row_addr, col_addr, b_addr, pw, dst, ldc, K, beta, nj)


@njit(**_OPTS)
def igemm(a, a0, row, col, bp, c, c0, crow, ccs, N, accumulate, lims=None, Cg=1, KH=1, KW=1):
    """C[i, j] (+)= sum_k a[a0 + row[i] + col[k]] * B[k, j] for i < len(row), j < N.

    ``bp`` (panels, K, NR or W): B in zero-padded panels (pack_columns). C[i, j] is
    c[c0 + crow[i] + j * ccs]; where ccs == 1, the block is whole (all its rows and a full panel)
    and its rows lie at a constant stride, the micro-kernel writes straight into c; where ccs != 1
    and the block's rows are consecutive elements (positions of one image in an (n, F, L) output),
    the transposed micro-kernel writes its columns straight into c (store_columns); elsewhere
    through a small block that is then copied. A last panel of at most 16 columns runs the narrow
    block, on RUN_ROWS rows where they come in runs of RUN_LENGTH rows 1 or 2 elements apart,
    else on MR1. The reduction runs in equal slices of at most KC_MAX. (Arrays stay in this one
    function: passed to a helper per block, their reference counts cost more than a 16-step block.)

    ``lims`` (a convolution's forward pass, its reduction over Cg channels of KD x KH x KW taps in
    tap order, tap_order): per LIM_ROWS rows, the kernel offsets (d0, d1, h0, h1) whose taps reach
    the input rather than the padding (position_limits). The slices are then groups of channels
    (tap_slices), taps outermost within each; a block sums only over the runs of taps d0 <= d <
    d1, h0 <= h < h1 of each: the padding's zeros are skipped rather than multiplied.
    """
    M, Ktot = row.shape[0], col.shape[0]
    if M == 0:
        return
    pw = bp.shape[2]  # the panels' width: NR, or W when B has at most W columns
    scratch = np.zeros(RUN_ROWS * NR, np.float32)
    rowpad = np.empty(MR, np.int64)
    a_addr = a.ctypes.data + a0 * 4
    c_addr = c.ctypes.data
    skip = lims is not None and lims.shape[0] > 0
    taps = Ktot // Cg
    ns = tap_slices(Cg, taps) if skip else slices(Ktot)
    for sl in range(ns):  # a long reduction in slices of B that stay in cache
        if skip:  # channels cs..cs + cn - 1, each of their taps
            cs = Cg * sl // ns
            cn = Cg * (sl + 1) // ns - cs
            k0, K = cs * taps, cn * taps
        else:
            k0 = slice_start(Ktot, sl)
            K = slice_start(Ktot, sl + 1) - k0
            cn = 0
        col_addr = col.ctypes.data + k0 * 8
        for jb in range(bp.shape[0]):
            j0 = jb * NR
            nj = min(NR, N - j0)
            full = NR if nj > W else W
            b_addr = bp.ctypes.data + (jb * Ktot + k0) * pw * 4
            i0 = 0
            while i0 < M:
                code, mr = 0, MR
                if nj <= W:  # a last panel of at most 16 columns: the narrow block
                    code, mr = 1, MR1
                    if M - i0 >= RUN_ROWS:  # rows in runs: the run block
                        step = row[i0 + 1] - row[i0]
                        runs = step == 1 or step == 2
                        for q in range(0, RUN_ROWS, RUN_LENGTH):
                            for t in range(1, RUN_LENGTH):
                                if runs and row[i0 + q + t] != row[i0 + q] + t * step:
                                    runs = False
                        if runs:
                            code, mr = 3 + step, RUN_ROWS
                ni = min(mr, M - i0)
                if ni == mr:
                    row_addr = row.ctypes.data + i0 * 8
                else:  # the last rows: repeat the last offset, so every read stays inside A
                    for r in range(mr):
                        rowpad[r] = row[min(i0 + r, M - 1)]
                    row_addr = rowpad.ctypes.data
                # the block's reduction in this slice: pieces [lo + p*step, hi + p*step) (offsets
                # from k0) for p < pieces, its sums from zero in the first slice's first piece
                lo, hi, step, pieces = 0, K, 0, 1
                if skip:
                    q0, q1 = i0 // LIM_ROWS, (i0 + ni - 1) // LIM_ROWS
                    d0, d1, h0, h1 = lims[q0, 0], lims[q0, 1], lims[q0, 2], lims[q0, 3]
                    for q in range(q0 + 1, q1 + 1):
                        d0, d1 = min(d0, lims[q, 0]), max(d1, lims[q, 1])
                        h0, h1 = min(h0, lims[q, 2]), max(h1, lims[q, 3])
                    if d0 < d1 and h0 < h1:  # (none: the whole reduction, the padding's zeros)
                        run = cn * KW  # one kernel row's taps of the slice's channels
                        if h0 == 0 and h1 == KH:
                            lo, hi = d0 * KH * run, d1 * KH * run
                        else:
                            lo, hi, step, pieces = (d0 * KH + h0) * run, (d0 * KH + h1) * run, KH * run, d1 - d0
                # where the block's sums go, once for its pieces: C's columns ccs apart, straight
                # (transposed) where the rows are consecutive (t >= 0); C's rows at a constant
                # stride ldc where whole (straight); else through the scratch block
                t = -1
                if ccs != 1 and ni == mr:
                    t = crow[i0]
                    for r in range(1, mr):
                        if crow[i0 + r] != t + r:
                            t = -1
                            break
                straight = t < 0 and ccs == 1 and ni == mr and nj == full
                ldc = crow[i0 + 1] - crow[i0] if straight else 0
                if straight:
                    for r in range(2, mr):
                        if crow[i0 + r] - crow[i0 + r - 1] != ldc:
                            straight = False
                kp = hi - lo
                for p in range(pieces):
                    p0 = lo + p * step
                    pb = 1 if (accumulate or sl > 0 or p > 0) else 0
                    pcol = col_addr + p0 * 8
                    pbk = b_addr + p0 * pw * 4
                    if t >= 0:
                        _kernel(code + 2, a_addr, row_addr, pcol, pbk, pw, c_addr + (c0 + t + j0 * ccs) * 4, ccs, kp, pb,
                                nj)
                    elif straight:
                        _kernel(code, a_addr, row_addr, pcol, pbk, pw, c_addr + (c0 + crow[i0] + j0) * 4, ldc, kp, pb,
                                nj)
                    else:
                        _kernel(code, a_addr, row_addr, pcol, pbk, pw, scratch.ctypes.data, NR, kp, 0, nj)
                        for r in range(ni):
                            base = c0 + crow[i0 + r] + j0 * ccs
                            if pb:
                                for j in range(nj):
                                    c[base + j * ccs] += scratch[r * NR + j]
                            else:
                                for j in range(nj):
                                    c[base + j * ccs] = scratch[r * NR + j]
                i0 += mr


@njit(**_OPTS)
def dconv(w, x, boff, out, n, F, P, xstride, ostride):
    """Direct stride-1 convolution with positions along the vectors:
    out[i*ostride + f*P + p] = sum_k w[f*K + k] * x[i*xstride + p + boff[k]], i < n, f < F, p < P.

    Position p runs over the padded width (p = oh*Wp + ow, the last Wp - OW of each row unused),
    so that the 32 inputs a block needs for one field element are contiguous; x must hold 31
    elements past the last image's last field (the caller's slack)."""
    K = boff.shape[0]
    if n == 0 or F == 0 or P == 0:
        return
    rows = np.empty(MR, np.int64)
    cols = np.arange(K).astype(np.int64)
    scratch = np.zeros(MR * NR, np.float32)
    # addresses of the arguments only: a local array's address outlives the array once numba has
    # released it after its last use (cols is read through .ctypes.data at every call below)
    w_addr, boff_addr = w.ctypes.data, boff.ctypes.data
    for f0 in range(0, F, MR):
        nf = min(MR, F - f0)
        for r in range(MR):  # rows past the last filter repeat it (computed, not stored)
            rows[r] = min(f0 + r, F - 1) * K
        for i in range(n):
            xb = x.ctypes.data + i * xstride * 4
            ob = i * ostride + f0 * P
            for p0 in range(0, P, NR):
                npos = min(NR, P - p0)
                half = npos <= W  # a last block of at most 16 positions: one vector wide
                full = nf == MR and npos == (W if half else NR)
                dst, ldd = (out.ctypes.data + (ob + p0) * 4, P) if full else (scratch.ctypes.data, NR)
                for sl in range(slices(K)):  # in slices, as igemm: float32 rounding near BLAS's
                    k0 = slice_start(K, sl)
                    kn = slice_start(K, sl + 1) - k0
                    if half:
                        _dblock1(w_addr, rows.ctypes.data, cols.ctypes.data + k0 * 8, xb + p0 * 4, boff_addr + k0 * 8,
                                 dst, ldd, kn, 1 if k0 > 0 else 0)
                    else:
                        _dblock(w_addr, rows.ctypes.data, cols.ctypes.data + k0 * 8, xb + p0 * 4, boff_addr + k0 * 8,
                                dst, ldd, kn, 1 if k0 > 0 else 0)
                if not full:
                    for r in range(nf):
                        for j in range(npos):
                            out[ob + r * P + p0 + j] = scratch[r * NR + j]


# The weight gradient's direct block (_wblock): MRW filters x NKW field elements, each sum kept
# as 16 per-lane partial sums over positions, SLICE steps of 16 positions per pass into the
# partial-sum buffer (512 positions: float32 rounding near igemm's reduction slices). Measured on one
# core (16 images): 4 x 4 ran at 136-178 GF/s; 4 x 5, 3 x 6 120-139; 4 x 6, 5 x 4, 8 x 2 and
# 2 x 8 at 70-114 (more sums than the 32 vector registers hold, or too many loads per product);
# SLICE 16/64/128 were 2-15% slower than 32 (benchmarks/README.md, "Direct weight gradient")
MRW, NKW = 4, 4
SLICE = 32


def make_wblock(MR, NK):
    """The weight gradient's micro-kernel, as a numba intrinsic: for r < MR, j < NK,
    P[r, j, 0:16] (+ P if beta) = sum_s G[gpos[s] + grow[r] : +16] * X[xpos[s] + xcol[j] : +16],
    positions along the vectors, MR*NK accumulators in registers; the 16 lanes are summed later."""

    def body(builder, args):
        g_base, grow_ptr, x_base, xcol_ptr, gpos_ptr, xpos_ptr, S, p_base, beta = args
        f32, i64 = ir.FloatType(), ir.IntType(64)
        vt = ir.VectorType(f32, W)
        fma = vector_fma(builder)
        gpos = builder.inttoptr(gpos_ptr, i64.as_pointer())
        xpos = builder.inttoptr(xpos_ptr, i64.as_pointer())
        part = builder.inttoptr(p_base, f32.as_pointer())
        grows = based(builder, g_base, grow_ptr, MR)
        xcols = based(builder, x_base, xcol_ptr, NK)

        def step(k, acc):
            go = builder.load(builder.gep(gpos, [k]))
            xo = builder.load(builder.gep(xpos, [k]))
            gv = [builder.load(builder.bitcast(builder.gep(grows[r], [go]), vt.as_pointer()), align=4)
                  for r in range(MR)]
            new = [None] * (MR * NK)
            for j in range(NK):
                xv = builder.load(builder.bitcast(builder.gep(xcols[j], [xo]), vt.as_pointer()), align=4)
                for r in range(MR):
                    new[r * NK + j] = builder.call(fma, [gv[r], xv, acc[r * NK + j]])
            return new

        totals = sum_loop(builder, S, MR * NK, step, "wblock")
        store_sums(builder, [builder.gep(part, [ir.Constant(i64, i * W)]) for i in range(MR * NK)], totals, beta)

    codegen = outlined(f"cnnlab_igemm_wblock_{MR}x{NK}", body)

    def wblock(typingctx, g_base, grow_ptr, x_base, xcol_ptr, gpos_ptr, xpos_ptr, S, p_base, beta):
        """See make_wblock; every argument an int64 (addresses, offsets in elements, counts)."""
        return types.void(*([types.int64] * 9)), codegen

    return intrinsic(wblock)


_wblock = make_wblock(MRW, NKW)


@njit(**_OPTS)
def wgrad(g, g0, gstride, ldg, F, x, x0, xstride, n, xoff, out, accumulate):
    """The weight gradient with positions along the vectors, for images i < n:
    out[f, k] (+)= sum_i sum_p g[g0 + i*gstride + f*ldg + p] * x[x0 + i*xstride + xoff[k] + p]
    over p < ldg, a multiple of 16: g's rows are positions padded with zeros to whole vectors (and
    zero at any position that is not an output), so x may hold anything there; x must be readable
    up to the last image's xoff.max() + ldg."""
    K = xoff.shape[0]
    if F == 0 or K == 0:
        return
    if n == 0:  # no products: zero, or nothing to add
        if not accumulate:
            out[:, :] = 0.0
        return
    T = ldg // W
    S = n * T
    gpos = np.empty(S, np.int64)
    xpos = np.empty(S, np.int64)
    for i in range(n):
        for t in range(T):
            gpos[i * T + t] = i * gstride + t * W
            xpos[i * T + t] = i * xstride + t * W
    nfb, nkb = (F + MRW - 1) // MRW, (K + NKW - 1) // NKW
    part = np.zeros(nfb * nkb * MRW * NKW * W, np.float32)
    grow = np.empty(nfb * MRW, np.int64)
    for r in range(nfb * MRW):  # rows past the last filter repeat it (computed, not kept)
        grow[r] = min(r, F - 1) * ldg
    xcol = np.empty(nkb * NKW, np.int64)
    for j in range(nkb * NKW):
        xcol[j] = xoff[min(j, K - 1)]
    g_addr, x_addr = g.ctypes.data + g0 * 4, x.ctypes.data + x0 * 4
    for s0 in range(0, S, SLICE):  # a slice of steps: its part of g and x stays in cache
        ns = min(SLICE, S - s0)
        beta = 1 if s0 > 0 else 0
        for fb in range(nfb):
            for kb in range(nkb):
                _wblock(g_addr, grow.ctypes.data + fb * MRW * 8, x_addr, xcol.ctypes.data + kb * NKW * 8,
                        gpos.ctypes.data + s0 * 8, xpos.ctypes.data + s0 * 8, ns,
                        part.ctypes.data + (fb * nkb + kb) * MRW * NKW * W * 4, beta)
    for f in range(F):
        fb, r = f // MRW, f % MRW
        for k in range(K):
            kb, j = k // NKW, k % NKW
            base = ((fb * nkb + kb) * MRW * NKW + r * NKW + j) * W
            total = np.float32(0.0)
            for lane in range(W):
                total += part[base + lane]
            if accumulate:
                out[f, k] += total
            else:
                out[f, k] = total


@njit(**_OPTS)
def _u(i):
    """An index as unsigned: numba then drops its negative-index wrap-around, and copy loops
    vectorise."""
    return np.uint64(i)


@njit(**_OPTS)
def place_volumes(x, out, Dp, Hp, Wp, front, top, left, vol, slack):
    """x (n, C, D, H, W) float32, contiguous, into out, flat, as volumes of ``vol`` elements
    (>= Dp*Hp*Wp) read as Dp x Hp x Wp: x's volume at depth ``front``, row ``top``, column
    ``left`` (it must fit), zeros around it and past Dp*Hp*Wp, then ``slack`` zeros; every element
    written once, each plane a padded row at a time in whole vectors (place_plane), the next volume
    prefetched, without the GIL."""
    n, C, D, H, W_ = x.shape
    plane, size = Hp * Wp, D * H * W_
    x_addr, o_addr = x.ctypes.data, out.ctypes.data  # arguments: alive for the whole call
    for p in range(n * C):
        ob, ib = p * vol, p * size
        if p + 1 < n * C:
            prefetch(x_addr + (ib + size) * 4, size)
        for i in range(front * plane):
            out[_u(ob + i)] = 0.0
        for d in range(D):
            sb = ob + (front + d) * plane
            place_plane(o_addr + sb * 4, x_addr + (ib + d * H * W_) * 4, top, left, H, W_, Hp, Wp)
        for i in range((front + D) * plane, vol):
            out[_u(ob + i)] = 0.0
    for i in range(n * C * vol, n * C * vol + slack):
        out[_u(i)] = 0.0


@njit(**_OPTS)
def as_volumes(x):
    """x (n, C, H, W) or (n, C, D, H, W), contiguous, as (n, C, D, H, W): D = 1 for an image."""
    D = 1 if x.ndim == 4 else x.shape[2]
    return x.reshape((x.shape[0], x.shape[1], D, x.shape[-2], x.shape[-1]))


@njit(**_OPTS)
def place_planes(x, out, Hp, Wp, top, left, plane, slack):
    """place_volumes of images x (n, C, H, W): planes of ``plane`` elements read as Hp x Wp."""
    place_volumes(as_volumes(x), out, 1, Hp, Wp, 0, top, left, plane, slack)


@njit(**_OPTS)
def crop_rows(buf, out, rows, Wp, OW):
    """out (flat) = the first OW of every Wp-wide row of buf (flat, ``rows`` rows): the direct
    forward pass's outputs without the padded width's extra columns, without the GIL."""
    of = out.reshape(-1)
    for r in range(rows):
        for q in range(OW):
            of[_u(r * OW + q)] = buf[_u(r * Wp + q)]


@njit(**_OPTS)
def scatter_phase(buf, dx, Hq, Wq, r0, s0, c0, s1, i0, j0, nh, nw):
    """dx[p, r0 + t*s0, c0 + u*s1] = buf[p, i0 + t, j0 + u] for t < nh, u < nw over the planes p
    of dx (n, C, H, W) and of buf (flat, planes of Hq x Wq): one phase of a strided layer's input
    gradient into its rows and columns, without the GIL."""
    n, C, H, W_ = dx.shape
    df = dx.reshape(-1)
    for p in range(n * C):
        for t in range(nh):
            ob, ib = p * H * W_ + (r0 + t * s0) * W_ + c0, p * Hq * Wq + (i0 + t) * Wq + j0
            for u in range(nw):
                df[_u(ob + u * s1)] = buf[_u(ib + u)]


@njit(**_OPTS)
def zip_phases(even, odd, dx, Wq, r0, s0, je, jo, nh):
    """dx[p, r0 + t*s0, 2u] = even[p, t, je + u] and dx[p, r0 + t*s0, 2u + 1] = odd[p, t, jo + u]
    for t < nh over the planes p of dx (n, C, H, W) and of even and odd (flat, planes of nh x Wq):
    a stride-2 layer's two column phases of one row phase interleaved into dx's rows by vector
    shuffles (zip2), without the GIL."""
    n, C, H, W_ = dx.shape
    e_addr, o_addr, d_addr = even.ctypes.data, odd.ctypes.data, dx.ctypes.data  # arguments
    for p in range(n * C):
        for t in range(nh):
            ib = p * nh * Wq + t * Wq
            zip2(d_addr + (p * H * W_ + (r0 + t * s0) * W_) * 4, e_addr + (ib + je) * 4, o_addr + (ib + jo) * 4, W_)


def pack_columns(b):
    """(K, N) -> (ceil(N / NR), K, NR) float32 panels of NR columns, the last one zero-padded; a B
    of at most W columns is one panel of W (the narrow block reads no more)."""
    K, N = b.shape
    width = W if N <= W else NR
    nb = -(-N // width)
    full = N // width
    out = np.empty((nb, K, width), np.float32)
    if full:
        out[:full] = b[:, :full * width].reshape(K, full, width).transpose(1, 0, 2)
    if N % width:
        out[full, :, :N % width] = b[:, full * width:]
        out[full, :, N % width:] = 0
    return out


@njit(**_OPTS)
def pack_panels(wf, G, out, p0, p1, order):
    """Panels p0..p1 - 1 (counted over the groups, G * panels in all) of the forward pass's weights
    ``out`` (G, panels, Cg*K, width) from wf (F, Cg*K) (C-contiguous float32): panel p of group g
    holds wf[g*Fg + p*width + j, k] at [g, p, k, j] (at [g, p, order[k], j] where ``order`` is not
    empty: tap_order), zeros past the group's filters; 16 filters' rows of 16 elements transposed
    in registers at a time (transpose_tile; in order, through a tile whose rows are then copied).
    Element by element, each filter's row read a row apart, 1.18 MB of weights took 0.067 ms on
    one core."""
    F, CK = wf.shape
    nb, width = out.shape[1], out.shape[3]
    Fg = F // G
    w_addr, o_addr = wf.ctypes.data, out.ctypes.data
    tile = np.empty(W * W, np.float32)
    t_addr = tile.ctypes.data
    for gp in range(p0, p1):
        g, p = gp // nb, gp % nb
        for h in range(width // W):
            f = p * width + h * W  # the tile's first filter in its group
            nrows = max(0, min(W, Fg - f))
            src = w_addr + ((g * Fg + min(f, Fg - 1)) * CK) * 4
            for k0 in range(0, CK, W):
                nk = min(W, CK - k0)
                if order.shape[0] == 0:
                    transpose_tile(o_addr + ((gp * CK + k0) * width + h * W) * 4, width, src + k0 * 4, CK, nrows, nk)
                    continue
                transpose_tile(t_addr, W, src + k0 * 4, CK, nrows, nk)
                for r in range(nk):
                    copy_floats(o_addr + ((gp * CK + order[k0 + r]) * width + h * W) * 4, t_addr + r * W * 4, W)


@njit(**_OPTS)
def pack_back_rows(w, G, out, r0, r1):
    """Rows r0..r1 - 1 (filters, counted over the groups) of the col2im product's weights ``out``
    (G, panels, Fg, width) from w (F, Cg, K) (C-contiguous float32): pack_columns of each group's
    (Fg, K*Cg) rows in (tap, channel) order, w[g*Fg + f, c, t] at column t*Cg + c. Each filter's
    (Cg, K) block transposed into a row in (tap, channel) order, 16 channels by up to 16 taps at a
    time in registers (transpose_tile; a last tile of fewer channels first, its zeros past them
    then overwritten); the rows of PACK_BACK_ROWS filters then copied into the panels, a panel's
    rows side by side."""
    F, Cg, K = w.shape
    Fg = F // G
    nb, width = out.shape[1], out.shape[3]
    if Cg % width == 0 and K <= W:  # every tile's taps straight into their panels (pack_back_tiles)
        pack_back_tiles(w, G, out, r0, r1)
        return
    CK, span = Cg * K, nb * width + W
    rows = np.zeros(PACK_BACK_ROWS * span, np.float32)  # zeros past K*Cg: the last panel's padding
    r_addr, w_addr, o_addr = rows.ctypes.data, w.ctypes.data, out.ctypes.data
    last = (Cg - 1) // W * W
    for b0 in range(r0, r1, PACK_BACK_ROWS):
        b1 = min(r1, b0 + PACK_BACK_ROWS)
        for r in range(b0, b1):
            at = r_addr + (r - b0) * span * 4
            for ci in range(-(-Cg // W)):
                c0 = last - ci * W  # the last tile first
                for t0 in range(0, K, W):
                    transpose_tile(at + (t0 * Cg + c0) * 4, Cg, w_addr + ((r * Cg + c0) * K + t0) * 4, K,
                                   min(W, Cg - c0), min(W, K - t0))
            for i in range(CK, nb * width):
                rows[(r - b0) * span + i] = 0.0
        for p in range(nb):
            for r in range(b0, b1):
                g, f = r // Fg, r % Fg
                copy_floats(o_addr + (((g * nb + p) * Fg + f) * width) * 4, r_addr + ((r - b0) * span + p * width) * 4,
                            width)


@njit(**_OPTS)
def pack_back_tiles(w, G, out, r0, r1):
    """pack_back_rows where each group's channels fill whole panels (Cg a multiple of their width)
    and the kernel has at most 16 taps: channel c, tap t of a filter lands in column t*Cg + c, so
    a tile of 16 channels by its K taps, transposed in registers, is K rows of 16 one tap (Cg/width
    panels) apart; two tiles fill a panel's row. Channels outermost, each panel row written whole
    and once: through a block of transposed rows, 1.2 MB of weights took 89-95 us on one core, 4.7
    MB 383-952; this way 45 and 177 (benchmarks/README.md, "Thirteenth session of issue 22")."""
    F, Cg, K = w.shape
    Fg = F // G
    nb, width = out.shape[1], out.shape[3]
    ldd = (Cg // width) * Fg * width  # from one tap's row to the next's: Cg/width panels on
    w_addr, o_addr = w.ctypes.data, out.ctypes.data
    for c1 in range(0, Cg, width):
        for r in range(r0, r1):
            g, f = r // Fg, r % Fg
            for c0 in range(c1, c1 + width, W):
                dst = o_addr + (((g * nb + c0 // width) * Fg + f) * width + c0 % width) * 4
                transpose_tile(dst, ldd, w_addr + ((r * Cg + c0) * K) * 4, K, W, K)


# filters whose rows pack_back_rows transposes before copying them into the panels
PACK_BACK_ROWS = 16


# Weights of at least this many bytes are packed on all the cores (pack_filters): a 512->512 3x3
# layer's 9.4 MB took 1.2 ms on one
PACK_SPLIT_BYTES = 1 << 20


def inline(fill, source, G, out, count, *order):
    """fill(source, G, out, 0, count, *order) on this thread: pack_filters' ``over`` where no other
    is given."""
    fill(source, G, out, 0, count, *order)


# The packing functions as compiled jobs (kernels.over_panels on all the cores): slots the chunk
# table of (start, stop) ranges, the source's address and three sizes (the third 1 for a 2-D
# source), G, the output's address and four sizes, then the tap order's address and length
# (pack_panels, flipped_panels)
@njit(**_OPTS)
def _fill_io(a, i):
    t = jobs.slot(a, 0)
    out = carray(jobs.f32(jobs.slot(a, 6)), (jobs.slot(a, 7), jobs.slot(a, 8), jobs.slot(a, 9), jobs.slot(a, 10)))
    return jobs.slot(t, 2 * i), jobs.slot(t, 2 * i + 1), jobs.slot(a, 5), out


@jobs.job
def _pack_panels_job(a, i):
    """pack_panels over chunk i's panels."""
    p0, p1, G, out = _fill_io(a, i)
    order = carray(jobs.i64(jobs.slot(a, 11)), (jobs.slot(a, 12),))
    pack_panels(carray(jobs.f32(jobs.slot(a, 1)), (jobs.slot(a, 2), jobs.slot(a, 3))), G, out, p0, p1, order)


@jobs.job
def _flipped_panels_job(a, i):
    """flipped_panels over chunk i's panels."""
    p0, p1, G, out = _fill_io(a, i)
    w = carray(jobs.f32(jobs.slot(a, 1)), (jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 4)))
    flipped_panels(w, G, out, p0, p1, carray(jobs.i64(jobs.slot(a, 11)), (jobs.slot(a, 12),)))


@jobs.job
def _pack_back_rows_job(a, i):
    """pack_back_rows over chunk i's filters."""
    r0, r1, G, out = _fill_io(a, i)
    w = carray(jobs.f32(jobs.slot(a, 1)), (jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 4)))
    pack_back_rows(w, G, out, r0, r1)


def fill_job(fill, source, G, out, ranges, *order):
    """fill(source, G, out, start, stop, *order) (pack_panels or flipped_panels with their tap
    order, pack_back_rows; source and out C-contiguous float32) over ``ranges`` as a compiled job
    (kernels/jobs.py's Job): where it ran as Python chunks, 1.2 MB of weights took 61-71 us to
    pack on two cores against 38 on one."""
    fn = {pack_panels: _pack_panels_job, flipped_panels: _flipped_panels_job, pack_back_rows: _pack_back_rows_job}[fill]
    table = jobs.table(ranges)
    dims = tuple(source.shape) + (1,) * (3 - source.ndim)
    args = [table, source, *dims, G, out, *out.shape] + [x for o in order for x in (o, o.shape[0])]
    return jobs.Job(fn.address, args, len(table), (table, source, out, *order))


def pack_filters(wf, G, over=inline, order=NO_ORDER):
    """The forward pass's weights (G, panels, Cg*K, width): pack_columns of each group's transposed
    rows wf[g*Fg:(g + 1)*Fg].T (wf (F, Cg*K) C-contiguous float32) in one pass (pack_panels), their
    rows in ``order`` where given (tap_order); ``over(fill, wf, G, out, panels, order)`` runs
    fill(wf, G, out, p0, p1, order) over the panels
    (kernels.over_panels: on all the cores from PACK_SPLIT_BYTES of weights). Transposed and
    packed by NumPy (a transposed copy, the panels' copy, a stack) 295K weights took 0.34 ms, as
    long as a chunk's products of a 128->256 layer on 8x8 maps (benchmarks/README.md, "Ninth
    session of issue 22")."""
    return _panels(pack_panels, wf, G, wf.shape[0] // G, wf.shape[1], over, order)


def pack_back(w, G, over=inline):
    """The col2im product's weights per group, (panels, Fg, width) each: pack_columns of the
    group's rows of w (F, Cg, *kernel) moved to (kh, kw, c) order, in one pass (pack_back_rows),
    over the filters by ``over`` (see pack_filters). By NumPy (a moved-axis copy, then the panels'
    copy) 1.18 MB of weights took 0.124 ms on one core."""
    F, Cg = w.shape[:2]
    w3 = np.ascontiguousarray(w, dtype=np.float32).reshape(F, Cg, -1)
    K, Fg = w3.shape[2], F // G
    width = W if K * Cg <= W else NR
    out = np.empty((G, -(-(K * Cg) // width), Fg, width), np.float32)
    over(pack_back_rows, w3, G, out, F)
    return list(out)


@njit(**_OPTS)
def flip_filters(w, G):
    """The flipped convolution's weights (C, Fg*K) of w (F, Cg, K) (C-contiguous float32, K the
    kernel's taps flattened): row g*Cg + c holds w[g*Fg + f, c, K - 1 - t] at f*K + t, in- and
    out-channels swapped within each group and the taps reversed, in one pass; for a flipped
    convolution that runs direct (the others take pack_flipped)."""
    F, Cg, K = w.shape
    Fg = F // G
    out = np.empty((G * Cg, Fg * K), np.float32)
    for g in range(G):
        for f in range(Fg):
            for c in range(Cg):
                row, src = out[g * Cg + c], w[g * Fg + f, c]
                for t in range(K):
                    row[f * K + t] = src[K - 1 - t]
    return out


@njit(**_OPTS)
def flipped_panels(w, G, out, p0, p1, order):
    """Panels p0..p1 - 1 of the flipped convolution's packed weights ``out`` (G, panels, Fg*K,
    width), pack_filters' layout of flip_filters(w, G) made from w (F, Cg, K) at once:
    [g, p, f*K + t, j] = w[g*Fg + f, p*width + j, K - 1 - t] (row order[f*K + t] where ``order``
    is not empty: the flipped convolution's tap_order): for each filter, 16 channels by up to 16
    taps transposed in registers (transpose_tile), the taps' rows stored in reverse order. Flipped
    by NumPy (a copy of the swapped, reversed view) and then packed, a 512->256 3x3 layer's weights
    took 1.3 ms, element by element in one pass 0.55 (benchmarks/README.md, "Tenth session of issue
    22"); by tiles, one core: 512->512 3x3 0.54 -> 0.47 ms, 256->128 0.060 -> 0.039."""
    F, Cg, K = w.shape
    nb, width = out.shape[1], out.shape[3]
    Fg = F // G
    w_addr, o_addr = w.ctypes.data, out.ctypes.data
    tile = np.empty(W * W, np.float32)
    t_addr = tile.ctypes.data
    for gp in range(p0, p1):
        g, p = gp // nb, gp % nb
        for h in range(width // W):
            c = p * width + h * W  # the tile's first channel
            nrows = max(0, min(W, Cg - c))
            for f in range(Fg):
                src = w_addr + (((g * Fg + f) * Cg + min(c, Cg - 1)) * K) * 4
                for t0 in range(0, K, W):  # taps t0.. into rows f*K + K - 1 - t, descending
                    nt = min(W, K - t0)
                    if order.shape[0] == 0:
                        transpose_tile(o_addr + ((gp * Fg * K + f * K + K - 1 - t0) * width + h * W) * 4, -width,
                                       src + t0 * 4, K, nrows, nt)
                        continue
                    transpose_tile(t_addr, W, src + t0 * 4, K, nrows, nt)
                    for r in range(nt):
                        copy_floats(o_addr + ((gp * Fg * K + order[f * K + K - 1 - t0 - r]) * width + h * W) * 4,
                                    t_addr + r * W * 4, W)


def _panels(fill, source, G, rows, CK, over, order):
    """(G, panels, CK, width) weights whose panels ``fill(source, G, out, p0, p1, order)`` writes,
    for ``rows`` filters per group, the panels run by ``over`` (see pack_filters)."""
    width = W if rows <= W else NR
    count = G * -(-rows // width)
    out = np.empty((G, count // G, CK, width), np.float32)
    over(fill, source, G, out, count, order)
    return out


def pack_flipped(w, G, over=inline, order=NO_ORDER):
    """pack_filters(flip_filters(w, G), G, order=order) in one pass per panel (flipped_panels)."""
    return _panels(flipped_panels, w, G, w.shape[1], (w.shape[0] // G) * w.shape[2], over, order)


def matmul(a, b, transpose_a=False, transpose_b=False):
    """A plain float32 product on igemm, one core: a @ b, a.T @ b or a @ b.T for C-contiguous
    2-D a and b (a.T read through the offset tables, not copied); a new C-contiguous result."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    (M, K), ka = (a.shape[::-1] if transpose_a else a.shape), a.shape[1]
    bk = np.ascontiguousarray(b, dtype=np.float32)
    bp = pack_columns(bk.T if transpose_b else bk)
    N = bk.shape[0] if transpose_b else bk.shape[1]
    if (bk.shape[1] if transpose_b else bk.shape[0]) != K:
        raise ValueError(f"matmul: shapes {a.shape}{'.T' if transpose_a else ''} and "
                         f"{b.shape}{'.T' if transpose_b else ''} do not match")
    c = np.empty((M, N), np.float32)
    if transpose_a:  # A[i, k] = a[k, i]: row i starts at i, step k at k*ka
        row, col = np.arange(M, dtype=np.int64), np.arange(K, dtype=np.int64) * ka
    else:
        row, col = np.arange(M, dtype=np.int64) * ka, np.arange(K, dtype=np.int64)
    igemm(a.reshape(-1), 0, row, col, bp, c.reshape(-1), 0, np.arange(M, dtype=np.int64) * N, 1, N, False)
    return c


@njit(**_OPTS)
def pack_rows_of(g, f0, F):
    """pack_columns of the (n*L, F) matrix whose row (i, l) is g[i, f0:f0 + F, l] (g (n, Fall, L),
    contiguous), in one pass of 16 x 16 tiles transposed in registers (transpose_tile): the output
    gradient, positions as rows, for the weight gradient. Element by element, the strided writes
    took 15-20% of a 32-filter layer's weight gradient on 28-32 px maps."""
    n, Fall, L = g.shape
    width = W if F <= W else NR
    nb = (F + width - 1) // width
    out = np.empty((nb, n * L, width), np.float32)
    g_addr, o_addr = g.ctypes.data, out.ctypes.data
    for jb in range(nb):
        for i in range(n):
            for h in range(width // W):
                f = jb * width + h * W
                nrows = max(0, min(W, F - f))
                src = g_addr + ((i * Fall + f0 + min(f, F - 1)) * L) * 4
                for m0 in range(0, L, W):
                    transpose_tile(o_addr + ((jb * n * L + i * L + m0) * width + h * W) * 4, width,
                                   src + m0 * 4, L, nrows, min(W, L - m0))
    return out


@njit(**_OPTS)
def _planes_of(x, pad, box, at, plane, slack=0):
    """x (n, C, H, W) or (n, C, D, H, W), contiguous, as flat padded planes (volumes) followed by
    ``slack`` zeros: x placed at ``at`` = (front, top, left) in a ``box`` = (Dp, Hp, Wp) of zeros
    by place_volumes where ``pad`` or ``slack``, else x itself."""
    if not pad and slack == 0:
        return x.reshape(-1)
    xf = np.empty(x.shape[0] * x.shape[1] * plane + slack, np.float32)
    place_volumes(as_volumes(x), xf, box[0], box[1], box[2], at[0], at[1], at[2], plane, slack)
    return xf


@njit(**_OPTS)
def forward_chunk(x, pad, box, at, plane, rows, out_rows, lims, fields, wpk, out, Cg, Fg, KH, KW):
    """IndirectConv's forward pass of a chunk in one call without the GIL: out (n, F, L)
    (contiguous) = conv(x) by igemm from the padded planes (volumes: _planes_of) and the packed
    weights wpk (G, panels, Cg*K, width), each group's product written straight into out's
    layout (``out_rows``: each position's offset there) by the transposed micro-kernel; ``lims``,
    KH, KW: the taps skipped where they reach the padding (igemm; fields and wpk then in tap
    order, tap_order); FORWARD_ROWS positions at a time. One call per chunk rather than three
    and more: two threads' chunks otherwise queue for the GIL between them (benchmarks/README.md,
    "Seventh session of issue 22")."""
    L = out.shape[2]
    xf = _planes_of(x, pad, box, at, plane)
    of = out.reshape(-1)
    M = rows.shape[0]
    step = FORWARD_ROWS
    for g in range(wpk.shape[0]):
        for i0 in range(0, M, step):
            i1 = min(M, i0 + step)
            lp = lims[i0 // LIM_ROWS:] if lims.shape[0] > 0 else lims
            igemm(xf, g * Cg * plane, rows[i0:i1], fields, wpk[g], of, g * Fg * L, out_rows[i0:i1], L, Fg, False, lp,
                  Cg, KH, KW)


@njit(**_OPTS)
def weight_grad_chunk(x, pad, box, at, plane, g, rows, fields, Cg, Fg, images, gw, m0=0, m1=-1):
    """IndirectConv's weight gradient of a chunk in one call without the GIL: gw (F, Cg*K) from the
    padded planes of x and the output gradient g (n, F, L) packed ``images`` images at a time;
    only gw's columns [m0, m1) (all by default), the fields' elements m0..m1 - 1, where given."""
    n, F, L = g.shape
    if m1 < 0:
        m1 = fields.shape[0]
    M = m1 - m0
    if n == 0:  # no products: zeros
        gw[:, m0:m1] = 0.0
        return
    xf = _planes_of(x, pad, box, at, plane)
    CgK = gw.shape[1]
    crow = np.arange(M)  # the product's rows are consecutive elements of gw, its columns CgK apart
    cols = fields[m0:m1]
    gwf = gw.reshape(-1)
    for gi in range(F // Fg):
        for i0 in range(0, n, images):
            i1 = min(n, i0 + images)
            b = pack_rows_of(g[i0:i1], gi * Fg, Fg)
            igemm(xf, gi * Cg * plane, cols, rows[i0 * L:i1 * L], b, gwf, gi * Fg * CgK + m0, crow, CgK, Fg, i0 > 0)


@njit(**_OPTS)
def gather_panel(xf, a0, rows, fields, k0, w, out):
    """out (P, NR), flat: B[p, j] = xf[a0 + rows[p] + fields[k0 + j]] for j < w, zeros beyond: one
    panel of the receptive fields, positions as rows, for weight_grad_filters."""
    for p in range(rows.shape[0]):
        b = a0 + rows[p]
        for j in range(w):
            out[_u(p * NR + j)] = xf[_u(b + fields[k0 + j])]
        for j in range(w, NR):
            out[_u(p * NR + j)] = 0.0


@njit(**_OPTS)
def weight_grad_filters(x, pad, box, at, plane, g, rows, gcol, fields, Cg, Fg, gw, m0, m1):
    """weight_grad_chunk the other way round, for large weights: gw[f, m0:m1] (gw (F, Cg*K)) =
    sum over positions of g[f, position] * field[position, m], filters as the product's rows read
    from g (n, F, L) in place (``gcol``: each position's offset, (i*F*L + l)), the fields gathered
    a panel of NR elements at a time (gather_panel), gw written in its own layout. The other way,
    the product (Cg*K x F) is written a row of F apart per field element and then transposed: with
    millions of weights and a short reduction that ran at 16-143 GFLOP/s, this at 179-195
    (benchmarks/README.md, "Tenth session of issue 22")."""
    n, F, L = g.shape
    CgK = fields.shape[0]
    xf = _planes_of(x, pad, box, at, plane)
    panel = np.empty((1, rows.shape[0], NR), np.float32)
    pf, gf, wf = panel.reshape(-1), g.reshape(-1), gw.reshape(-1)
    grow = np.arange(Fg) * L
    crow = np.arange(Fg) * CgK
    for gi in range(F // Fg):
        for k0 in range(m0, m1, NR):
            w = min(NR, m1 - k0)
            gather_panel(xf, gi * Cg * plane, rows, fields, k0, w, pf)
            igemm(gf, gi * Fg * L, grow, gcol, panel, wf, gi * Fg * CgK + k0, crow, 1, w, False)


@njit(**_OPTS)
def direct_forward_chunk(x, Hp, Wp, top, left, plane, slack, wf, fields, out, Cg, Fg, P):
    """IndirectConv's direct forward pass of a chunk in one call without the GIL: the padded
    planes (with ``slack`` zeros), dconv per group over P positions of the padded rows, the rows
    cropped to their outputs in out (n, F, L), contiguous."""
    n, C = x.shape[0], x.shape[1]
    F, CgK = wf.shape
    xf = _planes_of(x, True, (1, Hp, Wp), (0, top, left), plane, slack)
    buf = np.empty(n * F * P, np.float32)
    w = wf.reshape(-1)
    for g in range(F // Fg):
        dconv(w[g * Fg * CgK:(g + 1) * Fg * CgK], xf[g * Cg * plane:], fields, buf[g * Fg * P:], n, Fg, P, C * plane,
              F * P)
    crop_rows(buf, out, n * F * (P // Wp), Wp, out.shape[2] // (P // Wp))


# ------------------------------------------------------------------ the forward pass as a compiled job
# ConvPlan runs a layer's forward pass over its batch's chunks as one job of kernels/jobs.py: no
# Python, nor the GIL, between a helper's chunks. Slots: the chunk table; x's address, C, D, H, W
# (x read as (N, C, D, H, W), D = 1 for images); out's address, F, L; the bias's address (0: none);
# then the path's arguments (IndirectConv.forward_job).
_IO = 10


@njit(**_OPTS)
def _job_x(a, i):
    """Chunk i's first image, image count and input (n, C, D, H, W)."""
    t = jobs.slot(a, 0)
    n0 = jobs.slot(t, 2 * i)
    n = jobs.slot(t, 2 * i + 1) - n0
    C, D, H, W_ = jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 4), jobs.slot(a, 5)
    return n0, n, carray(jobs.f32(jobs.slot(a, 1) + n0 * C * D * H * W_ * 4), (n, C, D, H, W_))


@njit(**_OPTS)
def _job_io(a, i):
    """Chunk i's image count, input (n, C, D, H, W) and output (n, F, L), its bias added after."""
    n0, n, x = _job_x(a, i)
    F, L = jobs.slot(a, 7), jobs.slot(a, 8)
    return n, x, carray(jobs.f32(jobs.slot(a, 6) + n0 * F * L * 4), (n, F, L))


@njit(**_OPTS)
def _add_bias(a, out):
    """out (n, F, L) += the job's bias (F,), where it has one."""
    if jobs.slot(a, 9) == 0:
        return
    n, F, L = out.shape
    bias = carray(jobs.f32(jobs.slot(a, 9)), (F,))
    for i in range(n):
        for f in range(F):
            b = bias[f]
            for q in range(L):
                out[i, f, q] += b


@njit(**_OPTS)
def _forward_into(a, x, out):
    """forward_chunk of a chunk's input x into out (n, F, L), its bias added (_forward_job's slots)."""
    n = x.shape[0]
    s = [jobs.slot(a, _IO + k) for k in range(29)]
    fields = carray(jobs.i64(s[8]), (s[9],))
    wpk = carray(jobs.f32(s[10]), (s[11], s[12], s[13], s[14]))
    k = 19 if n == s[19] else 24
    NL = n * out.shape[2]
    rows, out_rows = carray(jobs.i64(s[k + 1]), (NL,)), carray(jobs.i64(s[k + 2]), (NL,))
    lims = carray(jobs.i64(s[k + 3]), (s[k + 4], 4))
    forward_chunk(x, s[0] != 0, (s[1], s[2], s[3]), (s[4], s[5], s[6]), s[7], rows, out_rows, lims, fields, wpk, out,
                  s[15], s[16], s[17], s[18])
    _add_bias(a, out)


@jobs.job
def _forward_job(a, i):
    """forward_chunk on chunk i (slots after _IO: pad, box (3), at (3), plane, fields and their
    count, the packed weights and their shape (4), Cg, Fg, KH, KW, then two chunk sizes' tables:
    size, rows, out_rows, the tap limits and their count for each; see forward_chunk)."""
    n, x, out = _job_io(a, i)
    _forward_into(a, x, out)


@njit(**_OPTS)
def _direct_forward_into(a, x, out):
    """direct_forward_chunk of a chunk's input x into out (n, F, L), its bias added
    (_direct_forward_job's slots)."""
    s = [jobs.slot(a, _IO + k) for k in range(13)]
    wf = carray(jobs.f32(s[6]), (out.shape[1], s[7]))
    fields = carray(jobs.i64(s[8]), (s[9],))
    direct_forward_chunk(x, s[0], s[1], s[2], s[3], s[4], s[5], wf, fields, out, s[10], s[11], s[12])
    _add_bias(a, out)


@jobs.job
def _direct_forward_job(a, i):
    """direct_forward_chunk on chunk i (slots after _IO: Hp, Wp, top, left, plane, slack, the
    weights (F, Cg*K) and Cg*K, fields and their count, Cg, Fg, P)."""
    n, x, out = _job_io(a, i)
    _direct_forward_into(a, x, out)


@jobs.job
def _conv_max_pool_job(a, i):
    """A fused convolution -> max pooling (-> ReLU) on chunk i: the chunk's convolution (by the
    forward job whose arguments are at slot 0, direct where slot 1 says) into a buffer of its own,
    max-pooled (slots: OH, OW, KH, KW, sh, sw, ph, pw, PH, PW) into out (N, F, PH, PW) and its
    arg-max (int32), then ReLU where slot 14 is 1: no Python between the three, and the chunk's
    full-resolution maps stay in cache."""
    c = jobs.slot(a, 0)
    n0, n, x = _job_x(c, i)
    F, L = jobs.slot(c, 7), jobs.slot(c, 8)
    y = np.empty((n, F, L), np.float32)
    if jobs.slot(a, 1):
        _direct_forward_into(c, x, y)
    else:
        _forward_into(c, x, y)
    s = [jobs.slot(a, k) for k in range(15)]
    PH, PW = s[10], s[11]
    out = carray(jobs.f32(s[12] + n0 * F * PH * PW * 4), (n, F, PH, PW))
    arg = carray(jobs.i32(s[13] + n0 * F * PH * PW * 4), (n, F, PH, PW))
    cpu.max_pool2d_forward_into(y.reshape((n, F, s[2], s[3])), s[4], s[5], s[6], s[7], s[8], s[9], out, arg)
    if s[14]:
        flat = out.reshape(-1)
        cpu.relu_forward_range(flat, flat, 0, flat.shape[0])


@njit(**_OPTS)
def direct_weight_grad_chunk(x, Hp, Wp, top, left, plane, slack, g, ldg, fields, gw, Cg, Fg):
    """IndirectConv's direct weight gradient of a chunk in one call without the GIL: the output
    gradient g (n, F, OH, OW) spread over the padded rows (``ldg`` positions, zero past each
    row's outputs), wgrad per group against the padded planes of x, into gw (F, Cg*K)."""
    n, C = x.shape[0], x.shape[1]
    F, OH = g.shape[1], g.shape[2]
    xf = _planes_of(x, True, (1, Hp, Wp), (0, top, left), plane, slack)
    gq = np.empty((n, F, ldg), np.float32)
    place_planes(g, gq.reshape(-1), OH, Wp, 0, 0, ldg, 0)
    for gi in range(F // Fg):
        wgrad(gq, gi * Fg * ldg, F * ldg, ldg, Fg, xf, gi * Cg * plane, C * plane, n, fields, gw[gi * Fg:(gi + 1) * Fg],
              False)


# _PhaseBack's plan: one row per step (a phase alone, or the two column phases of a stride-2 row
# phase); after the count of phases, per phase PLAN_FIELDS values: rows of the phase plane in use
# (nh), its first row, dx's rows (start, step) and columns (start, step), the phase plane's columns
# (start, stop), and where its weights (offset, reduction length K) and tap offsets start
PLAN_FIELDS = 11


@njit(**_OPTS)
def _phase_grad(gpad, n, plan, s, base, wts, boffs, C, Cg, Fg, F, HgWg, Wg):
    """One phase's gradient (n, C, nh, Wg), flat, by dconv over the padded gradient's planes."""
    nh, r0 = plan[s, base + 1], plan[s, base + 2] * Wg
    w0, K, b0 = plan[s, base + 9], plan[s, base + 10], plan[s, base + 11]
    Pv = nh * Wg
    buf = np.empty(n * C * Pv, np.float32)
    boff = boffs[b0:b0 + K]
    for gi in range(F // Fg):
        dconv(wts[w0 + gi * Cg * K:w0 + (gi + 1) * Cg * K], gpad[gi * Fg * HgWg + r0:], boff, buf[gi * Cg * Pv:], n,
              Cg, Pv, F * HgWg, C * Pv)
    return buf


@njit(**_OPTS)
def phase_back_chunk(g, Hg, Wg, E0, E1, slack, plan, wts, boffs, dx, Cg, Fg):
    """_PhaseBack's input gradient of a chunk in one call without the GIL: g (n, F, OH, OW)
    zero-padded into planes of Hg x Wg, each step of ``plan`` (see PLAN_FIELDS) computed by dconv
    and written into dx (n, C, H, W): one phase scattered into its rows and columns, two column
    phases interleaved into whole rows."""
    n, F = g.shape[0], g.shape[1]
    C = dx.shape[1]
    HgWg = Hg * Wg
    gpad = np.empty(n * F * HgWg + slack, np.float32)
    place_planes(g, gpad, Hg, Wg, E0, E1, HgWg, slack)
    for s in range(plan.shape[0]):
        a = _phase_grad(gpad, n, plan, s, 0, wts, boffs, C, Cg, Fg, F, HgWg, Wg)
        nh = plan[s, 1]
        if plan[s, 0] == 1:
            scatter_phase(a, dx, nh, Wg, plan[s, 3], plan[s, 4], plan[s, 5], plan[s, 6], 0, plan[s, 7], nh,
                          plan[s, 8] - plan[s, 7])
        else:
            b = _phase_grad(gpad, n, plan, s, PLAN_FIELDS, wts, boffs, C, Cg, Fg, F, HgWg, Wg)
            zip_phases(a, b, dx, Wg, plan[s, 3], plan[s, 4], plan[s, 7], plan[s, PLAN_FIELDS + 7], nh)


# The weight gradient runs with the filters as the product's rows (weight_grad_filters) for layers
# of at least this many weights, while a chunk's fields panel (positions x NR) stays under 1 MiB:
# one core, whole batch, GFLOP/s the usual way / this way: 512->512 on 4x4 at batch 16 (2.4M
# weights) 97 / 195, 1024->1024 on 2x2 16 / 179, 256->512 on 4x4 132 / 195, 256->512 stride 2 on
# 8x8 143 / 189; 256->256 on 5x5 (590K) 176 / 194, on 7x7 196 / 194, on 8x8 160 / 155; 128->256
# stride 2 on 8x8 (295K) 162 / 136, 128->128 on 6x6 206 / 168, 64->64 on 4x4 169 / 132
FILTER_ROWS_MIN_WEIGHTS = 1 << 20
FILTER_ROWS_MAX_POSITIONS = 8192

# The input gradient of a stride-1 layer is the flipped convolution of the padded output gradient
# while the input has at most this many times the output's positions; beyond, the fields' gradients
# and col2im were faster (1.31x and 1.36x larger inputs: flipped 2.8x and 1.8x faster; 1.56x
# and more: col2im 1.15-1.8x faster; benchmarks/README.md, "Indirect GEMM").
FLIP_MAX_GROWTH = 1.4
# ... and for groups of at most 16 filters, whose fields' gradients are a product of a 16-step
# reduction stored as large as the fields themselves (then scattered by col2im), up to this
FLIP_MAX_GROWTH_NARROW = 1.6

# The direct weight gradient (wgrad) of a stride-1 layer runs over the padded rows in whole
# vectors: where the outputs are less than this share of them, igemm's packed gradient wastes less.
DIRECT_W_MIN_SHARE = 0.75

# Which orientation, where both apply (one core, 8 images, 3x3 and 5x5 'same' layers of 1-128
# channels and filters on 6x6, 13x13 and 28x28 maps; benchmarks/README.md, "Direct or
# transposed"): the direct forms fill their vectors with positions, igemm's with filters. With
# at most DIRECT_MAX_FILTERS filters per group the direct forward pass won 1.07-2.5x everywhere
# and the direct weight gradient 0.89-3.7x (below 1.0 once); with more filters, the direct
# forward pass won on output rows of DIRECT_MIN_WIDTH or more (28 wide: 0.93-2.9x, below 1.0
# once) and lost on 6- and 13-wide rows (0.41-1.2x, mostly below 1.0), and the direct weight
# gradient won on wide rows only for fields of at most DIRECT_W_MAX_FIELD = Cg*KH*KW elements
# (9 or 25: 1.14-1.73x; 72: 0.83-1.53x; 200 or more: 0.71-1.0x).
DIRECT_MAX_FILTERS = 8
DIRECT_MIN_WIDTH = 20
DIRECT_W_MAX_FIELD = 32
# 1-D layers (a signal as an image of height 1) with more filters: the other orientation won on
# signals of 64-128 outputs (forward + backward, two cores: 128->128 k3 on 64 1.18x, 64->64 on 128
# 1.05x, 32->64 on 128 1.01x), tied at 100, lost at 512 (0.95x) (benchmarks/README.md, "Tenth
# session of issue 22"); the direct forms' blocks of 32 positions waste more of a short signal
DIRECT_MIN_SIGNAL = 256

# The direct forward pass computes the padded width's Wp positions per output row to use OW:
# below this share it wastes more than the transposed stores of the other orientation cost.
DIRECT_MIN_SHARE = 0.75
# ... and below this share where a group has more than 16 filters (the other orientation's whole
# 8 x 32 blocks, its columns stored straight from the registers): fwd+bwd on two cores, ms at
# 0.75 / 0.9 (PyTorch): 32->32 3x3 dilation 2 on 28x28 (share 0.875) 2.31 / 2.12 (1.97); 32->32
# 5x5 'same' on 24x24 (0.857) 4.10 / 3.71 (3.52); at 0.93-0.97 (3x3 'same' on 28-56 px) within 2%
# either way; 16 filters 5x5 'valid' on 24x24 (0.83) 1.07 / 1.15, so groups of 16 filters keep 0.75
DIRECT_MIN_SHARE_PANELS = 0.9


def flip_padding(size, out_shape, stride, padding, kernel, dilation, Fg=NR):
    """The padding of the flipped convolution that gives a stride-1 layer's input gradient, or None
    where it does not serve: it multiplies every input position by the whole kernel, zeros of the
    padded gradient included, so only where the input has at most FLIP_MAX_GROWTH times the
    output's positions (FLIP_MAX_GROWTH_NARROW for Fg <= 16 filters per group), and the padding is
    at most the kernel's reach."""
    reach = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
    growth = FLIP_MAX_GROWTH_NARROW if Fg <= W else FLIP_MAX_GROWTH
    if (all(st == 1 for st in stride) and all(p <= r for p, r in zip(padding, reach))
            and math.prod(size) <= growth * math.prod(out_shape)):
        return tuple(r - p for r, p in zip(reach, padding))
    return None


def direct_forward(padded, out_shape, stride) -> bool:
    """IndirectConv's forward pass runs as dconv: stride 1 and output rows at least
    DIRECT_MIN_SHARE of the padded width."""
    return all(s == 1 for s in stride) and out_shape[-1] >= DIRECT_MIN_SHARE * padded[-1]


@functools.lru_cache(maxsize=256)
def field_offsets(C, padded, kernel, dilation, plane):
    """(C*K,) offsets of a receptive field's elements, ordered (c, *k), from its first element in
    C planes (volumes) of *padded, ``plane`` elements apart (read-only; cached per geometry)."""
    strides = np.cumprod((1,) + tuple(padded[::-1]))[:-1][::-1]  # elements per step along each axis
    off = np.zeros(1, np.int64)
    for k, d, s in zip(kernel, dilation, strides):
        off = (off[:, None] + np.arange(k, dtype=np.int64) * d * s).ravel()
    out = (np.arange(C, dtype=np.int64)[:, None] * plane + off).ravel()
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=256)
def tap_order(Cg, kernel):
    """(Cg*K,) int64: where each receptive-field element (c, *k) goes in tap order, the forward
    pass's reduction order where it skips the padding (igemm's ``lims``): the channels in the
    groups of igemm's slices (tap_slices), each group's elements ordered (*k[:-1], c, kw), so
    that the taps of given kernel rows are runs of a group's channels times KW. Within each group
    of channels rather than across all: a slice of taps over all channels read 3x the input's
    planes per slice, and a 512->512 layer on 7x7 maps ran 12% slower (read-only; cached)."""
    K, KW = math.prod(kernel), kernel[-1]
    ns = tap_slices(Cg, K)
    out = np.empty((Cg, K // KW, KW), np.int64)
    for sl in range(ns):
        cs, ce = Cg * sl // ns, Cg * (sl + 1) // ns
        c, ko, kw = np.ogrid[:ce - cs, :K // KW, :KW]
        out[cs:ce] = cs * K + (ko * (ce - cs) + c) * KW + kw
    out = out.ravel()
    out.flags.writeable = False
    return out


def _axis_limits(out, size, stride, padding, dilation, kernel):
    """For each output index along an axis, the kernel offsets [lo, hi) whose taps land in the
    input rather than the padding (lo >= hi: none)."""
    o = np.arange(out, dtype=np.int64) * stride
    return np.maximum(0, -((o - padding) // dilation)), np.minimum(kernel, (padding + size - 1 - o) // dilation + 1)


@functools.lru_cache(maxsize=256)
def position_limits(out_shape, size, stride, padding, dilation, kernel):
    """(L, 4) int64: for each output position (row-major) of a 2-D or 3-D convolution, the kernel
    offsets d0, d1 along its depth (0, 1 for images) and h0, h1 along its height whose taps land
    in the input, not the padding (read-only; cached)."""
    dims = len(out_shape)
    lims = np.zeros(tuple(out_shape) + (4,), np.int64)
    lims[..., 1] = 1
    for axis, col in ((dims - 2, 2), (dims - 3, 0)):
        if axis < 0:
            continue
        lo, hi = _axis_limits(out_shape[axis], size[axis], stride[axis], padding[axis], dilation[axis], kernel[axis])
        shape = [1] * dims
        shape[axis] = -1
        lims[..., col] = lo.reshape(shape)
        lims[..., col + 1] = hi.reshape(shape)
    out = lims.reshape(-1, 4)
    out.flags.writeable = False
    return out


def skipped_share(limits, kernel):
    """The share of a forward pass's products that skipping the padding's taps saves, its blocks
    of LIM_ROWS positions in chunks of two images (a block's taps are those any of its rows needs)."""
    q = group_limits(limits, 2)
    KD, KH = (kernel[-3] if len(kernel) > 2 else 1), kernel[-2]
    d, h = q[:, 1] - q[:, 0], q[:, 3] - q[:, 2]
    work = np.where((d > 0) & (h > 0), d * h, KD * KH)
    return 1.0 - work.sum() / (q.shape[0] * KD * KH)


def group_limits(lims, n):
    """position_limits (L, 4) for n images' rows as igemm reads them: per LIM_ROWS rows, the
    smallest of their lower limits and the largest of their upper ones."""
    rows = np.tile(lims, (n, 1))
    q = -(-rows.shape[0] // LIM_ROWS)
    rows = np.concatenate([rows, np.repeat(rows[-1:], q * LIM_ROWS - rows.shape[0], axis=0)]).reshape(q, LIM_ROWS, 4)
    out = np.empty((q, 4), np.int64)
    out[:, 0::2] = rows[:, :, 0::2].min(axis=1)
    out[:, 1::2] = rows[:, :, 1::2].max(axis=1)
    return out


@functools.lru_cache(maxsize=256)
def position_offsets(out_shape, padded, stride):
    """(L,) offsets of each output position's receptive field in a (C, *padded) image, row-major
    (read-only; cached per geometry)."""
    strides = np.cumprod((1,) + tuple(padded[::-1]))[:-1][::-1]
    off = np.zeros(1, np.int64)
    for o, st, s in zip(out_shape, stride, strides):
        off = (off[:, None] + np.arange(o, dtype=np.int64) * st * s).ravel()
    off.flags.writeable = False
    return off


def phase_slices(phase, stride, padding, size):
    """(source, destination) slices per axis between an unpadded input of ``size`` and the phase
    plane ``phase`` of its padded form: input index r is padded index r + p, which lies in plane
    (r + p) % s at (r + p) // s. None where the plane holds no input element."""
    src, dst = [], []
    for a, s, p, n in zip(phase, stride, padding, size):
        r0 = (a - p) % s
        count = -(-(n - r0) // s) if n > r0 else 0
        if count <= 0:
            return None
        i0 = (r0 + p) // s
        src.append(slice(r0, None, s))
        dst.append(slice(i0, i0 + count))
    return tuple(src), tuple(dst)


@functools.lru_cache(maxsize=256)
def phase_geometry(stride, padding, size, padded, kernel, Fg):
    """_PhaseBack's geometry (cached): the largest tap shift E per axis, the phase plane's rows
    Hq, the padded gradient's plane Hg x Wg, the positions P, the slack, and per phase (a, b) its
    slices (phase_slices) and dconv's offsets of (f, t0, t1) in the padded gradient, None where
    the phase has no taps or no input element."""
    (s0, s1), (Hp, Wp) = stride, padded
    E = tuple((k - 1) // s for k, s in zip(kernel, stride))
    Hq, Wq = -(-Hp // s0), -(-Wp // s1)
    Hg, Wg = Hq + E[0], Wq + E[1]
    tables = []
    for a in range(s0):
        for b in range(s1):
            cut = phase_slices((a, b), stride, padding, size)
            khs, kws = range(a, kernel[0], s0), range(b, kernel[1], s1)
            if cut is None or not khs or not kws:
                tables.append(((a, b), cut, None))  # no taps or no input: that part of dx is zero
                continue
            e0 = np.array([kh // s0 for kh in khs], np.int64)
            e1 = np.array([kw // s1 for kw in kws], np.int64)
            boff = (np.arange(Fg, dtype=np.int64)[:, None, None] * (Hg * Wg)
                    + ((E[0] - e0) * Wg)[:, None][None] + (E[1] - e1)[None, None, :]).ravel()
            boff.flags.writeable = False
            tables.append(((a, b), cut, boff))
    return E, Hq, Hg, Wg, Hq * Wg, E[1] + NR, tuple(tables)


def phase_share(stride, size, padded, kernel):
    """The share of _PhaseBack's computed positions that are input positions: each of the s0 x s1
    phase planes has about ceil(H / s0) rows of Wg positions (phase_geometry), counted in whole
    blocks of NR: the model PHASE_MIN_SHARE was measured with (dconv now computes a last block of
    at most 16 positions one vector wide, which this does not count)."""
    (s0, s1), (H, W_) = stride, size
    E1 = (kernel[1] - 1) // s1
    Wg = -(-padded[1] // s1) + E1
    computed = s0 * s1 * (-(-(-(-H // s0) * Wg) // NR) * NR)
    return H * W_ / computed


# The input gradient of a strided layer goes by phases where they fill at least this share of the
# positions they compute, else through the fields' gradients and col2im. bench-style op rows
# (forward + backward, two cores), phases -> col2im: 128->256 on 8x8 inputs at batch 32 4.86 ->
# 3.85 ms, 64->128 on 10x10 1.57 -> 1.26, 32->64 on 12x12 at batch 64 1.14 -> 1.13. One core, 16 images,
# 3x3 stride-2 layers C -> 2C, ms phases / col2im: 8x8 inputs (share 0.50) 0.12 / 0.09 (C 32),
# 0.39 / 0.24 (64), 1.35 / 0.77 (128); 10x10 (0.39) 0.18 / 0.13, 0.66 / 0.38, 2.50 / 1.20; 12x12
# (0.56) 0.20 / 0.19, 0.69 / 0.53, 2.61 / 1.73; 14x14 (0.77) 0.22 / 0.27, 0.75 / 2.07, 2.97 /
# 2.51; 16x16 (0.67) 0.29 / 0.34, 1.05 / 2.85, 4.22 / 4.50 (benchmarks/README.md, "Ninth session
# of issue 22").
PHASE_MIN_SHARE = 0.6
# ... and for kernels of at most 9 taps, this share, since col2im's adds vectorise (col2im3d_nhwc):
# fwd+bwd on two cores, ms phases / col2im (PyTorch), 3x3 stride 2: 32->64 on 16x16 (share 0.67)
# 0.88 / 0.86 (0.83), 64->128 3.32 / 3.03 (2.73), 128->256 12.28 / 10.53 (9.62); 64->64 on 14x14
# (0.77) 2.79 / 2.59 (2.49); 64->128 on 20x20 (0.78) 5.26 / 4.94 (4.94), on 24x24 (0.75) 6.71 /
# 6.49 (7.10); 1-D 64->128 on 128 (0.67) 1.11 / 1.04 (1.00); phases kept: 28x28 (0.875) 2.30 /
# 2.56 (2.63), 32x32 (0.89) 3.22 / 3.33, 56x56 (0.91) 1.38 / 1.73, 1-D on 256 (0.8) 0.61 / 0.67,
# 5x5 stride 2 on 28x28 (0.77, 25 taps) 1.55 / 1.69 (benchmarks/README.md, "Tenth session of
# issue 22")
PHASE_MIN_SHARE_SMALL = 0.8


@functools.lru_cache(maxsize=128)
def phase_plan(stride, padding, size, padded, kernel, Fg, Cg, G):
    """_PhaseBack's steps for phase_back_chunk (cached): (plan (steps, 1 + 2*PLAN_FIELDS), the
    phases' tap offsets one after the other, the phases with taps as (table index, (a, b)) in the
    order of their weights, whether every element of dx lies in a phase with taps)."""
    E, Hq, Hg, Wg, P, slack, tables = phase_geometry(stride, padding, size, padded, kernel, Fg)
    info, order, boffs = {}, [], []
    w0 = b0 = 0
    for i, (ab, cut, boff) in enumerate(tables):
        if boff is None:
            continue
        info[i] = (cut, w0, boff.shape[0], b0)
        order.append((i, ab))
        boffs.append(boff)
        w0 += G * Cg * boff.shape[0]
        b0 += boff.shape[0]
    # stride-2 columns: the row phases whose two column phases both have taps and fill dx's rows
    # between them (even columns from one, odd from the other) are interleaved; the others are
    # scattered one by one
    steps, s1 = [], stride[1]
    for a in range(stride[0]):
        row = [i for i in range(a * s1, (a + 1) * s1) if i in info]
        if s1 == 2 and len(row) == 2 and info[row[0]][0][1][0] == info[row[1]][0][1][0]:
            steps.append(tuple(row) if info[row[0]][0][0][1].start == 0 else (row[1], row[0]))
        else:
            steps.extend((i,) for i in row)
    plan = np.zeros((len(steps), 1 + 2 * PLAN_FIELDS), np.int64)
    for k, step in enumerate(steps):
        plan[k, 0] = len(step)
        for j, i in enumerate(step):
            (rows, cols), (prows, pcols) = info[i][0]
            plan[k, 1 + j * PLAN_FIELDS:1 + (j + 1) * PLAN_FIELDS] = (
                prows.stop - prows.start, prows.start, rows.start, rows.step, cols.start, cols.step, pcols.start,
                pcols.stop, *info[i][1:])
    boffs = np.concatenate(boffs) if boffs else np.zeros(0, np.int64)
    plan.flags.writeable = boffs.flags.writeable = False
    return plan, boffs, tuple(order), len(order) == len(tables)


@functools.lru_cache(maxsize=128)
def phase_taps(shape, stride, phases):
    """Where _PhaseBack's weights come from in the flat weight (G*Fg, Cg, *kernel) of ``shape``
    (G, Fg, Cg, KH, KW) (cached, read-only): per phase (a, b) in turn, its taps kh = a mod s0,
    kw = b mod s1 as (G, Cg, Fg*T0*T1), dx's channels as dconv's filters and the reduction over
    (f, t0, t1). One gather per call instead of a slice, transpose and copy per phase."""
    G, Fg, Cg = shape[:3]
    index = np.arange(math.prod(shape), dtype=np.int64).reshape((G * Fg, Cg) + shape[3:])
    parts = [index[:, :, a::stride[0], b::stride[1]] for a, b in phases]
    parts = [t.reshape((G, Fg, Cg) + t.shape[2:]).transpose(0, 2, 1, 3, 4).reshape(-1) for t in parts]
    out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    out = out.astype(np.int32 if out.size < 2**31 else np.int64)  # half the cache's memory
    out.flags.writeable = False
    return out


TABLES_KEPT = 8  # chunk sizes whose offset tables a layer shape keeps


@functools.lru_cache(maxsize=128)
def conv_geometry(x_shape, w_shape, stride, padding, dilation, groups, out_shape):
    """IndirectConv's attributes that depend on the layer's shapes alone (cached; read-only but
    for the offset tables per chunk size, ``_tables``, which the calls share)."""
    C, *S = x_shape
    F, Cg = w_shape[:2]
    kernel = tuple(w_shape[2:])
    logical = tuple(s + 2 * p for s, p in zip(S, padding))  # the padded input's sizes
    # its rows in the buffer: at stride 1, one row's right padding is the next row's left (a
    # row's reads past its end land there, the last row's in pw zeros after each plane), so the
    # direct forms compute pw fewer positions per row; where a row holds its outputs
    padded, tail = logical, 0
    if all(st == 1 for st in stride) and (kernel[-1] - 1) * dilation[-1] >= padding[-1]:
        padded, tail = logical[:-1] + (S[-1] + padding[-1],), padding[-1]
    g = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation, "out_shape": out_shape,
         "G": groups, "F": F, "Cg": Cg, "Fg": F // groups, "S": tuple(S), "C": C, "padded": padded}
    g["plane"] = math.prod(g["padded"]) + tail
    # the padded volume (Dp, Hp, Wp) and where the input starts in it, Dp = 1 for images
    g["box"], g["at"] = (1,) * (3 - len(S)) + g["padded"], (0,) * (3 - len(S)) + tuple(padding)
    # col2im3d_nhwc's geometry: sizes, kernel, stride, padding, dilation, output, each per axis of a volume
    g["volume"] = sum(((v,) * (3 - len(S)) + tuple(t) for t, v in
                       ((S, 1), (kernel, 1), (stride, 1), (padding, 0), (dilation, 1), (out_shape, 1))), ())
    g["L"], g["K"] = math.prod(out_shape), math.prod(kernel)
    g["fields"] = field_offsets(Cg, g["padded"], kernel, dilation, g["plane"])
    few = g["Fg"] <= DIRECT_MAX_FILTERS
    # a signal (1-D, height 1) is wide from DIRECT_MIN_SIGNAL outputs on
    wide = out_shape[-1] >= (DIRECT_MIN_SIGNAL if len(out_shape) == 2 and out_shape[0] == 1 else DIRECT_MIN_WIDTH)
    # (the orientations' rules were measured on rows of the whole padded width, logical[-1])
    g["direct"] = (len(S) == 2 and direct_forward(logical, out_shape, stride) and (few or wide)
                   and (g["Fg"] <= W or out_shape[-1] >= DIRECT_MIN_SHARE_PANELS * logical[-1]))
    # positions along the padded rows (the direct forward pass and weight gradient, stride 1),
    # the last Wp - OW of each row not outputs; the input is followed by slack zeros for their reads
    stride1 = all(st == 1 for st in stride) and len(out_shape) == 2
    g["P"] = out_shape[0] * g["padded"][-1] if stride1 else 0
    g["slack"] = (kernel[-1] - 1) * dilation[-1] + NR
    g["ldg"] = -(-g["P"] // W) * W  # the weight gradient's positions, in whole vectors
    g["direct_w"] = (stride1 and g["L"] >= DIRECT_W_MIN_SHARE * -(-out_shape[0] * logical[-1] // W) * W
                     and (few or (wide and Cg * g["K"] <= DIRECT_W_MAX_FIELD)))
    # the forward pass by igemm skips the padding's taps where some kernel rows (planes) reach it
    # and that saves enough: its reduction in tap order (fields and weights), the rows' limits
    # per chunk size (_table)
    limits = None
    if not g["direct"] and len(S) >= 2 and any(padding[:-1]):
        limits = position_limits(out_shape, tuple(S), stride, padding, dilation, kernel)
    g["taps"] = limits is not None and skipped_share(limits, kernel) >= TAPS_MIN_SKIPPED
    if g["taps"]:
        g["order"] = tap_order(Cg, kernel)
        g["tap_fields"] = np.empty_like(g["fields"])
        g["tap_fields"][g["order"]] = g["fields"]
        g["tap_fields"].flags.writeable = False
        g["limits"] = limits
    else:
        g["order"], g["tap_fields"], g["limits"] = NO_ORDER, g["fields"], None
    g["KH"], g["KW"] = kernel[-2] if len(S) >= 2 else 1, kernel[-1]
    g["flip_padding"] = flip_padding(tuple(S), out_shape, stride, padding, kernel, dilation, g["Fg"])
    # a strided layer's input gradient by phases (_PhaseBack), without col2im, where the phase
    # planes' rows fill enough of dconv's blocks of positions (phase_share)
    g["phase_back"] = (len(S) == 2 and any(st > 1 for st in stride) and all(d == 1 for d in dilation)
                       and phase_share(stride, tuple(S), logical, kernel)
                       >= (PHASE_MIN_SHARE_SMALL if g["K"] <= 9 else PHASE_MIN_SHARE))
    g["_tables"], g["_jobs"] = {}, jobs.Templates(TABLES_KEPT)  # offset tables per chunk size, jobs per chunking
    return g


class _PhaseBack:
    """The input gradient of a strided 2-D layer (dilation 1) without col2im: the padded input
    split into its s0 x s1 phases (rows a, a + s0, ...; columns b, b + s1, ...), each phase's
    gradient is a stride-1 correlation of the output gradient with the taps kh = a mod s0,
    kw = b mod s1 of the kernel, run by dconv over the zero-padded gradient's plane, positions
    along the vectors, over only the phase plane's rows that hold input elements (for 28x28,
    stride 2, padding 1: 14 of 15, so 224 positions in 7 whole blocks of 32 instead of 240 in 8);
    the phases are then written into their rows and columns of dx (phase_back_chunk)."""

    def __init__(self, conv):
        self.conv = conv
        self.E, _, self.Hg, self.Wg, _, self.slack, _ = phase_geometry(
            conv.stride, conv.padding, conv.S, conv.padded, conv.kernel, conv.Fg)
        G, Fg, Cg = conv.G, conv.Fg, conv.Cg
        self.plan, self.boffs, order, self.whole = phase_plan(conv.stride, conv.padding, conv.S, conv.padded,
                                                              conv.kernel, Fg, Cg, G)
        w = np.asarray(conv.w, dtype=np.float32).reshape(-1)
        self.wts = w.take(phase_taps((G, Fg, Cg) + conv.kernel, conv.stride, tuple(ab for _, ab in order)))

    def __call__(self, gc, out=None):
        """dx (n, C, *S) of the chunk's output gradient gc (n, F, L), into ``out`` where given
        (contiguous float32)."""
        conv = self.conv
        n = gc.shape[0]
        # every element of dx lies in one phase: written once, unless a phase has no taps
        if out is None:
            dx = (np.empty if self.whole else np.zeros)((n, conv.C) + conv.S, np.float32)
        else:
            dx = out
            if not self.whole:
                dx[...] = 0.0
        phase_back_chunk(np.ascontiguousarray(gc, dtype=np.float32).reshape((n, conv.F) + conv.out_shape), self.Hg,
                         self.Wg, *self.E, self.slack, self.plan, self.wts, self.boffs, dx, conv.Cg, conv.Fg)
        return dx


# The backward passes as compiled jobs (IndirectConv.weight_grad_job, input_grad_job). A weight
# gradient's chunk is a range of images whose gw (F, Cg*K) is the chunk's own part (mode 0, parts
# added in chunk order after), or a range of gw's columns over the whole batch (mode 1, policy's
# weight_rows). Slots as _IO's, with g (N, F, L) for out and gw's address for the bias; then the
# mode, pad, box (3), at (3), plane, fields and their count (Cg*K), Cg, Fg, the images packed at a
# time, and two chunk sizes' tables: size, rows, gcol, whether the filters are the product's rows.
@jobs.job
def _weight_grad_job(a, i):
    """weight_grad_filters or weight_grad_chunk (as weight_grad_rows picks) on chunk i."""
    s = [jobs.slot(a, _IO + k) for k in range(22)]
    t = jobs.slot(a, 0)
    c0, c1 = jobs.slot(t, 2 * i), jobs.slot(t, 2 * i + 1)
    C, D, H, W_, F, L = jobs.slot(a, 2), jobs.slot(a, 3), jobs.slot(a, 4), jobs.slot(a, 5), jobs.slot(a, 7), jobs.slot(a, 8)
    CgK = s[10]
    if s[0] == 0:  # images c0 .. c1 - 1, every column, into the chunk's own part
        n0, n, m0, m1, gw_at = c0, c1 - c0, 0, CgK, jobs.slot(a, 9) + i * F * CgK * 4
    else:  # columns c0 .. c1 - 1 over the whole batch
        n0, n, m0, m1, gw_at = 0, s[14], c0, c1, jobs.slot(a, 9)
    x = carray(jobs.f32(jobs.slot(a, 1) + n0 * C * D * H * W_ * 4), (n, C, D, H, W_))
    g = carray(jobs.f32(jobs.slot(a, 6) + n0 * F * L * 4), (n, F, L))
    gw = carray(jobs.f32(gw_at), (F, CgK))
    k = 14 if n == s[14] else 18
    rows, gcol = carray(jobs.i64(s[k + 1]), (n * L,)), carray(jobs.i64(s[k + 2]), (n * L,))
    fields = carray(jobs.i64(s[9]), (CgK,))
    box, at = (s[2], s[3], s[4]), (s[5], s[6], s[7])
    if s[k + 3]:
        weight_grad_filters(x, s[1] != 0, box, at, s[8], g, rows, gcol, fields, s[11], s[12], gw, m0, m1)
    else:
        weight_grad_chunk(x, s[1] != 0, box, at, s[8], g, rows, fields, s[11], s[12], s[13], gw, m0, m1)


@jobs.job
def _direct_weight_grad_job(a, i):
    """direct_weight_grad_chunk on chunk i into its own part (slots after _IO: Hp, Wp, top, left,
    plane, slack, OH, OW, ldg, fields and their count (Cg*K), Cg, Fg)."""
    s = [jobs.slot(a, _IO + k) for k in range(13)]
    n, x, g = _job_io(a, i)
    F, CgK = g.shape[1], s[10]
    gw = carray(jobs.f32(jobs.slot(a, 9) + i * F * CgK * 4), (F, CgK))
    fields = carray(jobs.i64(s[9]), (CgK,))
    direct_weight_grad_chunk(x, s[0], s[1], s[2], s[3], s[4], s[5], g.reshape((n, F, s[6], s[7])), s[8], fields, gw,
                             s[11], s[12])


@jobs.job
def _phase_back_job(a, i):
    """phase_back_chunk on chunk i: g read as _IO's x (n, F, 1, OH, OW), dx as its out (n, C,
    H*W) (slots after _IO: Hg, Wg, E0, E1, slack, the plan and its shape (2), the weights and their
    count, boffs and their count, Cg, Fg, whether every element of dx is written, H, W)."""
    s = [jobs.slot(a, _IO + k) for k in range(17)]
    n, gv, dxf = _job_io(a, i)
    if not s[14]:
        dxf[...] = 0.0
    plan = carray(jobs.i64(s[5]), (s[6], s[7]))
    wts, boffs = carray(jobs.f32(s[8]), (s[9],)), carray(jobs.i64(s[10]), (s[11],))
    phase_back_chunk(gv.reshape((n, gv.shape[1], gv.shape[3], gv.shape[4])), s[0], s[1], s[2], s[3], s[4], plan, wts,
                     boffs, dxf.reshape((n, dxf.shape[1], s[15], s[16])), s[12], s[13])


@jobs.job
def _col2im_back_job(a, i):
    """IndirectConv.backward's col2im input gradient on chunk i: the fields' gradients per group
    by igemm from g, read as _IO's x (n, F, 1, 1, L), then cpu.col2im3d_nhwc into dx, its out (n,
    C, prod(S)) (slots after _IO: the packed weights (G, panels, Fg, width) and their shape, Cg, K,
    two chunk sizes' tables (size, out_rows), the col2im volume's 18 numbers)."""
    s = [jobs.slot(a, _IO + k) for k in range(29)]
    n, gv, dxf = _job_io(a, i)
    L, G, Fg, Cg, K = gv.shape[4], s[1], s[3], s[5], s[6]
    wb = carray(jobs.f32(s[0]), (G, s[2], Fg, s[4]))
    k = 7 if n == s[7] else 9
    out_rows = carray(jobs.i64(s[k + 1]), (n * L,))
    cols = np.empty((n * L, K * Cg), np.float32)
    crow = np.arange(n * L) * (K * Cg)
    fcol = np.arange(Fg) * L
    S = dxf.shape[2]
    for g in range(G):
        igemm(gv.reshape(-1), g * Fg * L, out_rows, fcol, wb[g], cols.reshape(-1), 0, crow, 1, K * Cg, False)
        part = cpu.col2im3d_nhwc(cols, n, Cg, s[11], s[12], s[13], s[14], s[15], s[16], s[17], s[18], s[19], s[20],
                                 s[21], s[22], s[23], s[24], s[25], s[26], s[27], s[28]).reshape((n, Cg, S))
        dxf[:, g * Cg:(g + 1) * Cg, :] = part


class IndirectConv:
    """A 2-D convolution's three products by ``igemm`` and ``dconv`` (see the module's docstring),
    chunk by chunk.

    forward: out (n, F, L) by dconv for stride-1 layers whose output rows fill most of the padded
    width (direct_forward), else by igemm from the padded input and the weights; either way no
    receptive fields are copied;
    weight gradient: (F, Cg*K) by wgrad for stride-1 layers whose outputs fill most of the padded
    rows (direct_w: the output gradient spread over the padded rows, positions along the vectors),
    else by igemm from the padded input and the output gradient packed a few images at a time;
    input gradient: for stride 1 with an input at most FLIP_MAX_GROWTH times the output, the
    forward pass of another IndirectConv, the output gradient padded by dilation*(k - 1) - padding
    and convolved with the flipped weights, in- and out-channels swapped within each group;
    otherwise the fields' gradients (n*L, K*Cg) per group, then the compiled channels-last col2im.
    Offset tables are cached per geometry and chunk size; each weight layout is made when first used.
    """

    def __init__(self, x_shape, w, stride, padding, dilation, groups, out_shape, w_shape=None, over=inline):
        # the geometry (offset tables, which products run how) is made once per layer shape and
        # shared; only the weights' layouts belong to this call. w None (with its w_shape): the
        # caller sets the weights' layouts (the flipped convolution, _back_conv)
        self.w_shape = tuple(w.shape) if w is not None else tuple(w_shape)
        self.__dict__.update(conv_geometry(tuple(x_shape), self.w_shape, tuple(stride), tuple(padding),
                                           tuple(dilation), groups, tuple(out_shape)))
        self.w, self.over = w, over  # over: how the weights' panels are packed (pack_filters)
        self.wf = None if w is None else np.ascontiguousarray(w, dtype=np.float32).reshape(self.F, self.Cg * self.K)
        self._w_fwd = self._w_back = None
        self._back = None
        self._phased = None

    def prepare_forward(self):
        """Lay out the weights the forward pass reads (a no-op once done, or for the direct form).
        ConvPlan calls it before the chunks' job: made inside the first chunks, both threads made
        it at once under the GIL, one waiting for the other (benchmarks/README.md, "Eighth session
        of issue 22")."""
        if not self.direct and self._w_fwd is None:  # (G, panels, Cg*K, width)
            self._w_fwd = pack_filters(self.wf, self.G, self.over, self.order)

    def prepare_backward(self, needs_x):
        """Lay out the weights the input gradient reads (see prepare_forward): the phases' taps of a
        strided layer, the flipped convolution's packed weights, or the col2im product's panels."""
        if not needs_x:
            return
        if self.phase_back:
            if self._phased is None:
                self._phased = _PhaseBack(self)
        elif self.flip_padding is not None:
            self._back_conv().prepare_forward()
        elif self._w_back is None:  # (F, K*Cg) in (kh, kw, c) order, as the channels-last col2im reads it
            self._w_back = pack_back(np.asarray(self.w), self.G, self.over)

    def _back_conv(self):
        """The IndirectConv whose forward pass is this one's input gradient, made on first use. The
        chunks' threads may both make one (the same); each uses the one it got."""
        back = self._back
        if back is None:
            G, Fg, k = self.G, self.Fg, len(self.kernel)
            w3 = np.ascontiguousarray(self.w, dtype=np.float32).reshape(self.F, self.Cg, self.K)
            back = IndirectConv((self.F,) + self.out_shape, None, (1,) * k, self.flip_padding, self.dilation, G,
                                self.S, w_shape=(self.C, Fg) + self.kernel, over=self.over)
            if back.direct:  # dconv reads the flipped weights as they are
                back.w = flip_filters(w3, G).reshape(back.w_shape)
                back.wf = back.w.reshape(back.F, back.Cg * back.K)
            else:  # igemm reads them packed, made at once
                back._w_fwd = pack_flipped(w3, G, self.over, back.order)
            self._back = back
        return back

    def _table(self, n):
        """(rows, out_rows, lims): each output position's field offset in the padded chunk (n*L,),
        where (image, position) sits in an (n, F, L) array (n*L,), and the forward pass's tap
        limits per LIM_ROWS rows (group_limits; (0, 4) where it does not skip the padding)."""
        tables = self._tables  # shared by the layer's calls (conv_geometry)
        got = tables.get(n)
        if got is None:
            img = np.arange(n, dtype=np.int64)[:, None]
            positions = position_offsets(self.out_shape, self.padded, self.stride)
            rows = (img * self.C * self.plane + positions).ravel()
            out_rows = (img * self.F * self.L + np.arange(self.L, dtype=np.int64)).ravel()
            lims = NO_LIMITS if self.limits is None else group_limits(self.limits, n)
            rows.flags.writeable = out_rows.flags.writeable = lims.flags.writeable = False
            if len(tables) >= TABLES_KEPT:  # a batch's chunks come in at most two sizes, the last batch two more
                tables.clear()
            got = tables[n] = (rows, out_rows, lims)
        return got

    def forward(self, xc, out):
        """out (n, F, L) (contiguous float32) = conv(xc), without bias, in one compiled call."""
        x = np.ascontiguousarray(xc, dtype=np.float32)
        Cg, Fg = self.Cg, self.Fg
        if self.direct:  # positions along the vectors, the padded width's extra columns dropped
            direct_forward_chunk(x, *self.padded, *self.padding, self.plane, self.slack, self.wf, self.fields, out, Cg,
                                 Fg, self.P)
            return
        self.prepare_forward()
        # each block's columns stored straight into (n, F, L) from the registers (store_columns):
        # the row-major product and a transposing pass took 3-11% longer, and were 10-17% faster
        # than a transposing copy of each block through a scratch block (benchmarks/README.md,
        # "Direct or transposed", "Tenth session of issue 22")
        forward_chunk(x, any(self.padding), self.box, self.at, self.plane, *self._table(x.shape[0]),
                      self.tap_fields, self._w_fwd, out, Cg, Fg, self.KH, self.KW)

    def forward_job(self, x, out, chunks, bias=None):
        """The forward pass of a whole batch x (N, C, *S) into out (N, F, L), both contiguous
        float32, ``bias`` (F,) float32 added where given, as a compiled job (kernels/jobs.py's
        Job) over ``chunks``."""
        at = jobs.address
        out_at = 0 if out is None else at(out)  # None: the caller's job gives each chunk its output
        if self.direct:
            head = [at(x), out_at, 0 if bias is None else at(bias), at(self.wf)]
            return self._jobs.job(("forward", tuple(chunks)), head, (1, 6, 9, _IO + 6), [x, out, bias, self.wf],
                             lambda: self._direct_forward_args(chunks, x))
        self.prepare_forward()
        wpk = self._w_fwd
        head = [at(x), out_at, 0 if bias is None else at(bias), at(wpk)]
        return self._jobs.job(("forward", tuple(chunks)), head, (1, 6, 9, _IO + 10), [x, out, bias, wpk],
                         lambda: self._forward_args(chunks, x, wpk))

    def conv_max_pool_job(self, x, chunks, bias, pool, out, arg, relu):
        """conv -> max pooling (-> ReLU where ``relu``) of a whole batch x (N, C, H, W) as a
        compiled job over ``chunks`` (_conv_max_pool_job): ``pool`` = (kernel, stride, padding)
        of the pooling, out (N, F, PH, PW) float32 and arg (the same shape, int32) contiguous;
        ``bias`` (F,) float32 or None."""
        conv = self.forward_job(x, None, chunks, bias)
        (KH, KW), (sh, sw), (ph, pw) = pool
        args = np.array([jobs.address(conv.args), int(self.direct), *self.out_shape, KH, KW, sh, sw, ph, pw,
                         *out.shape[2:], jobs.address(out), jobs.address(arg), int(relu)], np.int64)
        return jobs.Job(_conv_max_pool_job.address, args, conv.count, (conv, out, arg))

    def _direct_forward_args(self, chunks, x):
        """_direct_forward_job's arguments but for the arrays of a call (zeros at the call's slots)."""
        table = jobs.table(chunks)
        args = self._job_head(table, x, None, self.F, self.L, 0) + [
            *self.padded, *self.padding, self.plane, self.slack, 0, self.wf.shape[1], jobs.address(self.fields),
            self.fields.shape[0], self.Cg, self.Fg, self.P]
        return _direct_forward_job.address, args, len(table), [table, self.fields]

    def _forward_args(self, chunks, x, wpk):
        """_forward_job's arguments but for the arrays of a call (zeros at the call's slots)."""
        table, at = jobs.table(chunks), jobs.address
        args = self._job_head(table, x, None, self.F, self.L, 0) + [
            any(self.padding), *self.box, *self.at, self.plane, at(self.tap_fields), self.tap_fields.shape[0], 0,
            *wpk.shape, self.Cg, self.Fg, self.KH, self.KW]
        keep = [table, self.tap_fields]
        for n in jobs.chunk_sizes(table):
            rows, out_rows, lims = self._table(n)
            args += [n, at(rows), at(out_rows), at(lims), lims.shape[0]]
            keep += [rows, out_rows, lims]
        return _forward_job.address, args, len(table), keep

    def _job_head(self, table, x, out, F, L, extra):
        """_IO's slots: x (n, C, *S) read as (n, C, D, H, W), out (n, F, L) (0 where None: a
        template's, its call's put in by jobs.Templates), ``extra``."""
        D, H, W_ = (1,) * (5 - x.ndim) + tuple(x.shape[2:])
        at = jobs.address
        return [at(table), at(x), x.shape[1], D, H, W_, 0 if out is None else at(out), F, L, extra]

    def weight_grad_job(self, x, g, chunks, columns=False):
        """The weight gradient of a whole batch x (N, C, *S) and its output gradient g (N, F, L),
        contiguous float32, as a compiled job (kernels/jobs.py's Job) whose ``sums`` are gw: each of
        ``chunks`` (image ranges) writes its own part gw[j] (F, Cg*K), added in chunk order by the
        caller; with ``columns`` the chunks are ranges of gw's columns over the whole batch,
        written into gw[0] (not for the direct form)."""
        gw = np.empty((1 if columns else len(chunks), self.F, self.Cg * self.K), np.float32)
        at = jobs.address
        return self._jobs.job(("weight", tuple(chunks), columns, x.shape[0]), [at(x), at(g), at(gw)], (1, 6, 9),
                         [x, g, gw], lambda: self._weight_grad_args(chunks, x, columns), gw)

    def _weight_grad_args(self, chunks, x, columns):
        """weight_grad_job's arguments but for the arrays of a call (zeros at the call's slots)."""
        F, L, CgK = self.F, self.L, self.Cg * self.K
        table = jobs.table(chunks)
        head = self._job_head(table, x, None, F, L, 0)
        keep = [table, self.fields]
        if self.direct_w and not columns:
            args = head + [*self.padded, *self.padding, self.plane, self.slack, *self.out_shape, self.ldg,
                           jobs.address(self.fields), CgK, self.Cg, self.Fg]
            return _direct_weight_grad_job.address, args, len(table), keep
        sizes = [x.shape[0]] * 2 if columns else jobs.chunk_sizes(table)
        args = head + [int(columns), any(self.padding), *self.box, *self.at, self.plane, jobs.address(self.fields), CgK,
                       self.Cg, self.Fg, max(1, PACK_POSITIONS // L)]
        for n in sizes:
            rows, gcol = self._table(n)[:2]
            filters = F * CgK >= FILTER_ROWS_MIN_WEIGHTS and rows.shape[0] <= FILTER_ROWS_MAX_POSITIONS
            args += [n, jobs.address(rows), jobs.address(gcol), int(filters)]
            keep += [rows, gcol]
        return _weight_grad_job.address, args, len(table), keep

    def input_grad_job(self, g, gx, chunks):
        """The input gradient of a whole batch's output gradient g (N, F, L) into gx (N, C, *S),
        contiguous float32, as a compiled job (kernels/jobs.py's Job) over ``chunks``: by phases,
        the flipped convolution or the col2im product, as backward picks; None for phases of 3-D
        layers (Python chunks)."""
        N = g.shape[0]
        if self.phase_back and len(self.S) == 2:
            self.prepare_backward(True)
            ph = self._phased
            if ph.plan.dtype != np.int64 or ph.wts.dtype != np.float32 or ph.boffs.dtype != np.int64:
                return None
            table, at = jobs.table(chunks), jobs.address
            gv = g.reshape((N, self.F) + self.out_shape)
            args = self._job_head(table, gv, gx, self.C, math.prod(self.S), 0) + [
                ph.Hg, ph.Wg, *ph.E, ph.slack, at(ph.plan), *ph.plan.shape, at(ph.wts), ph.wts.shape[0], at(ph.boffs),
                ph.boffs.shape[0], self.Cg, self.Fg, int(ph.whole), *self.S]
            return jobs.Job(_phase_back_job.address, args, len(table), [table, gv, gx, ph])
        if self.flip_padding is not None and not self.phase_back:
            back = self._back_conv()
            return back.forward_job(g.reshape((N, self.F) + self.out_shape), gx.reshape(N, self.C, math.prod(self.S)),
                                    chunks)
        if self.phase_back:
            return None
        self.prepare_backward(True)
        wb = self._w_back[0].base  # pack_back's (G, panels, Fg, width), of which _w_back holds the groups
        if wb is None or wb.ndim != 4 or not wb.flags.c_contiguous or wb.shape[0] != self.G:
            return None
        table, at = jobs.table(chunks), jobs.address
        gv = g.reshape(N, self.F, 1, 1, self.L)
        args = self._job_head(table, gv, gx, self.C, math.prod(self.S), 0) + [at(wb), *wb.shape, self.Cg, self.K]
        keep = [table, gv, gx, wb]
        for n in jobs.chunk_sizes(table):
            out_rows = self._table(n)[1]
            args += [n, at(out_rows)]
            keep.append(out_rows)
        args += list(self.volume)
        return jobs.Job(_col2im_back_job.address, args, len(table), keep)

    def weight_grad_rows(self, xc, gc, m0, m1, gw):
        """Columns [m0, m1) of the weight gradient gw (F, Cg*K) of images xc and their output
        gradient gc (n, F, L) by igemm, the gradient packed a few images at a time (not the direct
        form): the fields' elements m0..m1 - 1 over all of the images' positions."""
        x = np.ascontiguousarray(xc, dtype=np.float32)
        gc = np.ascontiguousarray(gc, dtype=np.float32)
        rows, gcol = self._table(x.shape[0])[:2]
        if self.F * self.Cg * self.K >= FILTER_ROWS_MIN_WEIGHTS and rows.shape[0] <= FILTER_ROWS_MAX_POSITIONS:
            weight_grad_filters(x, any(self.padding), self.box, self.at, self.plane, gc, rows, gcol, self.fields,
                                self.Cg, self.Fg, gw, m0, m1)
        else:
            weight_grad_chunk(x, any(self.padding), self.box, self.at, self.plane, gc, rows, self.fields, self.Cg,
                              self.Fg, max(1, PACK_POSITIONS // self.L), gw, m0, m1)

    def backward(self, xc, gc, needs_x, needs_w, gx_out=None):
        """(dx (n, C, *S) or None, dW part (F, Cg*K) in (c, *k) order or None) for a chunk; the
        dx of strided layers and of the flipped convolution written into ``gx_out`` where given
        (contiguous float32)."""
        n = xc.shape[0]
        rows, out_rows = self._table(n)[:2]
        Cg, Fg, L, K, G = self.Cg, self.Fg, self.L, self.K, self.G
        gc = np.ascontiguousarray(gc, dtype=np.float32)
        gf = gc.reshape(-1)
        gw = gx = None
        if needs_w:
            x = np.ascontiguousarray(xc, dtype=np.float32)
            gw = np.empty((self.F, Cg * K), np.float32)
        if needs_w and self.direct_w:
            direct_weight_grad_chunk(x, *self.padded, *self.padding, self.plane, self.slack,
                                     gc.reshape((n, self.F) + self.out_shape), self.ldg, self.fields, gw, Cg, Fg)
        elif needs_w:  # the gradient packed a few images at a time
            self.weight_grad_rows(x, gc, 0, Cg * K, gw)
        fits = gx_out is not None and gx_out.flags.c_contiguous and gx_out.dtype == np.float32
        if needs_x and self.phase_back:
            self.prepare_backward(True)  # made before the chunks' job where ConvPlan runs it
            gx = self._phased(gc, gx_out if fits else None)
        elif needs_x and self.flip_padding is not None:
            gx = gx_out if fits else np.empty((n, self.C) + self.S, np.float32)
            self._back_conv().forward(gc.reshape((n, self.F) + self.out_shape), gx.reshape(n, self.C, math.prod(self.S)))
        elif needs_x:
            self.prepare_backward(True)
            cols = np.empty((n * L, K * Cg), np.float32)
            crow = np.arange(n * L, dtype=np.int64) * (K * Cg)
            fcol = np.arange(Fg, dtype=np.int64) * L
            gx = np.empty((n, self.C) + self.S, np.float32) if G > 1 else None
            for g in range(G):
                igemm(gf, g * Fg * L, out_rows, fcol, self._w_back[g], cols.reshape(-1), 0, crow, 1, K * Cg, False)
                part = cpu.col2im3d_nhwc(cols, n, Cg, *self.volume).reshape((n, Cg) + self.S)
                if G == 1:
                    gx = part
                else:
                    gx[:, g * Cg:(g + 1) * Cg] = part
        return gx, gw
