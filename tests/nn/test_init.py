"""nn.init: each initialiser's distribution against its formula (and PyTorch's samples of the same
formula), in place, keeping the dtype; the constant fills exactly."""

import math

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import nn

SHAPE = (200, 100, 3, 3)  # fan_in 900, fan_out 1800: 180,000 draws


def _weight(dtype=np.float32):
    return nn.Parameter(np.zeros(SHAPE, dtype))


def _torch_sample(init, **kwargs):
    torch.manual_seed(0)
    t = torch.zeros(SHAPE, dtype=torch.float64)
    init(t, **kwargs)
    return t.numpy()


def _uniform_check(w, bound):
    """U(-b, b): the extremes come within 0.1% of b (180,000 draws), std b / sqrt(3), mean 0."""
    a = w.numpy().astype(np.float64)
    assert bound * 0.999 < np.abs(a).max() <= bound * (1 + 1e-6)
    assert a.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(a.mean()) < 0.01 * bound


def _normal_check(w, std):
    a = w.numpy().astype(np.float64)
    assert a.std() == pytest.approx(std, rel=0.01)
    assert abs(a.mean()) < 0.01 * std
    assert np.abs(a).max() > 4 * std  # a normal, not a uniform of that std (whose max is 1.73 std)


@pytest.mark.parametrize("kwargs,gain,fan", [
    ({}, math.sqrt(2), 900),  # relu, fan_in
    ({"mode": "fan_out"}, math.sqrt(2), 1800),
    ({"nonlinearity": "tanh"}, 5 / 3, 900),
    ({"nonlinearity": "leaky_relu", "a": 0.2}, math.sqrt(2 / 1.04), 900),
    ({"nonlinearity": "linear"}, 1.0, 900),
])
def test_kaiming_uniform(kwargs, gain, fan):
    cnnlab.manual_seed(0)
    w = _weight()
    assert nn.init.kaiming_uniform_(w, **kwargs) is w
    bound = gain * math.sqrt(3 / fan)
    _uniform_check(w, bound)
    assert np.abs(_torch_sample(torch.nn.init.kaiming_uniform_, **kwargs)).max() == pytest.approx(bound, rel=1e-3)
    assert w.dtype == np.float32


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier_normal(gain):
    cnnlab.manual_seed(1)
    w = _weight(np.float64)
    assert nn.init.xavier_normal_(w, gain=gain) is w
    std = gain * math.sqrt(2 / (900 + 1800))
    _normal_check(w, std)
    assert _torch_sample(torch.nn.init.xavier_normal_, gain=gain).std() == pytest.approx(std, rel=0.01)
    assert w.dtype == np.float64


def test_xavier_uniform_and_kaiming_normal_match_pytorchs_formulas():
    cnnlab.manual_seed(2)
    w = _weight()
    nn.init.xavier_uniform_(w, gain=1.5)
    _uniform_check(w, 1.5 * math.sqrt(6 / 2700))
    nn.init.kaiming_normal_(w, mode="fan_out")
    _normal_check(w, math.sqrt(2 / 1800))
    assert _torch_sample(torch.nn.init.kaiming_normal_, mode="fan_out").std() == pytest.approx(
        math.sqrt(2 / 1800), rel=0.01)


def test_uniform_and_normal():
    cnnlab.manual_seed(4)
    w = _weight()
    assert nn.init.uniform_(w, -0.3, 0.5) is w
    a = w.numpy().astype(np.float64)
    assert -0.3 <= a.min() < -0.3 + 1e-3 and 0.5 - 1e-3 < a.max() < 0.5
    assert a.mean() == pytest.approx(0.1, abs=0.002) and a.std() == pytest.approx(0.8 / math.sqrt(12), rel=0.01)
    assert nn.init.normal_(w, 2.0, 0.5) is w
    a = w.numpy().astype(np.float64)
    assert a.mean() == pytest.approx(2.0, abs=0.005) and a.std() == pytest.approx(0.5, rel=0.01)
    assert w.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_fills(dtype):
    w = nn.Parameter(np.full((3, 4), 7.0, dtype))
    data = w.data
    assert nn.init.ones_(w) is w and w.data is data  # in place
    np.testing.assert_array_equal(w.numpy(), np.ones((3, 4)))
    assert nn.init.constant_(w, -0.25) is w and w.data is data
    np.testing.assert_array_equal(w.numpy(), np.full((3, 4), -0.25))
    assert nn.init.zeros_(w) is w
    np.testing.assert_array_equal(w.numpy(), np.zeros((3, 4)))
    assert w.dtype == dtype


def test_fans_and_the_default():
    assert nn.init.fans((200, 100, 3, 3)) == (900, 1800) and nn.init.fans((10, 784)) == (784, 10)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.fans((5,))
    cnnlab.manual_seed(3)
    w, b = _weight(), nn.Parameter(np.zeros(200, np.float32))
    nn.init.default_(w, b)
    _uniform_check(w, 1 / math.sqrt(900))  # PyTorch's Conv/Linear default
    assert np.abs(b.numpy()).max() <= 1 / math.sqrt(900) and b.numpy().std() > 0
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.kaiming_uniform_(w, nonlinearity="swish")


def test_the_seed_fixes_the_draws():
    a, b = _weight(), _weight()
    cnnlab.manual_seed(5)
    nn.init.kaiming_uniform_(a)
    cnnlab.manual_seed(5)
    nn.init.kaiming_uniform_(b)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    nn.init.kaiming_uniform_(b)
    assert not np.array_equal(a.numpy(), b.numpy())
