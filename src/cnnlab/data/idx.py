"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST, raw or gzip-compressed.

IDX layout (all integers big-endian):

    bytes 0-1   zero
    byte  2     element type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension as uint32
    payload     prod(dims) elements in C order
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["IDX_DTYPES", "decompress_if_gzip", "parse_idx", "read_idx", "read_file_bytes", "write_idx"]

# Type code -> big-endian dtype as stored in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(np.dtype(dt).kind, np.dtype(dt).itemsize): code for code, dt in IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"
# More dimensions than this is never a real IDX file; a larger byte 3 means the header is garbage.
_MAX_DIMS = 4


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole file, turning OS errors into DataError.

    Args:
        path: file to read.

    Returns:
        The file's bytes, unmodified.
    """
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def decompress_if_gzip(data: bytes, name: str | os.PathLike) -> bytes:
    """Gunzip ``data`` if it starts with the gzip magic bytes 1f 8b, else return it unchanged.

    Args:
        data: raw file content.
        name: file name used in error messages.

    Returns:
        The decompressed (or original) bytes.

    Raises:
        DataError: the gzip stream is corrupt or truncated.
    """
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    # BadGzipFile is an OSError; a truncated stream raises EOFError; bad deflate data raises zlib.error.
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip stream ({exc})") from exc


def parse_idx(data: bytes, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes into an array.

    Args:
        data: the complete, already decompressed IDX content.
        name: file name used in error messages.

    Returns:
        A writable array of shape ``dims`` in native byte order (uint8 for MNIST).

    Raises:
        DataError: bad magic, unsupported type code, implausible dimension count, or a payload
            whose size differs from prod(dims) * itemsize (truncated file or trailing bytes).
    """
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file: expected at least a 4-byte header, got {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad IDX magic: expected first two bytes 00 00, got {data[:2].hex(' ')}")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{name}: unsupported IDX type code: expected one of {known}, got 0x{code:02X}")
    if not 1 <= ndim <= _MAX_DIMS:
        raise DataError(f"{name}: bad IDX dimension count: expected 1..{_MAX_DIMS}, got {ndim}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{name}: truncated IDX header: expected {header_len} bytes for {ndim} dims, got {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    # Python ints: no overflow even for absurd dims in a corrupt header.
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        what = "truncated payload" if got < expected else "trailing bytes after payload"
        raise DataError(
            f"{name}: {what}: dims {tuple(dims)} of {dtype.name} need {expected} payload bytes, got {got}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    # astype copies: the result is writable (frombuffer on bytes is read-only) and in native order.
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a raw or gzip-compressed IDX file (gzip is detected by its magic bytes, not the name).

    Args:
        path: the file to read.

    Returns:
        The array stored in the file, native byte order, shape as given by its header.

    Raises:
        DataError: unreadable file, corrupt gzip stream or malformed IDX content.
    """
    data = decompress_if_gzip(read_file_bytes(path), path)
    return parse_idx(data, path)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as an IDX file (handy for tests and for exporting data sets).

    Args:
        path: destination file.
        array: 1- to 4-dimensional array of uint8, int8, int16, int32, float32 or float64.
        compress: gzip the file; ``None`` means "if the name ends in .gz".

    Returns:
        None.
    """
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _CODE_OF_KIND:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX type code")
    if not 1 <= array.ndim <= _MAX_DIMS:
        raise ValueError(f"write_idx: expected 1..{_MAX_DIMS} dims, got {array.ndim}")
    code = _CODE_OF_KIND[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    blob = header + payload
    if compress is None:
        compress = str(path).endswith(".gz")
    if compress:
        blob = gzip.compress(blob)
    Path(path).write_bytes(blob)
