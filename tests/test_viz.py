"""Pictures and the HTML report of a run: valid PNGs of the promised size, CLI wiring, clear errors.

The run directory is built from an untrained (seeded) article model with fabricated metrics: the
pictures only need weights and numbers of the right shape, not a good model, and this keeps the
file fast. Confusion, mistakes and the report still evaluate on the real bundled MNIST test set.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab import backend, checkpoint, models, nn, runs, viz
from cnnlab.cli import main

# The promised pixel sizes (figsize in inches x 100 dpi); pinned here so a change is deliberate.
EXPECTED_SIZE = {"filters": (1000, 800), "featuremaps": (1000, 1200), "curves": (1200, 500),
                 "confusion": (900, 800), "mistakes": (1000, 1100), "augment": (1000, 800)}
NAMES = [str(i) for i in range(10)]


def _metrics():
    epochs = []
    for e, (tl, ta, va, te) in enumerate([(0.9, 0.76, 0.94, 0.939), (0.26, 0.92, 0.958, 0.961),
                                          (0.21, 0.935, 0.957, 0.96)], start=1):
        epochs.append({"epoch": e, "train_loss": tl, "train_accuracy": ta, "validation_loss": 1 - va,
                       "validation_accuracy": va, "test_loss": 1 - te, "test_accuracy": te,
                       "lr": 0.001 * e, "seconds": 10.0 + e, "images_per_second": 5000.0})
    return {"epochs": epochs, "best_epoch": 2, "best_validation_accuracy": 0.958, "test_accuracy": 0.961,
            "seconds": 33.0, "parameters": 4408, "model": "article", "dataset": "mnist", "machine": "test",
            "started": "2026-01-01 00:00:00"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "article"
    cnnlab.manual_seed(0)
    checkpoint.save_run(d, models.build("article"), models.spec("article"),
                        {"dataset": "mnist", "validation": 10000, "model": "article", "epochs": 3}, _metrics())
    return d


@pytest.fixture(scope="module")
def model(run):
    return runs.load(run).model


def _check_png(path, kind):
    assert viz.png_size(kind) == EXPECTED_SIZE[kind]
    with Image.open(path) as img:
        img.verify()  # structure and checksums of the whole file
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == EXPECTED_SIZE[kind]
        rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])  # one int per colour
    assert len(colours) > 10, "the picture is (nearly) one colour"
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def _digit():
    img = np.zeros((28, 28), np.uint8)
    img[5:23, 12:16] = 255  # a "1"
    img[5:8, 9:13] = 200
    return img


# ------------------------------------------------------------------------------ library functions
def test_plot_filters_first_conv_layer(model, tmp_path):
    out = viz.plot_filters(model, tmp_path / "f.png")
    assert out == tmp_path / "f.png"
    _check_png(out, "filters")


def test_plot_filters_deeper_layer_per_input_channel(tmp_path):
    default = models.build("default")
    second = [i for i, m in enumerate(default.layers) if isinstance(m, nn.Conv2d)][1]
    assert default.layers[second].in_channels > 1
    _check_png(viz.plot_filters(default, tmp_path / "grid.png", layer=second), "filters")
    _check_png(viz.plot_filters(default, tmp_path / "one.png", layer=second, channel=3), "filters")
    with pytest.raises(ValueError, match="channel 99 does not exist"):
        viz.plot_filters(default, tmp_path / "bad.png", layer=second, channel=99)
    assert not (tmp_path / "bad.png").exists()


def test_plot_filters_rejects_layers_that_are_not_conv(model, tmp_path):
    with pytest.raises(ValueError, match=r"layer 1 is MaxPool2d.*not a Conv2d.*at 0"):
        viz.plot_filters(model, tmp_path / "x.png", layer=1)
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        viz.plot_filters(model, tmp_path / "x.png", layer=7)
    with pytest.raises(ValueError, match="no Conv2d layer"):
        viz.plot_filters(models.build("nielsen-fc"), tmp_path / "x.png")


def test_plot_feature_maps(model, tmp_path):
    _check_png(viz.plot_feature_maps(model, _digit(), tmp_path / "fm.png", title="a one"), "featuremaps")
    assert model.training is False  # the mode it came in is restored
    with pytest.raises(ValueError, match="28x28"):
        viz.plot_feature_maps(model, np.zeros((32, 32), np.uint8), tmp_path / "bad.png")


def test_feature_map_rows_name_layers_briefly(tmp_path):
    """Row labels of a deep net stay short: kernel, stride and padding in a few words."""
    short_name = viz.featuremaps.short_name
    assert short_name(nn.Conv2d(1, 32, 5, padding=2)) == "Conv2d 1->32 5x5 pad 2"
    assert short_name(nn.Conv2d(8, 16, (3, 1), stride=(2, 1), groups=2)) == "Conv2d 8->16 3x1 stride 2x1 groups 2"
    assert short_name(nn.MaxPool2d(3, 2)) == "MaxPool2d 3x3 stride 2"
    assert short_name(nn.MaxPool2d(2)) == "MaxPool2d 2x2"
    assert short_name(nn.LPPool2d(2, 2)) == "LPPool2d L2 2x2"
    assert short_name(nn.ReLU()) == "ReLU()"
    # the AlexNet-style net: overlapping pools and a local response norm between ReLU and pool
    _check_png(viz.plot_feature_maps(models.build("alexnet"), _digit(), tmp_path / "fm.png"), "featuremaps")


def test_plot_curves_and_missing_history(tmp_path):
    _check_png(viz.plot_curves(_metrics(), tmp_path / "c.png"), "curves")
    one = _metrics()
    one["epochs"] = one["epochs"][:1]
    del one["best_epoch"]  # falls back to the best validation accuracy
    _check_png(viz.plot_curves(one, tmp_path / "c1.png"), "curves")
    with pytest.raises(ValueError, match="no per-epoch history"):
        viz.plot_curves({"test_accuracy": 0.9}, tmp_path / "none.png")


def test_plot_confusion(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    pred = np.where(rng.random(500) < 0.8, y, rng.integers(0, 10, 500))
    _check_png(viz.plot_confusion(y, pred, tmp_path / "cm.png", NAMES), "confusion")
    with pytest.raises(ValueError, match="500 true labels but 3 predictions"):
        viz.plot_confusion(y, pred[:3], tmp_path / "bad.png", NAMES)


def test_plot_mistakes(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 50)
    pred = np.where(np.arange(50) % 3 == 0, (y + 1) % 10, y)
    probs = rng.dirichlet(np.ones(10), 50)
    _check_png(viz.plot_mistakes(images, y, pred, tmp_path / "m.png", NAMES, probs), "mistakes")
    _check_png(viz.plot_mistakes(images, y, pred, tmp_path / "m9.png", NAMES, max_images=9), "mistakes")
    # No mistakes at all is a valid (if dull) picture, not an error.
    _check_png(viz.plot_mistakes(images, y, y, tmp_path / "none.png", NAMES), "mistakes")


def test_failed_write_leaves_no_file(model, tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        viz.plot_filters(model, tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("what", ["filters", "featuremaps", "curves", "confusion", "mistakes"])
def test_show_writes_each_picture(run, what, capsys):
    out = run / f"{what}.png"
    out.unlink(missing_ok=True)
    assert main(["show", what, str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    _check_png(out, what)


def test_show_featuremaps_of_a_user_image_and_a_test_index(run, tmp_path):
    photo = np.full((60, 40), 240, np.uint8)  # dark digit on a light background, any size
    photo[10:50, 18:24] = 20
    Image.fromarray(photo).save(tmp_path / "digit.png")
    assert main(["show", "featuremaps", str(run), str(tmp_path / "digit.png"), "--out", str(tmp_path / "a.png")]) == 0
    _check_png(tmp_path / "a.png", "featuremaps")
    assert main(["show", "featuremaps", str(run), "test:42", "--out", str(tmp_path / "b.png")]) == 0
    _check_png(tmp_path / "b.png", "featuremaps")


def test_report_is_one_self_contained_html_file(run, capsys):
    assert main(["report", str(run)]) == 0
    out = run / "report.html"
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 5
    assert "520" in page and "23,550" in page
    assert 'src="http' not in page and "<script" not in page.lower() and "<link" not in page.lower()
    assert "<title>" in page and "article" in page and "96.10%" in page  # recorded test accuracy
    assert page.count('<tr class="best">') == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "augmented"
    cnnlab.manual_seed(0)
    checkpoint.save_run(d, models.build("article"), models.spec("article"),
                        {"dataset": "mnist", "validation": 10000, "model": "article", "epochs": 3, "augment": 2,
                         "rotate": 10.0, "scale": 0.1, "elastic": 20.0, "elastic_sigma": 4.0}, _metrics())
    return d


def test_augmentation_grid_and_picture(tmp_path):
    from cnnlab.data import Augment

    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
    aug = Augment(max_shift=2, max_degrees=10.0, elastic=20.0)
    grid = viz.augmentation_grid(images, aug, copies=4, seed=7)
    assert grid.shape == (3, 5, 28, 28) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:, 0], images)  # the originals first
    rng = np.random.default_rng(7)
    for k in range(1, 5):  # then one draw of the augmentation per column, in order
        np.testing.assert_array_equal(grid[:, k], aug(images, rng))
    path = viz.plot_augmentation(images, [1, 2, 3], aug, tmp_path / "a.png", NAMES, copies=4)
    _check_png(path, "augment")
    with pytest.raises(ValueError, match="copies must be a positive int"):
        viz.augmentation_grid(images, aug, copies=0)
    assert Augment.from_config({"augment": 0, "rotate": 0.0}) is None
    assert Augment.from_config({"augment": 2, "elastic": 20.0}) == Augment(max_shift=2, elastic=20.0)
    assert aug.describe() == "shift <= 2 px, rotate <= 10 deg, elastic alpha 20 sigma 4"


def test_show_augment_and_the_report_of_an_augmented_run(augmented_run, capsys):
    assert main(["show", "augment", str(augmented_run)]) == 0
    _check_png(augmented_run / "augment.png", "augment")
    capsys.readouterr()
    assert main(["report", str(augmented_run)]) == 0
    page = (augmented_run / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6 and "elastic alpha 20 sigma 4" in page


def test_report_leaves_the_seeded_generator_alone():
    cnnlab.manual_seed(5)
    before = backend.rng().bit_generator.state
    viz.report.shared_weights_line()
    assert backend.rng().bit_generator.state == before


@pytest.fixture(scope="module")
def run_with_normalisation(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "normalised"
    cnnlab.manual_seed(0)
    checkpoint.save_run(d, models.build("article"), models.spec("article"),
                        {"dataset": "mnist", "validation": 10000, "mean": 0.5, "std": 0.25}, _metrics())
    return d


def _spy_normalisation(monkeypatch):
    """Record the mean/std every evaluation and every feature-map input is normalised with."""
    seen = []
    eval_loader, normalise = viz.common.eval_loader, viz.featuremaps.normalise_image

    def spy_eval_loader(images, labels, mean, std, **kwargs):
        seen.append(("evaluate", mean, std))
        return eval_loader(images, labels, mean, std, **kwargs)

    def spy_normalise(image, mean=None, std=None):
        seen.append(("featuremaps", mean, std))
        return normalise(image, mean, std)

    monkeypatch.setattr(viz.common, "eval_loader", spy_eval_loader)
    monkeypatch.setattr(viz.featuremaps, "normalise_image", spy_normalise)
    return seen


@pytest.mark.parametrize("argv", [["show", "featuremaps"], ["show", "confusion"], ["show", "mistakes"], ["report"]])
def test_pictures_use_the_runs_normalisation(run, run_with_normalisation, argv, tmp_path, monkeypatch, capsys):
    seen = _spy_normalisation(monkeypatch)
    out = ["--out", str(tmp_path / ("x.html" if argv == ["report"] else "x.png"))]
    assert main(argv + [str(run_with_normalisation)] + out) == 0
    assert seen and all((mean, std) == (0.5, 0.25) for _, mean, std in seen), seen
    seen.clear()
    assert main(argv + [str(run)] + out) == 0  # a run saved before mean/std were recorded: MNIST's
    assert seen and all((mean, std) == (0.1307, 0.3081) for _, mean, std in seen), seen
    capsys.readouterr()


# ----------------------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def run_without_history(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "nohistory"
    checkpoint.save_run(d, models.build("article"), models.spec("article"), {"dataset": "mnist"},
                        {"test_accuracy": 0.5})
    return d


@pytest.mark.parametrize("argv,words,code", [  # code 2: the command line alone is wrong; 3: what it names
    (["show", "filters", "{run}", "--layer", "1"], ["layer 1", "MaxPool2d", "not a Conv2d"], 3),
    (["show", "filters", "{run}", "--layer", "12"], ["layer 12 does not exist"], 3),
    (["show", "filters", "{missing}"], ["no such run directory"], 3),
    (["report", "{missing}"], ["no such run directory"], 3),
    (["show", "featuremaps", "{run}", "{tmp}/nope.png"], ["nope.png", "no such file"], 3),
    (["show", "featuremaps", "{run}", "{tmp}/garbage.png"], ["garbage.png", "cannot read"], 3),
    (["show", "featuremaps", "{run}", "test:10000"], ["test:10000", "10,000 images"], 3),
    (["show", "featuremaps", "{run}", "test:x"], ["test:N"], 2),
    (["show", "curves", "{nohistory}"], ["no per-epoch history"], 3),
    (["show", "curves", "{run}", "--layer", "0"], ["--layer is only used by `show filters`"], 2),
    (["show", "augment", "{run}"], ["trained without augmentation"], 3),
])
def test_bad_input_is_one_clear_line(run, run_without_history, tmp_path, capsys, argv, words, code):
    (tmp_path / "garbage.png").write_bytes(b"this is not a PNG")
    subs = {"run": run, "missing": tmp_path / "no-such-run", "tmp": tmp_path, "nohistory": run_without_history}
    argv = [a.format(**subs) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"cnnlab {argv[0]}: error:")
    for w in words:
        assert w in err
    assert not list(tmp_path.glob("*.html")) and not [p for p in tmp_path.iterdir() if p.suffix == ".png"
                                                       and p.name != "garbage.png"]


# ------------------------------------------------------------------------------------ the package
VIZ_MODULES = ["common", "filters", "featuremaps", "curves", "confusion", "mistakes", "augment", "gradcam", "report",
               "show"]


def test_each_viz_module_imports_on_its_own():
    """Each module imports with no other cnnlab module loaded before it, so none leans on another
    having been imported first. One child interpreter for all of them: cnnlab's modules are dropped
    from sys.modules between imports, while NumPy and matplotlib stay loaded."""
    code = ("import importlib, sys\n"
            f"for name in {VIZ_MODULES!r}:\n"
            "    for loaded in [m for m in sys.modules if m == 'cnnlab' or m.startswith('cnnlab.')]:\n"
            "        del sys.modules[loaded]\n"
            "    importlib.import_module('cnnlab.viz.' + name)\n")
    src = str(Path(cnnlab.__file__).resolve().parents[1])  # the cnnlab under test, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_viz_all_names_resolve():
    from cnnlab.viz import plot_filters  # noqa: F401  (the old single-module imports keep working)

    assert all(hasattr(viz, name) for name in viz.__all__), [n for n in viz.__all__ if not hasattr(viz, n)]
    old = {"DPI", "FIGSIZE", "augmentation_grid", "build_report", "plot_augmentation", "plot_confusion",
           "plot_curves", "plot_feature_maps", "plot_filters", "plot_mistakes", "png_size"}
    assert old <= set(viz.__all__)
