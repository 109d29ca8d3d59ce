"""Per-dataset normalisation statistics: the mean and standard deviation of pixel/255.

A network is fed ``(pixel/255 - mean) / std``, and those two numbers belong to the data set it
is trained on: MNIST's are 0.1307 and 0.3081, Fashion-MNIST's (lighter, more varied clothing
pictures) 0.2860 and 0.3530. Both pairs are over the data set's whole 60,000-image *training*
file (never the test set), rounded to four decimals: for MNIST these are the published
constants, so MNIST results stay bit-identical; for Fashion-MNIST they were computed once with
:func:`pixel_stats` from the training file of Debian's ``dataset-fashion-mnist`` (0.286041 and
0.353024 unrounded). A folder of images has no published numbers, so :func:`norm_stats`
computes them from its training split.

Example:
    >>> from cnnlab.data import load_dataset, norm_stats, DataLoader
    >>> split = load_dataset("fashion-mnist")
    >>> mean, std = norm_stats(split)                  # (0.286, 0.353)
    >>> loader = DataLoader(*split.train, batch_size=64, mean=mean, std=std)
"""

from __future__ import annotations

import os

import numpy as np

from .datasets import SplitData, load_dataset
from .loader import MNIST_MEAN, MNIST_STD

__all__ = ["DATASET_STATS", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "norm_stats", "pixel_stats", "standardize"]

# Mean and standard deviation of Fashion-MNIST's 60,000 training images scaled to [0, 1]
# (pixel_stats of train-images-idx3-ubyte: 0.2860406, 0.3530242).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

# (mean, std) of the named data sets, over their full training files.
DATASET_STATS: dict[str, tuple[float, float]] = {
    "mnist": (MNIST_MEAN, MNIST_STD),
    "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
}


def pixel_stats(images) -> tuple[float, float]:
    """Mean and (population) standard deviation over every pixel of ``images``, as DataLoader scales them.

    uint8 images are scaled to [0, 1] (pixel/255) and counted exactly with a 256-bin histogram, so
    even 60,000 images need no float copy; float images are taken as already in [0, 1]. All
    channels are pooled into one pair of numbers.

    Args:
        images: (N, H, W) or (N, C, H, W) uint8 or float images, at least one.

    Returns:
        (mean, std) as Python floats.

    Raises:
        ValueError: no images, a non-numeric dtype, non-finite values, or all pixels equal (std 0
            cannot normalise anything).
    """
    x = np.asarray(images)
    if x.ndim not in (3, 4):
        raise ValueError(f"pixel_stats: expected images (N,H,W) or (N,C,H,W), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"pixel_stats: no pixels to measure (images of shape {x.shape})")
    if x.dtype == np.uint8:
        counts = np.bincount(x.reshape(-1), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64) / 255.0
        n = counts.sum()
        mean = float(counts @ values / n)
        std = float(np.sqrt(counts @ (values - mean) ** 2 / n))
    elif np.issubdtype(x.dtype, np.floating):
        x64 = x.astype(np.float64)
        if not np.all(np.isfinite(x64)):
            raise ValueError("pixel_stats: images contain NaN or infinite values")
        mean, std = float(x64.mean()), float(x64.std())
    else:
        raise ValueError(f"pixel_stats: images must be uint8 or float, got {x.dtype}")
    if not std > 0:
        raise ValueError(f"pixel_stats: every pixel has the value {mean:.6g}: std is 0, nothing to normalise with")
    return mean, std


def norm_stats(source) -> tuple[float, float]:
    """The (mean, std) a network trained on ``source`` is fed with: ``(pixel/255 - mean) / std``.

    Args:
        source: one of
            * "mnist" or "fashion-mnist": the constants of :data:`DATASET_STATS`;
            * a SplitData (from ``load_dataset``): the constants for a named data set, otherwise
              (a folder) :func:`pixel_stats` of its *training* images;
            * the path of an image folder: loaded as ``load_dataset`` does, then as a SplitData;
            * an array of images: :func:`pixel_stats` of it.

    Returns:
        (mean, std) as Python floats.

    Raises:
        ValueError: an unknown name or unsupported source, or images with no variation.
        DataError: a folder that cannot be read.
    """
    if isinstance(source, SplitData):
        if source.name in DATASET_STATS:
            return DATASET_STATS[source.name]
        return pixel_stats(source.train_images)
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name in DATASET_STATS:
            return DATASET_STATS[name]
        if not os.path.isdir(name):
            raise ValueError(
                f"norm_stats: {name!r} is neither a known data set ({', '.join(DATASET_STATS)}) nor a folder"
            )
        return norm_stats(load_dataset(name))
    if isinstance(source, np.ndarray):
        return pixel_stats(source)
    raise ValueError(
        f"norm_stats: expected a data set name, a folder, a SplitData or an image array, got {type(source).__name__}"
    )


def standardize(images, mean: float, std: float) -> np.ndarray:
    """uint8 pixels as a network's float32 input: ``(pixel/255 - mean) / std``, same shape."""
    return (np.asarray(images).astype(np.float32) / 255.0 - mean) / std
