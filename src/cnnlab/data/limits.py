"""cnnlab's own limits on what it reads, and the check that a path is a regular file.

Limits (docs/limits.md), each with an environment variable and a keyword argument to raise it:

* ``MAX_IMAGE_PIXELS`` (50 million, a 50-megapixel photo): pixels per picture, checked from the
  image's header before it is decoded. ``CNNLAB_MAX_IMAGE_PIXELS`` or ``max_pixels=``.
* ``MAX_DATA_BYTES`` (1 GiB): the unpacked size of one IDX data file, as its header declares it,
  checked before the payload is read or decompressed; also the size of a weights file.
  ``CNNLAB_MAX_DATA_BYTES`` or ``max_bytes=``.

Files are read only when they are regular files: a named pipe, a device or a directory given as an
image, data or run file is refused at once (reading a pipe would wait for a writer forever).
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from .errors import DataError

__all__ = ["MAX_DATA_BYTES", "MAX_IMAGE_PIXELS", "check_regular_file", "max_data_bytes", "max_image_pixels",
           "open_regular_file"]

MAX_IMAGE_PIXELS = 50_000_000
MAX_DATA_BYTES = 1 << 30


def _limit(override, variable: str, default: int) -> int:
    """``override`` if given, else the environment variable ``variable`` if set, else ``default``."""
    if override is not None:
        value, where = override, "the limit"
    else:
        text = os.environ.get(variable, "").strip()
        if not text:
            return default
        value, where = text.replace("_", ""), variable
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{where} must be a positive whole number, got {value!r}")
    return number


def max_image_pixels(override: int | None = None) -> int:
    """The most pixels (width x height) a picture may have: ``override``, else
    ``$CNNLAB_MAX_IMAGE_PIXELS``, else ``MAX_IMAGE_PIXELS``."""
    return _limit(override, "CNNLAB_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)


def max_data_bytes(override: int | None = None) -> int:
    """The most bytes one data file may unpack to: ``override``, else ``$CNNLAB_MAX_DATA_BYTES``,
    else ``MAX_DATA_BYTES``."""
    return _limit(override, "CNNLAB_MAX_DATA_BYTES", MAX_DATA_BYTES)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse(path, mode: int, what: str) -> DataError:
    return DataError(f"{path}: is {_kind(mode)}, not a regular file; cnnlab reads {what} only from regular files")


def check_regular_file(path: str | os.PathLike, what: str = "files") -> int:
    """Raise DataError unless ``path`` is (or links to) an existing regular file.

    Args:
        path: the file.
        what: what it is, for the message ("images", "weights", ...).

    Returns:
        Its size in bytes.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (cannot read it)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode, what)
    return st.st_size


def open_regular_file(path: str | os.PathLike, what: str = "files") -> BinaryIO:
    """Open ``path`` for reading in binary mode, refusing anything but a regular file.

    The file is opened without blocking and checked on the open descriptor, so a named pipe is
    refused at once (a plain open would wait for a writer) and nothing can be swapped in between
    the check and the read.

    Raises:
        DataError: missing, unreadable, or not a regular file; the message names the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (cannot read it)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a regular file; cnnlab reads {what} only from regular "
                        "files") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, mode, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
