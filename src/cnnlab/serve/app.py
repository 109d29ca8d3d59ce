"""The demo as a web app (Starlette): one page, its static files, and three JSON endpoints.

    GET  /                          the page (static/index.html; its script and style beside it)
    GET  /api/runs                  the runs served: [{"id", "name", "dataset", "test_accuracy"}, ...]
    GET  /api/runs/{id}             one run's summary, layers and first-layer filters
    POST /api/runs/{id}/predict     body: a picture file (PNG, JPEG, WebP, GIF, BMP; any size up to the
                                    limits); answer: the prediction, the picture as the network sees
                                    it, every feature map, Grad-CAM (engine.DemoRun.predict)

Runs are named by their number in the list given at start, never by a path from the client.
Uploads are read into memory up to ``max_bytes`` and never written anywhere. Every error is JSON,
``{"error": "one sentence"}`` with a 4xx status (5xx only for a fault of the server, whose
traceback goes to the server's log, never to the page).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .engine import DemoRun
from .uploads import MAX_BYTES, MAX_PIXELS, PictureError, check_size, read_picture

__all__ = ["LOOPBACK_HOSTS", "SECURITY_HEADERS", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
# The page loads nothing from elsewhere (no CDN): everything from this server, pictures also as
# data:/blob: URLs (an uploaded photo is shown from the browser's own memory).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                 b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
log = logging.getLogger("cnnlab.serve")


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request's body, refused (PictureError 413) as soon as it passes ``max_bytes``: a declared
    Content-Length too big is refused before reading anything."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        check_size(int(declared), max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        check_size(len(body), max_bytes)
    return bytes(body)


def create_app(run_dirs, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               trusted_hosts: list[str] | None = None, warm_up: bool = True) -> Starlette:
    """The demo app for the runs named at start.

    Args:
        run_dirs: run directories (``cnnlab train``'s output); the page names them 0, 1, ...
        max_bytes: the largest upload accepted, in bytes.
        max_pixels: the largest picture accepted, width x height.
        trusted_hosts: the Host headers answered (e.g. ``LOOPBACK_HOSTS`` when bound to 127.0.0.1,
            so that no other web site can reach the demo through DNS rebinding); None answers any.
        warm_up: run each network once now, so the first picture does not wait for compilation.

    Returns:
        A Starlette (ASGI) app: ``uvicorn.run(app, host="127.0.0.1", port=8000)``.

    Raises:
        checkpoint.RunError: a run directory is missing or broken (before anything is served).
        ValueError: no run directory given.
    """
    demos = [DemoRun.load(d, i) for i, d in enumerate(run_dirs)]
    if not demos:
        raise ValueError("no run to serve: name at least one run directory")
    if warm_up:
        for demo in demos:
            demo.warm_up()

    def demo_of(request: Request) -> DemoRun:
        i = request.path_params["run"]
        if not 0 <= i < len(demos):
            raise HTTPException(404, f"no run {i}: this server has runs 0 to {len(demos) - 1}")
        return demos[i]

    async def index(request: Request):
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def list_runs(request: Request):
        keys = ("id", "name", "folder", "dataset", "architecture", "test_accuracy", "parameters")
        return JSONResponse([{k: d.info[k] for k in keys} for d in demos])

    async def run_info(request: Request):
        return JSONResponse(demo_of(request).info)

    async def predict(request: Request):
        demo = demo_of(request)
        data = await read_body(request, max_bytes)

        def work():
            started = time.perf_counter()  # the answer's "ms": decoding, conversion, network, Grad-CAM
            picture, notes = read_picture(data, max_bytes, max_pixels)
            return demo.predict(picture, notes, started=started)

        answer = await run_in_threadpool(work)
        return JSONResponse(answer, headers={"server-timing": f"cnnlab;dur={answer['ms']}",
                                             "cache-control": "no-store"})

    async def picture_error(request: Request, exc: PictureError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception):
        log.error("cnnlab serve: %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "the server failed on this request (its log says why)"}, status_code=500)

    middleware = [Middleware(SecurityHeaders)]
    if trusted_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(trusted_hosts)))
    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/runs", list_runs),
            Route("/api/runs/{run:int}", run_info),
            Route("/api/runs/{run:int}/predict", predict, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
        exception_handlers={PictureError: picture_error, HTTPException: http_error, Exception: server_error},
    )
