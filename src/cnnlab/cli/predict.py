"""`cnnlab predict [RUN] IMAGE...`: classify your own pictures with a saved run, or with the model
that ships with cnnlab when no RUN is given.

The first argument is the RUN when it is a directory (a picture never is); otherwise every argument
is a picture. A first argument that does not exist, followed by others, is refused in one line:
a mistyped run directory must not quietly become a missing picture and the shipped model's answers.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from .. import calibration, pretrained, runs
from ..autograd import Tensor, no_grad
from ..checkpoint import SPEC, RunError
from ..data import FirstFrameWarning, class_names, form_for, shape_doubt, standardize
from .scripting import BAD_INPUT, OK, PARTIAL, add_json_argument, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="[RUN] IMAGE",
                   help="a run directory written by `cnnlab train` (optional: without one, the model that ships "
                        "with cnnlab), then PNG/JPEG files, any size, dark on light or light on dark: a digit, or "
                        "for a Fashion-MNIST run one piece of clothing")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.epilog = ("Probabilities are calibrated (the temperature fitted on the run's validation set; `cnnlab calibrate "
                f"RUN` for older runs). A top probability under {100 * calibration.CONFIDENT:.0f}% is flagged "
                "'not confident'; ink shaped like no digit (a line, a smudge) 'not a digit?'.")
    add_json_argument(p)


def split_inputs(inputs: list[str]) -> tuple[str | None, list[str]]:
    """(run directory or None for the shipped model, pictures) from ``[RUN] IMAGE...``.

    Raises:
        checkpoint.RunError: a first argument that is neither a directory nor a file, with more
            after it, or a RUN with no picture.
    """
    first, rest = inputs[0], inputs[1:]
    if Path(first).is_dir():
        if not rest and not (Path(first) / SPEC).exists():  # a folder of pictures, say
            raise RunError(f"{first} is a folder, not a run directory (no {SPEC}): give the pictures one by one, "
                           f"after a RUN or alone for the shipped model")
        if not rest:
            raise RunError(f"{first} is a run directory: give the pictures to classify after it")
        return first, rest
    if rest and not Path(first).exists():
        raise RunError(f"{first}: no such run directory (nor a picture): give an existing RUN, or only pictures "
                       f"to use the shipped model")
    return None, list(inputs)


def load_run(run_dir: str | None, command: str) -> runs.Run:
    """``runs.load(run_dir)``, or the shipped model (saying so on stderr) when ``run_dir`` is None."""
    if run_dir is not None:
        return runs.load(run_dir)
    r = pretrained.load()
    acc = f", test accuracy {100 * r.test_accuracy:.2f}%" if r.test_accuracy is not None else ""
    print(f"cnnlab {command}: the model shipped with cnnlab ({r.config.name}{acc}); give a RUN to use "
          f"your own", file=sys.stderr)
    return r


def run(args) -> int:
    """Each picture's classes, in the order given; a picture that cannot be read is one line on
    stderr and the others are still classified (exit 1; 3 when none could be read)."""
    args.run, args.images = split_inputs(args.inputs)
    r = load_run(args.run, "predict")
    model = runs.runnable(r.model)
    classes = list(r.config.classes or class_names(r.config.dataset))
    convert, _ = form_for(r.config.dataset)
    t = runs.temperature(r.dir)
    digits = r.config.dataset == "mnist"  # "not a digit?" only where the classes are digits
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
            logits = np.asarray(model(Tensor(x)).numpy(), dtype=np.float64)[0]
        prob = calibration.softmax(logits, t)
        if not np.isfinite(prob).all():
            raise RunError(f"{r.dir}: its weights give no finite probabilities (a run that diverged?)")
        order = np.argsort(-prob)[: max(1, args.top)]
        top = [{"label": classes[i], "class": int(i), "probability": float(prob[i])} for i in order]
        note = calibration.flag(prob, shape_doubt(img) if digits else None)
        answers.append({"image": path, **top[0], "top": top, "flag": note})
        if not args.json:
            tops = ", ".join(f"{c['label']} ({100 * c['probability']:.1f}%)" for c in top)
            print(f"{path}: {top[0]['label']}    top: {tops}" + (f"    [{note}]" if note else ""))
    failed = sum("error" in a for a in answers)
    if failed == len(answers):
        return BAD_INPUT  # nothing answered: the lines on stderr say why, stdout stays empty
    if args.json:
        print_json({"run": str(r.dir), "classes": classes, "temperature": t, "images": answers})
    return PARTIAL if failed else OK
