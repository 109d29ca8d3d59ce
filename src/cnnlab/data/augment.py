"""Vectorised, reproducible data augmentation for batches of images: integer translations, small
rotations and zooms and elastic distortions, all with zero (black) fill, as used for MNIST-style white-on-black images;
random horizontal flips (for pictures whose mirror image is the same class, e.g. Fashion-MNIST's
clothes; not for digits); and random erasing of a rectangle (zeroed).

Every function takes a batch shaped (N, H, W) or (N, C, H, W), works on all images at once
(no Python loop over images or pixels) and returns the same shape and dtype. Randomness comes
only from the ``rng`` passed in, so a seeded generator gives bit-identical results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import SettingError

__all__ = [
    "APPEARANCE", "Augment", "blur_images", "contrast_images", "lowres_images", "random_blur", "random_contrast",
    "random_lowres", "random_noise", "random_stroke", "resample_matrix", "stroke_images", "affine_images",
    "elastic_images", "erase_images", "flip_images", "gaussian_matrix", "random_affine",
    "random_elastic", "random_erase", "random_hflip", "random_rotate", "random_translate", "rotate_images",
    "shift_images",
]


def _as_nchw(batch: np.ndarray) -> tuple[np.ndarray, bool]:
    """View (N,H,W) as (N,1,H,W); returns the 4-D view and whether a channel axis was added."""
    batch = np.asarray(batch)
    if batch.ndim == 3:
        return batch[:, None], True
    if batch.ndim == 4:
        return batch, False
    raise ValueError(f"expected a batch shaped (N,H,W) or (N,C,H,W), got {batch.shape}")


def _per_image(values, n: int, what: str) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(values), (n,))
    except ValueError:
        raise ValueError(f"{what}: expected a scalar or {n} values, got shape {np.shape(values)}") from None


def shift_images(batch: np.ndarray, dy, dx) -> np.ndarray:
    """Translate each image by whole pixels, filling the uncovered border with zeros.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        dy: per-image (N,) or scalar integer vertical shift; positive moves content down.
        dx: per-image (N,) or scalar integer horizontal shift; positive moves content right.

    Returns:
        Shifted batch, same shape and dtype.
    """
    x, squeezed = _as_nchw(batch)
    n, c, h, w = x.shape
    dy = _per_image(dy, n, "dy").astype(np.int64)
    dx = _per_image(dx, n, "dx").astype(np.int64)
    m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    if m == 0:
        out = x.copy()
    else:
        # Pad by the largest shift so every source index is in range; the pad supplies the zeros.
        padded = np.pad(x, ((0, 0), (0, 0), (m, m), (m, m)))  # (N, C, H+2m, W+2m)
        # out[y, x] = in[y - dy, x - dx] = padded[y - dy + m, x - dx + m]
        rows = np.arange(h)[None, :] + (m - dy)[:, None]  # (N, H)
        cols = np.arange(w)[None, :] + (m - dx)[:, None]  # (N, W)
        out = padded[
            np.arange(n)[:, None, None, None],
            np.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]  # broadcasts to (N, C, H, W)
    return out[:, 0] if squeezed else out


def random_translate(batch: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by random integers dy, dx drawn uniformly from [-max_shift, max_shift].

    Args:
        batch: (N, H, W) or (N, C, H, W) images (uint8 or float).
        max_shift: largest shift in pixels (0 returns a copy).
        rng: source of randomness; draws dy for all images, then dx.

    Returns:
        Shifted batch, same shape and dtype.
    """
    n = np.asarray(batch).shape[0]
    max_shift = int(max_shift)
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    dy = rng.integers(-max_shift, max_shift + 1, size=n)
    dx = rng.integers(-max_shift, max_shift + 1, size=n)
    return shift_images(batch, dy, dx)


def rotate_images(batch: np.ndarray, degrees) -> np.ndarray:
    """Rotate each image about its centre by bilinear sampling, zero fill outside.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        degrees: per-image (N,) or scalar angle; positive turns the content counter-clockwise
            as displayed (row 0 at the top).

    Returns:
        Rotated batch, same shape and dtype (integer inputs are rounded and clipped to their range).
    """
    return affine_images(batch, degrees, 1.0)


def affine_images(batch: np.ndarray, degrees, scale) -> np.ndarray:
    """Rotate and zoom each image about its centre by bilinear sampling, zero fill outside.

    Output pixel p (measured from the centre) takes the input's value at R(-theta) p / scale, so
    ``scale`` > 1 enlarges the content and < 1 shrinks it; ``scale`` = 1 is a pure rotation.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        degrees: per-image (N,) or scalar angle; positive turns the content counter-clockwise
            as displayed (row 0 at the top).
        scale: per-image (N,) or scalar zoom factor, > 0.

    Returns:
        Transformed batch, same shape and dtype (integer inputs are rounded and clipped to their range).
    """
    x, squeezed = _as_nchw(batch)
    work = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    src_y, src_x = _affine_source(x.shape, degrees, scale, work)
    out = _bilinear_sample(x, src_y, src_x, work)
    return out[:, 0] if squeezed else out


def elastic_images(batch: np.ndarray, dy, dx, degrees=0.0, scale=1.0) -> np.ndarray:
    """Elastic distortion (Simard et al., 2003): move every pixel by its own displacement, with an
    optional rotation and zoom, all in one bilinear resampling (zero fill outside).

    Output pixel p takes the input's value at A(p) + d(p), where A is ``affine_images``' mapping
    for ``degrees`` and ``scale`` and d(p) = (dy[p], dx[p]); a constant d = (1, 0) therefore moves
    the content up by one row.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        dy, dx: displacement fields in pixels, (N, H, W) or broadcastable to it (the same for every
            channel).
        degrees: per-image (N,) or scalar angle, as in ``affine_images``.
        scale: per-image (N,) or scalar zoom factor, > 0, as in ``affine_images``.

    Returns:
        Distorted batch, same shape and dtype (integer inputs are rounded and clipped to their range).
    """
    x, squeezed = _as_nchw(batch)
    n, _, h, w = x.shape
    work = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    try:
        dy = np.broadcast_to(np.asarray(dy, dtype=work), (n, h, w))
        dx = np.broadcast_to(np.asarray(dx, dtype=work), (n, h, w))
    except ValueError:
        raise ValueError(f"elastic_images: displacement fields must broadcast to {(n, h, w)}, got "
                         f"{np.shape(dy)} and {np.shape(dx)}") from None
    src_y, src_x = _affine_source(x.shape, degrees, scale, work)
    out = _bilinear_sample(x, src_y + dy, src_x + dx, work)
    return out[:, 0] if squeezed else out


def gaussian_matrix(n: int, sigma: float, dtype=np.float64) -> np.ndarray:
    """(n, n) matrix G with G @ v = v convolved with a Gaussian of standard deviation ``sigma``
    pixels, truncated at 4 sigma and normalised to sum 1 over its taps; values beyond the ends
    count as zero. Smoothing an (N, H, W) field is then ``G_h @ field @ G_w.T``.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = int(np.ceil(4 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]  # j - i
    g = np.where(np.abs(offset) <= radius, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    return g.astype(dtype)


def random_elastic(batch: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator,
                   max_degrees: float = 0.0, max_scale: float = 0.0) -> np.ndarray:
    """Random elastic distortion (Simard et al., 2003; the MNIST recipe of Ciresan et al.), with an
    optional random rotation and zoom in the same resampling.

    Each image gets two fields of independent uniform numbers in [-1, 1], one per axis, smoothed
    by a Gaussian of standard deviation ``sigma`` pixels and multiplied by ``alpha``: a large sigma
    gives smooth, nearly rigid moves, a small one a local jitter, and alpha sets the strength.
    The angles are drawn first, then the zooms (as in ``random_affine``, each only when it is on),
    then the fields.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        alpha: strength of the displacement, >= 0 (0: no elastic part).
        sigma: smoothness of the displacement in pixels, > 0.
        rng: source of randomness.
        max_degrees, max_scale: as in ``random_affine``.

    Returns:
        Distorted batch, same shape and dtype.
    """
    x, _ = _as_nchw(batch)
    n, _, h, w = x.shape
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    angles, scales = _draw_affine(n, max_degrees, max_scale, rng)
    # the y field of every image, then the x field: the same numbers as one (2, N, H, W) draw, each
    # draw with the batch first (what a data-parallel shard's generator needs: see DataLoader)
    field = np.stack([rng.uniform(-1.0, 1.0, size=(n, h, w)) for _ in range(2)])
    field = alpha * (gaussian_matrix(h, sigma) @ field @ gaussian_matrix(w, sigma).T)  # (2, N, H, W)
    return elastic_images(batch, field[0], field[1], angles, scales)


def _affine_source(shape, degrees, scale, work):
    """Source coordinates (src_y, src_x), each (N, H, W), of ``affine_images``' inverse mapping."""
    n, _, h, w = shape
    theta = np.deg2rad(_per_image(degrees, n, "degrees").astype(np.float64))
    zoom = _per_image(scale, n, "scale").astype(np.float64)
    if not np.all(zoom > 0):
        raise ValueError(f"scale must be > 0, got min {zoom.min()}")
    cos = (np.cos(theta) / zoom).astype(work)[:, None, None]  # (N, 1, 1)
    sin = (np.sin(theta) / zoom).astype(work)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy = (np.arange(h, dtype=work) - cy)[None, :, None]  # (1, H, 1)
    xx = (np.arange(w, dtype=work) - cx)[None, None, :]  # (1, 1, W)
    # Inverse mapping: output pixel (y, x) samples the input at the point rotated back by -theta
    # and divided by the zoom.
    src_x = cos * xx - sin * yy + cx  # (N, H, W)
    src_y = sin * xx + cos * yy + cy
    return src_y, src_x


def _bilinear_sample(x, src_y, src_x, work):
    """out[n, c, y, x] = x[n, c] bilinearly interpolated at (src_y, src_x)[n, y, x]; zero outside.
    Integer inputs are rounded and clipped to their range; the result is contiguous, x's dtype."""
    n, c, h, w = x.shape
    y0 = np.floor(src_y)
    x0 = np.floor(src_x)
    fy = src_y - y0
    fx = src_x - x0
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    # Channels last so the gathered corners are (N, H, W, C) with the weights broadcasting on C.
    xt = x.transpose(0, 2, 3, 1)
    nidx = np.arange(n)[:, None, None]
    acc = np.zeros((n, h, w, c), dtype=work)
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            yi = y0 + oy
            xi = x0 + ox
            # Corners outside the image contribute zero (zero fill); clip only to index safely.
            inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            weight = (wy * wx * inside).astype(work)[..., None]  # (N, H, W, 1)
            corner = xt[nidx, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]  # (N, H, W, C)
            acc += weight * corner
    out = acc.transpose(0, 3, 1, 2)  # back to (N, C, H, W)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return np.ascontiguousarray(out, dtype=x.dtype)


def _draw_affine(n, max_degrees, max_scale, rng):
    """Per-image angles and zooms for ``random_affine`` (scalars 0 / 1 where an option is off)."""
    if not max_degrees >= 0:
        raise ValueError(f"max_degrees must be >= 0, got {max_degrees}")
    if not 0 <= max_scale < 1:
        raise ValueError(f"max_scale must be in [0, 1), got {max_scale}")
    angles = rng.uniform(-max_degrees, max_degrees, size=n) if max_degrees > 0 else 0.0
    scales = rng.uniform(1 - max_scale, 1 + max_scale, size=n) if max_scale > 0 else 1.0
    return angles, scales


def random_rotate(batch: np.ndarray, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate each image by an angle drawn uniformly from [-max_degrees, max_degrees].

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        max_degrees: largest rotation in degrees (0 returns a copy).
        rng: source of randomness.

    Returns:
        Rotated batch, same shape and dtype.
    """
    return random_affine(batch, max_degrees, 0.0, rng)


def random_affine(batch: np.ndarray, max_degrees: float, max_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate by an angle uniform in [-max_degrees, max_degrees] and zoom by a factor uniform in
    [1 - max_scale, 1 + max_scale], per image.

    The angles are drawn first (only if ``max_degrees`` > 0), then the zoom factors (only if
    ``max_scale`` > 0); ``random_rotate`` is this with ``max_scale`` = 0.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        max_degrees: largest rotation in degrees, >= 0.
        max_scale: largest relative zoom, in [0, 1).
        rng: source of randomness.

    Returns:
        Transformed batch, same shape and dtype.
    """
    angles, scales = _draw_affine(np.asarray(batch).shape[0], max_degrees, max_scale, rng)
    return affine_images(batch, angles, scales)


def erase_images(batch: np.ndarray, top, left, height, width) -> np.ndarray:
    """Set one rectangle per image to zero (black): rows [top, top+height), columns
    [left, left+width), all channels. A zero height or width leaves the image unchanged.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        top, left, height, width: per-image (N,) or scalar integers; the rectangle is clipped to
            the image.

    Returns:
        A new batch, same shape and dtype.
    """
    x, squeezed = _as_nchw(batch)
    n, _, h, w = x.shape
    top, left, height, width = (_per_image(v, n, name).astype(np.int64)[:, None] for v, name in
                                ((top, "top"), (left, "left"), (height, "height"), (width, "width")))
    rows = np.arange(h)[None, :]
    cols = np.arange(w)[None, :]
    in_rows = (rows >= top) & (rows < top + height)  # (N, H)
    in_cols = (cols >= left) & (cols < left + width)  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (N, H, W)
    out = x * keep[:, None].astype(x.dtype)
    return out[:, 0] if squeezed else out


def random_erase(batch: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                 area: tuple[float, float] = (0.02, 0.25), ratio: tuple[float, float] = (0.3, 3.3)) -> np.ndarray:
    """Random erasing: with probability ``p`` per image, zero one rectangle whose area is a
    fraction uniform in ``area`` of the image and whose height/width ratio is log-uniform in
    ``ratio``, placed uniformly where it fits.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        rng: source of randomness (draws: apply?, area, log-ratio, top, left; one of each per image).
        p: probability of erasing an image, in [0, 1].
        area: (low, high) fraction of the image's area, 0 < low <= high <= 1.
        ratio: (low, high) height/width aspect ratio, 0 < low <= high.

    Returns:
        A new batch, same shape and dtype.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"erase probability must be in [0, 1], got {p}")
    if not 0 < area[0] <= area[1] <= 1:
        raise ValueError(f"erase area must satisfy 0 < low <= high <= 1, got {area}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"erase ratio must satisfy 0 < low <= high, got {ratio}")
    x, _ = _as_nchw(batch)
    n, _, h, w = x.shape
    apply = rng.random(n) < p
    frac = rng.uniform(area[0], area[1], size=n)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), size=n))
    eh = np.clip(np.rint(np.sqrt(frac * h * w * aspect)), 1, h).astype(np.int64)
    ew = np.clip(np.rint(np.sqrt(frac * h * w / aspect)), 1, w).astype(np.int64)
    top = np.floor(rng.random(n) * (h - eh + 1)).astype(np.int64)
    left = np.floor(rng.random(n) * (w - ew + 1)).astype(np.int64)
    return erase_images(batch, top, left, eh * apply, ew * apply)


def flip_images(batch: np.ndarray, flip) -> np.ndarray:
    """Mirror the chosen images left-right (column ``x`` becomes column ``W - 1 - x``).

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        flip: per-image (N,) or scalar booleans; True mirrors that image, False keeps it.

    Returns:
        A new batch, same shape and dtype; images not chosen are unchanged copies.
    """
    x, squeezed = _as_nchw(batch)
    n = x.shape[0]
    flip = np.asarray(flip)
    if flip.dtype != np.bool_:
        raise ValueError(f"flip: expected booleans, got {flip.dtype}")
    flip = _per_image(flip, n, "flip")
    out = np.where(flip[:, None, None, None], x[..., ::-1], x)  # (N, C, H, W), a copy either way
    return out[:, 0] if squeezed else out


def random_hflip(batch: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``, independently.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        rng: source of randomness; draws one uniform number per image (flip where it is < p).
        p: probability of flipping, in [0, 1].

    Returns:
        Batch with about a fraction ``p`` of its images mirrored, same shape and dtype.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    n = np.asarray(batch).shape[0]
    return flip_images(batch, rng.random(n) < p)


# --- appearance: stroke width, blur, resolution, contrast, noise ----------------------------------
# The ranges the random versions draw from, fixed here (docs/robustness.md). They were set once from
# what users' pictures bring (pen widths, focus, upscaled scans, grey paper, sensor noise), not tuned
# on the corruption benchmark (cnnlab.data.corruptions), whose severities are single fixed points.
STROKE_RANGE = (-1.0, 1.0)      # stroke_images' amount: -1 a full 3x3-cross erosion, +1 a full 3x3 dilation
BLUR_RANGE = (0.3, 1.5)         # Gaussian sigma in pixels, drawn per axis (so the blur may be elongated)
LOWRES_RANGE = (9, 20)          # the low resolution's side in pixels (28 for MNIST: no change)
CONTRAST_LOW = (0.0, 0.45)      # background level after the change
CONTRAST_MIN_SPAN = 0.2         # ink level at least this much above the background, at most 1
GAMMA_RANGE = (0.5, 2.0)        # gamma, log-uniform
NOISE_SIGMA = (0.0, 0.25)       # the (uniform) noise's standard deviation, on the [0, 1] scale

# Augment's appearance options, in the order they are applied (and draw)
APPEARANCE = ("stroke", "blur", "lowres", "contrast", "noise")
_SQUARE = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def _float_work(batch: np.ndarray) -> tuple[np.ndarray, bool, np.dtype]:
    """(N, C, H, W) floating copy-or-view, whether a channel axis was added, the input's dtype."""
    x, squeezed = _as_nchw(batch)
    work = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    return x.astype(work, copy=False), squeezed, x.dtype


def _back(out: np.ndarray, squeezed: bool, dtype: np.dtype) -> np.ndarray:
    """The result in the input's dtype (integers rounded and clipped to their range) and shape."""
    if not np.issubdtype(dtype, np.floating):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(dtype, copy=False)
    return out[:, 0] if squeezed else out


def _neighbourhood(x: np.ndarray, offsets, reduce) -> np.ndarray:
    """``reduce`` (np.maximum or np.minimum) over each pixel's neighbours at ``offsets``, zeros outside."""
    h, w = x.shape[-2:]
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = pad[..., 1 + offsets[0][0]:1 + offsets[0][0] + h, 1 + offsets[0][1]:1 + offsets[0][1] + w].copy()
    for dy, dx in offsets[1:]:
        reduce(out, pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w], out=out)
    return out


def stroke_images(batch: np.ndarray, amount) -> np.ndarray:
    """Make each image's strokes thicker or thinner by a continuous ``amount`` in [-1, 1].

    The image moves a fraction ``amount`` of the way to its grey dilation with a 3x3 square (thicker
    by about a pixel on each side at 1), or a fraction ``-amount`` to its grey erosion with a 3x3
    cross (thinner, at -1) when ``amount`` is negative; 0 leaves it as it is. Zeros outside.

    Args:
        batch: (N, H, W) or (N, C, H, W) white-on-black images.
        amount: per-image (N,) or scalar, in [-1, 1].

    Returns:
        Batch, same shape and dtype.
    """
    x, squeezed, dtype = _float_work(batch)
    t = _per_image(amount, x.shape[0], "amount").astype(x.dtype)
    if np.any(np.abs(t) > 1):
        raise ValueError("stroke amount must be in [-1, 1]")
    t = t[:, None, None, None]
    out = x + np.maximum(t, 0) * (_neighbourhood(x, _SQUARE, np.maximum) - x) \
        + np.maximum(-t, 0) * (_neighbourhood(x, _CROSS, np.minimum) - x)
    return _back(out, squeezed, dtype)


def _gaussian_matrices(n: int, sigma: np.ndarray, dtype) -> np.ndarray:
    """(N, n, n) matrices, one per sigma: G @ v blurs v with a Gaussian of that sigma, zeros outside
    (the taps normalised over the whole line, so a blurred border loses what falls outside). A sigma
    of 0 gives the identity."""
    sigma = np.asarray(sigma, dtype=np.float64)
    offset = (np.arange(n)[None, :] - np.arange(n)[:, None]).astype(np.float64)  # j - i
    s = np.maximum(sigma, 1e-6)[:, None, None]
    g = np.exp(-0.5 * (offset / s) ** 2)
    k = np.arange(-(n - 1), n, dtype=np.float64)
    g /= np.exp(-0.5 * (k / s) ** 2).sum(axis=-1, keepdims=True)
    return g.astype(dtype)


def blur_images(batch: np.ndarray, sigma_y, sigma_x) -> np.ndarray:
    """Blur each image with a Gaussian of standard deviations ``sigma_y`` (down the rows) and
    ``sigma_x`` (along them), zeros outside; separable, as two batched matrix products.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        sigma_y, sigma_x: per-image (N,) or scalar, >= 0 pixels (0: no blur along that axis).

    Returns:
        Blurred batch, same shape and dtype.
    """
    x, squeezed, dtype = _float_work(batch)
    n, _, h, w = x.shape
    sy = _per_image(sigma_y, n, "sigma_y")
    sx = _per_image(sigma_x, n, "sigma_x")
    if np.any(sy < 0) or np.any(sx < 0):
        raise ValueError("blur sigma must be >= 0")
    gy = _gaussian_matrices(h, sy, x.dtype)[:, None]  # (N, 1, H, H)
    gx = _gaussian_matrices(w, sx, x.dtype)[:, None]
    return _back(gy @ x @ gx.transpose(0, 1, 3, 2), squeezed, dtype)


def resample_matrix(n: int, m: int) -> np.ndarray:
    """(n, n) float64 matrix R: R @ v is v area-averaged down to ``m`` samples, then linearly
    interpolated back up to ``n`` (pixel centres aligned, the ends held); m = n gives the identity."""
    if not 1 <= m <= n:
        raise ValueError(f"the low resolution must be in [1, {n}], got {m}")
    edges = np.arange(m + 1) * (n / m)
    src = np.arange(n)
    down = np.clip(np.minimum(edges[1:, None], src[None, :] + 1) - np.maximum(edges[:-1, None], src[None, :]),
                   0, None) * (m / n)  # (m, n): each output sample the mean of the input it covers
    pos = np.clip((src + 0.5) * (m / n) - 0.5, 0, m - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, m - 1)
    frac = pos - i0
    up = np.zeros((n, m))
    np.add.at(up, (src, i0), 1 - frac)
    np.add.at(up, (src, i1), frac)
    return up @ down


def lowres_images(batch: np.ndarray, size) -> np.ndarray:
    """Lower each image's resolution: area-average it down to ``size`` rows (and the columns in
    proportion), then scale it back up linearly (``resample_matrix`` on each axis).

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        size: per-image (N,) or scalar integer in [1, H]; H leaves the image as it is.

    Returns:
        Batch, same shape and dtype.
    """
    x, squeezed, dtype = _float_work(batch)
    n, _, h, w = x.shape
    size = _per_image(size, n, "size").astype(np.int64)
    if np.any(size < 1) or np.any(size > h):
        raise ValueError(f"lowres size must be in [1, {h}]")
    ry = _resample_table(h, h)[size - 1].astype(x.dtype, copy=False)[:, None]  # (N, 1, H, H)
    rx = _resample_table(w, h)[size - 1].astype(x.dtype, copy=False)[:, None]
    return _back(ry @ x @ rx.transpose(0, 1, 3, 2), squeezed, dtype)


@lru_cache(maxsize=64)
def _resample_table(n: int, h: int) -> np.ndarray:
    """(h, n, n): for each low resolution 1..h of the height, the matrix of an axis of length n
    (its low resolution in proportion: round(size * n / h), at least 1)."""
    t = np.stack([resample_matrix(n, max(1, min(n, int(round(m * n / h))))) for m in range(1, h + 1)])
    t.flags.writeable = False
    return t


def contrast_images(batch: np.ndarray, low, high, gamma) -> np.ndarray:
    """Map each image's levels: v -> low + (high - low) * v ** gamma, for images scaled to [0, 1]
    (uint8 images are taken as 0-255); low = 0, high = 1, gamma = 1 leaves it as it is.

    Args:
        batch: (N, H, W) or (N, C, H, W) images.
        low: per-image (N,) or scalar background level; high: the full ink's level; gamma: > 0.

    Returns:
        Batch, same shape and dtype.
    """
    x, squeezed, dtype = _float_work(batch)
    n = x.shape[0]
    scale = 1.0 if np.issubdtype(dtype, np.floating) else float(np.iinfo(dtype).max)
    low, high, gamma = (_per_image(v, n, name).astype(x.dtype)[:, None, None, None]
                        for v, name in ((low, "low"), (high, "high"), (gamma, "gamma")))
    if np.any(gamma <= 0):
        raise ValueError("gamma must be > 0")
    v = np.clip(x / x.dtype.type(scale), 0, 1)
    return _back((low + (high - low) * v ** gamma) * x.dtype.type(scale), squeezed, dtype)


def _chosen(rng: np.random.Generator, n: int, p: float, what: str) -> np.ndarray:
    if not 0 <= p <= 1:
        raise ValueError(f"{what} probability must be in [0, 1], got {p}")
    return rng.random(n) < p


def _on_chosen(batch: np.ndarray, chosen: np.ndarray, change) -> np.ndarray:
    """A copy of ``batch`` with ``change(images, rows)`` applied to the chosen images only (the cost
    follows the fraction chosen): ``rows`` are their indices, for the per-image draws to follow."""
    out = np.array(batch, copy=True)
    rows = np.flatnonzero(chosen)
    if rows.size:
        out[rows] = change(out[rows], rows)
    return out


def random_stroke(batch: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``p`` per image, thicker or thinner strokes: ``stroke_images`` with an
    amount uniform in ``STROKE_RANGE`` (draws: chosen?, amount)."""
    n = np.asarray(batch).shape[0]
    chosen = _chosen(rng, n, p, "stroke")
    amount = rng.uniform(*STROKE_RANGE, size=n)
    return _on_chosen(batch, chosen, lambda x, rows: stroke_images(x, amount[rows]))


def random_blur(batch: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``p`` per image, a Gaussian blur whose sigma along each axis is uniform in
    ``BLUR_RANGE`` (draws: chosen?, sigma_y, sigma_x)."""
    n = np.asarray(batch).shape[0]
    chosen = _chosen(rng, n, p, "blur")
    sy = rng.uniform(*BLUR_RANGE, size=n)
    sx = rng.uniform(*BLUR_RANGE, size=n)
    return _on_chosen(batch, chosen, lambda x, rows: blur_images(x, sy[rows], sx[rows]))


def random_lowres(batch: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``p`` per image, ``lowres_images`` at a side uniform in ``LOWRES_RANGE``
    (clipped to the image's height; draws: chosen?, side)."""
    x = np.asarray(batch)
    n, h = x.shape[0], x.shape[-2]
    chosen = _chosen(rng, n, p, "lowres")
    size = np.minimum(rng.integers(LOWRES_RANGE[0], LOWRES_RANGE[1] + 1, size=n), h)
    return _on_chosen(batch, chosen, lambda x, rows: lowres_images(x, size[rows]))


def random_contrast(batch: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``p`` per image, ``contrast_images`` with a background level uniform in
    ``CONTRAST_LOW``, an ink level uniform between that plus ``CONTRAST_MIN_SPAN`` and 1, and a gamma
    log-uniform in ``GAMMA_RANGE`` (draws: chosen?, low, ink, log gamma)."""
    n = np.asarray(batch).shape[0]
    chosen = _chosen(rng, n, p, "contrast")
    low = rng.uniform(*CONTRAST_LOW, size=n)
    high = low + CONTRAST_MIN_SPAN + rng.random(n) * (1.0 - low - CONTRAST_MIN_SPAN)
    gamma = np.exp(rng.uniform(np.log(GAMMA_RANGE[0]), np.log(GAMMA_RANGE[1]), size=n))
    return _on_chosen(batch, chosen, lambda x, rows: contrast_images(x, low[rows], high[rows], gamma[rows]))


def random_noise(batch: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``p`` per image, additive noise, uniform and independent per pixel, with a
    standard deviation uniform in ``NOISE_SIGMA`` of the full scale ([0, 1] for float images, 0-255
    for uint8), then clipped to that scale. Uniform noise, not Gaussian: six times cheaper to draw,
    for every pixel of every batch (draws: chosen?, sigma, the noise: one float32 per pixel of
    every image, chosen or not)."""
    x, squeezed, dtype = _float_work(batch)
    top = x.dtype.type(1.0 if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max)
    n = x.shape[0]
    chosen = _chosen(rng, n, p, "noise")
    sigma = rng.uniform(*NOISE_SIGMA, size=n)
    u = rng.random(x.shape, dtype=np.float32)
    half_width = (top * np.sqrt(3.0) * sigma).astype(x.dtype)  # uniform on [-a, a] has sd a / sqrt(3)

    def change(xs, rows):
        return np.clip(xs + half_width[rows][:, None, None, None] * (2 * u[rows] - 1), 0, top)

    return _back(_on_chosen(x, chosen, change), squeezed, dtype)


@dataclass(frozen=True)
class Augment:
    """Random rotation (if ``max_degrees`` > 0) and zoom (if ``max_scale`` > 0), with an elastic
    distortion in the same resampling (if ``elastic`` > 0), then random translation (if
    ``max_shift`` > 0), then a random horizontal flip of half the images (if ``hflip``), then
    random erasing of a rectangle in a fraction ``erase`` of the images; then the appearance changes,
    each in its own random fraction of the images: thicker or thinner strokes (``stroke``), blur
    (``blur``), a lower resolution scaled back up (``lowres``), new background and ink levels and gamma
    (``contrast``), pixel noise (``noise``), with the ranges of ``STROKE_RANGE`` ... ``NOISE_SIGMA``.

    Called as ``augment(batch, rng)``; the DataLoader passes its per-epoch generator, so a run is
    reproducible from the loader's seed. The draws come in that order (angles, zooms, shifts,
    flips, erasures, strokes, blurs, resolutions, contrasts, noise), each only when its option is on,
    so turning on a later option leaves the
    earlier draws of a seed as they were (the elastic fields come after the angles and zooms).

    Attributes:
        max_shift: largest integer shift in pixels.
        max_degrees: largest rotation angle in degrees.
        hflip: mirror each image left-right with probability 0.5.
        max_scale: largest relative zoom: factors uniform in [1 - max_scale, 1 + max_scale].
        erase: probability of random erasing (``random_erase``) per image.
        elastic: strength alpha of the elastic distortion (``random_elastic``), 0 for none.
        elastic_sigma: its smoothness sigma in pixels.
        stroke: probability per image of a random stroke-width change (``random_stroke``).
        blur: probability per image of a random Gaussian blur (``random_blur``).
        lowres: probability per image of a random lower resolution (``random_lowres``).
        contrast: probability per image of random background, ink and gamma levels (``random_contrast``).
        noise: probability per image of random pixel noise (``random_noise``).
    """

    max_shift: int = 2
    max_degrees: float = 0.0
    hflip: bool = False
    max_scale: float = 0.0
    erase: float = 0.0
    elastic: float = 0.0
    elastic_sigma: float = 4.0
    stroke: float = 0.0
    blur: float = 0.0
    lowres: float = 0.0
    contrast: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        def bad(setting, problem):
            return SettingError("Augment", setting, problem)

        if int(self.max_shift) < 0:
            raise bad("max_shift", f"must be >= 0, got {self.max_shift}")
        if not self.max_degrees >= 0:
            raise bad("max_degrees", f"must be >= 0, got {self.max_degrees}")
        if not isinstance(self.hflip, (bool, np.bool_)):
            raise TypeError(f"Augment: hflip must be True or False, got {self.hflip!r}")
        if not 0 <= self.max_scale < 1:
            raise bad("max_scale", f"must be in [0, 1), got {self.max_scale}")
        if not 0 <= self.erase <= 1:
            raise bad("erase", f"must be a probability in [0, 1], got {self.erase}")
        if not self.elastic >= 0:
            raise bad("elastic", f"must be >= 0, got {self.elastic}")
        if not self.elastic_sigma > 0:
            raise bad("elastic_sigma", f"must be > 0, got {self.elastic_sigma}")
        for name in APPEARANCE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise bad(name, f"must be a probability in [0, 1], got {value!r}")

    @property
    def active(self) -> bool:
        """Whether any option is on (an Augment with none leaves every image as it is)."""
        return bool(self.max_shift or self.max_degrees or self.hflip or self.max_scale or self.erase or self.elastic
                    or self.appearance)

    @property
    def appearance(self) -> bool:
        """Whether any appearance change (stroke, blur, lowres, contrast, noise) is on."""
        return any(getattr(self, name) for name in APPEARANCE)

    @classmethod
    def from_config(cls, cfg: dict) -> Augment | None:
        """The augmentation a run's config records ("augment", "rotate", "hflip", "scale", "erase",
        "elastic", "elastic_sigma"; missing keys count as off), or None if it records none."""
        opts = {"max_shift": int(cfg.get("augment") or 0), "max_degrees": float(cfg.get("rotate") or 0.0),
                "hflip": bool(cfg.get("hflip", False)), "max_scale": float(cfg.get("scale") or 0.0),
                "erase": float(cfg.get("erase") or 0.0), "elastic": float(cfg.get("elastic") or 0.0)}
        if not any(opts.values()):
            return None
        if cfg.get("elastic_sigma"):
            opts["elastic_sigma"] = float(cfg["elastic_sigma"])
        return cls(**opts)

    def describe(self) -> str:
        """The options that are on, in words, e.g. "shift <= 2 px, rotate <= 10 deg"."""
        parts = [f"shift <= {self.max_shift} px" if self.max_shift else "",
                 f"rotate <= {self.max_degrees:g} deg" if self.max_degrees else "",
                 f"zoom +-{self.max_scale:g}" if self.max_scale else "",
                 f"elastic alpha {self.elastic:g} sigma {self.elastic_sigma:g}" if self.elastic else "",
                 "mirror half" if self.hflip else "",
                 f"erase p={self.erase:g}" if self.erase else "",
                 *(f"{name} p={getattr(self, name):g}" for name in APPEARANCE if getattr(self, name))]
        return ", ".join(p for p in parts if p) or "none"

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Augment a batch.

        Args:
            batch: (N, H, W) or (N, C, H, W) images.
            rng: generator to draw from; a fresh unseeded one if None (not reproducible).

        Returns:
            Augmented batch, same shape and dtype.
        """
        if rng is None:
            rng = np.random.default_rng()
        if self.elastic > 0:
            batch = random_elastic(batch, self.elastic, self.elastic_sigma, rng, self.max_degrees, self.max_scale)
        elif self.max_degrees > 0 or self.max_scale > 0:
            batch = random_affine(batch, self.max_degrees, self.max_scale, rng)
        if self.max_shift > 0:
            batch = random_translate(batch, self.max_shift, rng)
        if self.hflip:
            batch = random_hflip(batch, rng)
        if self.erase > 0:
            batch = random_erase(batch, rng, p=self.erase)
        for name, change in zip(APPEARANCE, (random_stroke, random_blur, random_lowres, random_contrast, random_noise)):
            if getattr(self, name) > 0:
                batch = change(batch, getattr(self, name), rng)
        return batch
