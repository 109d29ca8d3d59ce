"""`cnnlab predict RUN IMAGE...`: classify your own pictures with a saved run."""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from .. import calibration, runs
from ..autograd import Tensor, no_grad
from ..checkpoint import RunError
from ..data import FirstFrameWarning, class_names, form_for, shape_doubt, standardize


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("images", nargs="+",
                   help="PNG/JPEG files, any size, dark on light or light on dark: a digit, or for a Fashion-MNIST "
                        "run one piece of clothing")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.epilog = ("Probabilities are calibrated (the temperature fitted on the run's validation set; `cnnlab calibrate "
                f"RUN` for older runs). A top probability under {100 * calibration.CONFIDENT:.0f}% is flagged "
                "'not confident'; ink shaped like no digit (a line, a smudge) 'not a digit?'.")


def run(args) -> int:
    r = runs.load(args.run)
    model = runs.runnable(r.model)
    classes = list(r.config.classes or class_names(r.config.dataset))
    convert, _ = form_for(r.config.dataset)
    t = runs.temperature(args.run)
    digits = r.config.dataset == "mnist"  # "not a digit?" only where the classes are digits
    status = 0
    for path in args.images:
        try:
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", FirstFrameWarning)
                img = convert(path)
        except ValueError as exc:  # the message names the file
            print(f"cnnlab predict: error: {exc}", file=sys.stderr)
            status = 1
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
            raise RunError(f"{args.run}: its weights give no finite probabilities (a run that diverged?)")
        order = np.argsort(-prob)[: max(1, args.top)]
        tops = ", ".join(f"{classes[i]} ({100 * prob[i]:.1f}%)" for i in order)
        note = calibration.flag(prob, shape_doubt(img) if digits else None)
        print(f"{path}: {classes[order[0]]}    top: {tops}" + (f"    [{note}]" if note else ""))
    return status
