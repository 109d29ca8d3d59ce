"""The corruption benchmark's corruptions (cnnlab.data.corruptions): shapes, dtypes, determinism, and
that each does what its name says, on real MNIST test digits."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data import corruptions, load_dataset, shift_images


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist", validation=0).test[0][:40]


def _hf(x):
    """High-frequency energy: squared differences of neighbouring pixels, per image."""
    x = x.astype(np.float64) / 255
    return (np.diff(x, axis=-1) ** 2).sum(axis=(1, 2)) + (np.diff(x, axis=-2) ** 2).sum(axis=(1, 2))


def _ink(x, level=128):
    return (x >= level).sum(axis=(1, 2)).astype(np.float64)


@pytest.mark.parametrize("name", corruptions.names())
def test_each_corruption_is_deterministic_uint8_and_leaves_its_input(digits, name):
    before = digits.copy()
    a = corruptions.corrupt(name, digits, seed=3)
    assert a.shape == digits.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(digits, before)
    np.testing.assert_array_equal(a, corruptions.corrupt(name, digits, seed=3))
    assert not np.array_equal(a, digits)
    # the first images are corrupted alike whatever follows them, except where a corruption's draws
    # are per pixel over the whole batch (then the same seed gives the same batch only)
    assert corruptions.CORRUPTIONS[name].description


def test_random_corruptions_depend_on_the_seed_and_fixed_ones_do_not(digits):
    fixed = {"gaussian_blur", "thick", "thin", "lowres", "contrast", "brightness", "faint", "canny_edges"}
    for name in corruptions.names():
        same = np.array_equal(corruptions.corrupt(name, digits, 0), corruptions.corrupt(name, digits, 1))
        assert same == (name in fixed), name


@pytest.mark.parametrize("name", ["gaussian_blur", "motion_blur", "glass_blur", "lowres"])
def test_blurs_reduce_high_frequencies(digits, name):
    assert np.all(_hf(corruptions.corrupt(name, digits)) < 0.8 * _hf(digits))


def test_noise_adds_high_frequencies(digits):
    for name in ("gaussian_noise", "shot_noise", "impulse_noise"):
        assert _hf(corruptions.corrupt(name, digits)).mean() > 1.2 * _hf(digits).mean(), name
    imp = corruptions.corrupt("impulse_noise", digits)
    changed = imp != digits
    assert 0.05 < changed.mean() < 0.12 and set(np.unique(imp[changed])) <= {0, 255}


def test_thick_and_thin_change_the_ink_area(digits):
    assert np.all(_ink(corruptions.corrupt("thick", digits)) > 1.3 * _ink(digits))
    assert np.all(_ink(corruptions.corrupt("thin", digits)) < 0.9 * _ink(digits))


def test_contrast_kinds_set_their_levels(digits):
    c = corruptions.corrupt("contrast", digits)
    assert c.min() == round(0.35 * 255) and c.max() == round(0.65 * 255)
    b = corruptions.corrupt("brightness", digits)
    assert b.min() == round(0.4 * 255) and b.max() == 255
    f = corruptions.corrupt("faint", digits)
    assert f.max() == round(0.35 * 255)
    fog = corruptions.corrupt("fog", digits).astype(int)
    background = digits == 0
    assert fog[background].mean() > 40 and np.all(fog >= digits)


def _centre(x):
    x = x.astype(np.float64)
    ys, xs = np.indices(x.shape[1:])
    m = x.sum(axis=(1, 2))
    return np.stack([(x * ys).sum(axis=(1, 2)) / m, (x * xs).sum(axis=(1, 2)) / m], 1)


def test_translate_is_a_four_pixel_shift_each_way(digits):
    t = corruptions.corrupt("translate", digits)
    moved = _centre(t) - _centre(digits)
    signs = np.sign(np.round(moved))
    assert set(np.unique(signs)) == {-1.0, 1.0}
    for i in range(len(digits)):
        np.testing.assert_array_equal(t[i], shift_images(digits[i:i + 1], 4 * signs[i, 0], 4 * signs[i, 1])[0])


def test_geometry_keeps_ink_or_scales_it(digits):
    mass = digits.astype(np.float64).sum(axis=(1, 2))
    for name in ("rotate", "shear"):
        ratio = corruptions.corrupt(name, digits).astype(np.float64).sum(axis=(1, 2)) / mass
        assert np.all(np.abs(ratio - 1) < 0.15), name
    ratio = corruptions.corrupt("scale", digits).astype(np.float64).sum(axis=(1, 2)) / mass
    small, large = ratio < 1, ratio >= 1
    assert small.any() and large.any()
    np.testing.assert_allclose(ratio[small], 0.36, atol=0.06)  # 0.6 ** 2
    assert np.all(ratio[large] > 1.3)  # 1.3 ** 2 = 1.69, less what leaves the frame
    # a 30-degree turn moves the principal axis of a '1' by 30 degrees
    one = digits[np.flatnonzero(load_dataset("mnist", validation=0).test[1][:40] == 1)[:3]]
    r = corruptions.corrupt("rotate", one)

    def axis_angle(img):
        y, x = np.nonzero(img > 128)
        cov = np.cov(np.stack([x - x.mean(), y - y.mean()]))
        v = np.linalg.eigh(cov)[1][:, -1]
        return np.degrees(np.arctan2(v[1], v[0])) % 180

    turned = [abs((axis_angle(r[i]) - axis_angle(one[i]) + 90) % 180 - 90) for i in range(len(one))]
    np.testing.assert_allclose(turned, 30, atol=6)


def test_clutter_adds_ink_and_edges_are_outlines(digits):
    for name in ("dotted_line", "zigzag"):
        out = corruptions.corrupt(name, digits)
        assert np.all(out >= digits) and np.all(_ink(out) >= _ink(digits)), name
        assert np.mean(_ink(out) >= _ink(digits) + 4) > 0.9, name
    edges = corruptions.corrupt("canny_edges", digits)
    assert set(np.unique(edges)) == {0, 255}
    solid = digits >= 200
    assert (edges[solid] == 255).mean() < 0.3  # the strokes' insides are dark: only their edges are drawn


def test_bad_input_is_refused_in_one_line(digits):
    with pytest.raises(ValueError, match="unknown corruption 'smudge'"):
        corruptions.corrupt("smudge", digits)
    with pytest.raises(TypeError, match="uint8"):
        corruptions.corrupt("thick", digits.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        corruptions.corrupt("thick", digits[0])
