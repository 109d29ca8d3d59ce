"""A loader whose data lives on the compute device (the GPU): uploaded once, batched there.

The shuffle order, the shifts and the flips are drawn on the CPU from the same per-epoch generator scheme
as DataLoader (cheap, and reproducible); only the small index arrays travel per batch. Slicing,
translation, flipping and normalisation run on the device, written against ``xp`` so the same code runs
on NumPy arrays too (which is how it is tested on machines without a GPU).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from .loader import MNIST_MEAN, MNIST_STD


class DeviceLoader:
    """Mini-batches (x float (B, 1, H, W), y int64 (B,)) of uint8 images kept on ``device``.

    Args:
        images: (N, H, W) uint8.
        labels: (N,) integers.
        batch_size: samples per batch.
        shuffle: new order every epoch.
        seed: seed of the per-epoch generators (epoch k uses PCG64(seed) jumped k times).
        max_shift: random translation by up to this many pixels (zero fill), 0 for none.
        hflip: mirror each image left-right with probability 0.5 (after the shift, as Augment does).
        mean, std: normalisation of pixel/255.
        device: 'cpu' or 'cuda'.
        dtype: floating dtype of the batches.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, seed=0, max_shift=0, mean=MNIST_MEAN,
                 std=MNIST_STD, device="cuda", dtype=np.float32, hflip=False):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"DeviceLoader: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"DeviceLoader: {images.shape[0]} images but labels of shape {labels.shape}")
        if int(batch_size) < 1 or int(max_shift) < 0:
            raise ValueError(f"DeviceLoader: batch_size must be >= 1 and max_shift >= 0, got {batch_size}, {max_shift}")
        if not isinstance(hflip, (bool, np.bool_)):
            raise TypeError(f"DeviceLoader: hflip must be True or False, got {hflip!r}")
        if not np.all(np.asarray(std, dtype=np.float64) > 0):
            raise ValueError(f"DeviceLoader: std must be positive, got {std}")
        self.device = backend.normalize_device(device)
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.max_shift, self.dtype, self.hflip = int(max_shift), np.dtype(dtype), bool(hflip)
        s = self.max_shift
        # Pad once by the largest shift so that every shifted window is a plain slice.
        padded = np.pad(images, ((0, 0), (s, s), (s, s))) if s else images
        self.images = backend.to_device(np.ascontiguousarray(padded), self.device)  # (N, H+2s, W+2s) uint8
        self.labels = backend.to_device(labels.astype(np.int64), self.device)
        self.n, self.h, self.w = images.shape
        self._mean = np.full((1, 1, 1, 1), mean, dtype=self.dtype)
        self._std = np.full((1, 1, 1, 1), std, dtype=self.dtype)
        self._epoch = 0

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter(loader)`` will produce."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        bitgen = np.random.PCG64(self.seed)
        rng = np.random.Generator(bitgen.jumped(epoch) if epoch else bitgen)
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        xp = backend.xp_for(self.device)
        s = self.max_shift
        rows, cols = xp.arange(self.h), xp.arange(self.w)
        mirrored = cols[::-1]  # column x of a flipped image is column W - 1 - x of the original
        scale = np.float32(1.0 / 255.0) / self._std.reshape(())
        offset = (self._mean / self._std).reshape(())
        for b0 in range(0, self.n, self.batch_size):
            idx_np = order[b0:b0 + self.batch_size]
            idx = backend.to_device(idx_np, self.device)
            if s or self.hflip:
                # shift (dy, dx) moves the content down/right: out[y, x] = in[y - dy, x - dx]; a
                # flip then reads column W - 1 - x instead of x. Shifts are drawn first, then flips.
                d = rng.integers(-s, s + 1, size=(len(idx_np), 2)) if s else np.zeros((len(idx_np), 2), np.int64)
                d = backend.to_device(d, self.device)
                r = (s - d[:, 0])[:, None] + rows  # (B, H) rows of the padded image
                x_src = cols[None, :]
                if self.hflip:
                    flip = backend.to_device(rng.random(len(idx_np)) < 0.5, self.device)
                    x_src = xp.where(flip[:, None], mirrored[None, :], cols[None, :])  # (B, W)
                c = (s - d[:, 1])[:, None] + x_src  # (B, W) columns of the padded image
                batch = self.images[idx[:, None, None], r[:, :, None], c[:, None, :]]
            else:
                batch = self.images[idx]
            x = (batch.astype(self.dtype) * self.dtype.type(scale) - self.dtype.type(offset))[:, None]
            yield x, self.labels[idx]
