"""`cnnlab example {seq1d,vol3d}`: convolution beyond images, on synthetic 1-D and 3-D data."""

from __future__ import annotations

import argparse

from ..examples import EXAMPLES, run_example
from .scripting import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", choices=list(EXAMPLES), help="seq1d: a 1-D CNN on synthetic signals; "
                   "vol3d: a 3-D CNN on small synthetic volumes")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the example's own)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and shuffling")


def run(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    run_example(args.which, args.epochs, args.seed)
    return 0
