"""MNIST-C-style corruptions of white-on-black digits, for a robustness benchmark.

After Mu & Gilmer (2019), "MNIST-C: A Robustness Benchmark for Computer Vision", with the kinds of
digit a user's own pictures bring: blur, noise, strokes thicker or thinner than MNIST's, a low
resolution scaled up, lost contrast, and geometric changes. Each corruption is a deterministic
function ``f(images, seed) -> images`` of uint8 (N, 28, 28)-style images (any (N, H, W) works) at
one fixed severity, written in its docstring and in ``CORRUPTIONS``' description; the randomness of
corruption ``name`` comes from ``numpy.random.default_rng([seed, crc32(name)])``, so each is the
same whatever the order or the set of corruptions asked for.

The severities are fixed here once, chosen to be visibly hard but still readable to a person; they
are not the training augmentation's ranges (``cnnlab.data.augment``), whose draws are continuous and
come from the run's seed, and several corruptions (motion and glass blur, fog, shot noise, lines,
edges) have no counterpart in training at all.

    >>> from cnnlab.data import corruptions
    >>> corruptions.names()[:3]
    ['gaussian_blur', 'motion_blur', 'glass_blur']
    >>> blurred = corruptions.corrupt("gaussian_blur", test_images, seed=0)   # uint8, same shape
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CORRUPTIONS", "Corruption", "corrupt", "names"]


def _check(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"corruptions: expected images shaped (N, H, W), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise TypeError(f"corruptions: expected uint8 images (0-255), got {images.dtype}")
    return images


def _to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# --- blur ---------------------------------------------------------------------------------------

def gaussian_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, sigma 1.2 pixels (an out-of-focus scan)."""
    from scipy import ndimage

    return _to_uint8(ndimage.gaussian_filter(_to_float(images), sigma=(0, 1.2, 1.2), mode="constant"))


def _line_kernel(length: int, degrees: float) -> np.ndarray:
    """A normalised (length, length) kernel: a line ``length`` pixels long through the centre at
    ``degrees`` (counter-clockwise from the rows' direction), splatted bilinearly from fine samples."""
    k = np.zeros((length + 1, length + 1))
    c = (length - 1) / 2
    t = np.linspace(-c, c, 8 * length)
    rows = c - t * np.sin(np.radians(degrees))
    cols = c + t * np.cos(np.radians(degrees))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, dc, wgt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        np.add.at(k, (r0 + dr, c0 + dc), wgt)
    k = k[:length, :length]
    return k / k.sum()


def motion_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion blur: each image smeared along a line 7 pixels long at an angle uniform in [0, 180)."""
    from scipy import ndimage

    x = _to_float(images)
    angles = rng.uniform(0.0, 180.0, size=len(x))
    out = np.empty_like(x)
    for i, a in enumerate(angles):  # one kernel per image; a benchmark, not a training path
        out[i] = ndimage.convolve(x[i], _line_kernel(7, a), mode="constant")
    return _to_uint8(out)


def glass_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Glass blur (as in MNIST-C): blur sigma 0.7, then every pixel swapped with a random neighbour
    up to 1 pixel away (one pass, top-left to bottom-right), then blur sigma 0.7 again."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(_to_float(images), sigma=(0, 0.7, 0.7), mode="constant")
    n, h, w = x.shape
    d = rng.integers(-1, 2, size=(n, h, w, 2))
    rows = np.arange(n)
    for y in range(h):  # sequential swaps are the corruption's definition; vectorised over images
        for xx in range(w):
            y2 = np.clip(y + d[:, y, xx, 0], 0, h - 1)
            x2 = np.clip(xx + d[:, y, xx, 1], 0, w - 1)
            a, b = x[rows, y, xx].copy(), x[rows, y2, x2].copy()
            x[rows, y, xx], x[rows, y2, x2] = b, a
    return _to_uint8(ndimage.gaussian_filter(x, sigma=(0, 0.7, 0.7), mode="constant"))


# --- noise --------------------------------------------------------------------------------------

def gaussian_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, standard deviation 0.3 of the full range, clipped."""
    x = _to_float(images)
    return _to_uint8(x + rng.normal(0.0, 0.3, size=x.shape))


def shot_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot (Poisson) noise: each pixel a Poisson count with mean 4 x its brightness, divided by 4."""
    x = _to_float(images)
    return _to_uint8(rng.poisson(x * 4.0) / 4.0)


def impulse_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Impulse (salt-and-pepper) noise: 10% of the pixels set to black or white, half each."""
    x = _to_float(images)
    u = rng.random(x.shape)
    return _to_uint8(np.where(u < 0.05, 0.0, np.where(u < 0.10, 1.0, x)))


def fog(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fog: a smooth random haze (white noise blurred with sigma 3, scaled to [0, 0.6]) added."""
    from scipy import ndimage

    x = _to_float(images)
    haze = ndimage.gaussian_filter(rng.random(x.shape), sigma=(0, 3, 3), mode="wrap")
    lo = haze.min(axis=(1, 2), keepdims=True)
    hi = haze.max(axis=(1, 2), keepdims=True)
    return _to_uint8(x + 0.6 * (haze - lo) / np.maximum(hi - lo, 1e-12))


# --- strokes and resolution ---------------------------------------------------------------------

def thick(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thicker strokes: grey dilation with a 3x3 square (about one pixel more on each side)."""
    from scipy import ndimage

    return ndimage.grey_dilation(_check(images), size=(1, 3, 3))


def thin(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thinner strokes: grey erosion with a 2x2 square (about one pixel less across a stroke)."""
    from scipy import ndimage

    return ndimage.grey_erosion(_check(images), size=(1, 2, 2))


def lowres(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low resolution: area-averaged down to 12 x 12 pixels, then bilinearly back to full size."""
    from skimage.transform import resize

    x = _to_float(images)
    n, h, w = x.shape
    small = resize(x, (n, 12, 12), order=1, anti_aliasing=True, mode="constant")
    return _to_uint8(resize(small, (n, h, w), order=1, anti_aliasing=False, mode="edge"))


# --- contrast -----------------------------------------------------------------------------------

def contrast(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low contrast: the range squeezed to 30% about mid-grey (background 0.35, full ink 0.65)."""
    return _to_uint8(0.35 + 0.3 * _to_float(images))


def brightness(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brighter: 0.4 of the full range added to every pixel, clipped (a grey page, ink saturated)."""
    return _to_uint8(_to_float(images) + 0.4)


def faint(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint ink: every pixel times 0.35 (a light pencil on a black page)."""
    return _to_uint8(0.35 * _to_float(images))


# --- geometry -----------------------------------------------------------------------------------

def _warp(images: np.ndarray, matrices: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Each image resampled (bilinear, zero fill) so that output pixel p (from the centre) takes the
    input's value at ``matrices[i] @ p + shifts[i]``; (N, 2, 2) matrices on (row, column)."""
    from scipy import ndimage

    x = _to_float(images)
    n, h, w = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    p = np.stack([yy, xx])  # (2, H, W)
    src = np.einsum("nij,jhw->inhw", matrices, p)  # (2, N, H, W)
    if shifts is not None:
        src = src + shifts.T[:, :, None, None]
    coords = np.stack([np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, h, w)),
                       src[0] + cy, src[1] + cx])
    return _to_uint8(ndimage.map_coordinates(x, coords, order=1, mode="constant", cval=0.0))


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def shear(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal shear by a factor of 0.5 (rows slide by half their height from the centre), the
    direction random per image."""
    s = 0.5 * _signs(rng, len(images))
    m = np.zeros((len(images), 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, 1, 0] = s
    return _warp(images, m)


def scale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zoom about the centre by 0.6 (smaller) or 1.3 (larger), half the images each."""
    z = np.where(rng.random(len(images)) < 0.5, 0.6, 1.3)
    m = np.zeros((len(images), 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 1.0 / z
    return _warp(images, m)


def rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation about the centre by 30 degrees, the direction random per image."""
    t = np.radians(30.0) * _signs(rng, len(images))
    c, s = np.cos(t), np.sin(t)
    m = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1)  # (N, 2, 2)
    return _warp(images, m)


def translate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Translation by 4 pixels along each axis (a diagonal move of 5.7 pixels), directions random."""
    n = len(images)
    m = np.broadcast_to(np.eye(2), (n, 2, 2))
    shifts = -4.0 * np.stack([_signs(rng, n), _signs(rng, n)], 1)  # output p takes input p - shift
    return _warp(images, m, shifts)


# --- clutter and edges --------------------------------------------------------------------------

def _draw_lines(x: np.ndarray, points: np.ndarray, every: int = 1) -> np.ndarray:
    """Draw white polylines (each image's ``points``, (K, 2) row/column) on float images; with
    ``every`` > 1 only every ``every``-th pixel of each segment (a dotted line)."""
    from skimage.draw import line

    n, h, w = x.shape
    out = x.copy()
    for i in range(n):
        for (r0, c0), (r1, c1) in zip(points[i][:-1], points[i][1:]):
            rr, cc = line(int(r0), int(c0), int(r1), int(c1))
            rr, cc = rr[::every], cc[::every]
            keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            out[i, rr[keep], cc[keep]] = 1.0
    return out


def dotted_line(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dotted white line (every third pixel) across the image, from a random point on the left
    edge to one on the right, or from the top to the bottom (half the images each)."""
    x = _to_float(images)
    n, h, w = x.shape
    across = rng.random(n) < 0.5
    a, b = rng.integers(0, h, size=n), rng.integers(0, h, size=n)
    c, d = rng.integers(0, w, size=n), rng.integers(0, w, size=n)
    start = np.where(across[:, None], np.stack([a, np.zeros(n, int)], 1), np.stack([np.zeros(n, int), c], 1))
    stop = np.where(across[:, None], np.stack([b, np.full(n, w - 1)], 1), np.stack([np.full(n, h - 1), d], 1))
    return _to_uint8(_draw_lines(x, np.stack([start, stop], 1), every=3))


def zigzag(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A solid white zigzag: a 1-pixel polyline through 4 random points on the image."""
    x = _to_float(images)
    n, h, w = x.shape
    pts = np.stack([rng.integers(0, h, size=(n, 4)), rng.integers(0, w, size=(n, 4))], -1)  # (N, 4, 2)
    return _to_uint8(_draw_lines(x, pts))


def canny_edges(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Only the strokes' outlines: Canny edges (sigma 1) drawn white on black."""
    from skimage.feature import canny

    x = _to_float(images)
    return np.stack([canny(im, sigma=1.0) for im in x]).astype(np.uint8) * 255


@dataclass(frozen=True)
class Corruption:
    """One corruption: its function ``f(images, rng)``, its group and what it does, in words."""

    function: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    group: str

    @property
    def description(self) -> str:
        return " ".join((self.function.__doc__ or "").split())


CORRUPTIONS: dict[str, Corruption] = {f.__name__: Corruption(f, group) for group, fs in (
    ("blur", (gaussian_blur, motion_blur, glass_blur)),
    ("noise", (gaussian_noise, shot_noise, impulse_noise, fog)),
    ("stroke", (thick, thin, lowres)),
    ("contrast", (contrast, brightness, faint)),
    ("geometry", (shear, scale, rotate, translate)),
    ("clutter", (dotted_line, zigzag, canny_edges)),
) for f in fs}


def names() -> list[str]:
    """The corruptions' names, in the order of the benchmark's table."""
    return list(CORRUPTIONS)


def corrupt(name: str, images, seed: int = 0) -> np.ndarray:
    """Corrupt ``images`` (uint8, (N, H, W)) with corruption ``name``, reproducibly from ``seed``.

    Returns:
        New uint8 images, same shape.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; available: {', '.join(CORRUPTIONS)}")
    images = _check(images)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    out = CORRUPTIONS[name].function(images, rng)
    return np.ascontiguousarray(out, dtype=np.uint8)
