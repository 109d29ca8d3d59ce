"""Pictures and report of models with their own forward (resnet-small, a user's registered model;
the demo's test is tests/serve/test_serve_open_models.py), and loading runs of a user's model from
the CLI (--import, $CNNLAB_IMPORT, entry points).

The resnet-small run is trained for two SGD steps on 64 MNIST images (no full training run: the
pictures need real weights of the right shape, not a good model). The report's test set is cut
to its first 200 images so the file stays fast.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab import checkpoint, models, nn, optim, runs, viz
from cnnlab.autograd import Tensor, no_grad
from cnnlab.cli import main
from cnnlab.data import DataLoader, load_dataset, standardize
from cnnlab.train import fit

RESNET_CONVS = ["stem.0", "block1.body.0", "block1.body.3", "block2.body.0", "block2.body.3", "block2.shortcut.0"]


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    cnnlab.manual_seed(0)
    model = models.build("resnet-small")
    images, labels = (a[:64] for a in load_dataset("mnist").train)
    fit(runs.runnable(model).train(), optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        DataLoader(images, labels, batch_size=32, seed=0), epochs=1, progress=False, log=None)
    d = tmp_path_factory.mktemp("runs") / "resnet"
    checkpoint.save_run(d, model, models.spec_of(model), {"dataset": "mnist", "validation": 10000,
                                                            "model": "resnet-small"})
    return d


def _png(path, size):
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size
        return np.asarray(img.convert("L"))


def _image0():
    return load_dataset("mnist").test[0][0]


def test_hooks_keep_every_map_in_call_order(resnet_run):
    model = runs.load(resnet_run).model
    model.eval()
    x = standardize(_image0(), 0.1307, 0.3081).reshape(1, 1, 28, 28)
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ReLU)
    blocks, out = viz.common.hooked_maps(model, x, kinds)
    names = [b[0] for b in blocks]
    assert names[:4] == ["stem.0", "stem.2", "stem.3", "block1.body.0"]
    # the shortcut's conv runs after the body (forward: relu(body(x) + shortcut(x))), then the block's ReLU
    assert names.index("block2.body.3") < names.index("block2.shortcut.0") < names.index("block2.relu")
    assert set(RESNET_CONVS) <= set(names) and not any(m.has_forward_hooks() for m in model.modules())
    with no_grad():
        stem = model.stem.layers[0](Tensor(x)).numpy()[0]
        np.testing.assert_allclose(blocks[0][2], stem, rtol=1e-6)
        np.testing.assert_allclose(out, model(Tensor(x)).numpy(), rtol=1e-6)
    # a module called twice is drawn twice
    relu = nn.ReLU()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(1, 2, 3), relu

        def forward(self, t):
            return self.act(self.conv(self.act(t)))

    names = [b[0] for b in viz.common.hooked_maps(Twice(), x, kinds)[0]]
    assert names == ["act", "conv", "act (call 2)"]


def test_show_filters_and_featuremaps_of_resnet_small(resnet_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "f.png"
    assert main(["show", "filters", str(resnet_run), "--out", str(out)]) == 0
    _png(out, (1000, 800))
    model = runs.load(resnet_run).model
    fig = viz.filters.draw_filters(model, "block2.shortcut.0")
    assert fig._suptitle.get_text().startswith("Layer block2.shortcut.0: Conv2d(16, 32, kernel_size=(1, 1)")
    assert main(["show", "filters", str(resnet_run), "--layer", "block1.body.1"]) == 3
    err = capsys.readouterr().err.strip()
    assert "block1.body.1 is BatchNorm2d" in err and "not a Conv2d" in err and ", ".join(RESNET_CONVS) in err
    assert main(["show", "filters", str(resnet_run), "--layer", "3"]) == 3
    assert "layer 3 does not exist" in capsys.readouterr().err
    drawn = []
    real = viz.featuremaps.draw_feature_maps
    monkeypatch.setattr(viz.featuremaps, "draw_feature_maps", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    maps = tmp_path / "m.png"
    assert main(["show", "featuremaps", str(resnet_run), "test:0", "--out", str(maps)]) == 0
    assert _png(maps, (1000, 1200)).std() > 10  # drawn, not blank
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert titles[0].startswith("input image, 28x28: model predicts")
    assert titles[1].startswith("layer stem.0: Conv2d 1->16 3x3 pad 1 -> 16x28x28")
    assert any(t.startswith("layer block2.shortcut.0: Conv2d 16->32 1x1 stride 2 -> 32x7x7") for t in titles)
    assert titles[-1].startswith("layer head.0: AvgPool2d 7x7 -> 32x1x1")


def test_report_of_resnet_small_draws_its_pictures(resnet_run, tmp_path, monkeypatch, capsys):
    images, labels = load_dataset("mnist").test
    monkeypatch.setattr(viz.report, "run_test_set", lambda run: (images[:200], labels[:200]))
    for name in ("draw_confusion", "draw_mistakes"):  # not what this test is about, and slow to render
        monkeypatch.setattr(viz.report, name, lambda *a, **k: viz.common.new_figure("augment"))
    out = tmp_path / "r.html"
    assert main(["report", str(resnet_run), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "learned kernels of layer stem.0" in page and 'alt="feature maps of test image 0"' in page
    assert "own forward" not in page


# ------------------------------------------------------------------ a user's model from the CLI
USER_MODULE = '''
from cnnlab import models, nn


class TwoPath(nn.Module):
    """Two conv branches, added."""

    def __init__(self, maps=3, classes=10):
        super().__init__()
        self.a = nn.Conv2d(1, maps, 3, padding=1)
        self.b = nn.Conv2d(1, maps, 5, padding=2)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(maps * 49, classes))

    def forward(self, x):
        return self.head(self.act(self.a(x) + self.b(x)))


if {register}:
    models.register("twopath", TwoPath)
'''


@pytest.fixture()
def user_run(tmp_path, monkeypatch):
    """A run of a model registered in a user's module (mynets.py in tmp_path/code), saved in this
    process, which then forgets the model as the `cnnlab` process never knew it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mynets.py").write_text(USER_MODULE.format(register=True), encoding="utf-8")
    (code / "mynets_ep.py").write_text(USER_MODULE.format(register=False), encoding="utf-8")
    monkeypatch.syspath_prepend(str(code))
    import mynets

    cnnlab.manual_seed(0)
    model = mynets.TwoPath()
    checkpoint.save_run(tmp_path / "run", model, models.spec_of(model), {"dataset": "mnist", "validation": 10000})
    models.unregister("twopath")
    for name in ("mynets", "mynets_ep"):
        sys.modules.pop(name, None)
    yield tmp_path / "run", code
    models.unregister("twopath")
    for name in ("mynets", "mynets_ep"):
        sys.modules.pop(name, None)


def test_an_unknown_model_names_both_ways(user_run, capsys):
    run, _ = user_run
    assert main(["summary", str(run)]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown model 'twopath'" in err
    assert "cnnlab --import MODULE" in err and "CNNLAB_IMPORT" in err and "entry-point group 'cnnlab.models'" in err


def test_import_lets_every_command_load_a_users_run(user_run, tmp_path, capsys):
    run, code = user_run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(cnnlab.__file__).parents[1]), str(code)])}
    done = subprocess.run([sys.executable, "-m", "cnnlab", "--import", "mynets", "summary", str(run), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parameters"] == 3 * 10 + 3 * 26 + 3 * 49 * 10 + 10
    capsys.readouterr()
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - _image0()).save(digit)  # dark digit on white, as a user's picture
    assert main(["predict", str(run), str(digit), "--import", "mynets"]) == 0
    assert "digit.png" in capsys.readouterr().out
    models.unregister("twopath")
    sys.modules.pop("mynets")
    assert main(["evaluate", str(run), "--import", str(code / "mynets.py")]) == 0  # a .py file works too
    assert "test" in capsys.readouterr().out


def test_cnnlab_import_environment_variable(user_run, monkeypatch, capsys):
    run, _ = user_run
    monkeypatch.setenv("CNNLAB_IMPORT", "mynets")
    assert main(["summary", str(run)]) == 0
    assert "TwoPath" not in capsys.readouterr().err


@pytest.mark.parametrize("name, code, words", [
    ("no_such_module_here", 2, "--import no_such_module_here: no module named 'no_such_module_here'"),
    ("missing.py", 2, "--import missing.py: no such file"),
])
def test_bad_imports_are_one_line(name, code, words, capsys):
    assert main(["models", "--import", name]) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err


def test_a_module_that_fails_on_import_is_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('no GPU here')\n", encoding="utf-8")
    assert main(["models", "--import", str(bad)]) == 3
    err = capsys.readouterr().err.strip()
    assert err == "cnnlab models: error: --import " + str(bad) + ": importing it failed: RuntimeError: no GPU here"
    assert "broken" not in sys.modules


def _entry_points(*eps):
    def entry_points(group=None, **kw):
        assert group == "cnnlab.models"
        return list(eps)
    return entry_points


def test_an_installed_packages_entry_point_loads_the_model(user_run, monkeypatch, capsys):
    run, _ = user_run
    ep = importlib.metadata.EntryPoint(name="twopath", value="mynets_ep:TwoPath", group="cnnlab.models")
    other = importlib.metadata.EntryPoint(name="other", value="no_such_pkg:Net", group="cnnlab.models")
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points(other, ep))
    assert "mynets_ep" not in sys.modules and "twopath" not in models.names()
    assert main(["summary", str(run)]) == 0  # imported only now, and only the one named
    assert "twopath" in models.names() and "mynets_ep" in sys.modules and "no_such_pkg" not in sys.modules
    assert "Two conv branches, added." in capsys.readouterr().out


def test_a_broken_entry_point_is_one_line(user_run, monkeypatch, capsys):
    run, _ = user_run
    ep = importlib.metadata.EntryPoint(name="twopath", value="no_such_pkg.nets:Net", group="cnnlab.models")
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points(ep))
    assert main(["evaluate", str(run)]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model 'twopath': its entry point 'no_such_pkg.nets:Net'" in err
    assert "ModuleNotFoundError" in err
