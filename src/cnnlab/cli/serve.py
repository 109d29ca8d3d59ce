"""`cnnlab serve [RUN ...]`: the live demo in the browser (draw a digit, watch the network think)."""

from __future__ import annotations

import argparse

from .scripting import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run directories to show, switchable in the page (default: every run under ./runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 127.0.0.1 is this computer only, 0.0.0.0 your whole network")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")


def run(args) -> int:
    try:
        import uvicorn

        from ..serve import find_runs
        from ..serve.app import LOOPBACK_HOSTS, create_app
    except ImportError as exc:  # starlette or uvicorn missing
        raise RuntimeError(f"the demo needs the 'demo' extra ({exc.name} is not installed): "
                           f"pip install 'cnnlab[demo]'") from None
    dirs = args.runs or find_runs("runs")
    if not dirs:
        raise ValueError("no run to serve: name run directories, or train one first (`cnnlab train`)")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1 to 65535, got {args.port}")
    local = args.host in LOOPBACK
    print(f"cnnlab serve: loading {len(dirs)} run{'s' if len(dirs) != 1 else ''} ...", flush=True)
    # the Host header checked on IPv4 loopback; Starlette's check cannot read a bracketed IPv6 host
    # ("[::1]:8000"), so ::1, loopback too, is served without it
    app = create_app(dirs, trusted_hosts=LOOPBACK_HOSTS if args.host in ("127.0.0.1", "localhost") else None)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"cnnlab serve: open http://{shown}:{args.port}/ in a browser (Ctrl-C stops)", flush=True)
    for i, d in enumerate(dirs):
        print(f"  run {i}: {d}")
    if not local:
        print(f"cnnlab serve: warning: listening on {args.host}: anyone who can reach this computer can use "
              f"the demo", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
