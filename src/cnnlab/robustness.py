"""The corruption benchmark: a model's accuracy on test digits under each MNIST-C-style corruption
(``cnnlab.data.corruptions``), their mean, and the clean accuracy.

    >>> from cnnlab import robustness, runs
    >>> r = runs.load("runs/default-mnist")
    >>> table = robustness.evaluate_corruptions(runs.runnable(r.model), *split.test, r.config.mean, r.config.std)
    >>> table["clean"], table["mean"], table["corruptions"]["thick"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .data import corruptions
from .train import eval_loader, evaluate

__all__ = ["evaluate_corruptions", "format_table"]


def evaluate_corruptions(model, images: np.ndarray, labels: np.ndarray, mean, std,
                         names: Sequence[str] | None = None, seed: int = 0, device: str = "cpu",
                         on_result: Callable[[str, float], None] | None = None,
                         cache: dict | None = None) -> dict:
    """Accuracy of ``model`` on ``images`` clean and under each corruption.

    Args:
        model: a module returning (B, 10) logits (e.g. ``runs.runnable(run.model)``).
        images: uint8 (N, 28, 28) test images; labels: (N,) integers.
        mean, std: the run's input normalisation.
        names: the corruptions to apply (default: all of ``corruptions.names()``, in that order).
        seed: the corruptions' seed (each corruption draws from its own stream of it).
        device: 'cpu' or 'cuda'.
        on_result: called with (name, accuracy) as each result comes ("clean" first), e.g. to print.
        cache: a dict kept between calls on the same images and seed (several models): the corrupted
            images by name, made once.

    Returns:
        {"clean": accuracy, "corruptions": {name: accuracy}, "mean": the corruptions' mean accuracy,
        "n": images, "seed": seed}; accuracies are fractions.
    """
    names = corruptions.names() if names is None else list(names)
    for name in names:
        if name not in corruptions.CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; available: {', '.join(corruptions.names())}")
    labels = np.asarray(labels)

    def accuracy(x: np.ndarray) -> float:
        res = evaluate(model, eval_loader(x, labels, mean, std, device=device), device=device)
        if not np.isfinite(res["loss"]):
            raise ValueError(f"the model gives a {res['loss']} loss: its answers mean nothing")
        return float(res["accuracy"])

    clean = accuracy(np.asarray(images))
    if on_result:
        on_result("clean", clean)
    results = {}
    for name in names:
        if cache is not None and name in cache:
            corrupted = cache[name]
        else:
            corrupted = corruptions.corrupt(name, images, seed=seed)
            if cache is not None:
                cache[name] = corrupted
        results[name] = accuracy(corrupted)
        if on_result:
            on_result(name, results[name])
    mean_acc = float(np.mean(list(results.values()))) if results else float("nan")
    return {"clean": clean, "corruptions": results, "mean": mean_acc, "n": int(len(labels)), "seed": int(seed)}


def format_table(tables: dict[str, dict]) -> str:
    """A plain-text table, one row per corruption and one column per model: {column name: result of
    ``evaluate_corruptions``}; rows "clean" first and "mean (corrupted)" last, accuracies in %."""
    cols = list(tables)
    rows = list(next(iter(tables.values()))["corruptions"]) if tables else []
    width = max([len("mean (corrupted)")] + [len(r) for r in rows])
    widths = [max(7, len(c)) for c in cols]
    lines = ["corruption".ljust(width) + "".join(f"  {c:>{w}}" for c, w in zip(cols, widths))]

    def row(label, values):
        return label.ljust(width) + "".join(f"  {100 * v:>{w}.2f}" for v, w in zip(values, widths))

    lines.append(row("clean", [tables[c]["clean"] for c in cols]))
    for r in rows:
        lines.append(row(r, [tables[c]["corruptions"].get(r, float("nan")) for c in cols]))
    lines.append(row("mean (corrupted)", [tables[c]["mean"] for c in cols]))
    return "\n".join(lines)
