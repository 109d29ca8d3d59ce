"""Run directories: atomic writes, safetensors weights, clear errors on mismatch."""

import json

import numpy as np
import pytest

import cnnlab
from cnnlab import checkpoint, models


def test_save_and_load_run_round_trip(tmp_path):
    model = models.build("article")
    checkpoint.save_run(tmp_path / "r", model, models.spec("article"), {"dataset": "mnist"}, {"test_accuracy": 0.5})
    loaded, spec, cfg, metrics = checkpoint.load_run(tmp_path / "r")
    assert spec["name"] == "article" and cfg["dataset"] == "mnist" and metrics["test_accuracy"] == 0.5
    x = cnnlab.tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(loaded(x).numpy(), model.eval()(x).numpy())
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_mismatched_weights_say_what_differs(tmp_path):
    checkpoint.save_run(tmp_path / "r", models.build("article"), models.spec("article"))
    checkpoint.write_json(tmp_path / "r" / checkpoint.SPEC, models.spec("lenet5"))
    with pytest.raises(checkpoint.RunError, match="does not match") as e:
        checkpoint.load_run(tmp_path / "r")
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
        checkpoint.load_run(tmp_path / "r")


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "m.json"
    checkpoint.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        checkpoint.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
