"""Turn a user's own digit picture (photo, scan or drawing of any size) into an MNIST-like image
(and a picture of clothing into a Fashion-MNIST-like one, :func:`to_fashion_form`).

MNIST digits are white on black, size-normalised so the longest side of the ink's bounding box
is 20 px (aspect ratio kept, antialiased), and placed in a 28x28 field with their centre of mass
at the centre (pixel index 14, 14). :func:`to_mnist_form` reproduces that procedure.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from skimage.filters import threshold_otsu

from .errors import DataError
from .limits import max_image_pixels, open_regular_file

__all__ = ["MNIST_BOX", "MNIST_SIZE", "Conversion", "FirstFrameWarning", "NoDigitError", "convert_digit",
           "load_image_batch", "form_for", "open_image", "shape_doubt", "to_8bit", "to_fashion_form", "to_mnist_form"]


class FirstFrameWarning(UserWarning):
    """An animated or multi-page picture (GIF, APNG, TIFF) was read: only its first frame is used.

    ``cnnlab predict`` prints it as a note; from Python, catch it with ``warnings.catch_warnings``.
    """

class NoDigitError(DataError):
    """:func:`convert_digit` found no digit; ``partial`` holds the steps it made before it gave up
    (a dict of "gray", "background", "flat", "polarity", as far as it got), for
    ``cnnlab show convert`` to draw why."""

    def __init__(self, message: str, partial: dict) -> None:
        super().__init__(message)
        self.partial = partial


MNIST_SIZE = 28  # side of the output field
MNIST_BOX = 20  # longest side of the digit's bounding box inside it
_CENTRE = 14.0  # MNIST's mean centre of mass in pixel-index coordinates (measured: 14.00, 14.01)


def open_image(source: str | os.PathLike | Image.Image, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image, with EXIF orientation applied (phone photos).

    The file must be a regular file (a named pipe or a device is refused at once), and its size is
    read from its header and checked against ``max_pixels`` before anything is decoded. Of an
    animated or multi-page picture the first frame is used, with a :class:`FirstFrameWarning`.

    Args:
        source: a path, an open binary file, or an already opened PIL image (returned after
            orientation fix-up).
        max_pixels: the most pixels (width x height) a picture may have; default
            ``limits.max_image_pixels()`` (50 million, or ``$CNNLAB_MAX_IMAGE_PIXELS``).

    Returns:
        A loaded PIL image.

    Raises:
        DataError: the file is missing, not a regular file, unreadable, not an image Pillow
            understands, or larger than ``max_pixels``.
    """
    if isinstance(source, Image.Image):
        img = source
        _check_pixels(img, source, max_pixels)
    else:
        # a path must name a regular file; an open binary file (io.BytesIO, ...) is read as it is
        is_path = isinstance(source, (str, os.PathLike))
        with open_regular_file(source, "images") if is_path else contextlib.nullcontext(source) as f:
            try:
                with warnings.catch_warnings():
                    # cnnlab's own limit (below) replaces Pillow's warning; its error still stands
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    opened = Image.open(f)  # reads the header only
                with opened:
                    _check_pixels(opened, source, max_pixels)
                    if getattr(opened, "is_animated", False) or getattr(opened, "n_frames", 1) > 1:
                        warnings.warn(f"{source}: has {opened.n_frames} frames; the first is used", FirstFrameWarning,
                                      stacklevel=2)
                    opened.load()  # decode now, inside the try, so truncated files fail here
                    img = opened.copy()
            except DataError:
                raise
            except Image.DecompressionBombError as exc:
                raise DataError(f"{source}: too many pixels for Pillow to open ({exc}); cnnlab reads at most "
                                f"{max_image_pixels(max_pixels) / 1e6:g} megapixels per picture") from None
            except (OSError, UnidentifiedImageError, ValueError, EOFError, SyntaxError) as exc:
                raise DataError(f"{source}: cannot read as an image ({exc})") from exc
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF data should not make a readable image unusable
        return img


def _check_pixels(img: Image.Image, source, max_pixels: int | None) -> None:
    limit = max_image_pixels(max_pixels)
    width, height = img.size
    if width * height > limit:
        raise DataError(f"{_name(source)}: {width} x {height} pixels ({width * height / 1e6:.1f} megapixels) is over "
                        f"cnnlab's limit of {limit / 1e6:g} megapixels per picture; shrink it, or raise the limit "
                        "with CNNLAB_MAX_IMAGE_PIXELS (or max_pixels=)")
    if width * height == 0:
        raise DataError(f"{_name(source)}: the picture is empty ({width} x {height} pixels)")


def _deep_gray(img: Image.Image, name: str) -> np.ndarray | None:
    """A picture deeper than 8 bits per pixel as gray floats in [0, 255]; None for other modes.

    Scaled by its depth, not clipped: 16-bit ('I;16', and 'I' holding 0..65535, as Pillow opens
    16-bit PNG and TIFF) divided by 257; floats ('F') in 0..1 or 0..255 taken as such. Values
    beyond those depths (negative, or over 65535 or 255) are scaled by their range, min to max.
    """
    if not (img.mode == "I" or img.mode == "F" or img.mode.startswith("I;16")):
        return None
    a = np.asarray(img, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{name}: the picture has pixels that are not numbers (NaN or infinity)")
    lo, hi = float(a.min()), float(a.max())
    if img.mode == "F" and lo >= 0 and hi <= 1:
        return a * 255.0
    if img.mode == "F" and lo >= 0 and hi <= 255:
        return a
    if img.mode != "F" and lo >= 0 and hi <= 65535:
        return a / 257.0  # 65535 -> 255
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)


def to_8bit(img: Image.Image, name: str | None = None) -> Image.Image:
    """``img`` itself if it has 8 bits per channel, else an 8-bit grayscale ('L') picture scaled
    by its depth, not clipped (a 16-bit scan's paper at 60000 stays light: 233, not 255 with the
    ink clipped to 255 too). Pillow's own ``convert("L")`` clips 16-bit values."""
    a = _deep_gray(img, name or _name(img))
    if a is None:
        return img
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _to_gray(img: Image.Image, name: str) -> np.ndarray:
    """Grayscale float array in [0, 255]; transparent areas become background; deeper than 8 bits
    scaled by depth (``_deep_gray``)."""
    deep = _deep_gray(img, name)
    if deep is not None:
        return deep
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0  # (H, W, 4)
        alpha = rgba[..., 3]
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as PIL's "L"
        if alpha.min() < 1.0:
            # Drawings exported from canvases are often strokes on a transparent background, whose
            # hidden colour is arbitrary. Composite onto a background contrasting with the strokes.
            stroke = float((gray * alpha).sum() / max(alpha.sum(), 1e-12))
            background = 1.0 if stroke < 0.5 else 0.0
            gray = gray * alpha + background * (1.0 - alpha)
        return gray * 255.0
    try:
        return np.asarray(img.convert("L"), dtype=np.float64)
    except ValueError as exc:  # a mode Pillow cannot turn into gray
        raise DataError(f"{name}: cannot make a gray picture of mode {img.mode} ({exc})") from None


def _border(a: np.ndarray) -> np.ndarray:
    """Pixels of a frame a few percent wide around the image (where the background is)."""
    h, w = a.shape
    t = max(1, min(h, w) // 20)
    return np.concatenate([a[:t].ravel(), a[-t:].ravel(), a[:, :t].ravel(), a[:, -t:].ravel()])


def _ink_map(a: np.ndarray, name: str, what: str = "digit") -> np.ndarray:
    """Gray image -> ink intensity in [0, 1], white ink on black, background exactly 0."""
    border = _border(a)
    bg = float(np.median(border))
    # The background fills most of the frame and most of the picture; if it is lighter than the
    # picture on average, the ink is dark (pen on paper) and must be inverted to MNIST's polarity.
    if bg > float(a.mean()):
        a = 255.0 - a
        border = 255.0 - border
        bg = 255.0 - bg
    # Contrast normalisation without a fixed threshold: the floor is the background level plus its
    # own noise (robust spread of the border), the ceiling the brightest ink.
    noise = 1.4826 * float(np.median(np.abs(border - bg)))  # MAD -> standard deviation
    peak = float(a.max())
    floor = bg + 4.0 * noise
    if peak - floor <= 1e-6 * 255.0 or peak - bg < 0.05 * 255.0:
        raise DataError(f"{name}: no {what} found (the image has no contrast against its background)")
    return np.clip((a - floor) / (peak - floor), 0.0, 1.0)


# Fraction of the ink mass that may lie outside the bounding box on each side: isolated specks of
# photo noise far from the digit then do not inflate the box (and shrink the digit).
_SPECK_MASS = 0.002


def _mass_span(profile: np.ndarray) -> tuple[int, int]:
    """First and last index of a row/column ink profile, ignoring the outer _SPECK_MASS on each side."""
    cum = np.cumsum(profile)
    total = cum[-1]
    first = int(np.searchsorted(cum, _SPECK_MASS * total, side="right"))
    last = int(np.searchsorted(cum, (1.0 - _SPECK_MASS) * total, side="left"))
    return first, max(first, min(last, profile.shape[0] - 1))


def _place(com: float, length: int) -> int:
    """Integer offset of a patch along one axis putting its centre of mass ``com`` nearest _CENTRE.

    A symmetric glyph has its centre of mass half-way between two pixels (e.g. 9.5 in a 20-px
    patch), so two offsets are equally good; near such a tie take the one that also centres the
    patch in the field (MNIST itself has both, about equally often). The patch is kept inside the
    28-px field so no ink is cut off.
    """
    target = _CENTRE - com
    lo, hi = int(np.floor(target)), int(np.floor(target)) + 1
    frac = target - lo
    if abs(frac - 0.5) < 0.1:
        field_mid = (MNIST_SIZE - length) / 2.0
        offset = lo if abs(lo - field_mid) <= abs(hi - field_mid) else hi
    else:
        offset = lo if frac < 0.5 else hi
    return int(np.clip(offset, 0, MNIST_SIZE - length))


def _name(source) -> str:
    """How error messages name a picture: its path, or a PIL image's file name."""
    if isinstance(source, Image.Image):
        return getattr(source, "filename", None) or "<PIL image>"
    return str(source)


def _as_uint8(a: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 pixels 0-255 (rounded to nearest)."""
    return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _crop_and_scale(ink: np.ndarray, box: int, bounds: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop an ink map to the ink's bounding box (``bounds``: top, bottom, left, right; default:
    the ink's mass span) and scale its longest side to ``box`` pixels, keeping the aspect ratio;
    values in [0, 1]."""
    if bounds is None:
        top, bottom = _mass_span(ink.sum(axis=1))
        left, right = _mass_span(ink.sum(axis=0))
    else:
        top, bottom, left, right = bounds
    crop = ink[top : bottom + 1, left : right + 1]  # (h, w) bounding box of the ink
    h, w = crop.shape
    scale = box / max(h, w)
    new_h = max(1, round(h * scale))
    new_w = max(1, round(w * scale))
    # Pillow's bilinear resize widens its kernel when shrinking, i.e. it antialiases.
    small = Image.fromarray(crop.astype(np.float32))  # float32 -> mode "F"
    small = small.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(small, dtype=np.float64), 0.0, 1.0)


def _centre(small: np.ndarray) -> np.ndarray:
    """A scaled digit (values 0..1) pasted into 28x28 with its centre of mass at (14, 14), kept
    inside the field so no ink is lost; uint8."""
    new_h, new_w = small.shape
    mass = max(float(small.sum()), 1e-12)
    cy = float((small.sum(axis=1) * np.arange(new_h)).sum() / mass)
    cx = float((small.sum(axis=0) * np.arange(new_w)).sum() / mass)
    top = _place(cy, new_h)
    left = _place(cx, new_w)
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float64)
    out[top : top + new_h, left : left + new_w] = small
    return _as_uint8(out)


# ------------------------------------------------------------------------------ digits under real light
# Pictures larger than this (longest side, pixels) are worked on shrunk to it: the digit ends up 20 px
# tall, so more resolution only costs time (a 12-megapixel photo would take seconds per filter).
WORK_SIDE = 512
# The ink's contrast against its local background, as a fraction of the way from the paper to black
# (or from a dark background to white), below which a picture holds no digit.
MIN_CONTRAST = 0.06


@dataclass(frozen=True)
class Conversion:
    """Every step of :func:`convert_digit`, for ``cnnlab show convert`` and the live demo.

    All maps have the working picture's shape (the input, shrunk to at most ``WORK_SIDE`` pixels
    on its longest side).

    Attributes:
        gray: the picture in gray, floats 0..255.
        background: the estimated page (illumination times paper) under the ink, 0..255.
        flat: the ink's contrast once the illumination is divided out, 0 (page) .. 1 (black ink on
            white paper, or white ink on black).
        polarity: "dark ink on light" or "light ink on dark".
        threshold: the ink threshold on ``flat`` (Otsu's, kept above the page's noise).
        mask: the pixels taken as ink (specks dropped).
        ink: the ink's intensity, 0..1, light on black as MNIST's.
        stroke: the estimated stroke width in working pixels.
        box: (top, bottom, left, right) of the ink in working pixels.
        scaled: the ink cropped to its box, longest side 20 px, 0..1.
        form: the result, (28, 28) uint8, white digit on black, centre of mass at (14, 14).
    """

    gray: np.ndarray
    background: np.ndarray
    flat: np.ndarray
    polarity: str
    threshold: float
    mask: np.ndarray
    ink: np.ndarray
    stroke: float
    box: tuple[int, int, int, int]
    scaled: np.ndarray
    form: np.ndarray

    @property
    def steps(self) -> list[tuple[str, np.ndarray]]:
        """(caption, uint8 picture) for each step, as ``to_mnist_form(steps=)`` gives them."""
        top, bottom, left, right = self.box
        return [("grayscale", _as_uint8(self.gray / 255.0)),
                ("illumination (page) estimate", _as_uint8(self.background / 255.0)),
                (f"flattened: {self.polarity}", _as_uint8(self.flat / max(float(self.flat.max()), 1e-12))),
                (f"ink: contrast >= {self.threshold:.2f}", _as_uint8(self.mask.astype(np.float64))),
                (f"cropped to the ink, longest side {MNIST_BOX} px", _as_uint8(self.scaled)),
                (f"{MNIST_SIZE}x{MNIST_SIZE}, centred by its centre of mass", self.form)]


def _working_gray(source) -> np.ndarray:
    gray = _to_gray(open_image(source), _name(source))
    h, w = gray.shape
    if max(h, w) > WORK_SIDE:  # shrink, antialiased: box averaging keeps thin strokes' contrast as mass
        scale = WORK_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX),
                          dtype=np.float64)
    return gray


def _polarity(gray: np.ndarray) -> tuple[bool, float]:
    """(dark ink?, the noise of the page) from how the picture departs from a median of its
    neighbourhood: ink is a minority in every window a third of the picture wide, so the median is
    the page there, lit as it is lit; the ink's departures are large and of one sign. A polarity
    rule that neither a vignette, a shadow, dark edges nor ink touching the border can fool, as
    the old comparison of the border with the mean was."""
    h, w = gray.shape
    small = gray
    if max(h, w) > 48:  # the median at 48 px, box-averaged (a thin stroke keeps its mass): the page varies slowly
        scale = 48 / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX),
                           dtype=np.float64)
    win = max(3, min(small.shape) // 3) | 1
    page = ndimage.median_filter(small, size=win, mode="reflect")
    dev = (small - page).ravel()
    noise = 1.4826 * float(np.median(np.abs(dev - np.median(dev)))) + 1e-6
    cut = 3.0 * noise
    dark = float(np.maximum(-dev - cut, 0.0).sum())
    light = float(np.maximum(dev - cut, 0.0).sum())
    return dark >= light, noise


def _stroke_width(mask: np.ndarray) -> float:
    """A stroke's width: twice the distance from its edge to its middle, robustly over the ink."""
    if not mask.any():
        return 1.0
    depth = ndimage.distance_transform_edt(mask)
    return float(2.0 * np.percentile(depth[mask], 90))


def _flatten(gray: np.ndarray, dark: bool, size: int, blur: float) -> tuple[np.ndarray, np.ndarray]:
    """(page estimate, flattened contrast). The page is the picture with every ink stroke closed
    over: a grey closing (dark ink) or opening (light ink) with a square wider than the strokes,
    so it follows vignettes, gradients and the sharp edge of a shadow (no smoothing after it,
    which would blur that edge into a line of false ink).
    The contrast is the ink's distance from the page as a fraction of the way to black (dark ink)
    or of the way to the brightest ink nearby (light ink): a ratio, so a dimly lit corner's ink counts as much as a bright one's.
    Both are taken on the picture smoothed by ``blur`` (a fraction of a stroke): dividing by a dim
    page multiplies its noise too."""
    smooth = ndimage.gaussian_filter(gray, blur, mode="nearest")
    # Padded first by the edge's values: a closing's two passes padded each on its own would lift
    # the page along an edge that darkens outwards (a vignette), as if ink were there.
    padded = np.pad(smooth, size, mode="edge")
    close = ndimage.grey_closing if dark else ndimage.grey_opening
    page = close(padded, size=(size, size))[size:-size, size:-size]
    if dark:
        flat = (page - smooth) / np.maximum(page, 1.0)
    else:  # the way from the page to the brightest ink nearby (at least a quarter of the way to white)
        near = ndimage.grey_dilation(padded, size=(size, size))[size:-size, size:-size]
        flat = (smooth - page) / np.maximum(near - page, np.maximum(0.25 * (255.0 - page), 1.0))
    return page, np.clip(flat, 0.0, 1.0)


def convert_digit(source: str | os.PathLike | Image.Image) -> Conversion:
    """Convert a digit picture (a photo under uneven light, a scan, a drawing) into MNIST's form,
    keeping every step.

    Steps: gray; the polarity (dark ink on light paper or light on dark) from the sign of the
    picture's large departures from its local median; the page's illumination estimated at a
    scale larger than the strokes (grey closing or opening) and divided out; the ink threshold
    chosen on the flattened picture (Otsu's, kept above the page's noise; too little contrast is
    no digit); specks dropped; then MNIST's own steps: cropped to the ink, the longest side scaled
    to 20 px keeping the aspect ratio (antialiased), placed in 28x28 with its centre of mass at
    (14, 14).

    Args:
        source: image file path, open binary file, or PIL image.

    Returns:
        A :class:`Conversion`; its ``form`` is the (28, 28) uint8 result.

    Raises:
        DataError: unreadable / non-image file, or a picture with no visible digit.
    """
    name = _name(source)
    gray = _working_gray(source)
    dark, noise = _polarity(gray)
    # A first look at the ink, with a stroke-sized guess, gives the stroke width; then the page
    # is estimated again with a square three strokes wide (junctions of strokes are wider than one).
    size = max(5, min(gray.shape) // 2) | 1  # wide: a thick marker or a smudge is not hollowed out
    page, flat = _flatten(gray, dark, size, 1.0)
    first = flat > max(_otsu(flat), 0.5 * float(flat.max()))
    stroke = _stroke_width(first)
    size = int(min(max(5, 3 * stroke + 3), max(5, min(gray.shape)))) | 1
    page, flat = _flatten(gray, dark, size, max(1.0, stroke / 6))
    # the page's own noise on the flattened scale (median absolute deviation; most pixels are page)
    seen = ndimage.gaussian_filter(flat, 1.0)
    base = float(np.median(seen))
    spread = 1.4826 * float(np.median(np.abs(seen - base))) + 1e-4
    peak = float(seen.max())
    partial = {"gray": gray, "background": page, "flat": flat,
               "polarity": "dark ink on light" if dark else "light ink on dark"}
    if peak < MIN_CONTRAST or peak - base < 8.0 * spread:
        raise NoDigitError(f"{name}: no digit found (the image has no contrast against its background: the ink "
                           f"stands at most {100 * peak:.0f}% out of the page)", partial)
    threshold = max(_otsu(flat), base + 4.0 * spread, 0.35 * peak)
    mask = _drop_specks(flat > threshold, flat, stroke)
    if not mask.any():
        raise NoDigitError(f"{name}: no digit found (no ink stands out of the page)", partial)
    # intensity: the ink's core saturates (as MNIST's strokes reach 255), its edges stay antialiased
    core = float(np.percentile(flat[mask], 75))
    low = 0.5 * threshold
    ink = np.clip((flat - low) / max(core - low, 1e-6), 0.0, 1.0)
    near = ndimage.maximum_filter(mask, size=2 * max(1, round(stroke / 2)) + 1)
    ink = np.where(near, ink, 0.0)
    top, bottom = _mass_span(ink.sum(axis=1))
    left, right = _mass_span(ink.sum(axis=0))
    scaled = _crop_and_scale(ink, MNIST_BOX, (top, bottom, left, right))
    scaled /= max(scaled.max(), 1e-12)
    form = _centre(scaled)
    return Conversion(gray, page, flat, "dark ink on light" if dark else "light ink on dark", threshold, mask, ink,
                      stroke, (top, bottom, left, right), scaled, form)


def _otsu(values: np.ndarray) -> float:
    if float(values.max()) <= float(values.min()):
        return float(values.max())
    return float(threshold_otsu(values, nbins=256))


def _drop_specks(mask: np.ndarray, flat: np.ndarray, stroke: float) -> np.ndarray:
    """The ink without specks and shadow corners: connected parts holding less than 5% of the
    largest part's ink (dust, paper grain, a JPEG block's edge, a noisy corner), and parts that
    lie along the picture's edge for more than two stroke widths while holding less than half
    the largest part's ink (a shadow's or a dark table's corner cut off by the frame; a digit's
    stroke leaving the picture crosses the edge in about one stroke width)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    index = np.arange(1, n + 1)
    mass = ndimage.sum_labels(flat, labels, index=index)
    edge = np.zeros_like(mask)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    along = ndimage.sum_labels(edge, labels, index=index)
    keep = (mass >= 0.05 * mass.max()) & ~((along > 2.0 * stroke) & (mass < 0.5 * mass.max()))
    return np.isin(labels, index[keep])


def shape_doubt(form: np.ndarray) -> str | None:
    """Why a 28x28 MNIST-form picture does not look like a digit, or None. Measured on MNIST's
    60,000 training digits (ink: pixels over 127): none is more than 2.5 times wider than tall
    (the widest 0.1% are 1.8), and 0.05% are solid (ink filling 70% of a box at least half as
    wide as tall); a "1" is solid but narrow.

    Returns:
        "wider than any digit: a line or a dash?", "a solid blob: a smudge?", "almost no ink",
        or None.
    """
    ink = np.asarray(form) > 127
    if ink.sum() < 10:
        return "almost no ink"
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if w > 2.5 * h:
        return "wider than any digit: a line or a dash?"
    if w >= 0.5 * h and ink.sum() >= 0.7 * h * w:
        return "a solid blob: a smudge?"
    return None


def to_mnist_form(source: str | os.PathLike | Image.Image, steps: list | None = None) -> np.ndarray:
    """Convert a digit picture of any size into a 28x28 MNIST-style image (:func:`convert_digit`,
    which keeps every step, tells how).

    Args:
        source: image file path or a PIL image.
        steps: a list to which the pictures made on the way are appended, each as (caption,
            uint8 array): ``Conversion.steps`` (the last, the result, is what is returned); None
            to keep nothing.

    Returns:
        (28, 28) uint8 array, digit white (255) on black (0).

    Raises:
        DataError: unreadable / non-image file, or a picture with no visible digit.
    """
    conversion = convert_digit(source)
    if steps is not None:
        steps += conversion.steps
    return conversion.form


def to_fashion_form(source: str | os.PathLike | Image.Image, steps: list | None = None) -> np.ndarray:
    """Convert a picture of one piece of clothing (a product photo on a plain background) into a
    28x28 Fashion-MNIST-style image.

    Fashion-MNIST was made differently from MNIST (its README: trim the edges close to the
    background colour, resize the longest edge to 28, centre on the canvas, negate): so here the
    object, not a digit's ink, fills the field. Steps: grayscale; light background inverted (the
    object light on black); contrast stretched as for digits; cropped to the object; longest
    side scaled to 28 px keeping the aspect ratio (antialiased); centred in 28x28 by its box.

    Args:
        source: image file path or a PIL image.
        steps: a list to which the pictures made on the way are appended, as for to_mnist_form.

    Returns:
        (28, 28) uint8 array, the object light on black (0).

    Raises:
        DataError: unreadable / non-image file, or a picture with no visible object.
    """
    gray = _to_gray(open_image(source), _name(source))  # (H, W) in [0, 255]
    ink = _ink_map(gray, _name(source), "object")  # (H, W) in [0, 1]
    small = _crop_and_scale(ink, MNIST_SIZE)  # (new_h, new_w)
    new_h, new_w = small.shape
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float64)
    top, left = (MNIST_SIZE - new_h) // 2, (MNIST_SIZE - new_w) // 2
    out[top : top + new_h, left : left + new_w] = small
    result = _as_uint8(out)
    if steps is not None:
        steps += [("grayscale", _as_uint8(gray / 255.0)),
                  ("object: light on black, contrast stretched", _as_uint8(ink)),
                  (f"cropped to the object, longest side {MNIST_SIZE} px", _as_uint8(small)),
                  (f"{MNIST_SIZE}x{MNIST_SIZE}, centred by its box", result)]
    return result


def form_for(dataset: str):
    """(converter, its name) for a run's data set: to_fashion_form for fashion-mnist; else
    to_mnist_form (MNIST, and folders, whose images training converts to MNIST's form too)."""
    if dataset == "fashion-mnist":
        return to_fashion_form, "Fashion-MNIST form"
    return to_mnist_form, "MNIST form"


def load_image_batch(paths: Iterable[str | os.PathLike | Image.Image]) -> np.ndarray:
    """Convert several digit pictures with :func:`to_mnist_form`.

    Args:
        paths: image paths (or PIL images).

    Returns:
        (N, 28, 28) uint8 array, in the order given.

    Raises:
        DataError: for the first file that cannot be read or holds no digit.
    """
    forms = [to_mnist_form(p) for p in paths]
    if not forms:
        return np.zeros((0, MNIST_SIZE, MNIST_SIZE), dtype=np.uint8)
    return np.stack(forms)
