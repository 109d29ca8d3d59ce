"""`cnnlab summary MODEL` (layers, output shapes, parameter counts) and `cnnlab models` (the zoo)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import models, nn, recipes, runs


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a recipe or architecture name (see `cnnlab models`) or a run directory")


def run_summary(args) -> int:
    if Path(args.model).is_dir():
        r = runs.load(args.model)
        name, model, description = r.config.name, r.model, models.MODELS[r.spec["name"]].description
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
    print(f"{'#':>3}  {'layer':<{w}}  {'output shape':<16} {'parameters':>10}  runs on the CPU as (nn.fuse)")
    print(f"{'':>3}  {'input':<{w}}  {str((1, 28, 28))}")
    for (idx, layer, shape, params), module in zip(rows, model.layers):
        print(f"{idx:>3}  {layer:<{w}}  {str(shape):<16} {params:>10,}  {runs_as.get(id(module), '')}".rstrip())
    print(f"total parameters: {model.num_parameters():,}")
    shared = shared_weights_line(model, rows)
    if shared:
        print(shared)
    return 0


def fused_blocks(model) -> dict[int, str]:
    """id(layer) -> "<fused module> #k" for each layer that ``nn.fuse`` runs as part of a fused
    module (the k-th block of the fused model), so a summary shows what actually runs."""
    out = {}
    for k, block in enumerate(nn.fuse(model).layers):
        if isinstance(block, nn.FusedModule):
            note = f" ({block.note})" if block.note else ""
            for child in block.children():
                out[id(child)] = f"{type(block).__name__} #{k}{note}"
    return out


def shared_weights_line(model, rows) -> str | None:
    """What weight sharing saves in the model's first convolution: its parameters against those of
    a fully connected layer from the same input to the same number of neurons (the article's
    argument), or None for a model without convolutions."""
    for (_, _, shape, params), layer in zip(rows, model.layers):
        if isinstance(layer, nn.Conv2d):
            inputs = layer.in_channels * 28 * 28  # summarize's input
            neurons = int(np.prod(shape))
            kh, kw = layer.weight.shape[2:]
            bias = layer.bias is not None
            dense = inputs * neurons + (neurons if bias else 0)
            return (f"shared weights: the first conv layer's {neurons:,} neurons ({shape[0]} feature maps of "
                    f"{shape[1]}x{shape[2]}) share {params:,} parameters ({shape[0]} maps x ({kh}x{kw}x"
                    f"{layer.in_channels} weights{' + 1 bias' if bias else ''})); fully connected to the same "
                    f"28x28 input they would need {dense:,}, {dense / params:,.0f}x more")
    return None


def run_models(args) -> int:
    print(f"{'recipe':<20} {'model':<16} {'params':>9} {'book':>7}  description")
    for name, recipe in recipes.RECIPES.items():
        c = recipe.config
        n = models.build(models.spec(c.model, **c.model_kwargs)).num_parameters()
        book = f"{100 * recipe.book_accuracy:.2f}%" if recipe.book_accuracy else ""
        print(f"{name:<20} {c.model:<16} {n:>9,} {book:>7}  {recipe.description}")
    print(f"\narchitectures (models.build(name); `cnnlab train --model` takes a recipe): {', '.join(models.names())}")
    return 0
