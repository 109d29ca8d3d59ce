"""The engine: graph building, backward, broadcasting, accumulation, dtypes."""

import numpy as np
import pytest

import cnnlab
from cnnlab import Tensor
from harness import check_gradients, check_op, torch

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 4))
B = rng.standard_normal((4,))
P = rng.uniform(0.5, 2.0, (3, 4))

BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("radd", lambda a, b: 2.0 + a * b), ("rsub", lambda a, b: 1.0 - a * b),
    ("rdiv", lambda a, b: 1.0 / (a * a + 1) + b),
]
UNARY = [
    ("neg", lambda a: -a), ("pow3", lambda a: a ** 3), ("pow_half", lambda a: (a * a + 1) ** 0.5),
    ("exp", lambda a: a.exp()), ("log", lambda a: (a * a + 1).log()), ("sqrt", lambda a: (a * a + 1).sqrt()),
    ("abs", lambda a: a.abs()), ("sum", lambda a: a.sum()), ("sum0", lambda a: a.sum(0)),
    ("sum1k", lambda a: a.sum(1, keepdim=True)), ("mean", lambda a: a.mean()), ("mean1", lambda a: a.mean(1)),
    ("var", lambda a: a.var(1)), ("max", lambda a: a.max()), ("max1", lambda a: a.max(1).values),
    ("min0", lambda a: a.min(0, keepdim=True)[0]), ("amax", lambda a: a.amax((0, 1))), ("reshape", lambda a: a.reshape(4, 3) * 2),
    ("transpose", lambda a: a.T * 2), ("permute", lambda a: a.reshape(3, 2, 2).permute(2, 0, 1) * 1),
    ("getitem", lambda a: a[1:, ::2] * 3), ("fancy", lambda a: a[np.array([0, 2, 0])] * 1),
    ("clamp", lambda a: a.clamp(-0.5, 0.5)), ("matmul_self", lambda a: a @ a.T),
]


@pytest.mark.parametrize("name,fn", BINARY, ids=[b[0] for b in BINARY])
def test_binary_with_broadcasting(name, fn):
    """The lambdas are plain arithmetic: on NumPy arrays they are the definition, on torch tensors PyTorch."""
    check_op(fn, [P, B + 3.0], fn, fn)


def test_matmul_against_torch():
    check_op(lambda a, b: a @ b, [P, B + 3.0], lambda a, b: a @ b, lambda a, b: a @ b)


@pytest.mark.parametrize("name,fn", UNARY, ids=[u[0] for u in UNARY])
def test_unary_graphs(name, fn):
    """Finite differences and PyTorch (the same method calls) on graphs of one to three operators."""
    check_op(fn, [A + 0.01 * np.arange(12).reshape(3, 4)], None, fn)


def test_matmul_shapes():
    check_gradients(lambda a, b: a @ b, [rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))])
    check_gradients(lambda a, b: a @ b, [rng.standard_normal(4), rng.standard_normal((4, 5))])
    check_gradients(lambda a, b: a @ b, [rng.standard_normal((3, 4)), rng.standard_normal(4)])
    with pytest.raises(ValueError, match="do not match"):
        cnnlab.tensor(A) @ cnnlab.tensor(A)


def test_gradient_accumulates_across_uses_and_calls():
    x = cnnlab.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * x + x  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)
    (x * 3).sum().backward()  # a second backward adds to .grad
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 4)


def test_leaf_gradients_never_alias_each_other_or_the_callers_arrays():
    # add's backward hands one array to both inputs; a leaf must not share it with the other.
    a = cnnlab.tensor(np.ones(3), requires_grad=True)
    b = cnnlab.tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[...] = 7.0  # in-place edits (gradient clipping) touch one leaf only
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))
    # The same, with a fresh (not a view) array handed to both: (a + b) * c passes g * c to a and b.
    c = cnnlab.tensor(np.full(3, 2.0), requires_grad=True)
    a.grad = b.grad = None
    ((a + b) * c).backward(np.ones(3))
    assert not np.shares_memory(a.grad.data, b.grad.data)
    np.testing.assert_array_equal(a.grad.numpy(), np.full(3, 2.0))

    class Keeps(cnnlab.autograd.Function):  # a backward that keeps the array it returns
        def forward(self, x):
            return x * 2

        def backward(self, g):
            self.kept = g * 2
            return self.kept

    k = cnnlab.tensor(np.ones(3), requires_grad=True)
    out = Keeps.apply(k)
    out.backward(np.ones(3), retain_graph=True)
    assert not np.shares_memory(k.grad.data, out._ctx.kept)
    # The caller's gradient, and a leaf that is its own root.
    g = np.full(3, 2.0)
    c = cnnlab.tensor(np.ones(3), requires_grad=True)
    c.backward(g)
    assert not np.shares_memory(c.grad.data, g)
    # A view of a pending gradient (reshape's backward) and a kept graph.
    d = cnnlab.tensor(np.ones((2, 3)), requires_grad=True)
    e = cnnlab.tensor(np.ones(6), requires_grad=True)
    y = d.reshape(6) * 1.0 + e
    y.sum().backward(retain_graph=True)
    assert not np.shares_memory(d.grad.data, e.grad.data)
    y.sum().backward()
    np.testing.assert_array_equal(d.grad.numpy(), np.full((2, 3), 2.0))
    np.testing.assert_array_equal(e.grad.numpy(), np.full(6, 2.0))


def test_a_leaf_takes_a_fresh_weight_gradient_without_a_copy():
    import weakref

    from cnnlab.functional import layers

    made = []
    original = layers.Linear.backward

    def spy(self, g):
        out = original(self, g)
        made.append(weakref.ref(out[1]))  # a weak reference: it must not count as a holder
        return out

    layers.Linear.backward = spy
    try:
        w = cnnlab.tensor(rng.standard_normal((5, 4)), requires_grad=True)
        x = cnnlab.tensor(rng.standard_normal((3, 4)))
        cnnlab.functional.linear(x, w).sum().backward()
    finally:
        layers.Linear.backward = original
    assert made[0]() is w.grad.data  # the array Linear.backward made, not a copy of it
    np.testing.assert_allclose(w.grad.numpy(), np.ones((3, 5)).T @ x.numpy())


def test_a_leaf_takes_a_reshaped_fresh_gradient_without_a_copy_but_never_a_shared_one():
    class Reshaped(cnnlab.autograd.Function):  # a backward that hands back a view of a fresh array
        def forward(self, x):
            return x.reshape(-1) * 2

        def backward(self, g):
            return (g * 2).reshape(self.inputs[0].shape)

    class Twice(cnnlab.autograd.Function):  # two whole views of one array, one to each input
        def forward(self, a, b):
            return a + b

        def backward(self, g):
            both = g * 1.0
            return both.reshape(both.shape), both.reshape(both.shape)

    class Part(cnnlab.autograd.Function):  # a view of part of an array
        def forward(self, a):
            return a * 1.0

        def backward(self, g):
            return np.concatenate([g, g])[: g.shape[0]]

    w = cnnlab.tensor(np.ones((2, 3)), requires_grad=True)
    out = Reshaped.apply(w)
    out.backward(np.ones(6))
    base = w.grad.data.base
    assert base is not None and base.base is None and base.size == 6  # the view itself, no copy
    np.testing.assert_array_equal(w.grad.numpy(), np.full((2, 3), 2.0))
    a = cnnlab.tensor(np.ones(3), requires_grad=True)
    b = cnnlab.tensor(np.ones(3), requires_grad=True)
    Twice.apply(a, b).backward(np.ones(3))
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[...] = 5.0
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))
    c = cnnlab.tensor(np.ones(3), requires_grad=True)
    Part.apply(c).backward(np.ones(3))
    assert c.grad.data.base is None  # a copy: the view covers half of its array


def test_deep_graph_needs_no_recursion():
    x = cnnlab.tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(20000):
        y = y * 1.0001
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 20000], rtol=1e-9)


def test_diamond_graph():
    x = cnnlab.tensor(np.array(3.0), requires_grad=True)
    a = x * 2
    b = x * x
    (a * b).backward()  # d/dx 2x^3 = 6x^2
    assert x.grad.item() == pytest.approx(54.0)


def test_no_grad_and_detach():
    x = cnnlab.tensor(np.ones(3), requires_grad=True)
    with cnnlab.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    z = (x * 2).detach()
    assert not z.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_enable_grad_inside_no_grad_and_nesting():
    x = cnnlab.tensor(np.ones(3), requires_grad=True)
    assert cnnlab.is_grad_enabled()
    with cnnlab.no_grad():
        assert not cnnlab.is_grad_enabled()
        with cnnlab.enable_grad():
            assert cnnlab.is_grad_enabled()
            y = x * 2  # recorded
        assert not cnnlab.is_grad_enabled()  # restored to the enclosing state
        z = x * 2
    assert cnnlab.is_grad_enabled()
    assert y.requires_grad and not y.is_leaf and not z.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])
    with pytest.raises(KeyError):  # an exception inside still restores the state
        with cnnlab.no_grad():
            raise KeyError
    assert cnnlab.is_grad_enabled()


def test_backward_errors():
    x = cnnlab.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(4))


def test_dtypes_float32_default_and_no_upcast():
    assert cnnlab.tensor([1.0, 2.0]).dtype == np.float32
    assert cnnlab.tensor(np.array([1.0])).dtype == np.float64
    assert cnnlab.tensor([1, 2]).dtype.kind == "i"
    x = cnnlab.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2.5 + 1) / 3 - x ** 2
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert cnnlab.tensor([1.0], dtype=np.float64).dtype == np.float64


def test_max_with_dim_gives_values_and_indices():
    t = cnnlab.tensor(np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 3.0]]))
    values, indices = t.max(1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert t.min(dim=0).indices.tolist() == [0, 1, 1]
    assert t.min(dim=0).values.tolist() == [1.0, 2.0, 3.0]
    tt = torch.tensor(t.numpy())
    assert tt.max(1).indices.tolist() == indices.tolist()


def test_tensor_copies_like_torch_tensor():
    a = np.zeros(3)
    t = cnnlab.tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 0


def test_tensor_api_surface():
    t = cnnlab.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.numel() == 6 and len(t) == 2
    assert isinstance(t.grad, type(None))
    assert t.argmax(1).tolist() == [2, 2]
    assert (t > 2).numpy().sum() == 3
    assert "requires_grad=True" in repr(t)
    (t.sum()).backward()
    assert isinstance(t.grad, Tensor)
    assert t.to(dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(t), t.numpy())
    assert isinstance(np.ones((2, 3)) + t, Tensor)  # NumPy defers to the Tensor
