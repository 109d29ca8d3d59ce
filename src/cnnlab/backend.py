"""Array-module selection, devices, default dtype and the seeded random generator.

Every operator is written once against ``xp``, the array module of its input: NumPy for
arrays in host memory, CuPy for arrays on an NVIDIA GPU. CuPy is imported lazily, only when
a GPU is asked for, so the CPU path never imports it.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DTYPE = np.float32

_cupy = None


def _import_cupy():
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: PLC0415 - optional dependency, imported only on request
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "device 'cuda' needs CuPy and an NVIDIA GPU: install it with "
                "`pip install 'cnnlab[gpu]'` (or a cupy-cudaXXx wheel matching your CUDA)"
            ) from exc
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(f"device 'cuda' asked for, but CuPy finds no usable GPU: {exc}") from exc
        _cupy = cupy
    return _cupy


def get_array_module(a):
    """Return ``numpy`` or ``cupy``: the module that owns array ``a``."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy
    mod = type(a).__module__
    if mod.startswith("cupy"):
        return _import_cupy()
    return np


def normalize_device(device) -> str:
    """Map user spellings ('cpu', 'cuda', 'cuda:0', 'gpu') to 'cpu' or 'cuda'."""
    if device is None:
        return "cpu"
    d = str(device).lower()
    if d == "cpu":
        return "cpu"
    if d in ("cuda", "gpu") or d.startswith("cuda:"):
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def device_of(a) -> str:
    return "cpu" if get_array_module(a) is np else "cuda"


def to_device(a, device: str):
    """Move array ``a`` to ``device`` ('cpu' or 'cuda'); a no-op when it is already there."""
    device = normalize_device(device)
    if device == "cpu":
        if isinstance(a, np.ndarray):
            return a
        return a.get()
    cp = _import_cupy()
    if isinstance(a, cp.ndarray):
        return a
    return cp.asarray(a)


def xp_for(device: str):
    return np if normalize_device(device) == "cpu" else _import_cupy()


def scatter_add(out, index, values) -> None:
    """out[index] += values, accumulating where ``index`` repeats (NumPy's add.at, CuPy's scatter_add)."""
    if isinstance(out, np.ndarray):
        np.add.at(out, index, values)
    else:
        import cupyx  # noqa: PLC0415 - only reached with CuPy arrays

        cupyx.scatter_add(out, index, values)


# ---------------------------------------------------------------------------------------------
# Random numbers: one seeded generator for initialisation, dropout, shuffling and augmentation.
# ---------------------------------------------------------------------------------------------
_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed cnnlab's global generator (initialisation, dropout, shuffling, augmentation)."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def rng() -> np.random.Generator:
    return _rng


# Data-parallel training: this process holds rows [start, stop) of a global batch of ``total``.
_batch_rows = None


def set_batch_rows(rows) -> None:
    """Declare that the current batch is rows ``(total, start, stop)`` of a global batch (None: the
    whole batch). Set by ``cnnlab.distributed`` around each step so that ``random`` draws the
    global batch's numbers: dropout masks then equal those of one process trained on the whole
    batch, and every process's generator stays in step."""
    global _batch_rows
    _batch_rows = None if rows is None else tuple(int(r) for r in rows)


def batch_rows():
    """The ``(total, start, stop)`` given to ``set_batch_rows``, or None."""
    return _batch_rows


def random(shape, like, dtype=None):
    """Uniform [0, 1) numbers of ``shape`` on the same device as array ``like``.

    Under ``set_batch_rows((total, start, stop))``, a draw whose first axis has this process's
    ``stop - start`` rows draws for all ``total`` rows and returns rows ``start:stop``.
    """
    xp = get_array_module(like)
    dtype = dtype or like.dtype
    rows = _batch_rows
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    part = None
    if rows is not None and shape and shape[0] == rows[2] - rows[1] and rows[0] != shape[0]:
        part, shape = slice(rows[1], rows[2]), (rows[0],) + shape[1:]
    if xp is np:
        out = _rng.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    else:
        seed = int(_rng.integers(2**63 - 1))
        out = xp.random.default_rng(seed).random(shape, dtype=dtype)
    return out if part is None else out[part]
