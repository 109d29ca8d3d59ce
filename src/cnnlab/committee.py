"""A committee of nets trained side by side: one member per process of an MPI job, round-robin,
combined on rank 0 by ``ensemble.METHODS`` (plurality vote, averaged probabilities).

    $ mpiexec -n 4 cnnlab ensemble default --seeds 0-15     # 16 members, 4 at a time

Each member is an ordinary one-process run (``runs.train`` with ``distributed.local()``) of the
recipe with its own seed; the process that trained it also measures its class probabilities on
the validation and test sets, and sends weights and probabilities to rank 0, which alone writes
(``OUT/seed-S`` run directories, ``OUT/committee.json``) and evaluates the committee.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import backend, checkpoint, distributed, models, runs
from .data import load_dataset
from .ensemble import METHODS
from .train import eval_loader, evaluate

__all__ = ["Committee", "parse_seeds", "train_committee"]


@dataclass
class Committee:
    """What rank 0 holds after ``train_committee``.

    Attributes:
        dir: the folder of the member runs (None when nothing was saved).
        members: per member: seed, rank (that trained it), dir, seconds, test and validation accuracy.
        labels: {"test": (N,), and "validation" if there is one} the true labels.
        probabilities: {split: one (N, classes) array per member, in seed order}.
        accuracy: {method: {split: accuracy}} of the committee, for each of ``ensemble.METHODS``.
    """

    dir: Path | None
    members: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    probabilities: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)


def parse_seeds(text: str) -> list[int]:
    """ "0-15", "1,3,5" or "0-3,10" -> the list of seeds, in order, without repeats."""
    seeds = []
    for part in str(text).split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"seeds must look like 0-15 or 1,3,5, got {text!r}")
        for s in range(int(lo), int(hi if sep else lo) + 1):
            if s not in seeds:
                seeds.append(s)
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def train_committee(config: runs.TrainConfig, seeds, out=None, *, world=None, save: bool = True,
                    progress: bool = True, log=print, overwrite: bool = False) -> Committee | None:
    """Train one member per seed, spread over the processes of ``world``, and evaluate the committee.

    Args:
        config: the members' TrainConfig (its seed is replaced by each member's).
        seeds: the members' seeds.
        out: the folder for the member runs (default runs/ensemble-<recipe>-<dataset>, numbered if
            taken); each member goes to ``out/seed-S``.
        world: the processes (default ``distributed.init()``: the MPI job, or this process alone).
        save: write the member runs and committee.json (rank 0 only, always).
        progress, log: rank 0's progress bars and log lines (the other ranks are silent).
        overwrite: replace member runs already in ``out``.

    Returns:
        On rank 0 the Committee; None on the other ranks.
    """
    world = distributed.init() if world is None else world
    seeds = list(seeds)
    with world.guard("ensemble"):
        return _train_committee(config, seeds, out, world, save, progress, log if world.lead else None, overwrite)


def _train_committee(config, seeds, out, world, save, progress, log, overwrite):
    run_dir = None
    if world.lead and save:
        base = Path("runs") / f"ensemble-{config.name}-{Path(config.dataset).name}"
        run_dir = Path(out) if out else runs.unique_dir(base)
        for s in seeds:
            if (run_dir / f"seed-{s}" / checkpoint.WEIGHTS).exists() and not overwrite:
                raise ValueError(f"{run_dir / f'seed-{s}'} already holds a trained run; choose another folder")
        checkpoint.check_output_path(run_dir, folder=True)
    if log:
        log(f"cnnlab: a committee of {len(seeds)} {config.name} nets (seeds {_seed_text(seeds)}) on "
            f"{world.describe()}, one member per process at a time")
    split = load_dataset(config.dataset, validation=config.validation)
    sets = {"test": split.test, **({"validation": split.validation} if config.validation > 0 else {})}

    def member(seed):
        t0 = time.perf_counter()
        run = runs.train(config.replace(seed=seed), save=False, progress=progress and world.lead, log=None,
                         world=distributed.local())
        if run.history.interrupted:  # Ctrl-C stops the committee: no half-trained member is voted
            raise KeyboardInterrupt
        net = runs.runnable(run.model, config.device)
        probabilities = {
            name: evaluate(net, eval_loader(x, y, run.config.mean, run.config.std, device=config.device),
                           config.device, return_predictions=True)["probabilities"]
            for name, (x, y) in sets.items()}
        return {"seed": seed, "rank": world.rank, "spec": run.spec, "config": run.config.to_dict(),
                "metrics": run.metrics, "seconds": time.perf_counter() - t0, "probabilities": probabilities,
                "state": {k: backend.to_device(v.data, "cpu") for k, v in run.model.state_dict().items()}}

    def arrived(i, result, rank):
        if run_dir is not None:
            model = models.build(result["spec"])
            model.load_state_dict(result["state"])
            member_dir = run_dir / f"seed-{result['seed']}"
            member_dir.mkdir(parents=True, exist_ok=True)
            # as runs.train does: "started" first (nothing loads while the files change), the
            # manifest with their checksums last
            checkpoint.write_manifest(member_dir, "started", epochs_done=0, state=None, processes=1)
            checkpoint.save_run(member_dir, model, result["spec"], result["config"], result["metrics"])
            checkpoint.write_metrics_csv(member_dir / checkpoint.METRICS_CSV, result["metrics"].get("epochs", []))
            checkpoint.write_manifest(member_dir, "finished", [checkpoint.WEIGHTS, checkpoint.SPEC, checkpoint.CONFIG,
                                                               checkpoint.METRICS, checkpoint.METRICS_CSV],
                                      epochs_done=len(result["metrics"].get("epochs", [])), state=None, processes=1)
        if log:
            test = float((result["probabilities"]["test"].argmax(1) == sets["test"][1]).mean())
            log(f"  member seed {result['seed']} (rank {rank}): test {100 * test:.2f}%, {result['seconds']:.0f}s")

    results = distributed.map_tasks(member, seeds, world, on_result=arrived)
    if results is None:
        return None
    committee = Committee(run_dir, labels={name: y for name, (_, y) in sets.items()})
    for name in sets:
        committee.probabilities[name] = [r["probabilities"][name] for r in results]
    for r in results:
        committee.members.append({
            "seed": r["seed"], "rank": r["rank"], "seconds": r["seconds"],
            "dir": str(run_dir / f"seed-{r['seed']}") if run_dir is not None else None,
            **{f"{name}_accuracy": float((r["probabilities"][name].argmax(1) == committee.labels[name]).mean())
               for name in sets}})
    committee.accuracy = {method: {name: float((rule(committee.probabilities[name]) == committee.labels[name]).mean())
                                   for name in sets} for method, rule in METHODS.items()}
    if run_dir is not None:
        checkpoint.write_json(run_dir / "committee.json", {
            "recipe": config.name, "dataset": config.dataset, "seeds": seeds, "processes": world.size,
            "members": committee.members, "accuracy": committee.accuracy})
    return committee


def _seed_text(seeds) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))



