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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("images", nargs="+",
                   help="PNG/JPEG files, any size, dark on light or light on dark: a digit, or for a Fashion-MNIST "
                        "run one piece of clothing")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")


def run(args) -> int:
    r = runs.load(args.run)
    model = runs.runnable(r.model)
    classes = list(r.config.classes or class_names(r.config.dataset))
    convert, _ = form_for(r.config.dataset)
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
            prob = F.softmax(model(Tensor(x)), 1).numpy()[0]
        if not np.isfinite(prob).all():
            raise RunError(f"{args.run}: its weights give no finite probabilities (a run that diverged?)")
        order = np.argsort(-prob)[: max(1, args.top)]
        tops = ", ".join(f"{classes[i]} ({100 * prob[i]:.1f}%)" for i in order)
        print(f"{path}: {classes[order[0]]}    top: {tops}")
    return status
