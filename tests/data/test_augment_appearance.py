"""Appearance augmentation (stroke width, blur, low resolution, contrast, noise; Augment(stroke=...,
blur=..., lowres=..., contrast=..., noise=...)): against naive loops or SciPy, what each does to
digits, the probabilities, reproducibility, sharded draws, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from cnnlab.data import (
    Augment,
    RowsOf,
    blur_images,
    contrast_images,
    lowres_images,
    random_blur,
    random_contrast,
    random_lowres,
    random_noise,
    random_stroke,
    resample_matrix,
    stroke_images,
)
from cnnlab.errors import SettingError


def _digits(n=6, seed=0):
    """Small white-on-black float 'digits': a few thick random strokes on 20x20."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 20, 20), np.float32)
    for i in range(n):
        r, c = rng.integers(4, 16, 2)
        x[i, 0, r - 1:r + 2, 3:17] = 1.0
        x[i, 0, 3:17, c - 1:c + 1] = 0.8
    return x


def _high_frequency_energy(x):
    """Energy of the images' differences between neighbouring pixels."""
    return float((np.diff(x, axis=-1) ** 2).sum() + (np.diff(x, axis=-2) ** 2).sum())


def test_stroke_extremes_are_grey_dilation_and_erosion_and_zero_is_identity():
    x = np.random.default_rng(1).random((3, 2, 9, 8)).astype(np.float64)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    dil = ndimage.grey_dilation(x, footprint=np.ones((1, 1, 3, 3), bool), mode="constant", cval=0.0)
    ero = ndimage.grey_erosion(x, footprint=cross[None, None], mode="constant", cval=0.0)
    np.testing.assert_allclose(stroke_images(x, 1.0), dil)
    np.testing.assert_allclose(stroke_images(x, -1.0), ero)
    np.testing.assert_array_equal(stroke_images(x, 0.0), x)
    np.testing.assert_allclose(stroke_images(x, np.array([0.5, -0.25, 0.0])),
                               np.stack([0.5 * x[0] + 0.5 * dil[0], 0.75 * x[1] + 0.25 * ero[1], x[2]]))


def test_stroke_width_moves_ink_area_monotonically():
    x = _digits()
    areas = [float((stroke_images(x, a) > 0.5).mean()) for a in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    assert areas == sorted(areas) and areas[0] < areas[2] < areas[-1]


def _naive_blur(img, sy, sx):
    h, w = img.shape
    ky = [math.exp(-0.5 * (k / sy) ** 2) for k in range(-(h - 1), h)]
    kx = [math.exp(-0.5 * (k / sx) ** 2) for k in range(-(w - 1), w)]
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            out[y, x] = sum(ky[i - y + h - 1] * kx[j - x + w - 1] * img[i, j] for i in range(h) for j in range(w))
    return out / (sum(ky) * sum(kx))


def test_blur_matches_a_naive_convolution_and_scipy():
    x = np.random.default_rng(2).random((2, 1, 7, 9))
    out = blur_images(x, np.array([0.8, 1.5]), np.array([1.2, 0.0]))
    np.testing.assert_allclose(out[0, 0], _naive_blur(x[0, 0], 0.8, 1.2), atol=1e-12)
    np.testing.assert_allclose(out[1, 0], ndimage.gaussian_filter1d(x[1, 0], 1.5, axis=0, mode="constant",
                                                                     truncate=6 / 1.5), atol=1e-9)
    np.testing.assert_array_equal(blur_images(x, 0.0, 0.0), x)


def test_blur_and_lowres_remove_high_frequencies():
    x = _digits()
    e = _high_frequency_energy(x)
    assert _high_frequency_energy(blur_images(x, 1.0, 1.0)) < 0.5 * e
    assert _high_frequency_energy(lowres_images(x, 8)) < 0.6 * e


def test_resample_matrix_is_area_down_then_linear_up():
    np.testing.assert_allclose(resample_matrix(6, 6), np.eye(6), atol=1e-12)
    r = resample_matrix(6, 3)  # pairs averaged, then linear interpolation between the 3 samples
    v = np.array([0.0, 2.0, 4.0, 4.0, 1.0, 1.0])
    small = np.array([1.0, 4.0, 1.0])
    pos = np.clip((np.arange(6) + 0.5) / 2 - 0.5, 0, 2)
    np.testing.assert_allclose(r @ v, np.interp(pos, np.arange(3), small), atol=1e-12)
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    np.testing.assert_allclose(resample_matrix(7, 1), np.full((7, 7), 1 / 7))


def test_lowres_applies_its_matrix_per_image():
    x = np.random.default_rng(3).random((3, 2, 8, 8))
    out = lowres_images(x, np.array([4, 8, 3]))
    for i, m in enumerate((4, 8, 3)):
        r = resample_matrix(8, m)
        np.testing.assert_allclose(out[i], r @ x[i] @ r.T, atol=1e-12)


def test_contrast_maps_levels():
    x = np.array([[[0.0, 0.25, 1.0]]])
    np.testing.assert_allclose(contrast_images(x, 0.3, 0.7, 2.0), [[[0.3, 0.3 + 0.4 / 16, 0.7]]])
    np.testing.assert_array_equal(contrast_images(x, 0.0, 1.0, 1.0), x)
    u8 = np.array([[[0, 255]]], np.uint8)
    np.testing.assert_array_equal(contrast_images(u8, 0.2, 0.6, 1.0), [[[51, 153]]])


@pytest.mark.parametrize("change", [random_stroke, random_blur, random_lowres, random_contrast, random_noise])
def test_random_changes_touch_a_fraction_p_and_are_reproducible(change):
    x = np.repeat(_digits(1), 400, axis=0)
    a = change(x, 0.3, np.random.default_rng(5))
    b = change(x, 0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    changed = np.any(a != x, axis=(1, 2, 3)).mean()
    assert 0.2 < changed < 0.4
    np.testing.assert_array_equal(change(x, 0.0, np.random.default_rng(5)), x)
    assert 0.0 <= a.min() and a.max() <= 1.0
    with pytest.raises(ValueError, match="probability must be in"):
        change(x, 1.5, np.random.default_rng(5))


def test_noise_has_the_drawn_spread_and_uint8_works():
    x = np.full((1000, 1, 24, 24), 0.5, np.float32)
    out = random_noise(x, 1.0, np.random.default_rng(0))
    sd = (out - x).std(axis=(1, 2, 3))  # each image's sd is drawn uniform in [0, 0.25]; the noise never clips
    assert sd.max() <= 0.25 * 1.1 and 0.115 < sd.mean() < 0.135 and 0.2 < np.mean(sd < 0.25 / 4) < 0.3
    u8 = random_noise(np.full((4, 5, 5), 128, np.uint8), 1.0, np.random.default_rng(0))
    assert u8.dtype == np.uint8 and u8.shape == (4, 5, 5)


def test_augment_appearance_options_draw_after_the_old_ones_and_shard_like_the_whole_batch():
    x = np.repeat(_digits(4), 4, axis=0)  # 16 images
    aug = Augment(max_shift=2, stroke=0.5, blur=0.5, lowres=0.5, contrast=0.5, noise=0.5)
    assert aug.active and aug.appearance and "lowres p=0.5" in aug.describe()
    whole = aug(x, np.random.default_rng(9))
    np.testing.assert_array_equal(whole, aug(x, np.random.default_rng(9)))
    # the shift's draws come first: the same shifts as Augment(max_shift=2) alone
    rng = np.random.default_rng(9)
    shifted = Augment(max_shift=2)(x, rng)
    assert not np.array_equal(whole, shifted)
    # two shards of the batch, each drawing the whole batch's numbers, give the whole batch
    parts = []
    for start, stop in ((0, 7), (7, 16)):
        parts.append(aug(x[start:stop], RowsOf(np.random.default_rng(9), 16, start, stop)))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("name", ["stroke", "blur", "lowres", "contrast", "noise"])
def test_augment_refuses_a_probability_out_of_range(name):
    with pytest.raises(SettingError, match=name):
        Augment(**{name: 1.5})
    with pytest.raises(SettingError, match=name):
        Augment(**{name: True})
