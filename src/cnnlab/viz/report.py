"""One self-contained HTML page about a run: tables, and every picture embedded as a PNG."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .. import backend, checkpoint, models, nn, runs
from .augment import draw_augmentation
from .common import (
    conv_layer,
    epoch_series,
    png_bytes,
    run_class_names,
    run_predictions,
    run_test_set,
    run_title,
    run_train_sample,
    write_bytes,
)
from .confusion import draw_confusion
from .curves import draw_curves
from .featuremaps import draw_feature_maps
from .filters import draw_filters
from .mistakes import draw_mistakes

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
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def shared_weights_line() -> str:
    """The article's point about shared weights, with counts taken from real cnnlab modules.

    Returns:
        One sentence comparing Conv2d(1, 20, 5) with Linear(784, 30).
    """
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


def _settings(config) -> list[tuple[str, object]]:
    """A TrainConfig as (name, value) rows; the optimizer's and the augmentation's settings as
    "optimizer.lr", "augment.max_shift", ..."""
    rows = []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items()]
        elif key != "format":
            rows.append((key, value))
    return rows


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
    run = runs.load(run_dir)
    model, spec, config, metrics = run.model, run.spec, run.config, run.metrics
    out = Path(out) if out is not None else run_dir / "report.html"
    name = spec["name"]
    dataset = config.dataset
    names = run_class_names(run)
    mean, std = config.mean, config.std
    images, labels = run_test_set(run)
    res = run_predictions(run, images, labels)
    recorded = run.test_accuracy
    headline = recorded if recorded is not None else res["accuracy"]
    heading = run_title(run)
    esc = html.escape

    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(f'cnnlab report: {heading}, test accuracy {100 * headline:.2f}%')}</title>",
        f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{esc(heading)}: test accuracy {100 * headline:.2f}%</h1>",
    ]
    description = models.describe(spec)
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
              f"<p>{esc(shared_weights_line())}</p>"]

    # Training configuration and run facts.
    parts.append("<h2>Training configuration</h2>")
    parts.append(_table(["setting", "value"], [(k, _fmt(k, v)) for k, v in _settings(config)], text_columns=(0, 1)))
    if not (run_dir / checkpoint.CONFIG).exists():
        parts.append('<p class="note">no config.json in this run: taken as an MNIST run with MNIST\'s '
                     'normalisation.</p>')
    facts = [(k, _fmt(k, v)) for k, v in metrics.items() if k != "epochs" and not isinstance(v, (dict, list))]
    if facts:
        parts += ["<h2>Run</h2>", _table(["fact", "value"], facts, text_columns=(0, 1))]

    # Per-epoch metrics, best-validation row highlighted.
    epochs = metrics.get("epochs") or []
    parts.append("<h2>Metrics per epoch</h2>")
    if epochs:
        cols = [c for c in _EPOCH_COLUMNS if any(c in e for e in epochs)]
        cols += sorted({k for e in epochs for k in e} - set(cols))
        val = epoch_series(epochs, "validation_accuracy")
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
        conv_index, _ = conv_layer(model, None)
    except ValueError:
        conv_index = None
    if conv_index is not None:
        parts.append(_figure_html(draw_filters(model), "learned kernels",
                                  f"The learned kernels of layer {conv_index}, the first convolutional layer."))
        label = names[int(labels[0])]
        parts.append(_figure_html(
            draw_feature_maps(model, images[0], f"Feature maps of test image 0 (label {label})", names, mean, std),
            "feature maps of test image 0",
            "What each convolution, pooling and activation layer computes from test image 0."))
    else:
        parts.append('<p class="note">This model has no convolutional layer: no kernels or feature maps.</p>')
    if epochs:
        parts.append(_figure_html(draw_curves(metrics, f"{heading}: training curves"), "training curves",
                                  "Loss and accuracy per epoch; the dashed line marks the best validation epoch."))
    aug = config.augment
    if aug.active:
        parts.append(_figure_html(
            draw_augmentation(*run_train_sample(run), aug, names, title=heading),
            "training augmentation", f"The first training images and random draws of the run's augmentation "
                                     f"({aug.describe()})."))
    parts.append(_figure_html(draw_confusion(labels, res["predictions"], names, heading),
                              "confusion matrix", "Test-set confusion matrix (counts)."))
    parts.append(_figure_html(
        draw_mistakes(images, labels, res["predictions"], names, res["probabilities"], title=heading),
        "misclassified test images", "Misclassified test images, the most confident mistakes first."))
    parts += ['<p class="note">Written by cnnlab.</p>', "</body>", "</html>", ""]
    return write_bytes(out, "\n".join(parts).encode("utf-8"))
