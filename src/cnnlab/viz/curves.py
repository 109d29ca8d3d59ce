"""Loss and accuracy per epoch of a run, the best-validation epoch marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import epoch_series, new_figure, save_figure


def draw_curves(metrics, title=None) -> Figure:
    """The figure ``plot_curves`` saves.

    Args:
        metrics: the run's metrics dict (metrics.json) with a non-empty "epochs" list.
        title: heading; "<model> on <dataset>: training curves" if None.

    Returns:
        A Figure of ``FIGSIZE["curves"]``.

    Raises:
        ValueError: the metrics have no per-epoch history.
    """
    epochs = metrics.get("epochs") if isinstance(metrics, dict) else None
    if not epochs:
        raise ValueError("the run's metrics have no per-epoch history ('epochs' is missing or empty "
                         "in metrics.json): no training curves to draw")
    x = np.array([e.get("epoch", i + 1) for i, e in enumerate(epochs)], dtype=float)
    fig = new_figure("curves")
    ax_loss, ax_acc = fig.subplots(1, 2)

    styles = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}
    # The training numbers are averaged over the epoch's batches as they were trained on: with
    # dropout and augmentation on, and the weights still changing, so they can sit below validation.
    how = {"train": " (during the epoch, training mode)"}
    for part, colour in styles.items():
        loss = epoch_series(epochs, f"{part}_loss")
        if np.isfinite(loss).any():
            ax_loss.plot(x, loss, "o-", ms=3, color=colour, label=f"{part} loss{how.get(part, '')}")
        acc = epoch_series(epochs, f"{part}_accuracy") * 100
        if np.isfinite(acc).any():
            ax_acc.plot(x, acc, "o-", ms=3, color=colour, label=f"{part} accuracy{how.get(part, '')}")

    val = epoch_series(epochs, "validation_accuracy")
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
    return save_figure(draw_curves(metrics, title), path)
