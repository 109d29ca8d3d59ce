"""conv -> max-pool -> activation and conv -> activation -> average pool as one operator each
(functional/fused.py) and their use by nn.fuse: against the naive definitions, by float64 finite
differences, against PyTorch, and against the same layers run one by one."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels, nn
from cnnlab.functional.fused import ConvActAvgPool, ConvMaxPoolAct
from harness import check_op, torch
from helpers import graph_ops, naive_conv, naive_pool

ACT = {None: lambda a: a, "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh,
       "sigmoid": lambda a: 1 / (1 + np.exp(-a))}

# (N, C, H, W), (F, C/groups, kh, kw), conv (stride, padding, dilation, groups), pool (kernel, stride, padding), act
CASES = [
    ((3, 1, 28, 28), (4, 1, 5, 5), (1, 0, 1, 1), (2, 2, 0), "relu"),  # the article's first layer
    ((2, 6, 12, 12), (8, 6, 5, 5), (1, 0, 1, 1), (2, 2, 0), "tanh"),  # channels-last layout
    ((2, 4, 11, 9), (6, 2, 3, 3), (1, 1, 1, 2), (2, 2, 0), "sigmoid"),  # groups
    ((2, 3, 13, 14), (5, 3, 3, 2), (2, 1, 1, 1), (3, 2, 1), None),  # strided conv, overlapping padded pool
    ((2, 5, 15, 15), (4, 5, 3, 3), (1, 2, 2, 1), (3, 3, 1), "relu"),  # dilation
]


# the same cases for conv -> act -> average pool; the first two are LeNet-5's layers
AVG_CASES = [
    ((3, 1, 28, 28), (6, 1, 5, 5), (1, 2, 1, 1), (2, 2, 0), "tanh"),
    ((2, 6, 14, 14), (16, 6, 5, 5), (1, 0, 1, 1), (2, 2, 0), "tanh"),
    ((2, 8, 10, 9), (8, 8, 3, 3), (1, 1, 1, 1), (2, 2, 0), "relu"),  # a Winograd layer (see _winograd_too)
] + CASES[2:]


@pytest.fixture(autouse=True)
def _winograd_too(monkeypatch):
    """Let the small 3x3 case above take the Winograd path (its 10x9 maps are below the size rule)."""
    monkeypatch.setattr(kernels.policy, "WINOGRAD_MIN_OUT", 1)
    monkeypatch.setattr(kernels.policy, "WINOGRAD_MIN_TILES", 1)


def _call(case, fused, kind="max"):
    """The fused operator (max: conv -> max-pool -> act; avg: conv -> act -> average pool), or the
    same layers one by one."""
    _, _, (s, p, dl, g), (pk, ps, pp), act = case
    if fused:
        op = F.conv2d_maxpool_act if kind == "max" else F.conv2d_act_avgpool
        return lambda x, w, b: op(x, w, b, s, p, dl, g, pk, ps, pp, act)
    acts = {None: lambda t: t, "relu": F.relu, "tanh": F.tanh, "sigmoid": F.sigmoid}
    if kind == "max":
        return lambda x, w, b: acts[act](F.max_pool2d(F.conv2d(x, w, b, s, p, dl, g), pk, ps, pp))
    return lambda x, w, b: F.avg_pool2d(acts[act](F.conv2d(x, w, b, s, p, dl, g)), pk, ps, pp)


# every case of both fused operators, for the tests they share
BOTH = [("max", c) for c in CASES] + [("avg", c) for c in AVG_CASES]
BOTH_IDS = [f"{k}{i}" for k, cases in (("max", CASES), ("avg", AVG_CASES)) for i in range(len(cases))]


def _arrays(case, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    xs, ws = case[:2]
    return [rng.standard_normal(xs).astype(dtype), (0.5 * rng.standard_normal(ws)).astype(dtype),
            rng.standard_normal(ws[0]).astype(dtype)]


def _naive(case, kind):
    """The definitions one after the other: conv -> max-pool -> act, or conv -> act -> average pool."""
    _, _, (s, p, dl, g), (pk, ps, pp), act = case

    def ref(x, w, b):
        conv = naive_conv(x, w, b, (s, s), (p, p), (dl, dl), g)
        if kind == "max":
            return ACT[act](naive_pool(conv, (pk, pk), (ps, ps), (pp, pp), "max"))
        return naive_pool(ACT[act](conv), (pk, pk), (ps, ps), (pp, pp), "avg")

    return ref


def _torch(case, kind):
    _, _, (s, p, dl, g), (pk, ps, pp), act = case
    tf = torch.nn.functional
    tact = {None: lambda t: t, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[act]

    def tfn(x, w, b):
        if kind == "max":
            return tact(tf.max_pool2d(tf.conv2d(x, w, b, s, p, dl, g), pk, ps, pp))
        return tf.avg_pool2d(tact(tf.conv2d(x, w, b, s, p, dl, g)), pk, ps, pp)

    return tfn


@pytest.mark.parametrize("kind,case", BOTH, ids=BOTH_IDS)
def test_fused(kind, case):
    """The definitions, float64 finite differences and PyTorch (float64, float32) via the harness;
    the average-pool cases on a batch of 2, for the finite differences' sake."""
    if kind == "avg":
        case = ((2,) + case[0][1:],) + case[1:]
    check_op(_call(case, True, kind), _arrays(case, 0), _naive(case, kind), _torch(case, kind))


@pytest.mark.parametrize("kind,case", BOTH, ids=BOTH_IDS)
def test_the_fused_operator_is_the_one_tested(kind, case):
    arrays = _arrays(case, 0)
    out = _call(case, True, kind)(*[cnnlab.tensor(a, requires_grad=True) for a in arrays])
    assert type(out._ctx) is {"max": ConvMaxPoolAct, "avg": ConvActAvgPool}[kind]
    with cnnlab.no_grad():  # inference keeps no activations, and gives the same values
        again = _call(case, True, kind)(*[cnnlab.tensor(a) for a in arrays])
    assert again._ctx is None
    np.testing.assert_array_equal(again.numpy(), out.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,case", BOTH, ids=BOTH_IDS)
def test_fused_equals_layer_by_layer_on_a_split_batch(kind, case, dtype, monkeypatch):
    """A batch cut into chunks and spread over the cores gives the values and gradients of the
    layers run one by one."""
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_BYTES", 1 << 16)
    monkeypatch.setattr(kernels.policy, "CPU_CHUNK_BYTES", 1 << 18)
    case = ((160,) + case[0][1:],) + case[1:]
    arrays = _arrays(case, 3, dtype)

    def run(fused):
        ts = [cnnlab.tensor(a, requires_grad=True) for a in arrays]
        out = _call(case, fused, kind)(*ts)
        out.backward(np.random.default_rng(4).standard_normal(out.shape).astype(dtype))
        return [out.numpy()] + [t.grad.numpy() for t in ts]

    got, ref = run(True), run(False)
    for a, r in zip(got, ref):  # the same chunks, kernels and roundings: the same bits
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, r)


def _step(model, x, y):
    """The model's output and every parameter's gradient for one cross-entropy step."""
    model.zero_grad()
    out = model(cnnlab.tensor(x))
    F.cross_entropy(out, cnnlab.tensor(y)).backward()
    return out, [p.grad.numpy().copy() for p in model.parameters()]


def _check_against_its_layers(fused, model, x, y, out, grads):
    """The fused model's step (``out``, ``grads``) equals the layers' one by one, bit for bit, and
    its own with the numba kernels off (the fallback path) to rounding."""
    plain_out, plain_grads = _step(model, x, y)
    np.testing.assert_array_equal(out.numpy(), plain_out.numpy())
    for a, b in zip(grads, plain_grads):
        np.testing.assert_array_equal(a, b)
    with kernels.compiled(False):
        ref_out, ref_grads = _step(fused, x, y)
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def test_fuse_fuses_conv_pool_activation_and_matches_unfused():
    cnnlab.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),  # act before pool: fused too
                          nn.Conv2d(6, 12, 3), nn.MaxPool2d(2), nn.Tanh(),
                          nn.Flatten(), nn.Linear(12 * 5 * 5, 10))
    fused = nn.fuse(model)
    x = np.random.default_rng(5).standard_normal((40, 1, 28, 28)).astype(np.float32)
    y = np.arange(40) % 10
    out, grads = _step(fused, x, y)
    # the graph holds the fused operator, not the separate layers; the unfused model's the layers
    kinds = graph_ops(fused(cnnlab.tensor(x)))
    assert kinds.count("ConvMaxPoolAct") == 2 and "MaxPoolNd" not in kinds and "ConvNd" not in kinds
    kinds = graph_ops(model(cnnlab.tensor(x)))
    assert "ConvMaxPoolAct" not in kinds and kinds.count("ConvNd") == 2 and kinds.count("MaxPoolNd") == 2
    _check_against_its_layers(fused, model, x, y, out, grads)


def test_fuse_fuses_lenet5_and_matches_unfused():
    """LeNet-5's [Conv2d, Tanh, AvgPool2d] blocks run as ConvActAvgPool; [Conv2d, AvgPool2d, ReLU]
    fuses the convolution and the pool only (the activation after an average pool runs on its own)."""
    from cnnlab import models  # noqa: PLC0415

    cnnlab.manual_seed(0)
    for model, fused, separate in ((models.build("lenet5"), 2, "Tanh"),
                                   (nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(),
                                                  nn.Linear(4 * 13 * 13, 10)), 1, "ReLU")):
        x = np.random.default_rng(7).standard_normal((24, 1, 28, 28)).astype(np.float32)
        y = np.arange(24) % 10
        run = nn.fuse(model)
        out, grads = _step(run, x, y)
        kinds = graph_ops(run(cnnlab.tensor(x)))
        assert kinds.count("ConvActAvgPool") == fused and "SumPoolNd" not in kinds and "ConvNd" not in kinds
        assert separate in kinds
        _check_against_its_layers(run, model, x, y, out, grads)


def test_fused_rejects_unknown_activation():
    x = cnnlab.tensor(np.zeros((1, 1, 8, 8)))
    w = cnnlab.tensor(np.zeros((2, 1, 3, 3)))
    with pytest.raises(ValueError, match="act must be one of"):
        F.conv2d_maxpool_act(x, w, act="gelu")
    with pytest.raises(ValueError, match="conv2d_act_avgpool: act must be one of"):
        F.conv2d_act_avgpool(x, w, act="gelu")


def test_fuse_does_not_fuse_a_subclassed_activation_and_takes_a_plain_array():
    class Leaky(nn.ReLU):  # a subclass is never fused or reordered: its own forward must run
        def forward(self, x):
            return F.relu(x) - 0.1 * F.relu(-x)

    cnnlab.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3)
    x = np.random.default_rng(6).standard_normal((4, 1, 10, 10)).astype(np.float32)
    for layers in ([conv, nn.MaxPool2d(2), Leaky()], [conv, Leaky(), nn.MaxPool2d(2)]):
        out = nn.fuse(nn.Sequential(*layers))(cnnlab.tensor(x))
        # conv + max-pool may still be fused, but never with this activation
        assert graph_ops(out).count("ReLU") == 2
        ref = layers[2](layers[1](conv(cnnlab.tensor(x))))
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
        assert out.numpy().min() < 0
    class Blur(nn.AvgPool2d):  # a subclassed pool is not fused either
        def forward(self, x):
            return super().forward(x) * 2.0

    out = nn.fuse(nn.Sequential(conv, nn.Tanh(), Blur(2)))(cnnlab.tensor(x))
    assert "ConvActAvgPool" not in graph_ops(out)
    np.testing.assert_array_equal(out.numpy(), (F.avg_pool2d(F.tanh(conv(cnnlab.tensor(x))), 2) * 2.0).numpy())
    # a NumPy array (not a Tensor) still goes through the layers
    out = nn.fuse(nn.Sequential(conv, nn.MaxPool2d(2), nn.ReLU()))(x)
    np.testing.assert_allclose(out.numpy(), F.relu(F.max_pool2d(conv(cnnlab.tensor(x)), 2)).numpy())
