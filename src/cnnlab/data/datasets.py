"""MNIST and Fashion-MNIST: locating, verifying and loading the IDX files, Nielsen's split and
Nielsen's shift-expanded training set.

Where the files are looked for, first complete directory wins:

1. the ``root`` argument (if given, only there);
2. ``$CNNLAB_DATA/<name>``;
3. the package's own ``cnnlab/data/<name>`` (MNIST ships there, in the wheel and the checkout alike,
   so an installed cnnlab finds it from any directory);
4. ``~/.cache/cnnlab/<name>`` (``$XDG_CACHE_HOME/cnnlab/<name>`` when that is set);
5. ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` installs there).

Wherever they are found, the files are checked against ``checksums.KNOWN_SHA256``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checksums import KNOWN_SHA256, verify_sha256
from .errors import DataError
from .idx import idx_array, read_idx_bytes

__all__ = [
    "DATASET_NAMES",
    "MNISTData",
    "SplitData",
    "dataset_dir",
    "expand_shifts",
    "load_dataset",
    "load_fashion_mnist",
    "load_folder_split",
    "load_mnist",
    "nielsen_split",
    "search_dirs",
]

DATASET_NAMES = ("mnist", "fashion-mnist")

# The four files, by role; names are the canonical ones without .gz.
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGE_HW = (28, 28)
_NUM_CLASSES = 10

# The package's data folder: MNIST is package data (pyproject.toml), next to this file in the wheel
# and in the source checkout.
_PACKAGE_DATA = Path(__file__).resolve().parent
_SYSTEM_DATA = Path("/usr/share/datasets")

_HOW_TO_GET = {
    "mnist": "MNIST ships with cnnlab (the package's data/mnist folder: a damaged install? reinstall cnnlab); or "
    "put the 4 IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz) into $CNNLAB_DATA/mnist or ~/.cache/cnnlab/mnist",
    "fashion-mnist": "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it goes to "
    "/usr/share/datasets/fashion-mnist), or put the 4 IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; .gz optional) "
    "into $CNNLAB_DATA/fashion-mnist or ~/.cache/cnnlab/fashion-mnist",
}


@dataclass(frozen=True)
class MNISTData:
    """The raw 60k/10k MNIST-format data set.

    Attributes:
        train_images: (60000, 28, 28) uint8.
        train_labels: (60000,) int64 in 0..9.
        test_images: (10000, 28, 28) uint8.
        test_labels: (10000,) int64 in 0..9.
        name: "mnist" or "fashion-mnist".
        root: directory the files were read from.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str = "mnist"
    root: Path | None = None


@dataclass(frozen=True)
class SplitData:
    """Train / validation / test split (Nielsen's 50k/10k/10k for MNIST).

    Images are uint8 (N, 28, 28), labels int64 (N,). ``train``, ``validation`` and ``test`` give
    ``(images, labels)`` pairs, so ``x, y = split.train`` works. ``classes`` names the classes in
    label order (a folder's sub-folder names, as read when it was loaded; for MNIST and
    Fashion-MNIST ``class_names(name)``), for a run to keep with its weights.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str = "mnist"
    classes: tuple[str, ...] = ()

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.train_images, self.train_labels

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        return self.validation_images, self.validation_labels

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.test_images, self.test_labels


def _check_name(name: str, folder_ok: bool = False) -> str:
    if name not in DATASET_NAMES:
        also = ", or a folder with one sub-folder of images per class" if folder_ok else ""
        raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(DATASET_NAMES)}{also}")
    return name


def _cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else Path.home() / ".cache"


def search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for data set ``name``, in order.

    Args:
        name: "mnist" or "fashion-mnist".
        root: explicit directory; when given it is the only candidate.

    Returns:
        Candidate directories (they need not exist).
    """
    _check_name(name)
    if root is not None:
        return [Path(root).expanduser()]
    dirs = []
    env = os.environ.get("CNNLAB_DATA")
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs += [_PACKAGE_DATA / name, _cache_home() / "cnnlab" / name, _SYSTEM_DATA / name]
    return dirs


def _find_file(directory: Path, stem: str) -> Path | None:
    # Mirrors differ: gzip or not, and some spell "train-images.idx3-ubyte" with a dot.
    dotted = stem.replace("-idx", ".idx")
    for candidate in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _locate(directory: Path) -> dict[str, Path] | None:
    found = {role: _find_file(directory, stem) for role, stem in _FILES.items()}
    return found if all(found.values()) else None  # type: ignore[return-value]


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Find the directory holding all four IDX files of ``name``.

    Args:
        name: "mnist" or "fashion-mnist".
        root: explicit directory to use instead of the search path.

    Returns:
        The first directory from :func:`search_dirs` containing all four files.

    Raises:
        DataError: no complete directory found; the message lists where it looked and how to get it.
    """
    dirs = search_dirs(name, root)
    for directory in dirs:
        if _locate(directory) is not None:
            return directory
    looked = "; ".join(str(d) for d in dirs)
    raise DataError(
        f"{name}: the 4 IDX files were not found (looked in: {looked}). To get them, {_HOW_TO_GET[name]}."
    )


def _load_idx_verified(path: Path, expected_sha: str | None) -> np.ndarray:
    content = read_idx_bytes(path)  # bounded by its header and cnnlab's limit, before any checksum
    if expected_sha is not None:
        verify_sha256(path, content, expected_sha)
    return idx_array(content, path)


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> np.ndarray:
    """Validate one images/labels pair; returns labels as int64."""
    if images.ndim != 3 or images.shape[1:] != _IMAGE_HW or images.dtype != np.uint8:
        raise DataError(
            f"{img_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected 1-D labels, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} / {lbl_path}: image/label count mismatch: "
            f"{images.shape[0]} images but {labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DataError(
            f"{lbl_path}: labels out of range: expected 0..{_NUM_CLASSES - 1}, "
            f"got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def _load(name: str, root: str | os.PathLike | None, verify: bool) -> MNISTData:
    directory = dataset_dir(name, root)
    paths = _locate(directory)
    assert paths is not None  # dataset_dir guarantees all four exist
    arrays = {}
    for role, stem in _FILES.items():
        expected = KNOWN_SHA256[name][stem] if verify else None
        arrays[role] = _load_idx_verified(paths[role], expected)
    train_labels = _check_pair(
        arrays["train_images"], arrays["train_labels"], paths["train_images"], paths["train_labels"]
    )
    test_labels = _check_pair(
        arrays["test_images"], arrays["test_labels"], paths["test_images"], paths["test_labels"]
    )
    return MNISTData(arrays["train_images"], train_labels, arrays["test_images"], test_labels, name, directory)


def load_mnist(root: str | os.PathLike | None = None, verify: bool = True) -> MNISTData:
    """Load MNIST (60,000 train + 10,000 test 28x28 digits).

    Args:
        root: directory with the 4 IDX files (.gz or raw); default: the search path in the module doc.
        verify: check the decompressed SHA-256 of each file (cached after the first success).

    Returns:
        MNISTData with uint8 images (N, 28, 28) and int64 labels (N,).

    Raises:
        DataError: files missing, corrupt, failing the checksum or inconsistent with each other.
    """
    return _load("mnist", root, verify)


def load_fashion_mnist(root: str | os.PathLike | None = None, verify: bool = True) -> MNISTData:
    """Load Fashion-MNIST (60,000 train + 10,000 test 28x28 clothing images, 10 classes).

    Args:
        root: directory with the 4 IDX files; default: root, $CNNLAB_DATA/fashion-mnist,
            ~/.cache/cnnlab/fashion-mnist, /usr/share/datasets/fashion-mnist.
        verify: check the decompressed SHA-256 of each file (cached after the first success).

    Returns:
        MNISTData with uint8 images (N, 28, 28) and int64 labels (N,).

    Raises:
        DataError: files missing (the message says how to install them), corrupt or inconsistent.
    """
    return _load("fashion-mnist", root, verify)


def nielsen_split(ds: MNISTData, validation: int = 10000) -> SplitData:
    """Split off the LAST ``validation`` training images as the validation set.

    This matches Nielsen's mnist.pkl.gz (train = first 50,000, validation = last 10,000).
    The returned arrays are views of ``ds``'s arrays, not copies.

    Args:
        ds: the loaded data set.
        validation: validation set size, 0 <= validation < number of training images.

    Returns:
        SplitData with train / validation / test images (uint8) and labels (int64).
    """
    n = ds.train_images.shape[0]
    if not 0 <= validation < n:
        raise ValueError(f"validation size must be in [0, {n}), got {validation}")
    cut = n - validation
    return SplitData(
        ds.train_images[:cut],
        ds.train_labels[:cut].astype(np.int64, copy=False),
        ds.train_images[cut:],
        ds.train_labels[cut:].astype(np.int64, copy=False),
        ds.test_images,
        ds.test_labels.astype(np.int64, copy=False),
        ds.name,
        tuple(class_names(ds.name)),
    )


def load_dataset(
    name: str = "mnist", validation: int = 10000, root: str | os.PathLike | None = None, verify: bool = True
) -> SplitData:
    """Load MNIST, Fashion-MNIST or a folder of images, split into train / validation / test.

    Args:
        name: "mnist", "fashion-mnist", or the path of a directory with one sub-folder of
            images per class (see ``load_folder_split``).
        validation: size of the validation set taken from the end of the training set
            (10,000 gives Nielsen's 50k/10k/10k); ignored for a folder.
        root: directory with the IDX files, overriding the search path.
        verify: check SHA-256 checksums.

    Returns:
        SplitData.
    """
    if name not in DATASET_NAMES and Path(name).is_dir():
        return load_folder_split(name)
    ds = _load(_check_name(name, folder_ok=True), root, verify)
    return nielsen_split(ds, validation)


def load_folder_split(root: str | os.PathLike, fraction: float = 0.1) -> SplitData:
    """A folder of images (one sub-folder per class) as MNIST-form train / validation / test.

    Every picture goes through ``to_mnist_form`` (white on black, 28x28, centred), so models made
    for MNIST take them as they are. A fixed permutation (seed 0, independent of the training
    seed) puts ``fraction`` of the images in validation and as many in test, at least one each.

    Returns:
        SplitData with ``name`` set to the folder's path and ``classes`` to the sorted sub-folder
        names (label order).

    Raises:
        DataError: fewer than two class folders (a classifier of one class learns nothing and
            scores 100%), fewer than 3 images, or a folder or image that cannot be read.
    """
    from .folder import ImageFolder  # noqa: PLC0415 - folder imports this module's neighbours

    folder = ImageFolder(root, mnist_form=True)
    if len(folder.classes) < 2:
        raise DataError(f"{root}: one class folder ({folder.classes[0]!r}); a classifier needs at least two, "
                        "one sub-folder of images per class")
    n = len(folder.labels)
    if n < 3:
        raise DataError(f"{root}: {n} images; a train / validation / test split needs at least 3")
    k = max(1, int(round(fraction * n)))
    order = np.random.default_rng(0).permutation(n)
    val, test, train = order[:k], order[k:2 * k], order[2 * k:]
    x, y = folder.images, folder.labels.astype(np.int64)
    return SplitData(x[train], y[train], x[val], y[val], x[test], y[test], str(root), tuple(folder.classes))


def _shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move the content of every image by (dy, dx) pixels (+ = down/right) with zero fill."""
    out = np.zeros_like(images)
    h, w = images.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out  # shifted entirely out of frame
    # Destination and source windows along each axis; the uncovered strip stays zero.
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = images[..., ys, xs]
    return out


# Order of the copies of each image in expand_shifts: original, up, down, left, right.
_EXPAND_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def expand_shifts(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nielsen's expanded training set: every image plus its 1-pixel shifts, zero filled.

    Output order is deterministic and interleaved per image: ``out[5*i + k]`` is image ``i``
    unchanged (k=0), shifted up (1), down (2), left (3), right (4). Nielsen shuffles afterwards;
    here the DataLoader's per-epoch shuffling does that.

    Args:
        images: (N, H, W) or (N, C, H, W) array, any dtype.
        labels: (N,) labels.

    Returns:
        (images (5N, ...) same dtype, labels (5N,) int64).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim not in (3, 4):
        raise ValueError(f"expand_shifts: expected (N,H,W) or (N,C,H,W) images, got shape {images.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"expand_shifts: image/label count mismatch: {images.shape[0]} images, {labels.shape[0]} labels"
        )
    n = images.shape[0]
    # (N, 5, ...) then merge the first two axes -> (5N, ...) so the 5 variants of an image are adjacent.
    stacked = np.stack([_shift(images, dy, dx) for dy, dx in _EXPAND_SHIFTS], axis=1)
    out_images = stacked.reshape((5 * n,) + images.shape[1:])
    out_labels = np.repeat(labels.astype(np.int64), len(_EXPAND_SHIFTS))
    return out_images, out_labels


def class_names(dataset: str) -> list[str]:
    """The names of a data set's classes, in label order: digits, Fashion-MNIST's clothes, or a
    folder's sub-folder names (sorted, as ImageFolder numbers them)."""
    if dataset not in ("mnist", "fashion-mnist") and Path(dataset).is_dir():
        return sorted(p.name for p in Path(dataset).iterdir() if p.is_dir() and not p.name.startswith("."))
    if dataset == "fashion-mnist":
        return ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"]
    return [str(i) for i in range(10)]
