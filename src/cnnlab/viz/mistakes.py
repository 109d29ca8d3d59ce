"""Misclassified images, labelled "true X / pred Y (p%)", the most confident mistakes first."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .common import check_labels, new_figure, save_figure


def draw_mistakes(images, y_true, y_pred, class_names, probabilities=None, max_images=36,
                  title=None) -> Figure:
    """The figure ``plot_mistakes`` saves.

    Args:
        images, y_true, y_pred, class_names, probabilities, max_images, title: as for
            ``plot_mistakes``.

    Returns:
        A Figure of ``FIGSIZE["mistakes"]``.

    Raises:
        ValueError: the images, labels or probabilities do not fit together.
    """
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"max_images must be a positive int, got {max_images!r}")
    imgs = np.asarray(images)
    yt, yp = check_labels(y_true, y_pred, len(class_names))
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
    fig = new_figure("mistakes")
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
    return save_figure(draw_mistakes(images, y_true, y_pred, class_names, probabilities, max_images, title), path)
