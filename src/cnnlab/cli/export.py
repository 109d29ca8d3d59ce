"""`cnnlab export RUN --torch weights.pt`: a run's model for PyTorch (cnnlab.interop)."""

from __future__ import annotations

import argparse

from .. import runs
from .scripting import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("--torch", metavar="PATH", default=None,
                   help="write the weights as a PyTorch state_dict (torch.save) that the module printed loads "
                        "with load_state_dict(torch.load(PATH, weights_only=True), strict=True)")


def run(args) -> int:
    if args.torch is None:
        raise UsageError("nothing to export: give --torch PATH")
    r = runs.load(args.run)
    from ..interop import save_torch_state_dict, torch_source  # noqa: PLC0415  (torch is optional)

    try:
        source = torch_source(r.model)  # refuses a model PyTorch cannot build before anything is written
        save_torch_state_dict(r.model, args.torch)
    except ImportError as exc:  # PyTorch is not installed
        raise RuntimeError(str(exc)) from None
    print(f"wrote {args.torch}: the weights of {args.run} for PyTorch. Load them with:\n"
          f"import torch, torch.nn as nn\n"
          f"model = {source}\n"
          f"model.load_state_dict(torch.load({str(args.torch)!r}, weights_only=True), strict=True)\n"
          f"model.eval()  # inputs: (N, 1, 28, 28), (pixel / 255 - {r.config.mean:.4f}) / {r.config.std:.4f}")
    return 0
