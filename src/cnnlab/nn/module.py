"""Module and Parameter: containers of parameters with PyTorch's interface.

A Module's parameters, buffers and sub-modules are simply its attributes: ``named_parameters``
walks ``vars(self)`` in definition order, so there is no hidden registration to look for.
Tensors that are not Parameters (e.g. BatchNorm's running statistics) are buffers: saved in the
state dict, never trained.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


_handle_ids = itertools.count()


class RemovableHandle:
    """What ``register_forward_hook`` and ``register_forward_pre_hook`` return: ``remove()`` takes the
    hook off again (also as a context manager: ``with layer.register_forward_hook(f): ...``)."""

    def __init__(self, hooks: dict):
        self.hooks, self.id = hooks, next(_handle_ids)

    def remove(self) -> None:
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Module:
    """Base class of every layer and model. Subclasses set attributes and define ``forward``.

    Every Module remembers the arguments it was constructed with (``init_args``): a subclass's
    ``__init__`` is wrapped once, when the class is defined, to record them, so a new layer needs
    nothing more for ``models.layer_spec`` to describe it and ``models.build`` to make it again.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "records_init_args", False):
            cls.__init__ = _recording(init)

    def __init__(self):
        self.training = True

    def init_args(self) -> dict:
        """The arguments this module was made with, by name, defaults filled in (a copy):
        ``type(m)(**m.init_args())`` makes it again (a ``*args`` parameter holds a tuple, passed
        as positional arguments; ``**kwargs`` a dict). A module changed after it was made
        reports what it was made with; a subclass may override this to report its state."""
        return dict(self.__dict__.get("_init_args", {}))

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        pre, post = self.__dict__.get("_forward_pre_hooks"), self.__dict__.get("_forward_hooks")
        if pre:
            for hook in list(pre.values()):
                changed = hook(self, args)
                if changed is not None:
                    args = changed if isinstance(changed, tuple) else (changed,)
        out = self.forward(*args, **kwargs)
        if post:
            for hook in list(post.values()):
                changed = hook(self, args, out)
                if changed is not None:
                    out = changed
        return out

    # ------------------------------------------------------------- hooks and buffers
    def _hooks(self, kind) -> dict:
        if kind not in self.__dict__:
            self.__dict__[kind] = {}
        return self.__dict__[kind]

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every forward of this module (PyTorch's rule): a
        return value other than None replaces the output. Returns a handle whose ``remove()`` undoes it.

        Hooks fire in fused models too: a fused module (``nn.fuse``) one of whose layers has a hook runs
        its layers one by one, as written, so the hook sees that layer's own input and output."""
        if not callable(hook):
            raise TypeError(f"register_forward_hook: hook must be callable, got {type(hook).__name__}")
        hooks = self._hooks("_forward_hooks")
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args)`` before every forward of this module: a return value other than
        None replaces the positional arguments (a single value is wrapped in a tuple)."""
        if not callable(hook):
            raise TypeError(f"register_forward_pre_hook: hook must be callable, got {type(hook).__name__}")
        hooks = self._hooks("_forward_pre_hooks")
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def has_forward_hooks(self) -> bool:
        """Whether a forward hook or pre-hook is registered on this module itself."""
        return bool(self.__dict__.get("_forward_hooks") or self.__dict__.get("_forward_pre_hooks"))

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Keep ``tensor`` as the buffer ``name``: an attribute that ``to()``/``double()`` move and cast,
        that ``state_dict`` saves (unless ``persistent=False``), and that is never a parameter. None
        reserves the name (nothing saved), as in PyTorch."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"register_buffer: the name must be a non-empty string without '.', got {name!r}")
        if tensor is not None and (not isinstance(tensor, Tensor) or isinstance(tensor, Parameter)):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor (not a Parameter) or None, "
                            f"got {type(tensor).__name__}")
        if name in self.__dict__ and not (self.__dict__[name] is None or
                                           (isinstance(self.__dict__[name], Tensor)
                                            and not isinstance(self.__dict__[name], Parameter))):
            raise KeyError(f"register_buffer: attribute {name!r} already exists and is not a buffer")
        setattr(self, name, tensor)
        private = self._hooks("_non_persistent_buffers")
        if persistent:
            private.pop(name, None)
        else:
            private[name] = True

    # ------------------------------------------------------------- traversal
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, v in enumerate(value):
                    yield f"{name}.{i}", v

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def _own(self, kind):
        for name, value in vars(self).items():
            if kind == "param" and isinstance(value, Parameter):
                yield name, value
            elif kind == "buffer" and isinstance(value, Tensor) and not isinstance(value, Parameter):
                yield name, value

    def named_parameters(self, prefix=""):
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._own("param"):
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for mod_name, mod in self.named_modules(prefix):
            for name, b in mod._own("buffer"):
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------- state
    def state_dict(self) -> OrderedDict:
        """Name -> Tensor for every parameter and persistent buffer (sharing memory with the module)."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p
        for mod_name, mod in self.named_modules():
            skip = mod.__dict__.get("_non_persistent_buffers") or ()
            for name, b in mod._own("buffer"):
                if name not in skip:
                    out[f"{mod_name}.{name}" if mod_name else name] = b
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` (name -> Tensor or array) into this module's tensors.

        Raises ValueError naming every missing, unexpected or mis-shaped entry.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = []
        for k, t in own.items():
            if k in state:
                v = state[k]
                shape = tuple(v.shape)
                if shape != t.shape:
                    wrong.append(f"{k}: expected {t.shape}, got {shape}")
        problems = []
        if strict and missing:
            problems.append("missing: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected: " + ", ".join(unexpected))
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems))
        for k, t in own.items():
            if k in state:
                v = state[k]
                arr = v.data if isinstance(v, Tensor) else v
                arr = backend.to_device(np.asarray(arr) if not hasattr(arr, "shape") else arr, t.device)
                t.data[...] = arr.astype(t.dtype, copy=False)
        return self

    # ------------------------------------------------------------- modes and moves
    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device=None, dtype=None):
        """Move (or cast) every parameter and buffer in place; returns self."""
        for m in self.modules():
            for _, t in list(m._own("param")) + list(m._own("buffer")):
                data = t.data
                if device is not None:
                    data = backend.to_device(data, device)
                if dtype is not None and data.dtype.kind == "f":
                    data = data.astype(dtype)
                t.data = data
                if t.grad is not None:
                    t.grad = None
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # ------------------------------------------------------------- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        kids = list(self.named_children())
        if not kids:
            return lines[0] + ")"
        for name, child in kids:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


def _recording(init):
    """``init`` wrapped to record its arguments in ``self._init_args``; the outermost constructor
    (the class the object is) records, the ``super().__init__`` calls below it do not."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "_init_args" not in self.__dict__:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                pass  # the constructor itself raises the clear error
            else:
                bound.apply_defaults()
                self.__dict__["_init_args"] = dict(list(bound.arguments.items())[1:])
        init(self, *args, **kwargs)

    __init__.records_init_args = True
    return __init__
class ModuleList(Module):
    """A list of modules whose parameters belong to the module holding it (``self.blocks =
    ModuleList([...])``: names blocks.0.weight, ...), as PyTorch's. It has no forward: loop over it."""

    def __init__(self, modules=None):
        super().__init__()
        self.items = []
        self.extend(modules or [])

    @staticmethod
    def _checked(module, where):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: {where} is a {type(module).__name__}, not a Module")
        return module

    def named_children(self):
        for i, module in enumerate(self.items):
            yield str(i), module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it and call its modules")

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(self.items[i])
        return self.items[i]

    def __setitem__(self, i, module):
        self.items[i] = self._checked(module, f"item {i}")

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def append(self, module):
        self.items.append(self._checked(module, f"item {len(self.items)}"))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        self.items.insert(index, self._checked(module, f"item {index}"))


class Sequential(Module):
    """Applies its modules in order: Sequential(Conv2d(1, 20, 5), ReLU(), ...).

    Nothing is fused or reordered here; ``nn.fuse(model)`` makes a model that runs blocks such as
    conv -> max-pool -> ReLU as one operator (nn/fuse.py).
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module")
        self.layers = list(layers)

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def init_args(self) -> dict:
        """{"layers": the layers it holds now} (``append`` included)."""
        return {"layers": tuple(self.layers)}

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def append(self, layer):
        self.layers.append(layer)
        return self

