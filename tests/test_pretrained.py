"""The model that ships with cnnlab: whole, as recorded, accurate, and what the commands use when
no RUN is given; and tools/make_pretrained.py, its only source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import checkpoint, pretrained, recipes, runs
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.train import eval_loader, evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped():
    assert pretrained.available(), "no shipped model: run `python tools/make_pretrained.py`"
    return pretrained.load()


def _user_digit(path: Path, index: int) -> int:
    """MNIST test digit ``index`` as a user's picture (dark on white, 3x larger); its label."""
    split = load_dataset("mnist")
    Image.fromarray(255 - np.kron(split.test_images[index], np.ones((3, 3), dtype=np.uint8))).save(path)
    return int(split.test_labels[index])


def test_the_shipped_model_is_the_recorded_one(shipped):
    facts = pretrained.provenance()
    manifest = checkpoint.read_manifest(pretrained.path())
    assert manifest["status"] == "finished"
    assert facts["weights_sha256"] == manifest["files"][checkpoint.WEIGHTS] == checkpoint.sha256(
        pretrained.path() / checkpoint.WEIGHTS)
    assert facts["recipe"] == shipped.config.recipe == "default" and facts["changes"] == {}
    assert facts["seed"] == shipped.config.seed
    assert facts["test_accuracy"] == shipped.test_accuracy


def test_the_shipped_model_is_the_default_recipes(shipped):
    # a changed default recipe needs a new shipped model: the tool is its only source
    assert shipped.config.comparable() == recipes.get("default").comparable(), (
        "the default recipe changed since the shipped model was made: run `python tools/make_pretrained.py --check`")


def test_the_shipped_model_reads_digits(shipped):
    # measured again here, on 2,000 test digits: the recorded accuracy is the weights' own
    images, labels = load_dataset("mnist").test
    res = evaluate(runs.runnable(shipped.model), eval_loader(images[:2000], labels[:2000], shipped.config.mean,
                                                              shipped.config.std))
    assert res["accuracy"] >= 0.985, res


def test_a_changed_shipped_model_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "pkg"
    shutil.copytree(pretrained.path(), copy / pretrained.NAME)
    monkeypatch.setattr(pretrained, "_HERE", copy)
    pretrained.load()  # the copy is whole
    facts = json.loads((copy / pretrained.NAME / pretrained.PROVENANCE).read_text())
    (copy / pretrained.NAME / pretrained.PROVENANCE).write_text(json.dumps({**facts, "weights_sha256": "0" * 64}))
    with pytest.raises(checkpoint.RunError, match="was changed"):
        pretrained.load()
    shutil.rmtree(copy / pretrained.NAME)
    assert not pretrained.available()
    with pytest.raises(checkpoint.RunError, match="no shipped model"):
        pretrained.load()
    with pytest.raises(ValueError, match="ships one"):
        pretrained.path("best")


def test_predict_without_a_run_uses_the_shipped_model(shipped, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    la, lb = _user_digit(a, 0), _user_digit(b, 1)
    assert main(["predict", str(a), str(b)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{a}: {la} ") and lines[1].startswith(f"{b}: {lb} "), captured.out
    assert "shipped with cnnlab" in captured.err
    # the same pictures through the same run named explicitly: the same answers, nothing on stderr
    assert main(["predict", str(pretrained.path()), str(a), str(b)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == lines and captured.err == ""


@pytest.mark.parametrize("argv,words", [
    (["predict", "{run}"], ["is a run directory", "give the pictures"]),
    (["predict", "{tmp}/no-such-run", "{tmp}/a.png"], ["no-such-run", "no such run directory"]),
    (["predict", "{tmp}"], ["is a folder, not a run directory", "give the pictures one by one"]),
])
def test_predict_arguments_are_unambiguous(shipped, tmp_path, capsys, argv, words):
    _user_digit(tmp_path / "a.png", 0)
    argv = [a.format(run=pretrained.path(), tmp=tmp_path) for a in argv]
    assert main(argv) == 3  # bad input: telling a run from a picture needed a look at the files
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cnnlab predict: error:")
    assert all(w in err for w in words), err


def test_show_featuremaps_of_a_picture_without_a_run(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _user_digit(tmp_path / "seven.png", 0)
    before = sorted(p.name for p in pretrained.path().iterdir())
    assert main(["show", "featuremaps", "seven.png"]) == 0
    assert capsys.readouterr().out.strip() == "featuremaps.png"
    assert (tmp_path / "featuremaps.png").stat().st_size > 0
    assert sorted(p.name for p in pretrained.path().iterdir()) == before  # nothing written into the package


def test_make_pretrained_trains_records_and_installs(tmp_path):
    # a quick trial of the tool (its --train-size and --epochs are recorded as changes), installed
    # over an older model by renames
    dest = tmp_path / "pkg" / "default"
    dest.mkdir(parents=True)
    (dest / "old-model.txt").write_text("the model before")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "make_pretrained.py"), "--train-size", "64",
                             "--epochs", "1", "--dest", str(dest)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr
    facts = json.loads((dest / pretrained.PROVENANCE).read_text())
    assert facts["changes"] == {"train_size": 64, "epochs": 1} and facts["workers"] == 2
    assert facts["weights_sha256"] == checkpoint.sha256(dest / checkpoint.WEIGHTS)
    assert f"weights sha256 {facts['weights_sha256']}" in result.stdout
    run = runs.load(dest)  # a whole run, its files as its manifest says
    assert run.config.train_size == 64 and run.test_accuracy == facts["test_accuracy"]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [checkpoint.WEIGHTS, checkpoint.SPEC, checkpoint.CONFIG, checkpoint.METRICS, checkpoint.METRICS_CSV,
         checkpoint.CALIBRATION, checkpoint.MANIFEST, pretrained.PROVENANCE])
    assert sorted(p.name for p in dest.parent.iterdir()) == ["default"]  # no temporary or old folder left
