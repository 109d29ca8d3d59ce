"""Fusion as an explicit pass: ``fuse(model)`` returns a model whose runs of layers are fused modules.

``nn.Sequential`` applies its layers one by one, as written. Some runs of layers compute faster as
one operator that keeps each chunk of the batch in the CPU cache (functional/fused.py) or as one
compiled pass (F.batch_norm_relu); ``fuse`` finds those runs (the PATTERNS table below) and
returns a new model in which each run is replaced by one fused module. A fused module's children
are the original layer objects, so the fused model shares every parameter and buffer with the
model it came from: training one trains the other, and the original's ``state_dict`` keeps its
keys. ``models.summarize(fuse(model))`` shows the fused modules, i.e. what actually runs.

A fused module takes its fast path only where it applies (functional/fused.py: NumPy float
batches of 2-D images with the compiled kernels on; F.batch_norm_relu: NumPy floats); elsewhere
(CuPy arrays, kernels off, other dtypes) it applies its children in the order it lists them. Values
and gradients are the same bits either way, except for batch norm + ReLU, whose compiled pass
takes its sums in float64 and so agrees with the separate layers to rounding (tests/test_bn_relu.py).

Two rows reorder layers: a non-decreasing activation (ReLU, Sigmoid, Tanh) commutes with max
pooling, so [act, max-pool] runs as max-pool then act, on 4x fewer values after a 2x2 pool. The
values are the same; the gradients too, except where the activation rounds two inputs of one
window to the same float (saturated tanh or sigmoid), where the tie may go to the other element.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

from .. import functional as F
from ..autograd import Tensor
from .layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .module import Module, Sequential

# The activations the fused operators compute, by the name F.conv2d_maxpool_act takes; all are
# non-decreasing, so each commutes with max pooling.
ACTIVATIONS = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}
ACTS = tuple(ACTIVATIONS)
MAX_POOLS = (MaxPool1d, MaxPool2d, MaxPool3d)
BATCH_NORMS = (BatchNorm1d, BatchNorm2d)


def _first_line(module):
    return repr(module).split("\n")[0]


class FusedModule(Module):
    """A run of layers replaced by one module. Its children (attributes, in the order they run)
    are the original layers; its repr names them on one line.

    Where one of those layers has a forward hook (or pre-hook), registered before or after fusing,
    the fused module runs its layers one by one in the order they were written (``written()``), so
    that each hook sees its own layer's input and output; otherwise ``fused_forward`` runs."""

    note = ""  # how the run was written, where the fused module runs it in another order

    def written(self) -> list:
        """The layers in the order the model was written (None entries left out)."""
        return [m for m in self.children() if m is not None]

    def forward(self, x):
        layers = self.written()
        if any(m.has_forward_hooks() for m in layers):
            for m in layers:
                x = m(x)
            return x
        return self.fused_forward(x)

    def fused_forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        inner = " -> ".join(_first_line(m) for m in self.children())
        return f"{type(self).__name__}({inner}{'; ' + self.note if self.note else ''})"


class ConvMaxPoolAct(FusedModule):
    """Conv2d -> MaxPool2d -> activation (or none) as one operator, F.conv2d_maxpool_act: each
    chunk of the batch is convolved, pooled and activated while it is in the CPU cache.

    ``reordered``: the run was written Conv2d -> activation -> MaxPool2d; the activation runs after
    the pool (on the fast path and off it), which gives the same values (see the module docstring).
    """

    def __init__(self, conv, pool, act=None, reordered=False):
        super().__init__()
        self.conv, self.pool, self.act = conv, pool, act
        self.reordered = bool(reordered)
        if self.reordered:
            self.note = f"written with {type(act).__name__} before {type(pool).__name__}"

    def written(self):
        order = [self.conv, self.act, self.pool] if self.reordered else [self.conv, self.pool, self.act]
        return [m for m in order if m is not None]

    def fused_forward(self, x):
        if not (isinstance(x, Tensor) and F.fused.fusable(x.data)):
            y = self.pool(self.conv(x))
            return y if self.act is None else self.act(y)
        c, p = self.conv, self.pool
        return F.conv2d_maxpool_act(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups, p.kernel_size,
                                    p.stride, p.padding, None if self.act is None else ACTIVATIONS[type(self.act)])


class ConvActAvgPool(FusedModule):
    """Conv2d -> activation (or none) -> AvgPool2d as one operator, F.conv2d_act_avgpool (LeNet-5's
    convolution, tanh and subsampling): each chunk convolved, activated and pooled in cache."""

    def __init__(self, conv, act, pool):
        super().__init__()
        self.conv, self.act, self.pool = conv, act, pool

    def fused_forward(self, x):
        if not (isinstance(x, Tensor) and F.fused.fusable(x.data)):
            y = self.conv(x)
            return self.pool(y if self.act is None else self.act(y))
        c, p = self.conv, self.pool
        return F.conv2d_act_avgpool(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups, p.kernel_size,
                                    p.stride, p.padding, None if self.act is None else ACTIVATIONS[type(self.act)])


class BatchNormReLU(FusedModule):
    """BatchNorm1d/2d -> ReLU as one operator, F.batch_norm_relu: each channel's statistics,
    normalisation, scale, shift and ReLU in one compiled pass on NumPy floats, in training (batch
    statistics) and evaluation (running statistics) alike, as the batch norm's mode says."""

    def __init__(self, bn, relu):
        super().__init__()
        self.bn, self.relu = bn, relu

    def fused_forward(self, x):
        # F.batch_norm_relu is relu(batch_norm(x)), the children in order, where its compiled pass
        # does not apply (CuPy, kernels off)
        return self.bn.forward_relu(x)


class MaxPoolAct(FusedModule):
    """[activation, MaxPool1d/2d/3d] run as the pool, then the activation: the same values, and
    the activation applied to the pooled values only (4x fewer after a 2x2 pool)."""

    def __init__(self, act, pool):
        super().__init__()
        self.pool, self.act = pool, act
        self.note = f"written with {type(act).__name__} before {type(pool).__name__}"

    def written(self):
        return [self.act, self.pool]

    def fused_forward(self, x):
        return self.act(self.pool(x))


class Pattern(NamedTuple):
    """A run of layers (each entry a layer type, or a tuple of types, matched exactly) and how
    ``build(*layers)`` makes the fused module of that run, whose type is ``module``."""

    layers: tuple
    module: type
    build: object


# The patterns, tried in this order at each position of a Sequential, left to right; the first
# that matches takes its layers. Types match exactly (type(layer) is T): a subclass may compute
# something else in its forward, so it is never fused.
PATTERNS = [
    Pattern((Conv2d, MaxPool2d, ACTS), ConvMaxPoolAct, lambda conv, pool, act: ConvMaxPoolAct(conv, pool, act)),
    Pattern((Conv2d, MaxPool2d), ConvMaxPoolAct, lambda conv, pool: ConvMaxPoolAct(conv, pool)),
    # reorder: a non-decreasing activation commutes with max pooling
    Pattern((Conv2d, ACTS, MaxPool2d), ConvMaxPoolAct,
            lambda conv, act, pool: ConvMaxPoolAct(conv, pool, act, reordered=True)),
    # average pooling does not commute with the activation: this order only
    Pattern((Conv2d, ACTS, AvgPool2d), ConvActAvgPool, lambda conv, act, pool: ConvActAvgPool(conv, act, pool)),
    Pattern((Conv2d, AvgPool2d), ConvActAvgPool, lambda conv, pool: ConvActAvgPool(conv, None, pool)),
    Pattern((BATCH_NORMS, ReLU), BatchNormReLU, lambda bn, relu: BatchNormReLU(bn, relu)),
    # reorder: pool first, then the activation on fewer values
    Pattern((ACTS, MAX_POOLS), MaxPoolAct, lambda act, pool: MaxPoolAct(act, pool)),
]


def _matches(layers, types):
    return len(layers) == len(types) and all(
        type(layer) in (t if isinstance(t, tuple) else (t,)) for layer, t in zip(layers, types))


def fuse_layers(layers, patterns=None):
    """The list ``layers`` with every run that matches a pattern (PATTERNS by default) replaced by
    its fused module, scanning left to right; the other layers are the same objects."""
    patterns = PATTERNS if patterns is None else patterns
    out, i = [], 0
    while i < len(layers):
        for p in patterns:
            run = layers[i:i + len(p.layers)]
            if _matches(run, p.layers):
                out.append(p.build(*run))
                i += len(run)
                break
        else:
            out.append(layers[i])
            i += 1
    return out


def fuse(model: Module, patterns=None) -> Module:
    """A new model that computes what ``model`` computes, with its runs of layers fused.

    Args:
        model: any Module. In a ``Sequential`` (nested ones too) every run of layers that matches
            a row of ``patterns`` becomes one fused module; other modules' sub-modules are fused
            recursively. ``model`` itself is not modified.
        patterns: the rows to use, PATTERNS (all of them) by default.

    Returns:
        The fused model: new Sequentials (and shallow copies of other modules that contain fused
        parts) around the ORIGINAL layer objects, so parameters, buffers and their gradients are
        shared with ``model``, in the same order (``parameters()``, ``state_dict().values()``).
        Its values and gradients are those of ``model`` (see the module docstring for the two
        exceptions to the last bit). Switch modes (train/eval) on the model you run.
    """
    return _fuse(model, patterns, top=True)


def _fuse(module, patterns, top=False):
    if isinstance(module, FusedModule):
        return module
    if type(module) is Sequential:
        fused = Sequential(*fuse_layers([_fuse(m, patterns) for m in module.layers], patterns))
        fused.training = module.training
        return fused
    changed = {}
    for name, value in vars(module).items():
        if isinstance(value, Module):
            new = _fuse(value, patterns)
            if new is not value:
                changed[name] = new
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
            new = [_fuse(v, patterns) for v in value]
            if any(a is not b for a, b in zip(new, value)):
                changed[name] = type(value)(new)
    if not changed and not top:
        return module
    out = copy.copy(module)
    for name, value in changed.items():
        setattr(out, name, value)
    return out
