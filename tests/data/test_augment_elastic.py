"""Elastic distortion (gaussian_matrix / elastic_images / random_elastic, Augment(elastic=...)):
against naive loops of the definitions, its relation to the affine and shift transforms,
reproducibility, draw order, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab.data import (
    Augment,
    affine_images,
    elastic_images,
    gaussian_matrix,
    random_affine,
    random_elastic,
    shift_images,
)


def _naive_smooth(field, sigma):
    """Convolve a 2-D field with a Gaussian truncated at 4 sigma (taps normalised to sum 1),
    zeros beyond the edges: one output pixel at a time."""
    r = math.ceil(4 * sigma)
    taps = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-r, r + 1)]
    total = sum(taps)
    h, w = field.shape
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            acc = 0.0
            for i in range(-r, r + 1):
                for j in range(-r, r + 1):
                    if 0 <= y + i < h and 0 <= x + j < w:
                        acc += taps[i + r] * taps[j + r] / total**2 * field[y + i, x + j]
            out[y, x] = acc
    return out


def _naive_elastic(img, dy, dx, degrees, scale):
    """Bilinear sample, per output pixel, at R(-theta) (p - c) / scale + c + d(p); zero outside."""
    h, w = img.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    t = math.radians(degrees)
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            sx = (math.cos(t) * (x - cx) - math.sin(t) * (y - cy)) / scale + cx + dx[y, x]
            sy = (math.sin(t) * (x - cx) + math.cos(t) * (y - cy)) / scale + cy + dy[y, x]
            y0, x0 = math.floor(sy), math.floor(sx)
            acc = 0.0
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        acc += wy * wx * img[yy, xx]
            out[y, x] = acc
    return out


@pytest.mark.parametrize("sigma", [0.7, 1.5, 4.0])
def test_gaussian_matrix_smoothing_matches_naive_convolution(sigma):
    rng = np.random.default_rng(0)
    field = rng.uniform(-1, 1, size=(9, 13))
    smooth = gaussian_matrix(9, sigma) @ field @ gaussian_matrix(13, sigma).T
    np.testing.assert_allclose(smooth, _naive_smooth(field, sigma), atol=1e-12)
    g = gaussian_matrix(40, 2.0)
    np.testing.assert_allclose(g.sum(axis=1)[10:30], 1.0)  # rows away from the ends keep every tap
    np.testing.assert_allclose(g, g.T)


def test_elastic_matches_naive_definition():
    rng = np.random.default_rng(1)
    batch = rng.random((3, 10, 12))
    dy = rng.normal(0, 1.5, size=(3, 10, 12))
    dx = rng.normal(0, 1.5, size=(3, 10, 12))
    degrees, scales = [0.0, 12.0, -25.0], [1.0, 0.9, 1.2]
    out = elastic_images(batch, dy, dx, degrees, scales)
    for i in range(3):
        np.testing.assert_allclose(out[i], _naive_elastic(batch[i], dy[i], dx[i], degrees[i], scales[i]), atol=1e-12)


def test_elastic_relations_to_affine_and_shift():
    rng = np.random.default_rng(2)
    batch = rng.random((4, 2, 11, 11)).astype(np.float32)
    angles, zooms = rng.uniform(-15, 15, size=4), rng.uniform(0.9, 1.1, size=4)
    # no displacement: the affine transform, bit for bit
    assert elastic_images(batch, 0.0, 0.0, angles, zooms).tobytes() == affine_images(batch, angles, zooms).tobytes()
    # a constant whole-pixel displacement samples one pixel further: the content moves the other way
    np.testing.assert_array_equal(elastic_images(batch, 1.0, -2.0), shift_images(batch, -1, 2))
    # integer images are rounded and keep their dtype; channels share one field
    digits = (rng.random((2, 2, 8, 8)) * 255).astype(np.uint8)
    field = rng.normal(0, 1, size=(2, 8, 8))
    out = elastic_images(digits, field, field)
    assert out.dtype == np.uint8
    ref = _naive_elastic(digits[1, 1].astype(np.float64), field[1], field[1], 0.0, 1.0)
    np.testing.assert_array_less(np.abs(out[1, 1].astype(np.float64) - ref), 0.5 + 1e-4)


def test_random_elastic_is_reproducible_and_draws_after_the_affine_part():
    rng = np.random.default_rng(3)
    batch = (rng.random((6, 28, 28)) * 255).astype(np.uint8)
    a = random_elastic(batch, 34.0, 4.0, np.random.default_rng(7), max_degrees=10.0, max_scale=0.1)
    b = random_elastic(batch, 34.0, 4.0, np.random.default_rng(7), max_degrees=10.0, max_scale=0.1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, batch)
    # the same draws by hand: angles, zooms, then the two uniform fields, smoothed and scaled
    g = np.random.default_rng(7)
    angles, zooms = g.uniform(-10, 10, size=6), g.uniform(0.9, 1.1, size=6)
    field = 34.0 * (gaussian_matrix(28, 4.0) @ g.uniform(-1, 1, size=(2, 6, 28, 28)) @ gaussian_matrix(28, 4.0).T)
    np.testing.assert_array_equal(a, elastic_images(batch, field[0], field[1], angles, zooms))
    # strength 0 and no affine part leave the images as they were
    np.testing.assert_array_equal(random_elastic(batch, 0.0, 4.0, np.random.default_rng(0)), batch)


def test_elastic_displacement_is_about_a_pixel_for_the_recipe():
    # alpha 34, sigma 4 (Simard et al.): the centre pixel moves by about 1.4 px (standard deviation)
    g = gaussian_matrix(28, 4.0)
    field = 34.0 * (g @ np.random.default_rng(4).uniform(-1, 1, size=(4000, 28, 28)) @ g.T)
    expected = 34.0 * math.sqrt(1 / 3) * (g[14] ** 2).sum()  # sqrt(sum over the 2-D taps (g_i g_j)^2)
    assert field[:, 14, 14].std() == pytest.approx(expected, rel=0.05)
    assert 1.0 < expected < 2.0


def test_augment_with_elastic():
    rng = np.random.default_rng(5)
    batch = (rng.random((8, 28, 28)) * 255).astype(np.uint8)
    aug = Augment(max_shift=2, max_degrees=10.0, max_scale=0.1, elastic=34.0, elastic_sigma=4.0)
    out = aug(batch, np.random.default_rng(9))
    g = np.random.default_rng(9)
    by_hand = shift_images(random_elastic(batch, 34.0, 4.0, g, 10.0, 0.1), *g.integers(-2, 3, size=(2, 8)))
    np.testing.assert_array_equal(out, by_hand)
    # off by default, and then the affine-only path and its draws are as before
    assert Augment().elastic == 0
    np.testing.assert_array_equal(Augment(max_shift=0, max_degrees=10.0)(batch, np.random.default_rng(9)),
                                  random_affine(batch, 10.0, 0.0, np.random.default_rng(9)))


def test_elastic_errors_name_the_problem():
    batch = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="elastic must be >= 0"):
        Augment(elastic=-1.0)
    with pytest.raises(ValueError, match="elastic_sigma must be > 0"):
        Augment(elastic=30.0, elastic_sigma=0.0)
    with pytest.raises(ValueError, match="alpha"):
        random_elastic(batch, -1.0, 4.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sigma"):
        random_elastic(batch, 1.0, -4.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_matrix(5, 0.0)
    with pytest.raises(ValueError, match="displacement fields must broadcast"):
        elastic_images(batch, np.zeros((3, 8, 8)), 0.0)
