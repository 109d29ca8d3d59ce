"""Faults during training, as a user meets them: kill -9 and Ctrl-C at random moments (then resume),
two trainings into one folder, a full or read-only disk, damaged run files, divergence.

Each real run here is the article's net on 1,500 images for 3 epochs in a child process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnlab import checkpoint, optim, recipes, runs
from cnnlab.data import DataLoader, load_dataset
from cnnlab.models import build
from cnnlab.train import eval_loader, fit

TRAIN = ["train", "--model", "article", "--epochs", "3", "--train-size", "1500", "--validation", "300",
         "--no-progress"]
CONFIG = recipes.get("article").replace(epochs=3, train_size=1500, validation=300)


def cnnlab(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "cnnlab.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def weights(run_dir):
    return checkpoint.load_weights(Path(run_dir) / checkpoint.WEIGHTS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("ref") / "run"
    code, _, err = finish(cnnlab(*TRAIN, "--out", out))
    assert code == 0, err
    return out


def _same(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ma, mb = (json.loads((Path(r) / checkpoint.METRICS).read_text()) for r in (a, b))
    assert [e["test_accuracy"] for e in ma["epochs"]] == [e["test_accuracy"] for e in mb["epochs"]]


def _resume_until_done(run):
    code, out, err = finish(cnnlab("train", "--resume", run, "--no-progress"))
    if "nothing was saved" in err:  # killed before its first file: there is nothing to resume
        shutil.rmtree(run)
        code, out, err = finish(cnnlab(*TRAIN, "--out", run))
    assert code == 0 or "is finished" in err, err  # finished: killed after its last save, before it exited
    return out


# Where to stop the run: after the line that starts with `after` appears, wait `delay` seconds. The
# lines pace the kill points with the run whatever the machine's speed: before any epoch, inside
# epochs 1-3, and around the saves at their ends.
KILL_POINTS = [("cnnlab: training", 0.0), ("cnnlab: training", 0.3), ("epoch   1/3", 0.0), ("epoch   1/3", 0.15),
               ("epoch   2/3", 0.05), ("epoch   2/3", 0.3), ("epoch   3/3", 0.0)]


def run_until(run, after, delay, sig):
    """Start the test run and send ``sig`` ``delay`` seconds after its line ``after``; (code, err)."""
    proc = cnnlab(*TRAIN, "--out", run, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith(after):
            break
    time.sleep(delay)
    proc.send_signal(sig)
    code, _, err = finish(proc)
    return code, err


@pytest.mark.parametrize("sig, after, delay", [(signal.SIGKILL, *p) for p in KILL_POINTS]
                         + [(signal.SIGINT, *p) for p in KILL_POINTS[1::3]])
def test_a_run_killed_anywhere_resumes_to_the_same_bits(reference, tmp_path, sig, after, delay):
    run = tmp_path / "run"
    code, err = run_until(run, after, delay, sig)
    if sig == signal.SIGINT:
        # Ctrl-C landing inside a numba compilation's llvmlite callback makes Python itself print
        # "Exception ignored ... Traceback ... KeyboardInterrupt"; the interrupt is lost there and
        # the run goes on to finish normally. Any other traceback is cnnlab's and a failure.
        assert code in (0, 130) and ("Traceback" not in err or "Exception ignored" in err), err
    manifest = json.loads((run / checkpoint.MANIFEST).read_text()) if (run / checkpoint.MANIFEST).exists() else None
    if manifest is None or not manifest.get("epochs_done"):
        with pytest.raises(checkpoint.RunError, match="no such|no epoch has finished|incomplete|missing"):
            runs.load(run)  # nothing half-trained is loadable
    _resume_until_done(run)
    _same(reference, run)
    assert json.loads((run / checkpoint.MANIFEST).read_text())["status"] == "finished"
    assert not (run / checkpoint.STATE_DIR).exists()


def test_ctrl_c_before_the_first_epoch_leaves_nothing_loadable(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optim.Adam, "step", interrupt)
    run = runs.train(CONFIG, out=tmp_path / "run", progress=False, log=None)
    assert run.history.interrupted and run.history.best_epoch is None
    with pytest.raises(checkpoint.RunError, match="no epoch has finished yet.*--resume"):
        runs.load(tmp_path / "run")
    assert not (tmp_path / "run" / checkpoint.WEIGHTS).exists()


def test_a_second_training_into_the_same_folder_stops_at_once(tmp_path):
    run = tmp_path / "run"
    first = cnnlab(*TRAIN, "--out", run)
    try:
        for _ in range(200):  # until the first one holds the folder
            if (run / checkpoint.MANIFEST).exists():
                break
            time.sleep(0.05)
        # it must not wait for the first one: a hang past the timeout fails the test
        code, _, err = finish(cnnlab(*TRAIN, "--out", run), timeout=30)
        assert code == 3 and ("being trained by another process" in err or "already holds a run" in err), err
    finally:
        code, _, err = finish(first)
    assert code == 0, err
    runs.load(run)


def test_a_run_that_exists_is_refused_and_named_for_resume(reference, tmp_path):
    code, _, err = finish(cnnlab(*TRAIN, "--out", reference))
    assert code == 3 and "already holds a run" in err and "--resume" in err
    code, _, err = finish(cnnlab("train", "--resume", reference))
    assert code == 3 and "finished" in err
    code, _, err = finish(cnnlab("train", "--resume", reference, "--epochs", "9"))
    assert code == 2 and "--resume takes no other settings (--epochs)" in err  # a usage error


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / checkpoint.WEIGHTS).write_bytes((r / checkpoint.WEIGHTS).read_bytes()[:-8]), "does not match"),
    (lambda r: (r / checkpoint.METRICS).write_text("{}"), "does not match"),
    (lambda r: (r / checkpoint.SPEC).unlink(), "spec.json is missing"),
    (lambda r: (r / checkpoint.MANIFEST).write_text("[]"), "not a cnnlab manifest"),
])
def test_a_damaged_run_is_refused_in_one_line(reference, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    damage(run)
    for command in (["evaluate", run], ["predict", run, "nothere.png"], ["show", "filters", run],
                    ["summary", run]):
        code, _, err = finish(cnnlab(*command))
        assert code == 3 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def _small_fs(path: Path, size: str):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs is not allowed here")
    return path


@pytest.fixture
def small_disk(tmp_path):
    path = _small_fs(tmp_path / "small", "2m")
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_too_little_space_is_named_before_any_work(tmp_path):
    path = _small_fs(tmp_path / "tiny", "40k")
    try:
        code, out, err = finish(cnnlab(*TRAIN, "--out", path / "run"))
        assert code == 3 and "not enough free space" in err and "epoch" not in out, err
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_disk_that_fills_during_training_is_one_line_then_resumes(reference, small_disk):
    """The disk fills up (another program's file) before the first epoch's save: the run stops with
    one line, keeps no broken file, and once there is room again resumes to the uninterrupted bits."""
    run = small_disk / "run"
    proc = cnnlab(*TRAIN, "--out", run, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith("cnnlab: training"):
            break
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # everything that is left
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    code, _, err = finish(proc)
    assert code == 3 and "Traceback" not in err and ("No space left" in err or "cannot write" in err), err
    assert not [p for p in run.rglob("*.tmp")]  # no half-written file is left
    with pytest.raises(checkpoint.RunError, match="no epoch has finished yet|incomplete"):
        runs.load(run)
    filler.unlink()
    _resume_until_done(run)
    _same(reference, run)


@pytest.fixture
def read_only(tmp_path):
    path = _small_fs(tmp_path / "ro", "100k")
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_folder_is_named_before_any_work(read_only):
    code, out, err = finish(cnnlab(*TRAIN, "--out", read_only / "run"), timeout=60)
    assert code == 3 and "Read-only file system" in err and "Traceback" not in err, err
    assert "epoch" not in out  # found out before any training


def test_divergence_stops_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    """Weights blown up after a good epoch (finite, but huge): the next evaluation's loss is not
    finite; the run stops naming the epoch, and the saved run is the good epoch, loadable."""
    real_step = optim.Adam.step
    calls = {"n": 0}

    def step(self, closure=None):
        calls["n"] += 1
        out = real_step(self, closure)
        if calls["n"] == 60:  # in epoch 2 (47 batches an epoch)
            for group in self.param_groups:
                for p in group["params"]:
                    p.data *= np.float32(4e29)
        return out

    monkeypatch.setattr(optim.Adam, "step", step)
    with pytest.raises(FloatingPointError, match="diverged.*epoch 2") as e:
        runs.train(CONFIG, out=tmp_path / "run", progress=False, log=None)
    manifest = json.loads((tmp_path / "run" / checkpoint.MANIFEST).read_text())
    assert manifest["status"] == "diverged" and manifest["epochs_done"] == 1 and "epoch 2" in str(e.value)
    run = runs.load(tmp_path / "run")
    assert run.metrics["best_epoch"] == 1 and all(np.isfinite(t.numpy()).all() for t in run.model.parameters())
    with pytest.raises(checkpoint.RunError, match="diverged"):
        runs.resume(tmp_path / "run")


def test_fit_names_non_finite_parameters_and_restores_the_best_epoch():
    split = load_dataset("mnist")
    model = build("article")
    loader = DataLoader(*[a[:640] for a in split.train], 64, seed=0)
    val = eval_loader(*[a[:200] for a in split.validation], 0.1307, 0.3081)
    kept = {}

    def poison(history, is_best):
        if len(history.epochs) == 1:
            kept.update({k: v.numpy().copy() for k, v in model.state_dict().items()})
            model.layers[0].weight.data[0, 0, 0, 0] = np.inf

    with pytest.raises(FloatingPointError, match="diverged.*epoch 2"):
        fit(model, optim.SGD(model.parameters(), lr=0.01), loader, 3, validation=val, progress=False, log=None,
            on_epoch_end=poison)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), kept[k], err_msg=k)


def test_a_finished_run_keeps_only_what_it_needs(reference):
    names = sorted(p.name for p in reference.iterdir())
    assert names == sorted([".lock", checkpoint.CALIBRATION, checkpoint.CONFIG, checkpoint.MANIFEST, checkpoint.METRICS,
                            checkpoint.METRICS_CSV,
                            checkpoint.SPEC, checkpoint.WEIGHTS])
    assert all((reference / n).stat().st_mode & 0o044 for n in names if n != ".lock")  # readable by others
    assert os.path.getsize(reference / checkpoint.WEIGHTS) > 0


def test_a_run_killed_between_finished_and_cleanup_loses_its_state_on_resume(reference, tmp_path):
    """Killed after the manifest says finished but before the resume state was deleted (a window of
    a few instructions, hit once by the kill test above): resuming says it is finished and deletes
    the leftover state, so the run is again only what it needs."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / checkpoint.STATE_DIR / "epoch-3").mkdir(parents=True)
    (run / checkpoint.STATE_DIR / "epoch-3" / "state.json").write_text("{}")
    code, _, err = finish(cnnlab("train", "--resume", run, "--no-progress"))
    assert code != 0 and "is finished" in err, err
    assert not (run / checkpoint.STATE_DIR).exists()
    runs.load(run)


def test_an_early_stopped_run_killed_after_its_last_save_resumes_to_the_same_run(tmp_path, monkeypatch):
    """Early stopping is decided from the history, so a run that died after saving the epoch that
    ends it stops there on resume instead of training on."""
    config = recipes.get("article").replace(epochs=8, train_size=300, validation=300, early_stopping=1)
    whole = runs.train(config, out=tmp_path / "whole", progress=False, log=None)
    assert whole.history.stopped_early and len(whole.history.epochs) < 8
    real = runs._Training._mark

    def die_before_finishing(self, status, **facts):
        if status == "finished":
            raise KeyboardInterrupt  # as a kill between the last epoch's save and the final mark
        return real(self, status, **facts)

    monkeypatch.setattr(runs._Training, "_mark", die_before_finishing)
    with pytest.raises(KeyboardInterrupt):
        runs.train(config, out=tmp_path / "cut", progress=False, log=None)
    monkeypatch.setattr(runs._Training, "_mark", real)
    again = runs.resume(tmp_path / "cut", progress=False, log=None)
    assert len(again.history.epochs) == len(whole.history.epochs) and again.history.stopped_early
    _same(tmp_path / "whole", tmp_path / "cut")


def test_a_data_parallel_run_is_not_resumed_by_one_process(tmp_path):
    run = runs.train(CONFIG.replace(epochs=1), out=tmp_path / "run", progress=False, log=None)
    manifest = json.loads((run.dir / checkpoint.MANIFEST).read_text())
    assert manifest["processes"] == 1
    checkpoint.write_json(run.dir / checkpoint.MANIFEST, {**manifest, "status": "interrupted", "processes": 2})
    with pytest.raises(checkpoint.RunError, match="trained by 2 processes"):
        runs.resume(run.dir)


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    bad = CONFIG.replace(dataset=str(tmp_path / "no-such-folder"))
    with pytest.raises(Exception, match="no-such-folder"):
        runs.train(bad, out=tmp_path / "run", progress=False, log=None)
    assert not (tmp_path / "run").exists()


def test_weights_that_give_no_finite_answer_are_named_not_reported(tmp_path):
    """A run whose weights blew up (finite, but 4e29) on its last batch, saved by an older cnnlab:
    evaluate and predict say so instead of printing 'loss nan' or '(nan%)'."""
    from PIL import Image

    model = build("article")
    for p in model.parameters():
        p.data *= np.float32(4e29)
    checkpoint.save_run(tmp_path / "run", model, {"name": "article", "kwargs": {}}, {"dataset": "mnist"},
                        {"test_accuracy": 0.9})
    code, out, err = finish(cnnlab("evaluate", tmp_path / "run", "--no-progress"))
    assert code == 3 and "diverged" in err and "nan" not in out, (out, err)
    img = Image.new("L", (60, 60), 255)
    img.paste(0, (25, 10, 35, 50))
    img.save(tmp_path / "one.png")
    code, out, err = finish(cnnlab("predict", tmp_path / "run", tmp_path / "one.png"))
    assert code == 3 and "no finite probabilities" in err and "nan" not in out, (out, err)
