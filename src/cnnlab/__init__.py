"""cnnlab: convolutional neural networks from first principles, with a NumPy/CuPy autograd."""

from . import backend, data, functional, models, nn, optim, pretrained, recipes, runs  # noqa: E402  # noqa: E402
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, ones, randn, tensor, zeros
from .backend import manual_seed
from .functional.ops import cat, stack
from .numerical import GradcheckError, gradcheck  # noqa: E402
from .runs import TrainConfig  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Tensor", "TrainConfig", "backend", "cat", "data", "enable_grad", "functional",
    "gradcheck", "is_grad_enabled", "manual_seed", "models", "nn", "no_grad", "ones", "optim", "pretrained", "randn",
    "recipes", "runs", "stack", "tensor", "zeros",
]
