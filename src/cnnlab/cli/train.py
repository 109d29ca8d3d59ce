"""`cnnlab train`: flags -> a TrainConfig (the named recipe, each given flag replacing one setting)
-> ``runs.train`` -> one line with the test accuracy."""

from __future__ import annotations

import argparse

from .. import distributed, recipes, runs
from ..checkpoint import RunError
from .scripting import BAD_INPUT, INTERRUPTED, OK, PARTIAL, UsageError

# TrainConfig's settings by the flag that sets them (a SettingError names the setting; the
# command line names the flag)
FLAGS = {"max_shift": "--augment", "max_degrees": "--rotate", "max_scale": "--scale", "l2_lambda": "--l2",
         "elastic_sigma": "--elastic-sigma", "batch_size": "--batch-size", "early_stopping": "--early-stopping"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", choices=recipes.names(),
                   help="a recipe: an architecture from the zoo and how it is trained (see `cnnlab models`)")
    add_config_arguments(p)
    p.add_argument("--seed", type=int, default=None,
                   help="seed for initialisation, shuffling, dropout and augmentation (default: 0)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<model>-<dataset>, numbered if taken)")
    p.add_argument("--dry-run", action="store_true",
                   help="run a few batches of one epoch on small evaluation sets, save nothing")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="go on training RUN from its last complete epoch (its settings are in RUN/config.json, so "
                        "give no others)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write each epoch's numbers as TensorBoard event files in RUN/tensorboard/ (needs "
                        "tensorboardX: pip install 'cnnlab[tensorboard]'); a resumed run that wrote them goes on")
    add_timeout_argument(p)


def add_timeout_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-timeout", type=float, default=distributed.DEFAULT_TIMEOUT,
                   help="under mpiexec: seconds a process waits for the others before it names the ones that "
                        "do not answer and stops the job")


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that change one setting of the recipe's TrainConfig (all but --model and --seed)."""
    p.add_argument("--dataset", default=None,
                   help="mnist, fashion-mnist, or a folder with one sub-folder of images per class (default: the "
                        "model's recipe: fashion-mnist for fashion and fashion-best, else mnist)")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training data (default: the model's recipe)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="mini-batch size; under mpiexec the global batch, split over the processes (default: the "
                        "model's recipe)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate, the peak for one-cycle (default: the model's recipe)")
    p.add_argument("--optimizer", default=None, choices=list(runs.OPTIMIZERS),
                   help="optimizer (default: the model's recipe)")
    p.add_argument("--schedule", default=None, choices=list(runs.SCHEDULES),
                   help="learning-rate schedule (default: the model's recipe)")
    p.add_argument("--l2", type=float, default=None,
                   help="Nielsen's L2 lambda, scaled as network3.py does (default: the model's recipe)")
    p.add_argument("--augment", type=int, default=None,
                   help="random translation of training images by up to this many pixels (default: the model's recipe)")
    p.add_argument("--rotate", type=float, default=None,
                   help="random rotation up to this many degrees (default: recipe)")
    p.add_argument("--scale", type=float, default=None,
                   help="random zoom by a factor in [1 - SCALE, 1 + SCALE], e.g. 0.1 (default: recipe)")
    p.add_argument("--erase", type=float, default=None,
                   help="random erasing: probability of zeroing one random rectangle per training image "
                        "(default: recipe)")
    p.add_argument("--elastic", type=float, default=None,
                   help="elastic distortion of training images with this strength alpha, e.g. 34 (Simard et al.); "
                        "0 for none (default: recipe)")
    p.add_argument("--elastic-sigma", type=float, default=None,
                   help="smoothness of the elastic distortion in pixels, e.g. 4 (default: recipe)")
    for flag, what in (("stroke", "thicker or thinner strokes"), ("blur", "a Gaussian blur"),
                       ("lowres", "a lower resolution scaled back up"),
                       ("contrast", "new background and ink levels and gamma"), ("noise", "Gaussian noise")):
        p.add_argument(f"--{flag}", type=float, default=None, metavar="P",
                       help=f"probability per training image of {what}, at a random strength "
                            f"(docs/robustness.md; default: recipe)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror half the training images left-right at random, e.g. for fashion-mnist; not for "
                        "digits (default: the model's recipe)")
    p.add_argument("--expand", action="store_true", help="Nielsen's expanded data: add 1-pixel shifts (250,000 images)")
    p.add_argument("--train-size", type=int, default=None, help="train on only the first N training images")
    p.add_argument("--validation", type=int, default=None,
                   help="validation images taken from the end of the training set (default: 10000)")
    p.add_argument("--early-stopping", type=int, default=None,
                   help="stop after this many epochs without a better validation accuracy")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")


# flag (as argparse stores it) -> the setting it replaces
_SETTINGS = {"dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer",
             "lr": "lr", "schedule": "schedule", "l2": "l2_lambda", "augment": "max_shift", "rotate": "max_degrees",
             "scale": "max_scale", "erase": "erase", "elastic": "elastic", "elastic_sigma": "elastic_sigma",
             "hflip": "hflip", "stroke": "stroke", "blur": "blur", "lowres": "lowres", "contrast": "contrast",
             "noise": "noise", "train_size": "train_size", "validation": "validation",
             "early_stopping": "early_stopping", "seed": "seed", "device": "device"}


def config_from_args(args) -> runs.TrainConfig:
    """The recipe ``--model`` names, with every flag that was given replacing its setting."""
    changes = {setting: getattr(args, flag) for flag, setting in _SETTINGS.items()
               if getattr(args, flag, None) is not None}
    if args.expand:
        changes["expand"] = True
    return recipes.get(args.model).replace(**changes)


def run(args) -> int:
    if args.resume is not None:
        given = [flag for flag, setting in _SETTINGS.items() if getattr(args, flag) is not None]
        given += [name for name in ("expand", "out", "dry_run") if getattr(args, name)]
        if given or args.model != "default":
            named = ", ".join("--" + g.replace("_", "-") for g in given + (["model"] if args.model != "default" else []))
            raise UsageError(f"--resume takes no other settings ({named}): {args.resume}/config.json holds the run's")
    world = distributed.init(args.dist_timeout)  # under mpiexec: every process trains, data-parallel
    if args.resume is not None:
        try:
            result = runs.resume(args.resume, progress=not args.no_progress, world=world,
                                 tensorboard=args.tensorboard or None)
        except RunError:
            if not world.lead:
                return BAD_INPUT  # rank 0 says why
            raise
    else:
        result = runs.train(config_from_args(args), out=args.out, dry_run=args.dry_run,
                            progress=not args.no_progress, world=world, tensorboard=args.tensorboard)
    if not world.lead:
        return 0  # rank 0 reports
    h = result.history
    if h.test_accuracy is None:
        if h.interrupted:
            print("interrupted before the first epoch finished" + (
                f": `cnnlab train --resume {result.dir}` starts it again" if result.dir else ""))
        else:
            print("no epoch finished")
        return INTERRUPTED if h.interrupted else PARTIAL
    where = f"; run saved to {result.dir}" if result.dir else ""
    note = f" (interrupted; `cnnlab train --resume {result.dir}` goes on)" if h.interrupted and result.dir else (
        " (interrupted)" if h.interrupted else "")
    chosen = (f"(best validation {100 * h.best_validation_accuracy:.2f}%)" if h.best_validation_accuracy is not None
              else "(the last epoch: no validation set to choose on)")
    print(f"test accuracy {100 * h.test_accuracy:.2f}% at epoch {h.best_epoch} {chosen}, {h.seconds:.0f}s{note}{where}")
    return INTERRUPTED if h.interrupted else OK
