"""TrainConfig (one shape for a training run, checked once), the recipes, and runs.train/load."""

import dataclasses
import json

import numpy as np
import pytest

from cnnlab import checkpoint, models, provenance, recipes, runs
from cnnlab.data import APPEARANCE, Augment
from cnnlab.errors import SettingError
from cnnlab.runs import OptimizerConfig, TrainConfig


def test_the_json_round_trip_is_the_config():
    for name in recipes.names():
        config = recipes.get(name)
        data = json.loads(json.dumps(config.to_dict()))
        assert data["format"] == runs.CONFIG_FORMAT
        assert TrainConfig.from_dict(data) == config


def test_recipes_are_the_settings_the_zoo_trained_with():
    # the values the recipes had before they were TrainConfigs (see results/README.md for their runs);
    # default and best have since gained the appearance augmentation (docs/robustness.md)
    d = recipes.get("default")
    assert (d.model, d.epochs, d.batch_size, d.schedule) == ("fast", 6, 64, "onecycle")
    assert d.optimizer == OptimizerConfig("nesterov", lr=0.05, momentum=0.9, weight_decay=5e-4)
    appearance = {"stroke": 0.2, "blur": 0.2, "lowres": 0.2, "contrast": 0.2, "noise": 0.2}
    assert d.augment == Augment(max_shift=2, **appearance)
    assert recipes.get("best").augment == Augment(max_shift=2, max_degrees=10.0, **appearance)
    assert recipes.get("best").epochs == 20
    assert recipes.get("best-vgg-elastic").augment == Augment(2, 10.0, False, 0.1, 0.0, 20.0, 4.0)
    fb = recipes.get("fashion-best")
    assert (fb.model, fb.dataset, fb.augment) == ("vgg-small", "fashion-mnist", Augment(1, hflip=True, erase=0.5))
    relu = recipes.get("nielsen-conv2-relu")
    assert (relu.model, relu.model_kwargs, relu.batch_size) == ("nielsen-conv2", {"activation": "relu"}, 10)
    assert relu.optimizer == OptimizerConfig("sgd", lr=0.03, l2_lambda=0.1)
    assert recipes.get("article").optimizer == OptimizerConfig("adam", lr=0.003)
    assert recipes.get("lenet5").optimizer.weight_decay == 0.0
    assert all(recipes.get(n).recipe == n for n in recipes.names())
    assert recipes.describe("nielsen-dropout").book_accuracy == 0.9960


@pytest.mark.parametrize("changes, setting, problem", [
    ({"epochs": 0}, "epochs", "must be at least 1"),
    ({"batch_size": 2.5}, "batch_size", "must be a whole number"),
    ({"lr": -1.0}, "lr", "must be positive"),
    ({"lr": float("nan")}, "lr", "must be a finite number"),
    ({"optimizer": "lbfgs"}, "optimizer", "must be one of"),
    ({"schedule": "linear"}, "schedule", "must be one of"),
    ({"early_stopping": 0}, "early_stopping", "must be at least 1 epoch"),
    ({"early_stopping": 2, "validation": 0}, "early_stopping", "needs a validation set"),
    ({"optimizer": "adam", "l2_lambda": 0.1}, "l2_lambda", "applied by SGD only"),
    ({"optimizer": "adam", "momentum": 0.5}, "momentum", "adam has no momentum"),
    ({"max_scale": 1.2}, "max_scale", "must be in [0, 1)"),
    ({"erase": 2.0}, "erase", "must be a probability"),
    ({"model": "resnet"}, "model", "'resnet'"),
    ({"model_kwargs": {"pools": "l2"}}, "model", "bad arguments"),
    ({"device": "tpu"}, "device", "unknown device"),
    ({"mean": 0.5}, "std", "with the other"),
    ({"mean": 0.5, "std": 0.0}, "std", "must be positive"),
    ({"label_smoothing": 1.0}, "label_smoothing", "[0, 1)"),
    ({"seed": -1}, "seed", "at least 0"),
    ({"epohcs": 3}, "epohcs", "is not a setting"),
])
def test_a_bad_setting_is_named(changes, setting, problem):
    with pytest.raises(SettingError) as e:
        recipes.get("article").replace(**changes)
    assert e.value.setting == setting and problem in e.value.problem


def test_replace_reaches_the_optimizer_and_the_augmentation():
    c = recipes.get("default").replace(lr=0.01, max_degrees=5.0, epochs=2)
    assert (c.optimizer.lr, c.optimizer.momentum, c.augment.max_degrees, c.augment.max_shift, c.epochs) == \
        (0.01, 0.9, 5.0, 2, 2)
    # SGD's momentum stays with SGD; another optimizer starts without it
    assert recipes.get("default").replace(optimizer="sgd").optimizer.momentum == 0.9
    assert recipes.get("default").replace(optimizer="rmsprop").optimizer.momentum == 0.0
    assert recipes.get("default").replace(optimizer="rmsprop", momentum=0.5).optimizer.momentum == 0.5
    # all the optimizer's changes at once: Nielsen's L2 off and Adam on in one step is valid
    assert recipes.get("nielsen-conv2-relu").replace(optimizer="adam", l2_lambda=0.0).optimizer.name == "adam"
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipes.get("default").epochs = 3


def test_comparable_ignores_only_labels():
    a = recipes.get("nielsen-fc")
    assert a.replace(recipe=None, mean=0.1307, std=0.3081).comparable() == a.comparable()
    assert a.replace(seed=1).comparable() != a.comparable()


@pytest.mark.parametrize("name", ["default", "best", "best-vgg", "best-vgg-elastic", "fashion", "fashion-best",
                                  "article", "cs231n", "nielsen-fc", "nielsen-conv1", "nielsen-conv2",
                                  "nielsen-conv2-relu", "nielsen-dropout", "lenet5", "alexnet"])
def test_runs_saved_before_trainconfig_load_as_their_recipe(tmp_path, name):
    """A run directory of an older cnnlab: spec.json names the recipe, config.json is flat."""
    recipe = recipes.get(name)
    o, a = recipe.optimizer, recipe.augment
    flat = {"model": name, "dataset": recipe.dataset, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
            "lr": o.lr, "optimizer": o.name, "momentum": o.momentum, "weight_decay": o.weight_decay,
            "l2_lambda": o.l2_lambda, "schedule": recipe.schedule, "augment": a.max_shift, "rotate": a.max_degrees,
            "hflip": a.hflip, "scale": a.max_scale, "erase": a.erase, "elastic": a.elastic,
            "elastic_sigma": a.elastic_sigma, "label_smoothing": 0.0, "expand": False, "validation": 10000,
            "early_stopping": None, "seed": 0, "device": "cpu", "model_kwargs": {}, "train_size": None,
            "mean": 0.1307, "std": 0.3081}
    spec = models.spec(recipe.model, **recipe.model_kwargs)
    checkpoint.save_run(tmp_path, models.build(spec), {"name": name, "kwargs": {}}, flat, {"test_accuracy": 0.9})
    run = runs.load(tmp_path)
    # a flat config predates the appearance augmentation: it had none
    assert run.config == recipe.replace(mean=0.1307, std=0.3081, **{k: 0.0 for k in APPEARANCE})
    assert run.spec == spec and run.test_accuracy == 0.9


@pytest.mark.parametrize("edit, message", [
    (lambda c: {**c, "epochs": "six"}, "epochs must be a whole number"),
    (lambda c: {**c, "optimizer": {**c["optimizer"], "lr": None}}, "lr must be a finite number"),
    (lambda c: {**c, "augment": [1, 2]}, "augment must be a JSON object"),
    (lambda c: {**c, "colour": "red"}, "colour is not a setting"),
    (lambda c: {**c, "format": 99}, "format must be 2"),
    (lambda c: [c], "must hold a JSON object"),
])
def test_a_damaged_config_is_one_line_naming_file_and_setting(tmp_path, edit, message):
    run = runs.train(recipes.get("article").replace(epochs=1, train_size=64, validation=64), out=tmp_path / "r",
                     progress=False, log=None)
    path = run.dir / checkpoint.CONFIG
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(checkpoint.RunError, match="does not match .*manifest.json: the run is incomplete or was "
                                                  "changed"):
        runs.load(run.dir)  # the manifest's checksum catches any change first
    with pytest.raises(checkpoint.RunError) as e:
        runs.load_config(run.dir)  # and the schema says what is wrong
    assert str(e.value).startswith(str(path)) and message in str(e.value) and "\n" not in str(e.value)


def test_train_saves_what_load_gives_back(tmp_path):
    config = recipes.get("article").replace(epochs=2, train_size=500, validation=500)
    run = runs.train(config, out=tmp_path / "r", progress=False, log=None)
    # the data set's statistics and class names recorded, and which cnnlab trained it
    assert run.config == config.replace(mean=0.1307, std=0.3081, classes=tuple("0123456789"),
                                        provenance=provenance.provenance())
    back = runs.load(run.dir)
    assert back.config == run.config and back.spec == run.spec == models.spec("article")
    assert back.test_accuracy == run.history.test_accuracy == run.metrics["test_accuracy"]
    for (k, a), (_, b) in zip(sorted(run.model.state_dict().items()), sorted(back.model.state_dict().items())):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    with pytest.raises(ValueError, match="already holds a run"):
        runs.train(config, out=run.dir, progress=False, log=None)


def test_the_same_seed_gives_bitwise_identical_weights():
    config = recipes.get("default").replace(epochs=1, train_size=256, validation=256)
    a, b = (runs.train(config, save=False, progress=False, log=None) for _ in range(2))
    for (k, x), (_, y) in zip(sorted(a.model.state_dict().items()), sorted(b.model.state_dict().items())):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=k)


def test_the_package_names_the_config_type():
    import cnnlab

    assert cnnlab.TrainConfig is TrainConfig and isinstance(recipes.get("default"), cnnlab.TrainConfig)


def test_a_config_is_hashable_and_cannot_be_changed_through_its_kwargs():
    relu = recipes.get("nielsen-conv2-relu")
    assert hash(relu) == hash(relu.replace()) and {relu: 1}[recipes.get("nielsen-conv2-relu")] == 1
    with pytest.raises(TypeError):
        relu.model_kwargs["activation"] = "sigmoid"
    assert recipes.get("nielsen-conv2-relu").model_kwargs == {"activation": "relu"}


@pytest.mark.parametrize("metrics, message", [
    ([1, 2], "must hold a JSON object"),
    ({"test_accuracy": "high"}, "test_accuracy must be int or float"),
    ({"best_epoch": 1.5}, "best_epoch must be int"),
    ({"interrupted": "no"}, "interrupted must be bool"),
    ({"epochs": "x"}, "epochs must be list"),
    ({"epochs": [3]}, "epochs[0] must be an object"),
    ({"epochs": [{"epoch": 1, "train_loss": "0.1"}]}, "epochs[0].train_loss must be int or float"),
    ({"epochs": [{"train_loss": 0.1}]}, "epochs[0].epoch must be int"),
])
def test_a_mistyped_metrics_file_is_one_line_naming_the_key(tmp_path, metrics, message):
    """A run saved by an older cnnlab (no manifest) with its metrics.json edited."""
    checkpoint.save_run(tmp_path, models.build("article"), models.spec("article"), {"dataset": "mnist"}, metrics)
    with pytest.raises(checkpoint.RunError) as e:
        runs.load(tmp_path)
    assert str(e.value).startswith(str(tmp_path / checkpoint.METRICS)) and message in str(e.value)
