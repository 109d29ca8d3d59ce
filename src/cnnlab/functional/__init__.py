"""Stateless differentiable operators with PyTorch's names, argument orders and defaults."""

from .conv import conv1d, conv2d, conv3d, conv_transpose2d
from .fused import conv2d_act_avgpool, conv2d_maxpool_act
from .layers import (
    batch_norm,
    batch_norm_relu,
    cross_entropy,
    dropout,
    dropout2d,
    flatten,
    group_norm,
    layer_norm,
    linear,
    local_response_norm,
    nll_loss,
)
from .ops import (
    abs,
    clamp,
    exp,
    gelu,
    leaky_relu,
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
    adaptive_avg_pool2d,
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
    "abs", "adaptive_avg_pool2d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "batch_norm", "batch_norm_relu",
    "clamp", "conv1d", "conv2d", "conv2d_act_avgpool", "conv2d_maxpool_act", "conv3d", "conv_transpose2d",
    "cross_entropy", "dropout", "dropout2d", "exp", "flatten", "gelu", "group_norm", "layer_norm", "leaky_relu",
    "linear", "local_response_norm", "log", "log_softmax", "lp_pool1d", "lp_pool2d", "lp_pool3d", "matmul",
    "max_pool1d", "max_pool2d", "max_pool3d", "nll_loss", "relu", "sigmoid", "softmax", "sqrt", "tanh",
]
