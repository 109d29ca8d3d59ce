"""Tensor reductions and elementwise operations (functional/ops.py and the Tensor methods over it):
each against a definition written here with Python loops and against PyTorch, values, indices and
gradients, over random shapes and dims, with ties, keepdim, unbiased variance, 0-d and empty
tensors.

The reductions' definitions group the input's positions by the output position they reduce into
(`_groups`); ties are broken towards the first position in C order of the reduced coordinates,
which is what `Tensor.max(dim)` returns as its index and where cnnlab sends the gradient (PyTorch's
max(dim) does the same; its amax and full max() share a tied gradient out evenly instead, so with
ties the gradients are held against the definition only).
"""

import math
import warnings

import numpy as np
import pytest
import torch

import cnnlab
import cnnlab.functional as F
from harness import check_op

# ----------------------------------------------------------------------------- the definitions


def _dims(dim, ndim):
    """The reduced axes as a sorted tuple (all of them for None; 0-d tensors reduce over nothing)."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted(d % ndim for d in dims)) if ndim else ()


def _groups(shape, dims):
    """{kept coordinates: [input positions reducing into them, in C order]}."""
    groups = {}
    for idx in np.ndindex(*shape):
        groups.setdefault(tuple(i for d, i in enumerate(idx) if d not in dims), []).append(idx)
    return groups


def _mean(v):
    return math.fsum(v) / len(v) if v else math.nan


def _var(v, ddof):
    if len(v) - ddof <= 0:
        return math.nan
    mu = math.fsum(v) / len(v)
    return math.fsum((t - mu) ** 2 for t in v) / (len(v) - ddof)


def _first(v, better):
    """(the best value, the position of its first occurrence)."""
    best = 0
    for i, t in enumerate(v):
        if better(t, v[best]):
            best = i
    return v[best], best


# name -> (value and winner of a slice's values, d value / d each value)
FOLDS = {
    "sum": (lambda v: (math.fsum(v), 0), lambda v: [1.0] * len(v)),
    "mean": (lambda v: (_mean(v), 0), lambda v: [1.0 / len(v)] * len(v)),
    "var": (lambda v: (_var(v, 1), 0), lambda v: [2 * (t - _mean(v)) / (len(v) - 1) for t in v]),
    "var_biased": (lambda v: (_var(v, 0), 0), lambda v: [2 * (t - _mean(v)) / len(v) for t in v]),
    "max": (lambda v: _first(v, lambda a, b: a > b), None),
    "min": (lambda v: _first(v, lambda a, b: a < b), None),
}


def naive_reduce(x, name, dim=None, keepdim=False, upstream=None):
    """(values, winner indices, gradient of sum(values * upstream)) by the definition, one slice at a time.

    The index is the winner's position among the slice's positions in C order: for one reduced
    dim, its coordinate along that dim (Tensor.max(dim).indices)."""
    fold, deriv = FOLDS[name]
    dims = _dims(dim, x.ndim)
    kept = tuple(s for d, s in enumerate(x.shape) if d not in dims)
    groups = _groups(x.shape, dims)
    values, index = np.zeros(kept), np.zeros(kept, dtype=np.int64)
    grad = np.zeros(x.shape)
    u = None if upstream is None else np.asarray(upstream, dtype=np.float64).reshape(kept)
    for key in np.ndindex(*kept):
        members = groups.get(key, [])
        vals = [float(x[m]) for m in members]
        values[key], index[key] = fold(vals)
        if u is not None:
            weights = deriv(vals) if deriv else [float(i == index[key]) for i in range(len(vals))]
            for m, wgt in zip(members, weights):
                grad[m] += wgt * u[key]
    if keepdim:
        shape = tuple(1 if d in dims else s for d, s in enumerate(x.shape))
        values, index = values.reshape(shape), index.reshape(shape)
    return values, index, grad


# ----------------------------------------------------------------------------- the operations
def _cnn(name, t, dim, keepdim):
    if name == "var":
        return t.var(dim, keepdim)
    if name == "var_biased":
        return t.var(dim, keepdim, unbiased=False)
    return {"max": t.amax, "min": t.amin, "sum": t.sum, "mean": t.mean}[name](dim, keepdim)


def _torch(name, t, dim, keepdim):
    if name in ("var", "var_biased"):
        return t.var(dim=dim, keepdim=keepdim, unbiased=name == "var")
    if name in ("max", "min"):
        fn = t.amax if name == "max" else t.amin
        return fn(dim=() if dim is None else dim, keepdim=keepdim)
    return getattr(t, name)(dim=dim, keepdim=keepdim)


def _config(seed, single_dim=False):
    """A random shape (1-4 dims of 1-4), dim (None, an int, maybe negative, or an unsorted tuple) and keepdim."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(s) for s in rng.integers(1, 5 if ndim < 4 else 4, size=ndim))
    kind = rng.integers(0, 2 if single_dim else 3)
    if kind == 0 and not single_dim:
        dim = None
    elif kind == 2 or (kind == 0 and single_dim):
        dim = int(rng.integers(-ndim, ndim))
    else:
        k = int(rng.integers(1, ndim + 1))
        dim = tuple(int(d) - (ndim if rng.random() < 0.3 else 0) for d in rng.permutation(ndim)[:k])
        dim = dim[0] if single_dim else dim
    return shape, dim, bool(rng.random() < 0.5)


REDUCTIONS = list(FOLDS)
SEEDS = range(10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction(name, seed):
    """No ties: the definition, finite differences and PyTorch (float64 and float32) via the harness."""
    shape, dim, keepdim = _config(seed)
    if name.startswith("var") and int(np.prod([shape[d] for d in _dims(dim, len(shape))])) < 2:
        shape = tuple(s + 1 for s in shape)  # a variance over one value is NaN: tested below
    check_op(lambda t: _cnn(name, t, dim, keepdim), [shape], lambda a: naive_reduce(a, name, dim, keepdim)[0],
             lambda t: _torch(name, t, dim, keepdim), seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_with_ties(name, seed):
    """Small integers (many ties): values against the definition and PyTorch, gradients against the
    definition (the first tied position takes a max's or min's gradient)."""
    shape, dim, keepdim = _config(100 + seed)
    if name.startswith("var") and int(np.prod([shape[d] for d in _dims(dim, len(shape))])) < 2:
        shape = tuple(s + 1 for s in shape)  # one value's variance is NaN: see test_variance_of_one_value_is_nan
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    t = cnnlab.tensor(x, requires_grad=True)
    out = _cnn(name, t, dim, keepdim)
    u = rng.standard_normal(out.shape)
    values, _, grad = naive_reduce(x, name, dim, keepdim, u)
    np.testing.assert_allclose(out.numpy(), values, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), _torch(name, torch.tensor(x), dim, keepdim).numpy(), rtol=1e-12,
                               atol=1e-12)
    out.backward(u)
    np.testing.assert_allclose(t.grad.numpy(), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("ties", [False, True])
def test_max_min_with_dim_give_values_and_indices(name, seed, ties):
    """Tensor.max(dim) / min(dim): values, indices and gradients against the definition and PyTorch
    (whose max(dim)/min(dim) also send the gradient to the returned index)."""
    shape, dim, keepdim = _config(200 + seed, single_dim=True)
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float64) if ties else rng.standard_normal(shape)
    t = cnnlab.tensor(x, requires_grad=True)
    res = getattr(t, name)(dim, keepdim)
    values, indices = res
    assert res.values is values and res.indices is indices
    u = rng.standard_normal(values.shape)
    ref_values, ref_index, ref_grad = naive_reduce(x, name, dim, keepdim, u)
    tt = torch.tensor(x, requires_grad=True)
    tres = getattr(tt, name)(dim, keepdim)
    for ours, ref, theirs in ((values.numpy(), ref_values, tres.values.detach().numpy()),
                              (indices.numpy(), ref_index, tres.indices.numpy())):
        assert ours.shape == ref.shape == theirs.shape
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_array_equal(ours, theirs)
    assert indices.dtype.kind == "i"
    values.backward(u)
    tres.values.backward(torch.tensor(u))
    np.testing.assert_array_equal(t.grad.numpy(), ref_grad)
    np.testing.assert_array_equal(t.grad.numpy(), tt.grad.numpy())


@pytest.mark.parametrize("ties", [False, True])
def test_full_max_min_and_argmax(ties):
    rng = np.random.default_rng(3)
    for shape in [(5,), (3, 4), (2, 3, 4)]:
        x = rng.integers(-2, 3, size=shape).astype(np.float64) if ties else rng.standard_normal(shape)
        for name in ("max", "min"):
            t = cnnlab.tensor(x, requires_grad=True)
            out = getattr(t, name)()
            values, _, grad = naive_reduce(x, name, None, False, 2.0)
            assert out.shape == () and out.item() == values == getattr(torch.tensor(x), name)().item()
            out.backward(np.array(2.0))
            np.testing.assert_array_equal(t.grad.numpy(), grad)  # one winner: the first in C order
        t, tt = cnnlab.tensor(x), torch.tensor(x)
        assert t.argmax().item() == naive_reduce(x, "max")[1].item() == tt.argmax().item()
        for d in range(-len(shape), len(shape)):
            for keepdim in (False, True):
                ours = t.argmax(d, keepdim).numpy()
                np.testing.assert_array_equal(ours, naive_reduce(x, "max", d, keepdim)[1])
                np.testing.assert_array_equal(ours, tt.argmax(d, keepdim).numpy())


def test_the_values_min_returns_are_the_minima():
    """The hole the mutation audit found: min(dim=0) of [[1, 5, 5], [7, 2, 3]] is [1, 2, 3], at [0, 1, 1]."""
    t = cnnlab.tensor(np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 3.0]]))
    assert t.min(dim=0).values.tolist() == [1.0, 2.0, 3.0] and t.min(dim=0).indices.tolist() == [0, 1, 1]
    assert t.amin().item() == 1.0 and t.min().item() == 1.0 and t.amin(1).tolist() == [1.0, 2.0]
    assert t.max(dim=1).values.tolist() == [5.0, 7.0] and t.max(dim=1).indices.tolist() == [1, 0]


@pytest.mark.parametrize("dims", [(0, 1), (1, 0), (-1, 0), (2, 0, 1), (1, 2)])
@pytest.mark.parametrize("name", ["max", "min"])
def test_tied_gradient_goes_to_the_first_in_c_order_whatever_the_order_of_dims(name, dims):
    """amax((1, 0)) and amax((0, 1)) are one reduction: the same winner (found by a mutation-style
    review: the winner used to depend on the order the dims were written in)."""
    x = np.array([[[0.0, 5.0], [5.0, 1.0]], [[5.0, 0.0], [2.0, 5.0]]])
    if name == "min":
        x = -x
    t = cnnlab.tensor(x, requires_grad=True)
    out = _cnn(name, t, dims, False)
    u = np.arange(1.0, out.size + 1).reshape(out.shape)
    out.backward(u)
    np.testing.assert_array_equal(t.grad.numpy(), naive_reduce(x, name, dims, False, u)[2])


def test_a_dim_out_of_range_is_an_error_not_another_dim():
    """PyTorch raises for dim 2 of a 2-D tensor; wrapping it round to dim 0 would reduce the wrong axis."""
    t = cnnlab.tensor(np.ones((2, 3)))
    for call in (lambda: t.sum(2), lambda: t.mean(-3), lambda: t.var((0, 2)), lambda: t.amax(5), lambda: t.max(2),
                 lambda: t.softmax(2), lambda: t.log_softmax(-3), lambda: t.permute(0, 2), lambda: t.flatten(0, 2),
                 lambda: cnnlab.tensor(np.array(1.0)).sum(1)):
        with pytest.raises(IndexError, match="out of range"):
            call()
    with pytest.raises(IndexError):
        torch.ones(2, 3).sum(2)


@pytest.mark.parametrize("unbiased", [True, False])
def test_variance_divisor(unbiased):
    """sum((x - mean)^2) / (n - 1) unbiased (PyTorch's default), / n biased: for [1, 2, 3, 4] 5/3 and 5/4."""
    t = cnnlab.tensor(np.array([1.0, 2.0, 3.0, 4.0]))
    assert t.var(unbiased=unbiased).item() == pytest.approx(5 / 3 if unbiased else 5 / 4, rel=1e-15)
    assert t.var().item() == pytest.approx(5 / 3, rel=1e-15)  # the default is unbiased


def test_zero_dimensional_tensors():
    x = np.array(2.5)
    tt = torch.tensor(x)
    for name in ("sum", "mean", "max", "min", "var_biased"):
        for dim in (None, 0, -1):
            for keepdim in (False, True):
                t = cnnlab.tensor(x, requires_grad=True)
                out = _cnn(name, t, dim, keepdim)
                ref = _torch(name, tt, dim, keepdim)
                assert out.shape == tuple(ref.shape) == ()
                assert out.item() == ref.item() == naive_reduce(x, name, dim, keepdim)[0].item()
                out.backward()
                assert t.grad.item() == (0.0 if name == "var_biased" else 1.0)
    values, indices = cnnlab.tensor(x).max(0)
    assert values.item() == 2.5 and indices.item() == 0 == tt.max(0).indices.item()
    assert cnnlab.tensor(x).argmax().item() == 0


def test_variance_of_one_value_is_nan():
    """n - 1 = 0 degrees of freedom: NaN, as in PyTorch (which warns), not 0."""
    x = np.array([[1.5, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.tensor(x).var(0)
        ours = cnnlab.tensor(x).var(0)
        scalar = cnnlab.tensor(np.array(4.0)).var()
    assert np.isnan(ref.numpy()).all() and np.isnan(ours.numpy()).all() and ours.shape == (3,)
    assert np.isnan(scalar.item())
    np.testing.assert_allclose(cnnlab.tensor(x).var(0, unbiased=False).numpy(), [0.0, 0.0, 0.0])


def test_empty_tensors():
    x = np.zeros((0, 3))
    tt = torch.tensor(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, dim in (("sum", 0), ("sum", None), ("sum", 1), ("mean", 0), ("mean", None), ("mean", 1),
                          ("var", 0), ("var_biased", 0), ("max", 1), ("min", 1)):
            ours = _cnn(name, cnnlab.tensor(x), dim, False).numpy()
            ref = _torch(name, tt, dim, False).numpy()
            assert ours.shape == ref.shape, (name, dim)
            np.testing.assert_array_equal(ours, ref)  # sums 0, means and variances NaN
            np.testing.assert_array_equal(ours, naive_reduce(x, name, dim)[0])
    values, indices = cnnlab.tensor(x).max(1)
    assert values.shape == indices.shape == (0,)
    for reduce_an_empty_dim in (lambda t: t.max(), lambda t: t.amax(0), lambda t: t.min(0), lambda t: t.max(0)):
        with pytest.raises(ValueError):  # no maximum of nothing (PyTorch raises too)
            reduce_an_empty_dim(cnnlab.tensor(x))
    t = cnnlab.tensor(x, requires_grad=True)
    t.sum(0).backward(np.ones(3))
    assert t.grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_keep_the_dtype(dtype):
    t = cnnlab.tensor(np.ones((3, 4), dtype))
    for out in (t.sum(), t.mean(1), t.var(0), t.amax(1), t.amin(), t.max(0).values, t.min(1)[0]):
        assert out.dtype == dtype
    assert t.max(0).indices.dtype.kind == "i"


# ----------------------------------------------------------------------------- elementwise
def _vec(f):
    """f applied to every pair of broadcast elements, one Python number at a time."""
    def ref(*arrays):
        arrays = np.broadcast_arrays(*arrays)
        out = np.zeros(arrays[0].shape)
        for idx in np.ndindex(*out.shape):
            out[idx] = f(*(float(a[idx]) for a in arrays))
        return out
    return ref


BROADCAST = [((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((5,), ()), ((2, 3), (2, 3))]
BINARY = [  # name, operation on Tensors (and torch tensors), the definition per element, positive b?
    ("add", lambda a, b: a + b, lambda p, q: p + q, False),
    ("sub", lambda a, b: a - b, lambda p, q: p - q, False),
    ("mul", lambda a, b: a * b, lambda p, q: p * q, False),
    ("div", lambda a, b: a / b, lambda p, q: p / q, True),
    ("pow", lambda a, b: b ** a, lambda p, q: q ** p, True),  # Tensor ** Tensor
]


@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
@pytest.mark.parametrize("name,op,definition,positive", BINARY, ids=[b[0] for b in BINARY])
def test_binary_with_broadcasting(name, op, definition, positive, shapes):
    rng = np.random.default_rng(len(name))
    a = rng.standard_normal(shapes[0])
    b = rng.uniform(0.5, 2.0, shapes[1]) * (1 if positive else rng.choice([-1, 1], shapes[1]))
    check_op(op, [a, b], _vec(definition), op)


SCALAR = [  # Tensor op Python number, both ways round, and unary operators
    ("t+2", lambda t: t + 2.0, lambda v: v + 2.0),
    ("2+t", lambda t: 2.0 + t, lambda v: 2.0 + v),
    ("t-2", lambda t: t - 2.0, lambda v: v - 2.0),
    ("2-t", lambda t: 2.0 - t, lambda v: 2.0 - v),
    ("t*3", lambda t: t * 3.0, lambda v: v * 3.0),
    ("3*t", lambda t: 3.0 * t, lambda v: 3.0 * v),
    ("t/4", lambda t: t / 4.0, lambda v: v / 4.0),
    ("4/t", lambda t: 4.0 / t, lambda v: 4.0 / v),
    ("-t", lambda t: -t, lambda v: -v),
    ("t**2", lambda t: t ** 2, lambda v: v * v),
    ("t**3", lambda t: t ** 3, lambda v: v * v * v),
    ("t**-1.5", lambda t: t ** -1.5, lambda v: 1 / (v * math.sqrt(v))),
    ("t**0.5", lambda t: t ** 0.5, lambda v: math.sqrt(v)),
    ("pow(t,2)", lambda t: t.pow(2), lambda v: v * v),
    ("exp", lambda t: t.exp(), lambda v: math.exp(v)),
    ("log", lambda t: t.log(), lambda v: math.log(v)),
    ("sqrt", lambda t: t.sqrt(), lambda v: math.sqrt(v)),
    ("abs", lambda t: t.abs(), lambda v: v if v > 0 else -v),
    ("relu", lambda t: t.relu(), lambda v: v if v > 0 else 0.0),
    ("sigmoid", lambda t: t.sigmoid(), lambda v: 1 / (1 + math.exp(-v))),
    ("tanh", lambda t: t.tanh(), lambda v: math.tanh(v)),
    ("clamp", lambda t: t.clamp(-0.5, 0.7), lambda v: min(max(v, -0.5), 0.7)),
    ("clamp_min", lambda t: t.clamp(min=0.2), lambda v: max(v, 0.2)),
    ("clamp_max", lambda t: t.clamp(max=-0.1), lambda v: min(v, -0.1)),
]
POSITIVE_ONLY = {"4/t", "t**-1.5", "t**0.5", "log", "sqrt"}


@pytest.mark.parametrize("name,op,definition", SCALAR, ids=[s[0] for s in SCALAR])
def test_elementwise(name, op, definition):
    rng = np.random.default_rng(7)
    x = rng.uniform(0.3, 2.0, (3, 5)) if name in POSITIVE_ONLY else rng.standard_normal((3, 5))
    x[np.abs(x) < 0.05] = 0.3  # away from the kinks of abs, relu (finite differences step over them)
    if name.startswith("clamp"):
        x[np.min(np.abs(x[..., None] - np.array([-0.5, 0.7, 0.2, -0.1])), axis=-1) < 0.05] = 1.5
    check_op(op, [x], _vec(definition), op)


FUNCTIONAL = [  # the cnnlab.functional spelling of elementwise operations, against torch's
    ("abs", F.abs, torch.abs, lambda v: abs(v)),
    ("exp", F.exp, torch.exp, math.exp),
    ("log", F.log, torch.log, math.log),
    ("sqrt", F.sqrt, torch.sqrt, math.sqrt),
    ("clamp", lambda t: F.clamp(t, -0.5, 0.5), lambda t: torch.clamp(t, -0.5, 0.5), lambda v: min(max(v, -0.5), 0.5)),
    ("clamp_min", lambda t: F.clamp(t, min=0.1), lambda t: torch.clamp(t, min=0.1), lambda v: max(v, 0.1)),
]


@pytest.mark.parametrize("name,fn,tfn,definition", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_forms(name, fn, tfn, definition):
    x = np.random.default_rng(8).uniform(0.2, 2.0, (4, 3)) * (1 if name in ("log", "sqrt") else
                                                              np.array([1, -1, 1]))
    x[np.abs(np.abs(x) - 0.5) < 0.05] = 1.5  # off clamp's bounds
    x[np.abs(x - 0.1) < 0.05] = 1.5
    check_op(fn, [x], _vec(definition), tfn)


def test_functional_matmul():
    check_op(F.matmul, [(2, 3, 4), (4, 5)], _naive_matmul, torch.matmul)
    with pytest.raises(ValueError, match="do not match"):
        F.matmul(cnnlab.tensor(np.ones((2, 3))), cnnlab.tensor(np.ones((2, 3))))


def test_gradients_at_the_kinks_follow_pytorch():
    """Where the derivative jumps, the one-sided choice PyTorch makes: relu'(0) = 0, |x|'(0) = 0, and a
    clamp passes the gradient at its bounds."""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 0.7, 1.0])
    for op in (lambda t: t.relu(), lambda t: t.abs(), lambda t: t.clamp(-0.5, 0.7), lambda t: t.clamp(min=0.0),
               lambda t: t.clamp(max=0.5)):
        t, tt = cnnlab.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        op(t).backward(np.arange(1.0, 7.0))
        op(tt).backward(torch.arange(1.0, 7.0, dtype=torch.float64))
        np.testing.assert_array_equal(t.grad.numpy(), tt.grad.numpy())
    t = cnnlab.tensor(x, requires_grad=True)
    t.clamp(-0.5, 0.7).backward(np.ones(6))
    np.testing.assert_array_equal(t.grad.numpy(), [0, 1, 1, 1, 1, 0])  # the bounds included


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalars_never_change_the_dtype(dtype):
    t = cnnlab.tensor(np.ones(3, dtype), requires_grad=True)
    outs = [t + 1.5, 1.5 + t, t - np.float64(2), 2 - t, t * 3, np.float64(3) * t, t / 2, 2 / t, t ** 2, t ** 0.5,
            -t, t.clamp(0.0, 2.0), t.exp(), t.log(), t.sqrt(), t.abs(), t.sigmoid(), t.tanh(), t.relu()]
    for out in outs:
        assert out.dtype == dtype
    sum(o.sum() for o in outs).backward()
    assert t.grad.dtype == dtype


COMPARISONS = [("==", lambda a, b: a == b), ("!=", lambda a, b: a != b), ("<", lambda a, b: a < b),
               ("<=", lambda a, b: a <= b), (">", lambda a, b: a > b), (">=", lambda a, b: a >= b)]


@pytest.mark.parametrize("name,op", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparisons(name, op):
    rng = np.random.default_rng(0)
    a = rng.integers(-1, 2, (3, 4)).astype(np.float64)  # equal elements on purpose
    b = rng.integers(-1, 2, (4,)).astype(np.float64)
    for other, plain in ((cnnlab.tensor(b), b), (b, b), (0.0, np.array(0.0))):
        ours = op(cnnlab.tensor(a, requires_grad=True), other)
        ref = _vec(lambda p, q: float(op(p, q)))(a, plain).astype(bool)
        assert ours.dtype == np.bool_ and not ours.requires_grad
        np.testing.assert_array_equal(ours.numpy(), ref)
        np.testing.assert_array_equal(ours.numpy(), op(torch.tensor(a), torch.tensor(np.asarray(other))).numpy())


def _naive_matmul(a, b):
    """out[..., i, j] = sum_k a[..., i, k] b[..., k, j], with NumPy's 1-D promotion and batch broadcasting."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3, b3 = np.broadcast_to(a2, batch + a2.shape[-2:]), np.broadcast_to(b2, batch + b2.shape[-2:])
    out = np.zeros(batch + (a2.shape[-2], b2.shape[-1]))
    for idx in np.ndindex(*out.shape):
        *bi, i, j = idx
        out[idx] = math.fsum(a3[tuple(bi) + (i, k)] * b3[tuple(bi) + (k, j)] for k in range(a2.shape[-1]))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                    ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                                    ((3,), (2, 3, 4))], ids=str)
def test_matmul(shapes):
    check_op(lambda a, b: a @ b, list(shapes), _naive_matmul, lambda a, b: a @ b)
    check_op(lambda a, b: a.matmul(b), list(shapes), _naive_matmul, torch.matmul, seed=1)


SHAPE_OPS = [  # each on a (2, 3, 4) tensor, then scaled so that the gradient is not all ones
    ("reshape", lambda t: t.reshape(4, 6), lambda a: np.array([a.ravel()[i] for i in range(24)]).reshape(4, 6)),
    ("reshape-1", lambda t: t.reshape((3, -1)), lambda a: a.ravel().reshape(3, 8)),
    ("view", lambda t: t.view(24), lambda a: a.ravel()),
    ("permute", lambda t: t.permute(2, 0, 1), lambda a: np.array([[[a[i, j, k] for j in range(3)] for i in range(2)]
                                                                  for k in range(4)])),
    ("permute_cycle", lambda t: t.permute((1, 2, 0)), lambda a: np.array(
        [[[a[i, j, k] for i in range(2)] for k in range(4)] for j in range(3)])),
    ("transpose", lambda t: t.transpose(0, 2), lambda a: np.array(
        [[[a[i, j, k] for i in range(2)] for j in range(3)] for k in range(4)])),
    ("flatten1", lambda t: t.flatten(1), lambda a: a.reshape(2, 12)),
    ("flatten_mid", lambda t: t.flatten(0, 1), lambda a: a.reshape(6, 4)),
    ("slice", lambda t: t[1:, ::2, -1], lambda a: np.array([[a[i, j, 3] for j in (0, 2)] for i in (1,)])),
    ("int_index", lambda t: t[1], lambda a: a[1]),
    ("ellipsis", lambda t: t[..., 1:3], lambda a: a[:, :, 1:3]),
    ("fancy_repeats", lambda t: t[np.array([0, 1, 0, 0])], lambda a: np.stack([a[0], a[1], a[0], a[0]])),
    ("fancy_pairs", lambda t: t[np.array([0, 1, 1]), np.array([2, 0, 2])],
     lambda a: np.stack([a[0, 2], a[1, 0], a[1, 2]])),
]


@pytest.mark.parametrize("name,op,definition", SHAPE_OPS, ids=[s[0] for s in SHAPE_OPS])
def test_shape_operations(name, op, definition):
    """Values against the definition and PyTorch; gradients (repeated indices accumulate) against both."""
    def torch_op(t):
        if name.startswith("fancy"):  # torch wants tensor indices
            return {"fancy_repeats": lambda: t[torch.tensor([0, 1, 0, 0])],
                    "fancy_pairs": lambda: t[torch.tensor([0, 1, 1]), torch.tensor([2, 0, 2])]}[name]()
        return op(t)

    check_op(op, [(2, 3, 4)], definition, torch_op)


def test_transpose_property_and_boolean_mask():
    x = np.random.default_rng(0).standard_normal((3, 4))
    check_op(lambda t: t.T, [x], lambda a: np.array([[a[i, j] for i in range(3)] for j in range(4)]), lambda t: t.T)
    mask = x > 0
    check_op(lambda t: t[mask], [x], lambda a: np.array([a[i] for i in np.ndindex(3, 4) if mask[i]]),
             lambda t: t[torch.tensor(mask)])


def test_softmax_family_over_every_dim():
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    def sm(a, dim):
        """exp(a) / sum of exp(a) along dim, slice by slice."""
        out = np.zeros_like(a)
        for idx in np.ndindex(*np.delete(a.shape, dim % a.ndim)):
            sl = list(idx)
            sl.insert(dim % a.ndim, slice(None))
            e = [math.exp(v) for v in a[tuple(sl)]]
            out[tuple(sl)] = np.array(e) / math.fsum(e)
        return out

    for dim in (0, 1, 2, -1):
        check_op(lambda t, d=dim: t.softmax(d), [x], lambda a, d=dim: sm(a, d), lambda t, d=dim: t.softmax(d))
        check_op(lambda t, d=dim: t.log_softmax(d), [x], lambda a, d=dim: np.log(sm(a, d)),
                 lambda t, d=dim: t.log_softmax(d))
