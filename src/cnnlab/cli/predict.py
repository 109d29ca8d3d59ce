"""`cnnlab predict RUN IMAGE...`: classify your own pictures with a saved run."""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from .. import functional as F
from .. import runs
from ..autograd import Tensor, no_grad
from ..checkpoint import RunError
from ..data import FirstFrameWarning, class_names, form_for, standardize
from .scripting import BAD_INPUT, OK, PARTIAL, add_json_argument, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("images", nargs="+",
                   help="PNG/JPEG files, any size, dark on light or light on dark: a digit, or for a Fashion-MNIST "
                        "run one piece of clothing")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    add_json_argument(p)


def run(args) -> int:
    """Each picture's classes, in the order given; a picture that cannot be read is one line on
    stderr and the others are still classified (exit 1; 3 when none could be read)."""
    r = runs.load(args.run)
    model = runs.runnable(r.model)
    classes = list(r.config.classes or class_names(r.config.dataset))
    convert, _ = form_for(r.config.dataset)
    answers = []
    for path in args.images:
        try:
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", FirstFrameWarning)
                img = convert(path)
        except ValueError as exc:  # the message names the file
            print(f"cnnlab predict: error: {exc}", file=sys.stderr)
            answers.append({"image": path, "error": str(exc)})
            continue
        for note in notes:  # e.g. an animated GIF: which frame was used
            if issubclass(note.category, FirstFrameWarning):
                print(f"cnnlab predict: note: {note.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
        x = standardize(img, r.config.mean, r.config.std).reshape(1, 1, 28, 28)
        with no_grad():
            prob = F.softmax(model(Tensor(x)), 1).numpy()[0]
        if not np.isfinite(prob).all():
            raise RunError(f"{args.run}: its weights give no finite probabilities (a run that diverged?)")
        order = np.argsort(-prob)[: max(1, args.top)]
        top = [{"label": classes[i], "class": int(i), "probability": float(prob[i])} for i in order]
        answers.append({"image": path, **top[0], "top": top})
        if not args.json:
            tops = ", ".join(f"{t['label']} ({100 * t['probability']:.1f}%)" for t in top)
            print(f"{path}: {top[0]['label']}    top: {tops}")
    failed = sum("error" in a for a in answers)
    if failed == len(answers):
        return BAD_INPUT  # nothing answered: the lines on stderr say why, stdout stays empty
    if args.json:
        print_json({"run": args.run, "classes": classes, "images": answers})
    return PARTIAL if failed else OK
