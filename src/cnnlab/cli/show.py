"""``cnnlab show`` and ``cnnlab report``: check the arguments, call ``cnnlab.viz``, print the path written."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import pretrained, viz
from .scripting import UsageError


def cmd_show(args) -> int:
    """``cnnlab show WHAT [RUN] [IMAGE] [--layer N] [--out FILE]``: write one picture, print its path.

    Without a RUN (or, for featuremaps, with a picture or test:N where RUN goes) the model that
    ships with cnnlab is drawn, and the picture goes to ./<what>.png, never into the package.

    Args:
        args: argparse namespace with what, run, image, layer, out.

    Returns:
        0 on success (errors are raised as ValueError subclasses with a one-line message: UsageError
        for a command line that is wrong by itself).
    """
    what = args.what
    if what == "convert":
        return _show_convert(args)
    if getattr(args, "with_run", None) is not None:
        raise UsageError(f"--run is only used by `show convert`, not `show {what}` (whose RUN comes first)")
    if what not in viz.FIGSIZE:
        raise UsageError(f"unknown picture {what!r}; choose one of {', '.join(viz.FIGSIZE)}")
    if args.layer is not None and what not in ("filters", "gradcam"):
        raise UsageError(f"--layer is only used by `show filters` and `show gradcam`, not `show {what}`")
    if (what in ("featuremaps", "gradcam") and args.image is None and args.run is not None
            and not Path(args.run).is_dir()
            and (args.run.startswith("test:") or Path(args.run).is_file()
                 or Path(args.run).suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"))):
        # `show featuremaps my7.png`: the shipped model's maps (a missing picture is then named as one)
        args.run, args.image = None, args.run
    if args.image is not None and what not in ("featuremaps", "gradcam"):
        raise UsageError(f"IMAGE ({args.image}) is only used by `show featuremaps` and `show gradcam`, "
                         f"not `show {what}`")
    if args.image is not None and args.image.startswith("test:") and not args.image[len("test:"):].isdigit():
        raise UsageError(f"image {args.image!r}: expected test:N with N a test-image index, e.g. test:0")
    _check_suffix(args.out, ".png")
    run_dir, out = _run_and_out(args.run, args.out, f"{what}.png", "show")
    print(viz.plot_run(what, run_dir, out=out, image=args.image, layer=args.layer))
    return 0


def _show_convert(args) -> int:
    """``cnnlab show convert PICTURE [--run RUN] [--out FILE]``."""
    if args.run is None:
        raise UsageError("`show convert PICTURE [--run RUN]`: give the picture to convert")
    picture = Path(args.run)
    if args.image is not None or args.layer is not None:
        raise UsageError("`show convert PICTURE` takes one picture and --run, --out; no IMAGE or --layer")
    if not picture.is_file():
        raise ValueError(f"{picture}: no such picture file (`show convert PICTURE [--run RUN]`)")
    _check_suffix(args.out, ".png")
    out = Path(args.out) if args.out is not None else Path(f"{picture.stem}-convert.png")
    print(viz.plot_conversion(picture, out, run_dir=args.with_run))
    return 0


def cmd_report(args) -> int:
    """``cnnlab report RUN [--out FILE]``: write the HTML report and print its path.

    Args:
        args: argparse namespace with run and out.

    Returns:
        0 on success.
    """
    _check_suffix(args.out, ".html", ".htm")
    run_dir, out = _run_and_out(args.run, args.out, "report.html", "report")
    print(viz.build_report(run_dir, out))
    return 0


def _run_and_out(run, out, name: str, command: str):
    """The run directory and the file to write: a RUN as given, or the shipped model (its run checked
    against the recorded SHA-256) with ./NAME as the default output."""
    if run is not None:
        return run, out
    r = pretrained.load()
    print(f"cnnlab {command}: the model shipped with cnnlab ({r.config.name}); give a RUN to draw your own",
          file=sys.stderr)
    return r.dir, out if out is not None else Path(name)


def _check_suffix(out, *suffixes) -> None:
    """--out must name the kind of file written: no PNG where notes.txt was."""
    if out is not None and Path(out).suffix.lower() not in suffixes:
        raise UsageError(f"--out {out}: the file written is {suffixes[0][1:].upper()}, so its name must end in "
                         f"{' or '.join(suffixes)}")
