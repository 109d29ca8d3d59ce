"""`cnnlab reproduce nielsen` and `cnnlab experiment pooling`, on shortened runs."""

import json
import re
import shutil

import numpy as np
import pytest

import cnnlab.runs
from cnnlab import models, recipes
from cnnlab.cli import main
from cnnlab.ensemble import vote
from cnnlab.reproduce import ROWS, markdown_table, member_config, pooling_experiment, reproduce_nielsen


def test_book_table_is_the_published_one():
    assert [round(100 * r.book, 2) for r in ROWS] == [97.80, 98.78, 99.06, 99.23, 99.37, 99.60]
    assert all(r.epochs == 60 for r in ROWS[:5]) and ROWS[5].epochs == 40
    assert [r.config.optimizer.lr for r in ROWS] == [0.1, 0.1, 0.1, 0.03, 0.03, 0.03]
    assert [r.config.optimizer.l2_lambda for r in ROWS] == [0, 0, 0, 0.1, 0.1, 0]
    assert [r.config.expand for r in ROWS] == [False] * 4 + [True] * 2
    # the book's plain SGD at mini-batch 10, no augmentation beyond the expanded data
    assert {(r.config.optimizer.name, r.config.optimizer.momentum, r.config.batch_size, r.config.schedule,
             r.config.augment.max_shift) for r in ROWS} == {("sgd", 0.0, 10, "constant", 0)}


def test_vote_is_a_plurality_with_probability_tiebreak():
    a = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    b = np.array([[0.6, 0.4, 0.0], [0.1, 0.0, 0.9]])
    c = np.array([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1]])
    np.testing.assert_array_equal(vote([a, b, c]), [0, 1])
    # one vote each for classes 1 and 2: the larger summed probability (class 1: 0.8+0.0) wins
    np.testing.assert_array_equal(vote([a[1:], b[1:]]), [2])


def test_short_reproduction_writes_results(tmp_path):
    lines = []
    rep = reproduce_nielsen(rows=["fc", "conv1"], epochs=1, train_size=2000, out_dir=tmp_path, progress=False,
                            log=lines.append, runs_dir=tmp_path / "nets")
    # each row's net is kept as a run directory, ready for `cnnlab show` and `cnnlab report`
    assert sorted(p.name for p in (tmp_path / "nets").iterdir()) == ["conv1-seed0-epochs1-train2000",
                                                                      "fc-seed0-epochs1-train2000"]
    assert [r["row"] for r in rep["table"]] == ["fc", "conv1"]
    # every epoch of every row is reported as it ends, tagged with its row
    assert any(line.startswith("  [fc] epoch   1/1") for line in lines)
    assert any(line.startswith("  [conv1] epoch   1/1") for line in lines)
    assert not rep["full_run"]
    # one epoch on 2,000 images, measured on the 10,000 test images: fc 0.8230, conv1 0.5071 (its
    # sigmoid convolutions learn slowly). +-0.02 (200 images) leaves room for other CPUs' and BLAS
    # libraries' rounding; a row trained wrongly lands far outside (chance is 0.10)
    measured = {"fc": 0.8230, "conv1": 0.5071}
    for r in rep["table"]:
        assert r["ours"] == pytest.approx(measured[r["row"]], abs=0.02), r
        assert r["difference_points"] == pytest.approx(100 * (r["ours"] - r["book"]), abs=0.01)
    # a shortened run has its own files: the full run's table is never replaced by one
    assert not (tmp_path / "nielsen.json").exists()
    saved = json.loads((tmp_path / "nielsen-short.json").read_text())
    assert saved["table"][0]["book"] == 0.978
    md = (tmp_path / "nielsen-short.md").read_text()
    assert "Shortened run" in md and "| fc |" in md and "97.80%" in md
    assert markdown_table(rep) == md


def test_unknown_row_is_an_error():
    with pytest.raises(ValueError, match="unknown row"):
        reproduce_nielsen(rows=["nope"], out_dir=None, log=None)


def test_pooling_experiment_chooses_on_validation():
    res = pooling_experiment("article", pools=("max", "l2", "avg"), seeds=(0,), epochs=1, train_size=2000,
                             progress=False, log=None)
    assert set(res["by_pool"]) == {"max", "l2", "avg"}
    best = max(res["by_pool"], key=lambda p: res["by_pool"][p]["validation"])
    assert res["choice"] == best == "l2"  # validation measured: l2 0.846, max 0.815, avg 0.784
    # test accuracy measured after one epoch on 2,000 images; +-0.02 (200 of the 10,000 test images)
    # for other machines' rounding, as above
    measured = {"max": 0.7985, "l2": 0.8316, "avg": 0.7601}
    for pool, v in res["by_pool"].items():
        assert v["test"] == pytest.approx(measured[pool], abs=0.02), (pool, v)


def test_pooling_variants_build():
    for pool, cls, at in (("max", "MaxPool2d", 1), ("l2", "LPPool2d", 2), ("avg", "AvgPool2d", 2)):
        m = models.build(models.spec("nielsen-conv2-relu", pool=pool))
        assert type(m.layers[at]).__name__ == cls  # L2/average pooling pool the activations
    with pytest.raises(ValueError, match="unknown pooling"):
        models.build(models.spec("nielsen-conv1", pool="median"))


def test_cli_experiment_runs_keeps_reuses_and_resumes_its_runs(tmp_path, capsys, monkeypatch):
    argv = ["experiment", "pooling", "--model", "article", "--epochs", "2", "--train-size", "1000", "--pools", "max,l2",
            "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "chosen on validation accuracy" in first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["article-l2-seed0-epochs2-train1000",
                                                          "article-max-seed0-epochs2-train1000"]
    monkeypatch.setattr(cnnlab.runs, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert main(argv) == 0 and _untimed(capsys.readouterr().out) == _untimed(first)  # reused: the same table
    # a run that stopped after its first epoch is resumed, not started over
    stopped = tmp_path / "article-max-seed0-epochs2-train1000"
    shutil.rmtree(stopped)
    config = recipes.get("article").replace(epochs=2, batch_size=64, optimizer="nesterov", lr=0.01, momentum=0.9,
                                            schedule="onecycle", max_shift=0, train_size=1000,
                                            model_kwargs={"pool": "max"})
    real_fit = cnnlab.runs.fit
    monkeypatch.undo()
    with monkeypatch.context() as m:
        m.setattr(cnnlab.runs, "fit", lambda *a, **k: _stop_after_one_epoch(real_fit, *a, **k))
        cnnlab.runs.train(config, out=stopped, progress=False, log=None)
    assert json.loads((stopped / "manifest.json").read_text())["status"] == "interrupted"
    resumed = []
    real_resume = cnnlab.runs.resume
    monkeypatch.setattr(cnnlab.runs, "resume", lambda *a, **k: resumed.append(a[0]) or real_resume(*a, **k))
    assert main(argv) == 0 and _untimed(capsys.readouterr().out) == _untimed(first)
    assert resumed == [stopped]


def _untimed(out):
    """The experiment's printout without the seconds each run took."""
    return re.sub(r"\(\d+s\)", "", out)


def _stop_after_one_epoch(real_fit, *args, **kwargs):
    """fit as Ctrl-C after the first epoch's save leaves it: interrupted, one epoch done."""
    save = kwargs["on_epoch_end"]

    def stop(history, is_best):
        save(history, is_best)
        raise KeyboardInterrupt

    kwargs["on_epoch_end"] = stop
    return real_fit(*args, **kwargs)


def test_full_runs_of_some_rows_add_to_the_saved_table(tmp_path):
    from cnnlab.reproduce import _merge_previous

    def row(key, ours, date):
        return {"row": key, "network": key, "book": 0.99, "ours": ours, "difference_points": 0.0, "seconds": 1.0,
                "epochs": 60, "best_epoch": 1, "date": date}

    path = tmp_path / "nielsen.json"
    path.write_text(json.dumps({"table": [row("fc", 0.97, "old"), row("relu", 0.99, "old")], "full_run": True,
                                "date": "old"}))
    new = {"table": [row("expanded", 0.9935, "new"), row("fc", 0.98, "new")], "full_run": True, "date": "new",
           "machine": "m", "platform": "p"}
    merged = _merge_previous(new, path)
    assert [r["row"] for r in merged["table"]] == ["fc", "relu", "expanded"]  # the book's order
    assert merged["table"][0]["ours"] == 0.98 and merged["table"][0]["date"] == "new"  # re-run row replaced
    assert merged["table"][1]["date"] == "old"
    assert "| relu |" in markdown_table(merged) and "| old |" in markdown_table(merged)
    # a shortened run never mixes with a full table, and a shortened table is not kept
    assert _merge_previous(dict(new, full_run=False), path)["table"] == new["table"]
    path.write_text(json.dumps({"table": [row("relu", 0.99, "old")], "full_run": False, "date": "old"}))
    assert [r["row"] for r in _merge_previous(new, path)["table"]] == ["fc", "expanded"]
    path.write_text("{not json")
    assert _merge_previous(new, path)["table"] == new["table"]


def test_trained_nets_are_saved_and_reused_not_retrained(tmp_path, monkeypatch):
    runs = tmp_path / "nets"
    first = reproduce_nielsen(rows=["fc"], epochs=1, train_size=1000, out_dir=None, progress=False, log=None,
                              runs_dir=runs)
    net = runs / "fc-seed0-epochs1-train1000"
    assert (net / "model.safetensors").exists() and first["table"][0]["reused"] is False

    def no_training(*args, **kwargs):
        raise AssertionError("a finished net with the same settings was trained again")

    monkeypatch.setattr(cnnlab.runs, "train", no_training)
    lines = []
    again = reproduce_nielsen(rows=["fc"], epochs=1, train_size=1000, out_dir=None, progress=False,
                              log=lines.append, runs_dir=runs)
    assert any(f"reusing {net}" in line for line in lines)
    row, row0 = again["table"][0], first["table"][0]
    assert row["reused"] is True
    assert (row["ours"], row["best_epoch"]) == (row0["ours"], row0["best_epoch"])
    # the recorded training time, not the few milliseconds of reloading
    assert row["seconds"] == pytest.approx(json.loads((net / "metrics.json").read_text())["seconds"], abs=0.1)
    assert "| fc |" in markdown_table(again) and " s * |" in markdown_table(again)
    assert " s * |" not in markdown_table(first)


def test_unfinished_or_different_nets_are_trained_again(tmp_path, monkeypatch):
    runs = tmp_path / "nets"
    reproduce_nielsen(rows=["fc"], epochs=1, train_size=1000, out_dir=None, progress=False, log=None, runs_dir=runs)
    net = runs / "fc-seed0-epochs1-train1000"
    calls = []
    real = cnnlab.runs.train

    def counting(*args, **kwargs):
        calls.append(kwargs["out"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cnnlab.runs, "train", counting)
    metrics = json.loads((net / "metrics.json").read_text())
    for broken in ({**metrics, "interrupted": True}, {**metrics, "epochs": []}):
        (net / "metrics.json").write_text(json.dumps(broken))
        reproduce_nielsen(rows=["fc"], epochs=1, train_size=1000, out_dir=None, progress=False, log=None,
                          runs_dir=runs)
    config = json.loads((net / "config.json").read_text())
    (net / "config.json").write_text(json.dumps({**config, "optimizer": {**config["optimizer"], "lr": 0.5}}))
    reproduce_nielsen(rows=["fc"], epochs=1, train_size=1000, out_dir=None, progress=False, log=None, runs_dir=runs)
    assert calls == [net, net, net]
    # a shortened run never stands in for the book's: other settings, another directory
    reproduce_nielsen(rows=["fc"], epochs=1, train_size=900, out_dir=None, progress=False, log=None, runs_dir=runs)
    assert calls[-1] == runs / "fc-seed0-epochs1-train900"


def test_nets_saved_before_trainconfig_are_reused(tmp_path, monkeypatch):
    """A net of the table saved by an older cnnlab (a flat config.json, no "elastic" key: written
    before that option existed) still counts as the book's net; changed, it does not."""
    runs = tmp_path / "nets"
    reproduce_nielsen(rows=["fc"], epochs=1, train_size=500, out_dir=None, progress=False, log=None, runs_dir=runs)
    net = runs / "fc-seed0-epochs1-train500"
    old = {"model": "nielsen-fc", "dataset": "mnist", "epochs": 1, "batch_size": 10, "lr": 0.1, "optimizer": "sgd",
           "model_kwargs": {}, "train_size": 500, "momentum": 0.0, "weight_decay": 0.0, "l2_lambda": 0.0,
           "schedule": "constant", "augment": 0, "rotate": 0.0, "hflip": False, "scale": 0.0, "erase": 0.0,
           "label_smoothing": 0.0, "expand": False, "validation": 10000, "early_stopping": None, "seed": 0,
           "device": "cpu", "mean": 0.1307, "std": 0.3081}
    (net / "config.json").write_text(json.dumps(old))
    (net / "manifest.json").unlink()  # older runs had none
    calls = []
    real = cnnlab.runs.train
    monkeypatch.setattr(cnnlab.runs, "train", lambda *a, **k: calls.append(k["out"]) or real(*a, **k))
    reproduce_nielsen(rows=["fc"], epochs=1, train_size=500, out_dir=None, progress=False, log=None, runs_dir=runs)
    assert calls == []
    (net / "config.json").write_text(json.dumps({**old, "elastic": 34.0}))  # not the book's net
    reproduce_nielsen(rows=["fc"], epochs=1, train_size=500, out_dir=None, progress=False, log=None, runs_dir=runs)
    assert calls == [net]


def test_an_ensemble_member_trained_by_the_cli_counts_as_one_of_the_table():
    from cnnlab.cli import build_parser
    from cnnlab.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--model", "nielsen-dropout", "--expand", "--augment", "0",
                                      "--seed", "3", "--no-progress"])
    dropout = next(r for r in ROWS if r.key == "dropout")
    assert config_from_args(args) == member_config(dropout, 3)
    assert member_config(dropout, 3).epochs == recipes.get("nielsen-dropout").epochs == 40


def test_cli_reproduce_keeps_its_nets_where_told(tmp_path, capsys):
    nets = tmp_path / "nets"
    argv = ["reproduce", "nielsen", "--rows", "fc", "--epochs", "1", "--train-size", "500", "--out",
            str(tmp_path / "results"), "--runs-dir", str(nets), "--no-progress"]
    assert main(argv) == 0
    assert (nets / "fc-seed0-epochs1-train500" / "model.safetensors").exists()
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().out
    # the kept net is an ordinary run: `evaluate` measures what the table says
    ours = json.loads((tmp_path / "results" / "nielsen-short.json").read_text())["table"][0]["ours"]
    assert main(["evaluate", str(nets / "fc-seed0-epochs1-train500")]) == 0
    assert f"test accuracy {100 * ours:.2f}%" in capsys.readouterr().out
