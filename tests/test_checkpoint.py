"""Run directories: atomic writes, safetensors weights, clear errors on mismatch."""

import json

import numpy as np
import pytest

import cnnlab
from cnnlab import checkpoint, models, runs


def test_save_and_load_run_round_trip(tmp_path):
    model = models.build("article")
    checkpoint.save_run(tmp_path / "r", model, models.spec("article"), {"dataset": "mnist"}, {"test_accuracy": 0.5})
    run = runs.load(tmp_path / "r")
    loaded = run.model
    assert run.spec["name"] == "article" and run.config.dataset == "mnist" and run.metrics["test_accuracy"] == 0.5
    x = cnnlab.tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(loaded(x).numpy(), model.eval()(x).numpy())
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_mismatched_weights_say_what_differs(tmp_path):
    checkpoint.save_run(tmp_path / "r", models.build("article"), models.spec("article"))
    checkpoint.write_json(tmp_path / "r" / checkpoint.SPEC, models.spec("lenet5"))
    with pytest.raises(checkpoint.RunError, match="does not match") as e:
        runs.load(tmp_path / "r")
    assert "missing" in str(e.value) and "lenet5" in str(e.value)


@pytest.mark.parametrize("damage,match", [
    (lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file"), "safetensors"),
    (lambda d: (d / "spec.json").write_text("{broken"), "not valid JSON"),
    (lambda d: (d / "spec.json").write_text(json.dumps({"name": "nope"})), "unknown model"),
    (lambda d: (d / "model.safetensors").unlink(), "missing weights"),
])
def test_damaged_runs_raise_run_error(tmp_path, damage, match):
    checkpoint.save_run(tmp_path / "r", models.build("article"), models.spec("article"))
    damage(tmp_path / "r")
    with pytest.raises(checkpoint.RunError, match=match):
        runs.load(tmp_path / "r")


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "m.json"
    checkpoint.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        checkpoint.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_normalization_recorded_or_mnist_for_old_runs(tmp_path):
    # Runs saved before mean/std were recorded were all trained with MNIST's constants.
    assert checkpoint.normalization({}) == (0.1307, 0.3081)
    assert checkpoint.normalization({"dataset": "fashion-mnist", "validation": 10000}) == (0.1307, 0.3081)
    assert checkpoint.normalization({"dataset": "fashion-mnist", "mean": 0.286, "std": 0.353}) == (0.286, 0.353)
    checkpoint.save_run(tmp_path / "old", models.build("article"), models.spec("article"), {"dataset": "mnist"})
    cfg = runs.load(tmp_path / "old").config  # an old config still loads
    assert (cfg.mean, cfg.std) == (0.1307, 0.3081)


@pytest.mark.parametrize("cfg,match", [
    ({"mean": 0.2}, "no std"),
    ({"std": 0.3}, "no mean"),
    ({"mean": "0.2", "std": 0.3}, "mean must be a finite number"),
    ({"mean": 0.2, "std": None}, "std must be a finite number"),
    ({"mean": 0.2, "std": 0.0}, "std must be positive"),
    ({"mean": float("nan"), "std": 0.3}, "finite"),
])
def test_normalization_rejects_broken_configs(cfg, match):
    with pytest.raises(checkpoint.RunError, match=match) as e:
        checkpoint.normalization(cfg, "runs/x/config.json")
    assert "runs/x/config.json" in str(e.value)
