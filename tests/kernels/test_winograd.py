"""3x3 stride-1 convolutions by Winograd F(2x2, 3x3) (kernels.winograd_conv and the weight
gradient's winograd_weight_grad_part, used by ConvPlan): against the naive definition, by float64
finite differences, against PyTorch, against the im2col path, inside the fused conv -> max-pool
-> ReLU operator, and which layers take it."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels
from cnnlab.functional.conv import ConvPlan
from harness import check_gradients, check_op, rel_error, torch
from helpers import naive_conv, naive_pool


@pytest.fixture(autouse=True)
def _small_maps_too(monkeypatch, request):
    """The cases below are small, for the loop references; let them take the path (the size rule
    itself is tested in test_which_layers_take_it, the batch's tiles in test_a_small_batch_takes_im2col).
    The indirect GEMM, which takes float32 layers first where the CPU has AVX-512, is held off."""
    monkeypatch.setattr(kernels.policy, "_igemm_enabled", False)
    if request.node.originalname != "test_which_layers_take_it":
        monkeypatch.setattr(kernels.policy, "WINOGRAD_MIN_OUT", 1)
    if request.node.originalname != "test_a_small_batch_takes_im2col":
        monkeypatch.setattr(kernels.policy, "WINOGRAD_MIN_TILES", 1)


# (N, C, H, W), F, padding: even and ragged (odd) output sizes, paddings 0-2
CASES = [((2, 8, 6, 7), 9, 1), ((3, 8, 5, 5), 8, 0), ((2, 8, 6, 6), 10, 2), ((1, 12, 7, 4), 8, 1),
         ((2, 8, 3, 3), 8, 0)]


def _arrays(case, seed, dtype=np.float64):
    shape, f, _ = case
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype), (0.3 * rng.standard_normal((f, shape[1], 3, 3))).astype(dtype),
            rng.standard_normal(f).astype(dtype)]


def _conv(p):
    return lambda x, w, b: F.conv2d(x, w, b, 1, p)


@pytest.mark.parametrize("case", CASES)
def test_takes_the_winograd_path_and_matches_naive_definition(case):
    x, w, b = _arrays(case, 0)
    p = case[2]
    assert ConvPlan(x, w, b, (1, 1), (p, p), (1, 1), 1).winograd
    ref = naive_conv(x, w, b, (1, 1), (p, p), (1, 1), 1)
    out = _conv(p)(cnnlab.tensor(x), cnnlab.tensor(w), cnnlab.tensor(b)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    direct = kernels.winograd_conv(x, kernels.winograd_weights(w), (p, p), ref.shape[2:])
    np.testing.assert_allclose(direct.reshape(ref.shape), ref - b[:, None, None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_weight_gradient_matches_its_definition(case):
    # dW[f, c, i, j] = sum over n, y, x of g[n, f, y, x] * xpad[n, c, y + i, x + j], by loops
    x, w, b = _arrays(case, 2)
    p = case[2]
    rng = np.random.default_rng(3)
    xt, wt = cnnlab.tensor(x), cnnlab.tensor(w, requires_grad=True)
    out = _conv(p)(xt, wt, cnnlab.tensor(b))
    g = rng.standard_normal(out.shape)
    out.backward(g)
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    N, OH, OW = g.shape[0], g.shape[2], g.shape[3]
    ref = np.zeros(w.shape)
    for f in range(w.shape[0]):
        for c in range(w.shape[1]):
            for i in range(3):
                for j in range(3):
                    total = 0.0
                    for n in range(N):
                        for y in range(OH):
                            for xx in range(OW):
                                total += g[n, f, y, xx] * xpad[n, c, y + i, xx + j]
                    ref[f, c, i, j] = total
    np.testing.assert_allclose(wt.grad.numpy(), ref, rtol=1e-11, atol=1e-11)
    # the kernel functions directly: one part per image, summed, then transformed back
    g_nhwc = g.transpose(0, 2, 3, 1)
    parts = [kernels.winograd_weight_grad_part(x[k:k + 1], g_nhwc[k:k + 1], (p, p), (OH, OW)) for k in range(N)]
    np.testing.assert_allclose(kernels.winograd_weight_grad(sum(parts), np.float64), ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case", CASES)
def test_finite_differences_and_torch(case):
    """Through the harness: float64 finite differences (the first three cases: the others are the
    same path, at more cost) and PyTorch in float64 and float32, values and every gradient."""
    p = case[2]
    check_op(_conv(p), _arrays(case, 2), None, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, 1, p),
             fd=case in CASES[:3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_the_im2col_path(dtype):
    case = ((9, 32, 14, 14), 64, 1)  # vgg_small's third layer, a batch split into several chunks
    x, w, b = _arrays(case, 3, dtype)
    up = np.random.default_rng(4).standard_normal((9, 64, 14, 14)).astype(dtype)
    results = []
    for on in (True, False):
        ts = [cnnlab.tensor(a, requires_grad=True) for a in (x, w, b)]
        with kernels.allow_winograd(on):
            assert ConvPlan(x, w, b, (1, 1), (1, 1), (1, 1), 1).winograd is on
            out = _conv(1)(*ts)
            out.backward(cnnlab.tensor(up))
        results.append([out.numpy()] + [t.grad.numpy() for t in ts])
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for a, c in zip(*results):
        assert a.dtype == dtype and rel_error(a, c) < tol


def test_inside_the_fused_conv_pool_relu():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 8, 10, 10))
    w = 0.3 * rng.standard_normal((8, 8, 3, 3))
    fn = lambda xx, ww: F.conv2d_maxpool_act(xx, ww, None, 1, 1, pool_kernel=2, act="relu")  # noqa: E731
    ref = np.maximum(naive_pool(naive_conv(x, w, None, (1, 1), (1, 1), (1, 1), 1), (2, 2), (2, 2), (0, 0), "max"), 0)
    np.testing.assert_allclose(fn(cnnlab.tensor(x), cnnlab.tensor(w)).numpy(), ref, rtol=1e-12, atol=1e-12)
    check_gradients(fn, [x, w])


@pytest.mark.parametrize("kwargs,shape,expected", [
    ({}, (4, 8, 10, 10), True),
    ({"stride": 2}, (4, 8, 10, 10), False),
    ({"dilation": 2}, (4, 8, 10, 10), False),
    ({"groups": 2}, (4, 8, 10, 10), False),
    ({"padding": 3}, (4, 8, 10, 10), False),
    ({"kernel": 5}, (4, 8, 10, 10), False),
    ({}, (4, 4, 10, 10), False),  # too few input channels for the products to pay
    ({"out": 4}, (4, 8, 10, 10), False),  # too few output channels
    ({"out": 65}, (4, 8, 10, 10), False),  # too many
    ({}, (4, 65, 10, 10), False),
    ({"out": 64}, (4, 64, 28, 28), True),  # vgg_small's layers
    ({"out": 64}, (4, 32, 14, 14), True),
    ({}, (4, 8, 10, 9), False),  # 10x9 output maps: too small
    ({"padding": 0}, (4, 8, 12, 12), True),  # 10x10
    ({"padding": 0}, (4, 8, 11, 12), False),  # 9x10
    ({}, (4, 64, 6, 6), False),  # alexnet's 6x6 maps
])
def test_which_layers_take_it(kwargs, shape, expected):
    k, g, out = kwargs.get("kernel", 3), kwargs.get("groups", 1), kwargs.get("out", 8)
    x = np.zeros(shape, np.float32)
    w = np.zeros((out, shape[1] // g, k, k), np.float32)
    s, p, d = kwargs.get("stride", 1), kwargs.get("padding", 1), kwargs.get("dilation", 1)
    assert kernels.use_winograd(x, w.shape, (s, s), (p, p), (d, d), g) is expected
    with kernels.compiled(False):  # the plain NumPy path never uses it
        assert not kernels.use_winograd(x, w.shape, (1, 1), (1, 1), (1, 1), 1)


@pytest.mark.parametrize("shape, expected", [
    ((1, 32, 28, 28), False),  # inference on one image: 196 tiles
    ((4, 32, 28, 28), True),  # 784 tiles
    ((15, 64, 14, 14), False),  # 735 tiles
    ((16, 64, 14, 14), True),  # 784
    ((64, 64, 14, 14), True),  # a training batch
])
def test_a_small_batch_takes_im2col(shape, expected):
    x = np.zeros(shape, np.float32)
    w = np.zeros((64, shape[1], 3, 3), np.float32)
    assert kernels.use_winograd(x, w.shape, (1, 1), (1, 1), (1, 1), 1) is expected
