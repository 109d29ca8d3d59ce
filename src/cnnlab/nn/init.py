"""Weight initialisers. Each fills a tensor in place from cnnlab's seeded generator and returns it.

fan_in/fan_out of a weight of shape (out, in, *kernel) are in*prod(kernel) and out*prod(kernel).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend


def _fill(tensor, values):
    values = np.asarray(values, dtype=np.dtype(tensor.dtype))
    tensor.data[...] = backend.to_device(values, tensor.device)
    return tensor


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel) or (out, in)."""
    if len(shape) < 2:
        raise ValueError(f"fan_in/fan_out need a weight of at least 2 dimensions, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform_(tensor, a=0.0, b=1.0):
    return _fill(tensor, backend.rng().uniform(a, b, tensor.shape))


def normal_(tensor, mean=0.0, std=1.0):
    return _fill(tensor, backend.rng().normal(mean, std, tensor.shape))


def zeros_(tensor):
    return _fill(tensor, np.zeros(tensor.shape))


def ones_(tensor):
    return _fill(tensor, np.ones(tensor.shape))


def constant_(tensor, value):
    return _fill(tensor, np.full(tensor.shape, value))


def _gain(nonlinearity, a=0.0):
    if nonlinearity in ("linear", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a * a))
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="relu"):
    """He et al. (2015): U(-b, b), b = gain * sqrt(3 / fan)."""
    fan = fans(tensor.shape)[0 if mode == "fan_in" else 1]
    bound = _gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="relu"):
    """He et al. (2015): N(0, std^2), std = gain / sqrt(fan)."""
    fan = fans(tensor.shape)[0 if mode == "fan_in" else 1]
    return normal_(tensor, 0.0, _gain(nonlinearity, a) / math.sqrt(fan))


def xavier_uniform_(tensor, gain=1.0):
    """Glorot and Bengio (2010): U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fi, fo = fans(tensor.shape)
    bound = gain * math.sqrt(6.0 / (fi + fo))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot and Bengio (2010): N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fi, fo = fans(tensor.shape)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fi + fo)))


def nielsen_normal_(tensor, n_out=None):
    """Nielsen's network3.py: N(0, 1/n_out) weights.

    For a conv layer followed by pooling, network3 takes n_out = out_channels * prod(kernel) /
    prod(pool); pass that as ``n_out``. By default n_out is the weight's fan_out.
    """
    n = n_out if n_out is not None else fans(tensor.shape)[1] if tensor.ndim > 1 else tensor.shape[0]
    return normal_(tensor, 0.0, math.sqrt(1.0 / n))


def default_(weight, bias=None):
    """PyTorch's default for Linear and Conv layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both."""
    bound = 1.0 / math.sqrt(fans(weight.shape)[0])
    uniform_(weight, -bound, bound)
    if bias is not None:
        uniform_(bias, -bound, bound)
