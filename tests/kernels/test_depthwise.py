"""The float32 depthwise kernels of kernels/depthwise.py (plane by plane, sums in registers): the
output against the definition by loops, both gradients against float64 central differences of
that definition (exact up to rounding: the layer is linear in x and in w) and against PyTorch,
on random kernels, strides (row phases without taps too), paddings (beyond the kernel's reach
too) and dilations; and which arrays take them.

The micro-kernels are LLVM vector code, correct on any x86-64 CPU; the tests force the path on
(policy._avx512) so they run everywhere."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab
import cnnlab.functional as F
from cnnlab.kernels import depthwise, policy
from harness import rel_error, torch
from helpers import naive_conv


@pytest.fixture(autouse=True)
def _avx512(monkeypatch):
    monkeypatch.setattr(policy, "_avx512", True)


def _case(draw):
    C, n = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 5)), draw(st.integers(0, 5)))
    size = tuple(max(dilation[i] * (k[i] - 1) + 1 - 2 * padding[i], 1) + draw(st.integers(0, 70 if i else 12))
                 for i in range(2))
    return n, C, size, k, stride, padding, dilation


def _geometry(size, k, stride, padding, dilation):
    return tuple((size[i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(2))


def _definition(x, w, stride, padding, dilation):
    return naive_conv(x.astype(np.float64), w.astype(np.float64), None, stride, padding, dilation, x.shape[1])


def _central(f, a):
    """Central differences of the scalar f at a (float64), step 1: exact for a linear f."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + 1.0
        up = f(a)
        a[i] = old - 1.0
        down = f(a)
        a[i] = old
        g[i] = (up - down) / 2.0
    return g


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_kernels_match_definition_and_differences(data):
    n, C, size, k, stride, padding, dilation = _case(data.draw)
    out_shape = _geometry(size, k, stride, padding, dilation)
    rng = np.random.default_rng(sum(size) * 7 + C)
    x = rng.standard_normal((n, C) + size).astype(np.float32)
    w = rng.standard_normal((C, 1) + k).astype(np.float32)
    g = rng.standard_normal((n, C) + out_shape).astype(np.float32)
    geom = (k, stride, padding, dilation, out_shape)

    y = depthwise.forward(x, w, *geom).reshape(g.shape)
    ref = _definition(x, w, stride, padding, dilation)
    assert rel_error(y, ref) < 1e-5

    g64 = g.astype(np.float64)
    gx = depthwise.input_grad(g.reshape(n, C, -1), w, size, *geom)
    gw = depthwise.weight_grad_part(g.reshape(n, C, -1), x, *geom)
    assert gw.dtype == np.float64
    if x.size <= 400:  # the differences take two naive convolutions per element
        fx = _central(lambda a: float((_definition(a, w, stride, padding, dilation) * g64).sum()), x.astype(np.float64))
        assert rel_error(gx, fx) < 1e-5
    fw = _central(lambda a: float((_definition(x, a, stride, padding, dilation) * g64).sum()), w.astype(np.float64))
    assert rel_error(gw, fw[:, 0]) < 1e-5

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation, groups=C)
    yt.backward(torch.tensor(g))
    assert rel_error(y, yt.detach().numpy()) < 1e-5
    assert rel_error(gx, xt.grad.numpy()) < 1e-5
    assert rel_error(gw, wt.grad.numpy()[:, 0]) < 1e-5


def test_output_written_in_place_and_chunks_agree():
    """forward writes into the given array; the layer's chunks (split over the batch and the
    cores) give the same bits as one call over the whole batch."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    geom = ((3, 3), (1, 1), (1, 1), (1, 1), (20, 20))
    out = np.full((64, 8, 400), np.nan, np.float32)
    assert depthwise.forward(x, w, *geom, out=out) is out
    y = F.conv2d(cnnlab.tensor(x), cnnlab.tensor(w), padding=1, groups=8)
    np.testing.assert_array_equal(y.numpy().reshape(out.shape), out)


def test_which_arrays_take_the_vectors():
    assert policy.use_depthwise_vectors(np.zeros(3, np.float32))
    assert not policy.use_depthwise_vectors(np.zeros(3, np.float64))


def test_chunks_one_per_core_then_two_once_large(monkeypatch):
    monkeypatch.setattr(policy, "WORKERS", 2)
    assert policy.depthwise_chunks(np.zeros((32, 32, 28, 28), np.float32), 784) == [(0, 16), (16, 32)]  # 6.4 MB
    big = np.zeros((64, 64, 28, 28), np.float32)  # 25.7 MB of input and output
    assert policy.depthwise_chunks(big, 784) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert policy.depthwise_chunks(np.zeros((2, 3, 5, 5), np.float32), 25) == [(0, 2)]
    assert policy.depthwise_chunks(np.zeros((3, 128, 28, 28), np.float32), 784) == [(0, 2), (2, 3)]


@st.composite
def _same_case(draw):
    """A stride-1 layer whose output keeps the input's size (2p = d(k - 1) on each axis)."""
    k, d = [], []
    for _ in range(2):
        d.append(draw(st.integers(1, 3)))
        k.append(draw(st.sampled_from([kk for kk in range(1, 8) if d[-1] * (kk - 1) % 2 == 0])))
    padding = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
    size = (draw(st.integers(1, 18)), draw(st.integers(1, 30)))
    return draw(st.integers(1, 3)), draw(st.integers(1, 4)), size, tuple(k), (1, 1), padding, tuple(d)


@settings(max_examples=40, deadline=None)
@given(_same_case(), st.booleans())
def test_same_layers_read_in_place_match_definition_and_differences(case, in_place):
    """Layers that keep their size run the in-place kernels (no padded copy; lanes outside the
    plane masked): the weight gradient at every width, the output and input gradient up to
    SAME_MAX_WIDTH columns (forced on or off here, so both paths meet the same references)."""
    n, C, size, k, stride, padding, dilation = case
    old = depthwise.SAME_MAX_WIDTH
    depthwise.SAME_MAX_WIDTH = 1000 if in_place else 0
    try:
        assert depthwise.use_same(size, k, stride, padding, dilation) == in_place
        assert depthwise.use_same(size, k, stride, padding, dilation, weight_grad=True)
        rng = np.random.default_rng(sum(size) * 11 + C + sum(k))
        x = rng.standard_normal((n, C) + size).astype(np.float32)
        w = rng.standard_normal((C, 1) + k).astype(np.float32)
        g = rng.standard_normal((n, C) + size).astype(np.float32)
        geom = (k, stride, padding, dilation, size)
        y = depthwise.forward(x, w, *geom, out=np.full((n, C, size[0] * size[1]), np.nan, np.float32))
        gx = depthwise.input_grad(g.reshape(n, C, -1), w, size, *geom, out=np.full(x.shape, np.nan, np.float32))
        gw = depthwise.weight_grad_part(g.reshape(n, C, -1), x, *geom)
    finally:
        depthwise.SAME_MAX_WIDTH = old
    _meet_references(x, w, g, stride, padding, dilation, y, gx, gw)


def _meet_references(x, w, g, stride, padding, dilation, y, gx, gw):
    """The output y, input gradient gx and weight gradient gw of a depthwise layer for x, w and the
    output gradient g against the definition, central differences (gx only on small x) and PyTorch
    (float64)."""
    assert rel_error(y.reshape(g.shape), _definition(x, w, stride, padding, dilation)) < 1e-5
    g64 = g.astype(np.float64)
    if x.size <= 300:
        fx = _central(lambda a: float((_definition(a, w, stride, padding, dilation) * g64).sum()), x.astype(np.float64))
        assert rel_error(gx, fx) < 1e-5
    fw = _central(lambda a: float((_definition(x, a, stride, padding, dilation) * g64).sum()), w.astype(np.float64))
    assert rel_error(gw, fw[:, 0]) < 1e-5
    # PyTorch in float64: its float32 sums are no reference where a gradient's terms nearly cancel
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation, groups=x.shape[1]).backward(
        torch.tensor(g, dtype=torch.float64))
    assert rel_error(gx, xt.grad.numpy()) < 1e-5
    assert rel_error(gw, wt.grad.numpy()[:, 0]) < 1e-5


@pytest.mark.parametrize("n,size,stride,narrow", [(200, 7, 1, True), (300, 7, 2, True), (300, 7, 2, False),
                                                  (2, 150, 1, True), (40, 30, 2, True), (40, 30, 2, False)])
def test_weight_gradients_carry_float32_sums_then_float64(n, size, stride, narrow, monkeypatch):
    """The weight gradient's float32 sums run over at most WSLICE vectors before they go to float64
    totals: carried across many small planes (the in-place kernel at stride 1, the narrow-plane
    and the scratch-plane kernels at stride 2), a large plane cut into pieces. Against float64
    sums of the definition, on inputs of one sign, where float32 sums over whole planes lost
    20-60x more."""
    if not narrow:
        monkeypatch.setattr(depthwise, "NARROW_MAX_WIDTH", 0)
    rng = np.random.default_rng(5)
    x = (np.abs(rng.standard_normal((n, 3, size, size))) + 1).astype(np.float32)
    out = (size + 2 - 3) // stride + 1
    g = (rng.standard_normal((n, 3, out, out)) + 1).astype(np.float32)
    geom = ((3, 3), (stride, stride), (1, 1), (1, 1), (out, out))
    gw = depthwise.weight_grad_part(g.reshape(n, 3, -1), x, *geom)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    span = (out - 1) * stride + 1
    ref = np.array([[[(g[:, c].astype(np.float64) * xp[:, c, kh:kh + span:stride, kw:kw + span:stride]).sum()
                      for kw in range(3)] for kh in range(3)] for c in range(3)])
    assert rel_error(gw, ref) < 5e-8


@st.composite
def _narrow_case(draw):
    """A layer on planes of at most 32 columns whose output rows have at most 16 (kernels/narrow.py)."""
    while True:
        k = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = (draw(st.integers(0, 5)), draw(st.integers(0, 5)))
        size = (draw(st.integers(1, 20)), draw(st.integers(1, 32)))
        out = _geometry(size, k, stride, padding, dilation)
        if min(out) > 0 and out[1] <= 16:
            return draw(st.integers(1, 3)), draw(st.integers(1, 4)), size, k, stride, padding, dilation


@settings(max_examples=50, deadline=None)
@given(_narrow_case(), st.booleans())
def test_narrow_planes_read_in_place_match_definition_and_differences(case, narrow):
    """Layers on narrow planes (every tap's columns one permute of the row's two vectors, rows
    outside the plane read from a zero row) against the definition, central differences and
    PyTorch, with the narrow-plane kernels on or off (the scratch planes then) so both paths meet
    the same references; every output element written (NaN-filled beforehand)."""
    n, C, size, k, stride, padding, dilation = case
    out_shape = _geometry(size, k, stride, padding, dilation)
    old = depthwise.NARROW_MAX_WIDTH
    depthwise.NARROW_MAX_WIDTH = 32 if narrow else 0
    try:
        taken = depthwise.use_narrow(size, out_shape) and not depthwise.use_same(size, k, stride, padding, dilation)
        assert taken == (narrow and not depthwise.use_same(size, k, stride, padding, dilation))
        rng = np.random.default_rng(sum(size) * 13 + C + sum(k) + sum(stride))
        x = rng.standard_normal((n, C) + size).astype(np.float32)
        w = rng.standard_normal((C, 1) + k).astype(np.float32)
        g = rng.standard_normal((n, C) + out_shape).astype(np.float32)
        geom = (k, stride, padding, dilation, out_shape)
        y = depthwise.forward(x, w, *geom, out=np.full((n, C, math.prod(out_shape)), np.nan, np.float32))
        gx = depthwise.input_grad(g.reshape(n, C, -1), w, size, *geom, out=np.full(x.shape, np.nan, np.float32))
        gw = depthwise.weight_grad_part(g.reshape(n, C, -1), x, *geom)
    finally:
        depthwise.NARROW_MAX_WIDTH = old
    _meet_references(x, w, g, stride, padding, dilation, y, gx, gw)


def test_narrow_tall_planes_cut_into_pieces():
    """A narrow plane with more output rows than WSLICE: the weight gradient's float32 sums cut
    within the plane, against float64 sums of the definition; the other two against PyTorch."""
    rng = np.random.default_rng(9)
    n, C, size, k = 2, 3, (300, 9), (3, 3)
    x = (np.abs(rng.standard_normal((n, C) + size)) + 1).astype(np.float32)
    w = rng.standard_normal((C, 1) + k).astype(np.float32)
    out_shape = _geometry(size, k, (1, 1), (0, 0), (1, 1))
    assert depthwise.use_narrow(size, out_shape) and out_shape[0] > depthwise.WSLICE
    g = (rng.standard_normal((n, C) + out_shape) + 1).astype(np.float32)
    geom = (k, (1, 1), (0, 0), (1, 1), out_shape)
    gw = depthwise.weight_grad_part(g.reshape(n, C, -1), x, *geom)
    ref = np.array([[[(g[:, c].astype(np.float64) * x[:, c, kh:kh + out_shape[0], kw:kw + out_shape[1]]).sum()
                      for kw in range(3)] for kh in range(3)] for c in range(C)])
    assert rel_error(gw, ref) < 5e-8
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, groups=C)
    yt.backward(torch.tensor(g))
    assert rel_error(depthwise.forward(x, w, *geom).reshape(g.shape), yt.detach().numpy()) < 1e-5
    assert rel_error(depthwise.input_grad(g.reshape(n, C, -1), w, size, *geom), xt.grad.numpy()) < 1e-5


@pytest.mark.parametrize("size,stride", [((14, 14), 2), ((7, 7), 1), ((40, 40), 2)])
def test_empty_batch_forward_and_backward(size, stride):
    """A batch of no images through a depthwise layer (narrow planes, scratch planes): empty
    output and input gradient, a zero weight gradient."""
    x = cnnlab.tensor(np.zeros((0, 4) + size, np.float32), requires_grad=True)
    w = cnnlab.tensor(np.ones((4, 1, 3, 3), np.float32), requires_grad=True)
    out = F.conv2d(x, w, stride=stride, groups=4)
    out.backward(np.zeros(out.shape, np.float32))
    assert out.shape[0] == 0 and x.grad.shape == x.shape
    np.testing.assert_array_equal(w.grad.numpy(), 0)
