"""`cnnlab reproduce nielsen` (the book's chapter-6 table) and `cnnlab experiment pooling`."""

from __future__ import annotations

import argparse

from ..models import POOLS
from ..reproduce import ROW_KEYS, markdown_table, pooling_experiment, report_paths, reproduce_nielsen
from .scripting import UsageError


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["nielsen"], help="which published table")
    p.add_argument("--rows", default=None,
                   help=f"comma list of rows to run ({','.join(ROW_KEYS)}; default: all)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per row instead of the book's 60/40 (shorter run)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N of the 50,000 training images")
    p.add_argument("--ensemble-size", type=int, default=5, help="nets in the ensemble vote")
    p.add_argument("--seed", type=int, default=0, help="seed of the first net (ensemble members use seed+1, ...)")
    p.add_argument("--out", default="results",
                   help="folder for nielsen.json and nielsen.md (a shortened run: nielsen-short.json and .md)")
    p.add_argument("--runs-dir", default="runs/nielsen",
                   help="where each trained net is saved; a finished net there with the same settings is reused, "
                        "so a stopped reproduction resumes")
    p.add_argument("--no-save", action="store_true", help="print the table only (save and reuse no nets)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_reproduce(args) -> int:
    rows = args.rows.split(",") if args.rows else None
    unknown = [r for r in rows or () if r not in ROW_KEYS]
    if unknown:
        raise UsageError(f"--rows: unknown row {unknown[0]!r}; rows are: {', '.join(ROW_KEYS)}")
    rep = reproduce_nielsen(rows=rows, epochs=args.epochs, train_size=args.train_size,
                            ensemble_size=args.ensemble_size, seed=args.seed,
                            out_dir=None if args.no_save else args.out, progress=not args.no_progress,
                            runs_dir=None if args.no_save else args.runs_dir)
    if rep is None:
        return 0  # under mpiexec: rank 0 reports
    print()
    print(markdown_table(rep))
    if not args.no_save:
        print("saved {} and {}".format(*report_paths(args.out, rep["full_run"])))
    return 0


def add_experiment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["pooling"], help="max vs L2 vs average pooling, chosen on validation accuracy")
    p.add_argument("--model", default="nielsen-conv2-relu", choices=["article", "nielsen-conv1", "nielsen-conv2",
                                                                       "nielsen-conv2-relu"], help="the network")
    p.add_argument("--pools", default="max,l2,avg", help="poolings to compare")
    p.add_argument("--seeds", default="0", help="comma list of seeds; every pooling uses the same ones")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (one-cycle, SGD Nesterov, batch 64)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--runs-dir", default="runs/pooling",
                   help="where each run is saved; a finished run there with the same settings is reused and a "
                        "stopped one resumed")
    p.add_argument("--no-save", action="store_true", help="save and reuse no runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_experiment(args) -> int:
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {args.seeds!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None
    pools = args.pools.split(",")
    unknown = [p for p in pools if p not in POOLS]
    if unknown:
        raise UsageError(f"--pools: unknown pooling {unknown[0]!r}: expected some of {', '.join(POOLS)}")
    pooling_experiment(args.model, pools, seeds, args.epochs, lr=args.lr, train_size=args.train_size,
                       progress=not args.no_progress, runs_dir=None if args.no_save else args.runs_dir)
    return 0
