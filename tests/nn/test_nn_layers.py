"""The parameter-free modules of nn/layers.py against the same torch.nn modules (values and input
gradients, float64 and float32, through the harness), and their settings."""

import math

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import nn
from harness import check_op
from helpers import naive_pool

T = torch.nn


def _softmax_rows(a, dim):
    e = np.exp(a - a.max(dim, keepdims=True))
    return e / e.sum(dim, keepdims=True)


MODULES = [  # name, cnnlab module, torch module, input shape, the definition
    ("Identity", nn.Identity(), T.Identity(), (3, 4), lambda a: a),
    ("Softmax", nn.Softmax(dim=1), T.Softmax(dim=1), (3, 4, 2), lambda a: _softmax_rows(a, 1)),
    ("Softmax-default", nn.Softmax(), T.Softmax(dim=-1), (3, 4), lambda a: _softmax_rows(a, -1)),
    ("LogSoftmax", nn.LogSoftmax(dim=0), T.LogSoftmax(dim=0), (3, 4), lambda a: np.log(_softmax_rows(a, 0))),
    ("LogSoftmax-default", nn.LogSoftmax(), T.LogSoftmax(dim=-1), (2, 5), lambda a: np.log(_softmax_rows(a, -1))),
    ("MaxPool1d", nn.MaxPool1d(3, stride=2, padding=1), T.MaxPool1d(3, stride=2, padding=1), (2, 3, 9),
     lambda a: naive_pool(a, (3,), (2,), (1,), "max")),
    ("MaxPool3d", nn.MaxPool3d(2, stride=(1, 2, 2)), T.MaxPool3d(2, stride=(1, 2, 2)), (1, 2, 4, 5, 4),
     lambda a: naive_pool(a, (2, 2, 2), (1, 2, 2), (0, 0, 0), "max")),
    ("AvgPool1d", nn.AvgPool1d(3, stride=2, padding=1), T.AvgPool1d(3, stride=2, padding=1), (2, 3, 9),
     lambda a: naive_pool(a, (3,), (2,), (1,), "avg")),
    ("AvgPool2d", nn.AvgPool2d(2), T.AvgPool2d(2), (2, 3, 6, 5), lambda a: naive_pool(a, (2, 2), (2, 2), (0, 0), "avg")),
    ("AvgPool3d", nn.AvgPool3d((2, 3, 2), stride=(1, 2, 2)), T.AvgPool3d((2, 3, 2), stride=(1, 2, 2)), (1, 2, 4, 5, 4),
     lambda a: naive_pool(a, (2, 3, 2), (1, 2, 2), (0, 0, 0), "avg")),
    ("LPPool1d", nn.LPPool1d(2, 3, stride=2), T.LPPool1d(2, 3, stride=2), (2, 3, 9),
     lambda a: naive_pool(a, (3,), (2,), (0,), "lp", 2)),
    ("LPPool2d", nn.LPPool2d(2, 2), T.LPPool2d(2, 2), (2, 3, 6, 5), lambda a: naive_pool(a, (2, 2), (2, 2), (0, 0), "lp", 2)),
    ("LPPool3d", nn.LPPool3d(2, 2), T.LPPool3d(2, 2), (1, 2, 4, 4, 5),
     lambda a: naive_pool(a, (2, 2, 2), (2, 2, 2), (0, 0, 0), "lp", 2)),
]


@pytest.mark.parametrize("name,module,tmodule,shape,definition", MODULES, ids=[m[0] for m in MODULES])
def test_module_against_torch(name, module, tmodule, shape, definition):
    assert list(module.parameters()) == []
    check_op(module, [shape], definition, tmodule)


CONVS = [  # cnnlab, torch, input shape, settings
    (nn.Conv1d, T.Conv1d, (2, 4, 11), dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1,
                                          groups=2)),
    (nn.Conv2d, T.Conv2d, (2, 3, 9, 8), dict(in_channels=3, out_channels=4, kernel_size=(3, 2), dilation=2,
                                             bias=False)),
    (nn.Conv3d, T.Conv3d, (1, 2, 5, 6, 5), dict(in_channels=2, out_channels=3, kernel_size=2, padding=(1, 0, 1))),
]


@pytest.mark.parametrize("cls,tcls,shape,settings", CONVS, ids=[c[0].__name__ for c in CONVS])
def test_conv_modules_against_torch(cls, tcls, shape, settings):
    """Same weights in both: output, the input's and every parameter's gradient, float64."""
    cnnlab.manual_seed(0)
    conv = cls(**settings).double()
    tconv = tcls(**settings).double()
    tconv.load_state_dict({k: torch.tensor(v.numpy()) for k, v in conv.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    xt, txt = cnnlab.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = conv(xt), tconv(txt)
    g = rng.standard_normal(tuple(tout.shape))
    out.backward(g)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), txt.grad.numpy(), rtol=1e-10, atol=1e-12)
    names = [n for n, _ in conv.named_parameters()]
    assert names == [n for n, _ in tconv.named_parameters()] == (["weight", "bias"] if settings.get("bias", True)
                                                                else ["weight"])
    for (name, p), tp in zip(conv.named_parameters(), tconv.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_identity_returns_its_input():
    x = cnnlab.tensor(np.ones(3), requires_grad=True)
    assert nn.Identity()(x) is x


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_module(reduction, smoothing):
    target = np.array([2, 0, 4, 4, 1])
    loss, tloss = nn.CrossEntropyLoss(label_smoothing=smoothing, reduction=reduction), T.CrossEntropyLoss(
        label_smoothing=smoothing, reduction=reduction)

    def definition(a):
        logp = a - np.log(np.exp(a).sum(1, keepdims=True))
        each = -(1 - smoothing) * logp[np.arange(5), target] - smoothing / a.shape[1] * logp.sum(1)
        return {"mean": each.mean(), "sum": each.sum(), "none": each}[reduction]

    check_op(lambda t: loss(t, target), [(5, 6)], definition, lambda t: tloss(t, torch.tensor(target)))


def test_the_defaults_are_pytorchs():
    assert nn.Softmax().dim == -1 and nn.LogSoftmax().dim == -1
    ce = nn.CrossEntropyLoss()
    assert (ce.label_smoothing, ce.reduction) == (0.0, "mean")
    x = np.random.default_rng(0).standard_normal((4, 3))
    y = np.array([0, 2, 1, 1])
    assert ce(cnnlab.tensor(x), y).item() == pytest.approx(T.CrossEntropyLoss()(torch.tensor(x), torch.tensor(y)).item(),
                                                        rel=1e-12)
    pool = nn.AvgPool1d(4)
    assert pool.stride == pool.kernel_size == (4,)  # stride defaults to the kernel
    lp = nn.LPPool3d(3, 2)
    assert lp.norm_type == 3 and lp.stride == lp.kernel_size == (2, 2, 2)


def test_lp_pool_of_a_higher_norm():
    x = np.abs(np.random.default_rng(1).standard_normal((1, 2, 6)))
    out = nn.LPPool1d(3, 2)(cnnlab.tensor(x)).numpy()
    ref = np.array([[[math.fsum(v ** 3 for v in x[0, c, 2 * i:2 * i + 2]) ** (1 / 3) for i in range(3)]
                     for c in range(2)]])
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    np.testing.assert_allclose(out, T.LPPool1d(3, 2)(torch.tensor(x)).numpy(), rtol=1e-12)
