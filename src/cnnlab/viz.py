"""Pictures of a trained run (PNG) and a one-file HTML report about it.

    plot_filters        the learned kernels of a conv layer (the article's grid of 5x5 filters)
    plot_feature_maps   what every conv / pooling / activation layer makes of one image
    plot_curves         loss and accuracy per epoch, best-validation epoch marked
    plot_confusion      10x10 confusion matrix with counts
    plot_mistakes       misclassified images, "true X / pred Y (p%)"
    plot_augmentation   training images next to random draws of their augmentation
    plot_run            any one of these for a saved run directory (what ``cnnlab show`` draws)
    build_report        all of the above plus tables, in one self-contained HTML file

Every picture has a fixed size (``FIGSIZE[kind]`` inches at ``DPI``), so its pixel size is known in
advance (``png_size``). Files are written to a temporary file in the target directory and renamed
over the target, so an interrupted run never leaves a half-written PNG or HTML file.

Figures are drawn with matplotlib's object API on an explicit Agg canvas rather than through
pyplot: no screen is needed, nothing is registered in pyplot's global figure list (so nothing
leaks), and importing this module does not switch the backend of a user's own plotting session
(``matplotlib.use("Agg")`` at import would break plt.show() in Jupyter or a GUI program).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import backend, checkpoint, models, nn
from .autograd import Tensor, no_grad
from .data import MNIST_MEAN, MNIST_STD, Augment, class_names, form_for, load_dataset, standardize
from .train import evaluate

__all__ = [
    "DPI", "FIGSIZE", "augmentation_grid", "build_report", "plot_augmentation", "plot_confusion", "plot_curves",
    "plot_feature_maps", "plot_filters", "plot_mistakes", "plot_run", "png_size",
]

DPI = 100
# Inches per picture kind; with DPI these give the exact pixel size of every PNG.
FIGSIZE = {
    "filters": (10, 8),
    "featuremaps": (10, 12),
    "curves": (12, 5),
    "confusion": (9, 8),
    "mistakes": (10, 11),
    "augment": (10, 8),
}

# Colour of the gaps between tiles of a mosaic: neither black nor white nor gray, so a gap is never
# mistaken for a kernel weight or an activation.
_GAP_COLOUR = "#c9dcec"
_MAX_INPUT_CHANNELS = 16  # per-channel kernel grids show at most this many input channels
_MAX_FILTER_TILES = 100  # single-channel kernel grids (one subplot per kernel)
_MAX_MAPS = 64  # feature maps shown per layer
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
_ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh)


def png_size(kind: str) -> tuple[int, int]:
    """Pixel size (width, height) of the PNG that a picture kind is saved as.

    Args:
        kind: one of ``FIGSIZE`` ("filters", "featuremaps", "curves", "confusion", "mistakes",
            "augment").

    Returns:
        (width, height) in pixels.
    """
    w, h = FIGSIZE[kind]
    return round(w * DPI), round(h * DPI)


# ------------------------------------------------------------------------------ writing files
def _new_figure(kind: str, constrained: bool = True) -> Figure:
    fig = Figure(figsize=FIGSIZE[kind], dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)  # explicit Agg canvas: rendering never depends on the configured backend
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No bbox_inches="tight": that would crop and make the pixel size depend on the content.
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory + rename."""
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return Path(path)


def _save(fig: Figure, path) -> Path:
    # Render fully in memory first, so a drawing error cannot even create the temporary file.
    # No close()/clear() needed: the figure was never registered with pyplot, so it is freed as
    # soon as it goes out of scope (clearing it would only cost time).
    return _atomic_write_bytes(path, _png_bytes(fig))


# ------------------------------------------------------------------------------ small helpers
def _layer_name(layer) -> str:
    return repr(layer).split("\n")[0]


def _size(t) -> str:
    return "x".join(str(v) for v in t)


def _step(t) -> str:
    """A stride, padding or dilation: one number when it is the same along every axis."""
    return str(t[0]) if len(set(t)) == 1 else _size(t)


def _short_name(layer) -> str:
    """A layer in a few words for a picture's row label: "Conv2d 1->32 5x5 pad 2", "MaxPool2d 3x3 stride 2"."""
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
    return _layer_name(layer)


def _layers(model) -> list:
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"expected a cnnlab.nn.Sequential model, got {type(model).__name__}")
    return list(layers)


def _conv_layer(model, layer):
    """(index, Conv2d) for ``layer`` (an index into model.layers) or the first Conv2d if None."""
    layers = _layers(model)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    where = (f"the Conv2d layers of this model are at {', '.join(map(str, convs))}" if convs
             else "this model has no Conv2d layer")
    if layer is None:
        if not convs:
            raise ValueError(f"no kernels to draw: {where}")
        return convs[0], layers[convs[0]]
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise ValueError(f"layer must be an index into the model's layers, got {layer!r}")
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} does not exist: the model has {len(layers)} layers "
                         f"(0 to {len(layers) - 1}); {where}")
    if not isinstance(layers[layer], nn.Conv2d):
        raise ValueError(f"layer {layer} is {_layer_name(layers[layer])}, not a Conv2d; {where}")
    return int(layer), layers[layer]


def _gray_with_gaps():
    return colormaps["gray"].with_extremes(bad=_GAP_COLOUR)


def _mosaic(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """Tiles (n, h, w) laid out row by row in ``ncols`` columns; gaps are NaN (drawn as _GAP_COLOUR).

    One image with one colour scale is much faster to draw than one subplot per tile, which matters
    for grids of a thousand kernels.
    """
    n, h, w = tiles.shape
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


def _tick_positions(count: int, size: int, gap: int, max_labels: int = 32):
    # Label every tile when they fit, otherwise every step-th so the labels do not overlap.
    step = max(1, math.ceil(count / max_labels))
    idx = list(range(0, count, step))
    return [i * (size + gap) + (size - 1) / 2 for i in idx], [str(i) for i in idx]


def _best_grid(n: int, tile_aspect: float, width: float, height: float) -> tuple[int, int]:
    """(rows, columns) that give ``n`` tiles of height/width ``tile_aspect`` the biggest size
    within a width x height area."""
    def size(cols):
        rows = math.ceil(n / cols)
        return min(width / cols, height / (rows * tile_aspect))

    cols = max(range(1, n + 1), key=size)
    return math.ceil(n / cols), cols


def _normalise(image_uint8: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> np.ndarray:
    """A 28x28 uint8 image as the (1, 1, 28, 28) input a network trained with ``mean``/``std`` expects."""
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


# ------------------------------------------------------------------------------------ filters
def _draw_filters(model, layer=None, channel=None, title=None) -> Figure:
    index, conv = _conv_layer(model, layer)
    w = np.asarray(conv.weight.numpy(), dtype=np.float64)  # (F, C, kh, kw)
    n_out, n_in, kh, kw = w.shape
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_in:
            raise ValueError(f"channel {channel!r} does not exist: layer {index} "
                             f"({_layer_name(conv)}) has {n_in} input channel(s), 0 to {n_in - 1}")
    # One colour scale for every tile, symmetric around 0: mid-gray is a zero weight, so the sign
    # and relative strength of weights can be compared across kernels.
    shown = w if channel is None else w[:, channel: channel + 1]
    vmax = float(np.abs(shown).max()) or 1.0
    scale = (f"shared gray scale for all tiles: black = {-vmax:.3g}, mid-gray = 0, "
             f"white = +{vmax:.3g}")
    head = title or f"Layer {index}: {_layer_name(conv)}"
    cmap = _gray_with_gaps()

    if n_in == 1 or channel is not None:
        ch = 0 if channel is None else int(channel)
        kernels = w[:, ch][:_MAX_FILTER_TILES]
        n = len(kernels)
        nrows, ncols = _best_grid(n, 1, 8.4, 6.4)  # the area left beside the colour bar, inches
        fig = _new_figure("filters")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        im = None
        for i, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= n:
                ax.set_axis_off()
                continue
            im = ax.imshow(kernels[i], cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_title(f"map {i}", fontsize=8 if ncols > 8 else 10)
        fig.colorbar(im, ax=axes, label="kernel weight", shrink=0.8)
        what = f"the {n_out} learned {kh}x{kw} kernels, one per feature map"
        if n < n_out:
            what += f" (first {n} shown)"
        if n_in > 1:
            what += f", input channel {ch} of {n_in}"
        fig.suptitle(f"{head}\n{what}\n{scale}", fontsize=11)
        return fig

    # Deeper layer: each output map has one kernel per input channel; rows = output maps,
    # columns = input channels, so a row is everything one feature map looks at. Many output maps
    # make a tall, thin grid, so the rows are split over side-by-side panels when that gives
    # bigger tiles.
    cs = min(n_in, _MAX_INPUT_CHANNELS)
    gap = 1
    panels = max(range(1, 5), key=lambda p: min(8.4 / (p * cs), 6.4 / math.ceil(n_out / p)))
    per_panel = math.ceil(n_out / panels)
    fig = _new_figure("filters")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for p, ax in enumerate(axes):
        rows = range(p * per_panel, min(n_out, (p + 1) * per_panel))
        if not len(rows):
            ax.set_axis_off()
            continue
        tiles = w[rows.start: rows.stop, :cs].reshape(len(rows) * cs, kh, kw)
        im = ax.imshow(_mosaic(tiles, cs, gap), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        pos, labels = _tick_positions(len(rows), kh, gap)
        ax.set_yticks(pos, [str(rows.start + int(v)) for v in labels], fontsize=7)
        pos, labels = _tick_positions(cs, kw, gap)
        ax.set_xticks(pos, labels, fontsize=7)
        ax.set_xlabel("input channel = feature map of the layer before", fontsize=9)
        if p == 0:
            ax.set_ylabel("output feature map (row)")
    fig.colorbar(im, ax=axes, label="kernel weight", shrink=0.8)
    what = f"{n_out} output maps (rows) x {n_in} input channels (columns) of {kh}x{kw} kernels"
    if cs < n_in:
        what += f"; first {cs} input channels shown"
    fig.suptitle(f"{head}\n{what}\n{scale}", fontsize=11)
    return fig


def plot_filters(model, path, layer=None, channel=None) -> Path:
    """Draw every learned kernel of a convolutional layer as a grayscale tile.

    Args:
        model: a cnnlab.nn.Sequential model.
        path: PNG file to write.
        layer: index into ``model.layers`` of a Conv2d; None for the first Conv2d.
        channel: for a layer with several input channels, draw only this input channel's kernels;
            None draws a grid of output maps (rows) by input channels (columns, at most 16).

    Returns:
        The path written.

    Raises:
        ValueError: ``layer`` is not a Conv2d (the message names it) or ``channel`` is out of range.
    """
    return _save(_draw_filters(model, layer, channel), path)


# ------------------------------------------------------------------------------- feature maps
def _forward_blocks(model, image, mean=MNIST_MEAN, std=MNIST_STD):
    """Run one image through the model layer by layer; keep every conv/pool/activation output."""
    x = _normalise(_check_image(image), mean, std)
    layers = _layers(model)
    was_training = model.training
    model.eval()  # dropout off, batch norm on running statistics: what the model predicts with
    blocks = []
    try:
        with no_grad():
            t = Tensor(x)
            for i, layer in enumerate(layers):
                t = layer(t)
                if isinstance(layer, (nn.Conv2d, *_POOLS, *_ACTIVATIONS)) and len(t.shape) == 4:
                    blocks.append((i, layer, np.asarray(t.numpy()[0], dtype=np.float64)))
    finally:
        model.train(was_training)
    out = np.asarray(t.numpy()).reshape(-1)
    return blocks, out


def _draw_feature_maps(model, image, title=None, class_names=None, mean=MNIST_MEAN, std=MNIST_STD) -> Figure:
    img = _check_image(image)
    blocks, logits = _forward_blocks(model, img, mean, std)
    if not blocks:
        raise ValueError("the model has no Conv2d or pooling layer: there are no feature maps to draw")
    gap = 2
    mosaics, ratios = [], [0.32]  # first row: the input image
    for _, _, maps in blocks:
        shown = maps[:_MAX_MAPS]
        ncols = min(len(shown), 16)
        m = _mosaic(shown, ncols, gap)
        mosaics.append(m)
        # Height relative to at least 8 tiles of width, so a layer with 3 maps does not get
        # giant tiles and squeeze the others.
        ref_width = max(ncols, 8) * (maps.shape[2] + gap)
        ratios.append(max(0.12, m.shape[0] / ref_width * 1.6) + 0.12)  # + room for the label

    fig = _new_figure("featuremaps")
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

    cmap = _gray_with_gaps()
    layers, drawn = _layers(model), {b[0] for b in blocks}
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
        label = f"layer {i}: {_short_name(layer)}"
        if i > 0 and i - 1 not in drawn:  # e.g. the batch norm between a pooling and its ReLU
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
        model: a cnnlab.nn.Sequential model taking (N, 1, 28, 28) input.
        image: (28, 28) uint8 image in MNIST form (white digit on black).
        path: PNG file to write.
        title: heading of the picture (e.g. "test image 0 (label 7)"); a generic one if None.
        class_names: names of the classes, for the prediction shown above the input.
        mean, std: the normalisation the model was trained with (a run's
            ``checkpoint.normalization(config)``); MNIST's by default.

    Returns:
        The path written.
    """
    return _save(_draw_feature_maps(model, image, title, class_names, mean, std), path)


# ------------------------------------------------------------------------------------- curves
def _series(epochs, key) -> np.ndarray:
    return np.array([np.nan if e.get(key) is None else float(e[key]) for e in epochs])


def _draw_curves(metrics, title=None) -> Figure:
    epochs = metrics.get("epochs") if isinstance(metrics, dict) else None
    if not epochs:
        raise ValueError("the run's metrics have no per-epoch history ('epochs' is missing or empty "
                         "in metrics.json): no training curves to draw")
    x = np.array([e.get("epoch", i + 1) for i, e in enumerate(epochs)], dtype=float)
    fig = _new_figure("curves")
    ax_loss, ax_acc = fig.subplots(1, 2)

    styles = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}
    # The training numbers are averaged over the epoch's batches as they were trained on: with
    # dropout and augmentation on, and the weights still changing, so they can sit below validation.
    how = {"train": " (during the epoch, training mode)"}
    for part, colour in styles.items():
        loss = _series(epochs, f"{part}_loss")
        if np.isfinite(loss).any():
            ax_loss.plot(x, loss, "o-", ms=3, color=colour, label=f"{part} loss{how.get(part, '')}")
        acc = _series(epochs, f"{part}_accuracy") * 100
        if np.isfinite(acc).any():
            ax_acc.plot(x, acc, "o-", ms=3, color=colour, label=f"{part} accuracy{how.get(part, '')}")

    val = _series(epochs, "validation_accuracy")
    has_val = bool(np.isfinite(val).any())
    best = metrics.get("best_epoch")
    if best is None and has_val:
        best = int(x[int(np.nanargmax(val))])
    if best is not None:
        note = f"best validation: epoch {best}" if has_val else f"kept: epoch {best} (no validation set)"
        match = [e for e in epochs if e.get("epoch") == best]
        if match and match[0].get("validation_accuracy") is not None:
            note += f"\nvalidation {100 * match[0]['validation_accuracy']:.2f}%"
        if metrics.get("test_accuracy") is not None:
            note += f", test {100 * metrics['test_accuracy']:.2f}%"
        for ax in (ax_loss, ax_acc):
            ax.axvline(best, color="gray", ls="--", lw=1, label=note if ax is ax_acc else None)

    ax_loss.set_title("loss per epoch")
    ax_loss.set_ylabel("mean cross-entropy loss")
    ax_acc.set_title("accuracy per epoch")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    model = metrics.get("model") or "model"
    dataset = metrics.get("dataset") or ""
    fig.suptitle(title or f"{model}{' on ' + dataset if dataset else ''}: training curves", fontsize=12)
    return fig


def plot_curves(metrics, path, title=None) -> Path:
    """Draw loss and train/validation/test accuracy per epoch, with the best-validation epoch marked.

    Args:
        metrics: the run's metrics dict (metrics.json) with a non-empty "epochs" list.
        path: PNG file to write.
        title: heading; "<model> on <dataset>: training curves" if None.

    Returns:
        The path written.

    Raises:
        ValueError: the metrics have no per-epoch history.
    """
    return _save(_draw_curves(metrics, title), path)


# ---------------------------------------------------------------------------------- confusion
def _labels(y_true, y_pred, k: int):
    yt = np.asarray(y_true).reshape(-1)
    yp = np.asarray(y_pred).reshape(-1)
    if yt.shape != yp.shape:
        raise ValueError(f"{yt.size} true labels but {yp.size} predictions")
    if yt.size == 0:
        raise ValueError("no labels: nothing to draw")
    for name, y in (("true labels", yt), ("predictions", yp)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
            raise ValueError(f"{name} must be class indices 0 to {k - 1}")
    return yt.astype(np.int64), yp.astype(np.int64)


def _draw_confusion(y_true, y_pred, class_names, title=None) -> Figure:
    k = len(class_names)
    yt, yp = _labels(y_true, y_pred, k)
    cm = np.bincount(yt * k + yp, minlength=k * k).reshape(k, k)
    n, correct = int(cm.sum()), int(np.trace(cm))
    fig = _new_figure("confusion")
    ax = fig.add_subplot()
    # Log colour scale: the diagonal holds ~1000 per class and the errors a handful, so on a linear
    # scale every error cell would look empty. Zero cells are masked (white).
    vmax = max(int(cm.max()), 2)
    im = ax.imshow(np.ma.masked_equal(cm, 0), cmap=colormaps["Blues"].with_extremes(bad="white"),
                   norm=LogNorm(vmin=1, vmax=vmax))
    for t in range(k):
        for p in range(k):
            v = int(cm[t, p])
            if v:
                dark = math.log(v) / math.log(vmax) > 0.6
                ax.text(p, t, f"{v:,}", ha="center", va="center", fontsize=8 if v < 1000 else 7,
                        color="white" if dark else ("black" if t == p else "firebrick"))
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0,
                  ha="right" if max(map(len, class_names)) > 2 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="number of images (log scale; blank = 0)", shrink=0.8)
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}Confusion matrix, {n:,} images: accuracy {100 * correct / n:.2f}% "
                 f"({correct:,}/{n:,})\nrow = true class, column = predicted; off-diagonal = errors",
                 fontsize=11)
    return fig


def plot_confusion(y_true, y_pred, path, class_names, title=None) -> Path:
    """Draw the confusion matrix (counts) of predictions against true labels.

    Args:
        y_true: true class indices (N,).
        y_pred: predicted class indices (N,).
        path: PNG file to write.
        class_names: one name per class (its length sets the matrix size).
        title: optional first line of the heading (e.g. the run's name).

    Returns:
        The path written.
    """
    return _save(_draw_confusion(y_true, y_pred, class_names, title), path)


# ----------------------------------------------------------------------------------- mistakes
def _draw_mistakes(images, y_true, y_pred, class_names, probabilities=None, max_images=36,
                   title=None) -> Figure:
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"max_images must be a positive int, got {max_images!r}")
    imgs = np.asarray(images)
    yt, yp = _labels(y_true, y_pred, len(class_names))
    if imgs.ndim != 3 or len(imgs) != len(yt):
        raise ValueError(f"expected images (N, H, W) with N = {len(yt)} labels, got shape {imgs.shape}")
    wrong = np.flatnonzero(yt != yp)
    conf = None
    if probabilities is not None:
        probs = np.asarray(probabilities)
        if probs.shape != (len(yt), len(class_names)):
            raise ValueError(f"probabilities must have shape {(len(yt), len(class_names))}, got {probs.shape}")
        conf = probs[np.arange(len(yt)), yp]
        # The most confident mistakes first: they are the most telling (or mislabelled) ones.
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    shown = wrong[:max_images]

    ncols = math.ceil(math.sqrt(max_images))
    nrows = math.ceil(max_images / ncols)
    fig = _new_figure("mistakes")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    size = 8 if ncols <= 6 else 7 if ncols <= 8 else 6
    for ax, i in zip(axes.flat, shown):
        ax.imshow(imgs[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        pct = f" ({100 * conf[i]:.0f}%)" if conf is not None else ""
        label = f"true {class_names[yt[i]]} / pred {class_names[yp[i]]}{pct}"
        if len(label) > 24:  # long class names (Fashion-MNIST): one per line
            label = f"true {class_names[yt[i]]}\npred {class_names[yp[i]]}{pct}"
        ax.set_title(f"#{i}\n{label}", fontsize=size, color="firebrick")
    n = len(yt)
    if len(wrong) == 0:
        fig.text(0.5, 0.5, f"no misclassified images among {n:,}", ha="center", va="center", fontsize=14)
    order = "most confident mistakes first" if conf is not None else "in data-set order"
    head = f"{title}\n" if title else ""
    fig.suptitle(f"{head}Misclassified: {len(wrong):,} of {n:,} images ({100 * len(wrong) / n:.2f}% error); "
                 f"showing {len(shown)}, {order}\n#index in the data set, true / predicted class "
                 f"(probability the model gave its prediction)", fontsize=11)
    return fig


def plot_mistakes(images, y_true, y_pred, path, class_names, probabilities=None, max_images=36,
                  title=None) -> Path:
    """Draw a grid of misclassified images labelled "true X / pred Y (p%)".

    Args:
        images: (N, H, W) uint8 images.
        y_true: true class indices (N,).
        y_pred: predicted class indices (N,).
        path: PNG file to write.
        class_names: one name per class.
        probabilities: optional (N, classes) softmax outputs; adds p% and sorts by confidence.
        max_images: at most this many images (the grid is sized for this many).
        title: optional first line of the heading.

    Returns:
        The path written.
    """
    return _save(_draw_mistakes(images, y_true, y_pred, class_names, probabilities, max_images, title), path)


def augmentation_grid(images, augment, copies: int = 7, seed: int = 0) -> np.ndarray:
    """(N, 1 + copies, H, W): each image, then ``copies`` independent draws of ``augment`` on it
    (one call per copy on the whole batch, from one generator seeded with ``seed``)."""
    if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 1:
        raise ValueError(f"copies must be a positive int, got {copies!r}")
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"expected images (N, H, W), got shape {imgs.shape}")
    rng = np.random.default_rng(seed)
    return np.stack([imgs] + [augment(imgs, rng) for _ in range(copies)], axis=1)


def _draw_augmentation(images, labels, augment, class_names, copies=7, seed=0, title=None) -> Figure:
    grid = augmentation_grid(images, augment, copies, seed)
    fig = _new_figure("augment")
    axes = fig.subplots(len(grid), 1 + copies, squeeze=False)
    for r, row in enumerate(grid):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(str(class_names[int(labels[r])]), fontsize=10)
                for spine in ax.spines.values():
                    spine.set_edgecolor("firebrick")
                    spine.set_linewidth(2)
            if r == 0:
                ax.set_title("original" if c == 0 else f"draw {c}", fontsize=9)
    head = f"{title}\n" if title else ""
    fig.suptitle(f"{head}Training augmentation: {augment.describe()}\n"
                 f"left, framed: the training image; right: what {copies} epochs might show the network instead",
                 fontsize=11)
    return fig


def plot_augmentation(images, labels, augment, path, class_names, copies: int = 7, seed: int = 0,
                      title=None) -> Path:
    """Draw training images next to random augmented versions of them (one row per image).

    Args:
        images: (N, H, W) uint8 images (a few: one row each).
        labels: their class indices (N,).
        augment: a ``cnnlab.data.Augment`` (or any callable ``augment(batch, rng)``).
        path: PNG file to write.
        class_names: one name per class (rows are labelled with them).
        copies: augmented versions per image.
        seed: seed of the generator the augmentation draws from.
        title: optional first line of the heading.

    Returns:
        The path written.
    """
    return _save(_draw_augmentation(images, labels, augment, class_names, copies, seed, title), path)


def _run_augment(cfg, run_dir):
    """The run's recorded training augmentation; a clear error if it used none."""
    aug = Augment.from_config(cfg)
    if aug is None:
        raise ValueError(f"run {run_dir} was trained without augmentation (its config records none): "
                         f"nothing to show")
    return aug


# ------------------------------------------------------------------------------- run helpers
def _dataset(cfg, metrics) -> str:
    return cfg.get("dataset") or metrics.get("dataset") or "mnist"


def _test_set(cfg, metrics):
    return load_dataset(_dataset(cfg, metrics), validation=cfg.get("validation", 10000)).test


def _train_sample(cfg, metrics, count=6):
    """The first ``count`` training images of the run's data set and split, with their labels."""
    images, labels = load_dataset(_dataset(cfg, metrics), validation=cfg.get("validation", 10000)).train
    return images[:count], labels[:count]


def _norm(cfg, run_dir) -> tuple[float, float]:
    """The run's recorded input normalisation (MNIST's for runs saved before it was recorded)."""
    return checkpoint.normalization(cfg, Path(run_dir) / checkpoint.CONFIG)


def _evaluate(model, images, labels, mean=MNIST_MEAN, std=MNIST_STD):
    return evaluate(model, images, labels, mean=mean, std=std, return_predictions=True)


def _run_title(spec, cfg, metrics) -> str:
    return f"{spec.get('name', 'model')} on {_dataset(cfg, metrics)}"


def _input_image(image, cfg, metrics):
    """(28x28 uint8 image, description) for IMAGE: None or "test:N" (test set) or a file path."""
    spec = "test:0" if image is None else str(image)
    if spec.startswith("test:"):
        try:
            n = int(spec[len("test:"):])
        except ValueError:
            raise ValueError(f"image {spec!r}: expected test:N with N a test-image index, e.g. test:0") from None
        images, labels = _test_set(cfg, metrics)
        if not 0 <= n < len(images):
            raise ValueError(f"image {spec!r}: the {_dataset(cfg, metrics)} test set has {len(images):,} "
                             f"images, test:0 to test:{len(images) - 1}")
        names = class_names(_dataset(cfg, metrics))
        return images[n], f"test image {n} (label {names[int(labels[n])]})"
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"image {spec}: no such file (give a PNG/JPEG file or test:N)")
    convert, form = form_for(_dataset(cfg, metrics))
    return convert(path), f"{path.name} (converted to {form})"


# -------------------------------------------------------------------------------------- report
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f3f7; } td.text, th.text { text-align: left; font-family: ui-monospace, Menlo, monospace; }
tr.best td { background: #fff3c4; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; } .note { color: #555; }
"""

_EPOCH_COLUMNS = ["epoch", "train_loss", "train_accuracy", "validation_loss", "validation_accuracy",
                  "test_loss", "test_accuracy", "lr", "seconds", "images_per_second"]


def _fmt(key: str, value) -> str:
    """A metric or config value as table text (not yet escaped)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if key not in ("epoch", "seed", "best_epoch") else str(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if "accuracy" in key and 0 <= v <= 1:
            return f"{100 * v:.2f}%"
        if "loss" in key:
            return f"{v:.4f}"
        if key == "images_per_second":
            return f"{v:,.0f}"
        if "seconds" in key:
            return f"{v:,.1f}"
        return f"{v:.4g}"
    return str(value)


def _table(header, rows, text_columns=(), row_classes=None) -> str:
    def cell(tag, i, v):
        cls = ' class="text"' if i in text_columns else ""
        return f"<{tag}{cls}>{html.escape(str(v))}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"]
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes and row_classes[r] else ""
        attr = f' class="{html.escape(cls)}"' if cls else ""
        out.append(f"<tr{attr}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure_html(fig: Figure, alt: str, caption: str) -> str:
    data = base64.b64encode(_png_bytes(fig)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _shared_weights_line() -> str:
    """The article's point about shared weights, with counts taken from real cnnlab modules."""
    # Building the two modules draws initial weights from cnnlab's seeded generator; restore its
    # state so that writing a report never changes what a later seeded run produces.
    state = backend.rng().bit_generator.state
    try:
        conv, fc = nn.Conv2d(1, 20, 5), nn.Linear(784, 30)
    finally:
        backend.rng().bit_generator.state = state
    c, f = conv.num_parameters(), fc.num_parameters()
    kh, kw = conv.kernel_size
    return (f"Shared weights: a convolutional layer Conv2d(1, 20, 5) has {c:,} parameters "
            f"({conv.out_channels} feature maps x ({kh}x{kw} shared weights + 1 bias)), while a fully "
            f"connected layer Linear(784, 30) has {f:,} ({fc.in_features} x {fc.out_features} weights + "
            f"{fc.out_features} biases): {f / c:.0f} times as many.")


def build_report(run_dir, out=None) -> Path:
    """Write one self-contained HTML page about a run: tables and all the pictures embedded
    (the five of every run, and the training augmentation where the run used one).

    The pictures are PNGs inside the page as base64 data: URIs and the style sheet is inline, so the
    file opens offline in any browser and can be mailed or archived on its own. The test set is
    evaluated again for the confusion matrix and the mistakes.

    Args:
        run_dir: run directory written by ``cnnlab train``.
        out: HTML file to write; RUN/report.html if None.

    Returns:
        The path written.

    Raises:
        checkpoint.RunError: the run directory is missing or broken.
        DataError: the run's data set cannot be loaded.
    """
    run_dir = Path(run_dir)
    model, spec, cfg, metrics = checkpoint.load_run(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    name = spec.get("name", "model")
    dataset = _dataset(cfg, metrics)
    names = class_names(dataset)
    mean, std = _norm(cfg, run_dir)
    images, labels = _test_set(cfg, metrics)
    res = _evaluate(model, images, labels, mean, std)
    recorded = metrics.get("test_accuracy")
    headline = recorded if recorded is not None else res["accuracy"]
    run_title = _run_title(spec, cfg, metrics)
    esc = html.escape

    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(f'cnnlab report: {run_title}, test accuracy {100 * headline:.2f}%')}</title>",
        f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{esc(run_title)}: test accuracy {100 * headline:.2f}%</h1>",
    ]
    description = models.MODELS[name].description if name in models.MODELS else ""
    kwargs = spec.get("kwargs") or {}
    facts = [
        f"Model <b>{esc(name)}</b>{esc(f' {kwargs}') if kwargs else ''}"
        f"{': ' + esc(description) if description else ''}; {model.num_parameters():,} parameters.",
        f"Run directory: <code>{esc(str(run_dir))}</code>.",
        f"Test accuracy measured now on {res['n']:,} {esc(dataset)} test images: "
        f"{100 * res['accuracy']:.2f}% (loss {res['loss']:.4f})"
        + (f"; recorded at the best-validation epoch during training: {100 * recorded:.2f}%."
           if recorded is not None else "."),
    ]
    parts.append("<p>" + "<br>\n".join(facts) + "</p>")

    # Model summary.
    rows = [("", "input", str((1, 28, 28)), "")]
    rows += [(idx, layer, str(shape), f"{params:,}") for idx, layer, shape, params in models.summarize(model)]
    rows.append(("", "total", "", f"{model.num_parameters():,}"))
    parts += ["<h2>Model</h2>",
              _table(["#", "layer", "output shape", "parameters"], rows, text_columns=(1, 2)),
              f"<p>{esc(_shared_weights_line())}</p>"]

    # Training configuration and run facts.
    parts.append("<h2>Training configuration</h2>")
    if cfg:
        parts.append(_table(["setting", "value"], [(k, _fmt(k, v)) for k, v in cfg.items()], text_columns=(0, 1)))
    else:
        parts.append('<p class="note">no config.json in this run.</p>')
    facts = [(k, _fmt(k, v)) for k, v in metrics.items() if k != "epochs" and not isinstance(v, (dict, list))]
    if facts:
        parts += ["<h2>Run</h2>", _table(["fact", "value"], facts, text_columns=(0, 1))]

    # Per-epoch metrics, best-validation row highlighted.
    epochs = metrics.get("epochs") or []
    parts.append("<h2>Metrics per epoch</h2>")
    if epochs:
        cols = [c for c in _EPOCH_COLUMNS if any(c in e for e in epochs)]
        cols += sorted({k for e in epochs for k in e} - set(cols))
        val = _series(epochs, "validation_accuracy")
        has_val = bool(np.isfinite(val).any())
        best = metrics.get("best_epoch")
        if best is None:
            best = epochs[int(np.nanargmax(val))].get("epoch") if has_val else None
        parts.append(_table(
            [c.replace("_", " ") for c in cols],
            [[_fmt(c, e.get(c)) for c in cols] for e in epochs],
            row_classes=["best" if best is not None and e.get("epoch") == best else "" for e in epochs]))
        if best is not None:
            why = "the best validation accuracy" if has_val else "the last (no validation set to choose on)"
            parts.append(f'<p class="note">Highlighted: epoch {esc(str(best))}, {why}; the saved weights are '
                         f"those of this epoch.</p>")
    else:
        parts.append('<p class="note">metrics.json has no per-epoch history.</p>')

    # Pictures.
    parts.append("<h2>Pictures</h2>")
    try:
        conv_index, _ = _conv_layer(model, None)
    except ValueError:
        conv_index = None
    if conv_index is not None:
        parts.append(_figure_html(_draw_filters(model), "learned kernels",
                                  f"The learned kernels of layer {conv_index}, the first convolutional layer."))
        label = names[int(labels[0])]
        parts.append(_figure_html(
            _draw_feature_maps(model, images[0], f"Feature maps of test image 0 (label {label})", names, mean, std),
            "feature maps of test image 0",
            "What each convolution, pooling and activation layer computes from test image 0."))
    else:
        parts.append('<p class="note">This model has no convolutional layer: no kernels or feature maps.</p>')
    if epochs:
        parts.append(_figure_html(_draw_curves(metrics, f"{run_title}: training curves"), "training curves",
                                  "Loss and accuracy per epoch; the dashed line marks the best validation epoch."))
    aug = Augment.from_config(cfg)
    if aug is not None:
        parts.append(_figure_html(
            _draw_augmentation(*_train_sample(cfg, metrics), aug, names, title=run_title),
            "training augmentation", f"The first training images and random draws of the run's augmentation "
                                     f"({aug.describe()})."))
    parts.append(_figure_html(_draw_confusion(labels, res["predictions"], names, run_title),
                              "confusion matrix", "Test-set confusion matrix (counts)."))
    parts.append(_figure_html(
        _draw_mistakes(images, labels, res["predictions"], names, res["probabilities"], title=run_title),
        "misclassified test images", "Misclassified test images, the most confident mistakes first."))
    parts += ['<p class="note">Written by cnnlab.</p>', "</body>", "</html>", ""]
    return _atomic_write_bytes(out, "\n".join(parts).encode("utf-8"))


# ------------------------------------------------------------------------------ one picture of a run
def plot_run(what: str, run_dir, out=None, image=None, layer=None) -> Path:
    """Draw one picture of a saved run as a PNG file.

    Confusion and mistakes evaluate the model again on the run's test set; feature maps and the
    evaluation use the input normalisation the run recorded.

    Args:
        what: one of ``FIGSIZE``: "filters", "featuremaps", "curves", "confusion", "mistakes",
            "augment".
        run_dir: run directory written by ``cnnlab train``.
        out: PNG file to write; RUN/<what>.png if None.
        image: for "featuremaps" only: None or "test:N" (test image N; None is test:0), or the path
            of a PNG/JPEG file, converted to the run's data-set form.
        layer: for "filters" only: index of a Conv2d in the model; None for the first.

    Returns:
        The path written.

    Raises:
        ValueError: unknown ``what``, a bad ``image`` or ``layer``, a run without history (curves)
            or without augmentation (augment); the message is one line.
        checkpoint.RunError: the run directory is missing or broken.
    """
    if what not in FIGSIZE:
        raise ValueError(f"unknown picture {what!r}; choose one of {', '.join(FIGSIZE)}")
    model, spec, cfg, metrics = checkpoint.load_run(run_dir)
    mean, std = _norm(cfg, run_dir)
    out = Path(out) if out is not None else Path(run_dir) / f"{what}.png"
    run_title = _run_title(spec, cfg, metrics)
    if what == "filters":
        return plot_filters(model, out, layer=layer)
    if what == "featuremaps":
        picture, description = _input_image(image, cfg, metrics)
        return plot_feature_maps(model, picture, out, title=f"{run_title}: feature maps of {description}",
                                 class_names=class_names(_dataset(cfg, metrics)), mean=mean, std=std)
    if what == "curves":
        return plot_curves(metrics, out, title=f"{run_title}: training curves")
    if what == "augment":
        aug = _run_augment(cfg, run_dir)
        return plot_augmentation(*_train_sample(cfg, metrics), aug, out, class_names(_dataset(cfg, metrics)),
                                 title=run_title)
    names = class_names(_dataset(cfg, metrics))
    images, labels = _test_set(cfg, metrics)
    res = _evaluate(model, images, labels, mean, std)
    if what == "confusion":
        return plot_confusion(labels, res["predictions"], out, names, title=f"{run_title}, test set")
    return plot_mistakes(images, labels, res["predictions"], out, names, res["probabilities"],
                         title=f"{run_title}, test set")
