"""ONNX export (cnnlab.onnx_export, `cnnlab export --onnx`): every zoo model and the 1-D and 3-D
examples export, pass onnx.checker and give ONNX Runtime's outputs equal to cnnlab's to 1e-5 at
two batch sizes; operators without a mapping are named; a trained run keeps its test accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnlab
from cnnlab import examples, models, nn, runs
from cnnlab import functional as F
from cnnlab.autograd import Function, Tensor, no_grad
from cnnlab.cli import main
from cnnlab.onnx_export import OnnxExportError, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = 1e-5


def _randomise(model, seed=0):
    """Weights and batch-norm statistics away from their initial values (Nielsen's nets start with
    a zero classifier, batch norm with mean 0 and variance 1), so that every part shows."""
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        shape = t.shape
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) > 1:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            value = rng.uniform(-0.5, 0.5, shape) + (1.0 if name.endswith("weight") else 0.0)
        t.data[...] = value.astype(t.dtype)
    return model.eval()


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _cnnlab(model, x):
    with no_grad():
        return runs.runnable(model)(Tensor(x)).numpy()


def _assert_close(got, want):
    """Equal to 1e-5 relative: each value within 1e-5 of its own size or of the output's largest."""
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale)


def _round_trip(model, shape, batches=(1, 3)):
    proto = export_onnx(model, shape)
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == list(shape)
    session = _session(proto)
    rng = np.random.default_rng(1)
    for n in batches:  # one graph, several batch sizes
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        got = session.run(None, {"input": x})[0]
        assert got.shape[0] == n
        _assert_close(got, _cnnlab(model, x))
    return proto


@pytest.mark.parametrize("name", models.names())
def test_every_zoo_model_exports_and_matches(name):
    proto = _round_trip(_randomise(models.build(name)), (1, 28, 28))
    assert proto.opset_import[0].version >= 18
    # weights are initializers, not graph inputs
    assert [i.name for i in proto.graph.input] == ["input"]
    assert proto.graph.initializer


@pytest.mark.parametrize("build, shape", [(examples.seq1d_model, (1, 128)), (examples.vol3d_model, (1, 16, 16, 16))])
def test_the_1d_and_3d_examples_export_and_match(build, shape):
    _round_trip(_randomise(build()), shape)


class Residual(nn.Module):
    """A model with its own forward: a residual block, batch norm without ReLU after it, global
    pooling, and a mix of elementwise operators, reductions, indexing and softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.bn(self.conv2(y)) + y)
        z = y.mean(dim=(2, 3)) * 2.0 - y.amax(dim=(2, 3)) / 3 + (y ** 2).sum(dim=(2, 3)).sqrt()
        z = z[:, 1:] - z[:, 0:1] + z[..., -1:].exp().clamp(0.0, 2.0)
        return F.log_softmax(self.fc(F.tanh(F.avg_pool2d(y, 2).flatten(1)[:, :4] + z[:, :1])), 1)


def test_a_model_with_its_own_forward_exports_and_matches():
    _round_trip(_randomise(Residual()), (2, 6, 6), batches=(1, 4))


def test_the_traced_model_is_left_in_its_mode():
    model = models.build("fast")
    export_onnx(model, (1, 28, 28))
    assert all(m.training for m in model.modules())
    assert "forward" not in vars(model.layers[0])  # the tracing wrappers are gone


class Cube(Function):
    def forward(self, x):
        return x ** 3

    def backward(self, g):  # pragma: no cover - not differentiated here
        raise NotImplementedError


class CubeLayer(nn.Module):
    def forward(self, x):
        return Cube.apply(x)


def test_an_operator_without_a_mapping_is_named_with_its_layer():
    model = nn.Sequential(nn.Linear(3, 3), CubeLayer())
    with pytest.raises(OnnxExportError, match=r"layer '1' \(CubeLayer\) uses the operator Cube, which has no ONNX"):
        export_onnx(model, (3,))
    # batch norm without running statistics normalises with the batch's: no ONNX operator does
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.ReLU())
    with pytest.raises(OnnxExportError, match="BatchNormReLUTrain"):
        export_onnx(bn, (1, 5, 5))


class NumpyOnData(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) * Tensor(np.abs(x.data).max())  # computed behind the operators' back


def test_a_value_computed_outside_the_operators_is_refused():
    with pytest.raises(OnnxExportError, match="not made by cnnlab's operators"):
        export_onnx(NumpyOnData(), (3,))
    with pytest.raises(OnnxExportError, match="not computed from its input"):
        export_onnx(_Constant(), (3,))


class _Constant(nn.Module):
    def forward(self, x):
        return Tensor(np.zeros((x.shape[0], 2), dtype=np.float32))


# ------------------------------------------------------------------------------ a trained run
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from helpers import save_short_run

    return save_short_run(tmp_path_factory.mktemp("runs") / "r", "article", 2000, nesterov=True)


def test_cli_exports_a_trained_run_with_its_test_accuracy(trained_run, tmp_path, capsys):
    path = tmp_path / "out" / "model.onnx"
    assert main(["export", str(trained_run), "--onnx", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    r = runs.load(trained_run)
    norm = json.loads(meta["cnnlab.normalization"])
    assert (norm["mean"], norm["std"]) == (r.config.mean, r.config.std)
    assert json.loads(meta["cnnlab.classes"]) == [str(d) for d in range(10)]
    assert json.loads(meta["cnnlab.input"])["channels"] == 1
    assert meta["cnnlab.version"] == cnnlab.__version__
    assert json.loads(meta["cnnlab.model"])["name"] == "article"

    from cnnlab.data import load_dataset, standardize

    images, labels = (a[:1000] for a in load_dataset("mnist").test)
    x = standardize(images, norm["mean"], norm["std"]).reshape(-1, 1, 28, 28).astype(np.float32)
    got = _session(proto).run(None, {"input": x})[0]
    want = _cnnlab(r.model, x)
    _assert_close(got, want)
    assert (got.argmax(1) == want.argmax(1)).all()
    accuracy = (got.argmax(1) == labels).mean()
    assert accuracy == (want.argmax(1) == labels).mean() and accuracy > 0.8, accuracy


def test_cli_refuses_a_bad_run_or_path_in_one_line(trained_run, tmp_path, capsys):
    cases = [[str(tmp_path / "missing"), "--onnx", str(tmp_path / "a.onnx")],
             [str(trained_run), "--onnx", str(tmp_path)],  # a folder
             [str(trained_run), "--onnx", str(trained_run / "spec.json" / "a.onnx")],  # under a file
             [str(trained_run)]]  # nothing asked for
    for argv, code in zip(cases, (3, 3, 3, 2)):  # bad input (3); nothing asked for is a usage error (2)
        assert main(["export", *argv]) == code
        err = capsys.readouterr().err
        assert err.startswith("cnnlab export: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "a.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
