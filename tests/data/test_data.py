"""Tests for cnnlab.data: IDX files, checksummed MNIST loading, splits, loader, augmentation, images."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab.data import (
    DATASET_STATS,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    KNOWN_SHA256,
    MNIST_MEAN,
    MNIST_STD,
    Augment,
    DataError,
    DataLoader,
    ImageFolder,
    SplitData,
    checksums,
    clear_verification_cache,
    dataset_dir,
    datasets,
    expand_shifts,
    flip_images,
    load_dataset,
    load_fashion_mnist,
    load_image_batch,
    load_mnist,
    nielsen_split,
    norm_stats,
    pixel_stats,
    random_hflip,
    random_rotate,
    random_translate,
    read_idx,
    rotate_images,
    shift_images,
    to_fashion_form,
    to_mnist_form,
    write_idx,
)

REPO_MNIST = Path(datasets.__file__).resolve().parent / "mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------------------------------
# IDX reader
# --------------------------------------------------------------------------------------------------


def idx_bytes(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """Hand-built IDX content, independent of write_idx."""
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_uint8_raw_and_gzip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = idx_bytes(0x08, arr.shape, arr.tobytes())
    # No .gz suffix even when compressed: gzip must be detected by its magic bytes.
    path = tmp_path / "images-idx3"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 99  # the result must be writable


def test_read_idx_big_endian_types(tmp_path):
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(0x0C, (2,), bytes.fromhex("01020304 fffffffe")))
    out = read_idx(path)
    assert out.dtype == np.int32 and out.dtype.isnative
    assert out.tolist() == [0x01020304, -2]


@pytest.mark.parametrize("code,fmt,values", [
    (0x08, "B", [0, 7, 255]), (0x09, "b", [-128, -1, 127]), (0x0B, "h", [0x0102, -2, 32767]),
    (0x0C, "i", [0x01020304, -2, 7]), (0x0D, "f", [1.5, -2.25, 3e38]), (0x0E, "d", [1.5, -2.25, 1e-300]),
])
def test_every_idx_type_is_read_and_written_big_endian(tmp_path, code, fmt, values):
    """Each type code against bytes packed by hand with struct (big-endian '>'), not by write_idx:
    a round trip alone would pass a reader and writer that agree on the wrong byte order."""
    payload = struct.pack(f">{len(values)}{fmt}", *values)
    path = tmp_path / "typed"
    path.write_bytes(idx_bytes(code, (len(values),), payload))
    out = read_idx(path)
    assert out.dtype.isnative and out.dtype.kind == {"B": "u", "b": "i", "h": "i", "i": "i"}.get(fmt, "f")
    np.testing.assert_array_equal(out, np.array(values, dtype=out.dtype))
    write_idx(tmp_path / "again", out)
    assert (tmp_path / "again").read_bytes() == idx_bytes(code, (len(values),), payload)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_roundtrip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 5, 2)) * 50).astype(dtype)
    path = tmp_path / f"a{suffix}"
    write_idx(path, arr)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if suffix else b"\x00\x00")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "blob, pattern",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", r"magic.*expected.*00 00.*got 01 00"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", r"type code.*got 0x07"),
        (b"\x00\x00\x08\x00", r"dimension count.*expected 1\.\.4, got 0"),
        (b"\x00\x00\x08\x05" + b"\x00" * 20, r"dimension count.*got 5"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02", r"truncated IDX header.*expected 16.*got 8"),
        (b"\x00\x00", r"at least a 4-byte header, got 2"),
        (idx_bytes(0x08, (2, 3), b"\x00" * 5), r"truncated payload.*need 6 payload bytes, got 5"),
        (idx_bytes(0x08, (2, 3), b"\x00" * 7), r"trailing bytes.*need 6 payload bytes, got 7"),
        (idx_bytes(0x0C, (2,), b"\x00" * 7), r"truncated payload.*int32.*need 8.*got 7"),
    ],
)
def test_read_idx_rejects_corrupt(tmp_path, blob, pattern):
    for path, data in ((tmp_path / "bad", blob), (tmp_path / "bad.gz", gzip.compress(blob))):
        path.write_bytes(data)
        with pytest.raises(DataError, match=pattern) as info:
            read_idx(path)
        assert str(path) in str(info.value)  # names the file


def test_read_idx_bad_gzip(tmp_path):
    good = gzip.compress(idx_bytes(0x08, (100,), bytes(range(100))))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 40)
    flipped = bytearray(good)
    flipped[-6] ^= 0xFF  # breaks the CRC-32 trailer
    badcrc = tmp_path / "badcrc.gz"
    badcrc.write_bytes(bytes(flipped))
    for path in (truncated, garbage, badcrc):
        with pytest.raises(DataError, match="corrupt gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST loading and checksums
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    clear_verification_cache()
    return load_mnist()


def test_bundled_mnist_loads(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert mnist.train_labels.dtype == np.int64
    for labels in (mnist.train_labels, mnist.test_labels):
        assert labels.min() == 0 and labels.max() == 9
        assert len(np.unique(labels)) == 10
    # Well-known facts about MNIST: first training label is 5, first test label 7.
    assert mnist.train_labels[0] == 5 and mnist.test_labels[0] == 7
    assert mnist.name == "mnist"


def test_bundled_mnist_checksums_verified(mnist):
    for stem in FILES.values():
        path = datasets._find_file(mnist.root, stem)
        assert checksums.is_verified(path, KNOWN_SHA256["mnist"][stem])


def test_known_checksums_match_readme():
    readme = (REPO_MNIST / "README.md").read_text()
    # Table rows "| name | [size |] sha |"; the README lists MNIST's four, then Fashion-MNIST's.
    rows = re.findall(r"\|\s*([a-z0-9-]+-ubyte)\s*\|(?:[^|\n]*\|)?\s*([0-9a-f]{64})\s*\|", readme)
    assert len(rows) == 8
    assert dict(rows[:4]) == KNOWN_SHA256["mnist"]
    assert dict(rows[4:]) == KNOWN_SHA256["fashion-mnist"]


def _link_copy(dst: Path, replace: dict[str, bytes] | None = None) -> Path:
    """A data dir of symlinks to the bundled MNIST, with some files replaced by given contents."""
    dst.mkdir()
    replace = replace or {}
    for stem in FILES.values():
        if stem in replace:
            (dst / f"{stem}.gz").write_bytes(gzip.compress(replace[stem]))
        else:
            (dst / f"{stem}.gz").symlink_to(REPO_MNIST / f"{stem}.gz")
    return dst


def test_corrupted_copy_fails_checksum(tmp_path, mnist):
    raw = bytearray(gzip.decompress((REPO_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[8] = (raw[8] + 1) % 10  # still a perfectly valid IDX label file, just one wrong label
    root = _link_copy(tmp_path / "copy", {"t10k-labels-idx1-ubyte": bytes(raw)})
    expected = KNOWN_SHA256["mnist"]["t10k-labels-idx1-ubyte"]
    with pytest.raises(DataError, match="SHA-256 mismatch") as info:
        load_mnist(root=root)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and expected in msg
    assert checksums.sha256_hex(bytes(raw)) in msg
    # Without verification the (structurally valid) copy loads.
    assert load_mnist(root=root, verify=False).test_labels[0] == (7 + 1) % 10


def test_checksum_cached_by_stamp(tmp_path, monkeypatch):
    root = tmp_path / "m"
    root.mkdir()
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (root / f"{stem}.gz").write_bytes((REPO_MNIST / f"{stem}.gz").read_bytes())
    path = root / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    expected = KNOWN_SHA256["mnist"]["t10k-labels-idx1-ubyte"]
    checksums.verify_sha256(path, content, expected)
    stamp = root / checksums.STAMP_NAME
    assert stamp.is_file() and expected in stamp.read_text()

    def no_hashing(_data):
        raise AssertionError("hashed again although the file was verified")

    monkeypatch.setattr(checksums, "sha256_hex", no_hashing)
    clear_verification_cache()  # only the stamp on disk vouches now
    checksums.verify_sha256(path, content, expected)
    # A changed file (new size/mtime) is hashed again.
    path.write_bytes(gzip.compress(content, compresslevel=1))
    with pytest.raises(AssertionError, match="hashed again"):
        checksums.verify_sha256(path, content, expected)
    # A garbled stamp is ignored, not an error.
    monkeypatch.undo()
    stamp.write_text("{not json")
    checksums.verify_sha256(path, content, expected)


def test_checksum_unwritable_stamp_keeps_memory_cache(tmp_path, monkeypatch):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((REPO_MNIST / path.name).read_bytes())
    content = gzip.decompress(path.read_bytes())
    expected = KNOWN_SHA256["mnist"]["t10k-labels-idx1-ubyte"]

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(checksums.tempfile, "mkstemp", read_only)
    checksums.verify_sha256(path, content, expected)  # must not fail
    assert not (tmp_path / checksums.STAMP_NAME).exists()
    assert checksums.is_verified(path, expected)


def test_label_image_count_mismatch(tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3], dtype=np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (2, 28, 28), dtype=np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte", np.array([4, 5], dtype=np.uint8))
    with pytest.raises(DataError, match=r"count mismatch: 5 images but 4 labels"):
        load_mnist(root=root, verify=False)
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        load_mnist(root=root)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 12], dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels out of range"):
        load_mnist(root=root, verify=False)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4], dtype=np.uint8))
    ds = load_mnist(root=root, verify=False)
    assert ds.train_images.shape == (5, 28, 28) and ds.test_labels.tolist() == [4, 5]


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_PACKAGE_DATA", tmp_path / "package")
    monkeypatch.setattr(datasets, "_SYSTEM_DATA", tmp_path / "system")
    with pytest.raises(DataError) as info:
        load_fashion_mnist()
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "$CNNLAB_DATA/fashion-mnist" in msg
    assert str(tmp_path / "env" / "fashion-mnist") in msg  # lists where it looked
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path / "nowhere")


def test_search_order_env_first(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    _link_copy(tmp_path / "mnist")
    assert dataset_dir("mnist") == tmp_path / "mnist"
    assert datasets.search_dirs("fashion-mnist")[0] == tmp_path / "fashion-mnist"
    assert datasets.search_dirs("fashion-mnist")[-1] == Path("/usr/share/datasets/fashion-mnist")
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar10")


def test_fashion_mnist_if_installed():
    try:
        dataset_dir("fashion-mnist")
    except DataError:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    split = load_dataset("fashion-mnist")
    assert split.train_images.shape == (50000, 28, 28) and split.test_images.shape == (10000, 28, 28)
    assert split.train_labels[:4].tolist() == [9, 0, 0, 3]  # ankle boot, T-shirt, T-shirt, dress


# --------------------------------------------------------------------------------------------------
# Split and expansion
# --------------------------------------------------------------------------------------------------


def test_nielsen_split(mnist):
    split = nielsen_split(mnist)
    assert split.train_images.shape == (50000, 28, 28)
    assert split.validation_images.shape == (10000, 28, 28)
    assert split.test_images.shape == (10000, 28, 28)
    for labels in (split.train_labels, split.validation_labels, split.test_labels):
        assert labels.dtype == np.int64
    # Validation is the LAST 10,000 training images, as in Nielsen's mnist.pkl.gz.
    np.testing.assert_array_equal(split.validation_images, mnist.train_images[50000:])
    np.testing.assert_array_equal(split.train_labels, mnist.train_labels[:50000])
    x, y = split.validation
    assert x is split.validation_images and y is split.validation_labels
    assert nielsen_split(mnist, validation=0).train_images.shape[0] == 60000
    with pytest.raises(ValueError):
        nielsen_split(mnist, validation=60000)


def test_load_dataset_sizes():
    split = load_dataset("mnist", validation=10000)
    assert [len(split.train_labels), len(split.validation_labels), len(split.test_labels)] == [50000, 10000, 10000]


def test_expand_shifts_tiny():
    img = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3)
    # [[1 2 3]
    #  [4 5 6]
    #  [7 8 9]]
    out, labels = expand_shifts(img, np.array([7]))
    assert out.shape == (5, 3, 3) and out.dtype == np.uint8
    assert labels.tolist() == [7] * 5 and labels.dtype == np.int64
    np.testing.assert_array_equal(out[0], img[0])
    np.testing.assert_array_equal(out[1], [[4, 5, 6], [7, 8, 9], [0, 0, 0]])  # up
    np.testing.assert_array_equal(out[2], [[0, 0, 0], [1, 2, 3], [4, 5, 6]])  # down
    np.testing.assert_array_equal(out[3], [[2, 3, 0], [5, 6, 0], [8, 9, 0]])  # left
    np.testing.assert_array_equal(out[4], [[0, 1, 2], [0, 4, 5], [0, 7, 8]])  # right


def test_expand_shifts_order_and_size(mnist):
    images, labels = mnist.train_images[:50000], mnist.train_labels[:50000]
    out, out_labels = expand_shifts(images, labels)
    assert out.shape == (250000, 28, 28) and out_labels.shape == (250000,)
    np.testing.assert_array_equal(out[::5], images)  # originals at 5*i
    np.testing.assert_array_equal(out_labels[3::5], labels)
    np.testing.assert_array_equal(out[5 * 123 + 2, 1:], images[123, :-1])  # image 123 shifted down
    out2, _ = expand_shifts(images[:100], labels[:100])
    np.testing.assert_array_equal(out2, out[:500])  # deterministic
    with pytest.raises(DataError):
        expand_shifts(images[:3], labels[:2])


# --------------------------------------------------------------------------------------------------
# DataLoader
# --------------------------------------------------------------------------------------------------


def _toy(n=103, h=6, w=5):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), np.arange(n, dtype=np.int64)


def _epoch(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_loader_determinism_and_coverage():
    images, labels = _toy()
    make = lambda: DataLoader(images, labels, batch_size=10, seed=42, augment=Augment(max_shift=1))  # noqa: E731
    a, b = make(), make()
    assert len(a) == 11
    ea0, ea1 = _epoch(a), _epoch(a)
    eb0, eb1 = _epoch(b), _epoch(b)
    for (xa, ya), (xb, yb) in zip(ea0 + ea1, eb0 + eb1):
        assert xa.tobytes() == xb.tobytes() and np.array_equal(ya, yb)  # bit-identical
    # Each epoch covers every sample exactly once; consecutive epochs use different orders.
    for ep in (ea0, ea1):
        seen = np.concatenate([y for _, y in ep])
        assert sorted(seen.tolist()) == list(range(103))
        assert [len(y) for _, y in ep] == [10] * 10 + [3]
    assert not np.array_equal(np.concatenate([y for _, y in ea0]), np.concatenate([y for _, y in ea1]))
    # set_epoch reproduces an epoch without replaying the earlier ones.
    c = make()
    c.set_epoch(1)
    for (xa, ya), (xc, yc) in zip(ea1, _epoch(c)):
        assert xa.tobytes() == xc.tobytes() and np.array_equal(ya, yc)
    assert c.epoch == 2
    # A different seed gives a different order.
    d = DataLoader(images, labels, batch_size=10, seed=43)
    assert not np.array_equal(np.concatenate([y for _, y in d]), np.concatenate([y for _, y in ea0]))
    # Epoch 0's order is default_rng(seed).permutation.
    e = DataLoader(images, labels, batch_size=103, seed=42)
    np.testing.assert_array_equal(next(iter(e))[1], np.random.default_rng(42).permutation(103))


def test_loader_no_shuffle_drop_last_and_normalisation():
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 255
    images[:, 1, 1] = 51
    loader = DataLoader(images, np.arange(5), batch_size=2, shuffle=False, drop_last=True)
    assert len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2
    x, y = batches[0]
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == [0, 1]
    assert batches[1][1].tolist() == [2, 3]
    np.testing.assert_allclose(x[0, 0, 0, 0], (1.0 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[0, 0, 1, 1], (0.2 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[0, 0, 5, 5], -0.1307 / 0.3081, rtol=1e-6)
    x64, _ = next(iter(DataLoader(images, np.arange(5), 5, mean=0.0, std=1.0, dtype=np.float64)))
    assert x64.dtype == np.float64 and x64.max() == 1.0 and x64.min() == 0.0


def test_loader_channels_and_errors():
    images = np.full((4, 3, 2, 2), 255, dtype=np.uint8)
    x, _ = next(iter(DataLoader(images, np.zeros(4), 4, mean=[0.0, 0.5, 1.0], std=[1.0, 0.5, 2.0])))
    assert x.shape == (4, 3, 2, 2)
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 1.0, 0.0])
    with pytest.raises(DataError, match="count mismatch"):
        DataLoader(images, np.zeros(3), 2)
    with pytest.raises(ValueError):
        DataLoader(images, np.zeros(4), 2, mean=[0.1, 0.2])


def test_loader_over_mnist_batches(mnist):
    loader = DataLoader(mnist.test_images, mnist.test_labels, batch_size=1000, seed=0, augment=Augment(2, 10.0))
    total = 0
    for x, y in loader:
        assert x.shape == (1000, 1, 28, 28) and np.isfinite(x).all()
        total += len(y)
    assert total == 10000


# --------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------


def test_shift_images_one_hot():
    batch = np.zeros((4, 7, 7), dtype=np.uint8)
    batch[:, 3, 3] = 200
    out = shift_images(batch, dy=[0, 2, -3, 1], dx=[1, -2, 3, 0])
    for i, (r, c) in enumerate([(3, 4), (5, 1), (0, 6), (4, 3)]):
        expected = np.zeros((7, 7), dtype=np.uint8)
        expected[r, c] = 200
        np.testing.assert_array_equal(out[i], expected)
    # Shifting off the edge leaves zeros; 4-D input keeps its channels.
    edge = np.zeros((1, 2, 5, 5), dtype=np.float32)
    edge[0, :, 0, 4] = 1.0
    assert shift_images(edge, 0, 1).sum() == 0.0
    assert shift_images(edge, 1, -1).shape == (1, 2, 5, 5)
    assert shift_images(edge, 1, -1)[0, 1, 1, 3] == 1.0


def test_random_translate_moves_pixel_within_range():
    n, m = 400, 2
    batch = np.zeros((n, 9, 9), dtype=np.float32)
    batch[:, 4, 4] = 1.0
    out = random_translate(batch, m, np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert np.all(out.sum(axis=(1, 2)) == 1.0)  # the pixel is moved, never lost or duplicated
    _, rows, cols = np.nonzero(out)
    dy, dx = rows - 4, cols - 4
    assert set(dy.tolist()) == set(range(-m, m + 1)) == set(dx.tolist())
    # Same generator state -> same shifts; the shifts are the generator's integers in [-m, m].
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(dy, rng.integers(-m, m + 1, size=n))
    np.testing.assert_array_equal(dx, rng.integers(-m, m + 1, size=n))
    np.testing.assert_array_equal(out, random_translate(batch, m, np.random.default_rng(0)))


def test_rotate_images():
    rng = np.random.default_rng(5)
    batch = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(rotate_images(batch, 0.0), batch)
    # +90 degrees is counter-clockwise as displayed, exactly what np.rot90 does on the grid.
    np.testing.assert_array_equal(rotate_images(batch, 90.0), np.rot90(batch, 1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_images(batch, [180.0, -90.0, 0.0])[1], np.rot90(batch[1], -1))
    small = random_rotate(batch.astype(np.float32), 15.0, np.random.default_rng(1))
    assert small.shape == batch.shape and small.dtype == np.float32
    four = rng.random((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(rotate_images(four, 90.0), np.rot90(four, 1, axes=(2, 3)), atol=1e-6)


def test_augment_reproducible():
    batch = np.random.default_rng(2).random((16, 28, 28)).astype(np.float32)
    aug = Augment(max_shift=2, max_degrees=10.0)
    a = aug(batch, np.random.default_rng(9))
    b = aug(batch, np.random.default_rng(9))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, batch)
    np.testing.assert_array_equal(Augment(0, 0.0)(batch, np.random.default_rng(0)), batch)


def _asymmetric(n, shape=(28, 28), seed=3):
    """Random images none of which equals its own mirror image (so a flip is always visible)."""
    batch = np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)
    batch[..., 0] = 0
    batch[..., -1] = 255
    return batch


def test_flip_images_mirrors_exactly_the_chosen_images():
    batch = _asymmetric(5)
    before = batch.copy()
    chosen = np.array([True, False, False, True, False])
    out = flip_images(batch, chosen)
    assert out.shape == batch.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(batch, before)  # the input is not modified
    for i in range(5):
        expected = batch[i, :, ::-1] if chosen[i] else batch[i]
        np.testing.assert_array_equal(out[i], expected)
    four = np.random.default_rng(1).random((3, 2, 4, 6)).astype(np.float32)  # (N, C, H, W): every channel flips
    out4 = flip_images(four, np.array([False, True, False]))
    assert out4.shape == four.shape and out4.dtype == np.float32
    np.testing.assert_array_equal(out4[1], four[1][:, :, ::-1])
    np.testing.assert_array_equal(out4[[0, 2]], four[[0, 2]])
    np.testing.assert_array_equal(flip_images(batch, True), batch[:, :, ::-1])  # a scalar applies to all
    with pytest.raises(ValueError, match="flip"):
        flip_images(batch, np.array([True, False]))
    with pytest.raises(ValueError, match="booleans"):
        flip_images(batch, np.ones(5))


def test_random_hflip_draws_one_coin_per_image_and_is_reproducible():
    batch = _asymmetric(200)
    out = random_hflip(batch, np.random.default_rng(7))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    flipped = np.array([np.array_equal(o, b[:, ::-1]) for o, b in zip(out, batch)])
    kept = np.array([np.array_equal(o, b) for o, b in zip(out, batch)])
    assert np.all(flipped ^ kept)  # every image is either mirrored or untouched
    np.testing.assert_array_equal(flipped, np.random.default_rng(7).random(200) < 0.5)
    assert 70 < flipped.sum() < 130  # about half
    assert random_hflip(batch, np.random.default_rng(7)).tobytes() == out.tobytes()
    assert random_hflip(batch, np.random.default_rng(8)).tobytes() != out.tobytes()
    np.testing.assert_array_equal(random_hflip(batch, np.random.default_rng(0), p=0.0), batch)
    np.testing.assert_array_equal(random_hflip(batch, np.random.default_rng(0), p=1.0), batch[:, :, ::-1])
    with pytest.raises(ValueError, match="p must be"):
        random_hflip(batch, np.random.default_rng(0), p=1.5)


def test_augment_hflip():
    batch = _asymmetric(16).astype(np.float32) / 255.0
    n = len(batch)
    coins = np.random.default_rng(4).random(n) < 0.5
    out = Augment(max_shift=0, hflip=True)(batch, np.random.default_rng(4))
    assert out.shape == batch.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, flip_images(batch, coins))
    # Flips are drawn after the shifts, so a seed's shifts stay what they were without hflip.
    shifted = Augment(max_shift=2)(batch, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    rng.integers(-2, 3, size=n)
    rng.integers(-2, 3, size=n)
    np.testing.assert_array_equal(Augment(max_shift=2, hflip=True)(batch, np.random.default_rng(5)),
                                  flip_images(shifted, rng.random(n) < 0.5))
    assert not Augment().hflip  # off unless asked for
    with pytest.raises(TypeError, match="hflip"):
        Augment(hflip="yes")
    with pytest.raises(ValueError, match="max_shift"):
        Augment(max_shift=-1)


def test_loader_applies_hflip():
    images = _asymmetric(12)
    loader = DataLoader(images, np.arange(12), batch_size=12, shuffle=False, seed=3, mean=0.0, std=1.0,
                        augment=Augment(max_shift=0, hflip=True))
    x, _ = next(iter(loader))
    coins = loader.rng_for_epoch(0).random(12) < 0.5  # no shuffle: the coins are the epoch's first draws
    assert 0 < coins.sum() < 12
    np.testing.assert_allclose(x[:, 0], flip_images(images, coins) / np.float32(255.0), rtol=1e-6)
    again, _ = next(iter(DataLoader(images, np.arange(12), 12, shuffle=False, seed=3, mean=0.0, std=1.0,
                                    augment=Augment(max_shift=0, hflip=True))))
    assert again.tobytes() == x.tobytes()


# --------------------------------------------------------------------------------------------------
# Normalisation statistics
# --------------------------------------------------------------------------------------------------


def test_norm_stats_of_the_named_data_sets():
    assert norm_stats("mnist") == (MNIST_MEAN, MNIST_STD) == (0.1307, 0.3081)  # the published constants
    assert norm_stats("fashion-mnist") == (FASHION_MNIST_MEAN, FASHION_MNIST_STD) == (0.2860, 0.3530)
    assert set(DATASET_STATS) == {"mnist", "fashion-mnist"}
    tiny = np.zeros((1, 28, 28), np.uint8)
    # A split of a named data set gets the constants, whatever subset of it the split holds.
    split = SplitData(tiny, np.zeros(1, np.int64), tiny, np.zeros(1, np.int64), tiny, np.zeros(1, np.int64),
                      "fashion-mnist")
    assert norm_stats(split) == (FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def test_mnist_constants_are_its_training_pixel_stats(mnist):
    mean, std = pixel_stats(mnist.train_images)
    assert (round(mean, 4), round(std, 4)) == (MNIST_MEAN, MNIST_STD)


def test_fashion_mnist_constants_are_its_training_pixel_stats():
    try:
        dataset_dir("fashion-mnist")  # absent files: a skip; a checksum or loader failure below: a failure
    except DataError:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    ds = load_fashion_mnist()
    mean, std = pixel_stats(ds.train_images)
    assert (round(mean, 4), round(std, 4)) == (FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def test_pixel_stats_and_folder_splits():
    half = np.zeros((4, 2, 2), np.uint8)
    half[:2] = 255
    assert pixel_stats(half) == (0.5, 0.5)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 5, 5), dtype=np.uint8)
    ref = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(pixel_stats(images), (ref.mean(), ref.std()), rtol=1e-12)
    floats = rng.random((3, 4, 4)).astype(np.float32)  # float images are taken as already in [0, 1]
    np.testing.assert_allclose(pixel_stats(floats), (floats.astype(np.float64).mean(), floats.astype(np.float64).std()))
    # A folder's split: measured on its training images only, never validation or test.
    other = np.full((2, 5, 5), 255, np.uint8)
    split = SplitData(images[:, 0], np.zeros(7, np.int64), other, np.zeros(2, np.int64), other,
                      np.zeros(2, np.int64), "/some/folder")
    assert norm_stats(split) == pixel_stats(images[:, 0])
    assert norm_stats(images) == pixel_stats(images)
    with pytest.raises(ValueError, match="std is 0"):
        pixel_stats(np.full((2, 3, 3), 9, np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        pixel_stats(np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="uint8 or float"):
        pixel_stats(np.zeros((2, 3, 3), np.int32))
    with pytest.raises(ValueError, match="cifar10"):
        norm_stats("cifar10")


def test_norm_stats_of_a_folder_path(tmp_path):
    for name, colour in (("a", 255), ("b", 128)):
        (tmp_path / name).mkdir()
        for i in range(3):
            img = Image.new("L", (40, 40), 0)
            ImageDraw.Draw(img).rectangle([8 + i, 6, 20 + i, 30], fill=colour)
            img.save(tmp_path / name / f"{i}.png")
    split = load_dataset(str(tmp_path))
    assert norm_stats(tmp_path) == norm_stats(str(tmp_path)) == pixel_stats(split.train_images)


# --------------------------------------------------------------------------------------------------
# Image folders and user pictures
# --------------------------------------------------------------------------------------------------


def test_image_folder(tmp_path):
    root = tmp_path / "imgs"
    for cls, value, sizes in (("b_seven", 200, [(30, 20), (28, 28)]), ("a_one", 50, [(10, 40)])):
        (root / cls).mkdir(parents=True)
        for k, (w, h) in enumerate(sizes):
            Image.new("RGB", (w, h), (value, value, value)).save(root / cls / f"{k}.png")
    (root / "a_one" / "notes.txt").write_text("ignored")
    Image.new("L", (12, 12), 90).save(root / "a_one" / "x.bmp")
    Image.new("RGB", (12, 12), (90, 90, 90)).save(root / "a_one" / "y.JPG")

    ds = ImageFolder(root)
    assert ds.classes == ["a_one", "b_seven"]
    assert ds.images.shape == (5, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.labels.dtype == np.int64
    assert ds.images[0].min() == ds.images[0].max() == 50
    assert abs(int(ds.images[2, 5, 5]) - 90) <= 2  # JPEG is lossy
    assert ds.images[3].min() == 200
    rgb = ImageFolder(root, size=(16, 8), grayscale=False)
    assert rgb.images.shape == (5, 3, 16, 8)

    (root / "c_empty").mkdir()
    with pytest.raises(DataError, match="c_empty.*empty"):
        ImageFolder(root)
    (root / "c_empty" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolder(root)
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolder(tmp_path / "imgs" / "a_one")


def _draw_one(path: Path, size=(150, 200), ink=0, paper=255, mode="L") -> Path:
    """A thick slanted '1' stroke, off-centre, on a plain background; size is (width, height)."""
    img = Image.new(mode, size, paper)
    ImageDraw.Draw(img).line([(40, 40), (60, 170)], fill=ink, width=14)
    img.save(path)
    return path


def _centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    a = img.astype(np.float64)
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / a.sum()), float((xs * a).sum() / a.sum())


def _check_mnist_form(out: np.ndarray):
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and out[0, 0] == 0 and out[-1, -1] == 0  # white on black
    cy, cx = _centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    ink = np.argwhere(out > 0)
    assert ink.min() >= 4 and ink.max() <= 23  # inside the central 20x20 box
    assert ink[:, 0].max() - ink[:, 0].min() + 1 == 20  # tall stroke: longest side scaled to 20


def test_to_mnist_form_black_on_white(tmp_path):
    out = to_mnist_form(_draw_one(tmp_path / "one.png"))
    _check_mnist_form(out)
    assert out[14].max() >= 250  # the stroke crosses the middle row at (nearly) full intensity


def test_to_mnist_form_variants(tmp_path):
    white_on_black = to_mnist_form(_draw_one(tmp_path / "inv.png", ink=255, paper=0))
    black_on_white = to_mnist_form(_draw_one(tmp_path / "one.png"))
    np.testing.assert_array_equal(white_on_black, black_on_white)  # polarity detected
    # A noisy gray "photo" with dark ink, given as a PIL image.
    rng = np.random.default_rng(0)
    photo = np.clip(170 + rng.normal(0, 6, (200, 150)), 0, 255)
    stroke = np.asarray(Image.open(tmp_path / "one.png")) < 128
    photo[stroke] = 40
    _check_mnist_form(to_mnist_form(Image.fromarray(photo.astype(np.uint8))))
    # Black strokes on a transparent canvas (hidden colour black too).
    rgba = Image.new("RGBA", (150, 200), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(40, 40), (60, 170)], fill=(0, 0, 0, 255), width=14)
    _check_mnist_form(to_mnist_form(rgba))
    batch = load_image_batch([tmp_path / "inv.png", tmp_path / "one.png"])
    assert batch.shape == (2, 28, 28) and batch.dtype == np.uint8
    assert load_image_batch([]).shape == (0, 28, 28)


def test_to_mnist_form_round_trip(mnist):
    # A real MNIST digit, enlarged 10x and printed black on white, should come back close to itself.
    corr = []
    for img in mnist.test_images[:40]:
        photo = Image.fromarray(255 - img).resize((280, 280), Image.Resampling.BICUBIC)
        back = to_mnist_form(photo).astype(np.float64)
        corr.append(np.corrcoef(back.ravel(), img.astype(np.float64).ravel())[0, 1])
    assert np.mean(corr) > 0.85 and np.min(corr) > 0.5


def test_to_fashion_form_fills_the_field_with_the_object(tmp_path):
    # A dark, wide "trouser-less shirt" on a white product-photo background, 300x200.
    photo = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(photo).rectangle([(30, 40), (269, 159)], fill=60)  # 240 x 120 object
    photo.save(tmp_path / "shirt.png")
    out = to_fashion_form(tmp_path / "shirt.png")
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.nonzero(out > 127)
    assert cols.min() == 0 and cols.max() == 27  # the longest side fills 28 px, not MNIST's 20
    assert rows.max() - rows.min() + 1 == 14  # aspect ratio kept: 240 x 120 -> 28 x 14
    assert rows.min() == 7  # centred by its box: (28 - 14) / 2
    assert out[0, 0] == 0 and out[14, 14] == 255  # light object on black, as Fashion-MNIST
    # the digit converter shrinks into the 20x20 box instead (a bar: the solid shirt is no digit's stroke)
    bar = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(bar).rectangle([(30, 90), (269, 109)], fill=60)
    assert np.nonzero(to_mnist_form(bar))[1].max() <= 23
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank.png.*no object"):
        to_fashion_form(tmp_path / "blank.png")
    with pytest.raises(DataError, match="missing.png: no such file"):
        to_fashion_form(tmp_path / "missing.png")
    import io  # an open file works as well as a path

    buf = io.BytesIO((tmp_path / "shirt.png").read_bytes())
    np.testing.assert_array_equal(to_fashion_form(Image.open(buf)), out)
    np.testing.assert_array_equal(to_fashion_form(io.BytesIO((tmp_path / "shirt.png").read_bytes())), out)


def test_to_mnist_form_errors(tmp_path):
    text = tmp_path / "digit.png"
    text.write_text("definitely not an image")
    with pytest.raises(DataError, match="digit.png"):
        to_mnist_form(text)
    with pytest.raises(DataError, match="missing.png"):
        to_mnist_form(tmp_path / "missing.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank.png.*no digit"):
        to_mnist_form(tmp_path / "blank.png")
    with pytest.raises(DataError, match="digit.png"):
        load_image_batch([tmp_path / "blank.png", text][::-1])


def test_packaged_mnist_comes_before_the_cache(tmp_path, monkeypatch):
    # the copy inside the package (the wheel's) wins over a user's cache; $CNNLAB_DATA over both
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "cnnlab").mkdir(parents=True)
    _link_copy(tmp_path / "cache" / "cnnlab" / "mnist")
    assert dataset_dir("mnist") == REPO_MNIST
    assert datasets.search_dirs("mnist")[:2] == [REPO_MNIST, tmp_path / "cache" / "cnnlab" / "mnist"]
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    _link_copy(tmp_path / "env" / "mnist")
    assert dataset_dir("mnist") == tmp_path / "env" / "mnist"


def test_the_mnist_inside_the_package_gets_no_stamp():
    """Verified in memory only: a stamp written into site-packages would outlive `pip uninstall`."""
    path = REPO_MNIST / "t10k-labels-idx1-ubyte.gz"
    stamp = REPO_MNIST / checksums.STAMP_NAME
    stamp.unlink(missing_ok=True)
    clear_verification_cache()
    checksums.verify_sha256(path, gzip.decompress(path.read_bytes()), KNOWN_SHA256["mnist"]["t10k-labels-idx1-ubyte"])
    assert checksums.is_verified(path, KNOWN_SHA256["mnist"]["t10k-labels-idx1-ubyte"]) and not stamp.exists()
