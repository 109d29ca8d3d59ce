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
from ..autograd import Tensor, no_grad
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
    "gradcam": (12, 4.5),
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


def is_sequential(model) -> bool:
    """Whether a model is a chain of ``layers`` (nn.Sequential, or a fused one), walked layer by layer;
    any other model (its own forward) is looked into with forward hooks (``hooked_maps``)."""
    return isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward


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


def named_convs(model) -> list:
    """(module path, Conv2d) for every Conv2d of any model, in ``named_modules()`` order
    (e.g. ``stem.0``, ``block1.body.0``)."""
    return [(name, m) for name, m in model.named_modules() if name and isinstance(m, nn.Conv2d)]


def hooked_maps(model, x, kinds) -> tuple[list, np.ndarray]:
    """Run ``x`` through any model with a forward hook on every sub-module of one of ``kinds``; keep
    each 4-D output in the order the forward pass makes them.

    Args:
        model: any cnnlab Module (its mode is left to the caller).
        x: the input array, (1, C, H, W).
        kinds: a tuple of module classes to hook (e.g. Conv2d, the poolings, the activations).

    Returns:
        ([(module path, module, output (C, H, W) float64)], the model's output as an array). A module
        the forward pass calls twice appears twice, its path then followed by " (call 2)".
    """
    blocks, calls, handles = [], {}, []

    def keeper(path):
        def keep(module, args, out):
            if getattr(out, "ndim", 0) == 4:
                calls[path] = calls.get(path, 0) + 1
                name = path if calls[path] == 1 else f"{path} (call {calls[path]})"
                blocks.append((name, module, np.asarray(out.numpy()[0], dtype=np.float64)))
        return keep

    for path, module in model.named_modules():
        if path and isinstance(module, kinds):
            handles.append(module.register_forward_hook(keeper(path)))
    try:
        with no_grad():
            out = model(Tensor(x))
    finally:
        for handle in handles:
            handle.remove()
    return blocks, np.asarray(out.numpy())


def conv_layer(model, layer):
    """The convolutional layer a picture of kernels is about.

    Args:
        model: any cnnlab model.
        layer: for a Sequential, an index into ``model.layers``; for a model with its own forward,
            the module path of a Conv2d (e.g. "stem.0"); None for the first Conv2d.

    Returns:
        (index or module path, the Conv2d layer).

    Raises:
        ValueError: there is no such layer, it is not a Conv2d, or the model has none (the
            message lists where the Conv2d layers are).
    """
    if not is_sequential(model):
        return _conv_by_path(model, layer)
    if isinstance(layer, str) and layer.isdigit():
        layer = int(layer)
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


def _conv_by_path(model, layer):
    """``conv_layer`` for a model with its own forward: layers are named by module path."""
    convs = named_convs(model)
    where = (f"the Conv2d layers of this {type(model).__name__} are {', '.join(n for n, _ in convs)}" if convs
             else f"this {type(model).__name__} has no Conv2d layer")
    if layer is None:
        if not convs:
            raise ValueError(f"no kernels to draw: {where}")
        return convs[0]
    if isinstance(layer, bool) or not isinstance(layer, (str, int, np.integer)):
        raise ValueError(f"layer must be the module path of a Conv2d, got {layer!r}; {where}")
    modules = dict(model.named_modules())
    path = str(layer)
    if path not in modules or not path:
        raise ValueError(f"layer {path} does not exist: {where}")
    if not isinstance(modules[path], nn.Conv2d):
        raise ValueError(f"layer {path} is {layer_name(modules[path])}, not a Conv2d; {where}")
    return path, modules[path]


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
