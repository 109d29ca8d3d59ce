"""What the demo's tests share: two small trained runs (the default net and the article's), and
pictures of digits: a drawn 7 and a photographed-looking digit on unevenly lit paper.

Not a conftest.py: tests/cli imports the top-level conftest by name (``from conftest import ...``),
and a second conftest.py would take that name. Each test module imports the fixture from here;
the runs are trained once per process however many modules ask.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

# A 7 as one stroke: across the top, then down to the lower left; (x, y) as fractions of the pad.
SEVEN = [(0.25, 0.22), (0.75, 0.22), (0.45, 0.85)]


TRAINED: dict = {}  # the runs trained in this process: a module importing the fixture gets its own copy of it


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """{"default": run dir, "article": run dir}: one epoch each on the first 4,000 and 10,000 MNIST
    images, enough that a clean drawn 7 reads as 7 (95.8% and 93.6% test accuracy). With
    CNNLAB_DEMO_RUNS=DEFAULT_RUN,ARTICLE_RUN these runs are used instead (docs/demo.png is taken
    with the full `cnnlab train` runs)."""
    from cnnlab import recipes, runs

    given = os.environ.get("CNNLAB_DEMO_RUNS")
    if given:
        default, article = (Path(d) for d in given.split(","))
        return {"default": default, "article": article}
    if not TRAINED:
        out = tmp_path_factory.mktemp("demo-runs")
        for name, size in (("default", 4000), ("article", 10000)):
            config = recipes.get(name).replace(epochs=1, train_size=size)
            TRAINED[name] = runs.train(config, out=out / name, progress=False, log=None).dir
    return dict(TRAINED)


def stroke_points(points, steps=10):
    """The points of a stroke through ``points``, ``steps`` per segment (as a mouse would move)."""
    out = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        out += [(x0 + (x1 - x0) * t / steps, y0 + (y1 - y0) * t / steps) for t in range(1, steps + 1)]
    return out


def drawn_png(points=SEVEN, side=280, width=20) -> bytes:
    """A digit drawn as the page's pad draws it: black round strokes on white, as PNG bytes."""
    img = Image.new("RGB", (side, side), "white")
    xy = [(x * side, y * side) for x, y in points]
    ImageDraw.Draw(img).line(xy, fill=(17, 17, 17), width=width, joint="curve")
    for x, y in (xy[0], xy[-1]):  # round caps
        ImageDraw.Draw(img).ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=(17, 17, 17))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def photo_jpeg(seed=0) -> bytes:
    """A photographed-looking 4: dark pen strokes on paper lit unevenly (brighter top left, a
    shadow towards the bottom right), sensor noise and a slight blur, saved as JPEG."""
    rng = np.random.default_rng(seed)
    w, h = 640, 480
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 238 - 45 * (xx / w) * 0.6 - 45 * (yy / h) * 0.8  # light falling off across the page
    rgb = np.stack([paper, paper * 0.97, paper * 0.9], axis=-1)  # warm paper
    strokes = Image.new("L", (w, h), 0)  # ink coverage, drawn upright, then turned a little
    d = ImageDraw.Draw(strokes)
    d.line([(330, 110), (255, 280), (390, 280)], fill=255, width=17, joint="curve")  # the 4's open corner
    d.line([(360, 170), (352, 380)], fill=255, width=17)  # its stem
    cover = np.asarray(strokes.rotate(4, resample=Image.Resampling.BILINEAR), dtype=np.float64)[..., None] / 255
    ink = np.array([40.0, 42.0, 55.0])
    img = Image.fromarray(np.clip(rgb * (1 - cover) + ink * cover, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(1.6))
    noisy = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, (h, w, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
