"""Data-parallel training and parallel tasks on 2 processes, launched with the MPI wheel's mpiexec.

Each test starts `mpiexec -n 2 python SCRIPT` (or `python -m cnnlab.cli`) with a timeout; they skip only
when mpi4py or mpiexec is missing (`pip install 'cnnlab[test]'` brings both: mpi4py and the mpich
wheel, whose mpiexec lands next to the Python executable).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'cnnlab[dist]'")
HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec: pip install mpich (or use the site's MPI)", allow_module_level=True)


def mpirun(args, timeout=150, n=2, launcher_flags=(), cwd=None):
    """(exit code, stdout + stderr, seconds) of ``mpiexec -n N python ARGS``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    proc = subprocess.run([MPIEXEC, *launcher_flags, "-n", str(n), sys.executable, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def test_two_processes_train_the_one_process_model(tmp_path):
    code, out, _ = mpirun([HERE / "mpi_equivalence.py", tmp_path / "diff.json"])
    assert code == 0, out
    results = json.loads((tmp_path / "diff.json").read_text())
    for name, r in results.items():
        tol = 1e-12 if name.startswith("float64") else 1e-5
        assert r["weights"] < tol, (name, r)
        assert r["largest weight"] > 0.1, (name, r)  # the weights are not all zero: something trained
        assert r["train loss"] < tol and r["validation loss"] < tol, (name, r)
        assert r["validation accuracy"] == 0, (name, r)  # the same hits, summed over the shards
        assert r["same on every rank"], (name, r)
    print(json.dumps(results, indent=1))


def test_cli_train_under_mpiexec_only_rank_0_writes(tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = mpirun([HERE / "mpi_writes.py", tmp_path / "writes.json", "--epochs", "1", "--train-size", "256",
                           "--validation", "500", "--batch-size", "50", "--out", out_dir, "--no-progress"])
    assert code == 0, out
    report = json.loads((tmp_path / "writes.json").read_text())
    assert report["exit codes"] == [0, 0], out
    assert report["writes"]["1"] == 0 and report["writes"]["0"] > 0, report
    assert all(out_dir in Path(p).parents for p in report["paths"]), report  # the run and its resume state
    assert out.count("test accuracy") == 1 and out.count("epoch   1/1") == 1, out  # rank 0 alone reports
    assert "data-parallel on 2 processes" in out, out
    assert "256 train / 500 validation / 10,000 test images" in out, out  # the whole sets, not rank 0's shares
    from cnnlab import runs

    run = runs.load(out_dir)
    assert run.metrics["processes"] == 2 and run.config.batch_size == 50


@pytest.mark.parametrize("mode", ["hang", "error", "kill"])
def test_a_failed_rank_stops_the_run_with_its_name(mode):
    timeout = 3
    code, out, seconds = mpirun([HERE / "mpi_fault.py", mode, timeout], timeout=90)
    assert code != 0 and "finished" not in out, out
    if mode == "hang":  # rank 0 waits TIMEOUT s, asks everyone (2 s of grace), names rank 1, aborts
        assert re.search(r"rank 0 of 2: .* waited 3s; rank 1 \(.+\) did not answer: died or hung", out), out
    elif mode == "error":
        assert "rank 1 of 2" in out and "OSError: disk full" in out, out
    else:  # mpiexec ends the job at once and names the pid; the run's first line maps pids to ranks
        pids = dict(re.findall(r"\b(\d) [^ ,()]+/(\d+)", out))  # rank -> pid
        dead = re.search(r"PID (\d+)", out)
        assert (dead and pids.get("1") == dead.group(1)) or "rank 1" in out, out
    assert seconds < 60, (seconds, out)


def test_ensemble_trains_one_member_per_process(tmp_path):
    out_dir = tmp_path / "committee"
    code, out, _ = mpirun(["-m", "cnnlab.cli", "ensemble", "default", "--seeds", "0-2", "--epochs", "1", "--train-size",
                           "200", "--validation", "500", "--out", out_dir, "--no-progress"])
    assert code == 0, out
    assert re.search(r"seed 1: test .*\(rank 1,", out) and re.search(r"seed 2: test .*\(rank 0,", out), out
    assert "ensemble of 3: test accuracy" in out and "chosen on validation" in out, out
    assert sorted(p.name for p in out_dir.iterdir()) == ["committee.json", "seed-0", "seed-1", "seed-2"]
    summary = json.loads((out_dir / "committee.json").read_text())
    assert [m["rank"] for m in summary["members"]] == [0, 1, 0]
    from cnnlab import checkpoint, runs

    member = runs.load(out_dir / "seed-1")
    assert member.config.seed == 1 and member.config.provenance is not None  # saved as runs.train saves a run
    manifest = checkpoint.read_manifest(member.dir)
    checkpoint.check_files(member.dir, manifest, [checkpoint.METRICS_CSV])


def test_an_error_on_the_processes_ends_the_job_with_the_commands_exit_code(tmp_path):
    """A data set that is not there is bad input (3, docs/scripting.md) under mpiexec too: every
    process stops with it, and mpiexec reports it."""
    code, out, _ = mpirun(["-m", "cnnlab", "train", "--model", "article", "--dataset", tmp_path / "no-such-folder",
                           "--no-progress"], timeout=60)
    assert code == 3 and "unknown data set" in out and "stopping all 2 processes" in out, out


def test_a_data_parallel_run_resumes_to_the_same_bits(tmp_path):
    """Stopped after its first epoch and resumed by 2 processes: the weights of the run that never
    stopped, bit for bit; a run of one process is refused under mpiexec -n 2, in one line."""
    from cnnlab import checkpoint, distributed, recipes, runs

    one = runs.train(recipes.get("article").replace(epochs=2, train_size=64, validation=100),
                     out=tmp_path / "one", progress=False, log=None, world=distributed.local())
    manifest = json.loads((one.dir / checkpoint.MANIFEST).read_text())
    checkpoint.write_json(one.dir / checkpoint.MANIFEST, {**manifest, "status": "interrupted"})
    code, out, _ = mpirun([HERE / "mpi_resume.py", tmp_path, one.dir])
    assert code == 0, out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "interrupted" and report["epochs"] == [2, 2], report
    assert report["exit codes"] == [3, 3], report  # a run it cannot use: bad input
    assert out.count("was trained by 1 process, not 2: resume it without mpiexec") == 1, out
    whole, cut = (checkpoint.load_weights(tmp_path / name / checkpoint.WEIGHTS) for name in ("whole", "cut"))
    assert whole.keys() == cut.keys()
    assert all(np.array_equal(whole[k], cut[k]) for k in whole), [k for k in whole if not np.array_equal(whole[k], cut[k])]
    metrics = [json.loads((tmp_path / name / checkpoint.METRICS).read_text()) for name in ("whole", "cut")]
    assert [e["validation_accuracy"] for e in metrics[0]["epochs"]] == [e["validation_accuracy"] for e in metrics[1]["epochs"]]
    assert metrics[1]["processes"] == 2


def test_experiment_under_mpiexec_trains_each_net_data_parallel_and_reports_once(tmp_path):
    """Every run of the pooling experiment trains on both processes; rank 0 alone decides what to
    reuse, writes and reports, so a second call reuses the runs and nothing is printed twice."""
    args = ["-m", "cnnlab.cli", "experiment", "pooling", "--pools", "max,l2", "--epochs", "1", "--train-size", "128",
            "--runs-dir", tmp_path / "pool", "--no-progress"]
    code, first, _ = mpirun(args)
    assert code == 0, first
    assert first.count("chosen on validation accuracy") == 1 and first.count("max pooling, seed 0") == 1, first
    from cnnlab import runs

    names = sorted(p.name for p in (tmp_path / "pool").iterdir())
    assert len(names) == 2 and all(runs.load(tmp_path / "pool" / n).metrics["processes"] == 2 for n in names), names
    stamps = {n: (tmp_path / "pool" / n / "model.safetensors").stat().st_mtime_ns for n in names}
    code, second, _ = mpirun(args)
    assert code == 0 and second.count("chosen on validation accuracy") == 1, second
    assert stamps == {n: (tmp_path / "pool" / n / "model.safetensors").stat().st_mtime_ns for n in names}  # reused
    assert [ln for ln in first.splitlines() if "pooling, seed" in ln][-1].split("(")[0] == \
        [ln for ln in second.splitlines() if "pooling, seed" in ln][-1].split("(")[0]
