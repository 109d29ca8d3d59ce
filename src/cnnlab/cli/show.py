"""``cnnlab show`` and ``cnnlab report``: check the arguments, call ``cnnlab.viz``, print the path written."""

from __future__ import annotations

from pathlib import Path

from .. import viz


def cmd_show(args) -> int:
    """``cnnlab show WHAT RUN [IMAGE] [--layer N] [--out FILE]``: write one picture, print its path.

    Args:
        args: argparse namespace with what, run, image, layer, out.

    Returns:
        0 on success (errors are raised as ValueError subclasses with a one-line message).
    """
    what = args.what
    if what == "convert":
        return _show_convert(args)
    if getattr(args, "with_run", None) is not None:
        raise ValueError(f"--run is only used by `show convert`, not `show {what}` (whose RUN comes first)")
    if what not in viz.FIGSIZE:
        raise ValueError(f"unknown picture {what!r}; choose one of {', '.join(viz.FIGSIZE)}")
    if args.image is not None and what != "featuremaps":
        raise ValueError(f"IMAGE ({args.image}) is only used by `show featuremaps`, not `show {what}`")
    if args.layer is not None and what != "filters":
        raise ValueError(f"--layer is only used by `show filters`, not `show {what}`")
    _check_suffix(args.out, ".png")
    print(viz.plot_run(what, args.run, out=args.out, image=args.image, layer=args.layer))
    return 0


def _show_convert(args) -> int:
    """``cnnlab show convert PICTURE [--run RUN] [--out FILE]``."""
    picture = Path(args.run)
    if args.image is not None or args.layer is not None:
        raise ValueError("`show convert PICTURE` takes one picture and --run, --out; no IMAGE or --layer")
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
    print(viz.build_report(args.run, args.out))
    return 0


def _check_suffix(out, *suffixes) -> None:
    """--out must name the kind of file written: no PNG where notes.txt was."""
    if out is not None and Path(out).suffix.lower() not in suffixes:
        raise ValueError(f"--out {out}: the file written is {suffixes[0][1:].upper()}, so its name must end in "
                         f"{' or '.join(suffixes)}")
