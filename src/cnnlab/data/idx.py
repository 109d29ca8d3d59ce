"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST, raw or gzip-compressed.

IDX layout (all integers big-endian):

    bytes 0-1   zero
    byte  2     element type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension as uint32
    payload     prod(dims) elements in C order

Reading a file reads its header first: the payload's size follows from it, and is checked against
cnnlab's limit (``limits.max_data_bytes``, 1 GiB unless raised) before anything more is read or
decompressed. Then exactly that many bytes are read (unpacked from gzip as they come), and one
more byte is asked for to find trailing garbage, so a small .gz that unpacks to gigabytes costs at
most its declared size, never the whole bomb.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .limits import check_regular_file, max_data_bytes, open_regular_file

__all__ = ["IDX_DTYPES", "decompress_if_gzip", "idx_array", "parse_idx", "read_idx", "read_idx_bytes",
           "read_file_bytes", "write_idx"]

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
    check_regular_file(path, "data")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def decompress_if_gzip(data: bytes, name: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """Gunzip ``data`` if it starts with the gzip magic bytes 1f 8b, else return it unchanged.

    Args:
        data: raw file content.
        name: file name used in error messages.
        max_bytes: the most bytes it may unpack to (default: ``limits.max_data_bytes()``).

    Returns:
        The decompressed (or original) bytes.

    Raises:
        DataError: the gzip stream is corrupt or truncated, or unpacks to more than ``max_bytes``.
    """
    if not data.startswith(_GZIP_MAGIC):
        return data
    limit = max_data_bytes(max_bytes)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(limit + 1)
    # BadGzipFile is an OSError; a truncated stream raises EOFError; bad deflate data raises zlib.error.
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip stream ({exc})") from exc
    if len(out) > limit:
        raise DataError(f"{name}: unpacks to more than {limit} bytes, cnnlab's limit for a data file "
                        "(raise it with CNNLAB_MAX_DATA_BYTES or max_bytes=)")
    return out


def _header(data: bytes, name) -> tuple[int, np.dtype, tuple, int]:
    """(header length, dtype, dims, payload bytes) from the first bytes of an IDX file; DataError
    for bad magic, an unknown type code, a bad dimension count or a header cut short."""
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file: expected at least a 4-byte header, got {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad IDX magic: expected first two bytes 00 00, got {bytes(data[:2]).hex(' ')}")
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
    dims = struct.unpack(f">{ndim}I", bytes(data[4:header_len]))
    dtype = IDX_DTYPES[code]
    # Python ints: no overflow even for absurd dims in a corrupt header.
    count = 1
    for d in dims:
        count *= d
    return header_len, dtype, dims, count * dtype.itemsize


# Trailing bytes after the payload are counted up to this many, for the message.
_TRAILING_COUNTED = 1 << 20


def _read_up_to(f, n: int) -> bytearray:
    """Up to ``n`` bytes from ``f`` (fewer only at its end), read in pieces so that a file shorter
    than it claims costs what it holds, not ``n``."""
    out = bytearray()
    while len(out) < n:
        piece = f.read(min(n - len(out), 1 << 24))
        if not piece:
            break
        out += piece
    return out


def read_idx_bytes(path: str | os.PathLike, max_bytes: int | None = None) -> bytearray:
    """The decompressed content of an IDX file, read header first and bounded by it.

    Args:
        path: a raw or gzip-compressed IDX file (gzip is told by its magic bytes, not the name).
        max_bytes: the most bytes the content may have (default: ``limits.max_data_bytes()``,
            1 GiB or ``$CNNLAB_MAX_DATA_BYTES``).

    Returns:
        The header and payload, exactly as many bytes as the header declares.

    Raises:
        DataError: not a regular file, unreadable, a corrupt gzip stream, a malformed header, a
            declared size over ``max_bytes``, or a payload shorter or longer than declared.
    """
    limit = max_data_bytes(max_bytes)
    with open_regular_file(path, "data") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            head = _read_up_to(f, 4)
            head += _read_up_to(f, 4 * head[3]) if len(head) == 4 and 1 <= head[3] <= _MAX_DIMS else b""
            header_len, dtype, dims, expected = _header(head, path)
            if header_len + expected > limit:
                raise DataError(
                    f"{path}: its IDX header declares dims {tuple(dims)} of {dtype.name}, {header_len + expected} "
                    f"bytes, over cnnlab's limit of {limit} bytes for a data file (raise it with "
                    "CNNLAB_MAX_DATA_BYTES or max_bytes=)")
            content = head + _read_up_to(f, expected)
            got = len(content) - header_len
            if got == expected:  # count what follows, up to a bound: a bomb is not unpacked to count it
                got += len(_read_up_to(f, _TRAILING_COUNTED + 1))
        # BadGzipFile is an OSError; a truncated stream raises EOFError; bad deflate data raises zlib.error.
        except (OSError, EOFError, zlib.error) as exc:
            what = "corrupt gzip stream" if gzipped else "cannot read file"
            raise DataError(f"{path}: {what} ({getattr(exc, 'strerror', None) or exc})") from exc
    if got != expected:
        what = "truncated payload" if got < expected else "trailing bytes after payload"
        more = "more than " if got > expected + _TRAILING_COUNTED else ""
        raise DataError(f"{path}: {what}: dims {tuple(dims)} of {dtype.name} need {expected} payload bytes, got "
                        f"{more}{min(got, expected + _TRAILING_COUNTED)}")
    return content


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
    return _decode(data, name, copy=True)


def _decode(data, name, copy: bool) -> np.ndarray:
    """The array in IDX bytes; ``copy=False`` lets a uint8 or int8 array share a bytearray's memory
    (for content read here that nobody else holds)."""
    header_len, dtype, dims, expected = _header(data, name)
    got = len(data) - header_len
    if got != expected:
        what = "truncated payload" if got < expected else "trailing bytes after payload"
        raise DataError(
            f"{name}: {what}: dims {tuple(dims)} of {dtype.name} need {expected} payload bytes, got {got}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    if not copy and dtype.itemsize == 1 and isinstance(data, bytearray):
        return flat.reshape(dims)  # writable: a bytearray's memory
    # astype copies: the result is writable (frombuffer on bytes is read-only) and in native order.
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: str | os.PathLike, max_bytes: int | None = None) -> np.ndarray:
    """Read a raw or gzip-compressed IDX file (gzip is detected by its magic bytes, not the name).

    Args:
        path: the file to read.
        max_bytes: the most bytes its content may have (default: ``limits.max_data_bytes()``).

    Returns:
        The array stored in the file, native byte order, shape as given by its header.

    Raises:
        DataError: not a regular file, unreadable file, corrupt gzip stream, malformed IDX
            content, or a declared size over the limit.
    """
    return idx_array(read_idx_bytes(path, max_bytes), path)


def idx_array(content: bytearray, name: str | os.PathLike) -> np.ndarray:
    """The array in ``content`` from :func:`read_idx_bytes`, sharing its memory when it can (uint8
    and int8 data): hand over content that nothing else will change."""
    return _decode(content, name, copy=False)


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
