"""The model zoo: the article's net, Nielsen's chapter-6 progression, cs231n's three-layer net, LeNet-5,
an AlexNet-style net and a fast default.

Every model takes (N, 1, 28, 28) images and returns (N, classes) logits, 10 unless a spec says
otherwise (softmax is applied by the loss). A model is named by a *spec*, a small JSON-able dict
{"name": ..., "kwargs": {...}}, so a saved run can be rebuilt exactly: ``build(spec)``. The zoo
holds architectures only; how each is trained is a recipe (``cnnlab.recipes``).

Nielsen's network3.py applies the activation after pooling, act(pool(conv(x)) + b); for the
monotone activations used here that equals pool(act(conv(x))), and it is 4x cheaper, so the
conv-pool blocks below are Conv -> Pool -> activation.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .errors import SettingError
from .nn import init

ACTIVATIONS = ("relu", "sigmoid", "tanh")


def _act(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


def _conv_block(conv, pool, activation):
    """[conv, pool, act] for max pooling, [conv, act, pool] for L2 and average pooling.

    Max pooling commutes with a monotone activation, so pooling first gives the same values, 4x cheaper.
    L2 and average pooling do not: they pool the activations, as the article defines them.
    """
    p = _pool(pool)
    return [conv, p, _act(activation)] if pool == "max" else [conv, _act(activation), p]


POOLS = ("max", "l2", "avg")


def _pool(kind, size=2):
    """2x2 pooling by name: 'max', 'l2' (sqrt of the sum of squares) or 'avg'."""
    if kind == "max":
        return nn.MaxPool2d(size)
    if kind == "l2":
        return nn.LPPool2d(2, size)
    if kind == "avg":
        return nn.AvgPool2d(size)
    raise ValueError(f"unknown pooling {kind!r}: expected one of {', '.join(POOLS)}")


def _nielsen_init(model):
    """network3.py's initialisation: weights N(0, 1/n_out), biases N(0, 1), softmax layer zeros.

    For a conv-pool layer n_out = out_channels * prod(kernel) / prod(pool) (network3's rule).
    """
    layers = list(model.layers)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            nxt = [m for m in layers[i + 1:i + 3] if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d))]
            pool = nxt[0] if nxt else None
            pool_size = math.prod(pool.kernel_size) if pool is not None else 1
            init.nielsen_normal_(m.weight, n_out=m.out_channels * math.prod(m.kernel_size) / pool_size)
            init.normal_(m.bias, 0.0, 1.0)
        elif isinstance(m, nn.Linear):
            if m is linears[-1]:
                init.zeros_(m.weight)
                init.zeros_(m.bias)
            else:
                init.nielsen_normal_(m.weight, n_out=m.out_features)
                init.normal_(m.bias, 0.0, 1.0)
    return model


def article(activation="relu", maps=3, pool="max", classes=10):
    """The article's final network: 28x28 -> `maps` 5x5 feature maps (24x24) -> 2x2 max-pool
    (12x12) -> fully connected to 10 outputs (softmax)."""
    return nn.Sequential(
        *_conv_block(nn.Conv2d(1, maps, 5), pool, activation),
        nn.Flatten(), nn.Linear(maps * 12 * 12, classes))


def nielsen_fc(hidden=100, activation="sigmoid", classes=10):
    """Chapter 6 baseline: 784 -> 100 sigmoid -> 10 softmax (book: 97.80%)."""
    return _nielsen_init(nn.Sequential(
        nn.Flatten(), nn.Linear(784, hidden), _act(activation), nn.Linear(hidden, classes)))


def nielsen_conv1(activation="sigmoid", pool="max", classes=10):
    """conv 20x5x5 + 2x2 max-pool, FC 100, softmax (book: 98.78%)."""
    return _nielsen_init(nn.Sequential(
        *_conv_block(nn.Conv2d(1, 20, 5), pool, activation),
        nn.Flatten(), nn.Linear(20 * 12 * 12, 100), _act(activation), nn.Linear(100, classes)))


def nielsen_conv2(activation="sigmoid", pool="max", classes=10):
    """+ a second conv-pool layer 40x20x5x5 (book: 99.06% sigmoid, 99.23% ReLU)."""
    return _nielsen_init(nn.Sequential(
        *_conv_block(nn.Conv2d(1, 20, 5), pool, activation),
        *_conv_block(nn.Conv2d(20, 40, 5), pool, activation),
        nn.Flatten(), nn.Linear(40 * 4 * 4, 100), _act(activation), nn.Linear(100, classes)))


def nielsen_dropout(hidden=1000, p=0.5, classes=10):
    """Two conv-pool ReLU layers, two FC-1000 ReLU layers, dropout 0.5 on the inputs of every
    fully connected layer, as network3's p_dropout (book: 99.60%, ensemble of 5: 99.67%)."""
    return _nielsen_init(nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(p), nn.Linear(40 * 4 * 4, hidden), nn.ReLU(),
        nn.Dropout(p), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Dropout(p), nn.Linear(hidden, classes)))


def lenet5(classes=10):
    """LeNet-5 (LeCun et al. 1998) as usually rebuilt: 6 and 16 5x5 maps with tanh and 2x2
    average-pool subsampling, then 120-84-10 (the 32x32 input is 28x28 padded by 2)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, classes))


def alexnet(c=(32, 64, 128, 128, 128), hidden=1024, p=0.5, classes=10):
    """AlexNet's layout (Krizhevsky et al. 2012: five convolutions, three fully connected layers)
    scaled to 28x28 digits: conv 5x5 -> ReLU -> local response norm -> overlapping 3x3/2 max-pool
    twice (28 -> 13 -> 6), three 3x3 convolutions, a third pool (6 -> 2), then FC `hidden` twice
    with dropout and the classifier. AlexNet's normalisation constants (size 5, alpha 1e-4, beta
    0.75, k 2); a 5x5 stride-1 first layer where ImageNet's 224x224 needed 11x11 stride 4, and
    about a quarter of its maps per layer; He-initialised weights, zero biases."""
    if len(c) != 5:
        raise ValueError(f"alexnet needs five channel counts, got {c!r}")
    c1, c2, c3, c4, c5 = c
    model = nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, 3, padding=1), nn.MaxPool2d(3, 2), nn.ReLU(),
        nn.Flatten(), nn.Dropout(p), nn.Linear(c5 * 2 * 2, hidden), nn.ReLU(),
        nn.Dropout(p), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    # He initialisation: eight layers without batch norm (and two normalisations that divide by
    # about 2^0.75) start with vanishing signals under the default initialisation
    for m in model.layers:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init.kaiming_normal_(m.weight)
            init.zeros_(m.bias)
    return model


def cs231n(filters=32, size=7, hidden=100, weight_scale=1e-3, classes=10):
    """cs231n's ThreeLayerConvNet (assignment 2): conv `size`x`size` with `filters` maps ("same"
    padding) -> ReLU -> 2x2 max-pool -> FC `hidden` ReLU -> FC -> softmax, weights drawn from
    N(0, weight_scale^2) and biases zero, as its constructor does. The pool comes before the ReLU
    here: the same values (max-pooling commutes with ReLU), 4x fewer activations."""
    if size % 2 != 1:
        raise ValueError(f"cs231n: the filter size must be odd for 'same' padding, got {size}")
    model = nn.Sequential(
        nn.Conv2d(1, filters, size, padding=(size - 1) // 2), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(filters * 14 * 14, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    for m in model.layers:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init.normal_(m.weight, 0.0, weight_scale)
            init.zeros_(m.bias)
    return model


def fast(c1=32, c2=64, hidden=256, p=0.25, classes=10):
    """The default: two 5x5 conv-pool ReLU blocks with batch norm, FC 256 with dropout.

    Trained with one-cycle SGD-Nesterov on translated digits it passes 99.3% on MNIST in a few
    minutes on two CPU cores (see the README for the measured run).
    """
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.Flatten(), nn.Dropout(p), nn.Linear(c2 * 4 * 4, hidden), nn.ReLU(),
        nn.Dropout(p), nn.Linear(hidden, classes))


def vgg_small(c1=32, c2=64, hidden=256, p=0.3, classes=10):
    """Two VGG-style blocks of two 3x3 convolutions (padding 1) each, batch norm, 2x2 max-pool,
    then FC `hidden` with dropout: 28x28 -> 14x14 -> 7x7 maps. About 4x the default's compute;
    for Fashion-MNIST, where deeper receptive fields pay off."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c1, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.Conv2d(c2, c2, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.Flatten(), nn.Dropout(p), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
        nn.Dropout(p), nn.Linear(hidden, classes))


# ------------------------------------------------------------------------------ parameter counts
# Each architecture's parameter count from its arguments, so that a spec asking for a huge model
# is refused before anything is allocated (``spec``); tests hold each against the built model.
def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _fc(n_in, n_out):
    return n_in * n_out + n_out


def _bn(c):
    return 2 * c


def _count_fast(c1, c2, hidden, classes, **_):
    return (_conv(1, c1, 5, False) + _bn(c1) + _conv(c1, c2, 5, False) + _bn(c2)
            + _fc(c2 * 4 * 4, hidden) + _fc(hidden, classes))


def _count_vgg_small(c1, c2, hidden, classes, **_):
    return (_conv(1, c1, 3, False) + _conv(c1, c1, 3, False) + _conv(c1, c2, 3, False) + _conv(c2, c2, 3, False)
            + 2 * _bn(c1) + 2 * _bn(c2) + _fc(c2 * 7 * 7, hidden) + _fc(hidden, classes))


def _count_article(maps, classes, **_):
    return _conv(1, maps, 5) + _fc(maps * 12 * 12, classes)


def _count_cs231n(filters, size, hidden, classes, **_):
    return _conv(1, filters, size) + _fc(filters * 14 * 14, hidden) + _fc(hidden, classes)


def _count_nielsen_fc(hidden, classes, **_):
    return _fc(784, hidden) + _fc(hidden, classes)


def _count_nielsen_conv1(classes, **_):
    return _conv(1, 20, 5) + _fc(20 * 12 * 12, 100) + _fc(100, classes)


def _count_nielsen_conv2(classes, **_):
    return _conv(1, 20, 5) + _conv(20, 40, 5) + _fc(40 * 4 * 4, 100) + _fc(100, classes)


def _count_nielsen_dropout(hidden, classes, **_):
    return _conv(1, 20, 5) + _conv(20, 40, 5) + _fc(40 * 4 * 4, hidden) + _fc(hidden, hidden) + _fc(hidden, classes)


def _count_lenet5(classes, **_):
    return _conv(1, 6, 5) + _conv(6, 16, 5) + _fc(16 * 5 * 5, 120) + _fc(120, 84) + _fc(84, classes)


def _count_alexnet(c, hidden, classes, **_):
    c1, c2, c3, c4, c5 = c
    return (_conv(1, c1, 5) + _conv(c1, c2, 5) + _conv(c2, c3, 3) + _conv(c3, c4, 3) + _conv(c4, c5, 3)
            + _fc(c5 * 2 * 2, hidden) + _fc(hidden, hidden) + _fc(hidden, classes))


@dataclass(frozen=True)
class Architecture:
    """A zoo entry: how to build the network, in words and in code.

    ``parameters`` gives the parameter count from the builder's arguments (all of them, defaults
    filled in) without building anything; None for an architecture without one, which then gets
    only the per-argument checks of ``spec``.
    """

    builder: Callable[..., nn.Module]
    description: str
    parameters: Callable[..., int] | None = None


MODELS: dict[str, Architecture] = {
    "fast": Architecture(fast, "2x(conv5x5-pool-BN-ReLU) 32/64 maps, FC 256, dropout", _count_fast),
    "vgg-small": Architecture(vgg_small, "VGG-style 2x(conv3x3-conv3x3-pool) 32/64 maps, BN, FC 256, dropout",
                              _count_vgg_small),
    "article": Architecture(article, "the article's net: 3 maps 5x5, 2x2 max-pool, FC -> 10", _count_article),
    "cs231n": Architecture(cs231n, "cs231n's ThreeLayerConvNet: conv 32x7x7, ReLU, 2x2 max-pool, FC 100, FC -> 10",
                           _count_cs231n),
    "nielsen-fc": Architecture(nielsen_fc, "Nielsen ch.6: FC 100 sigmoid + softmax", _count_nielsen_fc),
    "nielsen-conv1": Architecture(nielsen_conv1, "Nielsen ch.6: conv 20x5x5 + max-pool, FC 100", _count_nielsen_conv1),
    "nielsen-conv2": Architecture(nielsen_conv2, "Nielsen ch.6: two conv-pool (20, 40), FC 100", _count_nielsen_conv2),
    "nielsen-dropout": Architecture(nielsen_dropout, "Nielsen ch.6: two conv-pool, 2x FC 1000 ReLU, dropout 0.5",
                                    _count_nielsen_dropout),
    "lenet5": Architecture(lenet5, "LeNet-5: 6/16 maps 5x5, tanh, avg-pool, 120-84-10", _count_lenet5),
    "alexnet": Architecture(alexnet, "AlexNet-style: 5 conv (32/64/128/128/128, local response norm, overlapping "
                                     "3x3/2 max-pool) + FC 1024-1024-10 with dropout", _count_alexnet),
}

# ------------------------------------------------------------------------------ the rule for arguments
# A spec may come from a file (spec.json) or the command line, so ``spec`` checks its arguments
# before anything is built: each must have its default's type (a whole number where the default
# is one, a finite number for a float, a string, a list of whole numbers for a tuple); every whole
# number (a width, a count of maps or classes, a kernel size) must lie in 1..MAX_WIDTH; the
# arguments below take one of their CHOICES, or a number in their FLOAT_RANGES; and the model may
# have at most MAX_PARAMETERS parameters (400 MB of float32), counted by its formula above.
MAX_WIDTH = 65536
MAX_PARAMETERS = 100_000_000
CHOICES = {"activation": ("activation", ACTIVATIONS), "pool": ("pooling", POOLS)}
FLOAT_RANGES = {"p": (0.0, 1.0, "a probability in [0, 1)"), "weight_scale": (0.0, None, "a number above 0")}


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_argument(owner: str, key: str, value, default) -> None:
    """SettingError unless ``value`` may stand for an argument whose default is ``default``."""
    def bad(problem):
        return SettingError(owner, key, problem)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad(f"must be true or false, got {value!r}")
    elif isinstance(default, int):
        if not _whole(value):
            raise bad(f"must be a whole number, got {value!r}")
        if not 1 <= value <= MAX_WIDTH:
            raise bad(f"must be in 1..{MAX_WIDTH}, got {value}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad(f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise bad(f"must be a finite number, got {value!r}")
        if key in FLOAT_RANGES:
            lo, hi, what = FLOAT_RANGES[key]
            if not (value > lo if hi is None else lo <= value < hi):
                raise bad(f"must be {what}, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad(f"must be a string, got {value!r}")
        if key in CHOICES and value not in CHOICES[key][1]:
            noun, choices = CHOICES[key]
            raise bad(f"names an unknown {noun} {value!r}: expected one of {', '.join(choices)}")
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise bad(f"must be a list of {len(default)} whole numbers, got {value!r}")
        for v in value:
            if not _whole(v) or not 1 <= v <= MAX_WIDTH:
                raise bad(f"must hold whole numbers in 1..{MAX_WIDTH}, got {value!r}")

# Run directories saved before the zoo held architectures only name a recipe in spec.json; each
# such name stands for an architecture with these arguments.
LEGACY_NAMES: dict[str, tuple[str, dict]] = {
    "default": ("fast", {}), "best": ("fast", {}), "fashion": ("fast", {}),
    "best-vgg": ("vgg-small", {}), "best-vgg-elastic": ("vgg-small", {}), "fashion-best": ("vgg-small", {}),
    "nielsen-conv2-relu": ("nielsen-conv2", {"activation": "relu"}),
}


def names() -> list[str]:
    """The architectures of the zoo."""
    return list(MODELS)


def spec(name: str, **kwargs) -> dict:
    """A JSON-able description from which ``build`` makes the model again: {"name", "kwargs"}.

    A name from before the zoo held architectures only (``LEGACY_NAMES``) is mapped to its
    architecture and arguments.
    """
    if not isinstance(name, str):
        raise ValueError(f"a model name must be a string, got {name!r}")
    if name in LEGACY_NAMES and name not in MODELS:
        name, fixed = LEGACY_NAMES[name]
        kwargs = {**fixed, **kwargs}
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    arch = MODELS[name]
    signature = inspect.signature(arch.builder)
    try:
        bound = signature.bind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad arguments {kwargs}: {exc}") from None
    owner = f"model {name!r}"
    for key, value in kwargs.items():
        _check_argument(owner, key, value, signature.parameters[key].default)
    if arch.parameters is not None:
        bound.apply_defaults()
        count = arch.parameters(**bound.arguments)
        if count > MAX_PARAMETERS:
            asked = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise SettingError(owner, "kwargs", f"ask for {count:,} parameters, over cnnlab's limit of "
                                                f"{MAX_PARAMETERS:,} ({asked})")
    return {"name": name, "kwargs": dict(kwargs)}


def build(model_spec) -> nn.Module:
    """Build a fresh model from a name or a spec dict (weights from cnnlab's seeded generator)."""
    if isinstance(model_spec, str):
        model_spec = spec(model_spec)
    if not isinstance(model_spec, dict) or not isinstance(model_spec.get("kwargs", {}), dict):
        raise ValueError(f"a model spec is {{'name': ..., 'kwargs': {{...}}}}, got {model_spec!r}")
    model_spec = spec(model_spec.get("name"), **model_spec.get("kwargs", {}))
    name = model_spec["name"]
    try:
        return MODELS[name].builder(**model_spec["kwargs"])
    except SettingError:
        raise
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model {name!r}: bad arguments {model_spec['kwargs']}: {exc}") from exc


def summarize(model, input_shape=(1, 1, 28, 28)) -> list[tuple[str, str, tuple, int]]:
    """(index, layer, output shape, parameters) for every layer of a Sequential model, as it runs:
    a fused model (``nn.fuse``) shows its fused blocks."""
    rows = []
    x = Tensor(np.zeros(input_shape, dtype=np.float32))
    was = model.training
    model.eval()
    with no_grad():
        for i, layer in enumerate(model.layers):
            x = layer(x)
            params = sum(p.size for p in layer.parameters())
            rows.append((str(i), repr(layer).split("\n")[0], tuple(x.shape[1:]), params))
    model.train(was)
    return rows


def shared_weights_line(model, rows=None) -> str | None:
    """What weight sharing saves in the model's first convolution: its parameters against those of
    a fully connected layer from the same input to the same number of neurons (the article's
    argument), or None for a model without convolutions.

    Args:
        model: a Sequential model taking (N, 1, 28, 28) input.
        rows: its ``summarize(model)``, if already made.

    Returns:
        One sentence, e.g. "shared weights: the first conv layer's 1,728 neurons (3 feature maps of
        24x24) share 78 parameters ...", or None.
    """
    rows = summarize(model) if rows is None else rows
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
