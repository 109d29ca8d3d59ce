"""Pictures of a trained run (PNG) and a one-file HTML report about it.

    plot_filters        the learned kernels of a conv layer (the article's grid of 5x5 filters)
    plot_feature_maps   what every conv / pooling / activation layer makes of one image
    plot_curves         loss and accuracy per epoch, best-validation epoch marked
    plot_confusion      10x10 confusion matrix with counts
    plot_mistakes       misclassified images, "true X / pred Y (p%)"
    plot_augmentation   training images next to random draws of their augmentation
    plot_gradcam        Grad-CAM: where in one picture the evidence for the answer lies (grad_cam: the numbers)
    plot_conversion     a picture's way to MNIST's form, step by step (``cnnlab show convert``)
    plot_run            any one of these for a saved run directory (what ``cnnlab show`` draws)
    build_report        all of the above plus tables, in one self-contained HTML file

Each ``plot_*`` has a ``draw_*`` twin in the same module that returns the matplotlib Figure instead
of writing it. Every picture has a fixed size (``FIGSIZE[kind]`` inches at ``DPI``), so its pixel
size is known in advance (``png_size``). Files are written to a temporary file in the target
directory and renamed over the target, so an interrupted run never leaves a half-written PNG or
HTML file.

One module per kind of picture (filters, featuremaps, curves, confusion, mistakes, augment, gradcam), the
report, ``show`` (a picture of a run directory) and ``common`` (what they share).
"""

from .augment import augmentation_grid, draw_augmentation, plot_augmentation
from .common import DPI, FIGSIZE, png_size
from .confusion import draw_confusion, plot_confusion
from .convert import draw_conversion, plot_conversion
from .curves import draw_curves, plot_curves
from .featuremaps import draw_feature_maps, plot_feature_maps
from .filters import draw_filters, plot_filters
from .gradcam import draw_gradcam, grad_cam, plot_gradcam
from .mistakes import draw_mistakes, plot_mistakes
from .report import build_report
from .show import plot_run

__all__ = [
    "DPI", "FIGSIZE", "augmentation_grid", "build_report", "draw_augmentation", "draw_confusion", "draw_conversion",
    "draw_curves", "draw_feature_maps", "draw_filters", "draw_gradcam", "draw_mistakes", "grad_cam", "plot_augmentation",
    "plot_confusion", "plot_conversion", "plot_curves", "plot_feature_maps", "plot_filters", "plot_gradcam",
    "plot_mistakes", "plot_run", "png_size",
]
