"""Training images next to random draws of the augmentation a run trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .common import new_figure, save_figure


def augmentation_grid(images, augment, copies: int = 7, seed: int = 0) -> np.ndarray:
    """Each image followed by ``copies`` independent draws of ``augment`` on it.

    Args:
        images: (N, H, W) uint8 images.
        augment: a ``cnnlab.data.Augment`` (or any callable ``augment(batch, rng)``).
        copies: augmented versions per image; one call of ``augment`` on the whole batch each.
        seed: seed of the one generator every draw comes from.

    Returns:
        (N, 1 + copies, H, W) array: column 0 the originals, then the draws in order.
    """
    if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 1:
        raise ValueError(f"copies must be a positive int, got {copies!r}")
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"expected images (N, H, W), got shape {imgs.shape}")
    rng = np.random.default_rng(seed)
    return np.stack([imgs] + [augment(imgs, rng) for _ in range(copies)], axis=1)


def draw_augmentation(images, labels, augment, class_names, copies=7, seed=0, title=None) -> Figure:
    """The figure ``plot_augmentation`` saves.

    Args:
        images, labels, augment, class_names, copies, seed, title: as for ``plot_augmentation``.

    Returns:
        A Figure of ``FIGSIZE["augment"]``.
    """
    grid = augmentation_grid(images, augment, copies, seed)
    fig = new_figure("augment")
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
    return save_figure(draw_augmentation(images, labels, augment, class_names, copies, seed, title), path)
