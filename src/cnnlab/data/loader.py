"""Mini-batch iteration over in-memory image arrays with reproducible shuffling and augmentation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .errors import DataError

__all__ = ["DataLoader", "MNIST_MEAN", "MNIST_STD", "shard_rows"]

# Mean and standard deviation of MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def shard_rows(total: int, index: int, count: int) -> tuple[int, int]:
    """The rows ``(start, stop)`` of part ``index`` of ``count`` of ``total`` rows: contiguous,
    disjoint, covering, the sizes equal to within one (the first ``total % count`` parts one larger).
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    base, extra = divmod(int(total), int(count))
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


class RowsOf:
    """A view of a ``numpy.random.Generator`` for rows ``start:stop`` of a batch of ``total``.

    Each draw whose first axis is the shard's ``stop - start`` rows draws for all ``total`` rows and
    returns this shard's: the numbers, and the generator's state after the draw, are those of the
    whole batch's draw (an augmentation's per-image draws all have the batch first). A draw of
    another shape is refused, since it could not be the whole batch's.
    """

    def __init__(self, rng: np.random.Generator, total: int, start: int, stop: int) -> None:
        self.rng, self.total, self.rows = rng, int(total), slice(int(start), int(stop))

    def _draw(self, method: str, size, *args, **kwargs):
        shape = (size,) if np.isscalar(size) else tuple(size)
        local = self.rows.stop - self.rows.start
        if not shape or shape[0] != local:
            raise ValueError(f"a sharded batch of {local} rows drew random numbers of shape {shape}: every draw "
                             f"must have the batch first to match the whole batch's draw")
        return getattr(self.rng, method)(*args, size=(self.total,) + shape[1:], **kwargs)[self.rows]

    def random(self, size=None, dtype=np.float64):
        return self._draw("random", size, dtype=dtype)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return self._draw("integers", size, low, high, dtype=dtype, endpoint=endpoint)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._draw("uniform", size, low, high)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._draw("normal", size, loc, scale)


class DataLoader:
    """Iterate over ``(x, y)`` mini-batches of NumPy arrays.

    ``x`` is ``dtype`` shaped (B, C, *S) (a channel axis is added to (N, H, W) images) holding
    ``(pixel/255 - mean) / std`` for uint8 images (float data is taken as already scaled, e.g. to
    [0, 1]); ``y`` is int64 (B,). Any number of spatial dimensions S works: sequences (N, C, L),
    images (N, C, H, W), volumes (N, C, D, H, W).

    Epoch ``k`` uses the generator ``PCG64(seed)`` jumped ``k`` times (epoch 0 is exactly
    ``np.random.default_rng(seed)``), for both the shuffle order and the augmentation. So the
    batches of an epoch depend only on ``seed`` and ``k``: two loaders with the same seed give
    bit-identical batches, and ``set_epoch(k)`` reproduces any epoch without replaying earlier ones.
    Each ``iter(loader)`` uses the current epoch and then advances it by one.

    Args:
        images: (N, H, W) images, or (N, C, *S) data with a channel axis (set ``channels``), uint8
            (or float, already scaled).
        labels: (N,) integer labels.
        batch_size: samples per batch.
        shuffle: permute the samples every epoch; otherwise keep their order.
        seed: seed of the per-epoch generators.
        augment: callable ``augment(batch, rng) -> batch`` applied per batch to the images scaled
            to [0, 1] (before normalisation, so zero fill means black), e.g. ``Augment(max_shift=2)``
            or ``Augment(max_shift=0, hflip=True)``.
        mean: scalar or per-channel mean subtracted after scaling to [0, 1]; MNIST's by default,
            ``cnnlab.data.norm_stats`` gives another data set's.
        std: scalar or per-channel standard deviation divided by.
        drop_last: drop a final batch smaller than ``batch_size``.
        dtype: floating dtype of ``x``.
        channels: whether ``images`` has a channel axis after N; by default it has one unless it
            is 3-D (N, H, W). Give True for sequences (N, C, L).
        shard: ``(index, count)`` for data-parallel training: every batch holds only the rows
            ``shard_rows(len(batch), index, count)`` of the batch one loader would give (the same
            permutation, and the whole batch's augmentation draws, see ``RowsOf``), so the
            ``count`` shards of a batch are exactly that batch. ``len`` stays the whole batches'.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        mean: float | Sequence[float] = MNIST_MEAN,
        std: float | Sequence[float] = MNIST_STD,
        drop_last: bool = False,
        dtype=np.float32,
        channels: bool | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        self.channels = images.ndim != 3 if channels is None else bool(channels)
        if not (3 <= images.ndim + (not self.channels) <= 5):
            raise ValueError(f"DataLoader: expected images (N,H,W) or (N,C,*S) with 1-3 spatial dimensions, got "
                             f"shape {images.shape}{'' if self.channels else ' without a channel axis'}")
        if labels.ndim != 1:
            raise ValueError(f"DataLoader: expected labels (N,), got shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"DataLoader: image/label count mismatch: {images.shape[0]} images, {labels.shape[0]} labels"
            )
        if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
            raise TypeError(f"DataLoader: images must be uint8 or float, got {images.dtype}")
        if int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"DataLoader: dtype must be floating, got {self.dtype}")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = augment
        self.drop_last = bool(drop_last)
        if shard is not None:
            index, count = (int(v) for v in shard)
            shard_rows(0, index, count)  # checks the index
            shard = (index, count)
        self.shard = shard
        n_channels = images.shape[1] if self.channels else 1
        ndim = images.ndim + (not self.channels)  # of a batch
        # (1, C, 1, ...) so scalar or per-channel statistics broadcast over the batch.
        self._mean = self._channel_stat(mean, n_channels, "mean", ndim)
        self._std = self._channel_stat(std, n_channels, "std", ndim)
        if np.any(self._std == 0):
            raise ValueError("DataLoader: std must be non-zero")
        # uint8 pixels map to [0, 1]; float images are assumed to be there already.
        self._scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
        self._epoch = 0

    def _channel_stat(self, value, channels: int, what: str, ndim: int) -> np.ndarray:
        arr = np.asarray(value, dtype=self.dtype).reshape(-1)
        if arr.size not in (1, channels):
            raise ValueError(f"DataLoader: {what} needs 1 or {channels} values, got {arr.size}")
        return np.broadcast_to(arr, (channels,)).reshape((1, channels) + (1,) * (ndim - 2)).copy()

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter(loader)`` will produce."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``.

        Args:
            epoch: non-negative epoch number.

        Returns:
            None.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)

    def rng_for_epoch(self, epoch: int) -> np.random.Generator:
        """The generator used for epoch ``epoch`` (shuffle first, then augmentation draws).

        Args:
            epoch: epoch number.

        Returns:
            A fresh Generator; epoch 0 equals ``np.random.default_rng(seed)``.
        """
        # jumped(k) advances PCG64 by k * 2**128 steps: independent, non-overlapping streams per epoch.
        bitgen = np.random.PCG64(self.seed)
        if epoch:
            bitgen = bitgen.jumped(epoch)
        return np.random.Generator(bitgen)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batch_rows(self, b: int) -> tuple[int, int, int]:
        """``(total, start, stop)``: the size of whole batch ``b`` and this shard's rows of it
        (``(total, 0, total)`` without a shard)."""
        total = min(self.batch_size, self.images.shape[0] - b * self.batch_size)
        return (total, *shard_rows(total, *self.shard)) if self.shard else (total, 0, total)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = self._epoch
        self._epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = self.images.shape[0]
        rng = self.rng_for_epoch(epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.shard is None:
                yield self._make_batch(idx, rng)
            else:
                total, start, stop = self.batch_rows(b)
                yield self._make_batch(idx[start:stop], RowsOf(rng, total, start, stop))

    def _make_batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raw = self.images[idx]
        if not self.channels:
            raw = raw[:, None]  # (B, H, W) -> (B, 1, H, W)
        x = raw.astype(self.dtype)
        x *= self.dtype.type(self._scale)
        if self.augment is not None:
            x = np.asarray(self.augment(x, rng), dtype=self.dtype)
        x -= self._mean
        x /= self._std
        y = self.labels[idx].astype(np.int64)
        return x, y
