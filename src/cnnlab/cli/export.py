"""`cnnlab export RUN --onnx model.onnx --torch weights.safetensors`: a saved run as files another runtime
loads: an ONNX graph (cnnlab.onnx_export) and PyTorch weights (cnnlab.interop)."""

from __future__ import annotations

import argparse

from .. import runs
from .scripting import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("--onnx", metavar="PATH", default=None,
                   help="write an ONNX model (opset 20, dynamic batch axis; normalisation, input form and class "
                        "names in its metadata; docs/onnx.md)")
    p.add_argument("--torch", metavar="PATH", default=None,
                   help="write the weights as a PyTorch state_dict in a safetensors file, which the module printed "
                        "loads with load_state_dict(safetensors.torch.load_file(PATH), strict=True)")


def run(args) -> int:
    if args.onnx is None and args.torch is None:
        raise UsageError("nothing to export: give --onnx PATH and/or --torch PATH")
    if args.onnx is not None:
        from ..onnx_export import export_run  # noqa: PLC0415 - onnx is an optional dependency

        path = export_run(args.run, args.onnx)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    if args.torch is not None:
        _export_torch(args)
    return 0


def _export_torch(args) -> None:
    r = runs.load(args.run)
    from ..interop import save_torch_state_dict, torch_source  # noqa: PLC0415  (torch is optional)

    try:
        source = torch_source(r.model)  # refuses a model PyTorch cannot build before anything is written
        save_torch_state_dict(r.model, args.torch)
    except ImportError as exc:  # PyTorch is not installed
        raise RuntimeError(str(exc)) from None
    print(f"wrote {args.torch}: the weights of {args.run} for PyTorch. Load them with:\n"
          f"import torch.nn as nn\n"
          f"from safetensors.torch import load_file\n"
          f"model = {source}\n"
          f"model.load_state_dict(load_file({str(args.torch)!r}), strict=True)\n"
          f"model.eval()  # inputs: (N, 1, 28, 28), (pixel / 255 - {r.config.mean:.4f}) / {r.config.std:.4f}")
