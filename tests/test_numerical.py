"""cnnlab.gradcheck: it passes correct backward passes and catches wrong ones, with a clear message.

Every operator's finite-difference test (tests/harness.py: check_op, check_gradients) goes through
it, so these tests show that those checks can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnlab
from cnnlab import Function, GradcheckError, gradcheck
from cnnlab import functional as F
from cnnlab.numerical import relative_error


class _Cube(Function):
    """x**3 with a backward pass that can be made wrong on purpose."""

    mistake = None

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        d = 3 * self.x ** 2
        if _Cube.mistake == "factor":
            d = 2 * self.x ** 2  # the exponent's factor forgotten
        elif _Cube.mistake == "flip":
            d = d[::-1].copy()  # gradients sent to the wrong elements
        elif _Cube.mistake == "tiny":
            d = d * (1 + 1e-4)  # a small systematic error
        return g * d


class _Scaled(Function):
    """a * b with the gradient of b dropped: only input 1 is wrong."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, np.zeros_like(self.a)


@pytest.fixture(autouse=True)
def _reset():
    _Cube.mistake = None
    yield
    _Cube.mistake = None


def _x(n=6, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def test_a_correct_function_passes_with_a_tiny_error():
    errors = gradcheck(_Cube.apply, [_x()])
    assert set(errors) == {0} and errors[0] < 1e-8


@pytest.mark.parametrize("mistake", ["factor", "flip", "tiny"])
def test_wrong_backward_passes_are_caught(mistake):
    _Cube.mistake = mistake
    with pytest.raises(GradcheckError, match=r"gradient of input 0 \(shape \(6,\)\) has relative error"):
        gradcheck(_Cube.apply, [_x()])
    errors = gradcheck(_Cube.apply, [_x()], raise_exception=False)
    assert errors[0] > 1e-6


def test_the_message_names_the_input_and_the_worst_element():
    a, b = _x(4, 1), _x(4, 2)
    with pytest.raises(GradcheckError) as info:
        gradcheck(_Scaled.apply, [a, b])
    msg = str(info.value)
    u = np.random.default_rng(0).standard_normal(4)  # gradcheck's upstream gradient (seed 0)
    # d(sum(a*b*u))/db = a*u: the dropped gradient is largest where |a*u| is
    worst = int(np.argmax(np.abs(a * u)))
    assert "input 1" in msg and f"index ({worst},)" in msg and "backward 0," in msg


def test_constants_are_passed_as_given():
    """Integer labels as a Tensor without requires_grad: a constant, not checked, not cast."""
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((3, 5)), cnnlab.tensor(np.array([0, 4, 2]))
    errors = gradcheck(lambda z, y: F.cross_entropy(z, y), [logits, labels])
    assert set(errors) == {0} and errors[0] < 1e-8


def test_only_tensors_that_require_grad_are_checked():
    a, b = _x(4, 1), _x(4, 2)
    errors = gradcheck(_Scaled.apply, [a, cnnlab.tensor(b)])  # b a constant: its wrong gradient is not asked for
    assert set(errors) == {0} and errors[0] < 1e-8
    with pytest.raises(ValueError, match="no input to check"):
        gradcheck(_Scaled.apply, [cnnlab.tensor(a), cnnlab.tensor(b)])


def test_a_small_network_passes():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    lw, y = rng.standard_normal((4, 12)), np.array([1, 3])

    def net(x, w, b, lw):
        h = F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)
        return F.cross_entropy(F.linear(F.flatten(h, 1), lw), cnnlab.tensor(y))

    errors = gradcheck(net, [x, w, b, lw])
    assert set(errors) == {0, 1, 2, 3} and max(errors.values()) < 1e-7


def test_finite_differences_by_hand_for_a_quadratic():
    """sum(u * x^2): the central difference is exact for a quadratic, the gradient is 2 u x."""
    x = _x(5)
    assert gradcheck(lambda t: t * t, [x])[0] < 1e-9


@pytest.mark.parametrize("fn,inputs,error,match", [
    (lambda t: t, [np.arange(3)], TypeError, "input 0 holds int64"),
    (lambda t: t.float(), [np.ones(3)], TypeError, "float32 values from float64 inputs"),
    (lambda t: t.numpy(), [np.ones(3)], TypeError, "must return a cnnlab Tensor"),
    (lambda t: t, [], ValueError, "no inputs"),
    (lambda t: t, [np.ones(3)], ValueError, "eps must be"),
    (lambda t: t, [np.ones(3)], ValueError, "tol must be"),
    ("not a function", [np.ones(3)], TypeError, "fn must be callable"),
])
def test_misuse_is_a_clear_error(fn, inputs, error, match):
    kwargs = {"eps must be": {"eps": True}, "tol must be": {"tol": -1.0}}.get(match, {})
    with pytest.raises(error, match=match):
        gradcheck(fn, inputs, **kwargs)


def test_relative_error():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert relative_error([1.0], [-1.0]) == 1.0
    assert relative_error([3.0], [1.0]) == pytest.approx(0.5)
