"""Named training recipes: each a ``TrainConfig`` preset, an architecture with how it is trained.

    >>> from cnnlab import recipes
    >>> recipes.get("best")                    # the default net, longer, on rotated digits too
    >>> recipes.get("default").replace(epochs=2, lr=0.01)

``cnnlab train --model NAME`` starts from ``get(NAME)``; every flag replaces one setting. The
presets are built from each other with ``replace``, so each line says how a recipe differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import Augment
from .runs import OptimizerConfig, TrainConfig

__all__ = ["RECIPES", "Recipe", "describe", "get", "names"]


@dataclass(frozen=True)
class Recipe:
    """A preset: its config, a line about it, and the book's test accuracy where it reproduces one."""

    config: TrainConfig
    description: str
    book_accuracy: float | None = None


def _preset(name: str, base: TrainConfig, **changes) -> TrainConfig:
    return base.replace(recipe=name, **changes)


# One-cycle SGD with Nesterov momentum and weight decay on 2-pixel shifted digits: the default's way.
_ONECYCLE = TrainConfig(model="fast", epochs=6, batch_size=64, schedule="onecycle", augment=Augment(max_shift=2),
                        optimizer=OptimizerConfig("nesterov", lr=0.05, momentum=0.9, weight_decay=5e-4))
# Nielsen's chapter 6: plain SGD, mini-batch 10, 60 epochs, the book's eta.
_NIELSEN = TrainConfig(model="nielsen-fc", epochs=60, batch_size=10, optimizer=OptimizerConfig("sgd", lr=0.1))
# Digits as users' pictures bring them: each of thicker or thinner strokes, blur, a lower resolution,
# other background and ink levels, and pixel noise, in a fifth of the images each, at random strengths
# (the ranges in data/augment.py; docs/robustness.md: chosen before the corruption benchmark, not on it).
_APPEARANCE = {"stroke": 0.2, "blur": 0.2, "lowres": 0.2, "contrast": 0.2, "noise": 0.2}
_VGG = _ONECYCLE.replace(model="vgg-small", epochs=15, augment=Augment(max_shift=2, max_degrees=10.0, max_scale=0.1))

RECIPES: dict[str, Recipe] = {r.config.recipe: r for r in (
    Recipe(_preset("default", _ONECYCLE, augment=Augment(max_shift=2, **_APPEARANCE)),
           "fast CNN: 2x(conv5x5-pool-BN-ReLU) 32/64 maps, FC 256, dropout; on shifted digits, some of them "
           "thicker, thinner, blurred, low-resolution, off-contrast or noisy"),
    Recipe(_preset("best", _ONECYCLE, epochs=20, augment=Augment(max_shift=2, max_degrees=10.0, **_APPEARANCE)),
           "the default net trained longer, on rotated digits too (accuracy frontier)"),
    Recipe(_preset("best-vgg", _VGG),
           "VGG-style 2x(conv3x3-conv3x3-pool) 32/64 maps on shifted, rotated and zoomed digits (accuracy frontier)"),
    Recipe(_preset("best-vgg-elastic", _VGG, elastic=20.0, elastic_sigma=4.0),
           "best-vgg with elastic distortions (alpha 20, sigma 4) added to its shifts, rotations and zooms: a "
           "different ensemble member"),
    Recipe(_preset("fashion", _ONECYCLE, epochs=30, hflip=True, dataset="fashion-mnist"),
           "the default net with a clothing recipe: mirrored and shifted images, 30 epochs"),
    Recipe(_preset("fashion-best", _ONECYCLE, model="vgg-small", epochs=30, dataset="fashion-mnist",
                   augment=Augment(max_shift=1, hflip=True, erase=0.5)),
           "VGG-style 2x(conv3x3-conv3x3-pool) 32/64 maps, FC 256, dropout, for Fashion-MNIST, with random erasing "
           "(accuracy frontier)"),
    Recipe(_preset("article", _ONECYCLE, model="article", epochs=12, batch_size=32, augment=Augment(max_shift=1),
                   optimizer=OptimizerConfig("adam", lr=0.003)),
           "the article's net: 3 maps 5x5, 2x2 max-pool, FC -> 10"),
    Recipe(_preset("cs231n", TrainConfig(), model="cs231n", epochs=5, batch_size=50,
                   optimizer=OptimizerConfig("adam", lr=1e-3)),
           "cs231n's ThreeLayerConvNet: conv 32x7x7, ReLU, 2x2 max-pool, FC 100, FC -> 10"),
    Recipe(_preset("nielsen-fc", _NIELSEN), "Nielsen ch.6: FC 100 sigmoid + softmax", 0.9780),
    Recipe(_preset("nielsen-conv1", _NIELSEN, model="nielsen-conv1"),
           "Nielsen ch.6: conv 20x5x5 + max-pool, FC 100 sigmoid", 0.9878),
    Recipe(_preset("nielsen-conv2", _NIELSEN, model="nielsen-conv2"),
           "Nielsen ch.6: two conv-pool (20, 40), FC 100, sigmoid", 0.9906),
    Recipe(_preset("nielsen-conv2-relu", _NIELSEN, model="nielsen-conv2", model_kwargs={"activation": "relu"},
                   lr=0.03, l2_lambda=0.1),
           "Nielsen ch.6: two conv-pool, FC 100, ReLU, L2 0.1", 0.9923),
    Recipe(_preset("nielsen-dropout", _NIELSEN, model="nielsen-dropout", epochs=40, lr=0.03,
                   augment=Augment(max_shift=1)),
           "Nielsen ch.6: two conv-pool, 2x FC 1000 ReLU, dropout 0.5", 0.9960),
    Recipe(_preset("lenet5", _ONECYCLE, model="lenet5", epochs=10, weight_decay=0.0, augment=Augment(max_shift=1)),
           "LeNet-5: 6/16 maps 5x5, tanh, avg-pool, 120-84-10"),
    Recipe(_preset("alexnet", _ONECYCLE, model="alexnet", epochs=12, lr=0.01),
           "AlexNet-style: 5 conv (32/64/128/128/128, local response norm, overlapping 3x3/2 max-pool) + FC "
           "1024-1024-10 with dropout"),
    # the default's way of training, not tuned for this net; its accuracy is not measured yet
    Recipe(_preset("resnet-small", _ONECYCLE, model="resnet-small"),
           "ResNet-style: conv3x3 stem, 2 residual blocks (16, 32 maps, BN), global average pool, FC"),
)}


def names() -> list[str]:
    """The recipes' names, in the order ``cnnlab models`` lists them."""
    return list(RECIPES)


def get(name: str) -> TrainConfig:
    """The preset ``name`` (a frozen TrainConfig; change it with ``.replace``)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name].config


def describe(name: str) -> Recipe:
    """The preset ``name`` with its description and the book's accuracy (None where there is none)."""
    get(name)
    return RECIPES[name]
