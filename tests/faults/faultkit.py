"""Shared pieces of the fault-injection suite: a guard against hangs, one-line error checks, and
cheaply built odd files."""

from __future__ import annotations

import os
import struct
import threading
import zlib

# A call that has not returned after this long is taken as hung (a named pipe blocks forever); it
# is a liveness guard with a wide margin, not a speed requirement: every call here takes
# milliseconds.
HANG_SECONDS = 60


def returns(fn, *args, fifo=None, **kwargs):
    """``fn(*args, **kwargs)``'s result, or the exception it raised (returned, not raised).

    Fails the test, rather than hanging the suite, if the call is still running after
    HANG_SECONDS; a reader blocked on ``fifo`` is then released by opening its write end.
    """
    box = {}

    def call():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    if thread.is_alive():
        if fifo is not None:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked reader go
            except OSError:
                pass
        raise AssertionError(f"{getattr(fn, '__name__', fn)} hung on {args}")
    return box["value"]


def one_line_error(result, kind, *needles):
    """Assert that ``result`` is an exception of ``kind`` whose message is one line holding every
    needle (file names, keys); returns the message."""
    assert isinstance(result, kind), f"expected {kind.__name__}, got {result!r}"
    message = str(result)
    assert "\n" not in message and message.strip(), message
    for needle in needles:
        assert str(needle) in message, (needle, message)
    return message


def png_header(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` gray pixels and whose data is a few bytes:
    a picture of any claimed size in under 100 bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))
