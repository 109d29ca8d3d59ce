"""`cnnlab summary MODEL` (layers, output shapes, parameter counts) and `cnnlab models` (the zoo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import models, nn, recipes, runs


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a recipe or architecture name (see `cnnlab models`) or a run directory")


def run_summary(args) -> int:
    if Path(args.model).is_dir():
        r = runs.load(args.model)
        name, model, description = r.config.name, r.model, models.describe(r.spec)
    elif args.model in recipes.RECIPES:
        name, description = args.model, recipes.describe(args.model).description
        config = recipes.get(name)
        model = models.build(models.spec(config.model, **config.model_kwargs))
    else:
        name = args.model
        model = models.build(name)
        description = models.MODELS[models.spec(name)["name"]].description
    rows = models.summarize(model)
    runs_as = fused_blocks(model)
    w = max(len(r[1]) for r in rows)
    print(f"{name}: {description}")
    iw = max(3, *(len(r[0]) for r in rows))
    print(f"{'#':>{iw}}  {'layer':<{w}}  {'output shape':<16} {'parameters':>10}  runs on the CPU as (nn.fuse)")
    print(f"{'':>{iw}}  {'input':<{w}}  {str((1, 28, 28))}")
    modules = dict(models.summary_modules(model))
    for idx, layer, shape, params in rows:
        print(f"{idx:>{iw}}  {layer:<{w}}  {str(shape):<16} {params:>10,}  {runs_as.get(id(modules[idx]), '')}".rstrip())
    print(f"total parameters: {model.num_parameters():,}")
    shared = models.shared_weights_line(model, rows)
    if shared:
        print(shared)
    return 0


def fused_blocks(model) -> dict[int, str]:
    """id(layer) -> "<fused module> #k" for each layer that ``nn.fuse`` runs as part of a fused
    module (the k-th block of the fused model), so a summary shows what actually runs."""
    out = {}
    for k, block in nn.fuse(model).named_modules():
        if isinstance(block, nn.FusedModule):
            note = f" ({block.note})" if block.note else ""
            for child in block.children():
                out[id(child)] = f"{type(block).__name__} #{k}{note}"
    return out


def run_models(args) -> int:
    print(f"{'recipe':<20} {'model':<16} {'params':>9} {'book':>7}  description")
    for name, recipe in recipes.RECIPES.items():
        c = recipe.config
        n = models.build(models.spec(c.model, **c.model_kwargs)).num_parameters()
        book = f"{100 * recipe.book_accuracy:.2f}%" if recipe.book_accuracy else ""
        print(f"{name:<20} {c.model:<16} {n:>9,} {book:>7}  {recipe.description}")
    print(f"\narchitectures (models.build(name); `cnnlab train --model` takes a recipe): {', '.join(models.names())}")
    return 0
