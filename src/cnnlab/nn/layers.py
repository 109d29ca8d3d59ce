"""Layers: modules that own parameters (or settings) and call the stateless functions."""

from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..functional.layers import check_lrn_args
from ..functional.utils import as_tuple
from . import init
from .module import Module, Parameter

_BUDGET: contextvars.ContextVar = contextvars.ContextVar("cnnlab_parameter_budget", default=None)


@contextlib.contextmanager
def parameter_limit(limit: int, what: str = "the model"):
    """Within it, the layers made allocate at most ``limit`` parameters and buffers in all: the
    layer that would go over raises ValueError before allocating (``models.build`` builds a
    spec's model so, whatever code its builder runs)."""
    token = _BUDGET.set([int(limit), int(limit), what])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _charge(shape) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget[0] -= math.prod(int(n) for n in shape)
        if budget[0] < 0:
            raise ValueError(f"{budget[2]} asks for more than cnnlab's limit of {budget[1]:,} parameters")


def _empty(*shape, fill=0.0):
    _charge(shape)
    return np.full(shape, fill, dtype=backend.DEFAULT_DTYPE)


class _ConvNd(Module):
    _d = 0
    _fn = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):
        super().__init__()
        d = self._d
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = as_tuple(kernel_size, d, "kernel_size")
        if any(k <= 0 for k in self.kernel_size):
            raise ValueError(f"{type(self).__name__}: kernel_size must be positive, got {self.kernel_size}")
        self.stride = as_tuple(stride, d, "stride")
        self.padding = padding if isinstance(padding, str) else as_tuple(padding, d, "padding")
        self.dilation = as_tuple(dilation, d, "dilation")
        self.groups = int(groups)
        self.weight = Parameter(_empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = Parameter(_empty(out_channels)) if bias else None
        init.default_(self.weight, self.bias)

    def forward(self, x):
        return type(self)._fn(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if isinstance(self.padding, str) or any(self.padding):
            s += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """1-D convolution layer: (N, in_channels, L) -> (N, out_channels, L_out)."""
    _d, _fn = 1, staticmethod(F.conv1d)


class Conv2d(_ConvNd):
    """2-D convolution layer: shared kernels sliding over local receptive fields.

    Conv2d(1, 20, 5): 20 feature maps of 5x5 kernels = 20 * (25 + 1) = 520 parameters.
    """
    _d, _fn = 2, staticmethod(F.conv2d)


class Conv3d(_ConvNd):
    """3-D convolution layer: (N, in_channels, D, H, W) -> (N, out_channels, OD, OH, OW)."""
    _d, _fn = 3, staticmethod(F.conv3d)


class ConvTranspose2d(Module):
    """2-D transposed convolution (F.conv_transpose2d), PyTorch's arguments: weight (in_channels,
    out_channels/groups, kh, kw); ConvTranspose2d(C, F, 2, stride=2) doubles the height and width."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"ConvTranspose2d: {name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        if any(k <= 0 for k in self.kernel_size):
            raise ValueError(f"ConvTranspose2d: kernel_size must be positive, got {self.kernel_size}")
        self.stride, self.padding = as_tuple(stride, 2, "stride"), as_tuple(padding, 2, "padding")
        self.output_padding, self.dilation = as_tuple(output_padding, 2, "output_padding"), as_tuple(dilation, 2,
                                                                                                     "dilation")
        self.weight = Parameter(_empty(in_channels, out_channels // groups, *self.kernel_size))
        self.bias = Parameter(_empty(out_channels)) if bias else None
        init.default_(self.weight, self.bias)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}"
        if any(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + (", bias=False" if self.bias is None else "")


class _PoolNd(Module):
    _d = 0
    _fn = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = as_tuple(kernel_size, self._d, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, self._d, "stride")
        self.padding = as_tuple(padding, self._d, "padding")

    def forward(self, x):
        return type(self)._fn(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        return s + (f", padding={self.padding}" if any(self.padding) else "")


class MaxPool1d(_PoolNd):
    _d, _fn = 1, staticmethod(F.max_pool1d)


class MaxPool2d(_PoolNd):
    """2x2 max-pooling turns each 24x24 feature map into 12x12, keeping the strongest response."""
    _d, _fn = 2, staticmethod(F.max_pool2d)


class MaxPool3d(_PoolNd):
    _d, _fn = 3, staticmethod(F.max_pool3d)


class AvgPool1d(_PoolNd):
    _d, _fn = 1, staticmethod(F.avg_pool1d)


class AvgPool2d(_PoolNd):
    _d, _fn = 2, staticmethod(F.avg_pool2d)


class AvgPool3d(_PoolNd):
    _d, _fn = 3, staticmethod(F.avg_pool3d)


class _LPPoolNd(Module):
    _d = 0
    _fn = None

    def __init__(self, norm_type, kernel_size, stride=None):
        super().__init__()
        self.norm_type = norm_type
        self.kernel_size = as_tuple(kernel_size, self._d, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, self._d, "stride")

    def forward(self, x):
        return type(self)._fn(x, self.norm_type, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}"


class LPPool1d(_LPPoolNd):
    _d, _fn = 1, staticmethod(F.lp_pool1d)


class LPPool2d(_LPPoolNd):
    """LPPool2d(2, 2): the article's L2 pooling, sqrt of the sum of squares of each 2x2 window."""
    _d, _fn = 2, staticmethod(F.lp_pool2d)


class LPPool3d(_LPPoolNd):
    _d, _fn = 3, staticmethod(F.lp_pool3d)


class Linear(Module):
    """Fully connected layer. Linear(784, 30) has 784*30 + 30 = 23,550 parameters."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"Linear: {name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(_empty(out_features, in_features))
        self.bias = Parameter(_empty(out_features)) if bias else None
        init.default_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Dropout(Module):
    """Inverted dropout with probability p, active only in training mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout2d(Module):
    """Channel dropout with probability p (whole feature maps), active only in training mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout2d: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, whatever the input's (F.adaptive_avg_pool2d);
    AdaptiveAvgPool2d(1) is global average pooling."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size if output_size is None or isinstance(output_size, (int, np.integer)) \
            else tuple(output_size)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class _BatchNorm(Module):
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.weight = Parameter(_empty(num_features, fill=1.0)) if affine else None
        self.bias = Parameter(_empty(num_features)) if affine else None
        if track_running_stats:
            self.running_mean = Tensor(_empty(num_features))
            self.running_var = Tensor(_empty(num_features, fill=1.0))
        else:
            self.running_mean = self.running_var = None

    def forward(self, x):
        return self._apply(F.batch_norm, x)

    def forward_relu(self, x):
        """relu(self(x)) as one operator (F.batch_norm_relu); nn.fuse's BatchNormReLU runs it."""
        return self._apply(F.batch_norm_relu, x)

    def _apply(self, fn, x):
        if x.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(map(str, self._ndims))}-D input, "
                             f"got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input has {x.shape[1]} channels "
                             f"(shape {x.shape})")
        training = self.training or self.running_mean is None
        return fn(x, self.running_mean, self.running_var, self.weight, self.bias, training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    _ndims = (5,)


class LayerNorm(Module):
    """Normalises each sample over its last dimensions, ``normalized_shape`` (F.layer_norm); with
    ``elementwise_affine`` a weight (ones) and, with ``bias``, a bias (zeros) of that shape."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or a tuple of them, "
                             f"got {normalized_shape!r}")
        self.normalized_shape, self.eps = tuple(int(s) for s in shape), eps
        self.elementwise_affine = bool(elementwise_affine)
        affine = self.elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=backend.DEFAULT_DTYPE)) if affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=backend.DEFAULT_DTYPE)) \
            if affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalises each sample's groups of channels (F.group_norm); with ``affine`` a weight (ones) and
    bias (zeros) per channel."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        for name, v in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"GroupNorm: {name} must be a positive int, got {v!r}")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = int(num_groups), int(num_channels), eps, affine
        self.weight = Parameter(np.ones(num_channels, dtype=backend.DEFAULT_DTYPE)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype=backend.DEFAULT_DTYPE)) if affine else None

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}): expected input (N, "
                             f"{self.num_channels}, ...), got shape {x.shape}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LocalResponseNorm(Module):
    """AlexNet's normalisation across neighbouring feature maps (see F.local_response_norm)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        check_lrn_args("LocalResponseNorm", size, alpha, beta, k)
        self.size, self.alpha, self.beta, self.k = int(size), alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise, elementwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """x * Phi(x), elementwise; approximate='tanh' for the tanh form."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    """tanh(x), elementwise."""

    def forward(self, x):
        return F.tanh(x)


class Identity(Module):
    def forward(self, x):
        return x


def _dim(layer: str, name: str, value) -> int:
    """A dimension argument checked when the layer is made, not at its first forward pass."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{layer}: {name} must be an int, got {value!r}")
    return int(value)


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = _dim("Softmax", "dim", dim)

    def forward(self, x):
        return F.softmax(x, self.dim)


class LogSoftmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = _dim("LogSoftmax", "dim", dim)

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = _dim("Flatten", "start_dim", start_dim), _dim("Flatten", "end_dim", end_dim)

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class CrossEntropyLoss(Module):
    def __init__(self, label_smoothing=0.0, reduction="mean"):
        super().__init__()
        self.label_smoothing, self.reduction = label_smoothing, reduction

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, self.label_smoothing, self.reduction)
