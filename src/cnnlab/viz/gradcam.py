"""Grad-CAM (Selvaraju et al. 2017): which parts of a picture drove the model's answer.

A forward hook on a convolutional layer (the last Conv2d by default) keeps its feature maps A (C, h, w);
the gradient of the class score y_k with respect to them gives one weight per map, its average over
the map's positions, alpha_c = mean_ij dy_k / dA_cij; the map is ReLU(sum_c alpha_c A_c), h x w,
upsampled bilinearly to the picture's size (PyTorch's ``interpolate(mode="bilinear",
align_corners=False)``) and laid over the picture.

(The live demo, serve/engine.py, draws the element-wise variant, HiResCAM; this is Grad-CAM proper.)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .. import backend, nn
from ..autograd import Tensor
from ..data import MNIST_MEAN, MNIST_STD, standardize
from .common import conv_layer, layer_name, new_figure, save_figure


class GradCam(NamedTuple):
    """One Grad-CAM: ``map`` (H, W) over the input, ``cells`` (h, w) at the layer's resolution (both
    non-negative, not rescaled), ``weights`` (C,) the alphas, ``target`` the class, ``score`` its logit,
    ``probabilities`` the softmax of the logits, ``layer`` the hooked module."""

    map: np.ndarray
    cells: np.ndarray
    weights: np.ndarray
    target: int
    score: float
    probabilities: np.ndarray
    layer: object


def last_conv(model) -> nn.Module:
    """The last Conv2d of ``model`` (in module order), or a ValueError when it has none."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"Grad-CAM needs a Conv2d layer: this {type(model).__name__} has none")
    return convs[-1]


def bilinear_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i the weights that bilinear interpolation with align_corners=False gives the
    input positions for output position i (source (i + 0.5) * size / out - 0.5, clamped at 0)."""
    m = np.zeros((out, size))
    for i in range(out):
        src = max((i + 0.5) * size / out - 0.5, 0.0)
        lo = min(int(np.floor(src)), size - 1)
        hi = min(lo + 1, size - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


def upsample(cells: np.ndarray, shape) -> np.ndarray:
    """``cells`` (h, w) bilinearly resized to ``shape`` (H, W), align_corners=False."""
    h, w = cells.shape
    return bilinear_matrix(h, shape[0]) @ cells @ bilinear_matrix(w, shape[1]).T


def grad_cam(model, x, target=None, layer=None) -> GradCam:
    """Grad-CAM of one input.

    Args:
        model: any cnnlab Module mapping (1, C, H, W) to (1, classes) logits (fused models too).
        x: the input, (1, C, H, W) or (C, H, W), an array or Tensor already normalised as the model expects.
        target: the class whose score is explained; None for the predicted one.
        layer: the Conv2d (or any module with (1, C, h, w) output) to hook; None for the last Conv2d.

    Returns:
        A GradCam. The model's mode, its parameters' ``requires_grad`` and ``.grad`` are left as they were.

    Raises:
        ValueError: a bad input shape or target, no Conv2d, or a layer the forward pass never reached.
    """
    arr = x.data if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim == 3:
        arr = arr.reshape((1,) + tuple(arr.shape))
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise ValueError(f"grad_cam: expected one input of shape (1, C, H, W) or (C, H, W), got {tuple(arr.shape)}")
    layer = last_conv(model) if layer is None else layer
    if not isinstance(layer, nn.Module):
        raise ValueError(f"grad_cam: layer must be a Module of the model, got {type(layer).__name__}")
    kept = {}

    def keep(module, args, out):  # the maps as a leaf: backward then fills its .grad
        leaf = Tensor(out.data, requires_grad=True)
        kept["maps"] = leaf
        return leaf

    params = model.parameters()
    flags, was_training = [p.requires_grad for p in params], model.training
    model.eval()  # dropout off, batch norm on running statistics: the model as it predicts
    handle = layer.register_forward_hook(keep)
    try:
        for p in params:  # gradients into the maps only, none into the weights
            p.requires_grad = False
        logits = model(Tensor(arr))
        if "maps" not in kept:
            raise ValueError(f"grad_cam: the forward pass never ran the layer {layer_name(layer)}")
        maps = kept["maps"]
        if maps.ndim != 4:
            raise ValueError(f"grad_cam: layer {layer_name(layer)} gives shape {maps.shape}, not (1, C, h, w)")
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(f"grad_cam: expected (1, classes) logits from the model, got shape {logits.shape}")
        scores = np.asarray(backend.to_device(logits.data, "cpu"), dtype=np.float64)[0]
        k = int(scores.argmax()) if target is None else target
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < scores.size:
            raise ValueError(f"grad_cam: target must be a class index 0..{scores.size - 1}, got {target!r}")
        xp = backend.get_array_module(logits.data)
        seed = xp.zeros(logits.shape, dtype=logits.dtype)
        seed[0, int(k)] = 1
        logits.backward(seed)
    finally:
        handle.remove()
        for p, flag in zip(params, flags):
            p.requires_grad = flag
        model.train(was_training)
    a = np.asarray(backend.to_device(maps.data, "cpu")[0], dtype=np.float64)  # (C, h, w)
    g = np.asarray(backend.to_device(maps.grad.data, "cpu")[0], dtype=np.float64)
    alpha = g.mean(axis=(1, 2))  # one weight per feature map
    cells = np.maximum(np.tensordot(alpha, a, axes=1), 0.0)
    e = np.exp(scores - scores.max())
    return GradCam(upsample(cells, arr.shape[2:]), cells, alpha, int(k), float(scores[k]), e / e.sum(), layer)


def draw_gradcam(model, image, title=None, class_names=None, mean=MNIST_MEAN, std=MNIST_STD, layer=None,
                 target=None) -> Figure:
    """The figure ``plot_gradcam`` saves: the picture, the Grad-CAM map, and the map over the picture.

    Args:
        model: a cnnlab model taking (N, 1, H, W) input.
        image: (H, W) uint8 picture (0-255), normalised with ``mean``/``std`` as the run was.
        layer: an index into a Sequential model's layers (a Conv2d), the module path of a Conv2d of
            another model (e.g. "block2.body.3"), or None for the last Conv2d.
        target: the class to explain; None for the predicted one.
    """
    img = np.asarray(image)
    if img.ndim != 2 or not np.issubdtype(img.dtype, np.number) or img.size == 0 or img.min() < 0 \
            or img.max() > 255:
        raise ValueError(f"Grad-CAM: expected an (H, W) picture of values 0-255, got shape {img.shape}")
    module = None if layer is None else conv_layer(model, layer)[1]
    cam = grad_cam(model, standardize(img, mean, std).reshape(1, 1, *img.shape), target, module)
    names = class_names or [str(i) for i in range(cam.probabilities.size)]
    name = names[cam.target] if cam.target < len(names) else str(cam.target)
    top = float(cam.map.max())
    heat = cam.map / top if top > 0 else cam.map
    fig = new_figure("gradcam")
    axes = fig.subplots(1, 3)
    axes[0].imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title(f"input {img.shape[0]}x{img.shape[1]}: predicts {names[int(cam.probabilities.argmax())]} "
                      f"({100 * cam.probabilities.max():.1f}%)", fontsize=10)
    axes[1].imshow(heat, cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
    h, w = cam.cells.shape
    axes[1].set_title(f"Grad-CAM for {name!r}: {layer_name(cam.layer).split('(')[0]} maps, {h}x{w}", fontsize=10)
    overlay = 0.55 * np.repeat(img[..., None] / 255.0, 3, axis=2) + 0.45 * colormaps["jet"](heat)[..., :3]
    axes[2].imshow(np.clip(overlay, 0, 1), interpolation="bilinear")
    axes[2].set_title("the map over the picture" if top > 0 else "no feature map speaks for this class (map 0)",
                      fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "Grad-CAM: where the evidence for the answer lies", fontsize=12)
    return fig


def plot_gradcam(model, image, path, title=None, class_names=None, mean=MNIST_MEAN, std=MNIST_STD, layer=None,
                 target=None) -> Path:
    """Draw ``draw_gradcam``'s figure and save it as a PNG file (atomically); returns the path."""
    return save_figure(draw_gradcam(model, image, title, class_names, mean, std, layer, target), path)
