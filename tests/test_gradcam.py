"""Grad-CAM (viz/gradcam.py, `cnnlab show gradcam`): the numbers against a PyTorch computation of the same
on the same weights, the map's form, a synthetic model whose answer lies in one region, and the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab import checkpoint, models, nn, viz
from cnnlab.cli import main

T = torch.nn


def _pair():
    """The same small CNN in cnnlab and in PyTorch (float64, PyTorch's weights copied from cnnlab's)."""
    cnnlab.manual_seed(3)
    ours = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 5 * 5, 5)).double()
    theirs = T.Sequential(T.Conv2d(1, 4, 3), T.ReLU(), T.Conv2d(4, 6, 3, padding=1), T.BatchNorm2d(6), T.ReLU(),
                          T.MaxPool2d(2), T.Flatten(), T.Linear(6 * 5 * 5, 5)).double()
    rng = np.random.default_rng(0)
    ours[3].running_mean.data[...] = rng.standard_normal(6) * 0.1
    ours[3].running_var.data[...] = rng.uniform(0.5, 2, 6)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()}, strict=False)
    return ours, theirs.eval()


def _torch_gradcam(model, layer, x, k):
    """Grad-CAM as the paper defines it, in PyTorch: alpha = spatial mean of d y_k / d A, ReLU(sum alpha A),
    bilinear upsampling (align_corners=False)."""
    kept = {}

    def keep(module, args, out):
        out.retain_grad()
        kept["a"] = out

    h = layer.register_forward_hook(keep)
    logits = model(torch.tensor(x))
    h.remove()
    logits[0, k].backward()
    a, g = kept["a"], kept["a"].grad
    alpha = g.mean(dim=(2, 3))[0]
    cells = torch.relu((alpha[:, None, None] * a[0]).sum(0))
    up = torch.nn.functional.interpolate(cells[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    return up[0, 0].detach().numpy(), cells.detach().numpy(), alpha.detach().numpy(), logits.detach().numpy()[0]


@pytest.mark.parametrize("target", [None, 0, 3])
def test_numbers_match_a_pytorch_gradcam(target):
    ours, theirs = _pair()
    x = np.random.default_rng(1).standard_normal((1, 1, 12, 12))
    ours.train()  # grad_cam evaluates in eval mode and puts the mode back
    cam = viz.grad_cam(ours, x, target=target)
    k = int(theirs(torch.tensor(x)).argmax()) if target is None else target
    up, cells, alpha, logits = _torch_gradcam(theirs, theirs[2], x, k)
    assert cam.layer is ours[2] and cam.target == k and ours.training
    assert cam.map.shape == x.shape[2:] and cam.cells.shape == (10, 10)
    np.testing.assert_allclose(cam.weights, alpha, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cam.cells, cells, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cam.map, up, rtol=1e-10, atol=1e-14)
    assert cam.score == pytest.approx(logits[k], rel=1e-12)
    assert (cam.map >= 0).all() and cam.map.max() > 0
    # nothing left behind: no hook, no gradient in the weights, requires_grad as it was
    assert not ours[2].has_forward_hooks()
    assert all(p.grad is None and p.requires_grad for p in ours.parameters())


def test_the_same_numbers_in_a_fused_float32_model():
    ours, _ = _pair()
    x = np.random.default_rng(2).standard_normal((1, 1, 12, 12))
    want = viz.grad_cam(ours, x, target=1)
    fused = nn.fuse(ours.float())
    assert any(isinstance(m, nn.FusedModule) for m in fused.modules())
    got = viz.grad_cam(fused, x.astype(np.float32), target=1)
    np.testing.assert_allclose(got.map, want.map, rtol=1e-4, atol=1e-5 * want.map.max())


def test_bilinear_upsampling_is_pytorchs():
    cells = np.random.default_rng(4).random((3, 5))
    for shape in [(12, 7), (3, 5), (28, 28), (2, 9)]:
        want = torch.nn.functional.interpolate(torch.tensor(cells)[None, None], size=shape, mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(viz.gradcam.upsample(cells, shape), want, rtol=1e-12, atol=1e-15)


def _blob_model():
    """Class 0 counts bright spots (channel 0 of the conv, kernel +1), class 1 dark ones (channel 1,
    kernel -1), each through a global average: each answer depends only on where its spots are."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(2, 2, bias=False)).double()
    model[0].weight.data[...] = np.stack([np.ones((1, 3, 3)), -np.ones((1, 3, 3))])
    model[4].weight.data[...] = np.eye(2)
    return model


def test_the_map_lies_where_the_answer_comes_from():
    x = np.zeros((1, 1, 20, 20))
    x[0, 0, 3:6, 4:7] = 1.0     # a bright spot, top left
    x[0, 0, 14:17, 13:16] = -1.0  # a dark spot, bottom right
    model = _blob_model()
    for k, (rows, cols) in enumerate([(slice(1, 8), slice(2, 9)), (slice(12, 19), slice(11, 18))]):
        cam = viz.grad_cam(model, x, target=k)
        inside = np.zeros(cam.map.shape, bool)
        inside[rows, cols] = True
        assert cam.map[inside].sum() > 0.95 * cam.map.sum(), f"class {k}"
        assert inside[np.unravel_index(cam.map.argmax(), cam.map.shape)]
        assert cam.weights[k] > 0 and cam.weights[1 - k] == 0


def test_bad_arguments_are_refused():
    model = _blob_model()
    with pytest.raises(ValueError, match="target must be a class index 0..1"):
        viz.grad_cam(model, np.zeros((1, 1, 8, 8)), target=2)
    with pytest.raises(ValueError, match="expected one input"):
        viz.grad_cam(model, np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="needs a Conv2d layer"):
        viz.grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), np.zeros((1, 1, 2, 2)))
    assert not model[0].has_forward_hooks()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "article"
    cnnlab.manual_seed(0)
    checkpoint.save_run(d, models.build("article"), models.spec("article"),
                        {"dataset": "mnist", "validation": 10000, "model": "article", "epochs": 1},
                        {"epochs": [], "model": "article", "dataset": "mnist"})
    return d


def test_show_gradcam_writes_the_picture(run, tmp_path, capsys):
    assert main(["show", "gradcam", str(run), "test:3"]) == 0
    out = run / "gradcam.png"
    assert capsys.readouterr().out.strip() == str(out)
    photo = np.full((50, 40), 230, np.uint8)
    photo[8:42, 17:23] = 10
    Image.fromarray(photo).save(tmp_path / "digit.png")
    assert main(["show", "gradcam", str(run), str(tmp_path / "digit.png"), "--layer", "0",
                 "--out", str(tmp_path / "g.png")]) == 0
    for path in (out, tmp_path / "g.png"):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == viz.png_size("gradcam") == (1200, 450)
            assert np.asarray(img.convert("RGB")).std() > 10  # something drawn
    # a layer that is not a Conv2d: 2 while every error exits 2, 3 ("bad input") with distinct exit codes
    assert main(["show", "gradcam", str(run), "--layer", "1"]) in (2, 3)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a Conv2d" in err
