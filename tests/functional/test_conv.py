"""conv1d/2d/3d: against the naive definition, by finite differences, and against PyTorch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels
from harness import check_op, torch
from helpers import naive_conv

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def random_config(rng, d):
    """A random valid convolution: stride, padding, dilation, groups, odd/non-square sizes."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cg = int(rng.integers(1, 3))
    fg = int(rng.integers(1, 3))
    C, F_ = cg * groups, fg * groups
    k = tuple(int(v) for v in rng.integers(1, 4 if d < 3 else 3, size=d))
    stride = tuple(int(v) for v in rng.integers(1, 3, size=d))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=d))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=d))
    size = tuple(int(max(dilation[i] * (k[i] - 1) + 1 - 2 * padding[i], 1) + rng.integers(0, 5 if d < 3 else 3))
                 for i in range(d))
    N = int(rng.integers(1, 3))
    x = rng.standard_normal((N, C) + size)
    w = rng.standard_normal((F_, cg) + k)
    b = rng.standard_normal(F_) if rng.random() < 0.7 else None
    return x, w, b, stride, padding, dilation, groups


# 54 random configurations; each goes through every check of the harness
CASES = [(d, seed) for d in (1, 2, 3) for seed in (*range(6), *range(100, 106), *range(200, 206))]
TCONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


def _conv_check(d, x, w, b, stride, padding, dilation, groups):
    """The definition, float64 finite differences and PyTorch (float64 and float32) via the harness."""
    args = [x, w] + ([b] if b is not None else [])

    def fn(*t):
        return CONV[d](t[0], t[1], t[2] if len(t) > 2 else None, stride, padding, dilation, groups)

    def ref(*a):
        return naive_conv(a[0], a[1], a[2] if len(a) > 2 else None, stride, padding, dilation, groups)

    def tfn(*t):
        return TCONV[d](t[0], t[1], t[2] if len(t) > 2 else None, stride, padding, dilation, groups)

    check_op(fn, args, ref, tfn)


@pytest.mark.parametrize("d,seed", CASES)
def test_conv(d, seed):
    _conv_check(d, *random_config(np.random.default_rng(seed), d))


NHWC_CASES = list(range(8))


def _nhwc_config(seed):
    """A random one-group 2-D convolution, with the channels-last CPU path forced on."""
    rng = np.random.default_rng(300 + seed)
    while True:
        x, w, b, stride, padding, dilation, groups = random_config(rng, 2)
        if groups == 1:
            return x, w, b, stride, padding, dilation


@pytest.mark.parametrize("seed", NHWC_CASES)
def test_channels_last_conv2d_path(seed, monkeypatch):
    """The channels-last CPU layout (used for many-channel 2-D layers): the definition, float64
    finite differences and PyTorch, on random strides, paddings and dilations."""
    monkeypatch.setattr(kernels.policy, "NHWC_MIN_RUN", 1)
    x, w, b, stride, padding, dilation = _nhwc_config(seed)
    assert kernels.use_nhwc(x, w.shape, 1)
    _conv_check(2, x, w, b, stride, padding, dilation, 1)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2), cg=st.integers(1, 3), fg=st.integers(1, 3), groups=st.integers(1, 2),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2),
    extra_h=st.integers(0, 4), extra_w=st.integers(0, 4), seed=st.integers(0, 2**16),
)
def test_conv2d_shape_space_against_naive(n, cg, fg, groups, kh, kw, sh, sw, ph, pw, dh, dw, extra_h, extra_w, seed):
    rng = np.random.default_rng(seed)
    H = max(dh * (kh - 1) + 1 - 2 * ph, 1) + extra_h
    W = max(dw * (kw - 1) + 1 - 2 * pw, 1) + extra_w
    x = rng.standard_normal((n, cg * groups, H, W))
    w = rng.standard_normal((fg * groups, cg, kh, kw))
    b = rng.standard_normal(fg * groups)
    out = F.conv2d(cnnlab.tensor(x), cnnlab.tensor(w), cnnlab.tensor(b), (sh, sw), (ph, pw), (dh, dw), groups)
    np.testing.assert_allclose(out.numpy(), naive_conv(x, w, b, (sh, sw), (ph, pw), (dh, dw), groups), rtol=1e-10, atol=1e-12)


def test_article_shapes_and_parameter_counts():
    # 28x28 input, 5x5 local receptive fields, stride 1 -> 24x24 feature maps.
    x = cnnlab.tensor(np.zeros((2, 1, 28, 28), dtype=np.float32))
    conv = cnnlab.nn.Conv2d(1, 20, 5)
    assert conv(x).shape == (2, 20, 24, 24)
    assert conv.num_parameters() == 520  # 20 * (5*5 + 1)
    assert cnnlab.nn.Linear(784, 30).num_parameters() == 23550  # 784*30 + 30
    # Padding keeps the size; a stride of 2 halves it.
    assert F.conv2d(x, conv.weight, conv.bias, padding=2).shape == (2, 20, 28, 28)
    assert F.conv2d(x, conv.weight, conv.bias, stride=2).shape == (2, 20, 12, 12)


def test_shared_weights_translation_equivariance():
    """One kernel everywhere: shifting the input shifts the feature map."""
    rng = np.random.default_rng(1)
    x = np.zeros((1, 1, 12, 12))
    x[0, 0, 3:6, 2:5] = rng.standard_normal((3, 3))
    w = cnnlab.tensor(rng.standard_normal((1, 1, 3, 3)))
    a = F.conv2d(cnnlab.tensor(x), w).numpy()
    b = F.conv2d(cnnlab.tensor(np.roll(x, (2, 3), axis=(2, 3))), w).numpy()
    np.testing.assert_allclose(np.roll(a, (2, 3), axis=(2, 3))[..., 2:, 3:], b[..., 2:, 3:], atol=1e-12)


def test_conv_keeps_float32_and_unbatched_input():
    x = cnnlab.tensor(np.ones((3, 9, 9), dtype=np.float32))
    w = cnnlab.tensor(np.ones((4, 3, 3, 3), dtype=np.float32))
    out = F.conv2d(x, w)
    assert out.shape == (4, 7, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), 27.0)


def test_padding_same_and_valid():
    x = cnnlab.tensor(np.ones((1, 2, 7, 8)))
    w = cnnlab.tensor(np.ones((3, 2, 3, 5)))
    assert F.conv2d(x, w, padding="same").shape == (1, 3, 7, 8)
    assert F.conv2d(x, w, padding="valid").shape == (1, 3, 5, 4)


@pytest.mark.parametrize("call,match", [
    (lambda: F.conv2d(cnnlab.tensor(np.ones((1, 28, 28))), cnnlab.tensor(np.ones((2, 3, 5, 5)))), "channels"),
    (lambda: F.conv2d(cnnlab.tensor(np.ones((28, 28))), cnnlab.tensor(np.ones((2, 1, 5, 5)))), r"4-D input"),
    (lambda: F.conv2d(cnnlab.tensor(np.ones((1, 3, 8, 8))), cnnlab.tensor(np.ones((2, 1, 3, 3))), groups=2), "divisible"),
    (lambda: F.conv2d(cnnlab.tensor(np.ones((1, 1, 4, 4))), cnnlab.tensor(np.ones((2, 1, 5, 5)))),
     "larger than the padded input"),
    (lambda: F.conv2d(cnnlab.tensor(np.ones((1, 1, 8, 8))), cnnlab.tensor(np.ones((2, 1, 3, 3))), stride=0), "stride"),
    (lambda: F.conv1d(cnnlab.tensor(np.ones((1, 1, 8))), cnnlab.tensor(np.ones((2, 1, 3))), padding=-1), "padding"),
    (lambda: F.conv3d(cnnlab.tensor(np.ones((1, 1, 4, 4, 4))), cnnlab.tensor(np.ones((2, 1, 3, 3, 3))), dilation=0), "dilation"),
    (lambda: F.conv2d(cnnlab.tensor(np.ones((1, 1, 8, 8))), cnnlab.tensor(np.ones((2, 1, 3, 3))),
                      cnnlab.tensor(np.ones(3))), "bias"),
    (lambda: F.conv2d(cnnlab.tensor(np.ones((1, 1, 8, 8))), cnnlab.tensor(np.ones((2, 1, 3)))), "weight"),
])
def test_conv_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("d,seed", [(d, s) for d in (1, 2, 3) for s in range(5)])
def test_channels_last_path_any_groups_and_dimensions(d, seed, monkeypatch):
    """Grouped 2-D layers on the channels-last path (one product per group), and 1-D and 3-D layers
    run as 2-D ones on it: the definition, finite differences and PyTorch."""
    monkeypatch.setattr(kernels.policy, "NHWC_MIN_RUN", 1)
    _conv_check(d, *random_config(np.random.default_rng(400 + seed), d))


def _depthwise_case(seed, rng_seed, C_hi, k_hi, strides, dilations, pad_hi, grow_hi, n_hi):
    """A random depthwise layer: (x, w, b, stride, padding, dilation, C); ``strides`` and
    ``dilations`` are (low, high) ranges to draw from, or None for 1."""
    rng = np.random.default_rng(rng_seed)
    C = int(rng.integers(2, C_hi))
    k = tuple(int(v) for v in rng.integers(1, k_hi, size=2))
    stride = tuple(int(v) for v in rng.integers(*strides, size=2)) if strides else (1, 1)
    dilation = tuple(int(v) for v in rng.integers(*dilations, size=2)) if dilations else (1, 1)
    padding = tuple(int(v) for v in rng.integers(0, pad_hi, size=2))
    size = tuple(int(max(dilation[i] * (k[i] - 1) + 1 - 2 * padding[i], 1) + rng.integers(0, grow_hi))
                 for i in range(2))
    x = rng.standard_normal((int(rng.integers(1, n_hi)), C) + size)
    w = rng.standard_normal((C, 1) + k)
    b = rng.standard_normal(C) if seed % 2 else None
    assert kernels.use_depthwise(x, w.shape, C)
    return x, w, b, stride, padding, dilation, C


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_path(seed):
    """Depthwise 2-D layers (groups == C == F) take the compiled depthwise loops: the definition,
    finite differences and PyTorch, on random strides, paddings and dilations."""
    x, w, b, stride, padding, dilation, C = _depthwise_case(seed, 500 + seed, 5, 4, (1, 3), (1, 3), 3, 5, 3)
    _conv_check(2, x, w, b, stride, padding, dilation, C)


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_stride_one_along_whole_planes(seed):
    """Stride-1 depthwise layers run along whole padded planes (kernels.depthwise_forward, the
    full correlation for the input gradient, g spread over the padded width for the weights): the
    definition, finite differences and PyTorch, on random kernels, paddings (beyond the kernel's
    reach too) and dilations."""
    x, w, b, stride, padding, dilation, C = _depthwise_case(seed, 600 + seed, 6, 6, None, (1, 3), 4, 6, 4)
    _conv_check(2, x, w, b, stride, padding, dilation, C)


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_strided_by_phases(seed):
    """Strided depthwise layers (dilation 1): the forward pass and weight gradient along whole
    phase planes, the input gradient by phases (some without taps where the kernel is shorter than
    the stride): the definition, finite differences and PyTorch."""
    x, w, b, stride, padding, dilation, C = _depthwise_case(seed, 700 + seed, 5, 6, (2, 4), None, 3, 7, 3)
    _conv_check(2, x, w, b, stride, padding, dilation, C)
