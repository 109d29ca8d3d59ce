"""`cnnlab export RUN --onnx model.onnx`: a saved run as a file another runtime loads."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("--onnx", metavar="PATH", default=None,
                   help="write an ONNX model (opset 20, dynamic batch axis; normalisation, input form and class "
                        "names in its metadata; docs/onnx.md)")


def run(args) -> int:
    if args.onnx is None:
        raise ValueError("nothing to export: give --onnx PATH")
    from ..onnx_export import export_run  # noqa: PLC0415 - onnx is an optional dependency

    path = export_run(args.run, args.onnx)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
