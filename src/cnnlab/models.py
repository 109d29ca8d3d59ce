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
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import backend, nn
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


class ResidualBlock(nn.Module):
    """He et al.'s basic block: relu(body(x) + shortcut(x)), body = conv3x3 (stride) -> BN -> ReLU
    -> conv3x3 -> BN; the shortcut is x itself, or a 1x1 convolution with batch norm where the
    block changes the number of maps or the size."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_channels))
                         if stride != 1 or in_channels != out_channels else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class ResNetSmall(nn.Module):
    """A small ResNet (He et al. 2016) for 28x28 digits: a conv3x3-BN-ReLU stem and 2x2 max-pool
    (28 -> 14), a residual block of `c1` maps, a residual block of `c2` maps with stride 2
    (14 -> 7), global 7x7 average pooling and the classifier. A Module with its own forward (the
    shortcuts), registered in the zoo with ``register`` as a user's own model would be."""

    def __init__(self, c1=16, c2=32, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.block1 = ResidualBlock(c1, c1)
        self.block2 = ResidualBlock(c1, c2, stride=2)
        self.head = nn.Sequential(nn.AvgPool2d(7), nn.Flatten(), nn.Linear(c2, classes))

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))))


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


def _count_block(cin, cout, stride):
    shortcut = _conv(cin, cout, 1, False) + _bn(cout) if stride != 1 or cin != cout else 0
    return _conv(cin, cout, 3, False) + _bn(cout) + _conv(cout, cout, 3, False) + _bn(cout) + shortcut


def _count_resnet_small(c1, c2, classes, **_):
    return (_conv(1, c1, 3, False) + _bn(c1) + _count_block(c1, c1, 1) + _count_block(c1, c2, 2)
            + _fc(c2, classes))


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

SEQUENTIAL = "sequential"  # the name of a layer spec: {"name": "sequential", "layers": [...]}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def register(name: str, builder: Callable[..., nn.Module], description: str = "",
             parameters: Callable[..., int] | None = None, replace: bool = False) -> None:
    """Make a model defined in code (a Module with its own ``forward``) a named model, as the zoo's are.

    Its runs then record ``{"name": name, "kwargs": {...}}`` in spec.json, and ``models.build``,
    ``runs.load``, ``evaluate``, ``predict`` ... rebuild it by calling ``builder(**kwargs)`` in a
    process where it is registered too: loading runs no code from the run, so a process that has
    not registered ``name`` refuses the run with one line saying so.

    Args:
        name: letters, digits, '.', '_', '-' (at most 64); not a zoo model's, nor "sequential".
        builder: a Module class, or a function returning a Module, whose arguments all have
            defaults of JSON kinds (numbers, strings, booleans, lists). Register the class itself
            to have ``runs.train(config, model=obj)`` and ``spec_of`` recognise its instances.
        description: one line for ``cnnlab summary`` and the report (default: the first line of
            the builder's docstring).
        parameters: optionally, the parameter count from the builder's arguments (all of them),
            so that a spec asking for too many is refused before anything is allocated.
        replace: allow replacing another registration of ``name`` (not a zoo model).

    Raises:
        ValueError: a bad name, a zoo model's name, or ``name`` registered to another builder.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == SEQUENTIAL:
        raise ValueError(f"register: a model name is 1-64 letters, digits, '.', '_' or '-' (and not "
                         f"{SEQUENTIAL!r}), got {name!r}")
    if not callable(builder):
        raise ValueError(f"register({name!r}): the builder must be a Module class or a function, got {builder!r}")
    if name in ZOO:
        raise ValueError(f"register({name!r}): a model of the zoo has that name; choose another")
    old = MODELS.get(name)
    if old is not None and old.builder is not builder and not replace:
        raise ValueError(f"register({name!r}): already registered to {getattr(old.builder, '__qualname__', old.builder)}"
                         f"; pass replace=True to replace it")
    own_doc = (builder.__doc__ or "").strip().split("\n")[0]  # its own, not an inherited one
    what = getattr(builder, "__qualname__", name)
    MODELS[name] = Architecture(builder, description or own_doc or f"{what} (registered)", parameters)


ENTRY_POINT_GROUP = "cnnlab.models"  # [project.entry-points."cnnlab.models"] mynet = "mypkg.nets:MyNet"


def load_entry_point(name: str) -> bool:
    """Register the model an installed package declares under ``name`` in the entry-point group
    ``cnnlab.models`` (its pyproject.toml: ``[project.entry-points."cnnlab.models"]
    mynet = "mypkg.nets:MyNet"``), importing its module only now: when a spec names a model that is
    neither the zoo's nor registered. The package was installed by the user, so importing it is
    the user's choice; a run's files never name code to import.

    Returns:
        True when such an entry point exists and ``name`` is registered now; False when none does.

    Raises:
        ValueError: the entry point fails to load, or what it names is not a builder.
    """
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        return False
    ep = found[0]
    try:
        builder = ep.load()
    except Exception as exc:  # any error of a package's import: one line naming it
        raise ValueError(f"model {name!r}: its entry point {ep.value!r} (group {ENTRY_POINT_GROUP!r}) failed "
                         f"to load: {type(exc).__name__}: {exc}") from exc
    if name not in MODELS:  # its module may have registered it itself on import
        register(name, builder)
    return True


def unregister(name: str) -> None:
    """Forget a model registered with ``register`` (the zoo's stay)."""
    if name in ZOO:
        raise ValueError(f"unregister({name!r}): a model of the zoo cannot be unregistered")
    MODELS.pop(name, None)

ZOO: tuple[str, ...] = ()  # the zoo's names, fixed below once the zoo is complete
register("resnet-small", ResNetSmall, "ResNet-style: conv3x3 stem, 2 residual blocks (16, 32 maps, BN), global "
                                      "average pool, FC", _count_resnet_small)
ZOO = tuple(MODELS)

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
    """The architectures of the zoo, then the models registered with ``register``."""
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
    if name == SEQUENTIAL:
        raise ValueError(f"model {SEQUENTIAL!r} is a layer spec: build it from {{'name': 'sequential', "
                         f"'layers': [...]}} (models.layer_spec(model) makes one), not from a name")
    if name not in MODELS and not load_entry_point(name):
        raise ValueError(f"unknown model {name!r}: not in the zoo ({', '.join(ZOO)}) nor registered; a model "
                         f"defined in code must be registered in the process that loads it: import the module "
                         f"that calls cnnlab.models.register({name!r}, builder) (cnnlab --import MODULE, or "
                         f"CNNLAB_IMPORT=MODULE), or install a package that declares {name!r} in the "
                         f"entry-point group {ENTRY_POINT_GROUP!r}")
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


def check_spec(model_spec) -> dict:
    """A model spec checked without building anything: a named model's ({"name", "kwargs"}, see
    ``spec``) or a layer spec ({"name": "sequential", "layers": [...]}, see ``layer_spec``).

    Returns:
        The spec, normalised (a copy).

    Raises:
        ValueError (SettingError for a named model's argument): one line naming what is wrong.
    """
    if not isinstance(model_spec, dict):
        raise ValueError(f"a model spec is {{'name': ..., 'kwargs': {{...}}}}, got {model_spec!r}")
    if model_spec.get("name") == SEQUENTIAL:
        extra = sorted(set(model_spec) - {"name", "layers"})
        if extra:
            raise ValueError(f"a layer spec has only \"name\" and \"layers\", not {extra[0]!r}")
        layers = model_spec.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ValueError('a layer spec\'s "layers" must be a non-empty list of {"type": ..., "args": {...}}')
        count = [0]
        for i, entry in enumerate(layers):
            _check_entry(entry, f"layers[{i}]", 0, count)
        return {"name": SEQUENTIAL, "layers": layers}
    if not isinstance(model_spec.get("kwargs", {}), dict):
        raise ValueError(f"a model spec is {{'name': ..., 'kwargs': {{...}}}}, got {model_spec!r}")
    return spec(model_spec.get("name"), **model_spec.get("kwargs", {}))


def build(model_spec) -> nn.Module:
    """Build a fresh model from a name or a spec dict (weights from cnnlab's seeded generator):
    a zoo or registered model's {"name", "kwargs"}, or a layer spec (``layer_spec``)."""
    if isinstance(model_spec, str):
        model_spec = spec(model_spec)
    model_spec = check_spec(model_spec)
    name = model_spec["name"]
    if name == SEQUENTIAL:
        budget = [0]
        model = nn.Sequential(*[_build_value(e, f"layers[{i}]", budget) for i, e in enumerate(model_spec["layers"])])
    else:
        try:
            # a registered builder may have no parameter count: its layers are counted as they are made
            with nn.parameter_limit(MAX_PARAMETERS, f"model {name!r}"):
                model = MODELS[name].builder(**model_spec["kwargs"])
        except SettingError:
            raise
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model {name!r}: bad arguments {model_spec['kwargs']}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {name!r}: its builder returned a {type(model).__name__}, not a cnnlab Module")
    _BUILT[model] = model_spec
    return model


# ------------------------------------------------------------------------------ specs of model objects
# models.build remembers the spec of each model it made (weakly: a model it forgets with it)
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MAX_LAYERS = 10000  # entries in a layer spec
MAX_DEPTH = 32  # layers within layers


def layer_types() -> dict[str, type]:
    """The layers a layer spec may name: every Module class that ``cnnlab.nn`` exports (a new
    layer exported there is one; its constructor's arguments are recorded by ``Module``), but
    for fused blocks (``nn.fuse`` makes them from layers; built from a spec they could hold any)
    and modules whose forward takes more than one input (losses: no layer of a Sequential)."""
    out = {}
    for name in nn.__all__:
        obj = getattr(nn, name)
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj is not nn.Module \
                and not issubclass(obj, nn.FusedModule) and _one_input(obj):
            out[name] = obj
    return out


def _one_input(cls) -> bool:
    required = [p for p in inspect.signature(cls.forward).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) <= 2  # self and x


def layer_spec(model) -> dict:
    """A ``nn.Sequential`` of cnnlab's layers as JSON: {"name": "sequential", "layers": [{"type":
    "Conv2d", "args": {"in_channels": 1, ...}}, ...]}, each layer's constructor arguments as
    ``init_args()`` reports them (layers inside layers, e.g. a nested Sequential, as entries).
    ``build`` makes the same architecture from it (fresh weights).

    Raises:
        ValueError: a layer that is not one of ``cnnlab.nn``'s, an argument JSON cannot hold, or
            layers changed after they were made so that the spec would build another model.
    """
    if type(model) is not nn.Sequential:
        raise ValueError(f"layer_spec: expected a cnnlab.nn.Sequential, got {type(model).__name__}")
    out = {"name": SEQUENTIAL, "layers": [_encode(m, f"layers[{i}]") for i, m in enumerate(model.layers)]}
    _check_rebuilds(model, out, "layer_spec: the spec made from the layers' constructor arguments")
    return out


def spec_of(model) -> dict:
    """The spec a run records for ``model``: the spec ``build`` made it from; for an instance of a
    class registered with ``register``, its name and ``init_args()``; for an ``nn.Sequential``
    of cnnlab's layers, its ``layer_spec``.

    Raises:
        ValueError: one line saying why the model cannot be described (e.g. a Module with its own
            forward that is not registered: register it).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected a cnnlab Module, got {type(model).__name__}")
    known = _BUILT.get(model)
    if known is not None and _same_tensors(model, known):
        return dict(known)
    for name, arch in MODELS.items():
        if isinstance(arch.builder, type) and type(model) is arch.builder:
            kwargs = {k: _encode(v, f"{name}.{k}", modules=False) for k, v in model.init_args().items()}
            out = spec(name, **kwargs)
            _check_rebuilds(model, out, f"spec_of: {name}{kwargs}")  # else the run saved would not load
            return out
    if type(model) is nn.Sequential:
        return layer_spec(model)
    cls = type(model).__name__
    raise ValueError(f"{cls} has its own forward and is not a registered model: register its class, "
                     f"cnnlab.models.register('a-name', {cls}), so that its runs can be saved and loaded")


def describe(model_spec: dict) -> str:
    """One line about the model a spec names (the zoo's or the registration's description)."""
    if model_spec.get("name") == SEQUENTIAL:
        return f"a Sequential of {len(model_spec['layers'])} layers (saved as a layer spec)"
    arch = MODELS.get(model_spec.get("name"))
    return arch.description if arch is not None else ""


def _encode(value, where: str, modules: bool = True):
    """A constructor argument as JSON: numbers, strings, booleans, null, lists, and (``modules``)
    cnnlab.nn layers as {"type", "args"}."""
    if isinstance(value, nn.Module) and modules:
        kind = type(value).__name__
        if isinstance(value, nn.FusedModule):
            raise ValueError(f"{where} is a {kind}, a fused block (nn.fuse): give the model as it was before "
                             f"nn.fuse")
        if layer_types().get(kind) is not type(value):
            raise ValueError(f"{where} is a {kind}, not a layer of cnnlab.nn: a layer spec holds only those; a "
                             f"model with its own layers or forward is registered: cnnlab.models.register(...)")
        return {"type": kind, "args": {k: _encode(v, f"{where}.{k}") for k, v in value.init_args().items()}}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}: JSON holds finite numbers only")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]", modules) for i, v in enumerate(value)]
    raise ValueError(f"{where} is a {type(value).__name__}, which a model spec (JSON) cannot hold")


def _bind_args(cls, args: dict, where: str):
    """(positional, keyword) arguments for ``cls`` from a spec entry's args by name."""
    signature = inspect.signature(cls)
    positional, keywords = [], {}
    params = signature.parameters
    for key in args:
        if key not in params:
            raise ValueError(f"{where} ({cls.__name__}): no argument {key!r}; it takes {', '.join(params)}")
    for key, p in params.items():
        if key not in args:
            continue
        if p.kind is p.VAR_POSITIONAL:
            if not isinstance(args[key], list):
                raise ValueError(f"{where} ({cls.__name__}): {key} must be a list")
            positional.extend(args[key])
        elif p.kind is p.VAR_KEYWORD:
            if not isinstance(args[key], dict) or "type" in args[key]:
                raise ValueError(f"{where} ({cls.__name__}): {key} must be an object of arguments")
            keywords.update(args[key])
        elif p.kind is p.POSITIONAL_ONLY:
            positional.append(args[key])
        else:
            keywords[key] = args[key]
    try:
        signature.bind(*positional, **keywords)
    except TypeError as exc:
        raise ValueError(f"{where} ({cls.__name__}): {exc}") from None
    return positional, keywords


def _check_entry(entry, where: str, depth: int, count: list) -> None:
    """A layer spec entry {"type", "args"} checked: a known layer, arguments it takes, values of
    JSON kinds in range, and a size bound (see below)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: layers nested more than {MAX_DEPTH} deep")
    count[0] += 1
    if count[0] > MAX_LAYERS:
        raise ValueError(f"a layer spec holds at most {MAX_LAYERS} layers")
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) \
            or not isinstance(entry.get("args", {}), dict) or set(entry) - {"type", "args"}:
        raise ValueError(f'{where} must be {{"type": a cnnlab.nn layer, "args": {{...}}}}, got {str(entry)[:80]}')
    types = layer_types()
    cls = types.get(entry["type"])
    if cls is None:
        raise ValueError(f"{where}: unknown layer type {entry['type'][:40]!r}; a layer spec takes cnnlab.nn's "
                         f"layers: {', '.join(sorted(types))}")
    args = entry.get("args", {})
    _bind_args(cls, args, where)
    # Allocating parameters before counting them would let a hostile spec exhaust memory, so every
    # layer's whole-number arguments (a kernel size three times, for 3-D) bound its size first:
    # the product bounds the parameters of a convolution, a linear layer or a normalisation.
    size = 1
    for key, value in args.items():
        for v in _leaves(value, f"{where}.{key}", depth, count):
            size *= max(1, abs(v)) ** (3 if key == "kernel_size" and isinstance(value, int) else 1)
    if size > MAX_PARAMETERS:
        raise ValueError(f"{where} ({cls.__name__}): arguments {args} may ask for more than cnnlab's limit of "
                         f"{MAX_PARAMETERS:,} parameters")


def _leaves(value, where: str, depth: int, count: list):
    """The whole numbers of an argument value (nested layers checked on the way, not counted)."""
    if depth > MAX_DEPTH:  # lists within lists too: building or printing them must not exhaust the stack
        raise ValueError(f"{where}: nested more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        _check_entry(value, where, depth + 1, count)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{where}[{i}]", depth + 1, count)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if abs(value) > MAX_WIDTH:
            raise ValueError(f"{where} must be in -{MAX_WIDTH}..{MAX_WIDTH}, got {value}")
        yield value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
    else:
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def _build_value(value, where: str, budget: list):
    """A checked layer spec value made into what the constructor takes: entries become layers."""
    if isinstance(value, list):
        return [_build_value(v, f"{where}[{i}]", budget) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    cls = layer_types()[value["type"]]
    args = {k: _build_value(v, f"{where}.{k}", budget) for k, v in value.get("args", {}).items()}
    positional, keywords = _bind_args(cls, args, where)
    try:
        layer = cls(*positional, **keywords)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({cls.__name__}): {exc}") from None
    if not any(True for _ in layer.children()):  # a leaf: its own parameters (a container's are its layers')
        budget[0] += layer.num_parameters()
        if budget[0] > MAX_PARAMETERS:
            raise ValueError(f"the layer spec asks for more than cnnlab's limit of {MAX_PARAMETERS:,} parameters "
                             f"(at {where})")
    return layer


def _same_tensors(model, model_spec) -> bool:
    """Whether ``build(model_spec)`` has ``model``'s tensors (names and shapes); cnnlab's random
    generator is left as it was."""
    generator = backend.rng()
    state = generator.bit_generator.state
    try:
        fresh = build(model_spec)
    finally:
        generator.bit_generator.state = state
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes == {k: tuple(v.shape) for k, v in fresh.state_dict().items()}


def _check_rebuilds(model, model_spec, what: str) -> None:
    if not _same_tensors(model, model_spec):
        raise ValueError(f"{what} builds other tensors than the model holds (were layers changed after they were "
                         f"made?)")


def summary_modules(model) -> list[tuple[str, nn.Module]]:
    """(name, module) for each row of ``summarize``: a Sequential's layers; for a model with its
    own forward, its sub-modules, plain Sequentials among them opened into their layers (one with
    none: the model itself, under its class's name)."""
    if type(model) is nn.Sequential or isinstance(getattr(model, "layers", None), list):
        return [(str(i), layer) for i, layer in enumerate(model.layers)]
    out = []

    def walk(prefix, module):
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if type(child) is nn.Sequential:
                walk(full, child)
            else:
                out.append((full, child))
    walk("", model)
    return out or [(type(model).__name__, model)]


def summarize(model, input_shape=(1, 1, 28, 28)) -> list[tuple[str, str, tuple, int]]:
    """(name, layer, output shape, parameters) for every layer as it runs: a Sequential's layers
    (a fused model, ``nn.fuse``, shows its fused blocks); for a model with its own forward, each
    sub-module (``summary_modules``) in the order the forward pass calls it, its output shape
    from that first call. A layer the forward pass does not call is left out."""
    x = Tensor(np.zeros(input_shape, dtype=np.float32))
    was = model.training
    model.eval()
    rows = []
    if type(model) is nn.Sequential or isinstance(getattr(model, "layers", None), list):
        with no_grad():
            for i, layer in enumerate(model.layers):
                x = layer(x)
                params = sum(p.size for p in layer.parameters())
                rows.append((str(i), repr(layer).split("\n")[0], tuple(x.shape[1:]), params))
        model.train(was)
        return rows
    seen = set()

    def tap(name, module):
        def forward(*args, **kwargs):
            out = type(module).forward(module, *args, **kwargs)
            if name not in seen:
                seen.add(name)
                text = repr(module)
                line = f"{type(module).__name__}({module.extra_repr()})" if "\n" in text else text
                rows.append((name, line, tuple(getattr(out, "shape", ())[1:]),
                             sum(p.size for p in module.parameters())))
            return out
        return forward

    tapped = summary_modules(model)
    try:
        for name, module in tapped:
            module.__dict__["forward"] = tap(name, module)  # an instance's forward: Module.__call__ calls it
        with no_grad():
            model(x)
    finally:
        for _, module in tapped:
            module.__dict__.pop("forward", None)
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
    modules = dict(summary_modules(model))
    for (name, _, shape, params) in rows:
        layer = modules[name]
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
