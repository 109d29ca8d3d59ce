"""Modules: parameters, state dicts, modes, initialisers, parameter counts."""

import math

import numpy as np
import pytest
import torch

import cnnlab
import cnnlab.functional as F
from cnnlab import nn


def nielsen_net():
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 40, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10))


def test_parameter_counts_of_the_article():
    assert nn.Conv2d(1, 20, 5).num_parameters() == 520
    assert nn.Linear(784, 30).num_parameters() == 23550
    assert sum(p.size for p in nielsen_net().parameters()) == 520 + 20040 + 64100 + 1010


def test_named_parameters_state_dict_round_trip():
    net = nielsen_net()
    names = [n for n, _ in net.named_parameters()]
    assert names[:2] == ["0.weight", "0.bias"] and names[-1] == "9.bias"
    sd = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    cnnlab.manual_seed(1)
    other = nielsen_net()
    other.load_state_dict(sd)
    x = cnnlab.tensor(np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(net(x).numpy(), other(x).numpy())


def test_load_state_dict_names_what_differs():
    net = nielsen_net()
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    sd["7.weight"] = np.zeros((100, 641), np.float32)
    del sd["9.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert "9.bias" in msg and "extra" in msg and "7.weight" in msg and "(100, 640)" in msg


def test_batchnorm_buffers_and_modes():
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var"]
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    x = cnnlab.tensor(np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32) + 2)
    bn(x)
    # momentum 0.1 from (0, 1): 0.1 * the batch mean (about 0.2) and 0.9 + 0.1 * the unbiased variance
    a = x.numpy().astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * a.mean(1), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * a.var(1, ddof=1), rtol=1e-5)
    net = nn.Sequential(nn.Dropout(0.5), bn)
    net.eval()
    assert not bn.training and not net.layers[0].training
    np.testing.assert_array_equal(net.layers[0](x).numpy(), x.numpy())


def test_repr_is_readable():
    r = repr(nielsen_net())
    assert "(0): Conv2d(1, 20, kernel_size=(5, 5), stride=(1, 1))" in r
    assert "(7): Linear(in_features=640, out_features=100, bias=True)" in r


def test_initialisers_statistics():
    cnnlab.manual_seed(0)
    w = nn.Parameter(np.zeros((200, 100, 3, 3), np.float32))
    nn.init.kaiming_normal_(w)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 900), rel=0.02)
    nn.init.xavier_uniform_(w)
    bound = math.sqrt(6 / (900 + 1800))  # U(-b, b): std b / sqrt(3); 180,000 draws come within 0.1% of b
    assert bound * 0.999 < np.abs(w.numpy()).max() <= bound + 1e-7
    assert w.numpy().std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert abs(w.numpy().mean()) < 0.01 * bound
    nn.init.nielsen_normal_(w, n_out=20 * 25 / 4)
    assert w.numpy().std() == pytest.approx(math.sqrt(4 / 500), rel=0.02)
    assert w.dtype == np.float32


def test_seed_gives_identical_weights():
    cnnlab.manual_seed(7)
    a = nielsen_net()
    cnnlab.manual_seed(7)
    b = nielsen_net()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_whole_network_against_torch():
    """Nielsen's net: same weights in cnnlab and PyTorch give the same loss and gradients."""
    net = nielsen_net().double()
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(20, 40, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(640, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10)).double()
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()})
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)
    loss = F.cross_entropy(net(cnnlab.tensor(x)), y)
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y))
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-12)
    for (name, p), tp in zip(net.named_parameters(), tnet.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="divisible"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm2d(3)(cnnlab.tensor(np.ones((2, 4, 3, 3), np.float32)))
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), 3)


@pytest.mark.parametrize("conv_first", [True, False])
@pytest.mark.parametrize("act", [nn.ReLU, nn.Sigmoid, nn.Tanh])
def test_fuse_pools_before_a_monotone_activation_exactly(act, conv_first):
    """nn.fuse runs act -> max-pool as max-pool -> act (ConvMaxPoolAct after a convolution,
    MaxPoolAct elsewhere): same values and gradients."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 8, 8))
    x[0, 0, :2, :2] = 0.0  # a window of ties at the ReLU's kink
    x[1, 1, 2:4, 2:4] = -1.0  # a window with every element negative
    conv = nn.Conv2d(2, 3, 3).double() if conv_first else nn.Identity()
    seq = nn.fuse(nn.Sequential(conv, act(), nn.MaxPool2d(2)))
    assert type(seq.layers[-1]) is (nn.ConvMaxPoolAct if conv_first else nn.MaxPoolAct)
    xs = cnnlab.tensor(x, requires_grad=True)
    out = seq(xs)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    grads = [xs.grad.numpy().copy()] + [p.grad.numpy().copy() for p in conv.parameters()]
    # the same layers called one by one, in the written order
    conv.zero_grad()
    xl = cnnlab.tensor(x, requires_grad=True)
    ref = nn.MaxPool2d(2)(act()(conv(xl)))
    ref.backward(g)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    for a, b in zip(grads, [xl.grad.numpy()] + [p.grad.numpy() for p in conv.parameters()]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert len(grads) == (3 if conv_first else 1)
