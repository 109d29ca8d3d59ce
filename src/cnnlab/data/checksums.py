"""SHA-256 verification of data files, with a cache so only the first load pays for hashing.

The checksums are of the *decompressed* IDX content (as in src/cnnlab/data/mnist/README.md), so they stay
valid when a mirror recompresses the files (e.g. Debian's dataset-fashion-mnist).

A verified file is remembered in two places, both keyed by the on-disk file's size and mtime so a
replaced or rewritten file is hashed again:

* an in-process dict, always;
* a JSON stamp file ``.cnnlab-verified.json`` next to the data, written atomically (temp file +
  os.replace). If the directory is read-only the stamp is silently skipped: verification must
  never fail just because a cache cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from .errors import DataError

__all__ = ["KNOWN_SHA256", "STAMP_NAME", "clear_verification_cache", "is_verified", "sha256_hex", "verify_sha256"]

# Decompressed SHA-256 of each IDX file, copied from cnnlab/data/mnist/README.md.
KNOWN_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

STAMP_NAME = ".cnnlab-verified.json"
_STAMP_VERSION = 1

# (resolved path, size, mtime_ns) -> verified sha256 of the decompressed content.
_memory: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``.

    Args:
        data: bytes to hash.

    Returns:
        64-character lowercase hex digest.
    """
    return hashlib.sha256(data).hexdigest()


def clear_verification_cache() -> None:
    """Forget in-process verification results (stamp files on disk are left alone).

    Returns:
        None.
    """
    with _lock:
        _memory.clear()


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _read_stamp(directory: Path) -> dict:
    try:
        stamp = json.loads((directory / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stamp, dict) or stamp.get("version") != _STAMP_VERSION:
        return {}
    files = stamp.get("files")
    return files if isinstance(files, dict) else {}


_PACKAGED = (Path(__file__).parent / "mnist").resolve()  # MNIST as shipped inside the package


def _write_stamp(directory: Path, files: dict) -> None:
    """Atomically replace the stamp; any failure (read-only dir, full disk) is ignored."""
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=STAMP_NAME + ".", suffix=".tmp", dir=directory)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; other users may read the data too
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": _STAMP_VERSION, "files": files}, fh, indent=1, sort_keys=True)
        os.replace(tmp_name, directory / STAMP_NAME)
        tmp_name = None
    except OSError:
        pass
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _stamp_says_ok(path: Path, key: tuple[str, int, int], expected: str) -> bool:
    entry = _read_stamp(path.parent).get(path.name)
    return (
        isinstance(entry, dict)
        and entry.get("size") == key[1]
        and entry.get("mtime_ns") == key[2]
        and entry.get("sha256") == expected
    )


def is_verified(path: str | os.PathLike, expected: str) -> bool:
    """Whether ``path`` (unchanged since) was already verified against ``expected``.

    Args:
        path: the on-disk data file (compressed or not).
        expected: expected hex SHA-256 of its decompressed content.

    Returns:
        True when the in-process cache or the stamp file vouches for it; hashing can be skipped.
    """
    path = Path(path)
    try:
        key = _file_key(path)
    except OSError:
        return False
    with _lock:
        if _memory.get(key) == expected:
            return True
    if _stamp_says_ok(path, key, expected):
        with _lock:
            _memory[key] = expected
        return True
    return False


def verify_sha256(path: str | os.PathLike, content: bytes, expected: str) -> None:
    """Check the decompressed ``content`` of ``path`` against ``expected`` and remember success.

    Skips hashing when :func:`is_verified` already vouches for the unchanged file.

    Args:
        path: the on-disk file ``content`` came from (used for the cache key and messages).
        content: decompressed file content.
        expected: expected hex SHA-256.

    Returns:
        None.

    Raises:
        DataError: checksum mismatch, naming the file, expected and got.
    """
    path = Path(path)
    if is_verified(path, expected):
        return
    got = sha256_hex(content)
    if got != expected.lower():
        raise DataError(
            f"{path}: SHA-256 mismatch of decompressed content: expected {expected}, got {got} "
            "(the file is corrupt or not the expected data set; re-download or reinstall it)"
        )
    try:
        key = _file_key(path)
    except OSError:
        return
    with _lock:
        _memory[key] = expected
        if path.parent.resolve() == _PACKAGED:
            return  # the copy inside the package: no stamp there (pip uninstall would leave it behind)
        # Read-modify-write under the lock so two threads verifying sibling files keep both entries.
        files = _read_stamp(path.parent)
        files[path.name] = {"size": key[1], "mtime_ns": key[2], "sha256": expected}
        _write_stamp(path.parent, files)
