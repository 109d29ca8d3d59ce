"""How long one update of the live demo (`cnnlab serve`) takes: the page POSTs the picture, the
server answers with the prediction, the conversion steps, every feature map and Grad-CAM.

Starts the demo's app with uvicorn on a free loopback port, in this process, and sends the same
picture N times over one kept-alive HTTP connection, as the page does while you draw. Reports per
run the median and 90th percentile of
  - server: the answer's own "ms" (decode, conversion, network layer by layer, Grad-CAM, encoding),
  - request: the whole HTTP round trip seen by the client (adds JSON, HTTP, the event loop),
  - with --browser CHROMIUM, also in the page: fetch() of the answer and its JSON parsed, timed
    with performance.now() in headless Chromium (Playwright), as the page asks while you draw.

    python benchmarks/bench_serve.py RUN [RUN ...] [--requests 50] [--picture drawn|photo|both]
                                     [--browser /usr/bin/chromium]

The pictures: a 7 drawn as the page's 280x280 pad draws it (PNG, about 3 KB), and a 640x480 JPEG
of a digit photographed on unevenly lit paper (as the tests make them).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def drawn_seven() -> bytes:
    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).line([(70, 62), (210, 62), (126, 238)], fill=(17, 17, 17), width=20, joint="curve")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def photo() -> bytes:
    rng = np.random.default_rng(0)
    w, h = 640, 480
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 238 - 27 * xx / w - 36 * yy / h
    strokes = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(strokes)
    d.line([(330, 110), (255, 280), (390, 280)], fill=255, width=17, joint="curve")
    d.line([(360, 170), (352, 380)], fill=255, width=17)
    cover = np.asarray(strokes.rotate(4, resample=Image.Resampling.BILINEAR), dtype=np.float64)[..., None] / 255
    rgb = np.stack([paper, paper * 0.97, paper * 0.9], axis=-1) * (1 - cover) + np.array([40, 42, 55]) * cover
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.6))
    noisy = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, (h, w, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def start(run_dirs):
    import uvicorn

    from cnnlab.serve.app import create_app

    app = create_app(run_dirs)
    # IPPROTO_TCP named, as uvicorn's own sockets have it: asyncio turns Nagle's algorithm off only
    # for those, and with it on, a response meeting the client's delayed ACK waits 40 ms
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, sock.getsockname()[1]


def measure(port: int, run: int, body: bytes, n: int, warm: int = 5):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    server_ms, request_ms, size, name = [], [], 0, None
    for i in range(warm + n):
        t0 = time.perf_counter()
        conn.request("POST", f"/api/runs/{run}/predict", body=body, headers={"content-type": "application/octet-stream"})
        resp = conn.getresponse()
        raw = resp.read()
        dt = 1000 * (time.perf_counter() - t0)
        if resp.status != 200:
            sys.exit(f"run {run}: HTTP {resp.status}: {raw[:200]!r}")
        answer = json.loads(raw)
        if i >= warm:
            server_ms.append(answer["ms"])
            request_ms.append(dt)
        size, name = len(raw), answer["name"]
    conn.close()
    return server_ms, request_ms, size, name


IN_PAGE = """async ([run, b64, n, warm]) => {
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const body = new Blob([bytes]), times = [];
  for (let i = 0; i < warm + n; i++) {
    const t0 = performance.now();
    const r = await fetch(`/api/runs/${run}/predict`, {method: "POST", body});
    await r.json();
    if (i >= warm) times.push(performance.now() - t0);
  }
  return times;
}"""


def in_browser(chromium: str, port: int, jobs):
    """{(run, kind): round-trip times in ms} measured by the page's own fetch() in Chromium."""
    import base64

    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        for run, kind, body, n in jobs:
            out[run, kind] = page.evaluate(IN_PAGE, [run, base64.b64encode(body).decode(), n, 5])
        browser.close()
    return out


def summary(values) -> str:
    q = statistics.quantiles(values, n=10)
    return f"median {statistics.median(values):6.1f} ms, p90 {q[-1]:6.1f} ms"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--requests", type=int, default=50, help="timed requests per run and picture")
    p.add_argument("--picture", choices=["drawn", "photo", "both"], default="both")
    p.add_argument("--browser", metavar="CHROMIUM", default=None,
                   help="also time the requests from a page in this Chromium (needs Playwright)")
    args = p.parse_args(argv)
    pictures = {"drawn": drawn_seven(), "photo": photo()}
    chosen = ["drawn", "photo"] if args.picture == "both" else [args.picture]
    server, port = start(args.runs)
    print(f"{args.requests} requests each, after 5 untimed; one connection, one request at a time")
    for i, run_dir in enumerate(args.runs):
        for kind in chosen:
            server_ms, request_ms, size, name = measure(port, i, pictures[kind], args.requests)
            print(f"{Path(run_dir).name:>12} {kind:>5} ({len(pictures[kind]) // 1024} KB in, {size // 1024} KB out, "
                  f"reads {name}): server {summary(server_ms)}; request {summary(request_ms)}")
    if args.browser:
        jobs = [(i, kind, pictures[kind], args.requests) for i in range(len(args.runs)) for kind in chosen]
        for (i, kind), times in in_browser(args.browser, port, jobs).items():
            print(f"{Path(args.runs[i]).name:>12} {kind:>5} in Chromium, fetch + JSON: {summary(times)}")
    server.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
