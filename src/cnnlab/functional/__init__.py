"""Stateless differentiable operators with PyTorch's names, argument orders and defaults."""

from .conv import conv1d, conv2d, conv3d
from .fused import conv2d_act_avgpool, conv2d_maxpool_act
from .layers import (
    batch_norm,
    batch_norm_relu,
    cross_entropy,
    dropout,
    flatten,
    linear,
    local_response_norm,
    nll_loss,
)
from .ops import (
    abs,
    clamp,
    exp,
    log,
    log_softmax,
    matmul,
    relu,
    sigmoid,
    softmax,
    sqrt,
    tanh,
)
from .pool import (
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)

__all__ = [
    "abs", "avg_pool1d", "avg_pool2d", "avg_pool3d", "batch_norm", "batch_norm_relu", "clamp", "conv1d", "conv2d",
    "conv2d_act_avgpool", "conv2d_maxpool_act", "conv3d", "cross_entropy", "dropout", "exp", "flatten", "linear",
    "local_response_norm", "log", "log_softmax", "lp_pool1d", "lp_pool2d", "lp_pool3d", "matmul", "max_pool1d",
    "max_pool2d", "max_pool3d", "nll_loss", "relu", "sigmoid", "softmax", "sqrt", "tanh",
]
