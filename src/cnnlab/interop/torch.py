"""PyTorch both ways: ``to_torch(model)``, ``from_torch(module)``, ``load_torch_state_dict``.

cnnlab's layers take PyTorch's names and arguments (``cnnlab.nn.Conv2d(1, 20, 5)`` is
``torch.nn.Conv2d(1, 20, 5)``) and their tensors PyTorch's state-dict names, so one rule maps a
layer each way, with no table to keep: a layer becomes the ``torch.nn`` class of the same name,
made with the arguments it was made with (``Module.init_args``); a ``torch.nn`` module becomes the
cnnlab layer of the same name, its arguments read from the torch module's attributes of those
names. A torch argument cnnlab's layer does not have (``ceil_mode``, ``count_include_pad=False``,
``padding_mode``, a max-pool's ``dilation`` ...) must be at its default, or the module is refused
in one line naming it; so a layer added to ``cnnlab.nn`` under PyTorch's name maps as it is.

The definitions agree where the names do (each layer is tested against PyTorch in tests/nn and
tests/functional): L2 pooling is ``LPPool2d(2, k)`` in both, sqrt of the sum of squares of each
window; average pooling counts padding in the mean in both (PyTorch's default). A model with its
own ``forward`` has no generic PyTorch counterpart: only Sequentials (nested ones too) map.

torch is imported inside the functions: importing this module does not need it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np

from .. import models, nn
from ..checkpoint import atomic_write, check_output_path

# torch arguments that change nothing cnnlab computes
_IGNORED = {"inplace", "device", "dtype"}


def _torch():
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ImportError("cnnlab.interop needs PyTorch: pip install 'cnnlab[torch]' (or torch)") from None
    return torch


# ------------------------------------------------------------------------------ cnnlab -> torch
def to_torch(model):
    """The ``torch.nn`` module that computes what ``model`` computes, with its weights copied.

    Args:
        model: a cnnlab ``nn.Sequential`` (nested ones too) of layers PyTorch has under the same
            name: Conv1d/2d/3d, Linear, BatchNorm1d/2d, Max/Avg/LPPool1d/2d/3d, LocalResponseNorm,
            ReLU, Sigmoid, Tanh, Dropout, Flatten, Identity, Softmax, LogSoftmax, ...

    Returns:
        A ``torch.nn.Sequential`` in the same mode (train/eval) and float dtype, whose
        ``state_dict()`` has the model's keys plus batch norm's ``num_batches_tracked``.

    Raises:
        ValueError: one line naming the first layer with no PyTorch counterpart (a model with
            its own forward, a fused model, a layer PyTorch lacks).
    """
    torch = _torch()
    module = _to_torch_module(model, "model", torch)
    state = {k: torch.from_numpy(np.ascontiguousarray(t.numpy())) for k, t in model.state_dict().items()}
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(dtypes.pop())
    missing, unexpected = module.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.endswith("num_batches_tracked")]
    if left or unexpected:  # the same names by construction; a layer that keeps others is refused
        raise ValueError(f"to_torch: PyTorch's module names its tensors otherwise (missing {left}, "
                         f"unexpected {list(unexpected)})")
    module.train(model.training)
    return module


def _to_torch_module(m, where, torch):
    kind = type(m).__name__
    if type(m) is nn.Sequential:
        return torch.nn.Sequential(*[_to_torch_module(c, f"{where}[{i}]", torch) for i, c in enumerate(m.layers)])
    if isinstance(m, nn.FusedModule) or models.layer_types().get(kind) is not type(m):
        reason = ("has its own forward" if not isinstance(m, nn.FusedModule)
                  else "is a fused block: convert the model before nn.fuse")
        raise ValueError(f"to_torch: {where} is a {kind}, which {reason}; to_torch maps Sequentials of "
                         f"cnnlab.nn's layers")
    cls = getattr(torch.nn, kind, None)
    if not isinstance(cls, type):
        raise ValueError(f"to_torch: {where} is a {kind}, which PyTorch does not have")
    params = inspect.signature(cls).parameters
    args = m.init_args()
    for key, value in args.items():
        if key not in params:
            raise ValueError(f"to_torch: {where} ({kind}) has argument {key}={value!r}, which torch.nn.{kind} "
                             f"does not take")
        if isinstance(value, nn.Module):
            raise ValueError(f"to_torch: {where} ({kind}) holds a layer in {key}; not mapped")
    try:
        return cls(**args)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"to_torch: torch.nn.{kind}({args}) refused: {exc}") from None


def torch_source(model) -> str:
    """Python that builds the ``torch.nn`` module ``to_torch(model)`` makes (without weights),
    e.g. "nn.Sequential(\\n    nn.Conv2d(in_channels=1, ...),\\n ...)"; ``import torch.nn as nn`` first."""
    def source(m, indent):
        if type(m) is nn.Sequential:
            inner = ",\n".join(" " * (indent + 4) + source(c, indent + 4) for c in m.layers)
            return f"nn.Sequential(\n{inner},\n{' ' * indent})"
        args = ", ".join(f"{k}={_plain(v)!r}" for k, v in m.init_args().items())  # 6, not np.int64(6)
        return f"nn.{type(m).__name__}({args})"
    _to_torch_module(model, "model", _torch())  # the same refusals as to_torch
    return source(model, 0)


def save_torch_state_dict(model, path):
    """Write ``to_torch(model).state_dict()`` as a safetensors file, atomically, so that
    ``module.load_state_dict(safetensors.torch.load_file(path), strict=True)`` loads it into the
    module ``to_torch`` (or ``torch_source``) builds, with no pickle on either side; returns that
    module."""
    _torch()
    from safetensors.torch import save_file  # noqa: PLC0415 - needs torch, which is optional

    module = to_torch(model)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    check_output_path(path)
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    return module


# ------------------------------------------------------------------------------ torch -> cnnlab
def from_torch(module):
    """The cnnlab model that computes what a ``torch.nn`` module computes, with its weights copied.

    Args:
        module: a ``torch.nn.Sequential`` (nested ones too; children named or numbered) of
            layers cnnlab has under the same name, each with the arguments cnnlab's layer takes
            (any other torch argument at its default).

    Returns:
        A cnnlab ``nn.Sequential`` in the module's mode (train/eval). Its state-dict names are
        numbered ("0.weight"), whatever the torch module's children were called.

    Raises:
        ValueError: one line naming the first module cnnlab cannot build (its path in the torch
            model, and the argument or class that is the reason).
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    model = _from_torch_module(module, "module", torch)
    model.train(module.training)
    return model


def _from_torch_module(tm, where, torch):
    kind = type(tm).__name__
    if type(tm) is torch.nn.Sequential:
        return nn.Sequential(*[_from_torch_module(c, f"{where}.{name}", torch) for name, c in tm.named_children()])
    cls = models.layer_types().get(kind)
    if cls is None or type(tm) is not getattr(torch.nn, kind, None) or cls is nn.Sequential:
        what = "is a module of its own (with its own forward)" if getattr(torch.nn, kind, None) is not type(tm) \
            else "has no cnnlab counterpart"
        raise ValueError(f"from_torch: {where} is a {kind}, which {what}; from_torch maps torch.nn.Sequential "
                         f"models of layers cnnlab has: {', '.join(sorted(models.layer_types()))}")
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(type(tm)).parameters
    for key, p in theirs.items():  # what cnnlab's layer cannot do must be at PyTorch's default
        if key in ours or key in _IGNORED or p.default is inspect.Parameter.empty:
            continue
        value = getattr(tm, key, p.default)
        if key == "bias":  # a tensor or None (batch norm's own switch, beside affine, in recent PyTorch)
            value = value is not None
            if not value and not getattr(tm, "affine", True):
                continue
        if not _same(value, p.default):
            raise ValueError(f"from_torch: {where} ({kind}) has {key}={value!r}, which cnnlab's {kind} does not "
                             f"support (only {p.default!r})")
    args = {}
    for key in ours:
        if key == "bias" and key not in theirs:
            continue
        if key == "bias":
            args[key] = getattr(tm, "bias", None) is not None
        elif key == "affine" and not hasattr(tm, "affine") and hasattr(tm, "elementwise_affine"):
            args[key] = tm.elementwise_affine
        elif hasattr(tm, key):
            args[key] = _plain(getattr(tm, key))
            default = ours[key].default
            if args[key] is None and default is not None and default is not inspect.Parameter.empty:
                raise ValueError(f"from_torch: {where} ({kind}) has {key}=None, which cnnlab's {kind} does not "
                                 f"support (give a value, e.g. {default!r})")
        elif key not in theirs:
            continue  # a cnnlab-only argument: its default
        else:
            raise ValueError(f"from_torch: {where} ({kind}) does not say its {key}")
    try:
        layer = cls(**args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"from_torch: {where} ({kind}): {exc}") from None
    try:
        load_torch_state_dict(layer, tm.state_dict())
    except ValueError as exc:
        raise ValueError(f"from_torch: {where} ({kind}): {exc}") from None
    return layer


def _same(value, default) -> bool:
    if isinstance(value, (tuple, list)) and not isinstance(default, (tuple, list)):
        return all(v == default for v in value)
    return value == default


def _plain(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


# ------------------------------------------------------------------------------ state dicts
def load_torch_state_dict(model, state_dict) -> None:
    """Load a PyTorch ``state_dict`` (torch tensors or NumPy arrays by name) into a cnnlab model.

    Batch norm's ``num_batches_tracked`` (a step counter cnnlab does not keep) is accepted and
    ignored; every other tensor must be the model's, by name and shape, floating point and finite.

    Raises:
        ValueError: one line: the keys missing (the first few, and how many), the keys the model
            does not have, the first tensor of another shape, or of a type or values cnnlab cannot use.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"load_torch_state_dict: expected a mapping of names to tensors, got "
                         f"{type(state_dict).__name__}")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"load_torch_state_dict: a key is {key!r}, not a name")
        if key == "num_batches_tracked" or key.endswith(".num_batches_tracked"):
            continue
        arrays[key] = _array(key, value)
    own = model.state_dict()
    missing = [k for k in own if k not in arrays]
    unexpected = [k for k in arrays if k not in own]
    if missing:
        raise ValueError(f"load_torch_state_dict: the state_dict lacks {len(missing)} of the model's "
                         f"{len(own)} tensors: {_few(missing)}")
    if unexpected:
        raise ValueError(f"load_torch_state_dict: the state_dict has {len(unexpected)} tensors the model does "
                         f"not: {_few(unexpected)}")
    for key, t in own.items():
        if tuple(arrays[key].shape) != tuple(t.shape):
            raise ValueError(f"load_torch_state_dict: {key} is {tuple(arrays[key].shape)} in the state_dict, "
                             f"{tuple(t.shape)} in the model")
    model.load_state_dict(arrays)


def _array(key, value) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "is_floating_point"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point() and str(value.dtype) not in ("torch.float16", "torch.float32", "torch.float64"):
            value = value.float()  # bfloat16 and the like: NumPy has no such type
        value = value.numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"load_torch_state_dict: {key} is a {type(value).__name__}, not a tensor")
    if value.dtype.kind != "f":
        raise ValueError(f"load_torch_state_dict: {key} is {value.dtype}, not floating point")
    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if bad:
        raise ValueError(f"load_torch_state_dict: {key} holds {bad} NaN or infinite values")
    return value


def _few(keys, n=5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")
