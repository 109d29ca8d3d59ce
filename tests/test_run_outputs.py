"""What a run directory records for scripts and dashboards: metrics.csv (every epoch, in the
manifest), TensorBoard event files (optional), and which cnnlab trained it (config.json's
provenance)."""

import csv
import json
import struct
import subprocess
import sys

import pytest

import cnnlab
from cnnlab import checkpoint, provenance, recipes, runs
from cnnlab.cli import main

CONFIG = recipes.get("article").replace(epochs=3, train_size=200, validation=500)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def events(folder):
    """[(file, step, kind, value)] of every TensorBoard event file in ``folder``, in file order:
    kind is a scalar's tag, or "START" for a session start (which purges later steps)."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(folder.iterdir()):
        blob, i = path.read_bytes(), 0
        while i < len(blob):  # TFRecord: length, its CRC, the data, the data's CRC
            (n,) = struct.unpack("<Q", blob[i:i + 8])
            event = Event.FromString(blob[i + 12:i + 12 + n])
            i += 12 + n + 4
            if event.HasField("session_log"):
                out.append((path.name, event.step, "START", None))
            out += [(path.name, event.step, v.tag, v.simple_value) for v in event.summary.value]
    return out


def test_metrics_csv_is_written_with_every_epoch_and_in_the_manifest(tmp_path, monkeypatch):
    seen = []  # (epochs done, rows of metrics.csv, its checksum in the manifest is right) at each save
    real = checkpoint.write_manifest

    def spy(run_dir, status, files=(), **facts):
        manifest = real(run_dir, status, files, **facts)
        if status == "training":
            path = run_dir / checkpoint.METRICS_CSV
            seen.append((facts["epochs_done"], len(read_csv(path)),
                         manifest["files"].get(checkpoint.METRICS_CSV) == checkpoint.sha256(path)))
        return manifest

    monkeypatch.setattr(checkpoint, "write_manifest", spy)
    run = runs.train(CONFIG, out=tmp_path / "r", progress=False, log=None)
    assert seen == [(1, 1, True), (2, 2, True), (3, 3, True)]
    rows = read_csv(run.dir / checkpoint.METRICS_CSV)
    epochs = json.loads((run.dir / checkpoint.METRICS).read_text())["epochs"]
    assert list(rows[0]) == list(epochs[0]) and list(rows[0])[:3] == ["epoch", "train_loss", "train_accuracy"]
    for row, record in zip(rows, epochs):  # every number, to the last bit
        assert {k: float(v) for k, v in row.items()} == record
    manifest = checkpoint.read_manifest(run.dir)
    assert manifest["status"] == "finished"
    checkpoint.check_files(run.dir, manifest, [checkpoint.METRICS_CSV])
    assert not (run.dir / runs.TENSORBOARD_DIR).exists()  # only when asked for


def test_metrics_csv_leaves_a_missing_value_empty(tmp_path):
    run = runs.train(CONFIG.replace(epochs=1, validation=0), out=tmp_path / "r", progress=False, log=None)
    (row,) = read_csv(run.dir / checkpoint.METRICS_CSV)
    assert row["validation_accuracy"] == row["validation_loss"] == "" and float(row["test_accuracy"]) > 0


def test_tensorboard_events_follow_the_metrics_and_a_resume_purges_the_stopped_epoch(tmp_path, monkeypatch):
    real = checkpoint.write_manifest

    def killed_before_the_second_save(run_dir, status, files=(), **facts):
        if status == "training" and facts["epochs_done"] == 2:
            raise KeyboardInterrupt  # epoch 2's events are written, its save is not
        return real(run_dir, status, files, **facts)

    monkeypatch.setattr(checkpoint, "write_manifest", killed_before_the_second_save)
    first = runs.train(CONFIG, out=tmp_path / "r", progress=False, log=None, tensorboard=True)
    assert first.history.interrupted
    folder = first.dir / runs.TENSORBOARD_DIR
    assert sorted({(step, tag) for _, step, tag, _ in events(folder)}) == sorted(
        (step, tag) for step in (1, 2) for tag in ("loss/train", "accuracy/train", "loss/validation",
                                                   "accuracy/validation", "loss/test", "accuracy/test", "lr",
                                                   "seconds", "images_per_second"))
    monkeypatch.setattr(checkpoint, "write_manifest", real)
    done = runs.resume(first.dir, progress=False, log=None)  # goes on writing events: the run wrote them
    assert not done.history.interrupted
    found = events(folder)
    first_file = found[0][0]
    second = [e for e in found if e[0] != first_file]
    assert second[0][1:3] == (2, "START")  # TensorBoard drops the stopped attempt's epoch 2 on reading this
    epochs = json.loads((done.dir / checkpoint.METRICS).read_text())["epochs"]
    for step in (2, 3):
        got = {tag: value for _, s, tag, value in second if s == step and tag != "START"}
        record = epochs[step - 1]
        assert got["accuracy/validation"] == pytest.approx(record["validation_accuracy"], rel=1e-6)
        assert got["loss/train"] == pytest.approx(record["train_loss"], rel=1e-6)
        assert got["lr"] == pytest.approx(record["lr"], rel=1e-6)


def test_tensorboard_without_tensorboardx_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX -> ImportError
    out = tmp_path / "r"
    assert main(["train", "--model", "article", "--tensorboard", "--out", str(out), "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert captured.err == ("cnnlab train: error: TensorBoard event files need tensorboardX, an optional package: "
                            "pip install 'cnnlab[tensorboard]'\n")
    assert captured.out == "" and not out.exists()


# ------------------------------------------------------------------------------- provenance
def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_names_the_checkout_the_package_is_tracked_in(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    package = repo / "src" / "pkg"
    package.mkdir(parents=True)
    assert provenance.git_state(package) == (None, None)  # not in a checkout
    git(repo, "init", "-q")
    (package / "__init__.py").write_text("x = 1\n")
    assert provenance.git_state(package) == (None, None)  # in a checkout, but not tracked there
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert provenance.git_state(package) == (head, False)
    (repo / "untracked.txt").write_text("not part of the code")
    assert provenance.git_state(package) == (head, False)
    (package / "__init__.py").write_text("x = 2\n")
    assert provenance.git_state(package) == (head, True)
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert provenance.git_state(package) == (None, None)  # no git: never a failure


def test_every_run_records_which_cnnlab_trained_it(tmp_path):
    run = runs.train(CONFIG.replace(epochs=1), out=tmp_path / "r", progress=False, log=None)
    saved = json.loads((run.dir / checkpoint.CONFIG).read_text())["provenance"]
    assert saved == dict(run.config.provenance) == provenance.provenance()
    assert saved["cnnlab"] == cnnlab.__version__ and set(saved) == {"cnnlab", "git_commit", "git_dirty"}
    assert runs.load(run.dir).config == run.config
    # recorded, not chosen: the same training compares equal whoever ran it
    other = run.config.replace(provenance={"cnnlab": "0.0.1", "git_commit": None, "git_dirty": None})
    assert other != run.config and other.comparable() == run.config.comparable() == CONFIG.replace(
        epochs=1).comparable()
    with pytest.raises(TypeError):
        run.config.provenance["cnnlab"] = "9"  # read-only, as the config is frozen


def test_a_run_saved_before_provenance_loads(tmp_path):
    run = runs.train(CONFIG.replace(epochs=1), out=tmp_path / "r", progress=False, log=None)
    path = run.dir / checkpoint.CONFIG
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "provenance"}
    path.write_text(json.dumps(old))
    assert runs.load_config(run.dir).provenance is None
    assert runs.load_config(run.dir).comparable() == run.config.comparable()
    path.write_text(json.dumps({**old, "provenance": "0.1.0"}))
    with pytest.raises(checkpoint.RunError, match="config.json: provenance must be a JSON object"):
        runs.load_config(run.dir)
