"""nn.fuse: the explicit fusion pass. Every zoo model computes the same bits fused and unfused; the
input model is left alone and shares its tensors with the fused one; each row of the pattern
table fuses its run and not a near miss; a fused module falls back to its layers where its fast
path does not apply; summarize shows what runs."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels, models, nn, optim
from cnnlab.nn.fuse import PATTERNS, fuse_layers
from helpers import graph_ops, rel_error

NO_BN_RELU = [p for p in PATTERNS if p.module is not nn.BatchNormReLU]
# the operator each fused module's fast path puts in the graph (MaxPoolAct is a reorder, no operator)
FAST_OP = {nn.ConvMaxPoolAct: "ConvMaxPoolAct", nn.ConvActAvgPool: "ConvActAvgPool",
           nn.BatchNormReLU: "BatchNormReLUTrain", nn.MaxPoolAct: None}


def _run(model, params, x, y, seed=1):
    """Output, every gradient of ``params`` and the buffers after one cross-entropy step of
    ``model`` (the same dropout masks for the same seed); the buffers are put back afterwards."""
    buffers = [b for _, b in model.named_buffers()]
    saved = [b.data.copy() for b in buffers]
    for p in params:
        p.grad = None
    cnnlab.manual_seed(seed)
    out = model(cnnlab.tensor(x))
    F.cross_entropy(out, cnnlab.tensor(y)).backward()
    result = [out.numpy().copy()] + [p.grad.numpy().copy() for p in params] + [b.numpy().copy() for b in buffers]
    for b, s in zip(buffers, saved):
        b.data[...] = s
    return result


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_zoo_model_computes_the_same_bits_fused(name):
    """Values, every parameter gradient and the updated batch-norm statistics, in training (same
    dropout masks) and evaluation. Batch norm + ReLU is the one pattern whose compiled pass rounds
    differently (float64 sums): with it the fused model agrees to float32 rounding, without it
    (every other row of the table) to the bit."""
    cnnlab.manual_seed(0)
    model = models.build(name)
    params = model.parameters()
    x = np.random.default_rng(2).standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10
    full, partial = nn.fuse(model), nn.fuse(model, patterns=NO_BN_RELU)
    has_bn_relu = any(isinstance(m, nn.BatchNormReLU) for m in full.modules())
    assert has_bn_relu == any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
    assert any(isinstance(m, nn.FusedModule) for m in full.modules()) or name == "nielsen-fc"  # FC layers only
    for training in (True, False):
        model.train(training)
        ref = _run(model, params, x, y)
        for a, b in zip(_run(partial, params, x, y), ref):
            np.testing.assert_array_equal(a, b)
        got = _run(full, params, x, y)
        for a, b in zip(got, ref):
            if has_bn_relu:
                assert rel_error(a, b) < 1e-5
            else:
                np.testing.assert_array_equal(a, b)


def test_fuse_leaves_the_model_alone_and_shares_its_tensors():
    model = models.build("default")
    layers, text = list(model.layers), repr(model)
    keys = list(model.state_dict())
    fused = nn.fuse(model)
    assert model.layers == layers and all(a is b for a, b in zip(model.layers, layers)) and repr(model) == text
    assert list(model.state_dict()) == keys  # a saved run keeps its keys
    assert len(fused.layers) < len(model.layers)
    # the same Parameter and buffer objects, in the same order
    assert [id(p) for p in fused.parameters()] == [id(p) for p in model.parameters()]
    assert [id(t) for t in fused.state_dict().values()] == [id(t) for t in model.state_dict().values()]
    assert list(fused.state_dict())[:2] == ["0.conv.weight", "1.bn.weight"]
    # the unfused model still runs its layers one by one
    x = cnnlab.tensor(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))
    ops = graph_ops(model(x))
    assert "ConvNd" in ops and "MaxPoolNd" in ops and "ConvMaxPoolAct" not in ops and "BatchNormReLUTrain" not in ops
    ops = graph_ops(fused(x))
    assert "ConvMaxPoolAct" in ops and "BatchNormReLUTrain" in ops and "ConvNd" not in ops


def test_training_the_fused_model_trains_the_original():
    cnnlab.manual_seed(0)
    model = models.build("lenet5")
    fused = nn.fuse(model)
    before = [p.numpy().copy() for p in model.parameters()]
    opt = optim.SGD(fused.parameters(), lr=0.1)
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    F.cross_entropy(fused(cnnlab.tensor(x)), cnnlab.tensor(np.arange(8))).backward()
    opt.step()
    assert all(not np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters()))
    # the original's state dict, loaded into a fresh model, gives the fused model's outputs
    cnnlab.manual_seed(5)
    fresh = models.build("lenet5").load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh(cnnlab.tensor(x)).numpy(), fused(cnnlab.tensor(x)).numpy())


class SubTanh(nn.Tanh):  # a subclass may compute something else: never fused
    def forward(self, x):
        return 2.0 * F.tanh(x)


class SubReLU(nn.ReLU):
    def forward(self, x):
        return F.relu(x) - 0.1 * F.relu(-x)


class SubMaxPool2d(nn.MaxPool2d):
    pass


# (row of PATTERNS, layers that match it, input shape, a near miss: layers it must leave alone)
ROWS = [
    (0, lambda: [nn.Conv2d(2, 4, 3), nn.MaxPool2d(2), nn.Tanh()], (3, 2, 10, 10),
     lambda: [nn.Conv2d(2, 4, 3), nn.MaxPool2d(2), SubTanh()]),
    (1, lambda: [nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1)], (3, 2, 9, 9),
     lambda: [nn.Conv2d(2, 4, 3), SubMaxPool2d(2)]),
    (2, lambda: [nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2)], (3, 2, 10, 10),
     lambda: [nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Dropout(0.0), nn.MaxPool2d(2)]),
    (3, lambda: [nn.Conv2d(2, 4, 3), nn.Sigmoid(), nn.AvgPool2d(2)], (3, 2, 10, 10),
     lambda: [nn.Conv2d(2, 4, 3), nn.Sigmoid(), nn.LPPool2d(2, 2)]),
    (4, lambda: [nn.Conv2d(2, 4, 5, padding=2), nn.AvgPool2d(2)], (3, 2, 8, 8),
     lambda: [nn.Conv1d(2, 4, 5), nn.AvgPool1d(2)]),
    (5, lambda: [nn.BatchNorm2d(2), nn.ReLU()], (4, 2, 5, 5),
     lambda: [nn.BatchNorm2d(2), SubReLU()]),
    (5, lambda: [nn.BatchNorm1d(6), nn.ReLU()], (5, 6),
     lambda: [nn.BatchNorm1d(6), nn.Sigmoid()]),
    (6, lambda: [nn.ReLU(), nn.MaxPool1d(2)], (3, 2, 8),
     lambda: [nn.ReLU(), nn.AvgPool1d(2)]),
    (6, lambda: [nn.Sigmoid(), nn.MaxPool3d(2)], (2, 2, 4, 4, 4),
     lambda: [SubReLU(), nn.MaxPool3d(2)]),
]


def test_every_row_of_the_table_is_tested():
    assert {r[0] for r in ROWS} == set(range(len(PATTERNS)))


@pytest.mark.parametrize("row, make, shape, near_miss", ROWS, ids=[f"row{r[0]}-{i}" for i, r in enumerate(ROWS)])
def test_each_row_fuses_its_run_and_not_a_near_miss(row, make, shape, near_miss):
    layers = make()
    fused = fuse_layers(layers, [PATTERNS[row]])
    assert len(fused) == 1 and type(fused[0]) is PATTERNS[row].module
    assert sorted(map(id, fused[0].children())) == sorted(map(id, layers))  # the original layers
    assert type(nn.fuse(nn.Sequential(*layers)).layers[0]) is PATTERNS[row].module  # the whole table agrees
    miss = near_miss()
    assert [type(m) for m in fuse_layers(miss, [PATTERNS[row]])] == [type(m) for m in miss]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("row, make, shape, near_miss", ROWS, ids=[f"row{r[0]}-{i}" for i, r in enumerate(ROWS)])
def test_each_fused_module_computes_what_its_layers_compute(row, make, shape, near_miss, compiled, dtype):
    """Fast path (kernels on) and fallback (kernels off): the same values and input, weight and
    bias gradients as the layers one by one; batch norm + ReLU's compiled pass to rounding."""
    seq = nn.Sequential(*make()).to(dtype=dtype)
    fused = nn.fuse(seq)
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    g = None
    results = []
    with kernels.compiled(compiled):
        for model in (fused, seq):
            xt = cnnlab.tensor(x, requires_grad=True)
            seq.zero_grad()
            out = model(xt)
            op = FAST_OP[PATTERNS[row].module]
            if model is fused and op is not None:  # the one operator on the fast path, the layers elsewhere
                assert (op in graph_ops(out)) is compiled
            g = np.random.default_rng(4).standard_normal(out.shape).astype(dtype) if g is None else g
            out.backward(cnnlab.tensor(g))
            results.append([out.numpy(), xt.grad.numpy()] + [p.grad.numpy() for p in seq.parameters()])
    for a, b in zip(*results):
        assert a.dtype == dtype
        if PATTERNS[row].module is nn.BatchNormReLU and compiled:
            assert rel_error(a, b) < (1e-5 if dtype == np.float32 else 1e-12)
        else:
            np.testing.assert_array_equal(a, b)


def test_reordered_and_fallback_inputs():
    """[conv, act, max-pool] runs the act after the pool on and off the fast path; a NumPy array
    and an unbatched (C, H, W) input take the layers' own paths."""
    cnnlab.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3)
    seq = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2))
    fused = nn.fuse(seq)
    block = fused.layers[0]
    assert isinstance(block, nn.ConvMaxPoolAct) and block.reordered and "written with ReLU before MaxPool2d" in repr(block)
    x = np.random.default_rng(6).standard_normal((4, 1, 10, 10)).astype(np.float32)
    ref = seq(cnnlab.tensor(x)).numpy()
    np.testing.assert_array_equal(fused(x).numpy(), ref)  # a NumPy array, not a Tensor
    np.testing.assert_array_equal(fused(cnnlab.tensor(x[0])).numpy(), ref[0])  # no batch axis
    with kernels.compiled(False):
        ops = graph_ops(fused(cnnlab.tensor(x)))
    assert ops[0] == "ReLU" and "MaxPoolNd" in ops  # the pool first, then the act
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\): input has 3 channels"):
        nn.fuse(nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))(cnnlab.tensor(np.ones((4, 3, 2, 2))))


def test_nested_and_other_containers_are_fused_recursively():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(),
                                          nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))
            self.head = [nn.Flatten(), nn.Linear(4 * 13 * 13, 10)]

        def forward(self, x):
            x = self.features(x)
            for layer in self.head:
                x = layer(x)
            return x

    cnnlab.manual_seed(0)
    net = Net()
    fused = nn.fuse(net)
    assert type(fused) is Net and fused is not net and fused.head == net.head
    assert [type(m).__name__ for m in fused.features.layers] == ["ConvMaxPoolAct", "Sequential"]
    assert type(fused.features.layers[1].layers[0]) is nn.BatchNormReLU
    assert [type(m).__name__ for m in net.features.layers] == ["Conv2d", "MaxPool2d", "ReLU", "Sequential"]
    assert [id(p) for p in fused.parameters()] == [id(p) for p in net.parameters()]
    x = cnnlab.tensor(np.random.default_rng(7).standard_normal((4, 1, 28, 28)).astype(np.float32))
    net.eval()
    assert rel_error(fused(x).numpy(), net(x).numpy()) < 1e-5
    # fusing again changes nothing
    again = nn.fuse(fused)
    assert [type(m) for m in again.features.layers] == [type(m) for m in fused.features.layers]
    assert again.features.layers[0] is fused.features.layers[0]


def test_summarize_shows_what_runs():
    cnnlab.manual_seed(0)
    model = models.build("nielsen-dropout")
    rows, fused_rows = models.summarize(model), models.summarize(nn.fuse(model))
    assert fused_rows[0][1] == ("ConvMaxPoolAct(Conv2d(1, 20, kernel_size=(5, 5), stride=(1, 1)) -> "
                                "MaxPool2d(kernel_size=(2, 2), stride=(2, 2)) -> ReLU())")
    assert fused_rows[0][2:] == (rows[2][2], 520)  # the block's output is its last layer's
    assert [r[1] for r in fused_rows[2:]] == [r[1] for r in rows[6:]]
    assert sum(r[3] for r in fused_rows) == sum(r[3] for r in rows) == model.num_parameters()
    lenet = [r[1].split("(")[0] for r in models.summarize(nn.fuse(models.build("lenet5")))]
    assert lenet[:2] == ["ConvActAvgPool", "ConvActAvgPool"]
    vgg = [r[1] for r in models.summarize(nn.fuse(models.build("best-vgg")))]
    assert vgg[1] == "BatchNormReLU(BatchNorm2d(32, eps=1e-05, momentum=0.1) -> ReLU())"
