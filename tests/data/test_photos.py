"""Digits photographed under real light (tests/photos.py makes them): every condition converts,
close to the same digit photographed on flat white paper; and the line between a digit and no
digit."""

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import DataError, convert_digit, load_mnist, to_mnist_form
from photos import CONDITIONS, font_ink, mnist_ink, photograph


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_photographed_digit_converts_as_on_flat_paper(mnist, condition):
    inks = [mnist_ink(mnist.test_images[0])]
    glyph = font_ink("4")
    if glyph is not None:
        inks.append(glyph)
    rng = np.random.default_rng(1)
    for i, ink in enumerate(inks):
        clean = to_mnist_form(photograph(ink, "clean", rng))
        out = convert_digit(photograph(ink, condition, rng))
        assert out.polarity == ("light ink on dark" if condition == "light-on-dark" else "dark ink on light")
        # a shadow's corner cut off by the frame can pass for ink (docs/photos.md): a lower bar there
        assert _correlation(out.form, clean) > (0.7 if condition == "shadow" else 0.8), (condition, i)


def test_the_old_rules_failures_convert(mnist):
    # The cases: a vignette darker than the page at the border (the old rule did not invert),
    # and a gradient whose spread hid the ink under the noise floor.
    ink = mnist_ink(mnist.test_images[0])
    rng = np.random.default_rng(0)
    for condition in ("vignette", "gradient", "shadow"):
        assert convert_digit(photograph(ink, condition, rng)).form.max() == 255


def test_steps_have_the_pictures_shape_and_end_with_the_form(mnist):
    photo = photograph(mnist_ink(mnist.test_images[1]), "gradient", np.random.default_rng(0))
    out = convert_digit(photo)
    assert out.gray.shape == out.background.shape == out.flat.shape == out.mask.shape == (260, 320)
    assert np.array_equal(out.steps[-1][1], out.form) and out.form.shape == (28, 28)
    assert max(out.scaled.shape) == 20
    big = photo.resize((1600, 1300))  # shrunk to the working size first
    assert max(convert_digit(big).gray.shape) == 512


@pytest.mark.parametrize("paper", [30, 128, 230])
def test_blank_and_flat_pictures_have_no_digit(paper):
    rng = np.random.default_rng(0)
    flat = Image.fromarray(np.clip(paper + rng.normal(0, 4, (120, 160)), 0, 255).astype(np.uint8))
    with pytest.raises(DataError, match="no digit found"):
        convert_digit(flat)
    yy, xx = np.mgrid[0:120, 0:160]  # a lighting gradient and a vignette, but no ink
    lit = paper * (0.5 + 0.5 * xx / 160) * (1 - 0.4 * ((yy - 60) ** 2 + (xx - 80) ** 2) / 10000)
    with pytest.raises(DataError, match="no digit found"):
        convert_digit(Image.fromarray(lit.astype(np.uint8)))
