"""A labelled image data set read from a directory tree: one sub-folder per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .images import open_image, to_8bit, to_mnist_form

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


class ImageFolder:
    """Images under ``root/<class name>/*.{png,jpg,jpeg,bmp}``, all loaded into memory.

    Class indices follow the sorted sub-folder names; files within a class are sorted by name, so
    the order is reproducible. Files with other extensions and hidden entries are ignored.

    Args:
        root: directory with one sub-folder per class.
        size: (height, width) every image is resized to (bilinear, antialiased); None keeps the
            original size, which must then be the same for all images.
        grayscale: True gives ``images`` (N, H, W); False gives RGB (N, 3, H, W).
        mnist_form: convert each picture with :func:`to_mnist_form` (white digit on black, 28x28,
            centred) instead of plain resizing; implies grayscale and size (28, 28).

    Attributes:
        classes: sorted class (sub-folder) names.
        class_to_idx: name -> index.
        images: uint8 array, (N, H, W) or (N, 3, H, W).
        labels: int64 array (N,).
        paths: the file of each image.

    Raises:
        DataError: missing root, no class folders, a class folder without images, or an unreadable
            image (the message names the folder or file).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: tuple[int, int] | None = (28, 28),
        grayscale: bool = True,
        mnist_form: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder does not exist or is not a directory")
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DataError(f"{self.root}: no class sub-folders found (expected root/<class name>/<images>)")
        self.classes = [d.name for d in class_dirs]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.grayscale = bool(grayscale) or mnist_form
        self.size = (28, 28) if mnist_form else (None if size is None else (int(size[0]), int(size[1])))

        paths: list[Path] = []
        labels: list[int] = []
        for idx, d in enumerate(class_dirs):
            files = sorted(
                p
                for p in d.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise DataError(
                    f"{d}: class folder is empty: expected image files ({', '.join(IMAGE_EXTENSIONS)})"
                )
            paths += files
            labels += [idx] * len(files)

        arrays = [to_mnist_form(p) if mnist_form else self._load(p) for p in paths]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(
                f"{self.root}: images have different sizes {sorted(shapes)}; pass size=(H, W) to resize them"
            )
        self.paths = paths
        self.images = np.stack(arrays)
        self.labels = np.asarray(labels, dtype=np.int64)

    def _load(self, path: Path) -> np.ndarray:
        img = to_8bit(open_image(path), str(path))  # DataError naming the file if unreadable
        img = img.convert("L" if self.grayscale else "RGB")
        if self.size is not None and img.size != (self.size[1], self.size[0]):
            # PIL sizes are (width, height).
            img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return arr if self.grayscale else arr.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, n={len(self)}, classes={self.classes})"
