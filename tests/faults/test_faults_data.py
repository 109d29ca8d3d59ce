"""Fault cases of data loading (issue 17): IDX bytes of every shape, gzip bombs, limits and their
overrides, pipes and devices given as files, huge, deep, animated and odd pictures, folders."""

import gzip
import os
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from faultkit import one_line_error, png_header, returns
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.data import (
    DataError,
    FirstFrameWarning,
    ImageFolder,
    load_dataset,
    load_folder_split,
    load_mnist,
    max_data_bytes,
    max_image_pixels,
    open_image,
    read_idx,
    to_mnist_form,
    write_idx,
)

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def idx_header(code, dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


# ----------------------------------------------------------------------------- IDX: any bytes
def _read_back(tmp_path, blob, gz):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(blob, compresslevel=1) if gz else blob)
    result = returns(read_idx, path, max_bytes=1 << 20)
    if not isinstance(result, np.ndarray):
        one_line_error(result, DataError, path)
    return result


@FUZZ
@given(blob=st.binary(max_size=64), gz=st.booleans())
def test_any_bytes_read_or_raise_one_data_error(tmp_path, blob, gz):
    _read_back(tmp_path, blob, gz)


@FUZZ
@given(code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]),
       dims=st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=0, max_size=6),
       payload=st.integers(0, 80), gz=st.booleans(), garbage=st.binary(max_size=8))
def test_any_idx_header_reads_or_raises_one_data_error(tmp_path, code, dims, payload, gz, garbage):
    blob = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    blob += bytes(range(256))[:payload] * 1 + garbage
    result = _read_back(tmp_path, blob, gz)
    if isinstance(result, np.ndarray):  # it worked: it must be what the header says
        assert result.shape == tuple(dims)


@pytest.mark.parametrize("gz", [False, True])
def test_a_well_formed_file_round_trips_through_the_bounded_reader(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if gz else "a")
    write_idx(path, arr)
    out = read_idx(path)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative and out.flags.writeable


# ----------------------------------------------------------------------------- IDX: bombs and limits
def _bomb(path, header, unpacked_bytes):
    """A gzip file of ``header`` followed by ``unpacked_bytes`` zeros, written in pieces."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
    with open(path, "wb") as f:
        f.write(z.compress(header))
        zeros = bytes(1 << 20)
        for _ in range(unpacked_bytes >> 20):
            f.write(z.compress(zeros))
        f.write(z.flush())


def test_a_gzip_bomb_is_stopped_after_the_declared_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _bomb(path, idx_header(0x08, (100, 28, 28)), 256 << 20)  # 256 MiB of zeros after 78 kB declared
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        result = returns(read_idx, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line_error(result, DataError, path, "trailing bytes", "need 78400 payload bytes, got more than")
    assert peak < 32 << 20, f"unpacked {peak} bytes of a bomb"


def test_a_header_declaring_more_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.gz"
    _bomb(path, idx_header(0x08, (60000, 600, 600)), 0)  # declares 21.6 GB
    result = returns(read_idx, path)
    one_line_error(result, DataError, path, "over cnnlab's limit", "CNNLAB_MAX_DATA_BYTES", "(60000, 600, 600)")
    small = tmp_path / "small"
    write_idx(small, np.zeros((10, 28, 28), np.uint8))  # 7,856 bytes
    one_line_error(returns(read_idx, small, max_bytes=7000), DataError, "over cnnlab's limit")
    monkeypatch.setenv("CNNLAB_MAX_DATA_BYTES", "7000")
    assert max_data_bytes() == 7000
    one_line_error(returns(read_idx, small), DataError, "over cnnlab's limit")
    assert read_idx(small, max_bytes=8000).shape == (10, 28, 28)  # the keyword wins over the variable
    monkeypatch.setenv("CNNLAB_MAX_DATA_BYTES", "lots")
    with pytest.raises(ValueError, match="CNNLAB_MAX_DATA_BYTES must be a positive whole number, got 'lots'"):
        read_idx(small)


def test_mnist_loads_within_the_default_limit():
    ds = load_mnist()
    assert ds.train_images.shape == (60000, 28, 28) and ds.train_images.flags.writeable


# ----------------------------------------------------------------------------- not regular files
def _not_regular_files(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    return [(fifo, "named pipe"), (tmp_path, "directory"), ("/dev/null", "device")]


@pytest.mark.parametrize("reader", [read_idx, to_mnist_form, open_image])
def test_pipes_devices_and_directories_are_refused_at_once(tmp_path, reader):
    for path, kind in _not_regular_files(tmp_path):
        result = returns(reader, path, fifo=path if kind == "named pipe" else None)
        one_line_error(result, DataError, path, kind, "not a regular file")


def test_a_pipe_among_the_mnist_files_does_not_hang(tmp_path):
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        write_idx(tmp_path / name, np.zeros((1,) if "labels" in name else (1, 28, 28), np.uint8))
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    result = returns(load_mnist, tmp_path, verify=False, fifo=tmp_path / "train-images-idx3-ubyte")
    one_line_error(result, DataError, tmp_path)


# ----------------------------------------------------------------------------- pictures
@pytest.mark.parametrize("width,height", [(100_000, 100_000), (20_000, 5_000)])
def test_a_picture_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, width, height):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(width, height))  # under 100 bytes
    result = returns(to_mnist_form, path)
    one_line_error(result, DataError, path, "pixels", "50 megapixels")


def test_the_pixel_limit_can_be_raised_or_lowered(tmp_path, monkeypatch):
    digit = np.zeros((100, 100), np.uint8)
    digit[20:80, 45:55] = 255
    Image.fromarray(digit).save(tmp_path / "d.png")
    one_line_error(returns(open_image, tmp_path / "d.png", max_pixels=9999), DataError, "100 x 100 pixels")
    assert open_image(tmp_path / "d.png", max_pixels=10_000).size == (100, 100)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "9_999")
    assert max_image_pixels() == 9999
    one_line_error(returns(to_mnist_form, tmp_path / "d.png"), DataError, "CNNLAB_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "10000")
    assert to_mnist_form(tmp_path / "d.png").max() == 255


def test_a_16_bit_scan_is_scaled_by_its_depth_not_clipped(tmp_path):
    scan = np.full((120, 90), 60000, np.uint16)  # paper
    scan[20:100, 40:52] = 20000  # ink
    Image.fromarray(scan).save(tmp_path / "scan16.png")
    assert Image.open(tmp_path / "scan16.png").mode == "I;16"
    eight = np.rint(scan / 257).astype(np.uint8)  # the same scan at 8 bits
    Image.fromarray(eight).save(tmp_path / "scan8.png")
    out16, out8 = to_mnist_form(tmp_path / "scan16.png"), to_mnist_form(tmp_path / "scan8.png")
    assert out16.max() == 255
    assert np.abs(out16.astype(int) - out8).max() <= 2
    for name in ("a", "b"):  # an image folder's plain (not MNIST-form) loading scales it the same way
        (tmp_path / name).mkdir()
        (tmp_path / name / "scan.png").write_bytes((tmp_path / "scan16.png").read_bytes())
    np.testing.assert_array_equal(ImageFolder(tmp_path, size=None).images[0], eight)


@pytest.mark.parametrize("mode,values", [("I", (-5000, 90000)), ("F", (0.1, 0.9)), ("F", (-3.0, 7.0))])
def test_32_bit_and_float_pictures_keep_their_contrast(tmp_path, mode, values):
    paper, ink = values[1], values[0]
    a = np.full((60, 60), paper, np.int32 if mode == "I" else np.float32)
    a[10:50, 27:33] = ink
    Image.fromarray(a, mode).save(tmp_path / "deep.tif")
    out = to_mnist_form(tmp_path / "deep.tif")
    assert out.max() == 255 and 0 < (out > 127).sum() < 28 * 28 // 2


def test_a_float_picture_with_nan_says_so(tmp_path):
    a = np.full((20, 20), np.nan, np.float32)
    Image.fromarray(a, "F").save(tmp_path / "nan.tif")
    one_line_error(returns(to_mnist_form, tmp_path / "nan.tif"), DataError, "nan.tif", "NaN")


@pytest.mark.parametrize("suffix", [".gif", ".png", ".tif"])
def test_an_animated_picture_warns_that_its_first_frame_is_used(tmp_path, suffix):
    first = np.zeros((40, 40), np.uint8)
    first[8:32, 18:22] = 255  # a "1"
    frames = [Image.fromarray(first), Image.fromarray(255 - first), Image.fromarray(first.T.copy())]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = to_mnist_form(path)
    notes = [w for w in caught if issubclass(w.category, FirstFrameWarning)]
    assert len(notes) == 1 and "has 3 frames; the first is used" in str(notes[0].message)
    np.testing.assert_array_equal(out, to_mnist_form(Image.fromarray(first)))


@pytest.mark.parametrize("blob", [b"", b"\x89PNG\r\n\x1a\n", png_header(0, 10), png_header(10, 10)[:40],
                                  b"GIF89a" + b"\xff" * 20, b"II*\x00" + b"\x00" * 20])
def test_broken_pictures_raise_one_data_error(tmp_path, blob):
    path = tmp_path / "broken.png"
    path.write_bytes(blob)
    one_line_error(returns(to_mnist_form, path), DataError, path)


# ----------------------------------------------------------------------------- folders
def _class_folder(root, name, n=3):
    (root / name).mkdir(parents=True)
    for i in range(n):
        digit = np.zeros((30, 30), np.uint8)
        digit[5:25, 12 + i:16 + i] = 255
        Image.fromarray(digit).save(root / name / f"{i}.png")


def test_a_folder_with_one_class_is_refused(tmp_path):
    _class_folder(tmp_path, "cats", 5)
    result = returns(load_dataset, str(tmp_path))
    one_line_error(result, DataError, tmp_path, "one class folder ('cats')", "at least two")


def test_a_folder_split_keeps_its_class_names(tmp_path):
    _class_folder(tmp_path, "b-dogs")
    _class_folder(tmp_path, "a-cats")
    split = load_folder_split(tmp_path)
    assert split.classes == ("a-cats", "b-dogs") and split.name == str(tmp_path)
    assert load_dataset("mnist").classes == tuple("0123456789")
