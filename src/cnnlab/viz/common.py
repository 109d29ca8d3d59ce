"""What every picture module shares: figures of a known size, atomic PNG/HTML writes, the model and
label checks more than one picture needs, and reading what a saved run (``runs.Run``) needs: its
data, class names and the model's predictions.

Figures are drawn with matplotlib's object API on an explicit Agg canvas rather than through
pyplot: no screen is needed, nothing is registered in pyplot's global figure list (so nothing
leaks), and importing this package does not switch the backend of a user's own plotting session
(``matplotlib.use("Agg")`` at import would break plt.show() in Jupyter or a GUI program).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import checkpoint, nn, runs
from ..data import class_names, load_dataset
from ..train import eval_loader, evaluate

DPI = 100
# Inches per picture kind; with DPI these give the exact pixel size of every PNG.
FIGSIZE = {
    "filters": (10, 8),
    "featuremaps": (10, 12),
    "curves": (12, 5),
    "confusion": (9, 8),
    "mistakes": (10, 11),
    "augment": (10, 8),
    "convert": (13, 7),
}

# Colour of the gaps between tiles of a mosaic: neither black nor white nor gray, so a gap is never
# mistaken for a kernel weight or an activation.
GAP_COLOUR = "#c9dcec"


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
def new_figure(kind: str, constrained: bool = True) -> Figure:
    """An empty figure of the fixed size of a picture kind, on its own Agg canvas.

    Args:
        kind: one of ``FIGSIZE``.
        constrained: use matplotlib's constrained layout.

    Returns:
        The figure.
    """
    fig = Figure(figsize=FIGSIZE[kind], dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)  # explicit Agg canvas: rendering never depends on the configured backend
    return fig


def png_bytes(fig: Figure) -> bytes:
    """Render a figure to PNG bytes at ``DPI``.

    Args:
        fig: a figure from ``new_figure``.

    Returns:
        The PNG file's bytes.
    """
    buf = io.BytesIO()
    # No bbox_inches="tight": that would crop and make the pixel size depend on the content.
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` all at once or not at all (``checkpoint.atomic_write``), so an
    interrupted run never leaves a half-written PNG or HTML file.

    Args:
        path: file to write.
        data: its whole content.

    Returns:
        The path written.
    """
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return Path(path)


def save_figure(fig: Figure, path) -> Path:
    """Save a figure as a PNG file, atomically.

    Args:
        fig: a figure from ``new_figure``.
        path: PNG file to write.

    Returns:
        The path written.
    """
    # Render fully in memory first, so a drawing error cannot even create the temporary file.
    # No close()/clear() needed: the figure was never registered with pyplot, so it is freed as
    # soon as it goes out of scope (clearing it would only cost time).
    return write_bytes(path, png_bytes(fig))


# ------------------------------------------------------------------------------ drawing helpers
def gray_with_gaps():
    """The gray colour map with NaN (a mosaic's gaps) drawn as ``GAP_COLOUR``."""
    return colormaps["gray"].with_extremes(bad=GAP_COLOUR)


def mosaic(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """Tiles laid out row by row in one image, for one ``imshow`` with one colour scale.

    One image is much faster to draw than one subplot per tile, which matters for grids of a
    thousand kernels.

    Args:
        tiles: (n, h, w) array.
        ncols: tiles per row.
        gap: pixels between tiles; gaps are NaN (drawn as ``GAP_COLOUR`` by ``gray_with_gaps``).

    Returns:
        (rows * (h + gap) - gap, ncols * (w + gap) - gap) float array.
    """
    n, h, w = tiles.shape
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


# ------------------------------------------------------------------------------ checking inputs
def layer_name(layer) -> str:
    """The first line of a layer's repr, e.g. "Conv2d(1, 20, kernel_size=(5, 5), ...)"."""
    return repr(layer).split("\n")[0]


def model_layers(model) -> list:
    """The layers of a Sequential model, in order.

    Args:
        model: a cnnlab.nn.Sequential model.

    Returns:
        list of its layers.

    Raises:
        ValueError: the model has no ``layers`` (not a Sequential).
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"expected a cnnlab.nn.Sequential model, got {type(model).__name__}")
    return list(layers)


def conv_layer(model, layer):
    """The convolutional layer a picture of kernels is about.

    Args:
        model: a cnnlab.nn.Sequential model.
        layer: an index into ``model.layers``, or None for the first Conv2d.

    Returns:
        (index, the Conv2d layer).

    Raises:
        ValueError: there is no such layer, it is not a Conv2d, or the model has none (the
            message lists where the Conv2d layers are).
    """
    layers = model_layers(model)
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
        raise ValueError(f"layer {layer} is {layer_name(layers[layer])}, not a Conv2d; {where}")
    return int(layer), layers[layer]


def check_labels(y_true, y_pred, k: int):
    """True and predicted labels as int64 class indices, checked against each other and ``k``.

    Args:
        y_true: true class indices (N,).
        y_pred: predicted class indices (N,).
        k: number of classes.

    Returns:
        (y_true, y_pred) as (N,) int64 arrays.

    Raises:
        ValueError: different lengths, no labels, or a value outside 0 to k - 1.
    """
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


def epoch_series(epochs, key) -> np.ndarray:
    """One metric over the epochs of metrics.json, NaN where an epoch lacks it.

    Args:
        epochs: the "epochs" list of a run's metrics.
        key: the metric, e.g. "validation_accuracy".

    Returns:
        (len(epochs),) float array.
    """
    return np.array([np.nan if e.get(key) is None else float(e[key]) for e in epochs])


# ------------------------------------------------------------------------------ reading a run
def run_class_names(run) -> list[str]:
    """The class names a run recorded (older runs: its data set's, ``cnnlab.data.class_names``)."""
    return list(run.config.classes or class_names(run.config.dataset))


def run_test_set(run):
    """The test images of a run's data set: (images (N, H, W) uint8, labels (N,))."""
    return load_dataset(run.config.dataset, validation=run.config.validation).test


def run_train_sample(run, count=6):
    """The first ``count`` training images of the run's data set and split, with their labels."""
    images, labels = load_dataset(run.config.dataset, validation=run.config.validation).train
    return images[:count], labels[:count]


def run_title(run) -> str:
    """The heading of a run's pictures: "<recipe> on <data set>"."""
    return f"{run.config.name} on {run.config.dataset}"


def run_predictions(run, images, labels) -> dict:
    """Evaluate a run's model again on labelled images, normalised as it was trained, keeping every
    prediction.

    Args:
        run: a ``runs.Run``.
        images: (N, H, W) uint8 images.
        labels: (N,) class indices.

    Returns:
        {"loss", "accuracy", "n", "predictions" (N,), "probabilities" (N, classes)}.
    """
    loader = eval_loader(images, labels, run.config.mean, run.config.std)
    return evaluate(runs.runnable(run.model), loader, return_predictions=True)
