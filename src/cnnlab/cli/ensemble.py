"""`cnnlab ensemble RECIPE --seeds 0-15`: train one net per seed (under mpiexec, one per process at
a time, round-robin), then report each member and the committee (vote and averaged probabilities,
chosen on validation as `cnnlab evaluate` does)."""

from __future__ import annotations

import argparse

from .. import committee, distributed, recipes
from ..ensemble import METHODS
from . import train
from .evaluate import report_ensemble
from .scripting import arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", choices=recipes.names(), help="the members' recipe (see `cnnlab models`)")
    p.add_argument("--seeds", default="0-4", help="the members' seeds: 0-15, or 1,3,5")
    train.add_config_arguments(p)
    p.add_argument("--out", default=None,
                   help="folder of the member runs, OUT/seed-S (default: runs/ensemble-<recipe>-<dataset>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_timeout_argument(p)


def run(args) -> int:
    with arguments():
        seeds = committee.parse_seeds(args.seeds)
    args.model, args.seed = args.recipe, None
    config = train.config_from_args(args)
    world = distributed.init(args.dist_timeout)
    result = committee.train_committee(config, seeds, out=args.out, world=world, progress=not args.no_progress)
    if result is None:
        return 0  # rank 0 reports
    for m in result.members:
        accuracies = ", ".join(f"{k.removesuffix('_accuracy')} {100 * v:.2f}%" for k, v in m.items()
                               if k.endswith("_accuracy"))
        print(f"seed {m['seed']}: {accuracies} (rank {m['rank']}, {m['seconds']:.0f}s)")
    splits = {name: (None, labels) for name, labels in result.labels.items()}
    probabilities = {("plain", name): probs for name, probs in result.probabilities.items()}
    report_ensemble(len(seeds), ["plain"], splits, probabilities, METHODS)
    if result.dir is not None:
        print(f"member runs saved to {result.dir}/seed-*; `cnnlab evaluate {result.dir}/seed-*` measures them again")
    return 0
