"""One picture of a saved run, everything it needs read from the run directory: what ``cnnlab show``
draws."""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..data import form_for
from .augment import plot_augmentation
from .common import FIGSIZE, run_class_names, run_predictions, run_test_set, run_title, run_train_sample
from .confusion import plot_confusion
from .curves import plot_curves
from .featuremaps import plot_feature_maps
from .filters import plot_filters
from .gradcam import plot_gradcam
from .mistakes import plot_mistakes


def plot_run(what: str, run_dir, out=None, image=None, layer=None) -> Path:
    """Draw one picture of a saved run as a PNG file.

    Confusion and mistakes evaluate the model again on the run's test set; feature maps and the
    evaluation use the input normalisation the run recorded.

    Args:
        what: one of ``FIGSIZE``: "filters", "featuremaps", "curves", "confusion", "mistakes",
            "augment", "gradcam".
        run_dir: run directory written by ``cnnlab train``.
        out: PNG file to write; RUN/<what>.png if None.
        image: for "featuremaps" and "gradcam": None or "test:N" (test image N; None is test:0), or the
            path of a PNG/JPEG file, converted to the run's data-set form.
        layer: for "filters": index of a Conv2d in the model, None for the first; for "gradcam": the
            Conv2d whose maps are weighed, None for the last.

    Returns:
        The path written.

    Raises:
        ValueError: unknown ``what``, a bad ``image`` or ``layer``, a run without history (curves)
            or without augmentation (augment); the message is one line.
        checkpoint.RunError: the run directory is missing or broken.
    """
    if what not in FIGSIZE or what == "convert":
        raise ValueError(f"unknown picture of a run {what!r}; choose one of "
                         f"{', '.join(k for k in FIGSIZE if k != 'convert')} (a picture's conversion: plot_conversion)")
    run = runs.load(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / f"{what}.png"
    heading = run_title(run)
    if what == "filters":
        return plot_filters(run.model, out, layer=layer)
    if what == "featuremaps":
        picture, description = _input_image(image, run)
        return plot_feature_maps(run.model, picture, out, title=f"{heading}: feature maps of {description}",
                                 class_names=run_class_names(run), mean=run.config.mean, std=run.config.std)
    if what == "gradcam":
        picture, description = _input_image(image, run)
        return plot_gradcam(run.model, picture, out, title=f"{heading}: Grad-CAM of {description}",
                            class_names=run_class_names(run), mean=run.config.mean, std=run.config.std, layer=layer)
    if what == "curves":
        return plot_curves(run.metrics, out, title=f"{heading}: training curves")
    if what == "augment":
        if not run.config.augment.active:
            raise ValueError(f"run {run_dir} was trained without augmentation (its config records none): "
                             f"nothing to show")
        return plot_augmentation(*run_train_sample(run), run.config.augment, out, run_class_names(run),
                                 title=heading)
    names = run_class_names(run)
    images, labels = run_test_set(run)
    res = run_predictions(run, images, labels)
    if what == "confusion":
        return plot_confusion(labels, res["predictions"], out, names, title=f"{heading}, test set")
    return plot_mistakes(images, labels, res["predictions"], out, names, res["probabilities"],
                         title=f"{heading}, test set")


def _input_image(image, run):
    """(28x28 uint8 image, description) for IMAGE: None or "test:N" (test set) or a file path."""
    spec = "test:0" if image is None else str(image)
    if spec.startswith("test:"):
        try:
            n = int(spec[len("test:"):])
        except ValueError:
            raise ValueError(f"image {spec!r}: expected test:N with N a test-image index, e.g. test:0") from None
        images, labels = run_test_set(run)
        if not 0 <= n < len(images):
            raise ValueError(f"image {spec!r}: the {run.config.dataset} test set has {len(images):,} "
                             f"images, test:0 to test:{len(images) - 1}")
        names = run_class_names(run)
        return images[n], f"test image {n} (label {names[int(labels[n])]})"
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"image {spec}: no such file (give a PNG/JPEG file or test:N)")
    convert, form = form_for(run.config.dataset)
    return convert(path), f"{path.name} (converted to {form})"
