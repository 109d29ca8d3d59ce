"""The demo in a real browser: headless Chromium driven by Playwright, against `cnnlab serve`'s app
on a free loopback port. A 7 drawn with the mouse (and with a finger on a phone-sized screen), a
photographed digit uploaded, bad uploads, switching runs; every picture on the page read back
pixel by pixel to see that it was drawn.

Skipped only without Playwright (pip install playwright) or Chromium (apt-get install chromium;
found on PATH, or at $CNNLAB_CHROMIUM). Set CNNLAB_SCREENSHOTS=DIR to keep the screenshots, and
the picture docs/demo.png is made of (DIR/demo.png).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
from playwright.sync_api import expect, sync_playwright  # noqa: E402
from serve_helpers import SEVEN, photo_jpeg, png_bytes, stroke_points  # noqa: E402

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"Chromium is not installed (no {CHROMIUM}; "
                                                            "apt-get install chromium)"),
]
DESKTOP = {"width": 1280, "height": 1000}
PHONE = {"width": 390, "height": 844}
MAX_PIXELS = 4_000_000
WAIT_MS = 30_000  # for an answer; the first one on a busy machine may be slow


@pytest.fixture(scope="module")
def url(demo_runs):
    """The demo serving the default net (run 0) and the article's (run 1), in a thread."""
    import uvicorn

    from cnnlab.serve.app import LOOPBACK_HOSTS, create_app

    app = create_app([demo_runs["default"], demo_runs["article"]], max_pixels=MAX_PIXELS,
                     trusted_hosts=LOOPBACK_HOSTS)
    # a free port, loopback only; IPPROTO_TCP named as in uvicorn's own sockets, for which asyncio
    # turns Nagle's algorithm off (else some answers wait 40 ms for the browser's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where screenshots go; at the end, desktop and phone side by side as demo.png."""
    folder = Path(os.environ.get("CNNLAB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    if (folder / "desktop.png").exists() and (folder / "phone.png").exists():
        compose(folder / "desktop.png", folder / "phone.png", folder / "demo.png")


def compose(desktop: Path, phone: Path, out: Path) -> None:
    """The two viewport screenshots side by side, shrunk, as a small PNG (for the README)."""
    from PIL import Image

    d, p = Image.open(desktop).convert("RGB"), Image.open(phone).convert("RGB")
    gap = 24
    canvas = Image.new("RGB", (d.width + gap + p.width + 2 * gap, max(d.height, p.height) + 2 * gap), (214, 220, 229))
    canvas.paste(d, (gap, gap))
    canvas.paste(p, (d.width + 2 * gap, gap))
    canvas = canvas.resize((canvas.width * 3 // 4, canvas.height * 3 // 4), Image.Resampling.LANCZOS)
    canvas.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)


@pytest.fixture()
def page(browser, url):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    expect(page.locator("#runs button")).to_have_count(2)
    yield page
    context.close()
    assert not errors, errors  # no script error on the page


def draw(page, points, steps=10):
    """Move the mouse along a stroke on the drawing pad, button down."""
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke_points(points, steps)]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for p in xy[1:]:
        page.mouse.move(*p)
    page.mouse.up()


def finger(page, points, steps=10):
    """The same stroke with a finger: touch events, which Chromium turns into pointer events."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke_points(points, steps)]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": xy[0][0], "y": xy[0][1]}]})
    for x, y in xy[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


# Per canvas: its size and how many distinct colours it shows, the mosaics' gaps (#c9dcec) not
# counted: a blank or constant picture has at most one.
CANVAS_LEVELS = """(selector) => [...document.querySelectorAll(selector)].map((c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const levels = new Set();
  for (let i = 0; i < d.length; i += 4) {
    const rgb = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    if (rgb !== 0xc9dcec) levels.add(rgb);
  }
  return {width: c.width, height: c.height, levels: levels.size};
})"""


def wait_for_answer(page, name):
    expect(page.locator("#prediction")).to_have_text(name, timeout=WAIT_MS)
    expect(page.locator("#timing")).to_contain_text("ms on the server")


def test_a_drawn_seven_is_read_as_seven_and_every_map_is_drawn(page, url, shots):
    draw(page, SEVEN)
    wait_for_answer(page, "7")
    bars = page.locator("#bars li")
    expect(bars).to_have_count(10)
    expect(page.locator("#bars li.top")).to_contain_text("7")
    # every conv, pooling and activation layer the server computed has its panel, and each is drawn
    answer = page.request.get(url + "api/runs/0").json()
    expect(page.locator("#layers .layer")).to_have_count(6)
    for c in page.evaluate(CANVAS_LEVELS, "#layers canvas.mosaic"):
        assert c["width"] > 20 and c["levels"] > 2, c
    for selector in ("#input", "#probe-input", "#gradcam", "#filters", "#steps canvas"):
        drawn = page.evaluate(CANVAS_LEVELS, selector)
        if selector == "#steps canvas":  # the page's light, estimated on a blank white canvas, is flat
            drawn = drawn[:1] + drawn[2:]
        assert drawn and all(c["levels"] > 2 for c in drawn), (selector, drawn)
    expect(page.locator("#steps figure")).to_have_count(6)  # the 6 steps of the conversion
    expect(page.locator("#net-card")).to_contain_text(f"{answer['parameters']:,}")
    expect(page.locator("#shared")).to_contain_text("share 800 parameters")
    expect(page.locator("#gradcam-caption")).to_contain_text("Grad-CAM")
    # a unit of the first conv layer: its 5x5 receptive field lights up over the input
    first = page.locator("#layers canvas.mosaic").first
    box = first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.3)
    expect(page.locator("#probe-text")).to_contain_text("5×5 receptive field")
    lit = page.evaluate("""() => { const c = document.querySelector('.probe canvas.field');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n / (c.width * c.height); }""")
    assert 0.01 < lit < 0.1  # about 5x5 of 28x28 pixels
    page.screenshot(path=shots / "desktop.png")
    page.screenshot(path=shots / "desktop-full.png", full_page=True)


def test_a_photographed_digit(page):
    page.locator("#file").set_input_files({"name": "digit.jpg", "mimeType": "image/jpeg", "buffer": photo_jpeg()})
    wait_for_answer(page, "4")
    expect(page.locator("#steps img")).to_have_attribute("alt", "your photo")
    expect(page.locator("#steps figure")).to_have_count(7)  # the photo and the 6 steps of the conversion
    assert page.evaluate("() => document.querySelector('#steps img').naturalWidth") == 640
    assert all(c["levels"] > 2 for c in page.evaluate(CANVAS_LEVELS, "#layers canvas.mosaic"))
    expect(page.locator("#message")).to_be_hidden()


@pytest.mark.parametrize("name, content, words", [
    ("digit.png", b"This is a text file, renamed to digit.png.\n", "not a picture cnnlab can read"),
    ("huge.png", "oversize", f"the limit is {MAX_PIXELS // 10**6} megapixels"),
    ("empty.png", b"", "the file is empty"),
])
def test_a_bad_upload_shows_an_error_in_the_page(page, name, content, words):
    from PIL import Image

    if content == "oversize":  # 5 megapixels, a few kilobytes
        content = png_bytes(Image.new("L", (2500, 2000), 255))
    draw(page, SEVEN)
    wait_for_answer(page, "7")
    page.locator("#file").set_input_files({"name": name, "mimeType": "image/png", "buffer": content})
    message = page.locator("#message")
    expect(message).to_be_visible(timeout=WAIT_MS)
    expect(message).to_contain_text(words)
    expect(page.locator("#answer-card")).to_have_class("card stale")  # the old answer is greyed out
    assert "Traceback" not in page.content()
    draw(page, SEVEN)  # drawing again clears the error
    expect(message).to_be_hidden(timeout=WAIT_MS)


def test_switching_to_the_article_net(page):
    draw(page, SEVEN)
    wait_for_answer(page, "7")
    page.locator("#runs button", has_text="article").click()
    expect(page.locator("#runs button", has_text="article")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#net-card")).to_contain_text("4,408")
    expect(page.locator("#shared")).to_contain_text("share 78 parameters")
    expect(page.locator("#accuracy")).to_contain_text("test accuracy")
    expect(page.locator("#layers .layer")).to_have_count(3)  # conv 3x24x24, pool 3x12x12, ReLU
    expect(page.locator("#layers .layer").first).to_contain_text("3×24×24")
    wait_for_answer(page, "7")
    assert all(c["levels"] > 2 for c in page.evaluate(CANVAS_LEVELS, "#layers canvas.mosaic"))
    assert page.evaluate(CANVAS_LEVELS, "#filters")[0]["levels"] > 2  # the 3 learned 5x5 filters


def test_a_phone_with_a_finger(browser, url, shots):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(url)
    expect(page.locator("#runs button")).to_have_count(2)
    finger(page, SEVEN)
    wait_for_answer(page, "7")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] > 0.8 * PHONE["width"]  # the pad fills the width of the screen
    page.screenshot(path=shots / "phone.png", scale="css")
    page.screenshot(path=shots / "phone-full.png", full_page=True, scale="css")
    context.close()
