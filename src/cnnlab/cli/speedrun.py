"""`cnnlab speedrun`: the fastest recipe to 99% MNIST test accuracy, timed from a cold start."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from .. import speedrun
from ..checkpoint import check_output_path, write_json
from .scripting import UsageError

HELP = {"c1": "maps of the first (5x5) convolution", "c2": "maps of the second (3x3) convolution",
        "hidden": "units of the fully connected layer", "batch_size": "images per training step",
        "max_lr": "Adam's peak learning rate (one-cycle)", "pct_start": "fraction of the steps warming up",
        "div_factor": "the first learning rate is max-lr / this", "final_div_factor": "the last is that / this",
        "label_smoothing": "label smoothing of the cross-entropy",
        "train_size": "training images seen (60,000 is one pass; more: several)",
        "eval_batch": "images per evaluation batch"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, one timed run each")
    p.add_argument("--target", type=float, default=0.99, help="the test accuracy every seed should reach")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", default=None, help="also write the results to this file")
    g = p.add_argument_group("recipe (the defaults are the measured one)")
    for f in fields(speedrun.SpeedrunConfig):
        g.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=HELP.get(f.name, f.name.replace("_", " ")))


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be whole numbers separated by commas, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds must name at least one seed, none negative, got {text!r}")
    return seeds


def run(args) -> int:
    seeds = _seeds(args.seeds)
    if not 0 < args.target <= 1:
        raise UsageError(f"--target must be a fraction in (0, 1], got {args.target}")
    if args.json:
        check_output_path(args.json)
    config = speedrun.SpeedrunConfig(**{f.name: getattr(args, f.name) for f in fields(speedrun.SpeedrunConfig)})
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {config}", flush=True)
    data = speedrun.load_data(device=args.device)
    compile_s = speedrun.warm_up(config, data)
    print(f"kernel compilation and warm-up (excluded from the times): {compile_s:.2f} s", flush=True)
    results = []
    for seed in seeds:
        r = speedrun.run(config, data, seed)
        results.append(r)
        print(f"seed {seed}: {r.seconds:.2f} s (train {r.train_seconds:.2f} s, test {r.eval_seconds:.2f} s)  "
              f"test accuracy {100 * r.accuracy:.2f}%", flush=True)
    s = speedrun.summary(results)
    reached = all(r.accuracy >= args.target for r in results)
    print(f"median {s['median_seconds']:.2f} s over {s['runs']} seeds; lowest test accuracy "
          f"{100 * s['min_accuracy']:.2f}% ({'every seed' if reached else 'NOT every seed'} reached "
          f"{100 * args.target:.1f}%)")
    if args.json:
        write_json(args.json, {"config": config.__dict__, "compile_seconds": compile_s,
                               "results": [r.as_dict() for r in results], "summary": s})
    return 0 if reached else 1
