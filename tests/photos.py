"""Synthetic photographs of digits: ink on paper under the light a phone camera sees.

A digit's ink (an MNIST digit enlarged, or a glyph of a TrueType font) is laid on paper as
reflectance, lit by an illumination field (a gradient, a vignette, a side shadow), then the
camera's faults are added (noise, blur, JPEG). Used by tests/data/test_photos.py and by
benchmarks/bench_photos.py, which measures how many a trained run reads right per condition.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Each condition, as a user would describe the photo.
CONDITIONS = ("clean", "gradient", "vignette", "shadow", "coloured", "jpeg", "noise", "blur", "border",
              "light-on-dark", "everything")

FONTS = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
         Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"),
         Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"),
         Path("/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf")]


def mnist_ink(digit: np.ndarray, side: int = 200) -> np.ndarray:
    """An MNIST digit (28x28 uint8, white on black) as an ink coverage map in [0, 1], enlarged to
    ``side`` pixels square (bicubic, as a pen's soft edge)."""
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, dtype=np.float64) / 255.0, 0.0, 1.0)


def font_ink(char: str, font: Path | None = None, side: int = 200) -> np.ndarray | None:
    """A typeset character as an ink coverage map ``side`` pixels tall; None when no font is
    installed (the tests that need one skip)."""
    fonts = [font] if font is not None else FONTS
    path = next((f for f in fonts if f.exists()), None)
    if path is None:
        return None
    face = ImageFont.truetype(str(path), int(side * 0.9))
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=face)
    draw.text(((side - (right - left)) / 2 - left, (side - (bottom - top)) / 2 - top), char, fill=255, font=face)
    return np.asarray(img, dtype=np.float64) / 255.0


def photograph(ink: np.ndarray, condition: str, rng: np.random.Generator, size=(320, 260)) -> Image.Image:
    """The ink on paper, photographed under ``condition`` (one of CONDITIONS); an RGB picture of
    ``size`` (width, height), the digit somewhere inside it (touching an edge for "border")."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose one of {', '.join(CONDITIONS)}")
    w, h = size
    ih, iw = ink.shape
    a = np.zeros((h, w))
    if condition == "border":  # the digit runs off one edge of the picture
        side = rng.integers(4)
        top = {0: -ih // 8, 1: h - ih + ih // 8}.get(side, int(rng.integers(0, h - ih)))
        left = {2: -iw // 8, 3: w - iw + iw // 8}.get(side, int(rng.integers(0, w - iw)))
    else:
        top, left = int(rng.integers(0, h - ih)), int(rng.integers(0, w - iw))
    ys, xs = slice(max(top, 0), min(top + ih, h)), slice(max(left, 0), min(left + iw, w))
    a[ys, xs] = ink[ys.start - top: ys.stop - top, xs.start - left: xs.stop - left]
    a = a[..., None]
    paper, pen = np.array([0.92, 0.91, 0.88]), np.array([0.08, 0.08, 0.16])  # white paper, blue-black ink
    if condition in ("coloured", "everything"):
        paper = np.array([[0.95, 0.85, 0.45], [0.95, 0.70, 0.75], [0.60, 0.80, 0.95],
                          [0.70, 0.90, 0.65]][rng.integers(4)])
        pen = np.array([[0.10, 0.15, 0.55], [0.45, 0.10, 0.10], [0.10, 0.10, 0.10]][rng.integers(3)])
    if condition == "light-on-dark":  # chalk on a blackboard, white on a screen
        paper, pen = np.array([0.12, 0.16, 0.14]), np.array([0.85, 0.85, 0.82])
    reflectance = paper * (1.0 - a) + pen * a
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = np.full((h, w), 0.95)
    if condition in ("gradient", "everything", "light-on-dark", "jpeg"):
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        low = 0.55 if condition == "everything" else 0.3
        light = light * (low + (1.0 - low) * ramp)  # from 30% to full light across the page
    if condition in ("vignette", "everything"):
        cy, cx = h / 2 / max(h, w), w / 2 / max(h, w)
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (cy ** 2 + cx ** 2)
        light = light * (1.0 - (0.5 if condition == "everything" else 0.75) * r2)  # corners: a quarter of the light
    if condition in ("shadow", "everything"):
        angle = rng.uniform(0, 2 * np.pi)
        edge = np.cos(angle) * (xx - xx.mean()) + np.sin(angle) * (yy - yy.mean()) - rng.uniform(-0.15, 0.15)
        soft = 1.0 / (1.0 + np.exp(-edge / 0.01))  # a hand's or phone's shadow, its edge a few pixels soft
        light = light * (1.0 - (0.45 if condition == "everything" else 0.6) * soft)
    pixels = 255.0 * reflectance * light[..., None]
    if condition in ("noise", "everything"):
        pixels = pixels + rng.normal(0.0, 12.0 if condition == "noise" else 6.0, pixels.shape)
    img = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    if condition in ("blur", "everything"):
        img = img.filter(ImageFilter.GaussianBlur(4 if condition == "blur" else 2))
    if condition in ("jpeg", "everything"):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=20 if condition == "jpeg" else 40)
        img = Image.open(io.BytesIO(buf.getvalue()))
        img.load()
    return img
