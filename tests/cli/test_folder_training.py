"""People's own data: train, evaluate and predict on a folder with one sub-folder per class."""

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab import recipes, runs
from cnnlab.cli import main
from cnnlab.data import MNIST_MEAN, MNIST_STD, load_dataset, pixel_stats
from cnnlab.train import eval_loader, evaluate


def _draw(kind, rng, path):
    img = Image.new("L", (64, 64), 255)
    d = ImageDraw.Draw(img)
    cx, cy, r = rng.integers(24, 40), rng.integers(24, 40), rng.integers(12, 20)
    w = int(rng.integers(4, 8))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=0, width=w)
    elif kind == "cross":
        d.line([cx - r, cy - r, cx + r, cy + r], fill=0, width=w)
        d.line([cx - r, cy + r, cx + r, cy - r], fill=0, width=w)
    else:  # bar
        d.line([cx, cy - r, cx, cy + r], fill=0, width=w)
    img.save(path)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for kind in ("bar", "circle", "cross"):
        (root / kind).mkdir()
        for i in range(40):
            _draw(kind, rng, root / kind / f"{i}.png")
    return root


def test_train_evaluate_predict_on_a_folder(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(shapes), "--model", "article", "--epochs", "15", "--batch-size", "8",
                 "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "96 train / 12 validation / 12 test" in out.replace(",", "")
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert acc >= 75.0, out
    assert main(["evaluate", str(run)]) == 0
    assert "accuracy" in capsys.readouterr().out
    # one fresh drawing of each shape, named by the folder it would belong in
    probes = []
    for i, kind in enumerate(("bar", "circle", "cross")):
        probes.append(tmp_path / f"probe-{kind}.png")
        _draw(kind, np.random.default_rng(99 + i), probes[-1])
    assert main(["predict", str(run)] + [str(p) for p in probes]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == ["bar", "circle", "cross"], lines


def test_a_run_records_its_own_normalisation_and_evaluate_uses_it(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(shapes), "--model", "article", "--epochs", "3", "--batch-size", "8",
                 "--hflip", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    saved = runs.load(run)
    model, cfg, metrics = saved.model, saved.config, saved.metrics
    split = load_dataset(str(shapes))
    # measured on the folder's training split, and different from MNIST's constants
    assert (cfg.mean, cfg.std) == pixel_stats(split.train_images)
    assert abs(cfg.mean - MNIST_MEAN) > 0.01 or abs(cfg.std - MNIST_STD) > 0.01
    assert cfg.augment.hflip is True
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    # evaluate re-measures exactly what training reported at the saved (best) epoch
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {100 * best['test_accuracy']:.2f}%" in out, out
    assert f"loss {best['test_loss']:.4f}" in out, out
    # ... which MNIST's constants would not have given
    assert f"{evaluate(model, eval_loader(*split.test, MNIST_MEAN, MNIST_STD))['loss']:.4f}" != f"{best['test_loss']:.4f}"


def test_hflip_changes_training_and_defaults_to_the_recipe(shapes):
    config = recipes.get("article").replace(dataset=str(shapes), epochs=1, batch_size=8)
    plain = runs.train(config, save=False, progress=False, log=None)
    flipped = runs.train(config.replace(hflip=True), save=False, progress=False, log=None)
    assert plain.config.augment.hflip is False and flipped.config.augment.hflip is True
    assert plain.history.epochs[0]["train_loss"] != flipped.history.epochs[0]["train_loss"]


def test_a_run_keeps_its_class_names_when_the_folder_changes(shapes, tmp_path, capsys):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes, folder)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(folder), "--model", "article", "--epochs", "2", "--batch-size", "8",
                 "--out", str(run), "--no-progress"]) == 0
    assert runs.load(run).config.classes == ("bar", "circle", "cross")
    probe = tmp_path / "probe.png"
    _draw("circle", np.random.default_rng(99), probe)
    capsys.readouterr()
    assert main(["predict", str(run), str(probe), "--top", "3"]) == 0
    before = capsys.readouterr().out
    (folder / "aaa").mkdir()  # sorts first: listing the folder again would shift every name by one
    shutil.copy(probe, folder / "aaa" / "x.png")
    assert main(["predict", str(run), str(probe), "--top", "3"]) == 0
    assert capsys.readouterr().out == before and "aaa" not in before
