"""`cnnlab summary MODEL` (layers, output shapes, parameter counts) and `cnnlab models` (the zoo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import models, nn, recipes, runs
from .scripting import add_json_argument, arguments, print_json


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a recipe or architecture name (see `cnnlab models`) or a run directory")
    add_json_argument(p)


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    add_json_argument(p)


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
        with arguments():  # not a directory, a recipe or an architecture: the name is wrong
            model = models.build(name)
        description = models.MODELS[models.spec(name)["name"]].description
    rows = models.summarize(model)
    runs_as = fused_blocks(model)
    shared = models.shared_weights_line(model, rows)
    modules = dict(models.summary_modules(model))
    if args.json:  # "index": a Sequential's layer number, or a module path (a model with its own forward)
        print_json({"name": name, "description": description, "input_shape": [1, 28, 28],
                    "layers": [{"index": int(idx) if idx.isdigit() else idx, "layer": layer, "output_shape": list(shape),
                                "parameters": params, "runs_as": runs_as.get(id(modules[idx]))}
                               for idx, layer, shape, params in rows],
                    "parameters": model.num_parameters(), "shared_weights": shared})
        return 0
    w = max(len(r[1]) for r in rows)
    print(f"{name}: {description}")
    iw = max(3, *(len(r[0]) for r in rows))
    print(f"{'#':>{iw}}  {'layer':<{w}}  {'output shape':<16} {'parameters':>10}  runs on the CPU as (nn.fuse)")
    print(f"{'':>{iw}}  {'input':<{w}}  {str((1, 28, 28))}")
    for idx, layer, shape, params in rows:
        print(f"{idx:>{iw}}  {layer:<{w}}  {str(shape):<16} {params:>10,}  {runs_as.get(id(modules[idx]), '')}".rstrip())
    print(f"total parameters: {model.num_parameters():,}")
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
    zoo = []
    for name, recipe in recipes.RECIPES.items():
        c = recipe.config
        zoo.append({"name": name, "model": c.model,
                    "parameters": models.build(models.spec(c.model, **c.model_kwargs)).num_parameters(),
                    "book_accuracy": recipe.book_accuracy, "description": recipe.description})
    if getattr(args, "json", False):
        print_json({"recipes": zoo, "architectures": list(models.names())})
        return 0
    print(f"{'recipe':<20} {'model':<16} {'params':>9} {'book':>7}  description")
    for r in zoo:
        book = f"{100 * r['book_accuracy']:.2f}%" if r["book_accuracy"] else ""
        print(f"{r['name']:<20} {r['model']:<16} {r['parameters']:>9,} {book:>7}  {r['description']}")
    print(f"\narchitectures (models.build(name); `cnnlab train --model` takes a recipe): {', '.join(models.names())}")
    return 0
