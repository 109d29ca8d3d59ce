"""The operator harness (tests/harness.py) fails where it should: each of its three checks, given
an operator wrong in the way that check looks for, raises."""

import numpy as np
import pytest
import torch

import cnnlab.functional as F
from cnnlab import Function, GradcheckError
from harness import check_op


class WrongBackward(Function):
    """tanh forward with the gradient of sigmoid's (a plausible slip): right values, wrong gradients."""

    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class Float32Cast(Function):
    """relu that returns float32 whatever comes in (a silent downcast)."""

    def forward(self, a):
        self.mask = a > 0
        return (a * self.mask).astype(np.float32)

    def backward(self, g):
        return g * self.mask


def test_a_correct_operator_passes():
    check_op(F.tanh, [(3, 4)], np.tanh, torch.tanh)


def test_a_wrong_forward_fails_against_the_definition():
    with pytest.raises(AssertionError, match="against the definition"):
        check_op(F.tanh, [(3, 4)], lambda a: np.tanh(a) + 1e-8, None, fd=False)


def test_a_wrong_backward_fails_by_finite_differences():
    with pytest.raises(GradcheckError):
        check_op(WrongBackward.apply, [(3, 4)], np.tanh, None)


def test_a_wrong_backward_fails_against_torch():
    with pytest.raises(AssertionError, match="gradient of input 0"):
        check_op(WrongBackward.apply, [(3, 4)], None, torch.tanh, fd=False)


def test_a_wrong_forward_fails_against_torch():
    with pytest.raises(AssertionError, match="forward relative error"):
        check_op(lambda t: F.tanh(t) * 1.001, [(3, 4)], None, torch.tanh, fd=False)


def test_a_changed_dtype_fails():
    with pytest.raises(AssertionError, match="float64 in, float32 out"):
        check_op(Float32Cast.apply, [(3, 4)], lambda a: np.maximum(a, 0), None, fd=False)


def test_kwargs_reach_all_three_functions():
    x = np.random.default_rng(0).standard_normal((3, 4))
    check_op(F.softmax, [x], lambda a, dim: np.exp(a) / np.exp(a).sum(dim, keepdims=True), torch.softmax,
             kwargs={"dim": 0})
    with pytest.raises(AssertionError):  # a reference that ignores dim differs from softmax over dim 0
        check_op(F.softmax, [x], lambda a, dim: np.exp(a) / np.exp(a).sum(1, keepdims=True), None,
                 kwargs={"dim": 0}, fd=False)
