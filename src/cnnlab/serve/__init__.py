"""See it think: a local web page where you draw a digit (or drop a photo) and watch a saved run
classify it, with the picture as the network sees it, every feature map, the learned filters and
a Grad-CAM map, recomputed by cnnlab on the server as you draw. ``cnnlab serve RUN ...`` starts it.

    engine.py   DemoRun: a run's prediction, feature maps, filters, Grad-CAM and summary (no web code)
    uploads.py  read_picture: an upload checked (bytes, format, pixels) and decoded in memory
    app.py      create_app(run_dirs): the Starlette app, its JSON endpoints and the static page
    static/     the page: plain HTML, CSS and JavaScript, nothing from elsewhere

The web part needs the ``demo`` extra (``pip install 'cnnlab[demo]'``: Starlette and uvicorn);
``engine`` and ``uploads`` need only cnnlab. ``create_app`` is imported from ``app`` on first use,
so that ``import cnnlab.serve`` works without the extra.

Example:
    >>> import uvicorn
    >>> from cnnlab.serve import create_app
    >>> uvicorn.run(create_app(["runs/default-mnist", "runs/article-mnist"]), host="127.0.0.1", port=8000)
"""

from .engine import DemoRun, find_runs, receptive_fields
from .uploads import MAX_BYTES, MAX_PIXELS, PictureError, read_picture

__all__ = ["MAX_BYTES", "MAX_PIXELS", "DemoRun", "PictureError", "create_app", "find_runs", "read_picture",
           "receptive_fields"]


def __getattr__(name):
    if name == "create_app":  # needs Starlette: imported when asked for
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
