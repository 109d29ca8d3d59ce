"""The pictures that to_mnist_form and to_fashion_form make on their way (``steps=``), as the live
demo shows them; and models.shared_weights_line, which `cnnlab summary` and the demo print."""

import numpy as np
from PIL import Image, ImageDraw

from cnnlab import models
from cnnlab.data import to_fashion_form, to_mnist_form


def _dark_one_on_paper() -> Image.Image:
    img = Image.new("L", (120, 90), 230)
    ImageDraw.Draw(img).line([(60, 10), (60, 80)], fill=20, width=8)
    return img


def test_mnist_steps_end_with_the_result_and_change_nothing():
    steps = []
    out = to_mnist_form(_dark_one_on_paper(), steps=steps)
    assert np.array_equal(out, to_mnist_form(_dark_one_on_paper()))
    captions = [c for c, _ in steps]
    assert captions[0] == "grayscale" and len(steps) == 6
    assert all(a.dtype == np.uint8 for _, a in steps)
    gray, page, flat, mask, small, last = (a for _, a in steps)
    assert gray.shape == page.shape == flat.shape == mask.shape == (90, 120)
    assert page[45, 60] > 200  # the page under the ink: the stroke closed over
    assert gray[45, 60] < 50 and flat[45, 60] == 255 and flat[5, 5] == 0  # inverted: light ink on black
    assert mask[45, 60] == 255 and mask[5, 5] == 0
    assert max(small.shape) == 20
    assert np.array_equal(last, out)


def test_fashion_steps_end_with_the_result():
    steps = []
    out = to_fashion_form(_dark_one_on_paper(), steps=steps)
    assert len(steps) == 4 and np.array_equal(steps[-1][1], out)
    assert max(steps[2][1].shape) == 28


def test_shared_weights_line():
    line = models.shared_weights_line(models.build("article"))
    assert "1,728 neurons" in line and "share 78 parameters" in line and "17,391x more" in line
    assert models.shared_weights_line(models.build("nielsen-fc")) is None
