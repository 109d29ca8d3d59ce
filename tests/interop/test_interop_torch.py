"""PyTorch both ways: to_torch / from_torch, load_torch_state_dict, `cnnlab export --torch`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch  # the test extra installs it
from safetensors.torch import load_file

import cnnlab
from cnnlab import checkpoint, interop, models, nn
from cnnlab.cli import main


def _randomize(model, seed=1):
    """Every tensor random (variances positive), so that no output is trivially zero."""
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        values = rng.uniform(0.5, 1.5, t.shape) if name.endswith("running_var") else rng.normal(0, 0.3, t.shape)
        t.data[...] = values
    return model


def _ours(model, x):
    model.eval()
    with cnnlab.no_grad():
        return model(cnnlab.tensor(x)).numpy()


def _theirs(module, x):
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


X = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
MAPPED = [n for n in models.ZOO if n != "resnet-small"]
L2 = [models.spec("article", pool="l2"), models.spec("nielsen-conv2", pool="l2", activation="relu")]


@pytest.mark.parametrize("name", MAPPED + L2, ids=MAPPED + ["article-l2", "nielsen-conv2-l2"])
def test_every_zoo_sequential_round_trips_through_pytorch(name, tmp_path):
    # L2 pooling is torch.nn.LPPool2d(2, 2): the same definition, sqrt of each window's sum of squares
    model = _randomize(models.build(name)).eval()
    module = interop.to_torch(model)
    assert not module.training
    _close(_theirs(module, X), _ours(model, X))
    # what `cnnlab export --torch` writes loads strictly into the module torch_source describes
    interop.save_torch_state_dict(model, tmp_path / "w.safetensors")
    scope = {"nn": torch.nn}
    rebuilt = eval(interop.torch_source(model), scope)  # noqa: S307  (code this test made)
    rebuilt.load_state_dict(load_file(tmp_path / "w.safetensors"), strict=True)
    _close(_theirs(rebuilt, X), _ours(model, X))
    back = interop.from_torch(module)
    assert repr(back) == repr(model)
    np.testing.assert_array_equal(_ours(back, X), _ours(model, X))


def test_a_model_with_its_own_forward_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^to_torch: model is a ResNetSmall, which has its own forward"):
        interop.to_torch(models.build("resnet-small"))
    with pytest.raises(ValueError, match=r"model\[0\] is a ConvMaxPoolAct, which is a fused block"):
        interop.to_torch(nn.fuse(models.build("article")))


def test_one_and_three_dimensional_layers_map_both_ways():
    rng = np.random.default_rng(2)
    one = _randomize(nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(2),
                                   nn.LPPool1d(2, 2), nn.AvgPool1d(2, padding=1), nn.Flatten(), nn.Linear(12, 3),
                                   nn.Softmax(dim=1)))
    x1 = rng.standard_normal((2, 2, 16)).astype(np.float32)
    _close(_theirs(interop.to_torch(one), x1), _ours(one, x1))
    three = _randomize(nn.Sequential(nn.Conv3d(1, 2, 3, stride=(1, 2, 2), groups=1), nn.Tanh(), nn.MaxPool3d(2),
                                     nn.AvgPool3d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * 2 * 1 * 1, 2),
                                     nn.LogSoftmax(dim=-1)))
    x3 = rng.standard_normal((2, 1, 6, 6, 6)).astype(np.float32)
    _close(_theirs(interop.to_torch(three), x3), _ours(three, x3))
    np.testing.assert_array_equal(_ours(interop.from_torch(interop.to_torch(three)), x3), _ours(three, x3))


def _torch_net():
    """A PyTorch user's net: named children, a nested Sequential, batch norm after a few training
    passes (so its running statistics and num_batches_tracked are not the initial ones), L2 pooling."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(OrderedDict(
        conv=torch.nn.Conv2d(1, 6, 5, padding=2, bias=False), bn=torch.nn.BatchNorm2d(6), relu=torch.nn.ReLU(inplace=True),
        pool=torch.nn.LPPool2d(2, 2),
        block=torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3), torch.nn.LocalResponseNorm(3, k=2.0), torch.nn.Sigmoid(),
                                  torch.nn.AvgPool2d(2)),
        flat=torch.nn.Flatten(), drop=torch.nn.Dropout(0.1), fc=torch.nn.Linear(8 * 6 * 6, 10),
        bn1=torch.nn.BatchNorm1d(10)))
    with torch.no_grad():
        for p in net.parameters():  # affine weights other than ones and zeros
            p.add_(0.1 * torch.randn_like(p))
        for _ in range(3):  # training-mode passes move the running statistics
            net(torch.randn(16, 1, 28, 28))
    assert int(net.bn.num_batches_tracked) == 3
    return net.eval()


def test_a_pytorch_net_with_batch_norm_comes_into_cnnlab():
    net = _torch_net()
    model = interop.from_torch(net)
    assert not model.training and [type(m).__name__ for m in model.layers][:4] == ["Conv2d", "BatchNorm2d", "ReLU",
                                                                                    "LPPool2d"]
    _close(_ours(model, X), _theirs(net, X))
    # the same state_dict into a cnnlab model written by hand: num_batches_tracked is ignored
    mine = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.LPPool2d(2, 2),
                         nn.Sequential(nn.Conv2d(6, 8, 3), nn.LocalResponseNorm(3, k=2.0), nn.Sigmoid(),
                                       nn.AvgPool2d(2)),
                         nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * 6 * 6, 10), nn.BatchNorm1d(10))
    state = {k.replace("conv.", "0.").replace("bn.", "1.").replace("block.", "4.").replace("fc.", "7.")
             .replace("bn1.", "8."): v for k, v in net.state_dict().items()}
    assert "1.num_batches_tracked" in state
    interop.load_torch_state_dict(mine, state)
    _close(_ours(mine, X), _theirs(net, X))


@pytest.mark.parametrize("edit, message", [
    (lambda s: {k: v for k, v in s.items() if k != "0.weight"}, r"the state_dict lacks 1 of the model's 8 tensors: "
                                                              r"0.weight$"),
    (lambda s: {**s, "9.weight": torch.zeros(2)}, r"has 1 tensors the model does not: 9.weight$"),
    (lambda s: {**s, "0.weight": torch.zeros(6, 1, 3, 3)}, r"0.weight is \(6, 1, 3, 3\) in the state_dict, "
                                                           r"\(6, 1, 5, 5\) in the model$"),
    (lambda s: {**s, "0.weight": s["0.weight"].long()}, r"0.weight is int64, not floating point$"),
    (lambda s: {**s, "2.bias": torch.full((10,), float("nan"))}, r"2.bias holds 10 NaN or infinite values$"),
    (lambda s: {**s, "2.bias": [0.0] * 10}, r"2.bias is a list, not a tensor$"),
    (lambda s: list(s.items()), r"expected a mapping of names to tensors, got list$"),
])
def test_a_bad_state_dict_is_one_line(edit, message):
    def make():
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.BatchNorm2d(6), nn.Linear(4, 10))
    source = interop.to_torch(make()).state_dict()
    model = make()
    before = {k: t.numpy().copy() for k, t in model.state_dict().items()}
    with pytest.raises(ValueError, match=message) as e:
        interop.load_torch_state_dict(model, edit(source))
    assert str(e.value).startswith("load_torch_state_dict: ") and "\n" not in str(e.value)
    for k, t in model.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(t.numpy(), before[k])


@pytest.mark.parametrize("module, message", [
    (torch.nn.Sequential(torch.nn.MaxPool2d(2, ceil_mode=True)), r"module.0 \(MaxPool2d\) has ceil_mode=True, which "
                                                                 r"cnnlab's MaxPool2d does not support"),
    (torch.nn.Sequential(torch.nn.AvgPool2d(2, padding=1, count_include_pad=False)), "count_include_pad=False"),
    (torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")), "padding_mode='reflect'"),
    (torch.nn.Sequential(torch.nn.MaxPool2d(2, dilation=2)), "dilation=2"),
    (torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=None)), r"module.0 \(BatchNorm2d\) has momentum=None"),
    (torch.nn.Sequential(torch.nn.Softmax()), r"module.0 \(Softmax\) has dim=None"),
    (torch.nn.Sequential(torch.nn.ReLU(), torch.nn.PixelShuffle(2)), r"module.1 is a PixelShuffle, which has no "
                                                                     r"cnnlab counterpart"),
    (torch.nn.Sequential(torch.nn.Sequential(torch.nn.Bilinear(2, 2, 2))), "module.0.0 is a Bilinear"),
])
def test_what_cnnlab_cannot_compute_is_refused_by_name(module, message):
    with pytest.raises(ValueError, match=message) as e:
        interop.from_torch(module)
    assert "\n" not in str(e.value)

    class Own(torch.nn.Module):
        def forward(self, x):
            return x
    with pytest.raises(ValueError, match="module is a Own, which is a module of its own"):
        interop.from_torch(Own())


def test_export_writes_weights_pytorch_loads_strictly(tmp_path, capsys):
    model = _randomize(models.build("fast"))
    checkpoint.save_run(tmp_path / "run", model, models.spec_of(model), {"dataset": "mnist", "mean": 0.1, "std": 0.3})
    out = tmp_path / "out" / "fast.safetensors"
    assert main(["export", str(tmp_path / "run"), "--torch", str(out)]) == 0
    printed = capsys.readouterr().out
    code = printed.split("model = ", 1)[1].split("\nmodel.load_state_dict")[0]
    module = eval(code, {"nn": torch.nn})  # noqa: S307  (what export printed for the user)
    state = load_file(out)  # what the printed code does: no pickle
    assert int(state["2.num_batches_tracked"]) == 0
    module.load_state_dict(state, strict=True)
    _close(_theirs(module, X), _ours(model, X))
    assert "(pixel / 255 - 0.1000) / 0.3000" in printed and sorted(p.name for p in out.parent.iterdir()) == ["fast.safetensors"]
    # a model PyTorch cannot build: one line, exit 3 (bad input), nothing written
    res = _randomize(models.build("resnet-small"))
    checkpoint.save_run(tmp_path / "res", res, models.spec_of(res))
    assert main(["export", str(tmp_path / "res"), "--torch", str(tmp_path / "res.safetensors")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("cnnlab export: error: to_torch: model is a ResNetSmall") and err.count("\n") == 1
    assert not (tmp_path / "res.safetensors").exists()


def test_torch_source_is_plain_python_for_numpy_sizes():
    model = nn.Sequential(nn.Linear(np.int64(6), np.int32(2)), nn.MaxPool1d((np.int64(2),)))
    source = interop.torch_source(model)
    assert "nn.Linear(in_features=6, out_features=2, bias=True)" in source and "kernel_size=(2,)" in source, source
    eval(source, {"nn": torch.nn})  # noqa: S307  (code this test made): no NumPy needed to run it


def test_importing_interop_does_not_import_torch():
    code = "import sys, cnnlab, cnnlab.interop; print(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
