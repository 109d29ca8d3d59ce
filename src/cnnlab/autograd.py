"""Define-by-run reverse-mode automatic differentiation over NumPy/CuPy arrays.

A ``Tensor`` wraps an array (``.data``). Every differentiable operation is a ``Function``
subclass with a ``forward`` (arrays in, array out) and a ``backward`` (gradient of the output in,
gradients of the inputs out) written next to each other. Calling ``Fn.apply(...)`` runs the
forward and, when gradients are wanted, records the Function instance as the output's creator.
``Tensor.backward()`` walks that record in reverse topological order, iteratively (no recursion
limit), accumulating gradients.

Two mistakes that would otherwise give silently wrong or missing gradients raise instead, as in
PyTorch:

* changing a tensor in place after an operator used it. Every tensor has a ``version``, raised by
  each in-place change (its in-place methods ``x[i] = v``, ``add_``, ``zero_``, ...; an augmented
  assignment to its array ``x.data -= v``; an optimizer's ``step()``). A Function records the
  versions of its inputs, and ``backward`` raises a RuntimeError naming the operator when one has
  changed since. Writes into the array itself (``x.data[...] = v``) cannot be seen, as with
  PyTorch's ``.data``.
* a second ``backward`` through a graph whose saved values the first one freed: a RuntimeError
  naming the operator and ``retain_graph``.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from . import backend

_grad_enabled = True
_recorder = None  # while tracing (``trace``): called with every operator applied


@contextlib.contextmanager
def trace(record):
    """Context manager: every ``Function.apply`` inside calls ``record(function_class, inputs,
    params, output)`` after its forward (the Function's class, its input Tensors, its keyword
    parameters and the output Tensor), gradients wanted or not. Model export builds its graph from
    these calls (``cnnlab.onnx_export``); one trace at a time."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("trace(): a trace is already being recorded")
    _recorder = record
    try:
        yield
    finally:
        _recorder = None


@contextlib.contextmanager
def no_grad():
    """Context manager: operations inside record no graph (evaluation, optimizer updates)."""
    global _grad_enabled
    prev = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = prev


@contextlib.contextmanager
def enable_grad():
    global _grad_enabled
    prev = _grad_enabled
    _grad_enabled = True
    try:
        yield
    finally:
        _grad_enabled = prev


def is_grad_enabled() -> bool:
    return _grad_enabled


def _as_array(data, dtype=None):
    """Turn Python data or an array into an array of a sensible dtype (float32 by default)."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.get_array_module(data)
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)) or xp is not np:
        return xp.asarray(data)  # arrays and NumPy scalars keep their dtype
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        # Python floats and lists of them become float32, like torch.tensor([...]).
        arr = arr.astype(backend.DEFAULT_DTYPE)
    return arr


def _refcount_in_call(a) -> int:
    return sys.getrefcount(a)


def _base_refcount_in_call(a) -> int:
    base = a.base
    return sys.getrefcount(base)


def _refs_of_a_local() -> tuple[int, int]:
    """(what sys.getrefcount reports of an array that only the calling frame's local variable
    holds, inside a function called with it; what it reports, in the same call shape, of the base
    of a view that only such a local holds, the view its base's only holder)."""
    gt = np.empty(0)
    view = np.empty(2).reshape(1, 2)
    return _refcount_in_call(gt), _base_refcount_in_call(view)


def _unshared(a, refs: tuple[int, int]) -> bool:
    """Whether the backward loop holds the only reference to ``a`` and ``a`` owns its memory, or
    is a C-ordered view of all of an array that it alone holds (a gradient reshaped on its way
    back, as a convolution's weight gradient is), so that a leaf may take it as its ``.grad``
    without a copy (PyTorch's AccumulateGrad steals a gradient the same way). Saves a copy per step
    of every weight gradient that a backward function returns as a fresh array (Linear's,
    convolutions'). Arrays held by a Function, a kernel's workspace, another pending gradient or
    the caller (``backward(grad)``), views of part of an array or of one that something else
    holds, and arrays not in C order, are copied.

    ``refs`` is what sys.getrefcount reports, inside a function called with an array that only
    the calling frame's local variable holds, and of such a view's base: _refs_of_a_local()
    measures both with the same call shapes (called with a local, _unshared calls getrefcount
    itself). They are measured for every backward pass rather than assumed, since interpreters
    (and frame-evaluation hooks such as debuggers') count call arguments differently."""
    if not (sys.getrefcount(a) <= refs[0] and getattr(a, "flags", None) is not None and a.flags.c_contiguous):
        return False
    base = getattr(a, "base", 0)
    if base is None:
        return True
    return (type(base) is type(a) and base.base is None and base.nbytes == a.nbytes and base.flags.c_contiguous
            and sys.getrefcount(base) <= refs[1])


class Tensor:
    """An n-dimensional array with an optional gradient and a record of how it was made.

    Args:
        data: array-like (NumPy or CuPy array, nested lists, scalar).
        dtype: optional dtype; Python floats become float32.
        requires_grad: whether ``backward`` should fill ``.grad`` for this tensor.
    """

    __slots__ = ("_data", "grad", "requires_grad", "_ctx", "_version", "__weakref__")
    __array_priority__ = 1000  # so that ndarray + Tensor defers to Tensor.__radd__

    def __init__(self, data, dtype=None, requires_grad=False):
        self._data = _as_array(data, dtype)
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | _Freed | None = None
        self._version = 0

    @property
    def data(self):
        """The array (NumPy or CuPy) holding the values."""
        return self._data

    @data.setter
    def data(self, value):
        # ``t.data -= v`` reads the array, changes it in place and assigns the same array back:
        # an in-place change that a graph which saved the array must hear of. A different array
        # leaves what the graph saved untouched.
        if value is self._data:
            self._version += 1
        self._data = value

    @property
    def version(self) -> int:
        """How many in-place changes this tensor has seen (PyTorch's ``_version``)."""
        return self._version

    # ---------------------------------------------------------------- basic properties
    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return int(self._data.size)

    @property
    def device(self) -> str:
        return backend.device_of(self._data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def numel(self) -> int:
        return int(self._data.size)

    def dim(self) -> int:
        return self._data.ndim

    def __len__(self):
        return len(self._data)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if needed; shares memory on the CPU)."""
        return backend.to_device(self._data, "cpu")

    def __array__(self, dtype=None, copy=None):
        """np.asarray(tensor) gives the data (on the CPU), as for a PyTorch CPU tensor."""
        a = self.numpy()
        return a.astype(dtype) if dtype is not None else a

    def item(self):
        return self._data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        return Tensor(self._data)

    def clone(self) -> Tensor:
        """A copy of the values, recorded in the graph: gradients flow back to ``self``."""
        return _ops.clone(self)

    def to(self, device=None, dtype=None) -> Tensor:
        """A tensor on ``device`` and/or of ``dtype``; ``self`` when nothing changes."""
        data = self._data
        if device is not None:
            data = backend.to_device(data, device)
        out = self if data is self._data else Tensor(data, requires_grad=self.requires_grad)
        if dtype is not None and data.dtype != np.dtype(dtype):
            out = _ops.Cast.apply(out, dtype=dtype)
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def float(self) -> Tensor:
        return self.to(dtype=np.float32)

    def double(self) -> Tensor:
        return self.to(dtype=np.float64)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        self.requires_grad = flag
        return self

    # ---------------------------------------------------------------- in-place changes
    # Each raises the version, so that a graph that used the old values refuses to backward. They
    # are not recorded in the graph: on a tensor that requires grad they need no_grad() (a manual
    # weight update), as PyTorch requires for a leaf.
    def _inplace(self, what: str):
        if self.requires_grad and _grad_enabled:
            raise RuntimeError(f"{what} on a tensor that requires grad: cnnlab's autograd does not record in-place "
                               f"changes; make it under no_grad() (e.g. a manual weight update) or compute a new "
                               f"tensor instead (y = x + 1)")
        self._version += 1
        return self._data

    def __setitem__(self, index, value):
        index = tuple(_raw(i) for i in index) if isinstance(index, tuple) else _raw(index)
        self._inplace("x[...] = value")[index] = _raw(value)

    def zero_(self) -> Tensor:
        self._inplace("zero_()")[...] = 0
        return self

    def fill_(self, value) -> Tensor:
        self._inplace("fill_()")[...] = _raw(value)
        return self

    def copy_(self, src) -> Tensor:
        src = _raw(src)
        if hasattr(src, "shape"):
            src = backend.to_device(src, self.device)
        self._inplace("copy_()")[...] = src
        return self

    def add_(self, other, alpha=1) -> Tensor:
        data = self._inplace("add_()")
        data += _raw(other) if alpha == 1 else alpha * _raw(other)
        return self

    def sub_(self, other, alpha=1) -> Tensor:
        data = self._inplace("sub_()")
        data -= _raw(other) if alpha == 1 else alpha * _raw(other)
        return self

    def mul_(self, other) -> Tensor:
        data = self._inplace("mul_()")
        data *= _raw(other)
        return self

    def div_(self, other) -> Tensor:
        data = self._inplace("div_()")
        data /= _raw(other)
        return self

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
        extra = ""
        if self._data.dtype != backend.DEFAULT_DTYPE:
            extra += f", dtype={self._data.dtype}"
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ---------------------------------------------------------------- backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        Args:
            grad: gradient of some scalar with respect to ``self``; defaults to 1 for a
                one-element tensor.
            retain_graph: keep the graph so that backward can run through it again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad "
                               "(did you compute it under no_grad(), or from inputs without requires_grad?)")
        xp = backend.get_array_module(self._data)
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, got shape {self.shape}")
            g = xp.ones_like(self._data)
        else:
            g = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self._data.dtype)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward(): grad has shape {tuple(g.shape)}, tensor has shape {self.shape}")

        order = _topological_order(self)
        loop_refs = _refs_of_a_local()
        grads: dict[int, object] = {id(self): g}
        for t in order:  # outputs before inputs
            gt = grads.pop(id(t), None)
            if gt is None:
                continue
            ctx = t._ctx
            if ctx is None:
                # A leaf: accumulate into .grad.
                if t.requires_grad:
                    if t.grad is None:
                        # The array itself when nothing else can see it, else a copy: a backward
                        # may pass one array to several inputs, keep it, or hand back a view.
                        t.grad = Tensor(gt if _unshared(gt, loop_refs) else gt.copy())
                    else:
                        t.grad.data = t.grad.data + gt
                continue
            if type(ctx) is _Freed:
                raise RuntimeError(
                    f"backward() through the graph a second time (at {ctx.name}): the first backward() freed the "
                    f"values saved for it; pass retain_graph=True to the first backward() to run backward again")
            if t._version or [inp._version for inp in ctx.inputs] != ctx.versions:
                raise RuntimeError(_modified_message(ctx, t))
            in_grads = ctx.backward(gt)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for inp, gi in zip(ctx.inputs, in_grads):
                if gi is None or not inp.requires_grad:
                    continue
                if tuple(gi.shape) != inp.shape:
                    gi = _unbroadcast(gi, inp.shape)
                key = id(inp)
                prev = grads.get(key)
                grads[key] = gi if prev is None else prev + gi
            in_grads = gi = None  # so that the loop's own variables do not count in _unshared
            if not retain_graph:
                t._ctx = _Freed(type(ctx).__name__)  # free the saved arrays of this node

    # ---------------------------------------------------------------- operators
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pow__(self, exponent):
        return _ops.pow(self, exponent)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    # Comparisons give plain (non-differentiable) tensors, as in PyTorch.
    def __eq__(self, other):  # noqa: D105
        return Tensor(self._data == _raw(other))

    def __ne__(self, other):
        return Tensor(self._data != _raw(other))

    def __lt__(self, other):
        return Tensor(self._data < _raw(other))

    def __le__(self, other):
        return Tensor(self._data <= _raw(other))

    def __gt__(self, other):
        return Tensor(self._data > _raw(other))

    def __ge__(self, other):
        return Tensor(self._data >= _raw(other))

    __hash__ = object.__hash__

    # ---------------------------------------------------------------- methods
    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def abs(self):
        return _ops.abs(self)

    def relu(self):
        return _ops.relu(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def tanh(self):
        return _ops.tanh(self)

    def sum(self, dim=None, keepdim=False):
        return _ops.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return _ops.mean(self, dim, keepdim)

    def var(self, dim=None, keepdim=False, unbiased=True):
        return _ops.var(self, dim, keepdim, unbiased)

    def max(self, dim=None, keepdim=False):
        """The maximum; with ``dim``, (values, indices) as in PyTorch."""
        if dim is None:
            return _ops.amax(self)
        return MinMax(_ops.amax(self, dim, keepdim), Tensor(self._data.argmax(axis=dim, keepdims=keepdim)))

    def min(self, dim=None, keepdim=False):
        """The minimum; with ``dim``, (values, indices) as in PyTorch."""
        if dim is None:
            return _ops.amin(self)
        return MinMax(_ops.amin(self, dim, keepdim), Tensor(self._data.argmin(axis=dim, keepdims=keepdim)))

    def amax(self, dim=None, keepdim=False):
        return _ops.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _ops.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return Tensor(self._data.argmax(axis=dim, keepdims=keepdim))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        return _ops.flatten(self, start_dim, end_dim)

    def unsqueeze(self, dim):
        return _ops.unsqueeze(self, dim)

    def squeeze(self, dim=None):
        return _ops.squeeze(self, dim)

    def permute(self, *dims):
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return _ops.permute(self, dims)

    def transpose(self, dim0=0, dim1=1):
        return _ops.transpose(self, dim0, dim1)

    @property
    def T(self):
        return _ops.permute(self, tuple(reversed(range(self.ndim))))

    def matmul(self, other):
        return _ops.matmul(self, other)

    def pow(self, exponent):
        return _ops.pow(self, exponent)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        return _ops.clamp(self, min, max)

    def softmax(self, dim=-1):
        return _ops.softmax(self, dim)

    def log_softmax(self, dim=-1):
        return _ops.log_softmax(self, dim)


class MinMax(tuple):
    """(values, indices) from Tensor.max(dim) / Tensor.min(dim), like PyTorch's named tuple."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def _raw(x):
    return x._data if isinstance(x, Tensor) else x


def increment_version(t: Tensor) -> None:
    """Record an in-place change of ``t`` made behind the Tensor's back (e.g. a compiled optimizer
    kernel writing into ``t.data``), so that graphs that used the old values refuse to backward."""
    t._version += 1


class _Freed:
    """What a non-leaf's creator becomes once backward has freed it: the operator's name, no inputs."""

    __slots__ = ("name",)
    inputs = ()

    def __init__(self, name: str):
        self.name = name


def _modified_message(ctx, out: Tensor) -> str:
    """Which tensor of ``ctx`` (its output ``out`` or an input) changed in place since it ran."""
    which, t, seen = "its output", out, 0  # the output itself changed (a backward may use it)
    for i, (inp, version) in enumerate(zip(ctx.inputs, ctx.versions)):
        if inp._version != version:
            which, t, seen = f"input {i} of {len(ctx.inputs)}", inp, version
            break
    op = type(ctx).__name__
    return (f"{op} needs {which} (shape {t.shape}, {t.dtype}) for its gradient, but it was changed in place after "
            f"{op} used it (version {t._version}, {op} saw version {seen}): an in-place change (x[...] = v, "
            f"x.add_(), x.data -= v, an optimizer's step()) between forward and backward; compute again after the "
            f"change, or make the change out of place (x = x + v)")


def _unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting expanded, so it takes ``shape``."""
    ndiff = grad.ndim - len(shape)
    if ndiff > 0:
        grad = grad.sum(axis=tuple(range(ndiff)))
    axes = tuple(i for i, (gs, s) in enumerate(zip(grad.shape, shape)) if s == 1 and gs != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` through creators, each after every tensor that uses it.

    Iterative depth-first search with an explicit stack, so deep graphs do not hit Python's
    recursion limit. Children are visited in input order, so the order is deterministic.
    """
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t._ctx is not None:
            for inp in reversed(t._ctx.inputs):
                if inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    order.reverse()
    return order


class Function:
    """One differentiable operation: ``forward`` on arrays and its ``backward``.

    Subclasses implement ``forward(self, *arrays, **params) -> array`` and
    ``backward(self, grad_output) -> gradient or tuple of gradients`` (one per tensor input,
    ``None`` where an input needs none). ``self.needs_input_grad`` tells which inputs want one.
    Anything ``forward`` stores on ``self`` is freed after the backward pass. ``apply`` records
    the inputs' versions; backward refuses to run if one of them, or the output, has changed
    in place since.
    """

    inputs: tuple

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        tensors = tuple(x if isinstance(x, Tensor) else Tensor(x) for x in inputs)
        ctx = cls()
        needs = _grad_enabled and any(t.requires_grad for t in tensors)
        ctx.needs_input_grad = tuple(t.requires_grad for t in tensors) if needs else (False,) * len(tensors)
        out = Tensor(ctx.forward(*(t._data for t in tensors), **params))
        if needs:
            ctx.inputs = tensors
            ctx.versions = [t._version for t in tensors]  # checked by backward
            out.requires_grad = True
            out._ctx = ctx
        if _recorder is not None:
            _recorder(cls, tensors, params, out)
        return out

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_output):  # pragma: no cover - abstract
        raise NotImplementedError


def tensor(data, dtype=None, requires_grad=False) -> Tensor:
    """Make a Tensor holding a copy of array-like ``data`` (float32 for Python floats).

    Like ``torch.tensor``, the result never shares memory with ``data``.
    """
    if isinstance(data, Tensor):
        data = data.data
    t = Tensor(data, dtype=dtype, requires_grad=requires_grad)
    if t.data is data or (hasattr(data, "base") and t.data.base is data):
        t.data = t.data.copy()
    return t


def _size(op, size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in size):
        raise ValueError(f"{op}: sizes must be non-negative ints, got {size}")
    return tuple(int(s) for s in size)


def _filled(op, fill, size, dtype, device, requires_grad) -> Tensor:
    xp = backend.xp_for(device or "cpu")
    return Tensor(xp.full(_size(op, size), fill, dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros: ``zeros(2, 3)`` or ``zeros((2, 3))``, float32 unless ``dtype`` is given."""
    return _filled("zeros", 0, size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones: ``ones(2, 3)`` or ``ones((2, 3))``, float32 unless ``dtype`` is given."""
    return _filled("ones", 1, size, dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal numbers from cnnlab's seeded generator (``cnnlab.manual_seed``), float32 unless
    ``dtype`` is given; drawn on the CPU and moved to ``device``."""
    data = backend.rng().standard_normal(_size("randn", size)).astype(dtype or backend.DEFAULT_DTYPE)
    return Tensor(backend.to_device(data, device or "cpu"), requires_grad=requires_grad)


from .functional import ops as _ops  # noqa: E402 - ops needs Tensor and Function defined above
