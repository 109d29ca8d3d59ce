"""Neural-network modules with PyTorch's names: layers own parameters and call functional ops."""

from . import init, utils
from .fuse import BatchNormReLU, ConvActAvgPool, ConvMaxPoolAct, FusedModule, MaxPoolAct, fuse
from .layers import (
    GELU,
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose2d,
    CrossEntropyLoss,
    Dropout,
    Dropout2d,
    Flatten,
    GroupNorm,
    Identity,
    LayerNorm,
    LeakyReLU,
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
from .module import Module, ModuleList, Parameter, RemovableHandle, Sequential

__all__ = [
    "AdaptiveAvgPool2d", "BatchNorm3d", "ConvTranspose2d", "Dropout2d", "GELU", "GroupNorm", "LayerNorm",
    "LeakyReLU", "AvgPool1d", "AvgPool2d", "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNormReLU", "Conv1d",
    "Conv2d", "Conv3d", "ConvActAvgPool", "ConvMaxPoolAct", "CrossEntropyLoss", "Dropout", "Flatten",
    "FusedModule", "Identity", "LPPool1d", "LPPool2d", "LPPool3d", "Linear", "LocalResponseNorm", "LogSoftmax",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxPoolAct", "Module", "ModuleList", "Parameter", "RemovableHandle",
    "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "fuse", "init", "parameter_limit", "utils",
]
