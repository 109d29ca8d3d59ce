"""The indirect GEMM (kernels/igemm.py) and the float32 convolutions it carries: the product
against its definition by loops, every convolution product (output, weight and input gradient,
both input-gradient forms) against the naive definition, PyTorch and the float64 im2col path
(itself checked by float64 finite differences in test_conv.py), and which layers take it.

The micro-kernel is LLVM vector code, correct on any x86-64 CPU (16-lane vectors are split where
AVX-512 is missing); the tests force the path on (policy._avx512) so they run everywhere."""

import math

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels
from cnnlab.functional.conv import ConvPlan, conv_output_shape
from cnnlab.kernels import igemm, policy
from harness import rel_error, torch
from helpers import naive_conv


@pytest.fixture(autouse=True)
def _avx512(monkeypatch):
    monkeypatch.setattr(policy, "_avx512", True)


def _loop_product(a, a0, row, col, b, M, N):
    out = np.zeros((M, N))
    for i in range(M):
        for j in range(N):
            out[i, j] = sum(float(a[a0 + row[i] + col[k]]) * float(b[k, j]) for k in range(len(col)))
    return out


@pytest.mark.parametrize("M,K,N", [(8, 5, 32), (13, 7, 40), (1, 1, 1), (17, 3, 16), (9, 4, 33), (5, 0, 3)])
@pytest.mark.parametrize("layout", ["dense", "transposed"])
def test_product_matches_its_definition(M, K, N, layout):
    rng = np.random.default_rng(M * 100 + K * 10 + N)
    a = rng.standard_normal(500).astype(np.float32)
    a0 = 3
    row = rng.integers(0, 200, M).astype(np.int64)  # any offsets: gathered reads
    col = rng.integers(0, 200, K).astype(np.int64)
    b = rng.standard_normal((K, N)).astype(np.float32)
    ref = _loop_product(a, a0, row, col, b, M, N)
    c = np.full(M * N + 7, 5.0, np.float32)  # C at offset 7 in a larger buffer
    if layout == "dense":
        crow, ccs = 7 + np.arange(M, dtype=np.int64) * N, 1
        got = lambda: c[7:].reshape(M, N)  # noqa: E731
    else:
        crow, ccs = 7 + np.arange(M, dtype=np.int64), M
        got = lambda: c[7:].reshape(N, M).T  # noqa: E731
    igemm.igemm(a, a0, row, col, igemm.pack_columns(b), c, 0, crow, ccs, N, False)
    np.testing.assert_allclose(got(), ref, rtol=1e-5, atol=1e-5)
    assert np.all(c[:7] == 5.0)  # nothing written outside C
    igemm.igemm(a, a0, row, col, igemm.pack_columns(b), c, 0, crow, ccs, N, True)  # accumulate
    np.testing.assert_allclose(got(), 2 * ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,L,K,F", [(3, 40, 50, 32), (2, 64, 300, 16), (2, 37, 20, 20), (1, 17, 5, 40),
                                     (4, 16, 700, 8), (2, 48, 33, 64), (2, 1, 9, 24)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_product_into_a_filters_by_positions_layout(n, L, K, F, accumulate):
    """C written as (n, F, L), its columns L apart (the forward pass's output): straight from the
    registers, transposed, where a block's rows are consecutive positions of one image, through the
    small block where they cross images; a last panel of fewer filters; added to C with
    ``accumulate``; nothing outside C written."""
    rng = np.random.default_rng(n * L + K + F)
    a = rng.standard_normal(n * L * K).astype(np.float32)
    b = rng.standard_normal((K, F)).astype(np.float32)
    row = (np.arange(n * L) * K).astype(np.int64)
    crow = (np.arange(n)[:, None] * F * L + np.arange(L)).ravel().astype(np.int64)
    start = rng.standard_normal((n, F, L)).astype(np.float32) if accumulate else np.zeros((n, F, L), np.float32)
    buf = np.full(n * F * L + 64, np.nan, np.float32)
    buf[16:16 + n * F * L] = start.ravel()
    igemm.igemm(a, 0, row, np.arange(K, dtype=np.int64), igemm.pack_columns(b), buf, 16, crow, L, F, accumulate)
    ref = start + (a.reshape(n * L, K).astype(np.float64) @ b.astype(np.float64)).reshape(n, L, F).transpose(0, 2, 1)
    assert rel_error(buf[16:16 + n * F * L].reshape(n, F, L), ref) < 2e-6
    assert np.isnan(buf[:16]).all() and np.isnan(buf[16 + n * F * L:]).all()


def _runs_of_rows(M, step, breaks, seed):
    """M row offsets step apart (the run block's rows), restarting at ``breaks``: runs broken there."""
    rng = np.random.default_rng(seed)
    row = np.arange(M, dtype=np.int64) * step
    for b in breaks:
        row[b:] += rng.integers(3, 40)
    return row


@pytest.mark.parametrize("M, step, breaks", [
    (64, 1, []), (64, 2, []),  # every block of RUN_ROWS rows in runs, 1 or 2 apart
    (53, 1, [14, 31]), (40, 2, [17]),  # runs broken inside blocks: the 8-row block there, last rows padded
    (37, 3, []),  # rows 3 apart: never the run block
])
@pytest.mark.parametrize("layout", ["dense", "transposed", "scattered"])
@pytest.mark.parametrize("N", [16, 9, 40])
def test_narrow_panels_on_rows_in_runs(M, step, breaks, layout, N):
    """A last panel of at most 16 columns on rows in runs (igemm.RUN_ROWS rows, runs of
    RUN_LENGTH rows 1 or 2 elements apart): the same products as the definition, in each of C's
    layouts, added with ``accumulate``; nothing outside C written."""
    rng = np.random.default_rng(M * N + step)
    row = _runs_of_rows(M, step, breaks, M)
    K = 23
    a = rng.standard_normal(int(row.max()) + 4 * K + 8).astype(np.float32)
    col = (np.arange(K) * 4).astype(np.int64)
    b = rng.standard_normal((K, N)).astype(np.float32)
    ref = a[row[:, None] + col[None, :]].astype(np.float64) @ b
    if layout == "dense":
        crow, ccs, view = np.arange(M, dtype=np.int64) * N, 1, lambda c: c.reshape(M, N)
    elif layout == "transposed":
        crow, ccs, view = np.arange(M, dtype=np.int64), M, lambda c: c.reshape(N, M).T
    else:  # rows in a shuffled order: through the small block
        order = rng.permutation(M)
        crow, ccs, view = order.astype(np.int64) * N, 1, lambda c: c.reshape(M, N)[order]
    c = np.full(M * N + 32, np.nan, np.float32)
    igemm.igemm(a, 0, row, col, igemm.pack_columns(b), c, 16, crow, ccs, N, False)
    assert rel_error(view(c[16:16 + M * N]), ref) < 2e-6
    assert np.isnan(c[:16]).all() and np.isnan(c[16 + M * N:]).all()
    igemm.igemm(a, 0, row, col, igemm.pack_columns(b), c, 16, crow, ccs, N, True)
    assert rel_error(view(c[16:16 + M * N]), 2 * ref) < 2e-6


def test_long_reductions_are_summed_over_slices():
    """More reduction steps than one slice (igemm.KC_MAX): the equal slices' sums add up."""
    rng = np.random.default_rng(1)
    K = igemm.KC_MAX * 2 + 37
    a = rng.standard_normal(K + 16).astype(np.float32)
    row, col = np.arange(9, dtype=np.int64), np.arange(K, dtype=np.int64)
    b = rng.standard_normal((K, 20)).astype(np.float32)
    c = np.empty(9 * 20, np.float32)
    igemm.igemm(a, 0, row, col, igemm.pack_columns(b), c, 0, np.arange(9, dtype=np.int64) * 20, 1, 20, False)
    ref = np.stack([a[i:i + K] for i in range(9)]).astype(np.float64) @ b
    np.testing.assert_allclose(c.reshape(9, 20), ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("n,F,T,K", [(3, 11, 3, 13), (1, 4, 1, 4), (2, 9, 40, 7), (5, 1, 2, 1)])
def test_direct_weight_gradient_against_loops(n, F, T, K):
    """wgrad: out[f, k] = sum over images and positions of g * x at the field element's offset,
    filters and field elements past whole blocks (igemm.MRW, NKW) and slices (SLICE) included."""
    rng = np.random.default_rng(n * 100 + F)
    ldg, xstride = T * igemm.W, T * igemm.W + 70
    g = rng.standard_normal(n * F * ldg + 5).astype(np.float32)
    x = rng.standard_normal(n * xstride + 60).astype(np.float32)
    xoff = rng.integers(0, 60, K).astype(np.int64)
    ref = np.zeros((F, K))
    for i in range(n):
        for f in range(F):
            for k in range(K):
                for p in range(ldg):
                    ref[f, k] += float(g[5 + i * F * ldg + f * ldg + p]) * float(x[i * xstride + xoff[k] + p])
    out = np.full((F, K), 7.0, np.float32)
    igemm.wgrad(g, 5, F * ldg, ldg, F, x, 0, xstride, n, xoff, out, False)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    igemm.wgrad(g, 5, F * ldg, ldg, F, x, 0, xstride, n, xoff, out, True)  # accumulate
    np.testing.assert_allclose(out, 2 * ref, rtol=1e-5, atol=1e-4)
    igemm.wgrad(g, 5, F * ldg, ldg, F, x, 0, xstride, 0, xoff, out, False)  # no images: zero
    assert not out.any()


def test_pack_columns():
    b = np.arange(3 * 40, dtype=np.float32).reshape(3, 40)
    p = igemm.pack_columns(b)
    assert p.shape == (2, 3, 32)
    np.testing.assert_array_equal(p[0], b[:, :32])
    np.testing.assert_array_equal(p[1, :, :8], b[:, 32:])
    assert not p[1, :, 8:].any()
    narrow = igemm.pack_columns(b[:, :12])  # at most 16 columns: one panel of 16
    assert narrow.shape == (1, 3, 16)
    np.testing.assert_array_equal(narrow[0, :, :12], b[:, :12])
    assert not narrow[0, :, 12:].any()


@pytest.mark.parametrize("n, Fall, L, f0, F", [
    (3, 64, 196, 0, 64),  # whole tiles of filters, positions 12 past the last whole tile
    (2, 40, 17, 8, 20),  # a part panel: 16 + 4 filters of 32 columns, the rest zeros
    (2, 7, 5, 2, 5),  # fewer filters and positions than one tile
    (1, 3, 1, 0, 3),
    (4, 96, 48, 32, 33),  # two panels, the second holding one filter
    (2, 16, 784, 0, 16),  # one 16-column panel
])
def test_pack_rows_of_is_the_gradient_transposed_in_panels(n, Fall, L, f0, F):
    """The weight gradient's packed output gradient (16 x 16 tiles transposed in registers):
    row (i, l) of panel jb holds g[i, f0 + jb*width : ..., l], zeros past the F filters."""
    g = np.random.default_rng(n * L + F).standard_normal((n, Fall, L)).astype(np.float32)
    p = igemm.pack_rows_of(g, f0, F)
    rows = np.ascontiguousarray(g[:, f0:f0 + F].transpose(0, 2, 1)).reshape(n * L, F)
    np.testing.assert_array_equal(p, igemm.pack_columns(rows))


@pytest.mark.parametrize("shape, at, box, extra, slack", [
    ((2, 3, 1, 16, 16), (0, 1, 1), (1, 18, 18), 0, 0),  # padded rows of one vector and two lanes
    ((2, 2, 1, 28, 28), (0, 2, 2), (1, 32, 32), 5, 31),  # planes longer than the box, slack after
    ((2, 2, 4, 5, 5), (1, 1, 2), (6, 7, 9), 3, 7),  # volumes, asymmetric padding
    ((1, 2, 1, 5, 40), (0, 3, 0), (1, 9, 41), 0, 2),  # no left padding, rows of 2 vectors + 9 lanes
    ((1, 1, 1, 1, 100), (0, 0, 7), (1, 1, 120), 1, 0),  # a 1-D signal
    ((1, 2, 1, 3, 3), (0, 0, 0), (1, 3, 3), 0, 0),  # nothing around it
    ((1, 2, 1, 1, 20), (0, 1, 2), (1, 3, 25), 2, 1),  # few rows (row by row), a zero row each side
])
def test_place_volumes_puts_each_volume_in_its_box_of_zeros(shape, at, box, extra, slack):
    """Every element of out is written: x at ``at`` in each box of zeros, zeros to the end of each
    volume of Dp*Hp*Wp + extra, then ``slack`` zeros (out starts full of sevens)."""
    n, C, D, H, W_ = shape
    x = np.random.default_rng(H * W_).standard_normal(shape).astype(np.float32)
    vol = math.prod(box) + extra
    out = np.full(n * C * vol + slack, 7.0, np.float32)
    igemm.place_volumes(x, out, *box, *at, vol, slack)
    ref = np.zeros((n * C, vol), np.float32)
    boxes = ref[:, :math.prod(box)].reshape((n * C,) + box)
    (f, t, left) = at
    boxes[:, f:f + D, t:t + H, left:left + W_] = x.reshape(n * C, D, H, W_)
    np.testing.assert_array_equal(out, np.concatenate([ref.ravel(), np.zeros(slack, np.float32)]))


# (N, C, H, W), (F, C/groups, KH, KW), stride, padding, dilation, groups; all take the path
CASES = [
    ((3, 6, 9, 9), (16, 6, 3, 3), 1, 1, 1, 1),  # 'same': input gradient by the flipped convolution
    ((2, 5, 12, 12), (20, 5, 5, 5), 1, 0, 1, 1),  # Nielsen's second layer's shape: fields' gradients
    ((2, 8, 11, 10), (24, 8, 3, 3), 2, 1, 1, 1),  # strided
    ((2, 6, 13, 12), (12, 6, 3, 2), (2, 1), (1, 2), (1, 2), 1),  # rectangular, dilated
    ((2, 8, 8, 8), (26, 4, 3, 3), 1, 1, 1, 2),  # grouped, 13 filters per group
    ((3, 4, 7, 7), (40, 4, 3, 3), 1, 2, 2, 1),  # dilated 'same', two panels of filters
    ((1, 40, 5, 5), (13, 40, 1, 1), 1, 0, 1, 1),  # 1x1
    ((2, 1, 16, 16), (8, 1, 3, 3), 1, 0, 1, 1),  # a first layer: 9 products, direct forward
    ((2, 6, 12, 12), (10, 6, 3, 3), 1, 2, 2, 1),  # dilated, direct forward
    ((2, 48, 8, 8), (16, 48, 3, 3), 1, 1, 1, 1),  # direct forward, 432 products: two slices (KC_MAX)
    ((2, 1, 16, 16), (3, 1, 5, 5), 1, 2, 1, 1),  # the article's first layer: 3 filters, direct
    ((2, 4, 10, 10), (6, 2, 3, 3), 1, 1, 1, 2),  # grouped, 3 filters per group, direct
    # strided: the input gradient by phases (some phases without taps where the kernel is
    # shorter than the stride, or without input where the padding fills them)
    ((2, 8, 9, 11), (16, 8, 2, 2), 3, 0, 1, 1),
    ((2, 6, 12, 13), (12, 6, 3, 5), (2, 3), (1, 2), 1, 1),
    ((2, 3, 27, 27), (16, 3, 11, 11), 4, 2, 1, 1),  # AlexNet's first layer's shape, smaller
    ((2, 8, 10, 10), (16, 4, 3, 3), 2, 1, 1, 2),  # grouped
    ((2, 40, 7, 7), (16, 40, 1, 1), 2, 0, 1, 1),  # 1x1, stride 2: three phases without taps
    ((2, 3, 22, 29), (24, 3, 3, 3), 1, 1, 1, 1),  # 24 filters on rows of 29 of 31: direct
    ((2, 4, 20, 28), (24, 4, 3, 3), 1, 2, 2, 1),  # the same dilated, 28 of 32: the other orientation
    ((2, 16, 10, 10), (16, 16, 3, 3), 1, 0, 1, 1),  # 16 filters, input 1.56x the output: flipped
    ((2, 8, 6, 7), (16, 8, 1, 1), 1, 1, 1, 1),  # 1x1 with padding: rows keep their own right padding
    ((2, 8, 7, 9), (16, 8, 2, 2), 1, (1, 2), 1, 1),  # the same, the kernel's reach 1 short of it
]


def test_flipped_input_gradient_reaches_further_for_narrow_groups():
    """The input gradient is the flipped convolution up to FLIP_MAX_GROWTH times the output's
    positions, FLIP_MAX_GROWTH_NARROW for at most 16 filters per group (10x10 -> 8x8: 1.56x)."""
    assert igemm.FLIP_MAX_GROWTH < 100 / 64 <= igemm.FLIP_MAX_GROWTH_NARROW
    args = ((10, 10), (8, 8), (1, 1), (0, 0), (3, 3), (1, 1))
    assert igemm.flip_padding(*args, 16) == (2, 2)
    assert igemm.flip_padding(*args, 17) is None
    assert igemm.flip_padding((12, 12), (8, 8), (1, 1), (0, 0), (5, 5), (1, 1), 16) is None  # 2.25x


# the strided cases of dilation 1, a 16x16 input (phase rows of 80 positions: 64 + 16) and a 6x6 one
STRIDED = [c for c in CASES if c[2] != 1 and c[4] == 1] + [((2, 6, 16, 16), (12, 6, 3, 3), 2, 1, 1, 1),
                                                          ((1, 4, 6, 6), (8, 4, 3, 3), 2, 1, 1, 1)]


@pytest.mark.parametrize("phases", [True, False], ids=["phases", "col2im"])
@pytest.mark.parametrize("case", STRIDED)
def test_strided_input_gradient_both_ways(case, phases, monkeypatch):
    """A strided layer's input gradient by phases (dconv, its last blocks of 16 or 32 positions)
    or through the fields' gradients and col2im (igemm.PHASE_MIN_SHARE(_SMALL) decide; forced either
    way here) against the definition's float64 path and PyTorch."""
    for name in ("PHASE_MIN_SHARE", "PHASE_MIN_SHARE_SMALL"):
        monkeypatch.setattr(igemm, name, 0.0 if phases else 2.0)
    igemm.conv_geometry.cache_clear()
    try:
        x, w, b = _case(case, 5)
        s, p, d, g = _params(case)
        assert kernels.indirect_conv(x.shape[1:], w.astype(np.float32), s, p, d, g,
                                     conv_output_shape(x.shape[2:], w.shape[2:], s, p, d)).phase_back == phases
        up = np.random.default_rng(6).standard_normal(naive_conv(x, w, b, s, p, d, g).shape)
        got = _run(case, (x, w, b), np.float32, up)
        exact = _run(case, (x, w, b), np.float64, up)
    finally:
        igemm.conv_geometry.cache_clear()
    for a, e in zip(got, exact):
        assert rel_error(a, e) < 2e-6
    for a, t in zip(got[1:], _torch(case, (x, w, b), np.float64, up)[1:]):
        assert rel_error(a, t) < 2e-6


def test_both_weight_gradient_forms_are_in_the_cases():
    """The cases below reach the direct weight gradient (stride 1, outputs filling most of the
    padded rows) and igemm's packed one."""
    forms = set()
    for case in CASES:
        x, w, _ = _case(case)
        forms.add(ConvPlan(x.astype(np.float32), w.astype(np.float32), None, *_params(case)).ig.direct_w)
    assert forms == {True, False}


def _case(case, seed=0):
    xs, ws, *_ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs)
    w = 0.3 * rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    return x, w, b


def _params(case):
    """(stride, padding, dilation) as tuples over the case's spatial axes (2 or 3), and groups."""
    xs, _, s, p, d, g = case
    t = lambda v: (v,) * (len(xs) - 2) if isinstance(v, int) else tuple(v)  # noqa: E731
    return t(s), t(p), t(d), g


def _run(case, arrays, dtype, up):
    """conv2d or conv3d (by the case's input) forward and backward: [output, *gradients]."""
    s, p, d, g = _params(case)
    ts = [cnnlab.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out = (F.conv2d if len(case[0]) == 4 else F.conv3d)(*ts, stride=s, padding=p, dilation=d, groups=g)
    out.backward(cnnlab.tensor(up.astype(dtype)))
    return [out.numpy()] + [t.grad.numpy() for t in ts]


def _torch(case, arrays, dtype, up):
    """PyTorch's conv2d or conv3d of the case in ``dtype``, forward and backward: [output, *gradients]."""
    s, p, d, g = _params(case)
    ts = [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out = (torch.nn.functional.conv2d if len(case[0]) == 4 else torch.nn.functional.conv3d)(
        *ts, stride=s, padding=p, dilation=d, groups=g)
    out.backward(torch.tensor(up.astype(dtype)))
    return [out.detach().numpy()] + [t.grad.numpy() for t in ts]


def _spy(monkeypatch, name):
    """The decisions policy.<name> returns from now on, listed as they are made."""
    taken, rule = [], getattr(policy, name)
    monkeypatch.setattr(policy, name, lambda *a: taken.append(rule(*a)) or taken[-1])
    return taken


@pytest.mark.parametrize("case", CASES)
def test_convolution_matches_definition_float64_path_and_torch(case):
    x, w, b = _case(case)
    s, p, d, g = _params(case)
    assert ConvPlan(x.astype(np.float32), w.astype(np.float32), None, s, p, d, g).indirect
    assert not ConvPlan(x, w, None, s, p, d, g).indirect  # float64 keeps the BLAS paths
    ref = naive_conv(x, w, b, s, p, d, g)
    up = np.random.default_rng(9).standard_normal(ref.shape)
    got = _run(case, (x, w, b), np.float32, up)
    assert rel_error(got[0], ref) < 2e-6
    exact = _run(case, (x, w, b), np.float64, up)  # im2col/channels-last, finite-difference checked
    np.testing.assert_allclose(exact[0], ref, rtol=1e-10, atol=1e-10)
    for a, e in zip(got, exact):
        assert a.dtype == np.float32 and rel_error(a, e) < 5e-6
    for a, t in zip(got, _torch(case, (x, w, b), np.float32, up)):
        assert rel_error(a, t) < 5e-6


def test_weight_gradient_by_loops():
    # dW[f, c, i, j] = sum over n, y, x of g[n, f, y, x] * xpad[n, c, y*s + i, x*s + j], by loops
    case = ((2, 3, 7, 7), (12, 3, 3, 3), 2, 1, 1, 1)
    x, w, b = _case(case, 4)
    x, w = x.astype(np.float32), w.astype(np.float32)
    xt, wt = cnnlab.tensor(x), cnnlab.tensor(w, requires_grad=True)
    out = F.conv2d(xt, wt, None, 2, 1)
    g = np.random.default_rng(5).standard_normal(out.shape).astype(np.float32)
    out.backward(cnnlab.tensor(g))
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    ref = np.zeros(w.shape)
    for f in range(12):
        for c in range(3):
            for i in range(3):
                for j in range(3):
                    ref[f, c, i, j] = sum(g[n, f, y, xx] * xpad[n, c, 2 * y + i, 2 * xx + j]
                                          for n in range(2) for y in range(4) for xx in range(4))
    np.testing.assert_allclose(wt.grad.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_batch_in_chunks_over_threads_is_deterministic(monkeypatch):
    """A batch split into many chunks (both cores) gives the one-chunk result, bit for bit twice."""
    case = ((12, 8, 10, 10), (16, 8, 3, 3), 1, 1, 1, 1)
    x, w, b = _case(case, 6)
    up = np.random.default_rng(7).standard_normal((12, 16, 10, 10))
    monkeypatch.setattr(policy, "CPU_CHUNK_BYTES", 1 << 12)
    monkeypatch.setattr(policy, "SPLIT_MIN_BYTES", 0)
    first = _run(case, (x, w, b), np.float32, up)
    again = _run(case, (x, w, b), np.float32, up)
    for a, c in zip(first, again):
        np.testing.assert_array_equal(a, c)
    monkeypatch.setattr(policy, "CPU_CHUNK_BYTES", 1 << 30)
    whole = _run(case, (x, w, b), np.float32, up)
    for a, c in zip(first, whole):
        assert rel_error(a, c) < 2e-6


@pytest.mark.parametrize("case", [((1, 8, 9, 9), (16, 8, 3, 3), 1, 1, 1, 1), ((1, 8, 12, 12), (16, 8, 5, 5), 1, 2, 1, 1)])
def test_one_chunk_backward_as_two_jobs_gives_the_same_bits(case, monkeypatch):
    """A batch of one chunk computes its input and weight gradients side by side on the two cores:
    one compiled job of the two (ConvPlan._indirect_batch_backward), or two Python jobs
    (policy.split_backward) where that job does not apply: the same bits as the two in one Python
    job, twice."""
    x, w, b = _case(case, 3)
    s, p, d, g = _params(case)
    up = np.random.default_rng(4).standard_normal((case[0][0], case[1][0]) + conv_output_shape(case[0][2:], case[1][2:],
                                                                                               s, p, d))
    monkeypatch.setattr(policy, "WORKERS", 2)
    monkeypatch.setattr(policy, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(policy, "_avx512", True)
    first = _run(case, (x, w, b), np.float32, up)
    again = _run(case, (x, w, b), np.float32, up)
    monkeypatch.setattr(ConvPlan, "_indirect_batch_backward", lambda *a: None)
    taken = _spy(monkeypatch, "split_backward")
    split = _run(case, (x, w, b), np.float32, up)
    assert taken == [True]
    monkeypatch.setattr(policy, "split_backward", lambda *a: False)
    serial = _run(case, (x, w, b), np.float32, up)
    for a, c, e, f in zip(first, again, serial, split):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(a, e)
        np.testing.assert_array_equal(a, f)


@pytest.mark.parametrize("case", [((6, 8, 8, 8), (16, 8, 3, 3), 2, 1, 1, 1),  # strided, col2im
                                  ((5, 6, 9, 9), (16, 6, 3, 3), 1, 1, 1, 1),  # the flipped input gradient
                                  ((4, 8, 10, 10), (32, 4, 3, 3), 2, 1, 1, 2),  # grouped, phases
                                  ((5, 40, 4, 4), (20, 40, 1, 1), 1, 0, 1, 1)])  # 1x1
def test_weight_gradient_over_the_batch_by_rows(case, monkeypatch):
    """Chunks with short reductions (policy.weight_rows): the weight gradient over the whole batch
    as one job per core, each for a share of the fields' elements, beside the chunks' input
    gradients: the float64 path's results and PyTorch's, the same bits twice, and the path taken."""
    x, w, b = _case(case, 17)
    s, p, d, g = _params(case)
    up = np.random.default_rng(18).standard_normal(naive_conv(x, w, b, s, p, d, g).shape)
    monkeypatch.setattr(policy, "WORKERS", 2)
    monkeypatch.setattr(policy, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(policy, "INDIRECT_CHUNK_BYTES", 1)  # one image a chunk
    monkeypatch.setattr(policy, "WEIGHT_ROWS_MAX_POSITIONS", 1 << 20)
    taken = _spy(monkeypatch, "weight_rows")
    got = _run(case, (x, w, b), np.float32, up)
    assert taken == [True]
    again = _run(case, (x, w, b), np.float32, up)
    exact = _run(case, (x, w, b), np.float64, up)
    for a, c, e in zip(got, again, exact):
        np.testing.assert_array_equal(a, c)
        assert rel_error(a, e) < 5e-6
    for a, t in zip(got[1:], _torch(case, (x, w, b), np.float64, up)[1:]):
        assert rel_error(a, t) < 5e-6


def test_chunks_on_both_threads_share_the_lazily_made_parts(monkeypatch):
    """The chunks' threads make the flipped convolution and the packed weights on first use, at
    the same time: repeated, every pass gives the same bits and none fails. (A race there once
    handed a finished flipped convolution to a second thread as its padding; the window is too
    narrow to reproduce on demand, so this is a stress test, not a proof.)"""
    monkeypatch.setattr(policy, "CPU_CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(policy, "SPLIT_MIN_BYTES", 0)
    case = ((8, 8, 8, 8), (16, 8, 3, 3), 1, 1, 1, 1)
    x, w, b = _case(case, 10)
    up = np.random.default_rng(11).standard_normal((8, 16, 8, 8))
    first = _run(case, (x, w, b), np.float32, up)
    for _ in range(30):
        again = _run(case, (x, w, b), np.float32, up)
        for a, c in zip(first, again):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("stride", [1, 2])
def test_calls_of_one_shape_share_its_geometry_not_its_weights(stride):
    """Every call of a layer shape shares one conv_geometry (offset tables per chunk size, kept
    for at most TABLES_KEPT sizes); the weights, and so the results, are each call's own: two
    weights and more batch sizes than are kept, interleaved, each against the definition."""
    rng = np.random.default_rng(12)
    ws = [rng.standard_normal((16, 4, 3, 3)).astype(np.float32) for _ in range(2)]
    sizes = list(range(1, igemm.TABLES_KEPT + 3))
    for n in sizes + sizes[::-1]:
        for w in ws:
            x = rng.standard_normal((n, 4, 9, 9)).astype(np.float32)
            xt, wt = cnnlab.tensor(x, requires_grad=True), cnnlab.tensor(w, requires_grad=True)
            out = F.conv2d(xt, wt, stride=stride, padding=1)
            g = rng.standard_normal(out.shape).astype(np.float32)
            out.backward(cnnlab.tensor(g))
            assert ConvPlan(x, w, None, (stride,) * 2, (1, 1), (1, 1), 1).indirect
            assert rel_error(out.numpy(), naive_conv(x.astype(np.float64), w.astype(np.float64), None, (stride,) * 2,
                                                     (1, 1), (1, 1), 1)) < 2e-6
            ref = _run(((n, 4, 9, 9), (16, 4, 3, 3), stride, 1, 1, 1), (x, w, np.zeros(16)), np.float64, g)
            assert rel_error(xt.grad.numpy(), ref[1]) < 5e-6 and rel_error(wt.grad.numpy(), ref[2]) < 5e-6
    geometry = igemm.conv_geometry((4, 9, 9), (16, 4, 3, 3), (stride,) * 2, (1, 1), (1, 1), 1,
                                   ((9 + 2 - 3) // stride + 1,) * 2)
    assert 0 < len(geometry["_tables"]) <= igemm.TABLES_KEPT
    assert all(not a.flags.writeable for pair in geometry["_tables"].values() for a in pair)


def test_weight_gradient_packed_a_few_images_at_a_time(monkeypatch):
    """The output gradient packed for a few images at a time (igemm.PACK_POSITIONS), the products
    accumulated: the weight gradient of the whole chunk at once."""
    case = ((5, 8, 9, 9), (16, 8, 3, 3), 1, 1, 1, 1)
    x, w, b = _case(case, 8)
    up = np.random.default_rng(9).standard_normal((5, 16, 9, 9))
    whole = _run(case, (x, w, b), np.float32, up)
    monkeypatch.setattr(igemm, "PACK_POSITIONS", 100)  # one image (81 positions) per packing
    sliced = _run(case, (x, w, b), np.float32, up)
    for a, c in zip(whole, sliced):
        assert rel_error(a, c) < 2e-6


@pytest.mark.parametrize("d,stride,padding,filters,inputs", [
    (1, 1, 1, 16, (8, 1, 20)), (1, 2, 1, 16, (8, 1, 20)),
    (3, 1, 1, 16, (3, 5, 6, 6)), (3, 2, 1, 16, (3, 5, 6, 6)), (3, 1, 0, 8, (9, 6, 6))])
def test_one_and_three_dimensions(d, stride, padding, filters, inputs, monkeypatch):
    """conv1d runs as a 2-D convolution of height 1; conv3d reads its padded volumes in place (the
    made convolution has the input's 3-D shape), or, stride-1 with few filters and no flipped
    input gradient, runs as stacked 2-D slices (KD*C channels of 2-D images): all on the path."""
    made = []
    real = kernels.indirect_conv
    monkeypatch.setattr(kernels, "indirect_conv", lambda *a: made.append(a) or real(*a))
    rng = np.random.default_rng(d)
    shape = (2, 8, 20) if d == 1 else (2, 3, 5, 6, 6)
    ws = (filters, 8, 5) if d == 1 else (filters, 3, 3, 3, 3)
    x, w = rng.standard_normal(shape), 0.3 * rng.standard_normal(ws)
    fn = F.conv1d if d == 1 else F.conv3d
    tfn = torch.nn.functional.conv1d if d == 1 else torch.nn.functional.conv3d
    ts = [cnnlab.tensor(a.astype(np.float32), requires_grad=True) for a in (x, w)]
    out = fn(*ts, stride=stride, padding=padding)
    up = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(cnnlab.tensor(up))
    tt = [torch.tensor(a.astype(np.float32), requires_grad=True) for a in (x, w)]
    to = tfn(*tt, stride=stride, padding=padding)
    to.backward(torch.tensor(up))
    for a, t in zip([out.numpy()] + [t.grad.numpy() for t in ts], [to] + [t.grad for t in tt]):
        assert rel_error(a, t.detach().numpy()) < 5e-6
    assert tuple(made[0][0]) == inputs


# (N, C, D, H, W), (F, C/groups, KD, KH, KW), stride, padding, dilation, groups: 3-D layers whose
# padded volumes the indirect GEMM reads in place
CASES3 = [
    ((2, 6, 5, 6, 7), (16, 6, 3, 3, 3), 1, 1, 1, 1),  # 'same', a box of three sizes
    ((2, 4, 6, 6, 6), (12, 4, 3, 3, 3), 1, 2, 2, 1),  # dilated 'same'
    ((2, 8, 5, 4, 5), (16, 4, 3, 3, 3), 1, 1, 1, 2),  # grouped
    ((1, 5, 6, 5, 4), (20, 5, 3, 1, 3), 1, (1, 0, 1), 1, 1),  # padding and kernel per axis
    ((2, 4, 5, 5, 5), (8, 4, 2, 2, 2), 1, 1, 1, 1),  # even kernel: the output larger than the input
    ((1, 3, 4, 5, 6), (40, 3, 3, 3, 3), 1, 1, 1, 1),  # two panels of filters
    ((2, 32, 3, 4, 5), (16, 32, 1, 1, 1), 1, 0, 1, 1),  # 1x1x1
    ((3, 16, 4, 4, 4), (16, 16, 3, 3, 3), 1, 1, 1, 1),  # 432 products: two reduction slices
    # the input gradient through the fields' gradients and col2im3d_nhwc
    ((2, 4, 7, 6, 7), (16, 4, 3, 3, 3), 2, 1, 1, 1),  # strided
    ((2, 3, 6, 7, 8), (16, 3, 3, 3, 3), (1, 2, 3), (0, 1, 2), 1, 1),  # stride and padding per axis
    ((2, 4, 7, 7, 7), (16, 4, 3, 3, 3), 1, 0, 1, 1),  # 'valid', 16 filters
    ((1, 4, 9, 8, 9), (12, 4, 3, 2, 3), 2, 1, (2, 1, 2), 1),  # dilated, strided: kernel columns apart
    ((2, 6, 6, 6, 6), (16, 3, 3, 3, 3), 2, 1, 1, 2),  # grouped, strided
]


@pytest.mark.parametrize("case", CASES3)
def test_volumes_read_in_place_match_definition_float64_path_and_torch(case):
    """conv3d on the indirect GEMM's padded volumes: output, input and weight gradients against
    the definition (output), the float64 path (stacked slices on BLAS, finite-difference checked
    in test_conv.py) and PyTorch."""
    x, w, b = _case(case, 13)
    s, p, d, g = _params(case)
    assert ConvPlan(x.astype(np.float32), w.astype(np.float32), None, s, p, d, g).indirect
    assert not ConvPlan(x, w, None, s, p, d, g).indirect
    ref = naive_conv(x, w, b, s, p, d, g)
    up = np.random.default_rng(14).standard_normal(ref.shape)
    got = _run(case, (x, w, b), np.float32, up)
    assert got[0].shape == ref.shape and rel_error(got[0], ref) < 2e-6
    for a, e in zip(got, _run(case, (x, w, b), np.float64, up)):
        assert a.dtype == np.float32 and rel_error(a, e) < 5e-6
    for a, t in zip(got, _torch(case, (x, w, b), np.float32, up)):
        assert rel_error(a, t) < 5e-6


@pytest.mark.parametrize("shape,filters,stride,padding,expected", [
    ((2, 4, 6, 6, 6), 8, 1, 1, True),  # the input gradient by the flipped convolution
    ((2, 4, 6, 6, 6), 8, 2, 1, True),  # strided: col2im
    ((2, 4, 8, 8, 8), 16, 1, 0, True),  # 'valid' on 8^3 (input 2.4x the output: col2im), 16 filters
    ((2, 4, 8, 8, 8), 8, 1, 0, False),  # the same with 8 filters: stacked, the 2-D direct forms
    ((2, 4, 16, 16, 16), 8, 1, 0, False),  # 1.49x: flipped under the narrow rule only; stacked
    ((2, 4, 6, 6, 6), 6, 2, 1, False),  # too few filters, as in 2-D
    ((2, 4, 6, 6), 8, 1, 1, True),  # 2-D
])
def test_which_volumes_take_it(shape, filters, stride, padding, expected):
    """policy.use_igemm on 3-D layers: all with enough filters and products, but stride-1 ones
    of few filters whose input gradient is not the flipped convolution."""
    d = len(shape) - 2
    x, ws = np.zeros(shape, np.float32), (filters, 4) + (3,) * d
    assert kernels.use_igemm(x, ws, (stride,) * d, (padding,) * d, (1,) * d, 1) is expected


def test_volumes_in_chunks_over_threads_are_deterministic(monkeypatch):
    """A batch of volumes in many chunks on both cores: the same bits twice, and the one-chunk
    result."""
    case = ((6, 8, 4, 5, 5), (16, 8, 3, 3, 3), 1, 1, 1, 1)
    x, w, b = _case(case, 15)
    up = np.random.default_rng(16).standard_normal((6, 16, 4, 5, 5))

    def run():
        return _run(case, (x, w, b), np.float32, up)

    monkeypatch.setattr(policy, "INDIRECT_CHUNK_BYTES", 1 << 12)
    monkeypatch.setattr(policy, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(policy, "WORKERS", 2)
    first, again = run(), run()
    monkeypatch.setattr(policy, "INDIRECT_CHUNK_BYTES", 1 << 30)
    whole = run()
    for a, c, e in zip(first, again, whole):
        np.testing.assert_array_equal(a, c)
        assert rel_error(a, e) < 2e-6


@pytest.mark.parametrize("ws,groups,stride,dtype,avx512,expected", [
    ((20, 16, 3, 3), 1, 2, np.float32, True, True),
    ((20, 16, 3, 3), 1, 2, np.float64, True, False),  # float64: BLAS
    ((20, 16, 3, 3), 1, 2, np.float32, False, False),  # no AVX-512: BLAS and Winograd
    ((20, 1, 5, 5), 1, 2, np.float32, True, False),  # a first layer on one channel: 25 products per output
    ((6, 16, 3, 3), 1, 2, np.float32, True, False),  # 6 filters
    ((32, 8, 3, 3), 4, 2, np.float32, True, True),  # 8 filters per group, 72 products
    ((32, 3, 3, 3), 4, 2, np.float32, True, False),  # 27 products
    ((16, 1, 3, 3), 16, 2, np.float32, True, False),  # depthwise: its own loops
    ((8, 16, 3, 3), 1, 1, np.float32, True, True),  # stride 1, 8 of 10 padded columns: direct forward
    ((8, 1, 3, 3), 1, 1, np.float32, True, True),  # the same, any number of products
    ((6, 1, 3, 3), 1, 1, np.float32, True, True),  # and any number of filters
    ((3, 2, 3, 3), 1, 1, np.float32, True, True),
    ((3, 16, 3, 3), 1, 2, np.float32, True, False),  # strided: at least 8 filters
    ((8, 1, 5, 5), 1, 1, np.float32, True, False),  # 6 of 10 columns: neither rule
])
def test_which_layers_take_it(monkeypatch, ws, groups, stride, dtype, avx512, expected):
    monkeypatch.setattr(policy, "_avx512", avx512)
    x = np.zeros((2, ws[1] * groups, 8, 8), dtype)
    w = np.zeros(ws, dtype)
    s = (stride, stride)
    plan = ConvPlan(x, w, None, s, (1, 1), (1, 1), groups)
    assert plan.indirect is expected
    if expected:
        assert plan.ig.direct is (stride == 1)
    with kernels.allow_igemm(False):
        assert not ConvPlan(x, w, None, s, (1, 1), (1, 1), groups).indirect


@pytest.mark.parametrize("length,filters,direct", [(64, 64, False), (128, 16, False), (300, 16, True), (64, 8, True)])
def test_signals_take_the_direct_forward_pass_when_long_or_few_filters(length, filters, direct):
    """A 1-D layer (an image of height 1) runs its forward pass direct with few filters, or with
    more on signals of DIRECT_MIN_SIGNAL outputs or more; else the positions-as-rows product."""
    x, w = np.zeros((2, 8, 1, length), np.float32), np.zeros((filters, 8, 1, 3), np.float32)
    plan = ConvPlan(x, w, None, (1, 1), (0, 1), (1, 1), 1)
    assert plan.indirect and plan.ig.direct is direct


@pytest.mark.parametrize("filters,dilation,direct", [(24, 1, True), (24, 2, False), (16, 2, True), (8, 2, True)])
def test_many_filters_take_the_direct_forward_pass_on_fuller_rows(filters, dilation, direct, monkeypatch):
    """Groups of more than 16 filters run direct only where the outputs fill DIRECT_MIN_SHARE_PANELS
    of the padded row (28 of 30 columns at dilation 1, 28 of 32 at dilation 2); 16 and fewer from
    DIRECT_MIN_SHARE on."""
    monkeypatch.setattr(policy, "_avx512", True)
    x, w = np.zeros((2, 4, 28, 28), np.float32), np.zeros((filters, 4, 3, 3), np.float32)
    plan = ConvPlan(x, w, None, (1, 1), (dilation,) * 2, (dilation,) * 2, 1)
    assert plan.indirect and plan.ig.direct is direct


def test_the_rule_sees_dilation(monkeypatch):
    """Dilation 2 makes 6 of 10 padded columns: not the direct forward pass, and 9 products are
    too few for the other: BLAS."""
    monkeypatch.setattr(policy, "_avx512", True)
    x, w = np.zeros((2, 1, 8, 8), np.float32), np.zeros((8, 1, 3, 3), np.float32)
    assert ConvPlan(x, w, None, (1, 1), (1, 1), (1, 1), 1).indirect
    assert not ConvPlan(x, w, None, (1, 1), (1, 1), (2, 2), 1).indirect


@pytest.mark.parametrize("split", [False, True], ids=["one core", "all cores"])
@pytest.mark.parametrize("F,CK,G", [(256, 1152, 1), (26, 36, 2), (16, 432, 1), (8, 25, 1), (33, 63, 1), (64, 72, 8)])
def test_packed_filters_are_each_groups_transposed_panels(F, CK, G, split, monkeypatch):
    """pack_filters (one pass, its panels shared out over the cores where the weights are large)
    lays out the forward pass's weights exactly as pack_columns of each group's transposed rows,
    the last panel zero-padded."""
    monkeypatch.setattr(igemm, "PACK_SPLIT_BYTES", 0 if split else 1 << 40)
    monkeypatch.setattr(policy, "WORKERS", 2)
    wf = np.random.default_rng(F + CK).standard_normal((F, CK)).astype(np.float32)
    Fg = F // G
    ref = np.stack([igemm.pack_columns(np.ascontiguousarray(wf[g * Fg:(g + 1) * Fg].T)) for g in range(G)])
    np.testing.assert_array_equal(igemm.pack_filters(wf, G, kernels.over_panels), ref)


@pytest.mark.parametrize("split", [False, True], ids=["one core", "all cores"])
@pytest.mark.parametrize("F,Cg,kernel,G", [
    (64, 32, (3, 3), 1),  # whole tiles of channels, 9 taps
    (40, 20, (5, 5), 1),  # a last tile of 4 channels; 25 taps: two tiles of taps
    (26, 4, (3, 3), 2),  # groups, fewer channels than a tile
    (13, 40, (1, 1), 1),  # 1x1
    (8, 3, (3, 3), 1),  # 27 columns: one panel of 32, 5 zeros
    (3, 5, (3,), 1),  # 15 columns: one panel of 16
    (16, 16, (3, 3, 3), 1),  # 3-D
    (37, 17, (2, 3), 1),  # more filters than PACK_BACK_ROWS, not a multiple of it
    (48, 64, (3, 3), 2),  # whole panels of channels per group (pack_back_tiles), two groups
    (40, 64, (1, 1), 1),  # the same, 1x1
    (24, 32, (5,), 1),  # the same, 1-D
    (16, 32, (5, 5), 1),  # whole panels of channels, but 25 taps: the rows' way
])
def test_col2im_weights_are_each_groups_rows_in_tap_channel_order(F, Cg, kernel, G, split, monkeypatch):
    """pack_back lays out the col2im product's weights exactly as pack_columns of each group's
    rows of w moved to (tap, channel) order, the last panel zero-padded, on one core or over the
    cores."""
    monkeypatch.setattr(igemm, "PACK_SPLIT_BYTES", 0 if split else 1 << 40)
    monkeypatch.setattr(policy, "WORKERS", 2)
    w = np.random.default_rng(F + Cg).standard_normal((F, Cg) + kernel).astype(np.float32)
    rows = np.ascontiguousarray(np.moveaxis(w, 1, -1)).reshape(F, -1)
    Fg = F // G
    got = igemm.pack_back(w, G, kernels.over_panels)
    assert len(got) == G
    for g in range(G):
        np.testing.assert_array_equal(got[g], igemm.pack_columns(rows[g * Fg:(g + 1) * Fg]))


@pytest.mark.parametrize("split", [False, True], ids=["one core", "all cores"])
@pytest.mark.parametrize("F,Cg,kernel,G", [(16, 8, (3, 3), 1), (12, 40, (2, 3), 1), (8, 3, (3, 3, 3), 2), (64, 36, (1, 1), 4)])
def test_flipped_weights_swap_channels_and_reverse_taps(F, Cg, kernel, G, split, monkeypatch):
    """flip_filters is the flipped convolution's weight (in- and out-channels swapped within each
    group, every kernel axis reversed); pack_flipped is pack_filters of it."""
    monkeypatch.setattr(igemm, "PACK_SPLIT_BYTES", 0 if split else 1 << 40)
    monkeypatch.setattr(policy, "WORKERS", 2)
    w = np.random.default_rng(F + Cg).standard_normal((F, Cg) + kernel).astype(np.float32)
    Fg, k = F // G, len(kernel)
    ref = np.swapaxes(w.reshape((G, Fg, Cg) + kernel), 1, 2)[(Ellipsis,) + (slice(None, None, -1),) * k]
    ref = ref.reshape(G * Cg, Fg * math.prod(kernel))
    w3 = w.reshape(F, Cg, -1)
    np.testing.assert_array_equal(igemm.flip_filters(w3, G), ref)
    np.testing.assert_array_equal(igemm.pack_flipped(w3, G, kernels.over_panels), igemm.pack_filters(ref, G))


@pytest.mark.parametrize("M,K,N", [(5, 7, 3), (130, 300, 40), (9, 17, 33), (128, 800, 256)])
def test_matmul_in_its_three_forms(M, K, N):
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    ref = a.astype(np.float64) @ b
    np.testing.assert_allclose(igemm.matmul(a, b), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(igemm.matmul(np.ascontiguousarray(a.T), b, transpose_a=True), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(igemm.matmul(a, np.ascontiguousarray(b.T), transpose_b=True), ref, rtol=1e-4,
                               atol=1e-4)
    with pytest.raises(ValueError, match="do not match"):
        igemm.matmul(a, b[:-1])


def test_linear_on_the_indirect_gemm_matches_float64_and_torch():
    """A batch of 150 rows takes igemm (policy.use_igemm_linear); its output and three gradients
    agree with the float64 BLAS path and with PyTorch."""
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((150, 70)), 0.2 * rng.standard_normal((40, 70)), rng.standard_normal(40)
    up = rng.standard_normal((150, 40))
    assert policy.use_igemm_linear(x.astype(np.float32), w.astype(np.float32))
    assert not policy.use_igemm_linear(x[:100].astype(np.float32), w.astype(np.float32))  # too few rows

    def run(dtype):
        ts = [cnnlab.tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
        out = F.linear(*ts)
        out.backward(cnnlab.tensor(up.astype(dtype)))
        return [out.numpy()] + [t.grad.numpy() for t in ts]

    got, exact = run(np.float32), run(np.float64)
    tt = [torch.tensor(a.astype(np.float32), requires_grad=True) for a in (x, w, b)]
    to = torch.nn.functional.linear(*tt)
    to.backward(torch.tensor(up.astype(np.float32)))
    for a, e, t in zip(got, exact, [to] + [t.grad for t in tt]):
        assert a.dtype == np.float32
        assert rel_error(a, e) < 2e-6 and rel_error(a, t.detach().numpy()) < 2e-6


@pytest.mark.parametrize("stride,padding", [(1, 1), (1, 0), (2, 1)])
def test_an_empty_batch_gives_empty_gradients(stride, padding):
    """N = 0 through the indirect paths (the flipped convolution, phases): empty results, no error."""
    x = cnnlab.tensor(np.zeros((0, 16, 12, 12), np.float32), requires_grad=True)
    w = cnnlab.tensor(np.ones((32, 16, 3, 3), np.float32), requires_grad=True)
    y = F.conv2d(x, w, stride=stride, padding=padding)
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.shape == x.shape
    np.testing.assert_array_equal(w.grad, np.zeros(w.shape, np.float32))
    z = F.conv_transpose2d(cnnlab.tensor(np.zeros((0, 32, 6, 6), np.float32), requires_grad=True), w,
                           stride=stride, padding=padding)
    assert z.shape[0] == 0


# layers whose forward pass skips the padding's taps (igemm's lims): kernel rows and planes that
# reach the padding along the height (and depth) on small maps
TAPS = [
    ((2, 16, 14, 14), (32, 16, 5, 5), 1, 2, 1, 1),  # 5x5 'same' on 14x14: blocks of 8 over rows of 14
    ((3, 8, 8, 8), (40, 8, 3, 3), 1, 1, 1, 1),  # two panels of filters, whole rows of 8
    ((2, 48, 8, 8), (32, 48, 3, 3), 1, 1, 1, 1),  # 432 products: two slices of channels
    ((2, 8, 6, 6), (16, 8, 3, 3), 1, 3, 1, 1),  # padding past the kernel's reach: rows without taps
    ((2, 6, 10, 30), (12, 6, 3, 3), 2, 2, 1, 1),  # strided
    ((2, 6, 9, 9), (12, 6, 3, 3), 1, 2, 2, 1),  # dilated
    ((2, 8, 8, 8), (24, 4, 5, 5), 1, 2, 1, 2),  # grouped
    ((1, 4, 7, 6), (20, 4, 4, 3), 1, (3, 1), 1, 1),  # an even kernel height, padding per axis
    ((2, 16, 6, 6, 6), (16, 16, 3, 3, 3), 1, 1, 1, 1),  # 3-D: planes and rows skipped
    ((1, 24, 5, 6, 4), (32, 24, 3, 3, 3), 1, (1, 0, 1), 1, 1),  # depth only; 648 products: slices
    ((1, 6, 5, 7, 8), (16, 6, 3, 3, 3), 1, (0, 1, 1), 1, 1),  # height only
    ((1, 3, 16, 16, 17), (16, 3, 3, 3, 2), 1, 1, 1, 1),  # 4,608 positions: FORWARD_ROWS at a time
]


@pytest.mark.parametrize("case", TAPS)
def test_padding_taps_skipped_match_definition_and_torch(case):
    """The forward pass (and the flipped convolution of a stride-1 layer's input gradient) summed
    only over the taps that reach the input: output and gradients against the definition, the
    float64 path and PyTorch."""
    x, w, b = _case(case, 21)
    s, p, d, g = _params(case)
    xs, ws = case[0], case[1]
    out_shape = conv_output_shape(xs[2:], ws[2:], s, p, d)
    conv = kernels.indirect_conv(xs[1:], w.astype(np.float32), s, p, d, g, out_shape)
    assert conv.taps and not conv.direct
    ref = naive_conv(x, w, b, s, p, d, g)
    up = np.random.default_rng(22).standard_normal(ref.shape)
    got = _run(case, (x, w, b), np.float32, up)
    assert rel_error(got[0], ref) < 2e-6
    for a, e in zip(got, _run(case, (x, w, b), np.float64, up)):
        assert rel_error(a, e) < 5e-6
    for a, t in zip(got, _torch(case, (x, w, b), np.float32, up)):
        assert rel_error(a, t) < 5e-6


def test_the_flipped_convolution_skips_taps_too():
    """A 'same' 5x5 layer on 14x14 maps: its input gradient's flipped convolution (padding 2) skips
    the padding's taps as its forward pass does."""
    case = TAPS[0]
    x, w, _ = _case(case)
    conv = kernels.indirect_conv(case[0][1:], w.astype(np.float32), (1, 1), (2, 2), (1, 1), 1, (14, 14))
    assert conv.flip_padding == (2, 2) and conv._back_conv().taps


@pytest.mark.parametrize("size,stride,padding,dilation,kernel", [
    ((6, 7), (1, 1), (1, 2), (1, 1), (3, 3)), ((9, 8), (2, 3), (2, 0), (2, 1), (3, 2)),
    ((5, 4, 6), (1, 2, 1), (3, 1, 0), (1, 1, 2), (3, 2, 2)), ((4, 4), (1, 1), (4, 1), (1, 1), (2, 3))])
def test_position_limits_are_the_taps_inside_the_input(size, stride, padding, dilation, kernel):
    """position_limits: for each output position, the kernel offsets along depth and height whose
    taps land inside the input, by brute force over every tap; group_limits their hull per block."""
    out = conv_output_shape(size, kernel, stride, padding, dilation)
    lims = igemm.position_limits(tuple(out), size, stride, padding, dilation, kernel)
    dims = len(size)
    for i, pos in enumerate(np.ndindex(*out)):
        want = [0, 1, 0, 1]
        for axis, col in ((dims - 2, 2), (dims - 3, 0)):
            if axis < 0:
                continue
            inside = [t for t in range(kernel[axis])
                      if 0 <= pos[axis] * stride[axis] + t * dilation[axis] - padding[axis] < size[axis]]
            want[col:col + 2] = [inside[0], inside[-1] + 1] if inside else [None, None]
        if None in want:  # no tap inside: an empty range
            assert lims[i, 0] >= lims[i, 1] or lims[i, 2] >= lims[i, 3]
        else:
            assert list(lims[i]) == want
    hull = igemm.group_limits(lims, 3)
    rows = np.tile(lims, (3, 1))
    for q in range(hull.shape[0]):
        block = rows[q * igemm.LIM_ROWS:(q + 1) * igemm.LIM_ROWS]
        assert list(hull[q]) == [block[:, 0].min(), block[:, 1].max(), block[:, 2].min(), block[:, 3].max()]


@pytest.mark.parametrize("split", [False, True], ids=["one core", "all cores"])
@pytest.mark.parametrize("F,Cg,kernel,G", [(40, 8, (3, 3), 1), (16, 48, (5, 5), 1), (24, 6, (3, 3, 3), 2), (20, 3, (3, 2), 1)])
def test_weights_in_tap_order(F, Cg, kernel, G, split, monkeypatch):
    """tap_order is a permutation that keeps each of igemm's slices of channels together, taps
    outermost within it; pack_filters and pack_flipped with it are the panels of the weights'
    columns so moved."""
    monkeypatch.setattr(igemm, "PACK_SPLIT_BYTES", 0 if split else 1 << 40)
    monkeypatch.setattr(policy, "WORKERS", 2)
    K = math.prod(kernel)
    order = igemm.tap_order(Cg, kernel)
    assert sorted(order) == list(range(Cg * K))
    ns = igemm.tap_slices(Cg, K)
    for sl in range(ns):
        cs, ce = Cg * sl // ns, Cg * (sl + 1) // ns
        block = order.reshape(Cg, K)[cs:ce]
        assert block.min() == cs * K and block.max() == ce * K - 1
        kw = kernel[-1]
        assert block[1 % (ce - cs), 0] - block[0, 0] == (kw if ce - cs > 1 else 0)  # channels inside a kernel row
    w = np.random.default_rng(F + Cg).standard_normal((F, Cg) + kernel).astype(np.float32)
    wf = w.reshape(F, -1)
    moved = np.empty_like(wf)
    moved[:, order] = wf
    np.testing.assert_array_equal(igemm.pack_filters(wf, G, kernels.over_panels, order),
                                  igemm.pack_filters(np.ascontiguousarray(moved), G))
    flipped = igemm.flip_filters(w.reshape(F, Cg, K), G)
    back_order = igemm.tap_order(F // G, kernel)
    moved = np.empty_like(flipped)
    moved[:, back_order] = flipped
    np.testing.assert_array_equal(igemm.pack_flipped(w.reshape(F, Cg, K), G, kernels.over_panels, back_order),
                                  igemm.pack_filters(np.ascontiguousarray(moved), G))


@pytest.mark.parametrize("size,kernel,stride,padding,dilation,width", [
    ((9, 9), (3, 3), (1, 1), (1, 1), (1, 1), 10), ((9, 9), (5, 5), (1, 1), (2, 2), (1, 1), 11),
    ((9, 9), (3, 3), (1, 1), (2, 2), (2, 2), 11), ((9, 9), (3, 3), (2, 2), (1, 1), (1, 1), 11),
    ((9, 9), (1, 1), (1, 1), (1, 1), (1, 1), 11), ((4, 9, 9), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 10)])
def test_stride_one_rows_share_their_padding(size, kernel, stride, padding, dilation, width):
    """At stride 1 a padded row's right padding is the next row's left (pw zeros after each
    plane for the last row's reads) where the kernel reaches past it; a strided layer, or one
    whose outputs would not fit such a row, keeps the whole padded width."""
    out = tuple(conv_output_shape(size, kernel, stride, padding, dilation))
    g = igemm.conv_geometry((3,) + size, (4, 3) + kernel, stride, padding, dilation, 1, out)
    assert g["padded"][-1] == width
    shared = width < size[-1] + 2 * padding[-1]
    assert g["plane"] == math.prod(g["padded"]) + (padding[-1] if shared else 0)
