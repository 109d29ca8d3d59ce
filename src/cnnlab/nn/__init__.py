"""Neural-network modules with PyTorch's names: layers own parameters and call functional ops."""

from . import init
from .fuse import BatchNormReLU, ConvActAvgPool, ConvMaxPoolAct, FusedModule, MaxPoolAct, fuse
from .layers import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Conv3d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    Identity,
    Linear,
    LocalResponseNorm,
    LogSoftmax,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    parameter_limit,
)
from .module import Module, Parameter, Sequential

__all__ = [
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNormReLU", "Conv1d", "Conv2d",
    "Conv3d", "ConvActAvgPool", "ConvMaxPoolAct", "CrossEntropyLoss", "Dropout", "Flatten", "FusedModule", "Identity", "LPPool1d",
    "LPPool2d", "LPPool3d", "Linear", "LocalResponseNorm", "LogSoftmax", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "MaxPoolAct", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "fuse", "init",
    "parameter_limit",
]
