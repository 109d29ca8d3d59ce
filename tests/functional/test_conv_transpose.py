"""Transposed 2-D convolution (F.conv_transpose2d, nn.ConvTranspose2d): the definition as loops (each
input value scatters its kernel into the output), float64 finite differences and PyTorch."""

import itertools

import numpy as np
import pytest
import torch

import cnnlab
import cnnlab.functional as F
from cnnlab import nn
from harness import check_op


def naive_conv_transpose2d(x, w, b=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1,
                           dilation=(1, 1)):
    """out[n, g*Fg + f, i*s - p + j*dl] += x[n, g*Cg + c, i] * w[g*Cg + c, f, j], one term at a time."""
    N, C, H, W = x.shape
    Cg, Fg, KH, KW = C // groups, w.shape[1], w.shape[2], w.shape[3]
    OH = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (KH - 1) + output_padding[0] + 1
    OW = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (KW - 1) + output_padding[1] + 1
    out = np.zeros((N, Fg * groups, OH, OW))
    for n, c, i, j, f, kh, kw in itertools.product(range(N), range(C), range(H), range(W), range(Fg), range(KH),
                                                    range(KW)):
        oi = i * stride[0] - padding[0] + kh * dilation[0]
        oj = j * stride[1] - padding[1] + kw * dilation[1]
        if 0 <= oi < OH and 0 <= oj < OW:
            out[n, (c // Cg) * Fg + f, oi, oj] += x[n, c, i, j] * w[c, f, kh, kw]
    if b is not None:
        out += b[None, :, None, None]
    return out


CASES = [  # input, weight, settings
    ((2, 3, 4, 5), (3, 2, 3, 3), dict()),
    ((1, 2, 3, 4), (2, 3, 3, 2), dict(stride=2, padding=1, output_padding=1)),
    ((2, 4, 3, 3), (4, 1, 2, 3), dict(stride=(2, 3), groups=2)),
    ((1, 2, 4, 3), (2, 2, 3, 3), dict(stride=3, padding=2, output_padding=(2, 1), dilation=1)),
    ((1, 2, 3, 3), (2, 1, 2, 2), dict(dilation=2, padding=1, output_padding=1, stride=2)),
    ((2, 2, 3, 4), (2, 2, 2, 3), dict(dilation=2, output_padding=1)),  # output_padding >= stride: the other path
    ((1, 8, 10, 10), (8, 8, 3, 3), dict(padding=1)),  # 8 channels: Winograd (channels-last rows) on the CPU
]


def _tuples(settings):
    t = {k: (v, v) if isinstance(v, int) and k != "groups" else v for k, v in settings.items()}
    return t


@pytest.mark.parametrize("xs,ws,settings", CASES, ids=[str(c[2]) for c in CASES])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_transpose2d(xs, ws, settings, with_bias):
    F_out = ws[1] * settings.get("groups", 1)
    shapes = [xs, ws] + ([(F_out,)] if with_bias else [])
    check_op(lambda *t: F.conv_transpose2d(*t, **settings), shapes,
             lambda *a: naive_conv_transpose2d(*a, **_tuples(settings)),
             lambda *t: torch.nn.functional.conv_transpose2d(*t, **settings))


def test_module_matches_torch_and_upsamples():
    cnnlab.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    tlayer = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    assert [(k, v.shape) for k, v in layer.state_dict().items()] == [(k, tuple(v.shape)) for k, v in
                                                                     tlayer.state_dict().items()]
    tlayer.load_state_dict({k: torch.tensor(v.numpy()) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5))
    xt, txt = cnnlab.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = layer(xt), tlayer(txt)
    assert out.shape == (2, 6, 10, 10) == tuple(tout.shape)  # doubled
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), txt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), tp in zip(layer.named_parameters(), tlayer.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    # the default initialisation has PyTorch's bound, 1/sqrt(fan_in) with fan_in = (out/groups) * k * k
    w = nn.ConvTranspose2d(8, 16, 3).weight.numpy()
    assert w.shape == (8, 16, 3, 3) and 0.9 / np.sqrt(144) < np.abs(w).max() <= 1 / np.sqrt(144)


def test_bad_settings_name_the_problem():
    x = cnnlab.tensor(np.ones((1, 2, 3, 3)))
    w = cnnlab.tensor(np.ones((2, 1, 3, 3)))
    with pytest.raises(ValueError, match="output_padding must be non-negative and smaller than stride"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="input has 3 channels"):
        F.conv_transpose2d(cnnlab.tensor(np.ones((1, 3, 3, 3))), w)
    with pytest.raises(ValueError, match="padding is too large"):
        F.conv_transpose2d(x, w, padding=3)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.ConvTranspose2d(3, 4, 2, groups=2)
    assert F.conv_transpose2d(cnnlab.tensor(np.ones((2, 3, 3))), w).shape == (1, 5, 5)  # no batch axis
