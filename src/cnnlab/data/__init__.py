"""Data sets and input pipelines: IDX files, MNIST / Fashion-MNIST with checksums, Nielsen's
50k/10k/10k split and shift expansion, each data set's normalisation statistics, a reproducible
mini-batch loader with augmentation, image folders and conversion of users' own digit pictures
into MNIST form.

Example:
    >>> from cnnlab.data import load_dataset, norm_stats, DataLoader, Augment
    >>> split = load_dataset("mnist")                  # 50k / 10k / 10k, uint8 images
    >>> mean, std = norm_stats(split)                   # (0.1307, 0.3081); Fashion-MNIST's differ
    >>> loader = DataLoader(*split.train, batch_size=64, seed=0, augment=Augment(max_shift=2),
    ...                     mean=mean, std=std)
    >>> x, y = next(iter(loader))                       # x float32 (64, 1, 28, 28), y int64 (64,)
"""

from .augment import (
    APPEARANCE,
    Augment,
    affine_images,
    blur_images,
    contrast_images,
    elastic_images,
    erase_images,
    flip_images,
    gaussian_matrix,
    lowres_images,
    random_affine,
    random_blur,
    random_contrast,
    random_elastic,
    random_erase,
    random_hflip,
    random_lowres,
    random_noise,
    random_rotate,
    random_stroke,
    random_translate,
    resample_matrix,
    rotate_images,
    shift_images,
    stroke_images,
)
from .checksums import KNOWN_SHA256, clear_verification_cache, verify_sha256
from .datasets import (
    DATASET_NAMES,
    MNISTData,
    SplitData,
    class_names,
    dataset_dir,
    expand_shifts,
    load_dataset,
    load_fashion_mnist,
    load_folder_split,
    load_mnist,
    nielsen_split,
    search_dirs,
)
from .device_loader import DeviceLoader
from .errors import DataError
from .folder import IMAGE_EXTENSIONS, ImageFolder
from .idx import parse_idx, read_idx, read_idx_bytes, write_idx
from .images import (
    Conversion,
    FirstFrameWarning,
    NoDigitError,
    convert_digit,
    form_for,
    load_image_batch,
    open_image,
    shape_doubt,
    to_8bit,
    to_fashion_form,
    to_mnist_form,
)
from .limits import MAX_DATA_BYTES, MAX_IMAGE_PIXELS, check_regular_file, max_data_bytes, max_image_pixels
from .loader import MNIST_MEAN, MNIST_STD, DataLoader, RowsOf, shard_rows
from .stats import DATASET_STATS, FASHION_MNIST_MEAN, FASHION_MNIST_STD, norm_stats, pixel_stats, standardize

__all__ = [
    "APPEARANCE",
    "Augment",
    "blur_images",
    "contrast_images",
    "lowres_images",
    "random_blur",
    "random_contrast",
    "random_lowres",
    "random_noise",
    "random_stroke",
    "resample_matrix",
    "stroke_images",
    "DATASET_NAMES",
    "DATASET_STATS",
    "DataError",
    "Conversion",
    "DataLoader",
    "DeviceLoader",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FirstFrameWarning",
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "KNOWN_SHA256",
    "MAX_DATA_BYTES",
    "MAX_IMAGE_PIXELS",
    "MNISTData",
    "MNIST_MEAN",
    "MNIST_STD",
    "NoDigitError",
    "RowsOf",
    "SplitData",
    "check_regular_file",
    "class_names",
    "convert_digit",
    "clear_verification_cache",
    "dataset_dir",
    "expand_shifts",
    "flip_images",
    "load_dataset",
    "load_fashion_mnist",
    "load_folder_split",
    "load_image_batch",
    "load_mnist",
    "max_data_bytes",
    "max_image_pixels",
    "nielsen_split",
    "norm_stats",
    "open_image",
    "parse_idx",
    "pixel_stats",
    "random_hflip",
    "random_rotate",
    "random_affine",
    "random_erase",
    "affine_images",
    "elastic_images",
    "erase_images",
    "gaussian_matrix",
    "random_elastic",
    "random_translate",
    "read_idx",
    "read_idx_bytes",
    "rotate_images",
    "search_dirs",
    "shape_doubt",
    "shard_rows",
    "shift_images",
    "standardize",
    "to_8bit",
    "to_mnist_form",
    "to_fashion_form",
    "form_for",
    "verify_sha256",
    "write_idx",
]
