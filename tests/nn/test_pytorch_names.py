"""The layers PyTorch users reach for next (LeakyReLU, GELU, AdaptiveAvgPool2d, Dropout2d, BatchNorm3d,
LayerNorm, GroupNorm) and their functional forms: the definition written as loops, float64 finite
differences and PyTorch (tests/harness.py), module and functional alike."""

import itertools
import math

import numpy as np
import pytest
import torch

import cnnlab
import cnnlab.functional as F
from cnnlab import nn
from harness import check_op

T, TF = torch.nn, torch.nn.functional


def _each(a, f):
    out = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        out[idx] = f(a[idx])
    return out


def _gelu_exact(v):
    return v * 0.5 * (1 + math.erf(v / math.sqrt(2)))


def _gelu_tanh(v):
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))


@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5])
def test_leaky_relu(slope):
    definition = lambda a: _each(a, lambda v: v if v > 0 else slope * v)  # noqa: E731
    check_op(lambda t: F.leaky_relu(t, slope), [(3, 4, 5)], definition, lambda t: TF.leaky_relu(t, slope))
    check_op(nn.LeakyReLU(slope), [(2, 6)], definition, T.LeakyReLU(slope))
    assert nn.LeakyReLU().negative_slope == T.LeakyReLU().negative_slope == 0.01


@pytest.mark.parametrize("approximate,one", [("none", _gelu_exact), ("tanh", _gelu_tanh)])
def test_gelu(approximate, one):
    x = np.random.default_rng(2).standard_normal((4, 9)) * 3  # well into both tails
    check_op(lambda t: F.gelu(t, approximate), [x], lambda a: _each(a, one),
             lambda t: TF.gelu(t, approximate=approximate))
    check_op(nn.GELU(approximate), [(3, 5)], lambda a: _each(a, one), T.GELU(approximate))


def test_erf_against_math_erf():
    """GELU's erf: float64 is math.erf itself; float32 a rational approximation within 6.5e-8 of it."""
    from cnnlab import kernels

    x = np.concatenate([np.linspace(-6, 6, 20001), [0.0, 1e-30, -1e-8, 5e-4, 3.99, 4.0, 4.01, 30.0, -30.0]])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_array_equal(kernels.erf(x), want)
    x32 = x.astype(np.float32)
    got = kernels.erf(x32)
    assert got.dtype == np.float32
    want32 = np.array([math.erf(float(v)) for v in x32])
    assert np.abs(got - want32).max() < 2e-7
    small = np.abs(x32) < 1e-3  # relative accuracy where erf is near 0
    assert np.all(np.abs(got[small] - want32[small]) <= 1e-6 * np.abs(want32[small]) + 1e-37)


def test_gelu_exact_and_tanh_differ_and_bad_forms_are_refused():
    x = cnnlab.tensor(np.linspace(-3, 3, 13))
    gap = np.abs(F.gelu(x).numpy() - F.gelu(x, "tanh").numpy()).max()
    assert 1e-5 < gap < 1e-2  # two different functions, close to each other
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="negative_slope must be a finite number"):
        F.leaky_relu(x, float("nan"))


def _naive_adaptive(a, out_size):
    """Each output cell the mean of its window: rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1, same for columns."""
    H, W = a.shape[-2:]
    oh, ow = out_size
    out = np.zeros(a.shape[:-2] + (oh, ow))
    for lead in np.ndindex(a.shape[:-2]):
        for i, j in itertools.product(range(oh), range(ow)):
            r0, r1 = math.floor(i * H / oh), math.ceil((i + 1) * H / oh)
            c0, c1 = math.floor(j * W / ow), math.ceil((j + 1) * W / ow)
            vals = [a[lead + (r, c)] for r in range(r0, r1) for c in range(c0, c1)]
            out[lead + (i, j)] = math.fsum(vals) / len(vals)
    return out


@pytest.mark.parametrize("shape,size", [
    ((2, 3, 7, 5), (3, 2)),   # windows of unequal lengths that overlap
    ((2, 3, 6, 6), 1),        # global average pooling
    ((1, 2, 5, 9), (4, 9)),   # one axis kept
    ((1, 2, 3, 4), (5, 7)),   # more outputs than inputs: windows repeat
    ((3, 5, 8), (2, 3)),      # no batch axis
    ((2, 3, 6, 5), (None, 2)),
])
def test_adaptive_avg_pool2d(shape, size):
    full = tuple(shape[-2 + i] if v is None else v for i, v in enumerate(size if isinstance(size, tuple) else (size,) * 2))
    check_op(lambda t: F.adaptive_avg_pool2d(t, size), [shape], lambda a: _naive_adaptive(a, full),
             lambda t: TF.adaptive_avg_pool2d(t, size))
    check_op(nn.AdaptiveAvgPool2d(size), [shape], lambda a: _naive_adaptive(a, full), T.AdaptiveAvgPool2d(size))


def test_adaptive_avg_pool2d_refuses_bad_sizes():
    x = cnnlab.tensor(np.ones((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="output_size must hold positive ints"):
        F.adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(ValueError, match="expected a 4-D input"):
        F.adaptive_avg_pool2d(cnnlab.tensor(np.ones((4, 4))), 2)


def _seeded(fn, seed=7):
    def run(*t):
        cnnlab.manual_seed(seed)
        return fn(*t)
    return run


@pytest.mark.parametrize("shape", [(4, 6, 3, 5), (3, 8, 7)])
def test_dropout2d_drops_whole_channels(shape):
    p = 0.4
    x = np.random.default_rng(0).standard_normal(shape)
    y = _seeded(lambda t: F.dropout2d(t, p))(cnnlab.tensor(x)).numpy()
    # the definition, channel by channel: a map is all zero, or the input map / (1 - p)
    kept = np.zeros(shape[:2], dtype=bool)
    for n, c in np.ndindex(shape[:2]):
        kept[n, c] = np.any(y[n, c] != 0)
        np.testing.assert_allclose(y[n, c], x[n, c] / (1 - p) if kept[n, c] else 0.0, rtol=1e-12)
    assert 0 < kept.sum() < kept.size
    mask = kept.reshape(shape[:2] + (1,) * (len(shape) - 2)) / (1 - p)
    # finite differences (the same mask on every call) and PyTorch's rule: x * its channel's mask
    check_op(_seeded(lambda t: F.dropout2d(t, p)), [x], lambda a: a * mask, lambda t: t * torch.tensor(mask),
             dtypes=(np.float64,))  # float32 draws other numbers: that mask is checked below
    # PyTorch's own dropout2d makes masks of the same form
    t = TF.dropout2d(torch.tensor(x), p).numpy() if len(shape) == 4 else None
    if t is not None:
        ratio = [np.unique(np.round(t[n, c] / x[n, c], 9)).tolist() for n, c in np.ndindex(shape[:2])]
        assert all(r in ([0.0], [round(1 / (1 - p), 9)]) for r in ratio)


def test_dropout2d_rate_eval_and_module():
    x = cnnlab.tensor(np.ones((100, 50, 2, 2), np.float32), requires_grad=True)
    cnnlab.manual_seed(1)
    y = F.dropout2d(x, 0.3)
    kept = y.numpy()[:, :, 0, 0] != 0
    assert abs(kept.mean() - 0.7) < 0.03 and y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy()[:, :, 1, 1], kept / 0.7, rtol=1e-6)
    layer = nn.Dropout2d(0.3)
    assert layer.eval()(x) is x and F.dropout2d(x, 0.3, training=False) is x
    with pytest.raises(ValueError, match="dropout2d: expected a 4-D input"):
        F.dropout2d(cnnlab.tensor(np.ones((3, 4))))
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout2d(1.5)


def _naive_norm(a, groups_of):
    """(x - mean) / sqrt(var + eps) over each group of positions that ``groups_of`` lists."""
    out = np.zeros_like(a)
    for idx in groups_of(a):
        vals = [a[i] for i in idx]
        mu = math.fsum(vals) / len(vals)
        var = math.fsum((v - mu) ** 2 for v in vals) / len(vals)
        for i in idx:
            out[i] = (a[i] - mu) / math.sqrt(var + 1e-5)
    return out


def _layer_groups(k):
    def groups(a):
        lead = a.shape[:a.ndim - k]
        return [[h + r for r in np.ndindex(a.shape[a.ndim - k:])] for h in np.ndindex(lead)]
    return groups


def _group_groups(g):
    def groups(a):
        per = a.shape[1] // g
        return [[(n, c) + r for c in range(j * per, (j + 1) * per) for r in np.ndindex(a.shape[2:])]
                for n in range(a.shape[0]) for j in range(g)]
    return groups


def _data(shape, seed=5):
    """Inputs unlike the harness's upstream gradient: with the same seed the upstream gradient equals the
    input, and sum(x * norm(x)) has a gradient near zero, which finite differences cannot resolve."""
    return np.random.default_rng(seed).standard_normal(shape) * 2 + 0.5


@pytest.mark.parametrize("shape,normalized", [((3, 4, 5), (5,)), ((2, 3, 4, 5), (4, 5)), ((6, 7), 7)])
def test_layer_norm(shape, normalized):
    k = 1 if isinstance(normalized, int) else len(normalized)
    nshape = shape[len(shape) - k:]
    check_op(lambda t: F.layer_norm(t, normalized), [_data(shape)], lambda a: _naive_norm(a, _layer_groups(k)),
             lambda t: TF.layer_norm(t, nshape))
    check_op(lambda t, w, b: F.layer_norm(t, normalized, w, b), [_data(shape), nshape, nshape],
             lambda a, w, b: _naive_norm(a, _layer_groups(k)) * w + b,
             lambda t, w, b: TF.layer_norm(t, nshape, w, b))


@pytest.mark.parametrize("shape,groups", [((2, 6, 3, 4), 3), ((3, 4, 5), 1), ((2, 4, 2, 2, 3), 4), ((4, 6), 2)])
def test_group_norm(shape, groups):
    C = shape[1]
    bshape = (1, C) + (1,) * (len(shape) - 2)
    check_op(lambda t, w, b: F.group_norm(t, groups, w, b), [_data(shape), (C,), (C,)],
             lambda a, w, b: _naive_norm(a, _group_groups(groups)) * w.reshape(bshape) + b.reshape(bshape),
             lambda t, w, b: TF.group_norm(t, groups, w, b))
    check_op(lambda t: F.group_norm(t, groups), [_data(shape)], lambda a: _naive_norm(a, _group_groups(groups)),
             lambda t: TF.group_norm(t, groups))


def _same_module(ours, theirs, shape, seed=1):
    """Same weights (theirs copied into ours): output, input gradient and every parameter's gradient."""
    ours.double().zero_grad()
    theirs.double().zero_grad()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()
                          if k != "num_batches_tracked"})
    x = rng.standard_normal(shape)
    xt, txt = cnnlab.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = ours(xt), theirs(txt)
    g = rng.standard_normal(tuple(tout.shape))
    out.backward(g)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), txt.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    return out


@pytest.mark.parametrize("make,tmake,shape", [
    (lambda: nn.LayerNorm((4, 5)), lambda: T.LayerNorm((4, 5)), (2, 3, 4, 5)),
    (lambda: nn.LayerNorm(6, elementwise_affine=False), lambda: T.LayerNorm(6, elementwise_affine=False), (3, 6)),
    (lambda: nn.LayerNorm(6, bias=False), lambda: T.LayerNorm(6, bias=False), (3, 6)),
    (lambda: nn.GroupNorm(2, 6), lambda: T.GroupNorm(2, 6), (2, 6, 3, 3)),
    (lambda: nn.GroupNorm(3, 3, affine=False), lambda: T.GroupNorm(3, 3, affine=False), (2, 3, 5)),
], ids=["LayerNorm", "LayerNorm-plain", "LayerNorm-nobias", "GroupNorm", "GroupNorm-plain"])
def test_norm_modules_match_torch(make, tmake, shape):
    ours, theirs = make(), tmake()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _same_module(ours, theirs, shape)


def test_batch_norm_3d_trains_and_evaluates_as_torch():
    ours, theirs = nn.BatchNorm3d(3, momentum=0.2), T.BatchNorm3d(3, momentum=0.2)
    shape = (2, 3, 3, 4, 2)
    for _ in range(2):  # training: batch statistics, running ones updated
        _same_module(ours, theirs, shape)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-10)
    ours.eval(), theirs.eval()
    _same_module(ours, theirs, shape, seed=4)
    # the definition and finite differences, in training mode
    bn = nn.BatchNorm3d(3).double()
    check_op(bn, [_data(shape)], lambda a: _naive_norm(a, lambda b: [[(n,) + i for n in range(b.shape[0])
                                                              for i in np.ndindex(b.shape[1:]) if i[0] == c]
                                                             for c in range(3)]),
             None)
    with pytest.raises(ValueError, match="BatchNorm3d: expected a 5-D input"):
        nn.BatchNorm3d(3)(cnnlab.tensor(np.ones((2, 3, 4, 4))))


def test_layer_and_group_norm_refuse_bad_shapes():
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(cnnlab.tensor(np.ones((2, 3))), (4,))
    with pytest.raises(ValueError, match="num_channels \\(6\\) must be divisible by num_groups \\(4\\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="expected input \\(N, 6"):
        nn.GroupNorm(2, 6)(cnnlab.tensor(np.ones((2, 4, 3))))
