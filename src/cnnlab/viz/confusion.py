"""The confusion matrix (counts) of a model's predictions against the true labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .common import check_labels, new_figure, save_figure


def draw_confusion(y_true, y_pred, class_names, title=None) -> Figure:
    """The figure ``plot_confusion`` saves.

    Args:
        y_true, y_pred, class_names, title: as for ``plot_confusion``.

    Returns:
        A Figure of ``FIGSIZE["confusion"]``.

    Raises:
        ValueError: the labels do not match each other or the classes.
    """
    k = len(class_names)
    yt, yp = check_labels(y_true, y_pred, k)
    cm = np.bincount(yt * k + yp, minlength=k * k).reshape(k, k)
    n, correct = int(cm.sum()), int(np.trace(cm))
    fig = new_figure("confusion")
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
    return save_figure(draw_confusion(y_true, y_pred, class_names, title), path)
