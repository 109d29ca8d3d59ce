"""What every convolution, pooling and activation layer of a model makes of one image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .. import nn
from ..autograd import Tensor, no_grad
from ..data import MNIST_MEAN, MNIST_STD, standardize
from .common import gray_with_gaps, hooked_maps, is_sequential, layer_name, model_layers, mosaic, new_figure, save_figure

_MAX_MAPS = 64  # feature maps shown per layer
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
_ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh)


def _size(t) -> str:
    return "x".join(str(v) for v in t)


def _step(t) -> str:
    """A stride, padding or dilation: one number when it is the same along every axis."""
    return str(t[0]) if len(set(t)) == 1 else _size(t)


def short_name(layer) -> str:
    """A layer in a few words, for a picture's row label.

    Args:
        layer: a cnnlab.nn module.

    Returns:
        e.g. "Conv2d 1->32 5x5 pad 2", "MaxPool2d 3x3 stride 2"; other layers as their repr's first line.
    """
    name = type(layer).__name__
    if isinstance(layer, nn.Conv2d):
        s = f"{name} {layer.in_channels}->{layer.out_channels} {_size(layer.kernel_size)}"
        if any(v != 1 for v in layer.stride):
            s += f" stride {_step(layer.stride)}"
        if isinstance(layer.padding, str) or any(layer.padding):
            s += f" pad {layer.padding if isinstance(layer.padding, str) else _step(layer.padding)}"
        if any(v != 1 for v in layer.dilation):
            s += f" dilation {_step(layer.dilation)}"
        return s + (f" groups {layer.groups}" if layer.groups != 1 else "")
    if isinstance(layer, _POOLS):
        s = name + (f" L{layer.norm_type}" if isinstance(layer, nn.LPPool2d) else "")
        s += f" {_size(layer.kernel_size)}"
        if layer.stride != layer.kernel_size:
            s += f" stride {_step(layer.stride)}"
        padding = getattr(layer, "padding", (0,))
        return s + (f" pad {_step(padding)}" if any(padding) else "")
    return layer_name(layer)


def normalise_image(image_uint8: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> np.ndarray:
    """A 28x28 image as the input a network trained with ``mean``/``std`` expects.

    Args:
        image_uint8: (28, 28) pixel values 0-255.
        mean, std: the run's normalisation, ``(pixel/255 - mean) / std``.

    Returns:
        (1, 1, 28, 28) float array: a batch of one single-channel image.
    """
    return standardize(image_uint8, mean, std).reshape(1, 1, 28, 28)


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.shape != (28, 28):
        raise ValueError(f"expected a 28x28 image, got an array of shape {img.shape}")
    if not np.issubdtype(img.dtype, np.number) or img.min() < 0 or img.max() > 255:
        raise ValueError("expected pixel values 0-255 (uint8, MNIST form: white digit on black)")
    return img


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _default_names(k: int = 10) -> list[str]:
    return [str(i) for i in range(k)]


def _forward_blocks(model, image, mean=MNIST_MEAN, std=MNIST_STD):
    """Run one image through the model; keep every conv/pool/activation output with (C, H, W) maps:
    a Sequential layer by layer (named by index), any other model through forward hooks on those
    layers (named by module path, in the order its forward calls them)."""
    x = normalise_image(_check_image(image), mean, std)
    was_training = model.training
    model.eval()  # dropout off, batch norm on running statistics: what the model predicts with
    kinds = (nn.Conv2d, *_POOLS, *_ACTIVATIONS)
    try:
        if not is_sequential(model):
            blocks, out = hooked_maps(model, x, kinds)
            return blocks, out.reshape(-1)
        blocks = []
        with no_grad():
            t = Tensor(x)
            for i, layer in enumerate(model_layers(model)):
                t = layer(t)
                if isinstance(layer, kinds) and len(t.shape) == 4:
                    blocks.append((i, layer, np.asarray(t.numpy()[0], dtype=np.float64)))
    finally:
        model.train(was_training)
    out = np.asarray(t.numpy()).reshape(-1)
    return blocks, out


def draw_feature_maps(model, image, title=None, class_names=None, mean=MNIST_MEAN, std=MNIST_STD) -> Figure:
    """The figure ``plot_feature_maps`` saves.

    Args:
        model: a cnnlab model taking (N, 1, 28, 28) input: a Sequential (layers named by index) or
            one with its own forward (layers named by module path, e.g. "block1.body.0").
        image: (28, 28) uint8 image in MNIST form (white digit on black).
        title: heading of the picture; a generic one if None.
        class_names: names of the classes, for the prediction shown above the input.
        mean, std: the normalisation the model was trained with; MNIST's by default.

    Returns:
        A Figure of ``FIGSIZE["featuremaps"]``.

    Raises:
        ValueError: the image is not 28x28 in 0-255, or the model has no conv or pooling layer.
    """
    img = _check_image(image)
    blocks, logits = _forward_blocks(model, img, mean, std)
    if not blocks:
        raise ValueError("the model has no Conv2d or pooling layer: there are no feature maps to draw")
    gap = 2
    mosaics, ratios = [], [0.32]  # first row: the input image
    for _, _, maps in blocks:
        shown = maps[:_MAX_MAPS]
        ncols = min(len(shown), 16)
        m = mosaic(shown, ncols, gap)
        mosaics.append(m)
        # Height relative to at least 8 tiles of width, so a layer with 3 maps does not get
        # giant tiles and squeeze the others.
        ref_width = max(ncols, 8) * (maps.shape[2] + gap)
        ratios.append(max(0.12, m.shape[0] / ref_width * 1.6) + 0.12)  # + room for the label

    fig = new_figure("featuremaps")
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    ax = fig.add_subplot(grid[0])
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    caption = "input image, 28x28"
    if logits.size and np.all(np.isfinite(logits)):
        names = class_names or _default_names(logits.size)
        prob = _softmax(logits)
        k = int(prob.argmax())
        caption += f": model predicts {names[k] if k < len(names) else k} ({100 * prob[k]:.1f}%)"
    ax.set_title(caption, fontsize=10)

    cmap = gray_with_gaps()
    layers = model_layers(model) if is_sequential(model) else []
    drawn = {b[0] for b in blocks}
    for row, ((i, layer, maps), m) in enumerate(zip(blocks, mosaics), start=1):
        ax = fig.add_subplot(grid[row])
        lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
        if hi <= lo:  # a constant layer (e.g. all-zero ReLU): keep imshow's scale well defined
            hi = lo + 1.0
        ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        c, h, w = maps.shape
        label = f"layer {i}: {short_name(layer)}"
        if layers and i > 0 and i - 1 not in drawn:  # e.g. the batch norm between a pooling and its ReLU
            label += f" of layer {i - 1}'s {type(layers[i - 1]).__name__} (not drawn)"
        label += f" -> {c}x{h}x{w}"
        if c > _MAX_MAPS:
            label += f" (first {_MAX_MAPS} maps)"
        label += f"   [black = {lo:.2g}, white = {hi:.2g}]"
        ax.set_title(label, fontsize=9)  # centred: a narrow mosaic's label may be wider than the mosaic
    fig.suptitle(title or "Feature maps: every conv, pooling and activation layer, maps left to right",
                 fontsize=12)
    return fig


def plot_feature_maps(model, image, path, title=None, class_names=None, mean=MNIST_MEAN, std=MNIST_STD) -> Path:
    """Draw an image and the feature maps of every conv, pooling and activation layer for it.

    Args:
        model: a cnnlab model taking (N, 1, 28, 28) input: a Sequential (layers named by index) or
            one with its own forward (layers named by module path, e.g. "block1.body.0").
        image: (28, 28) uint8 image in MNIST form (white digit on black).
        path: PNG file to write.
        title: heading of the picture (e.g. "test image 0 (label 7)"); a generic one if None.
        class_names: names of the classes, for the prediction shown above the input.
        mean, std: the normalisation the model was trained with (a run's
            ``checkpoint.normalization(config)``); MNIST's by default.

    Returns:
        The path written.
    """
    return save_figure(draw_feature_maps(model, image, title, class_names, mean, std), path)
