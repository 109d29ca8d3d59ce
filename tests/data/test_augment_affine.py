"""Random zoom (affine_images / random_affine) and random erasing (erase_images / random_erase):
against naive per-pixel loops of their definitions, reproducibility, draw order and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab.data import (
    Augment,
    affine_images,
    erase_images,
    random_affine,
    random_erase,
    random_rotate,
    rotate_images,
)


def _naive_affine(img, degrees, scale):
    """Bilinear sample, per output pixel, at R(-theta) (p - c) / scale + c; zero outside."""
    h, w = img.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    t = math.radians(degrees)
    out = np.zeros_like(img, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            dx, dy = x - cx, y - cy
            sx = (math.cos(t) * dx - math.sin(t) * dy) / scale + cx
            sy = (math.sin(t) * dx + math.cos(t) * dy) / scale + cy
            y0, x0 = math.floor(sy), math.floor(sx)
            fy, fx = sy - y0, sx - x0
            acc = 0.0
            for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                    if 0 <= yy < h and 0 <= xx < w:
                        acc += wy * wx * img[yy, xx]
            out[y, x] = acc
    return out


def test_affine_matches_naive_definition():
    rng = np.random.default_rng(0)
    batch = rng.random((4, 9, 11))
    degrees = [0.0, 17.0, -8.5, 33.0]
    scales = [1.3, 0.8, 1.0, 1.11]
    out = affine_images(batch, degrees, scales)
    for i in range(4):
        np.testing.assert_allclose(out[i], _naive_affine(batch[i], degrees[i], scales[i]), atol=1e-12)


def test_affine_scale_one_is_rotation_bit_for_bit_and_zoom_grows_content():
    rng = np.random.default_rng(1)
    batch = rng.random((5, 2, 12, 12)).astype(np.float32)
    angles = rng.uniform(-20, 20, size=5)
    assert affine_images(batch, angles, 1.0).tobytes() == rotate_images(batch, angles).tobytes()
    square = np.zeros((1, 28, 28), np.float32)
    square[0, 10:18, 10:18] = 1.0  # centred 8x8: zoom 2 makes it 16x16, zoom 0.5 makes it 4x4
    assert int((affine_images(square, 0.0, 2.0) > 0.5).sum()) == 16 * 16
    assert int((affine_images(square, 0.0, 0.5) > 0.5).sum()) == 4 * 4
    u8 = (batch * 255).astype(np.uint8)
    assert affine_images(u8, 5.0, 1.1).dtype == np.uint8
    with pytest.raises(ValueError, match="scale must be > 0"):
        affine_images(batch, 0.0, 0.0)
    with pytest.raises(ValueError, match="scale"):
        affine_images(batch, 0.0, [1.0, 2.0])


def test_random_affine_draws_angles_then_zooms():
    batch = np.random.default_rng(2).random((6, 10, 10)).astype(np.float32)
    # without zoom it is random_rotate exactly (same draws, same values)
    assert (random_affine(batch, 12.0, 0.0, np.random.default_rng(3)).tobytes()
            == random_rotate(batch, 12.0, np.random.default_rng(3)).tobytes())
    rng = np.random.default_rng(4)
    angles = rng.uniform(-12.0, 12.0, size=6)
    scales = rng.uniform(0.85, 1.15, size=6)
    np.testing.assert_array_equal(random_affine(batch, 12.0, 0.15, np.random.default_rng(4)),
                                  affine_images(batch, angles, scales))
    zoom_only = random_affine(batch, 0.0, 0.15, np.random.default_rng(5))
    np.testing.assert_array_equal(zoom_only, affine_images(batch, 0.0, np.random.default_rng(5).uniform(0.85, 1.15, 6)))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="max_scale"):
            random_affine(batch, 0.0, bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_degrees"):
        random_affine(batch, -1.0, 0.1, np.random.default_rng(0))


def test_erase_images_matches_naive_loop():
    rng = np.random.default_rng(6)
    batch = rng.random((4, 3, 7, 8)).astype(np.float32) + 0.5
    top, left, height, width = [1, 0, 5, 2], [2, 6, 0, 0], [3, 7, 9, 0], [4, 5, 1, 3]
    out = erase_images(batch, top, left, height, width)
    expect = batch.copy()
    for i in range(4):
        for y in range(7):
            for x in range(8):
                if top[i] <= y < top[i] + height[i] and left[i] <= x < left[i] + width[i]:
                    expect[i, :, y, x] = 0
    np.testing.assert_array_equal(out, expect)
    assert out.dtype == batch.dtype and out.shape == batch.shape
    np.testing.assert_array_equal(batch[3], out[3])  # width 0: untouched
    assert erase_images(batch[:, 0], top, left, height, width).shape == (4, 7, 8)


def test_random_erase_rectangles_and_reproducibility():
    batch = np.random.default_rng(7).random((400, 28, 28)).astype(np.float32) + 0.5  # no zeros before
    out = random_erase(batch, np.random.default_rng(8), p=0.5)
    assert out.tobytes() == random_erase(batch, np.random.default_rng(8), p=0.5).tobytes()
    zeros = out == 0
    erased = zeros.any(axis=(1, 2))
    assert 150 < erased.sum() < 250  # about half of 400
    for z in zeros[erased]:
        rows, cols = np.flatnonzero(z.any(1)), np.flatnonzero(z.any(0))
        # one solid rectangle, within the area bounds (up to rounding of the sides)
        assert z.sum() == len(rows) * len(cols) and z[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert 0.01 * 784 <= z.sum() <= 0.30 * 784
    np.testing.assert_array_equal(out[~erased], batch[~erased])
    np.testing.assert_array_equal(random_erase(batch, np.random.default_rng(0), p=0.0), batch)
    assert (random_erase(batch, np.random.default_rng(0), p=1.0) == 0).any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="probability"):
        random_erase(batch, np.random.default_rng(0), p=1.5)
    with pytest.raises(ValueError, match="area"):
        random_erase(batch, np.random.default_rng(0), area=(0.5, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        random_erase(batch, np.random.default_rng(0), ratio=(0.0, 1.0))


def test_augment_zoom_and_erase_keep_earlier_draws():
    batch = np.random.default_rng(9).random((16, 28, 28)).astype(np.float32) + 0.5
    base = Augment(max_shift=2, max_degrees=10.0)(batch, np.random.default_rng(10))
    with_erase = Augment(max_shift=2, max_degrees=10.0, erase=1.0)(batch, np.random.default_rng(10))
    kept = with_erase != 0
    np.testing.assert_array_equal(with_erase[kept], base[kept])  # erasing only zeroes, drawn last
    assert (with_erase == 0).sum() > (base == 0).sum()
    zoom = Augment(max_shift=0, max_degrees=10.0, max_scale=0.1)(batch, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    angles = rng.uniform(-10, 10, 16)
    np.testing.assert_array_equal(zoom, affine_images(batch, angles, rng.uniform(0.9, 1.1, 16)))
    assert Augment().max_scale == 0 and Augment().erase == 0
    with pytest.raises(ValueError, match="max_scale"):
        Augment(max_scale=1.5)
    with pytest.raises(ValueError, match="erase"):
        Augment(erase=-0.1)
