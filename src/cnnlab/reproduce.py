"""Reproduce Nielsen's chapter-6 table, and choose the pooling on validation data.

``cnnlab reproduce nielsen`` trains the book's progression with the book's settings (plain SGD,
mini-batch 10, its eta and lambda and epochs, the 50k/10k/10k split, test accuracy at the epoch
of best validation accuracy, 1-pixel expanded data for the last rows, dropout, a 5-net vote) and
prints one row per network: the book's number, ours, the difference and the wall time. The
results go to results/nielsen.json and results/nielsen.md, with the machine and the date, and
record any shortening (--epochs, --train-size) so a short run is never mistaken for a full one.

``cnnlab experiment pooling`` trains the same net with max, L2 and average pooling from the same
seeds, picks the pooling with the best validation accuracy, and reports test accuracy for all.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, distributed, recipes, runs
from .data import load_dataset
from .ensemble import vote
from .models import POOLS
from .train import History, eval_loader, evaluate


@dataclass(frozen=True)
class Row:
    """One row of the book's table: its key, the network in words, how it is trained, the book's number."""

    key: str
    label: str
    config: runs.TrainConfig
    book: float

    @property
    def epochs(self) -> int:
        return self.config.epochs


_RELU = recipes.get("nielsen-conv2-relu")
# Nielsen, "Neural Networks and Deep Learning", chapter 6 (plain SGD, mini-batch 10 throughout):
# the zoo's nielsen-* recipes are the book's settings; the last rows add the expanded data.
ROWS = [
    Row("fc", "FC 100 sigmoid + softmax", recipes.get("nielsen-fc"), 0.9780),
    Row("conv1", "conv 20x5x5 + max-pool, FC 100 (sigmoid)", recipes.get("nielsen-conv1"), 0.9878),
    Row("conv2", "+ second conv-pool 40x20x5x5", recipes.get("nielsen-conv2"), 0.9906),
    Row("relu", "same, ReLU, lambda 0.1", _RELU, 0.9923),
    Row("expanded", "+ expanded data (250k)", _RELU.replace(expand=True), 0.9937),
    Row("dropout", "+ 2x FC 1000 ReLU, dropout 0.5",
        recipes.get("nielsen-dropout").replace(expand=True, max_shift=0), 0.9960),
]
ENSEMBLE_BOOK = 0.9967
ROW_KEYS = [r.key for r in ROWS] + ["ensemble"]


def _probabilities(model, config: runs.TrainConfig, test) -> np.ndarray:
    """Class probabilities of ``model`` on ``test``, normalised as it was trained."""
    loader = eval_loader(*test, config.mean, config.std)
    return evaluate(runs.runnable(model), loader, return_predictions=True)["probabilities"]


def _net_dir(runs_dir, row_key, member_seed, epochs, train_size) -> Path:
    """Where one trained net of the table is kept: shortened runs get their own names."""
    name = f"{row_key}-seed{member_seed}" + (f"-epochs{epochs}" if epochs else "") + \
        (f"-train{train_size}" if train_size else "")
    return Path(runs_dir) / name


def member_config(row: Row, member_seed: int, epochs=None, train_size=None) -> runs.TrainConfig:
    """The config that makes a net one of the table's: the book's settings for ``row``."""
    return row.config.replace(seed=member_seed, epochs=epochs or row.epochs, train_size=train_size)


def _finished_net(run_dir: Path, expected: runs.TrainConfig):
    """The Run of a net trained earlier exactly as ``expected`` says, else None.

    A run cut off part-way (fewer epochs recorded, interrupted) or trained with other settings is not
    reused: it is trained again. Runs saved before TrainConfig load through its mapping of their
    flat config.json, so they compare too.
    """
    if not (run_dir / checkpoint.METRICS).exists():
        return None
    try:
        run = runs.load(run_dir)
    except (checkpoint.RunError, OSError, ValueError):
        return None
    metrics = run.metrics
    finished = (not metrics.get("interrupted") and metrics.get("test_accuracy") is not None
                and (len(metrics.get("epochs", [])) == expected.epochs or metrics.get("stopped_early")))
    return run if finished and run.config.comparable() == expected.comparable() else None


def _unfinished_net(run_dir: Path, expected: runs.TrainConfig) -> bool:
    """Whether ``run_dir`` holds a net of ``expected``'s settings that stopped part-way and can resume."""
    try:
        manifest = checkpoint.read_manifest(run_dir)
        config = runs.load_config(run_dir) if manifest is not None else None
    except (checkpoint.RunError, OSError, ValueError):
        return False
    return (config is not None and manifest["status"] in ("started", "training", "interrupted")
            and config.comparable() == expected.comparable())


def _lead_decides(world, answer) -> bool:
    """Rank 0's ``answer`` on every process of ``world``: what is on disk is rank 0's to read (the
    others may not see its files), and every process must take the same branch."""
    if world.size == 1:
        return bool(answer)
    return bool(world.broadcast_object(bool(answer) if world.lead else None, what="reading the runs folder"))


def train_or_resume(config: runs.TrainConfig, run_dir, progress=True, log=print, world=None) -> runs.Run:
    """Train ``config`` into ``run_dir`` (None: save nothing), resuming the run there if it stopped
    part-way with the same settings. Ctrl-C stops the caller's loop too (the run resumes next time).
    Under mpiexec (``world`` of several processes) the net trains data-parallel and rank 0 writes.
    """
    world = distributed.init() if world is None else world
    if run_dir is not None and _lead_decides(world, world.lead and _unfinished_net(run_dir, config)):
        run = runs.resume(run_dir, progress=progress, log=log, world=world)
    else:
        run = runs.train(config, out=run_dir, save=run_dir is not None, progress=progress, log=log, overwrite=True,
                         world=world)
    if run.history.interrupted:
        raise KeyboardInterrupt
    return run


def reproduce_nielsen(rows=None, epochs=None, train_size=None, ensemble_size=5, seed=0, out_dir="results",
                      progress=True, log=print, runs_dir="runs/nielsen", world=None) -> dict | None:
    """Train the chapter-6 progression; return (and save) the table.

    Every trained net is saved under ``runs_dir`` (as ``cnnlab train`` saves a run: look at it with
    ``cnnlab show`` or ``report``), and a net already there, finished, with the same settings, is
    reused instead of trained again: a long reproduction can be stopped and resumed, and the
    ensemble's members can be trained separately (``cnnlab train --model nielsen-dropout --expand
    --augment 0 --seed K --out RUNS_DIR/dropout-seedK``) then collected here.

    Args:
        rows: keys to run (default all: fc conv1 conv2 relu expanded dropout ensemble).
        epochs: train every row for this many epochs instead of the book's (a shorter run).
        train_size: use only the first N training images (before expansion).
        ensemble_size: nets in the vote (the first is the 'dropout' row's net).
        out_dir: where nielsen.json / nielsen.md go (a shortened run's: nielsen-short.json / .md;
            None: save nothing).
        runs_dir: where the trained nets go (None: keep none, reuse none).
        world: the processes (default: the MPI job's, else this one): under mpiexec every net
            trains data-parallel over all of them; rank 0 alone reads and writes the folders,
            logs, and returns the table (None on the other ranks).
    """
    world = distributed.init() if world is None else world
    if not world.lead:
        progress, log, out_dir = False, None, None
    wanted = list(rows) if rows else list(ROW_KEYS)
    for k in wanted:
        if k not in ROW_KEYS:
            raise ValueError(f"unknown row {k!r}; rows are: {', '.join(ROW_KEYS)}")
    results = []
    test = load_dataset("mnist").test
    dropout_probs = []

    def train(row, member_seed):
        """(test probabilities, test accuracy, best epoch, seconds, reused) of one net: trained now or earlier."""
        expected = member_config(row, member_seed, epochs, train_size)
        run_dir = None if runs_dir is None else _net_dir(runs_dir, row.key, member_seed, epochs, train_size)
        earlier = _finished_net(run_dir, expected) if run_dir is not None and world.lead else None
        if _lead_decides(world, earlier is not None):
            if not world.lead:
                return None, None, None, None, True
            metrics = earlier.metrics
            if log:
                log(f"  [{row.key}] reusing {run_dir} (seed {member_seed}, trained {metrics.get('started', '?')}, "
                    f"{metrics['seconds']:.0f}s): test {100 * metrics['test_accuracy']:.2f}% at epoch "
                    f"{metrics['best_epoch']}")
            probs = _probabilities(earlier.model, earlier.config, test)
            return probs, metrics["test_accuracy"], metrics["best_epoch"], metrics["seconds"], True
        # one line per epoch, tagged with the row, so a multi-hour row shows where it is
        epoch_log = (lambda line: log(f"  [{row.key}] {line}")) if log else None
        t0 = time.perf_counter()
        h = train_or_resume(expected, run_dir, progress, epoch_log, world)
        if not world.lead:
            return None, None, None, None, False
        return _probabilities(h.model, h.config, test), h.history.test_accuracy, h.history.best_epoch, \
            time.perf_counter() - t0, False

    for row in ROWS:
        if row.key not in wanted and not (row.key == "dropout" and "ensemble" in wanted):
            continue
        if log:
            o = row.config.optimizer
            log(f"[{row.key}] {row.label}: {epochs or row.epochs} epochs, eta {o.lr:g}, lambda {o.l2_lambda:g}, "
                f"mini-batch {row.config.batch_size}{', expanded data' if row.config.expand else ''}")
        probs, acc, best_epoch, secs, reused = train(row, seed)
        if row.key == "dropout":
            dropout_probs.append(probs)
        if row.key in wanted and world.lead:
            results.append(_row_result(row.key, row.label, row.book, acc, secs, epochs or row.epochs, best_epoch,
                                       reused))
            if log:
                log(_format_row(results[-1]))
    if "ensemble" in wanted:
        row = next(r for r in ROWS if r.key == "dropout")
        total, any_reused = 0.0, False
        for k in range(1, ensemble_size):
            probs, _, _, secs, reused = train(row, seed + k)
            dropout_probs.append(probs)
            total, any_reused = total + secs, any_reused or reused
    if not world.lead:
        return None
    if "ensemble" in wanted:
        pred = vote(dropout_probs)
        acc = float((pred == test[1]).mean())
        results.append(_row_result("ensemble", f"vote of {ensemble_size} dropout nets", ENSEMBLE_BOOK, acc,
                                   total, epochs or row.epochs, None, any_reused))
        if log:
            log(_format_row(results[-1]))
    report = {
        "table": results, "epochs_override": epochs, "train_size": train_size, "seed": seed,
        "full_run": epochs is None and train_size is None,
        "machine": platform.node(), "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if out_dir is not None:
        json_path, md_path = report_paths(out_dir, report["full_run"])
        report = _merge_previous(report, json_path, log)
        checkpoint.write_json(json_path, report)
        _write_text(md_path, markdown_table(report))
    return report


def report_paths(out_dir, full_run: bool) -> tuple[Path, Path]:
    """Where a reproduction's table goes: nielsen.json / .md for the book's settings, and
    nielsen-short.json / .md for a shortened run, which so never replaces a full run's table."""
    stem = "nielsen" if full_run else "nielsen-short"
    return Path(out_dir) / f"{stem}.json", Path(out_dir) / f"{stem}.md"


def _row_result(key, label, book, ours, seconds, epochs, best_epoch, reused=False):
    """One table row. ``seconds`` is training time (for the ensemble: its members after the first);
    ``reused`` says a net of the row was trained by an earlier invocation and its time recorded then."""
    return {"row": key, "network": label, "book": book, "ours": ours,
            "difference_points": None if ours is None else round(100 * (ours - book), 2),
            "seconds": round(seconds, 1), "epochs": epochs, "best_epoch": best_epoch,
            "date": time.strftime("%Y-%m-%d %H:%M"), "reused": bool(reused)}


def _merge_previous(report, path: Path, log=None) -> dict:
    """Full runs of some rows add to an earlier full run's table: rows run now replace theirs,
    the others are kept (each row records its own date). Shortened runs replace the file."""
    if not report["full_run"] or not path.exists():
        return report
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        kept = [r for r in old["table"] if r["row"] not in {n["row"] for n in report["table"]}] \
            if old.get("full_run") else []
        for r in kept:
            r.setdefault("date", old.get("date"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if log:
            log(f"not merging with {path}: unreadable ({exc}); it is replaced")
        return report
    order = {k: i for i, k in enumerate(ROW_KEYS)}
    return dict(report, table=sorted(kept + report["table"], key=lambda r: order.get(r["row"], len(order))))


def _format_row(r):
    ours = "-" if r["ours"] is None else f"{100 * r['ours']:.2f}%"
    diff = "" if r["difference_points"] is None else f"{r['difference_points']:+.2f}"
    return f"{r['row']:<9} {r['network']:<42} book {100 * r['book']:.2f}%  ours {ours:>7}  {diff:>6} pts  {r['seconds']:>7.0f}s"


def markdown_table(report) -> str:
    lines = [f"Nielsen chapter 6, reproduced by `cnnlab reproduce nielsen` on {report['machine']} "
             f"({report['platform']}), {report['date']}.", ""]
    if not report["full_run"]:
        lines += [f"**Shortened run**: epochs per row = {report['epochs_override'] or 'book'}, training images = "
                  f"{report['train_size'] or 50000} (before expansion). Not comparable with the book's 60/40 "
                  f"epochs: rerun without --epochs and --train-size for the full table.", ""]
    lines += ["| row | network | epochs | book | ours | difference (points) | wall time | run on |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["table"]:
        ours = "-" if r["ours"] is None else f"{100 * r['ours']:.2f}%"
        diff = "" if r["difference_points"] is None else f"{r['difference_points']:+.2f}"
        mark = " *" if r.get("reused") else ""
        lines.append(f"| {r['row']} | {r['network']} | {r['epochs']} | {100 * r['book']:.2f}% | {ours} | {diff} | "
                     f"{r['seconds']:.0f} s{mark} | {r.get('date', report['date'])} |")
    notes = []
    if any(r["row"] == "ensemble" for r in report["table"]):
        notes.append("The ensemble's wall time is its members' after the first, which is the dropout row's net.")
    if any(r.get("reused") for r in report["table"]):
        notes.append("\\* trained by an earlier invocation and reused from the saved nets (`--runs-dir`): the "
                     "training time recorded then.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _write_text(path: Path, text: str) -> None:
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def pooling_experiment(model="nielsen-conv2-relu", pools=("max", "l2", "avg"), seeds=(0,), epochs=3,
                       batch_size=64, lr=0.01, train_size=None, progress=True, log=print, runs_dir=None,
                       world=None) -> dict | None:
    """Train recipe ``model``'s net with each pooling from the same seeds; choose by mean validation accuracy.

    Every pooling gets the same training: one-cycle SGD with Nesterov momentum 0.9 at peak ``lr``,
    no L2, no augmentation. The default learning rate is one all three train stably at: L2 pooling
    sums squares and so grows activations layer after layer (results/README.md, "pooling").

    With ``runs_dir``, each run is kept there (``<model>-<pool>-seed<S>-epochs<E>[-train<N>]``) and, like
    the reproduction's nets, reused when finished with the same settings or resumed when stopped.

    Under mpiexec (``world``: default the MPI job's processes) every run trains data-parallel over
    all of them, and rank 0 alone reads and writes ``runs_dir`` and logs.

    Returns {"runs": [...], "choice": pooling, "by_pool": {pool: {"validation", "test"}}} (None on
    every rank but 0).
    """
    world = distributed.init() if world is None else world
    if not world.lead:
        progress, log = False, None
    for p in pools:
        if p not in POOLS:
            raise ValueError(f"unknown pooling {p!r}: expected some of {', '.join(POOLS)}")
    base = recipes.get(model).replace(epochs=epochs, batch_size=batch_size, optimizer="nesterov", lr=lr, momentum=0.9,
                                      schedule="onecycle", l2_lambda=0.0, augment=runs.TrainConfig().augment,
                                      train_size=train_size)
    trained = []
    for pool in pools:
        for seed in seeds:
            t0 = time.perf_counter()
            config = base.replace(seed=seed, model_kwargs={**base.model_kwargs, "pool": pool})
            run_dir = None if runs_dir is None else Path(runs_dir) / (
                f"{model}-{pool}-seed{seed}-epochs{epochs}" + (f"-train{train_size}" if train_size else ""))
            earlier = _finished_net(run_dir, config) if run_dir is not None and world.lead else None
            if _lead_decides(world, earlier is not None):
                if not world.lead:
                    continue
                # its training time as recorded then, not the moment of reading it
                h = History(**{k: v for k, v in earlier.metrics.items() if k in History.__dataclass_fields__})
                seconds = h.seconds
            else:
                h = train_or_resume(config, run_dir, progress, log=None, world=world).history
                seconds = time.perf_counter() - t0
                if not world.lead:
                    continue
            trained.append({"pool": pool, "seed": seed, "validation": h.best_validation_accuracy,
                            "test": h.test_accuracy, "seconds": round(seconds, 1)})
            if log:
                log(f"{pool:>4} pooling, seed {seed}: validation {100 * h.best_validation_accuracy:.2f}%  "
                    f"test {100 * h.test_accuracy:.2f}%  ({trained[-1]['seconds']:.0f}s)")
    if not world.lead:
        return None
    by_pool = {p: {"validation": float(np.mean([r["validation"] for r in trained if r["pool"] == p])),
                   "test": float(np.mean([r["test"] for r in trained if r["pool"] == p]))} for p in pools}
    choice = max(pools, key=lambda p: by_pool[p]["validation"])
    if log:
        log(f"chosen on validation accuracy: {choice} pooling "
            f"(validation {100 * by_pool[choice]['validation']:.2f}%, test {100 * by_pool[choice]['test']:.2f}%)")
        for p in pools:
            log(f"  {p:>4}: validation {100 * by_pool[p]['validation']:.2f}%  test {100 * by_pool[p]['test']:.2f}%")
    return {"model": model, "epochs": epochs, "seeds": list(seeds), "runs": trained, "by_pool": by_pool,
            "choice": choice}
