"""`cnnlab evaluate [RUN...]`: each run's accuracy, plain and with test-time augmentation, and the
ensemble's (no RUN: the model that ships with cnnlab).

Where the runs held out a validation set (the same one), every number is given on it too, and the
ensemble's method (plurality vote or averaged probabilities) is chosen there, as the article chooses
pooling: on validation accuracy, never on the test set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend, checkpoint, pretrained, robustness, runs
from ..data import corruptions, load_dataset
from ..ensemble import METHODS
from ..train import Progress, eval_loader, evaluate, tta_views
from .scripting import UsageError, add_json_argument, arguments, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run directories written by `cnnlab train`; with several, the ensemble's plurality vote "
                        "is measured too; with none, the model that ships with cnnlab")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--mirror-tta", action="store_true",
                   help="test-time augmentation: average each image's probabilities with its left-right "
                        "mirror's (only for runs trained with --hflip)")
    p.add_argument("--shift-tta", action="store_true",
                   help="test-time augmentation: average each image's probabilities with those of its four "
                        "1-pixel shifts (up, down, left, right)")
    p.add_argument("--corruptions", action="store_true",
                   help="the corruption benchmark instead: each run's test accuracy under each MNIST-C-style "
                        "corruption (blur, noise, thicker and thinner strokes, low resolution, contrast, geometry, "
                        "clutter; docs/robustness.md), and their mean")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="with --corruptions: only the first N test images (default: all 10,000)")
    p.add_argument("--corruption-seed", type=int, default=0, metavar="SEED",
                   help="with --corruptions: the corruptions' seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_argument(p)


def tta_name(mirror: bool, shift: bool) -> str:
    return " and ".join(n for n, on in (("mirror", mirror), ("1-px shift", shift)) if on)


def check_runs(paths, mirror_tta: bool) -> None:
    """Every run's config first (no weights, no data), so that a mix of data sets or a run unfit for
    --mirror-tta stops the command before any evaluation."""
    first = None
    for run in paths:
        if not Path(run).is_dir():
            raise checkpoint.RunError(f"{run}: no such run directory")
        if not (Path(run) / checkpoint.CONFIG).exists():
            print(f"note: {run} has no {checkpoint.CONFIG}: taken as an MNIST run with MNIST's normalisation",
                  file=sys.stderr)
        config = runs.load_config(run)
        if mirror_tta and not config.augment.hflip:
            raise ValueError(f"--mirror-tta: {run} was not trained with --hflip, so mirrored test images "
                             f"are not its kind of input (a mirrored digit is no digit)")
        if first is None:
            first = config.dataset
        elif config.dataset != first:
            raise ValueError(f"{run} was trained on {config.dataset!r}, {paths[0]} on {first!r}: "
                             f"an ensemble needs one data set")


def run(args) -> int:
    with arguments():
        backend.normalize_device(args.device)
        if args.limit is not None and not args.corruptions:
            raise UsageError("--limit: only with --corruptions")
        if args.corruptions and (args.mirror_tta or args.shift_tta):
            raise UsageError("--corruptions: measured without test-time augmentation; drop --mirror-tta/--shift-tta")
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit: must be >= 1, got {args.limit}")
    if not args.runs:
        shipped = pretrained.load()  # checked against its recorded SHA-256 here, and as a run below
        print(f"cnnlab evaluate: the model shipped with cnnlab ({shipped.config.name}); give RUNs to measure "
              f"your own", file=sys.stderr)
        args.runs = [str(shipped.dir)]
    if args.corruptions:
        return run_corruptions(args)
    check_runs(args.runs, args.mirror_tta)
    tta = tta_name(args.mirror_tta, args.shift_tta)
    variants = ["plain"] + ([tta] if tta else [])
    dataset = n_validation = None
    splits: dict[str, tuple] = {}
    probabilities: dict[tuple[str, str], list] = {}  # (variant, split) -> one (N, classes) array per run
    document = {"tta": [n for n, on in (("mirror", args.mirror_tta), ("shift", args.shift_tta)) if on],
                "runs": [], "ensemble": None, "chosen": None}
    for path in args.runs:
        r = runs.load(path)
        config = r.config
        if dataset is None:
            dataset, n_validation = config.dataset, config.validation
            split = load_dataset(dataset, validation=n_validation)
            splits = {"test": split.test}
            if n_validation > 0:
                splits["validation"] = split.validation
        elif config.validation != n_validation:
            # Another split: the first run's validation images may be this run's training images.
            splits.pop("validation", None)
        if args.device != "cpu":
            r.model.to(args.device)
        model = runs.runnable(r.model, args.device)
        t0 = time.perf_counter()
        parts, measured = [], {}
        n_views = len(tta_views(splits["test"][0][:1], args.mirror_tta, args.shift_tta))
        # a bar on a terminal only: in a log, the per-run line says it all
        bar = Progress(n_views * len(splits), f"{path}", enabled=not args.no_progress and sys.stderr.isatty(),
                       unit="view")
        for name in ("test", "validation"):
            if name not in splits:
                continue
            images, labels = splits[name]
            per_view = []
            for i, view in enumerate(tta_views(images, args.mirror_tta, args.shift_tta)):
                res = evaluate(model, eval_loader(view, labels, config.mean, config.std, device=args.device),
                               device=args.device, return_predictions=True)
                if not np.isfinite(res["loss"]):
                    raise checkpoint.RunError(f"{path}: its weights give a {res['loss']} loss on the {name} images "
                                              f"(a run that diverged?): its answers mean nothing")
                per_view.append(res["probabilities"])
                bar.update(1, view=f"{name}:{i + 1}/{n_views}")
                if i == 0:
                    measured[name] = {"accuracy": float(res["accuracy"]), "loss": float(res["loss"]),
                                      "correct": round(res["accuracy"] * res["n"]), "n": int(res["n"])}
                    text = f"{name} {100 * res['accuracy']:.2f}%"
                    if name == "test":
                        text = (f"test accuracy {100 * res['accuracy']:.2f}% ({round(res['accuracy'] * res['n'])}/"
                                f"{res['n']}), loss {res['loss']:.4f}")
            probabilities.setdefault(("plain", name), []).append(per_view[0])
            if tta:
                probs = np.mean(per_view, axis=0)
                probabilities.setdefault((tta, name), []).append(probs)
                measured[name]["tta_accuracy"] = float((probs.argmax(1) == labels).mean())
                text += f", with {tta} averaging {100 * measured[name]['tta_accuracy']:.2f}%"
            parts.append(text)
        bar.close()
        seconds = time.perf_counter() - t0
        document["runs"].append({"run": str(path), "model": r.config.name, "dataset": dataset, **measured,
                                 "recorded_test_accuracy": r.test_accuracy, "seconds": seconds})
        line = f"{path}: {r.config.name} on {dataset}: " + "; ".join(parts) + f"; {seconds:.1f}s"
        if r.test_accuracy is not None:
            line += f"; recorded at training: {100 * r.test_accuracy:.2f}%"
        if not args.json:
            print(line)
    if len(args.runs) > 1:
        scores, chosen = ensemble_scores(variants, splits, probabilities, METHODS)
        document["ensemble"] = {"members": len(args.runs), "scores": [
            {"tta": v != "plain", "method": m, **{name: scores[(v, m, name)] for name in ("validation", "test")
                                                   if name in splits}}
            for v in variants for m in METHODS]}
        if chosen is not None:
            v, m = chosen
            document["chosen"] = {"tta": v != "plain", "method": m, "test_accuracy": scores[(v, m, "test")]}
        if not args.json:
            report_ensemble(len(args.runs), variants, splits, probabilities, METHODS)
    elif tta and "validation" in splits:
        scores = {v: float((probabilities[(v, "validation")][0].argmax(1) == splits["validation"][1]).mean())
                  for v in variants}
        chosen = max(variants, key=scores.get)  # the first of equals: plain, the simpler, wins a tie
        test = float((probabilities[(chosen, "test")][0].argmax(1) == splits["test"][1]).mean())
        document["chosen"] = {"tta": chosen != "plain", "method": None, "test_accuracy": test}
        if not args.json:
            print(f"chosen on validation: {'no averaging' if chosen == 'plain' else chosen + ' averaging'}; "
                  f"its test accuracy {100 * test:.2f}%")
    if args.json:
        print_json(document)
    return 0


def ensemble_scores(variants, splits, probabilities, methods):
    """The ensemble's accuracy for each (variant, method, split), and the (variant, method) chosen
    on validation (None without a validation set); the arguments as ``report_ensemble``'s."""
    scores = {(v, m, name): float((f(probabilities[(v, name)]) == splits[name][1]).mean())
              for v in variants for m, f in methods.items() for name in splits}
    chosen = None
    if "validation" in splits:
        # max() keeps the first of equals: the simpler choice (no averaging, the vote) wins a tie.
        chosen = max(((v, m) for v in variants for m in methods), key=lambda vm: scores[(*vm, "validation")])
    return scores, chosen


def report_ensemble(n_runs, variants, splits, probabilities, methods) -> None:
    """Print the ensemble's accuracies and the (variant, method) chosen on validation, if there is one.

    Args:
        n_runs: members of the ensemble.
        variants: "plain" and, with test-time augmentation, its name.
        splits: {"test": (images, labels), and "validation" where the runs share one}.
        probabilities: {(variant, split): one (N, classes) array per member}.
        methods: {name: rule(list of probability arrays) -> labels}, e.g. ``ensemble.METHODS``.
    """
    scores, chosen = ensemble_scores(variants, splits, probabilities, methods)
    for v in variants:
        each = "" if v == "plain" else f" (each with {v} averaging)"
        for name in ("validation", "test"):
            if name in splits:
                print(f"ensemble of {n_runs}{each}: {name} accuracy "
                      f"{100 * scores[(v, 'plurality vote', name)]:.2f}% by plurality vote, "
                      f"{100 * scores[(v, 'averaged probabilities', name)]:.2f}% by averaged probabilities")
    if chosen is not None:
        v, m = chosen
        how = m if v == "plain" else f"{m}, each with {v} averaging"
        print(f"chosen on validation: {how}; its test accuracy {100 * scores[(v, m, 'test')]:.2f}%")


def run_corruptions(args) -> int:
    """`cnnlab evaluate --corruptions RUN...`: one column per run, one row per corruption."""
    check_runs(args.runs, False)
    tables, images, labels, cache = {}, None, None, {}  # the corrupted images, made once for all runs
    for path in args.runs:
        r = runs.load(path)
        if r.config.dataset != "mnist":
            raise ValueError(f"--corruptions: {path} was trained on {r.config.dataset!r}; the benchmark corrupts "
                             f"MNIST's test digits")
        if images is None:
            images, labels = load_dataset("mnist", validation=0).test
            if args.limit is not None:
                images, labels = images[:args.limit], labels[:args.limit]
        if args.device != "cpu":
            r.model.to(args.device)
        model = runs.runnable(r.model, args.device)
        t0 = time.perf_counter()
        bar = Progress(len(corruptions.names()) + 1, f"{path}",
                       enabled=not args.no_progress and sys.stderr.isatty(), unit="set")
        table = robustness.evaluate_corruptions(model, images, labels, r.config.mean, r.config.std,
                                                seed=args.corruption_seed, device=args.device,
                                                on_result=lambda name, acc, bar=bar: bar.update(1, set=name),
                                                cache=cache)
        bar.close()
        print(f"{path}: {r.config.name}: clean {100 * table['clean']:.2f}%, mean under corruption "
              f"{100 * table['mean']:.2f}% ({table['n']} test images, corruption seed {table['seed']}; "
              f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
        tables[path] = table
    print(robustness.format_table(tables))
    return 0
