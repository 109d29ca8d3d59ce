"""Primitive differentiable operations: elementwise math, reductions, shape changes, matmul.

Each Function keeps its forward and backward together. All code is written against ``xp``,
the array module of the input, so the same operator runs on NumPy and CuPy arrays.
"""

from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from .. import backend, kernels
from ..autograd import Function, Tensor


def _xp(a):
    return backend.get_array_module(a)


def _lift(x, like: Tensor) -> Tensor:
    """Turn a Python/NumPy scalar into a constant tensor of ``like``'s dtype (no upcasting)."""
    if isinstance(x, Tensor):
        return x
    xp = _xp(like.data)
    return Tensor(xp.asarray(x, dtype=like.data.dtype))


def _pair(a, b):
    if isinstance(a, Tensor):
        return a, _lift(b, a)
    return _lift(a, b), b


# ------------------------------------------------------------------------ binary elementwise
class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (g * self.b if na else None), (g * self.a if nb else None)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        na, nb = self.needs_input_grad
        ga = g / self.b if na else None
        gb = -g * self.a / (self.b * self.b) if nb else None
        return ga, gb


def add(a, b):
    return Add.apply(*_pair(a, b))


def sub(a, b):
    return Sub.apply(*_pair(a, b))


def mul(a, b):
    return Mul.apply(*_pair(a, b))


def div(a, b):
    return Div.apply(*_pair(a, b))


# ------------------------------------------------------------------------ unary elementwise
class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """``a ** p`` for a constant exponent ``p``."""

    def forward(self, a, p):
        self.a, self.p = a, p
        return a ** p

    def backward(self, g):
        a, p = self.a, self.p
        return g * p * a ** (p - 1)


class Exp(Function):
    def forward(self, a):
        self.out = _xp(a).exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return _xp(a).log(a)

    def backward(self, g):
        return g / self.a


class Sqrt(Function):
    def forward(self, a):
        self.out = _xp(a).sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return _xp(a).abs(a)

    def backward(self, g):
        return g * _xp(g).sign(self.a)


class ReLU(Function):
    def forward(self, a):
        self.out = kernels.relu_forward(a)
        return self.out

    def backward(self, g):
        return kernels.relu_backward(g, self.out)


class Sigmoid(Function):
    def forward(self, a):
        xp = _xp(a)
        # 0.5 * (1 + tanh(a / 2)) is sigmoid without overflow for large |a|.
        self.out = 0.5 * (1 + xp.tanh(0.5 * a))
        return self.out

    def backward(self, g):
        return kernels.sigmoid_backward(g, self.out)


class Tanh(Function):
    def forward(self, a):
        self.out = _xp(a).tanh(a)
        return self.out

    def backward(self, g):
        return kernels.tanh_backward(g, self.out)


class LeakyReLU(Function):
    """x where x > 0, else negative_slope * x."""

    def forward(self, a, slope):
        self.pos, self.slope = a > 0, slope
        return _xp(a).where(self.pos, a, a * a.dtype.type(slope))

    def backward(self, g):
        return _xp(g).where(self.pos, g, g * g.dtype.type(self.slope))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GELU(Function):
    """x * Phi(x), Phi the standard normal distribution function: 0.5 * (1 + erf(x / sqrt 2)) exactly,
    or PyTorch's approximate='tanh' form 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""

    def forward(self, a, approximate):
        xp, self.a, self.approximate = _xp(a), a, approximate
        if approximate == "tanh":
            self.t = xp.tanh(a.dtype.type(_SQRT_2_OVER_PI) * (a + a.dtype.type(0.044715) * a * a * a))
            return 0.5 * a * (1 + self.t)
        self.cdf = 0.5 * (1 + kernels.erf(a * a.dtype.type(1 / math.sqrt(2.0))))
        return a * self.cdf

    def backward(self, g):
        xp, a = _xp(g), self.a
        if self.approximate == "tanh":
            t = self.t
            du = a.dtype.type(_SQRT_2_OVER_PI) * (1 + a.dtype.type(3 * 0.044715) * a * a)
            return g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * du)
        pdf = xp.exp(-0.5 * a * a) * a.dtype.type(1 / math.sqrt(2 * math.pi))
        return g * (self.cdf + a * pdf)


class Clamp(Function):
    def forward(self, a, lo, hi):
        xp = _xp(a)
        out = a
        mask = xp.ones(a.shape, dtype=bool)
        if lo is not None:
            mask &= a >= lo
            out = xp.maximum(out, xp.asarray(lo, dtype=a.dtype))
        if hi is not None:
            mask &= a <= hi
            out = xp.minimum(out, xp.asarray(hi, dtype=a.dtype))
        self.mask = mask
        return out

    def backward(self, g):
        return g * self.mask


class Cast(Function):
    def forward(self, a, dtype):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.src)


def neg(a):
    return Neg.apply(a)


def pow(a, exponent):  # noqa: A001 - PyTorch's name
    if isinstance(exponent, Tensor):
        # a ** t = exp(t * log a): composite, differentiable in both.
        return exp(mul(exponent, log(a)))
    if not isinstance(exponent, numbers.Number):
        raise TypeError(f"pow: exponent must be a number or a Tensor, got {type(exponent).__name__}")
    return Pow.apply(a, p=exponent)


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def sqrt(a):
    return Sqrt.apply(a)


def abs(a):  # noqa: A001 - PyTorch's name
    return Abs.apply(a)


def relu(a):
    return ReLU.apply(a)


def sigmoid(a):
    return Sigmoid.apply(a)


def tanh(a):
    return Tanh.apply(a)


def leaky_relu(a, negative_slope=0.01):
    """x for x > 0, ``negative_slope * x`` otherwise (``torch.nn.functional.leaky_relu``)."""
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real) \
            or not math.isfinite(negative_slope):
        raise ValueError(f"leaky_relu: negative_slope must be a finite number, got {negative_slope!r}")
    return LeakyReLU.apply(a, slope=float(negative_slope))


def gelu(a, approximate="none"):
    """Gaussian error linear unit, x * Phi(x) (Hendrycks and Gimpel): the exact erf form, or
    approximate='tanh' as in PyTorch."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(a, approximate=approximate)


def clamp(a, min=None, max=None):  # noqa: A002 - PyTorch's names
    return Clamp.apply(a, lo=min, hi=max)


# ------------------------------------------------------------------------ reductions
def _dim(op, dim, shape):
    """``dim`` as an axis in 0..ndim-1, or an IndexError naming the operator and the shape (as
    PyTorch, a 0-d tensor takes dim 0 or -1)."""
    ndim = len(shape)
    top = builtins.max(ndim, 1)
    if not -top <= dim < top:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor of shape {tuple(shape)} "
                         f"(expected {-top}..{top - 1})")
    return dim % top


def _axes(dim, ndim, op="reduction", shape=None):
    """The reduced axes, sorted (so that ties go to the first position in C order, whatever order the
    dims were given in); None for all of them; () for a 0-d tensor, whose only dim is itself."""
    if dim is None:
        return None
    if isinstance(dim, int):
        dim = (dim,)
    shape = (None,) * ndim if shape is None else shape
    axes = tuple(sorted(_dim(op, d, shape) for d in dim))
    return axes if ndim else ()


def _inverse_count(n):
    """1 / n, NaN for no values: a mean of nothing and a variance on n - 1 = 0 degrees of freedom are
    NaN, as in PyTorch (not 0)."""
    return 1.0 / n if n > 0 else math.nan


class Sum(Function):
    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        xp = _xp(g)
        if self.axis is not None and not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        return xp.broadcast_to(g, self.shape)


class Max(Function):
    """max (or min) over axes; the gradient goes to one arg-max per reduced slice (the first)."""

    def forward(self, a, axis, keepdims, is_min=False):
        xp = _xp(a)
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        out = a.min(axis=axis, keepdims=True) if is_min else a.max(axis=axis, keepdims=True)
        # One winner per slice, consistently: the first position (in C order) equal to the max.
        eq = a == out
        if axis is None:
            first = xp.zeros(a.size, dtype=bool)
            first[int(xp.argmax(eq.reshape(-1)))] = True
            self.mask = first.reshape(a.shape)
        else:
            # (..., reduced axes last, flattened) -> index of the first maximum -> one-hot mask
            moved = xp.moveaxis(eq, axis, tuple(range(-len(axis), 0)))
            kept = moved.shape[: moved.ndim - len(axis)]
            flat = moved.reshape(kept + (math.prod(moved.shape[len(kept):]),))  # sizes given: N may be 0
            onehot = flat.argmax(axis=-1)[..., None] == xp.arange(flat.shape[-1])
            self.mask = xp.moveaxis(onehot.reshape(moved.shape), tuple(range(-len(axis), 0)), axis)
        return out if keepdims else (out.reshape(()) if axis is None else out.squeeze(axis))

    def backward(self, g):
        xp = _xp(g)
        if self.axis is None:
            g = g.reshape((1,) * len(self.shape))
        elif not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        return g * self.mask


def sum(a, dim=None, keepdim=False):  # noqa: A001 - PyTorch's name
    return Sum.apply(a, axis=_axes(dim, a.ndim, "sum", a.shape), keepdims=keepdim)


def mean(a, dim=None, keepdim=False):
    axes = _axes(dim, a.ndim, "mean", a.shape)
    n = a.size if axes is None else math.prod([a.shape[d] for d in axes])
    return mul(sum(a, axes, keepdim), _inverse_count(n))


def var(a, dim=None, keepdim=False, unbiased=True):
    axes = _axes(dim, a.ndim, "var", a.shape)
    n = a.size if axes is None else math.prod([a.shape[d] for d in axes])
    d = sub(a, mean(a, axes, keepdim=True))
    return mul(sum(mul(d, d), axes, keepdim), _inverse_count(n - (1 if unbiased else 0)))


def _nonempty_reduction(op, a, axes):
    if a.size == 0 and (axes is None or any(a.shape[d] == 0 for d in axes)):
        raise ValueError(f"{op}: reduces an empty dimension of shape {a.shape}, which has no {op[1:]}imum "
                         f"(give a dim whose size is not 0)")
    return axes


def amax(a, dim=None, keepdim=False):
    axes = _nonempty_reduction("amax", a, _axes(dim, a.ndim, "amax", a.shape))
    return Max.apply(a, axis=axes, keepdims=keepdim)


def amin(a, dim=None, keepdim=False):
    axes = _nonempty_reduction("amin", a, _axes(dim, a.ndim, "amin", a.shape))
    return Max.apply(a, axis=axes, keepdims=keepdim, is_min=True)


# ------------------------------------------------------------------------ shape operations
class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


class Permute(Function):
    def forward(self, a, dims):
        self.inv = tuple(np.argsort(dims))
        return a.transpose(dims)

    def backward(self, g):
        return g.transpose(self.inv)


class GetItem(Function):
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        xp = _xp(g)
        out = xp.zeros(self.shape, dtype=self.dtype)
        # a scatter-add accumulates correctly when an index repeats (fancy indexing)
        if _is_basic_index(self.index):
            out[self.index] += g
        else:
            backend.scatter_add(out, self.index, g)
        return out


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


def reshape(a, shape):
    shape = tuple(shape)
    known = math.prod([d for d in shape if d != -1])
    free = shape.count(-1)
    if free > 1 or any(d < -1 for d in shape) or (
            a.size != known if free == 0 else (known == 0 or a.size % known)):
        raise ValueError(f"reshape: cannot make a tensor of shape {a.shape} ({a.size} elements) into shape {shape}"
                         + (" (-1 is ambiguous for an empty tensor: give every size)" if free and known == 0 else ""))
    return Reshape.apply(a, shape=shape)


def flatten(a, start_dim=0, end_dim=-1):
    if a.ndim == 0:
        return reshape(a, (1,))  # as torch.flatten of a 0-d tensor
    s, e = _dim("flatten", start_dim, a.shape), _dim("flatten", end_dim, a.shape)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {a.shape}")
    # the merged size given, not -1, so that an empty batch (N = 0) flattens too
    shape = a.shape[:s] + (math.prod(a.shape[s:e + 1]),) + a.shape[e + 1:]
    return reshape(a, shape)


def permute(a, dims):
    return Permute.apply(a, dims=tuple(_dim("permute", d, a.shape) for d in dims))


def transpose(a, dim0, dim1):
    dims = list(range(a.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(a, dims)


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(a, index=index)


# ------------------------------------------------------------------------ matmul
class MatMul(Function):
    """``a @ b`` for operands of two or more dimensions (batch dimensions broadcast)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        xp = _xp(g)
        na, nb = self.needs_input_grad
        ga = g @ xp.swapaxes(self.b, -1, -2) if na else None
        gb = xp.swapaxes(self.a, -1, -2) @ g if nb else None
        return ga, gb  # broadcast batch dimensions are summed by the engine


def matmul(a, b):
    a, b = _pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match (inner dimensions differ)")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    out = MatMul.apply(a, b)
    if squeeze_a or squeeze_b:
        shape = out.shape[:-2] + (() if squeeze_a else out.shape[-2:-1]) + (() if squeeze_b else out.shape[-1:])
        out = reshape(out, shape)
    return out


# ------------------------------------------------------------------------ softmax family
class LogSoftmax(Function):
    def forward(self, a, axis):
        xp = _xp(a)
        shifted = a - a.max(axis=axis, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.out, self.axis = out, axis
        return out

    def backward(self, g):
        xp = _xp(g)
        return g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class Softmax(Function):
    def forward(self, a, axis):
        xp = _xp(a)
        e = xp.exp(a - a.max(axis=axis, keepdims=True))
        self.out, self.axis = e / e.sum(axis=axis, keepdims=True), axis
        return self.out

    def backward(self, g):
        s = self.out
        return s * (g - (g * s).sum(axis=self.axis, keepdims=True))


def log_softmax(a, dim=-1):
    axis = _dim("log_softmax", dim, a.shape)
    if a.ndim == 0:  # PyTorch: a 0-d tensor is one class, log-probability 0
        return reshape(LogSoftmax.apply(reshape(a, (1,)), axis=0), ())
    return LogSoftmax.apply(a, axis=axis)


def softmax(a, dim=-1):
    axis = _dim("softmax", dim, a.shape)
    if a.ndim == 0:  # PyTorch: a 0-d tensor is one class, probability 1
        return reshape(Softmax.apply(reshape(a, (1,)), axis=0), ())
    return Softmax.apply(a, axis=axis)


# ------------------------------------------------------------------------ copies, joins, size-1 axes
class Clone(Function):
    """A copy of the values that stays in the graph (PyTorch's ``clone``): the gradient passes through."""

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


class Cat(Function):
    """Tensors joined along one axis; the gradient is cut back into the pieces."""

    def forward(self, *arrays, axis):
        self.axis, self.dtypes = axis, [a.dtype for a in arrays]
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()
        return _xp(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        parts = _xp(g).split(g, self.bounds, axis=self.axis)
        return tuple(p.astype(d, copy=False) if n else None
                     for p, d, n in zip(parts, self.dtypes, self.needs_input_grad))


def clone(a):
    """A copy of ``a`` whose gradient flows back to ``a`` (``torch.clone``)."""
    return Clone.apply(a)


def _tensors(op, tensors):
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of Tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty list of Tensors")
    out = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    devices = {t.device for t in out}
    if len(devices) > 1:
        raise ValueError(f"{op}: the tensors are on different devices ({', '.join(sorted(devices))})")
    return out


def cat(tensors, dim=0):
    """``tensors`` joined along ``dim`` (``torch.cat``): every other size must agree."""
    ts = _tensors("cat", tensors)
    first = ts[0]
    if first.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated (use stack)")
    axis = _dim("cat", dim, first.shape)
    for i, t in enumerate(ts[1:], 1):
        if t.ndim != first.ndim or t.shape[:axis] + t.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
            raise ValueError(f"cat: tensor {i} has shape {t.shape}, tensor 0 has {first.shape}: all sizes but "
                             f"dim {dim}'s must agree")
    return Cat.apply(*ts, axis=axis)


def stack(tensors, dim=0):
    """``tensors`` (all of one shape) stacked along a new axis ``dim`` (``torch.stack``)."""
    ts = _tensors("stack", tensors)
    for i, t in enumerate(ts[1:], 1):
        if t.shape != ts[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape}, tensor 0 has {ts[0].shape}: "
                             f"stack needs one shape")
    return cat([unsqueeze(t, dim) for t in ts], dim)


def unsqueeze(a, dim):
    """``a`` with a new axis of size 1 at ``dim`` (-ndim-1 <= dim <= ndim), as ``torch.unsqueeze``."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"unsqueeze: dim must be an int, got {dim!r}")
    if not -a.ndim - 1 <= dim <= a.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of shape {a.shape} "
                         f"(expected {-a.ndim - 1}..{a.ndim})")
    dim = dim % (a.ndim + 1)
    return reshape(a, a.shape[:dim] + (1,) + a.shape[dim:])


def squeeze(a, dim=None):
    """``a`` without its axes of size 1 (all of them, or those among ``dim``, an int or a tuple); an axis
    named in ``dim`` whose size is not 1 stays, as in ``torch.squeeze``."""
    if dim is None:
        axes = {i for i, s in enumerate(a.shape) if s == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {i for i in (_dim("squeeze", d, a.shape) for d in dims) if a.ndim and a.shape[i] == 1}
    return reshape(a, tuple(s for i, s in enumerate(a.shape) if i not in axes))
