"""The learned kernels of a convolutional layer as grayscale tiles (the article's grid of 5x5 filters)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .common import conv_layer, gray_with_gaps, layer_name, mosaic, new_figure, save_figure

_MAX_INPUT_CHANNELS = 16  # per-channel kernel grids show at most this many input channels
_MAX_FILTER_TILES = 100  # single-channel kernel grids (one subplot per kernel)


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


def draw_filters(model, layer=None, channel=None, title=None) -> Figure:
    """The figure ``plot_filters`` saves.

    Args:
        model, layer, channel: as for ``plot_filters``.
        title: heading; "Layer N: <the layer>" if None.

    Returns:
        A Figure of ``FIGSIZE["filters"]``.

    Raises:
        ValueError: ``layer`` is not a Conv2d or ``channel`` is out of range.
    """
    index, conv = conv_layer(model, layer)
    w = np.asarray(conv.weight.numpy(), dtype=np.float64)  # (F, C, kh, kw)
    n_out, n_in, kh, kw = w.shape
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_in:
            raise ValueError(f"channel {channel!r} does not exist: layer {index} "
                             f"({layer_name(conv)}) has {n_in} input channel(s), 0 to {n_in - 1}")
    # One colour scale for every tile, symmetric around 0: mid-gray is a zero weight, so the sign
    # and relative strength of weights can be compared across kernels.
    shown = w if channel is None else w[:, channel: channel + 1]
    vmax = float(np.abs(shown).max()) or 1.0
    scale = (f"shared gray scale for all tiles: black = {-vmax:.3g}, mid-gray = 0, "
             f"white = +{vmax:.3g}")
    head = title or f"Layer {index}: {layer_name(conv)}"
    cmap = gray_with_gaps()

    if n_in == 1 or channel is not None:
        ch = 0 if channel is None else int(channel)
        kernels = w[:, ch][:_MAX_FILTER_TILES]
        n = len(kernels)
        nrows, ncols = _best_grid(n, 1, 8.4, 6.4)  # the area left beside the colour bar, inches
        fig = new_figure("filters")
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
    fig = new_figure("filters")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for p, ax in enumerate(axes):
        rows = range(p * per_panel, min(n_out, (p + 1) * per_panel))
        if not len(rows):
            ax.set_axis_off()
            continue
        tiles = w[rows.start: rows.stop, :cs].reshape(len(rows) * cs, kh, kw)
        im = ax.imshow(mosaic(tiles, cs, gap), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
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
        model: a cnnlab model: a Sequential, or any Module with its own forward.
        path: PNG file to write.
        layer: a Sequential's index into ``model.layers`` of a Conv2d; for another model the
            module path of any Conv2d in ``named_modules()`` (e.g. "block1.body.0"); None for the first.
        channel: for a layer with several input channels, draw only this input channel's kernels;
            None draws a grid of output maps (rows) by input channels (columns, at most 16).

    Returns:
        The path written.

    Raises:
        ValueError: ``layer`` is not a Conv2d (the message names it) or ``channel`` is out of range.
    """
    return save_figure(draw_filters(model, layer, channel), path)
