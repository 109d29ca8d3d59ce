"""`cnnlab calibrate RUN`: fit a saved run's temperature on its validation set (runs trained
before cnnlab did it at the end of training)."""

from __future__ import annotations

import argparse

from .. import runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")


def run(args) -> int:
    r = runs.calibrate(args.run)
    print(f"{args.run}: temperature {r['temperature']:.3f} (fitted on {r['images']:,} validation images); "
          f"NLL {r['nll']:.4f} -> {r['nll_calibrated']:.4f}, ECE {100 * r['ece']:.2f}% -> "
          f"{100 * r['ece_calibrated']:.2f}%")
    return 0
