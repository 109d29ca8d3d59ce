"""How a picture becomes MNIST's 28x28 form, step by step (``cnnlab show convert PICTURE``): the
input, its gray, the page's illumination estimate, the flattened ink contrast, the ink mask with
its box, the cropped digit, the result, and with a run what the run reads in it. A picture the
conversion refuses is drawn as far as the conversion got, under its error, so a user sees why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle

from .. import calibration, runs
from ..autograd import Tensor, no_grad
from ..data import NoDigitError, convert_digit, open_image, shape_doubt, standardize
from .common import new_figure, run_class_names, save_figure


def draw_conversion(picture, run_dir=None):
    """The figure of ``plot_conversion``.

    Args:
        picture: a path or PIL image of a digit.
        run_dir: a run directory whose prediction to add, or None.

    Returns:
        A Figure of ``FIGSIZE["convert"]``.

    Raises:
        DataError: the file cannot be read as a picture (a picture with no digit is drawn).
        checkpoint.RunError: ``run_dir`` is not a readable run.
    """
    run = runs.load(run_dir) if run_dir is not None else None
    image = open_image(picture)
    name = Path(picture).name if isinstance(picture, (str, Path)) else "picture"
    try:
        conv, error = convert_digit(image), None
        shown = {"gray": conv.gray, "background": conv.background, "flat": conv.flat, "polarity": conv.polarity}
    except NoDigitError as exc:
        conv, error, shown = None, str(exc).split(": ", 1)[-1], exc.partial
    fig = new_figure("convert")
    axes = fig.subplots(2, 4)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])

    def panel(ax, array, title, vmax=None):
        if array is None:
            ax.text(0.5, 0.5, "not reached", ha="center", va="center", transform=ax.transAxes, color="0.5")
        else:
            ax.imshow(array, cmap="gray", vmin=0, vmax=vmax if vmax is not None else max(float(array.max()), 1e-12),
                      interpolation="nearest")
        ax.set_title(title, fontsize=9)

    axes[0, 0].imshow(image.convert("RGB"))
    axes[0, 0].set_title(f"input: {name} ({image.width}x{image.height})", fontsize=9)
    panel(axes[0, 1], shown.get("gray"), "gray (working size)", 255)
    panel(axes[0, 2], shown.get("background"), "illumination: the page under the ink", 255)
    panel(axes[0, 3], shown.get("flat"), f"flattened: {shown.get('polarity', '?')}")
    if conv is not None:
        panel(axes[1, 0], conv.mask.astype(float), f"ink: contrast >= {conv.threshold:.2f}, stroke {conv.stroke:.0f} px",
              1.0)
        top, bottom, left, right = conv.box
        axes[1, 0].add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                       edgecolor="tab:orange", linewidth=1.5))
        panel(axes[1, 1], conv.scaled, "cropped to the ink, longest side 20 px", 1.0)
        panel(axes[1, 2], conv.form, "28x28, centred by its centre of mass", 255)
    else:
        for ax, title in zip(axes[1, :3], ("ink", "cropped", "28x28")):
            panel(ax, None, title)
    ax = axes[1, 3]
    if run is not None and conv is not None:
        model = runs.runnable(run.model)
        x = standardize(conv.form, run.config.mean, run.config.std).reshape(1, 1, 28, 28)
        with no_grad():
            logits = np.asarray(model(Tensor(x)).numpy(), dtype=np.float64)[0]
        prob = calibration.softmax(logits, runs.temperature(run_dir))
        names = run_class_names(run)
        k = int(prob.argmax())
        ax.barh(np.arange(len(prob)), prob, color=["tab:orange" if i == k else "tab:blue" for i in range(len(prob))])
        ax.set_yticks(np.arange(len(prob)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        note = calibration.flag(prob, shape_doubt(conv.form))
        ax.set_title(f"read as {names[k]} ({100 * prob[k]:.1f}%)" + (f"\n{note}" if note else ""), fontsize=9)
    elif conv is not None:
        doubt = shape_doubt(conv.form)
        ax.text(0.5, 0.5, ("not a digit? " + doubt) if doubt else "give --run RUN\nfor a prediction",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.axis("off")
    else:
        ax.axis("off")
    fig.suptitle(f"{name}: " + (error if error else f"converted ({conv.polarity})"),
                 color="tab:red" if error else "black")
    return fig


def plot_conversion(picture, out, run_dir=None) -> Path:
    """Draw every step of a picture's conversion to MNIST's form (and, with ``run_dir``, the run's
    calibrated prediction) as a PNG file.

    Args:
        picture: a path or PIL image of a digit.
        out: PNG file to write.
        run_dir: a run directory, or None.

    Returns:
        The path written.
    """
    return save_figure(draw_conversion(picture, run_dir), out)
