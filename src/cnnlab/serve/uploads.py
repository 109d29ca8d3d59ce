"""A picture sent to the demo, checked before it is decoded: size in bytes, format, pixel count.

An upload is read from memory and never written anywhere: no file name the client chose, no
temporary file. Every way it can be wrong is a :class:`PictureError` with an HTTP status and one
sentence a person can act on, which the page shows.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from ..data import open_image

__all__ = ["FORMATS", "MAX_BYTES", "MAX_PIXELS", "WORK_SIDE", "PictureError", "check_size", "read_picture"]

MAX_BYTES = 10 * 2**20  # a phone photo as JPEG is 2-6 MB
MAX_PIXELS = 40_000_000  # a 12 MP phone photo with room to spare; 40 MP decoded as RGB is 120 MB
WORK_SIDE = 1024  # longer pictures are shrunk to this side before conversion (it ends at 20x20 anyway)
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class PictureError(ValueError):
    """A picture the demo cannot use; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def check_size(n_bytes: int, max_bytes: int = MAX_BYTES) -> None:
    """Raise PictureError (413) if an upload of ``n_bytes`` is over ``max_bytes``."""
    if n_bytes > max_bytes:
        raise PictureError(f"the file is too big: {_megabytes(n_bytes)} or more; the limit is "
                           f"{_megabytes(max_bytes)}", 413)


def read_picture(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                 work_side: int = WORK_SIDE) -> tuple[Image.Image, list[str]]:
    """Decode an uploaded picture from memory, after checking what it claims to be.

    Order of checks: the byte count; the format, from the file's own header (never its name or
    content type), one of ``FORMATS``; the pixel count in the header, before any pixel is decoded;
    then the decode itself (a truncated or corrupt file fails here). EXIF orientation is applied
    (phone photos), and a picture longer than ``work_side`` is shrunk to it (JPEGs already while
    decoding), since the conversion ends at 20x20 pixels anyway.

    Args:
        data: the file's bytes.
        max_bytes: the largest accepted file.
        max_pixels: the largest accepted width x height.
        work_side: the longest side kept for conversion.

    Returns:
        (a decoded PIL image, notes: what was done to it, e.g. "shrunk from 4032x3024 to 1024x768").

    Raises:
        PictureError: 400 empty or damaged, 413 too many bytes or pixels, 415 not a picture format.
    """
    if not data:
        raise PictureError("the file is empty: choose a picture (PNG, JPEG, WebP, GIF or BMP)", 400)
    check_size(len(data), max_bytes)
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise PictureError(f"the picture has far too many pixels ({exc})", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise PictureError("this is not a picture cnnlab can read: send a PNG, JPEG, WebP, GIF or BMP file",
                           415) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise PictureError(f"the picture is {w}x{h} pixels: nothing to see", 400)
    if w * h > max_pixels:
        raise PictureError(f"the picture is too large: {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is "
                           f"{max_pixels / 1e6:.0f} megapixels", 413)
    notes = []
    try:
        if img.format == "JPEG" and max(w, h) > work_side:
            img.draft(img.mode, (work_side, work_side))  # decode at 1/2, 1/4 or 1/8 scale: less memory
        img.load()
        img = open_image(img)  # EXIF orientation
        if max(img.size) > work_side:
            img.thumbnail((work_side, work_side), Image.Resampling.BILINEAR)
        if max(w, h) > work_side:
            notes.append(f"shrunk from {w}x{h} to {img.size[0]}x{img.size[1]} pixels")
    except PictureError:
        raise
    except Exception as exc:  # a damaged file can make a decoder raise almost anything
        raise PictureError(f"the picture file is damaged or cut short and cannot be decoded ({type(exc).__name__})",
                           400) from None
    return img, notes
