"""Open models: any model made of cnnlab's layers saves as a run and loads back.

A Sequential is saved as a layer spec (its layers' constructor arguments, recorded by Module);
a Module with its own forward by the name it is registered under (models.register).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnlab
from cnnlab import checkpoint, models, nn, optim, recipes, runs
from cnnlab.cli import main
from cnnlab.data import DataLoader, load_dataset
from cnnlab.train import fit


def _many_layers():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", bias=False), nn.BatchNorm2d(4, momentum=0.2), nn.ReLU(),
        nn.LocalResponseNorm(3, 1e-3, 0.7, 1.5), nn.LPPool2d(2, 2), nn.Tanh(),
        nn.Sequential(nn.Conv2d(4, 6, (3, 3), stride=2, padding=1, dilation=1), nn.AvgPool2d(2, padding=1)),
        nn.MaxPool2d(3, 1, 1), nn.Sigmoid(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(6 * 4 * 4, 12),
        nn.BatchNorm1d(12, eps=1e-3), nn.Identity(), nn.Linear(12, 10, bias=False), nn.LogSoftmax(dim=1))


def _outputs(model, x):
    model.eval()
    with cnnlab.no_grad():
        return model(cnnlab.tensor(x)).numpy()


def test_every_layer_records_its_constructor_arguments():
    conv = nn.Conv2d(2, 4, (3, 5), stride=2, groups=2, bias=False)
    assert conv.init_args() == {"in_channels": 2, "out_channels": 4, "kernel_size": (3, 5), "stride": 2,
                                "padding": 0, "dilation": 1, "groups": 2, "bias": False}
    assert nn.ReLU().init_args() == {} and nn.Softmax(0).init_args() == {"dim": 0}

    class Outer(nn.Module):
        def __init__(self, width=3, *, depth=2):
            super().__init__()
            self.fc = nn.Linear(width, depth)

    class Inner(Outer):
        def __init__(self):
            super().__init__(5)  # the class the object is records, not the one super() reaches

    assert Outer(4).init_args() == {"width": 4, "depth": 2} and Inner().init_args() == {}
    seq = nn.Sequential(nn.ReLU())
    seq.append(nn.Tanh())
    assert [type(m) for m in seq.init_args()["layers"]] == [nn.ReLU, nn.Tanh]


def test_a_layer_spec_builds_the_same_model_through_json(tmp_path):
    model = _many_layers()
    spec = json.loads(json.dumps(models.layer_spec(model)))
    assert spec["name"] == "sequential" and spec["layers"][0] == {"type": "Conv2d", "args": {
        "in_channels": 1, "out_channels": 4, "kernel_size": 3, "stride": 1, "padding": "same", "dilation": 1,
        "groups": 1, "bias": False}}
    rebuilt = models.build(spec)
    assert repr(rebuilt) == repr(model)
    for t in model.state_dict().values():  # trained-looking statistics, then carried over
        t.data[...] = np.random.default_rng(1).uniform(0.5, 1.5, t.shape)
    rebuilt.load_state_dict(model.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(_outputs(rebuilt, x), _outputs(model, x))
    # the run's files: spec.json is the layer spec, read back checked
    checkpoint.save_run(tmp_path / "r", model, models.spec_of(model))
    back, back_spec = checkpoint.load_model(tmp_path / "r")
    assert back_spec == spec
    np.testing.assert_array_equal(_outputs(back, x), _outputs(model, x))


@pytest.mark.parametrize("name", [n for n in models.ZOO if n != "resnet-small"])
def test_every_zoo_sequential_has_a_layer_spec(name):
    model = models.build(name)
    assert models.spec_of(model) == models.spec(name)  # what build made it from
    assert repr(models.build(models.layer_spec(model))) == repr(model)


def test_what_a_layer_spec_cannot_hold_is_named():
    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"layers\[1\] is a Mine, not a layer of cnnlab.nn.*register"):
        models.layer_spec(nn.Sequential(nn.ReLU(), Mine()))
    with pytest.raises(ValueError, match=r"Mine has its own forward and is not a registered model: register"):
        models.spec_of(Mine())
    changed = nn.Sequential(nn.Linear(3, 4))
    changed.layers[0].weight = nn.Parameter(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="changed after they were made"):
        models.layer_spec(changed)


def _layers(*entries):
    return {"name": "sequential", "layers": list(entries)}


@pytest.mark.parametrize("spec, message", [
    (_layers({"type": "Pickle", "args": {}}), r"layers\[0\]: unknown layer type 'Pickle'"),
    (_layers({"type": "Linear", "args": {"in_features": 3, "out_features": 4, "colour": 1}}),
     r"layers\[0\] \(Linear\): no argument 'colour'"),
    (_layers({"type": "Linear", "args": {"in_features": 65536, "out_features": 65536}}),
     r"layers\[0\] \(Linear\): arguments .* more than cnnlab's limit of 100,000,000 parameters"),
    (_layers({"type": "Linear", "args": {"in_features": 10 ** 9, "out_features": 1}}),
     r"layers\[0\].in_features must be in -65536..65536"),
    (_layers({"type": "Linear", "args": {"in_features": "3", "out_features": 4}}),
     r"layers\[0\] \(Linear\): .*in_features must be a positive int"),
    (_layers({"type": "Dropout", "args": {"p": float("nan")}}), r"layers\[0\].p must be a finite number"),
    (_layers([1]), r"layers\[0\] must be \{\"type\""),
    ({"name": "sequential", "layers": []}, r"\"layers\" must be a non-empty list"),
    ({"name": "sequential", "layers": [{"type": "ReLU"}], "code": "x"}, "not 'code'"),
    ({"name": "mine", "kwargs": {}}, r"unknown model 'mine': not in the zoo .* cnnlab.models.register\('mine'"),
])
def test_a_bad_spec_json_is_one_line(tmp_path, spec, message):
    model = nn.Sequential(nn.ReLU())
    checkpoint.save_run(tmp_path, model, {"name": "sequential", "layers": [{"type": "ReLU", "args": {}}]})
    (tmp_path / checkpoint.SPEC).write_text(json.dumps(spec))
    with pytest.raises(checkpoint.RunError) as e:
        checkpoint.load_model(tmp_path)
    assert str(e.value).startswith(str(tmp_path / checkpoint.SPEC)) and "\n" not in str(e.value)
    assert __import__("re").search(message, str(e.value)), str(e.value)


@pytest.mark.parametrize("entry, message", [
    ({"type": "CrossEntropyLoss", "args": {}}, r"unknown layer type 'CrossEntropyLoss'"),
    ({"type": "BatchNormReLU", "args": {"bn": {"type": "ReLU", "args": {}}, "relu": {"type": "ReLU", "args": {}}}},
     r"unknown layer type 'BatchNormReLU'"),
    ({"type": "Softmax", "args": {"dim": "x"}}, r"Softmax: dim must be an int, got 'x'"),
    ({"type": "Flatten", "args": {"start_dim": 1e300}}, r"Flatten: start_dim must be an int, got 1e\+300"),
])
def test_a_spec_builds_no_layer_that_would_fail_only_when_run(entry, message):
    # a loss (two inputs), a fused block (of any sub-modules) or a dimension that is no int built,
    # and the first forward pass (cnnlab predict) ended in a traceback
    with pytest.raises(ValueError, match=message):
        models.build(_layers(entry))


def test_a_fused_model_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"layers\[0\] is a ConvMaxPoolAct, a fused block \(nn.fuse\)"):
        models.spec_of(nn.fuse(models.build("article")))


def test_layers_that_cannot_run_on_a_picture_are_refused_when_loaded(tmp_path):
    # a hand-edited spec.json whose weights still match: the run would load, and the first
    # picture (cnnlab predict, evaluate) would end in an IndexError traceback
    model = nn.Sequential(nn.Conv2d(1, 2, 5), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 24 * 24, 10))
    checkpoint.save_run(tmp_path, model, models.layer_spec(model))
    spec = json.loads((tmp_path / checkpoint.SPEC).read_text())
    spec["layers"][1] = {"type": "Softmax", "args": {"dim": 9}}
    (tmp_path / checkpoint.SPEC).write_text(json.dumps(spec))
    with pytest.raises(checkpoint.RunError, match=r"spec.json: its layers do not run on a 28x28 picture: softmax: "
                                                  r"dim 9 is out of range"):
        checkpoint.load_model(tmp_path)


def test_the_parameter_cap_counts_the_whole_spec(monkeypatch):
    monkeypatch.setattr(models, "MAX_PARAMETERS", 1000)
    linear = {"type": "Linear", "args": {"in_features": 20, "out_features": 20}}  # 420 parameters each
    models.build(_layers(linear, linear))
    with pytest.raises(ValueError, match=r"more than cnnlab's limit of 1,000 parameters \(at layers\[2\]\)"):
        models.build(_layers(linear, linear, linear))


def test_nesting_too_deep_is_refused():
    entry = {"type": "ReLU", "args": {}}
    for _ in range(40):
        entry = {"type": "Sequential", "args": {"layers": [entry]}}
    with pytest.raises(ValueError, match="nested more than 32 deep"):
        models.check_spec(_layers(entry))


def test_lists_nested_too_deep_are_refused_in_one_line(tmp_path):
    model = nn.Sequential(nn.ReLU())
    checkpoint.save_run(tmp_path, model, models.layer_spec(model))
    deep = "[" * 900 + "]" * 900  # JSON reads it; checking it must not exhaust Python's stack
    conv = '{"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 1, "kernel_size": ' + deep + "}}"
    (tmp_path / checkpoint.SPEC).write_text('{"name": "sequential", "layers": [' + conv + "]}")
    with pytest.raises(checkpoint.RunError, match=r"kernel_size.*nested more than 32 deep"):
        checkpoint.read_spec(tmp_path / checkpoint.SPEC)


def test_a_nested_sequential_counts_its_parameters_once(monkeypatch):
    monkeypatch.setattr(models, "MAX_PARAMETERS", 600)
    linear = {"type": "Linear", "args": {"in_features": 20, "out_features": 20}}  # 420 parameters
    assert models.build(_layers({"type": "Sequential", "args": {"layers": [linear]}})).num_parameters() == 420


class Residual(nn.Module):
    """A user's own model: a shortcut around two convolutions."""

    def __init__(self, maps=4, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, maps, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(maps, maps, 3, padding=1))
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(maps * 49, classes))

    def forward(self, x):
        y = self.conv(x)
        return self.head(y + self.body(y))


def test_a_registered_model_saves_by_name_and_needs_registering_to_load(tmp_path):
    with pytest.raises(ValueError, match="a model of the zoo has that name"):
        models.register("fast", Residual)
    models.register("my-residual", Residual)
    try:
        with pytest.raises(ValueError, match="already registered"):
            models.register("my-residual", lambda: Residual())
        model = Residual(maps=3)
        spec = models.spec_of(model)
        assert spec == {"name": "my-residual", "kwargs": {"maps": 3, "classes": 10}}
        checkpoint.save_run(tmp_path, model, spec)
        back, _ = checkpoint.load_model(tmp_path)
        x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
        np.testing.assert_array_equal(_outputs(back, x), _outputs(model, x))
    finally:
        models.unregister("my-residual")
    with pytest.raises(checkpoint.RunError, match=r"unknown model 'my-residual'.*register\('my-residual', builder\)"):
        checkpoint.load_model(tmp_path)
    assert "my-residual" not in models.names()


def test_a_registered_model_changed_after_it_was_made_is_refused_before_training():
    models.register("my-residual", Residual)
    try:
        model = Residual(maps=3)
        model.conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)  # spec.json would rebuild it with a bias
        with pytest.raises(ValueError, match="changed after they were made"):
            models.spec_of(model)
    finally:
        models.unregister("my-residual")


def test_a_registered_model_without_a_parameter_count_is_bounded_as_it_is_built(tmp_path, monkeypatch):
    # no `parameters` given, so nothing counts before the builder runs: a spec.json asking for
    # maps=65536 would allocate 155 GB for the body's convolution. The layers count as they are
    # made (here against a limit of 1,000: maps=16 needs 2,320 for that convolution)
    models.register("my-residual", Residual)
    try:
        checkpoint.save_run(tmp_path, Residual(maps=2), {"name": "my-residual", "kwargs": {"maps": 2}})
        (tmp_path / checkpoint.SPEC).write_text(json.dumps({"name": "my-residual", "kwargs": {"maps": 16}}))
        monkeypatch.setattr(models, "MAX_PARAMETERS", 1000)
        with pytest.raises(checkpoint.RunError, match=r"model 'my-residual' asks for more than cnnlab's limit of "
                                                      r"1,000 parameters"):
            checkpoint.load_model(tmp_path)
    finally:
        models.unregister("my-residual")
    with nn.parameter_limit(50, "two layers"):
        nn.Linear(4, 4)  # 20
        with pytest.raises(ValueError, match="two layers asks for more than cnnlab's limit of 50 parameters"):
            nn.Linear(5, 6)  # 36 more
    assert nn.Linear(100, 100).num_parameters() == 10_100  # no limit outside


def test_train_takes_a_model_object_and_every_command_loads_its_run(tmp_path, capsys):
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))
    start = model.layers[0].weight.numpy().copy()
    config = recipes.get("article").replace(epochs=1, train_size=128, validation=128)
    with pytest.raises(ValueError, match="'sequential' names a model object"):
        runs.train(config.replace(model="sequential"), tmp_path / "none", progress=False, log=None)
    run = runs.train(config, tmp_path / "r", model=model, progress=False, log=None)
    assert run.model is model and not np.array_equal(start, model.layers[0].weight.numpy())  # trained in place
    assert run.config.model == "sequential" and run.config.recipe is None
    back = runs.load(run.dir)
    assert back.spec == models.layer_spec(model) and back.config == run.config
    for k, t in model.state_dict().items():
        np.testing.assert_array_equal(back.model.state_dict()[k].numpy(), t.numpy(), err_msg=k)
    capsys.readouterr()
    assert main(["summary", str(run.dir)]) == 0
    assert "a Sequential of 5 layers" in capsys.readouterr().out
    assert main(["evaluate", str(run.dir)]) == 0


@pytest.mark.parametrize("layers, message", [
    ([nn.Flatten(), nn.Linear(784, 5)], r"gives 5 outputs per image, not one score for each of mnist's 10 classes"),
    ([nn.Flatten(), nn.Linear(100, 10)], r"cannot run on mnist's images \(1, 28, 28\): linear: input has 784"),
])
def test_a_model_object_that_does_not_fit_the_data_is_refused_before_anything_is_written(tmp_path, layers,
                                                                                          message):
    config = recipes.get("article").replace(epochs=1, train_size=64, validation=64)
    with pytest.raises(ValueError, match=message):
        runs.train(config, tmp_path / "r", model=nn.Sequential(*layers), progress=False, log=None)
    assert not (tmp_path / "r").exists()  # no run left that only a resume, failing again, could continue


def test_a_registered_model_that_does_not_fit_the_data_is_refused_before_anything_is_written(tmp_path):
    models.register("five-outputs", lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 5)))
    try:
        config = recipes.get("article").replace(model="five-outputs", model_kwargs={}, epochs=1, train_size=64,
                                                validation=64)
        with pytest.raises(ValueError, match=r"gives 5 outputs per image, not one score for each of mnist's 10"):
            runs.train(config, tmp_path / "r", progress=False, log=None)
        assert not (tmp_path / "r").exists()
    finally:
        models.unregister("five-outputs")


class Bare(nn.Module):
    """A model with its own parameters and no layers: logistic regression."""

    def __init__(self, classes=10):
        super().__init__()
        self.weight = nn.Parameter(np.zeros((784, classes), np.float32))

    def forward(self, x):
        return x.reshape(x.shape[0], 784) @ self.weight


def test_summary_of_a_model_without_layers_is_one_row(capsys):
    models.register("bare", Bare)
    try:
        assert models.summarize(Bare()) == [("Bare", "Bare()", (10,), 7840)]
        capsys.readouterr()
        assert main(["summary", "bare"]) == 0
        assert "total parameters: 7,840" in capsys.readouterr().out
    finally:
        models.unregister("bare")


def test_resnet_small_trains_fuses_summarises_and_loads(tmp_path, capsys):
    model = models.build("resnet-small")
    assert model.num_parameters() == 19_706 == models.MODELS["resnet-small"].parameters(16, 32, 10)
    assert models.spec_of(model) == {"name": "resnet-small", "kwargs": {}}
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    fused = runs.runnable(model)
    assert any(isinstance(m, nn.FusedModule) for m in fused.modules())
    np.testing.assert_allclose(_outputs(fused, x), _outputs(model, x), rtol=1e-5, atol=1e-5)
    # trained briefly: the loss goes down
    split = load_dataset("mnist")
    images, labels = (a[:256] for a in split.train)
    cnnlab.manual_seed(0)
    history = fit(fused.train(), optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                  DataLoader(images, labels, batch_size=32, seed=0), epochs=2, progress=False, log=None)
    assert history.epochs[1]["train_loss"] < history.epochs[0]["train_loss"]
    checkpoint.save_run(tmp_path, model, models.spec_of(model), {"dataset": "mnist", "validation": 10000})
    back = runs.load(tmp_path)
    np.testing.assert_array_equal(_outputs(back.model, x), _outputs(model, x))
    rows = models.summarize(back.model)
    assert [r[0] for r in rows] == ["stem.0", "stem.1", "stem.2", "stem.3", "block1", "block2", "head.0",
                                    "head.1", "head.2"]
    assert rows[5][1:] == ("ResidualBlock(16, 32, stride=2)", (32, 7, 7), 14_528)
    capsys.readouterr()
    assert main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 19,706" in out and "BatchNormReLU #stem.1" in out


def test_a_run_of_a_model_object_resumes_from_its_spec(tmp_path, monkeypatch):
    def make():
        cnnlab.manual_seed(3)
        return nn.Sequential(nn.Conv2d(1, 2, 5), nn.MaxPool2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 10))

    config = recipes.get("article").replace(epochs=2, train_size=64, validation=64)
    whole = runs.train(config, tmp_path / "whole", model=make(), progress=False, log=None)
    real = runs._Training._mark

    def die_after_the_first_epoch(self, status, **facts):
        real(self, status, **facts)
        if status == "training":
            raise KeyboardInterrupt  # Ctrl-C after the first epoch was saved

    monkeypatch.setattr(runs._Training, "_mark", die_after_the_first_epoch)
    cut = runs.train(config, tmp_path / "cut", model=make(), progress=False, log=None)
    assert cut.history.interrupted and len(cut.history.epochs) == 1
    monkeypatch.setattr(runs._Training, "_mark", real)
    again = runs.resume(tmp_path / "cut", progress=False, log=None)  # no model given: spec.json's layers
    assert again.spec == whole.spec and len(again.history.epochs) == 2
    for k, t in whole.model.state_dict().items():
        np.testing.assert_array_equal(again.model.state_dict()[k].numpy(), t.numpy(), err_msg=k)


def test_a_model_object_run_stopped_before_its_first_epoch_is_not_restarted_from_the_seed(tmp_path, monkeypatch):
    """Starting it again would train the seed's weights, not the object's (a fine-tune would
    silently start from random weights): refused in one line."""
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))
    config = recipes.get("default").replace(epochs=1, train_size=64, validation=100)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C in the first epoch, after the 'started' manifest

    monkeypatch.setattr(runs, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.train(config, tmp_path / "run", model=model, progress=False, log=None)
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / checkpoint.MANIFEST).read_text())["status"] == "started"
    with pytest.raises(checkpoint.RunError, match="started from a model object whose weights were not saved"):
        runs.resume(tmp_path / "run", progress=False, log=None)
