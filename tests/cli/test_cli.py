"""The command line as a new user meets it: dry runs, summaries, predictions, errors."""

import json
import math
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cnnlab
from cnnlab import checkpoint, models, optim, recipes, runs
from cnnlab.cli import main
from cnnlab.data import DataLoader, load_dataset
from cnnlab.train import eval_loader, evaluate, fit


def train_run(recipe, dry_run=True, progress=False, log=None, **changes):
    """A dry run of a recipe with some settings changed, as `cnnlab train --model RECIPE --dry-run`."""
    return runs.train(recipes.get(recipe).replace(**changes), dry_run=dry_run, progress=progress, log=log)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--dry-run" in out and "default: default" in out and "(default: 0)" in out


def test_help_states_each_default_once(capsys):
    for command in ("train", "show", "evaluate", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "(default: None)" not in out and "(default: False)" not in out
        assert not re.search(r"\(default: [^)]*\) \(default:", out)  # a help text's own, then argparse's
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: the model's recipe) " in out and "(default: 10000)" in out


def test_the_clothing_recipes_train_on_clothes_by_default(monkeypatch):
    assert recipes.get("fashion").dataset == recipes.get("fashion-best").dataset == "fashion-mnist"
    assert {recipes.get(n).dataset for n in recipes.names() if not n.startswith("fashion")} == {"mnist"}
    # --dataset unset means the recipe's
    seen = []

    def load(name, **kw):  # records which data set training asked for, then stops it
        seen.append(name)
        raise KeyboardInterrupt

    monkeypatch.setattr("cnnlab.runs.load_dataset", load)
    with pytest.raises(KeyboardInterrupt):
        train_run("fashion", dry_run=True, progress=False, log=None)
    with pytest.raises(KeyboardInterrupt):
        train_run("fashion", dataset="mnist")  # an explicit choice wins
    assert seen == ["fashion-mnist", "mnist"]


def test_no_validation_set_keeps_the_last_epoch(capsys):
    split = load_dataset("mnist")
    cnnlab.manual_seed(0)
    model = models.build("article")
    x, y = split.train
    loader = DataLoader(x[:640], y[:640], 64, seed=0)
    # After epoch 2 the weights are scrambled, so epoch 3's training accuracy is the worst: choosing
    # on training accuracy would keep epoch 2; without a validation set the last epoch is kept.
    opt = optim.SGD(model.parameters(), lr=0.05)
    rng = np.random.default_rng(0)

    def scramble(history, is_best):
        if len(history.epochs) == 2:
            for p in model.parameters():
                p.data[...] = rng.standard_normal(p.shape)

    test = eval_loader(split.test[0][:500], split.test[1][:500], 0.1307, 0.3081)
    h = fit(model, opt, loader, 3, validation=None, test=test, progress=False, log=None, on_epoch_end=scramble)
    assert h.epochs[2]["train_accuracy"] < h.epochs[1]["train_accuracy"]
    assert h.best_validation_accuracy is None  # training accuracy is not passed off as validation
    assert h.best_epoch == 3 and h.test_accuracy == h.epochs[-1]["test_accuracy"]
    assert evaluate(model, test)["accuracy"] == h.test_accuracy
    assert main(["train", "--validation", "0", "--dry-run", "--no-progress"]) == 0
    assert "the last epoch: no validation set to choose on" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--early-stopping", "0"], "--early-stopping must be at least 1"),
    (["--early-stopping", "-1"], "--early-stopping must be at least 1"),
    (["--early-stopping", "2", "--validation", "0"], "--early-stopping needs a validation set"),
])
def test_early_stopping_errors(argv, message, capsys):
    assert main(["train", "--dry-run", "--no-progress"] + argv) == 2
    assert message in capsys.readouterr().err


def test_output_paths_that_cannot_be_written_are_named_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / checkpoint.WEIGHTS).write_bytes(b"")
    cases = [(["train", "--out", str(run)], "already holds a run"),
             (["train", "--out", str(tmp_path / "afile" / "x")], "afile is a file, not a folder"),
             (["train", "--out", str(tmp_path / "afile")], "is a file; give a folder name")]
    for argv, message in cases:
        assert main(argv + ["--no-progress"]) == 3  # the command line is fine; the folder it names is not
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="adir is a folder; give a file name"):
        checkpoint.write_json(tmp_path / "adir", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "run"]  # nothing half-written


def test_train_dry_run(capsys):
    assert main(["train", "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "test accuracy" in out


def test_help_lists_hflip(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--hflip, --no-hflip" in out


def test_mnist_run_records_the_published_normalisation():
    cfg = train_run("article").config
    assert (cfg.mean, cfg.std) == (0.1307, 0.3081)  # MNIST results stay bit-identical
    assert cfg.augment.hflip is False  # the recipe's default: digits are not mirrored
    assert recipes.get("article").augment.hflip is False


def test_train_dry_run_saves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "article", "--dry-run", "--no-progress"]) == 0
    assert not (tmp_path / "runs").exists()


def test_models_and_summary(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in recipes.names() + models.names():
        assert name in out
    assert main(["summary", "nielsen-conv1"]) == 0
    out = capsys.readouterr().out
    assert "(20, 24, 24)" in out and "520" in out and "(20, 12, 12)" in out
    # the article's argument, for this model's first conv layer: 20 x 24 x 24 neurons share 520
    # parameters; fully connected to the 784 pixels they would need 784 * 11,520 + 11,520
    assert "11,520 neurons" in out and "share 520 parameters" in out and "9,043,200" in out
    assert main(["summary", "default"]) == 0  # its convolutions have no bias (batch norm follows)
    out = capsys.readouterr().out
    assert "share 800 parameters (32 maps x (5x5x1 weights))" in out and "need 14,450,688" in out
    assert main(["summary", "nielsen-fc"]) == 0
    assert "shared weights" not in capsys.readouterr().out  # no convolution, nothing shared


def _draw_digit_one(path, size=(150, 200)):
    img = Image.new("L", size, 255)
    d = ImageDraw.Draw(img)
    d.line([(75, 30), (75, 170)], fill=0, width=16)
    img.save(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short real training run (6,000 images, one epoch) saved as a run directory."""
    from helpers import save_short_run

    return save_short_run(tmp_path_factory.mktemp("runs") / "r", "default", 6000, nesterov=True)


def test_predict_a_drawn_digit(trained_run, tmp_path, capsys):
    img = tmp_path / "one.png"
    _draw_digit_one(img)
    assert main(["predict", str(trained_run), str(img)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{img}: 1"), out


def test_evaluate_run(trained_run, capsys):
    assert main(["evaluate", str(trained_run)]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("accuracy ")[1].split("%")[0])
    assert acc > 95.0, out


def test_evaluate_an_ensemble(trained_run, capsys):
    assert main(["evaluate", str(trained_run), str(trained_run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    single = float(lines[0].split("accuracy ")[1].split("%")[0])
    single_val = float(lines[0].split("validation ")[1].split("%")[0])
    assert lines[2].startswith("ensemble of 2: validation accuracy")
    assert lines[3].startswith("ensemble of 2: test accuracy")
    for line, expected in ((lines[2], single_val), (lines[3], single)):
        vote = float(line.split("accuracy ")[1].split("%")[0])
        avg = float(line.split(", ")[1].split("%")[0])
        assert vote == expected and avg == expected  # two copies vote, and average, as one
    # a tie on validation goes to the simpler method, the vote
    assert lines[4] == f"chosen on validation: plurality vote; its test accuracy {single:.2f}%"


@pytest.mark.parametrize("argv,match,code", [
    (["evaluate", "/nonexistent/run"], "no such run directory", 3),
    (["train", "--epochs", "0", "--dry-run"], "epochs", 2),
    (["predict", "/nonexistent/run", "x.png"], "no such run directory", 3),
])
def test_errors_are_one_clear_line(argv, match, code, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_predict_rejects_non_images(trained_run, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    assert main(["predict", str(trained_run), str(bad)]) == 3  # no picture could be read
    assert "notes.png" in capsys.readouterr().err
    assert main(["predict", str(trained_run), str(tmp_path / "nothere.png")]) == 3
    err = capsys.readouterr().err
    assert err.count("nothere.png") == 1 and "no such file" in err


def test_predict_converts_pictures_the_way_the_runs_data_set_was_made(trained_run, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    cfg = json.loads((copy / checkpoint.CONFIG).read_text())
    (copy / checkpoint.CONFIG).write_text(json.dumps(dict(cfg, dataset="fashion-mnist")))
    img = tmp_path / "one.png"
    _draw_digit_one(img)
    used = []
    from cnnlab.data import images

    for name in ("to_fashion_form", "to_mnist_form"):
        original = getattr(images, name)
        monkeypatch.setattr(images, name, lambda p, _f=original, _n=name: used.append(_n) or _f(p))
    assert main(["predict", str(copy), str(img)]) == 0
    assert main(["predict", str(trained_run), str(img)]) == 0
    assert used == ["to_fashion_form", "to_mnist_form"]
    out = capsys.readouterr().out.splitlines()
    # the same weights see the drawn "1" as class 1 either way (99.8% measured); a fashion-mnist run
    # names class 1 "Trouser", an MNIST run "1"
    assert [line.split(": ")[1].split()[0] for line in out] == ["Trouser", "1"], out


def _predict_line(run, image, capsys):
    assert main(["predict", str(run), str(image)]) == 0
    return capsys.readouterr().out


def test_predict_uses_the_runs_recorded_normalisation(trained_run, tmp_path, capsys):
    img = tmp_path / "one.png"
    _draw_digit_one(img)
    old_style = _predict_line(trained_run, img, capsys)  # no mean/std in its config: MNIST's
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    cfg = json.loads((copy / checkpoint.CONFIG).read_text())
    cfg.update(mean=0.1307, std=0.3081)
    (copy / checkpoint.CONFIG).write_text(json.dumps(cfg))
    assert _predict_line(copy, img, capsys).split(": ", 1)[1] == old_style.split(": ", 1)[1]
    cfg.update(mean=0.6, std=0.1)
    (copy / checkpoint.CONFIG).write_text(json.dumps(cfg))
    assert _predict_line(copy, img, capsys).split(": ", 1)[1] != old_style.split(": ", 1)[1]
    assert main(["evaluate", str(copy)]) == 0
    acc = float(capsys.readouterr().out.split("accuracy ")[1].split("%")[0])
    assert acc < 90.0  # the same weights fed wrongly normalised inputs: evaluate used the recorded values


def test_broken_normalisation_in_a_run_is_one_clear_line(trained_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    cfg = json.loads((copy / checkpoint.CONFIG).read_text())
    cfg.update(mean=0.2)
    (copy / checkpoint.CONFIG).write_text(json.dumps(cfg))
    assert main(["evaluate", str(copy)]) == 3
    err = capsys.readouterr().err
    assert "config.json" in err and "no std" in err and "Traceback" not in err


def test_zoom_and_erase_flags(capsys):
    assert main(["train", "--model", "article", "--scale", "0.1", "--erase", "0.5", "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "zoom +-0.1" in out and "erase p=0.5" in out
    res = train_run("article", max_scale=0.1, erase=0.25)
    assert (res.config.augment.max_scale, res.config.augment.erase) == (0.1, 0.25)
    assert recipes.get("best-vgg").augment.max_scale == 0.1
    for flag, value, msg in (("--scale", "1.2", "--scale must be in"), ("--erase", "2", "--erase must be a probability")):
        assert main(["train", "--model", "article", flag, value, "--dry-run", "--no-progress"]) != 0
        assert msg in capsys.readouterr().err


def test_every_optimizer_trains_and_nielsens_l2_is_refused_where_it_would_be_ignored(capsys, monkeypatch):
    made = []
    real = runs.make_optimizer

    def recording(*args, **kwargs):  # the optimizer train_run builds, with its steps counted
        opt = real(*args, **kwargs)
        opt.settings, opt.steps = dict(opt.param_groups[0]), 0  # before any schedule changes the lr
        step = opt.step

        def counted(closure=None):
            opt.steps += 1
            return step(closure)

        opt.step = counted
        made.append(opt)
        return opt

    monkeypatch.setattr(runs, "make_optimizer", recording)
    expected = {"sgd": (optim.SGD, {"nesterov": False}), "nesterov": (optim.SGD, {"nesterov": True, "momentum": 0.9}),
                "rmsprop": (optim.RMSprop, {}), "adam": (optim.Adam, {"weight_decay": 0}),
                "adamw": (optim.AdamW, {"weight_decay": 1e-2})}
    cnnlab.manual_seed(0)
    initial = [p.numpy().copy() for p in models.build("article").parameters()]  # train_run's seed-0 weights
    for name, (cls, settings) in expected.items():
        res = train_run("article", optimizer=name, lr=1e-3)
        opt = made[-1]
        assert res.config.optimizer.name == name and type(opt) is cls
        group = opt.settings
        assert group["lr"] == 1e-3 and all(group[k] == v for k, v in settings.items()), (name, group)
        assert opt.steps == 5  # a dry run's five batches, each an optimizer step
        if cls is not optim.SGD:  # the adaptive ones count their own steps, per parameter
            assert [opt.state[p]["step"] for p in res.model.parameters()] == [5] * len(initial)
        for p, p0 in zip(res.model.parameters(), initial):  # every parameter moved
            assert not np.array_equal(p.numpy(), p0), name
        assert np.isfinite(res.history.epochs[-1]["train_loss"])
    # the recipe's lambda (nielsen-conv2-relu: 0.1) and an explicit one, with an optimizer that has no such term
    for argv in (["--model", "nielsen-conv2-relu", "--optimizer", "adam"],
                 ["--model", "article", "--optimizer", "rmsprop", "--l2", "0.5"]):
        assert main(["train", *argv, "--dry-run", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "--l2" in err and "applied by SGD only" in err and "set it to 0" in err and "Traceback" not in err
    assert main(["train", "--model", "nielsen-conv2-relu", "--optimizer", "adam", "--l2", "0", "--dry-run",
                 "--no-progress"]) == 0
    # the recipe's SGD momentum (alexnet: 0.9) is not carried over to another optimizer, nor recorded
    assert train_run("alexnet", optimizer="rmsprop").config.optimizer.momentum == 0
    assert train_run("article", optimizer="rmsprop", momentum=0.5).config.optimizer.momentum == 0.5
    with pytest.raises(ValueError, match="adam has no momentum"):
        recipes.get("article").replace(optimizer="adam", momentum=0.5)


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_train_schedules(schedule, monkeypatch, capsys):
    """`train --schedule`: the lr after each scheduler step of a dry run (1 epoch of 5 batches), by
    the schedules' definitions: cosine per batch over all 5, lr (1 + cos(pi k / 5)) / 2; step per
    epoch, gamma 0.1 every max(epochs // 3, 1) epochs; constant never steps."""
    lrs, built = [], []
    real = runs.make_scheduler

    def recording(name, optimizer, *args):
        sched, per_batch = real(name, optimizer, *args)
        built.append((sched, per_batch))
        if sched is not None:
            step = sched.step
            sched.step = lambda: (step(), lrs.append(optimizer.param_groups[0]["lr"]))
        return sched, per_batch

    monkeypatch.setattr(runs, "make_scheduler", recording)
    assert main(["train", "--model", "article", "--schedule", schedule, "--lr", "0.2", "--dry-run",
                 "--no-progress"]) == 0
    assert f"lr 0.2 ({schedule})" in capsys.readouterr().out
    (sched, per_batch), = built
    if schedule == "cosine":
        assert type(sched) is optim.CosineAnnealingLR and per_batch
        assert lrs == pytest.approx([0.2 * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(1, 6)], abs=1e-15)
    elif schedule == "step":
        assert type(sched) is optim.StepLR and not per_batch
        assert lrs == pytest.approx([0.02], rel=1e-15)
    else:
        assert sched is None and lrs == []


def test_elastic_flags(capsys):
    assert main(["train", "--model", "article", "--elastic", "30", "--elastic-sigma", "5", "--dry-run",
                 "--no-progress"]) == 0
    assert "elastic alpha 30 sigma 5" in capsys.readouterr().out
    res = train_run("best-vgg-elastic", epochs=1, train_size=200)
    assert (res.config.augment.elastic, res.config.augment.elastic_sigma) == (20.0, 4.0)  # the recipe's
    assert train_run("article").config.augment.elastic == 0.0
    for flag, value, msg in (("--elastic", "-1", "--elastic must be >= 0"),
                             ("--elastic-sigma", "0", "--elastic-sigma must be > 0")):
        assert main(["train", "--model", "article", flag, value, "--dry-run", "--no-progress"]) != 0
        assert msg in capsys.readouterr().err


def test_evaluate_checks_every_run_before_evaluating_any(trained_run, tmp_path, capsys):
    clothes = tmp_path / "clothes"
    shutil.copytree(trained_run, clothes)
    cfg = json.loads((clothes / checkpoint.CONFIG).read_text())
    (clothes / checkpoint.CONFIG).write_text(json.dumps(dict(cfg, dataset="fashion-mnist")))
    assert main(["evaluate", str(trained_run), str(clothes)]) == 3
    captured = capsys.readouterr()
    assert "an ensemble needs one data set" in captured.err and captured.out == ""  # nothing evaluated first
    bare = tmp_path / "bare"
    shutil.copytree(trained_run, bare)
    (bare / checkpoint.CONFIG).unlink()
    assert main(["evaluate", str(bare)]) == 0
    assert "has no config.json: taken as an MNIST run" in capsys.readouterr().err


def test_picture_files_must_be_named_as_what_they_are(trained_run, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert main(["show", "curves", str(trained_run), "--out", str(notes)]) == 2
    assert "must end in .png" in capsys.readouterr().err and notes.read_text() == "keep me"
    assert main(["report", str(trained_run), "--out", str(tmp_path / "r.png")]) == 2
    assert "must end in .html" in capsys.readouterr().err


def test_evaluate_mirror_tta(trained_run, tmp_path, capsys):
    assert main(["evaluate", "--mirror-tta", str(trained_run)]) == 3  # the run is unfit for the flag
    assert "not trained with --hflip" in capsys.readouterr().err
    run = tmp_path / "mirrored"
    shutil.copytree(trained_run, run)
    cfg = json.loads((run / checkpoint.CONFIG).read_text())
    (run / checkpoint.CONFIG).write_text(json.dumps({**cfg, "hflip": True}))
    assert main(["evaluate", "--mirror-tta", str(run), str(run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    tta = float(lines[0].split("with mirror averaging ")[1].split("%")[0])
    model = runs.load(run).model
    x, y = load_dataset("mnist").test

    def probabilities(images):
        return evaluate(model, eval_loader(images, y, 0.1307, 0.3081), return_predictions=True)["probabilities"]
    p = (probabilities(x) + probabilities(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    assert tta == pytest.approx(100 * float((p.argmax(1) == y).mean()), abs=0.005)
    assert lines[4].startswith("ensemble of 2 (each with mirror averaging): validation accuracy")
    assert lines[-1].startswith("chosen on validation: ")
