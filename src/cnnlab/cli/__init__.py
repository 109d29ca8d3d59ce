"""The ``cnnlab`` command: thin argument parsing over the library.

    cnnlab train [--model default] ...     train, evaluate each epoch, save a run directory
    cnnlab evaluate RUN                    re-measure a saved run on its test set
    cnnlab predict RUN IMAGE...            classify your own digit pictures
    cnnlab summary MODEL                   layers, output shapes, parameter counts
    cnnlab models                          the model zoo
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless its help already says what the default is, or there is
    none worth showing (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default:" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .. import models  # noqa: PLC0415

    p.add_argument("--model", default="default", choices=models.names(), help="architecture from the zoo")
    p.add_argument("--dataset", default=None,
                   help="mnist, fashion-mnist, or a folder with one sub-folder of images per class (default: the "
                        "model's recipe: fashion-mnist for fashion and fashion-best, else mnist)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training data (default: the model's recipe)")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: the model's recipe)")
    p.add_argument("--lr", type=float, default=None, help="learning rate, the peak for one-cycle (default: the model's recipe)")
    p.add_argument("--optimizer", default=None, choices=["sgd", "nesterov", "rmsprop", "adam", "adamw"],
                   help="optimizer (default: the model's recipe)")
    p.add_argument("--schedule", default=None, choices=["constant", "step", "cosine", "onecycle"],
                   help="learning-rate schedule (default: the model's recipe)")
    p.add_argument("--l2", type=float, default=None,
                   help="Nielsen's L2 lambda, scaled as network3.py does (default: the model's recipe)")
    p.add_argument("--augment", type=int, default=None,
                   help="random translation of training images by up to this many pixels (default: the model's recipe)")
    p.add_argument("--rotate", type=float, default=None, help="random rotation up to this many degrees (default: recipe)")
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
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror half the training images left-right at random, e.g. for fashion-mnist; not for "
                        "digits (default: the model's recipe)")
    p.add_argument("--expand", action="store_true", help="Nielsen's expanded data: add 1-pixel shifts (250,000 images)")
    p.add_argument("--validation", type=int, default=10000, help="validation images taken from the end of the training set")
    p.add_argument("--early-stopping", type=int, default=None, help="stop after this many epochs without a better validation accuracy")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling, dropout and augmentation")
    p.add_argument("--out", default=None, help="run directory (default: runs/<model>-<dataset>, numbered if taken)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dry-run", action="store_true", help="run a few batches of one epoch on small evaluation sets, save nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", formatter_class=_Formatter,
                                     description="Convolutional neural networks from first principles.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a model and report its test accuracy", formatter_class=_Formatter)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="measure saved runs on their validation and test sets (several: also "
                                        "their ensemble)",
                       formatter_class=_Formatter)
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories written by `cnnlab train`; with several, the ensemble's plurality vote "
                        "is measured too")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--mirror-tta", action="store_true",
                   help="test-time augmentation: average each image's probabilities with its left-right "
                        "mirror's (only for runs trained with --hflip)")
    p.add_argument("--shift-tta", action="store_true",
                   help="test-time augmentation: average each image's probabilities with those of its four "
                        "1-pixel shifts (up, down, left, right)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify your own images with a saved run", formatter_class=_Formatter)
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("images", nargs="+",
                   help="PNG/JPEG files, any size, dark on light or light on dark: a digit, or for a Fashion-MNIST "
                        "run one piece of clothing")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="layers, output shapes and parameter counts", formatter_class=_Formatter)
    p.add_argument("model", help="a model name (see `cnnlab models`) or a run directory")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("models", help="list the model zoo", formatter_class=_Formatter)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("show", help="draw a picture of a saved run (PNG)", formatter_class=_Formatter)
    p.add_argument("what", choices=["filters", "featuremaps", "curves", "confusion", "mistakes", "augment"],
                   help="filters: learned kernels; featuremaps: every conv/pool layer's maps for IMAGE; "
                        "curves: loss and accuracy per epoch; confusion: test confusion matrix; "
                        "mistakes: misclassified test images; augment: training images as the run's "
                        "augmentation changed them")
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("image", nargs="?", default=None,
                   help="for featuremaps: a PNG/JPEG file, or test:N for test image N (default: test:0)")
    p.add_argument("--layer", type=int, default=None,
                   help="for filters: index of the conv layer in the model (default: the first conv layer)")
    p.add_argument("--out", default=None, help="PNG file to write (default: RUN/<what>.png)")
    p.set_defaults(func=lambda a: _lazy("cli.show", "cmd_show")(a))

    p = sub.add_parser("report", help="one self-contained HTML page about a run", formatter_class=_Formatter)
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html)")
    p.set_defaults(func=lambda a: _lazy("cli.show", "cmd_report")(a))

    p = sub.add_parser("example", help="small 1-D and 3-D convolution examples beyond images",
                       formatter_class=_Formatter)
    p.add_argument("which", choices=["seq1d", "vol3d"], help="seq1d: a 1-D CNN on synthetic signals; "
                   "vol3d: a 3-D CNN on small synthetic volumes")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the example's own)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and shuffling")
    p.set_defaults(func=lambda a: _lazy("examples", "cli_example")(a))

    p = sub.add_parser("reproduce", help="reproduce Nielsen's chapter-6 table", formatter_class=_Formatter)
    p.add_argument("what", choices=["nielsen"], help="which published table")
    p.add_argument("--rows", default=None,
                   help="comma list of rows to run (fc,conv1,conv2,relu,expanded,dropout,ensemble; default: all)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per row instead of the book's 60/40 (shorter run)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N of the 50,000 training images")
    p.add_argument("--ensemble-size", type=int, default=5, help="nets in the ensemble vote")
    p.add_argument("--seed", type=int, default=0, help="seed of the first net (ensemble members use seed+1, ...)")
    p.add_argument("--out", default="results",
                   help="folder for nielsen.json and nielsen.md (a shortened run: nielsen-short.json and .md)")
    p.add_argument("--runs-dir", default="runs/nielsen",
                   help="where each trained net is saved; a finished net there with the same settings is reused, "
                        "so a stopped reproduction resumes")
    p.add_argument("--no-save", action="store_true", help="print the table only (save and reuse no nets)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=lambda a: _lazy("reproduce", "cli_reproduce")(a))

    p = sub.add_parser("experiment", help="experiments: choose the pooling on validation data",
                       formatter_class=_Formatter)
    p.add_argument("what", choices=["pooling"], help="max vs L2 vs average pooling, chosen on validation accuracy")
    p.add_argument("--model", default="nielsen-conv2-relu", choices=["article", "nielsen-conv1", "nielsen-conv2",
                                                                       "nielsen-conv2-relu"], help="the network")
    p.add_argument("--pools", default="max,l2,avg", help="poolings to compare")
    p.add_argument("--seeds", default="0", help="comma list of seeds; every pooling uses the same ones")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (one-cycle, SGD Nesterov, batch 64)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=lambda a: _lazy("reproduce", "cli_experiment")(a))
    return parser


def _lazy(module, name):
    """A command implemented in another module, imported only when it runs."""
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(f"cnnlab.{module}"), name)


def _version() -> str:
    from .. import __version__  # noqa: PLC0415

    return f"cnnlab {__version__}"


# --------------------------------------------------------------------------------------- train
def _unique_dir(base: Path) -> Path:
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


# the optimizers that are optim.SGD: the only ones with a recipe's momentum and Nielsen's L2
SGD_NAMES = ("sgd", "nesterov")


def _momentum(optimizer, recipe, momentum):
    """The momentum a run uses: the recipe's goes with its SGD; another optimizer gets only one
    given explicitly (RMSprop takes it; Adam has betas instead, so it is refused there)."""
    if optimizer in SGD_NAMES:
        return recipe.momentum if momentum is None else momentum
    if momentum and optimizer in ("adam", "adamw"):
        raise ValueError(f"{optimizer} has no momentum setting (its betas play that part), got momentum {momentum}")
    return momentum or 0.0


def make_optimizer(name, params, lr, momentum, weight_decay, l2_lambda, n_train):
    from .. import optim  # noqa: PLC0415

    if name in SGD_NAMES:
        return optim.SGD(params, lr=lr, momentum=momentum if name == "sgd" else (momentum or 0.9),
                         nesterov=name == "nesterov", weight_decay=weight_decay, l2_lambda=l2_lambda,
                         n_train=n_train if l2_lambda else None)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay or 1e-2)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(name, optimizer, lr, epochs, steps_per_epoch):
    from .. import optim  # noqa: PLC0415

    if name == "constant":
        return None, True
    if name == "onecycle":
        return optim.OneCycleLR(optimizer, max_lr=lr, total_steps=max(epochs * steps_per_epoch, 1)), True
    if name == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=max(epochs * steps_per_epoch, 1)), True
    if name == "step":
        return optim.StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.1), False
    raise ValueError(f"unknown schedule {name!r}")


def train_run(model_name="default", dataset=None, epochs=None, batch_size=None, lr=None, optimizer=None,
              schedule=None, l2=None, augment=None, rotate=None, expand=False, validation=10000,
              early_stopping=None, seed=0, out=None, device="cpu", dry_run=False, progress=True,
              log=print, model_kwargs=None, train_size=None, momentum=None, save=True, hflip=None,
              scale=None, erase=None, elastic=None, elastic_sigma=None) -> dict:
    """Train one model with its recipe (any argument overrides it); save and return the run.

    Inputs are normalised with the data set's own statistics (``cnnlab.data.norm_stats``: MNIST's
    and Fashion-MNIST's constants, a folder's measured on its training split), for training and
    for the validation and test evaluations alike; the config records them as "mean" and "std",
    and whether training images were mirrored as "hflip".

    Returns a dict with the run directory ("run_dir"; None for dry runs and with save=False), the
    History, the config and the trained model.
    """
    import cnnlab  # noqa: PLC0415

    from .. import backend, checkpoint, models  # noqa: PLC0415
    from ..data import (  # noqa: PLC0415
        Augment,
        DataLoader,
        class_names,
        DeviceLoader,
        expand_shifts,
        load_dataset,
        norm_stats,
    )
    from ..train import fit  # noqa: PLC0415

    recipe = models.recipe(model_name)
    dataset = dataset if dataset is not None else recipe.dataset
    device = backend.normalize_device(device)
    cfg = {
        "model": model_name, "dataset": dataset,
        "epochs": epochs if epochs is not None else recipe.epochs,
        "batch_size": batch_size if batch_size is not None else recipe.batch_size,
        "lr": lr if lr is not None else recipe.lr,
        "optimizer": optimizer or recipe.optimizer,
        "model_kwargs": dict(model_kwargs or {}), "train_size": train_size,
        "momentum": _momentum(optimizer or recipe.optimizer, recipe, momentum), "weight_decay": recipe.weight_decay,
        "l2_lambda": l2 if l2 is not None else recipe.l2_lambda,
        "schedule": schedule or recipe.schedule,
        "augment": augment if augment is not None else recipe.augment,
        "rotate": rotate if rotate is not None else recipe.rotate,
        "hflip": bool(hflip if hflip is not None else recipe.hflip),
        "scale": float(scale if scale is not None else recipe.scale),
        "erase": float(erase if erase is not None else recipe.erase),
        "elastic": float(elastic if elastic is not None else recipe.elastic),
        "elastic_sigma": float(elastic_sigma if elastic_sigma is not None else recipe.elastic_sigma),
        "label_smoothing": recipe.label_smoothing,
        "expand": bool(expand), "validation": validation, "early_stopping": early_stopping,
        "seed": seed, "device": device,
    }
    for key in ("epochs", "batch_size"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {cfg[key]}")
    if early_stopping is not None and early_stopping < 1:
        raise ValueError(f"--early-stopping must be at least 1 epoch, got {early_stopping}")
    if early_stopping is not None and not validation:
        raise ValueError("--early-stopping needs a validation set (--validation > 0): it stops when validation "
                         "accuracy stops improving")
    if not cfg["lr"] > 0:
        raise ValueError(f"--lr must be positive, got {cfg['lr']}")
    if cfg["l2_lambda"] and cfg["optimizer"] not in SGD_NAMES:
        raise ValueError(f"Nielsen's L2 regularisation (lambda {cfg['l2_lambda']:g}"
                         f"{'' if l2 is not None else ', from the recipe'}) is applied by SGD only (sgd, nesterov); "
                         f"--optimizer {cfg['optimizer']} does not take it: add --l2 0")
    if not 0 <= cfg["scale"] < 1:
        raise ValueError(f"--scale must be in [0, 1), got {cfg['scale']}")
    if not 0 <= cfg["erase"] <= 1:
        raise ValueError(f"--erase must be a probability in [0, 1], got {cfg['erase']}")
    if not cfg["elastic"] >= 0:
        raise ValueError(f"--elastic must be >= 0, got {cfg['elastic']}")
    if not cfg["elastic_sigma"] > 0:
        raise ValueError(f"--elastic-sigma must be > 0, got {cfg['elastic_sigma']}")
    if device == "cuda":
        backend.xp_for("cuda")  # a clear error now if CuPy or the GPU is missing

    run_dir = None
    if save and not dry_run:
        run_dir = Path(out) if out else _unique_dir(Path("runs") / f"{model_name}-{dataset}")
        checkpoint.check_output_path(run_dir, folder=True)  # before any work, not after the first epoch

    t_load = time.perf_counter()
    split = load_dataset(dataset, validation=validation)
    # the data set's own (pixel/255) statistics: constants for mnist / fashion-mnist, measured on
    # the training split of a folder; recorded so evaluate / predict / show feed inputs the same way
    mean, std = norm_stats(split)
    cfg["mean"], cfg["std"] = float(mean), float(std)
    classes = class_names(dataset)
    if len(classes) != 10:
        cfg["model_kwargs"]["classes"] = len(classes)
    train_x, train_y = split.train
    if train_size is not None:
        train_x, train_y = train_x[:train_size], train_y[:train_size]
    if cfg["expand"]:
        train_x, train_y = expand_shifts(train_x, train_y)
    val = split.validation if validation > 0 else None
    test = split.test
    if dry_run:
        cfg["epochs"] = 1
        val = (val[0][:500], val[1][:500]) if val is not None else None
        test = (test[0][:500], test[1][:500])
    load_seconds = time.perf_counter() - t_load

    spec = models.spec(model_name, **cfg["model_kwargs"])
    cnnlab.manual_seed(seed)
    model = models.build(spec)
    if device != "cpu":
        model.to(device)
    if device == "cuda" and not (cfg["rotate"] or cfg["scale"] or cfg["erase"] or cfg["elastic"]):
        # the training set is uploaded once; batches are cut, shifted and normalised on the GPU
        loader = DeviceLoader(train_x, train_y, cfg["batch_size"], shuffle=True, seed=seed,
                              max_shift=cfg["augment"], hflip=cfg["hflip"], mean=cfg["mean"], std=cfg["std"],
                              device=device)
    else:
        aug = Augment.from_config(cfg)
        loader = DataLoader(train_x, train_y, cfg["batch_size"], shuffle=True, seed=seed, augment=aug,
                            mean=cfg["mean"], std=cfg["std"])
    # network3.py adds 0.5 * lambda * sum(w^2) / (number of mini-batches) to each mini-batch's
    # cost, so the published lambda acts as weight decay lambda / (n / batch size).
    opt = make_optimizer(cfg["optimizer"], model.parameters(), cfg["lr"], cfg["momentum"], cfg["weight_decay"],
                         cfg["l2_lambda"], max(1, -(-len(train_y) // cfg["batch_size"])))
    max_batches = 5 if dry_run else None
    steps = min(len(loader), max_batches) if max_batches else len(loader)
    sched, per_batch = make_scheduler(cfg["schedule"], opt, cfg["lr"], cfg["epochs"], steps)

    meta = {"machine": platform.node(), "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def metrics_of(history):
        return {**history.to_dict(), "data_seconds": load_seconds, "model": model_name, "dataset": dataset,
                "parameters": model.num_parameters(), **meta}

    def save(history, is_best):
        if run_dir is not None and is_best:
            checkpoint.save_run(run_dir, model, spec, cfg, metrics_of(history))
        elif run_dir is not None:
            checkpoint.write_json(run_dir / checkpoint.METRICS, metrics_of(history))

    if log:
        log(f"cnnlab: training {model_name} ({model.num_parameters():,} parameters) on {dataset}: "
            f"{len(train_y):,} train / {0 if val is None else len(val[1]):,} validation / {len(test[1]):,} test images"
            f"{' [dry run]' if dry_run else ''}")
        log(f"  {cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''}, batch {cfg['batch_size']}, "
            f"{cfg['optimizer']} lr {cfg['lr']} ({cfg['schedule']})" +
            (f", momentum {cfg['momentum']:g}" if cfg["momentum"] and cfg["optimizer"] in SGD_NAMES else "") +
            (f", weight decay {cfg['weight_decay']:g}" if cfg["weight_decay"] else "") +
            (f", L2 lambda {cfg['l2_lambda']:g}" if cfg["l2_lambda"] else "") +
            f", augment {cfg['augment']}px" + (f", rotate {cfg['rotate']} deg" if cfg['rotate'] else "") +
            (f", zoom +-{cfg['scale']:g}" if cfg["scale"] else "") +
            (f", elastic alpha {cfg['elastic']:g} sigma {cfg['elastic_sigma']:g}" if cfg["elastic"] else "") +
            (", hflip" if cfg["hflip"] else "") + (f", erase p={cfg['erase']:g}" if cfg["erase"] else "") +
            f", normalised with mean {cfg['mean']:.4f} std {cfg['std']:.4f}"
            f", seed {seed}, device {device}; data loaded in {load_seconds:.1f}s")
    history = fit(model, opt, loader, cfg["epochs"], validation=val, test=test, scheduler=sched,
                  scheduler_per_batch=per_batch, label_smoothing=cfg["label_smoothing"],
                  early_stopping=early_stopping, device=device, progress=progress, max_batches=max_batches,
                  on_epoch_end=save, log=log, mean=cfg["mean"], std=cfg["std"])
    if run_dir is not None:
        # The best-validation weights are back in the model: save them with the final metrics.
        checkpoint.save_run(run_dir, model, spec, cfg, metrics_of(history))
    return {"run_dir": run_dir, "history": history, "config": cfg, "model": model}


def cmd_train(args) -> int:
    from ..checkpoint import WEIGHTS  # noqa: PLC0415

    if args.out and not args.dry_run and (Path(args.out) / WEIGHTS).exists():
        raise ValueError(f"--out {args.out} already holds a trained run; choose another folder (or leave out "
                         f"--out for a new numbered one), or delete it first")
    res = train_run(args.model, args.dataset, args.epochs, args.batch_size, args.lr, args.optimizer, args.schedule,
                    args.l2, args.augment, args.rotate, args.expand, args.validation, args.early_stopping,
                    args.seed, args.out, args.device, args.dry_run, progress=not args.no_progress, hflip=args.hflip,
                    scale=args.scale, erase=args.erase, elastic=args.elastic, elastic_sigma=args.elastic_sigma)
    h = res["history"]
    if h.test_accuracy is None:
        print("no epoch finished")
        return 1
    where = f"; run saved to {res['run_dir']}" if res["run_dir"] else ""
    note = " (interrupted)" if h.interrupted else ""
    chosen = (f"(best validation {100 * h.best_validation_accuracy:.2f}%)" if h.best_validation_accuracy is not None
              else "(the last epoch: no validation set to choose on)")
    print(f"test accuracy {100 * h.test_accuracy:.2f}% at epoch {h.best_epoch} {chosen}, {h.seconds:.0f}s{note}{where}")
    return 0


# ---------------------------------------------------------------------------------- evaluate
def _tta_name(mirror: bool, shift: bool) -> str:
    return " and ".join(n for n, on in (("mirror", mirror), ("1-px shift", shift)) if on)


def cmd_evaluate(args) -> int:
    """Each run's accuracy, plain and with test-time augmentation, and the ensemble's.

    Where the runs held out a validation set (the same one), every number is given on it too, and the
    ensemble's method (plurality vote or averaged probabilities) is chosen there, as the article
    chooses pooling: on validation accuracy, never on the test set.
    """
    from .. import checkpoint  # noqa: PLC0415
    from ..data import load_dataset  # noqa: PLC0415
    from ..ensemble import METHODS  # noqa: PLC0415
    from ..train import Progress, evaluate, tta_views  # noqa: PLC0415

    tta = _tta_name(args.mirror_tta, args.shift_tta)
    variants = ["plain"] + ([tta] if tta else [])
    dataset = n_validation = None
    splits: dict[str, tuple] = {}
    probabilities: dict[tuple[str, str], list] = {}  # (variant, split) -> one (N, classes) array per run
    # Every run's config first (the JSON only), so that a mix of data sets or a run unfit for
    # --mirror-tta stops the command before any evaluation.
    first = None
    for run in args.runs:
        if not Path(run).is_dir():
            raise checkpoint.RunError(f"{run}: no such run directory")
        cfg_path = Path(run) / checkpoint.CONFIG
        cfg = checkpoint.read_json(cfg_path) if cfg_path.exists() else {}
        if not cfg:
            print(f"note: {run} has no {checkpoint.CONFIG}: taken as an MNIST run with MNIST's normalisation",
                  file=sys.stderr)
        if args.mirror_tta and not cfg.get("hflip"):
            raise ValueError(f"--mirror-tta: {run} was not trained with --hflip, so mirrored test images "
                             f"are not its kind of input (a mirrored digit is no digit)")
        if first is None:
            first = cfg.get("dataset", "mnist")
        elif cfg.get("dataset", "mnist") != first:
            raise ValueError(f"{run} was trained on {cfg.get('dataset', 'mnist')!r}, {args.runs[0]} on {first!r}: "
                             f"an ensemble needs one data set")
    for run in args.runs:
        model, spec, cfg, metrics = checkpoint.load_run(run)
        if dataset is None:
            dataset, n_validation = cfg.get("dataset", "mnist"), int(cfg.get("validation", 10000))
            split = load_dataset(dataset, validation=n_validation)
            splits = {"test": split.test}
            if n_validation > 0:
                splits["validation"] = split.validation
        elif int(cfg.get("validation", 10000)) != n_validation:
            # Another split: the first run's validation images may be this run's training images.
            splits.pop("validation", None)
        mean, std = checkpoint.normalization(cfg, Path(run) / checkpoint.CONFIG)
        if args.device != "cpu":
            model.to(args.device)
        t0 = time.perf_counter()
        parts = []
        n_views = len(tta_views(splits["test"][0][:1], args.mirror_tta, args.shift_tta))
        # a bar on a terminal only: in a log, the per-run line says it all
        bar = Progress(n_views * len(splits), f"{run}", enabled=not args.no_progress and sys.stderr.isatty(),
                       unit="view")
        for name in ("test", "validation"):
            if name not in splits:
                continue
            images, labels = splits[name]
            per_view = []
            for i, view in enumerate(tta_views(images, args.mirror_tta, args.shift_tta)):
                res = evaluate(model, view, labels, mean=mean, std=std, device=args.device, return_predictions=True)
                per_view.append(res["probabilities"])
                bar.update(1, view=f"{name}:{i + 1}/{n_views}")
                if i == 0:
                    text = f"{name} {100 * res['accuracy']:.2f}%"
                    if name == "test":
                        text = (f"test accuracy {100 * res['accuracy']:.2f}% ({round(res['accuracy'] * res['n'])}/"
                                f"{res['n']}), loss {res['loss']:.4f}")
            probabilities.setdefault(("plain", name), []).append(per_view[0])
            if tta:
                probs = np.mean(per_view, axis=0)
                probabilities.setdefault((tta, name), []).append(probs)
                text += f", with {tta} averaging {100 * float((probs.argmax(1) == labels).mean()):.2f}%"
            parts.append(text)
        bar.close()
        line = f"{run}: {spec['name']} on {dataset}: " + "; ".join(parts) + f"; {time.perf_counter() - t0:.1f}s"
        if metrics.get("test_accuracy") is not None:
            line += f"; recorded at training: {100 * metrics['test_accuracy']:.2f}%"
        print(line)
    if len(args.runs) > 1:
        _report_ensemble(len(args.runs), variants, splits, probabilities, METHODS)
    elif tta and "validation" in splits:
        scores = {v: float((probabilities[(v, "validation")][0].argmax(1) == splits["validation"][1]).mean())
                  for v in variants}
        chosen = max(variants, key=scores.get)  # the first of equals: plain, the simpler, wins a tie
        test = float((probabilities[(chosen, "test")][0].argmax(1) == splits["test"][1]).mean())
        print(f"chosen on validation: {'no averaging' if chosen == 'plain' else chosen + ' averaging'}; "
              f"its test accuracy {100 * test:.2f}%")
    return 0


def _report_ensemble(n_runs, variants, splits, probabilities, methods) -> None:
    """Print the ensemble's accuracies and the (variant, method) chosen on validation, if there is one."""
    scores = {(v, m, name): float((f(probabilities[(v, name)]) == splits[name][1]).mean())
              for v in variants for m, f in methods.items() for name in splits}
    for v in variants:
        each = "" if v == "plain" else f" (each with {v} averaging)"
        for name in ("validation", "test"):
            if name in splits:
                print(f"ensemble of {n_runs}{each}: {name} accuracy "
                      f"{100 * scores[(v, 'plurality vote', name)]:.2f}% by plurality vote, "
                      f"{100 * scores[(v, 'averaged probabilities', name)]:.2f}% by averaged probabilities")
    if "validation" in splits:
        # max() keeps the first of equals: the simpler choice (no averaging, the vote) wins a tie.
        v, m = max(((v, m) for v in variants for m in methods), key=lambda vm: scores[(*vm, "validation")])
        how = m if v == "plain" else f"{m}, each with {v} averaging"
        print(f"chosen on validation: {how}; its test accuracy {100 * scores[(v, m, 'test')]:.2f}%")


# ----------------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from .. import checkpoint  # noqa: PLC0415
    from .. import functional as F  # noqa: PLC0415
    from ..autograd import Tensor, no_grad  # noqa: PLC0415
    from ..data import class_names, form_for, standardize  # noqa: PLC0415

    model, spec, cfg, _ = checkpoint.load_run(args.run)
    mean, std = checkpoint.normalization(cfg, Path(args.run) / checkpoint.CONFIG)
    classes = class_names(cfg.get("dataset", "mnist"))
    convert, _ = form_for(cfg.get("dataset", "mnist"))
    status = 0
    for path in args.images:
        try:
            img = convert(path)
        except ValueError as exc:  # the message names the file
            print(f"cnnlab predict: error: {exc}", file=sys.stderr)
            status = 1
            continue
        x = standardize(img, mean, std).reshape(1, 1, 28, 28)
        with no_grad():
            prob = F.softmax(model(Tensor(x)), 1).numpy()[0]
        order = np.argsort(-prob)[: max(1, args.top)]
        tops = ", ".join(f"{classes[i]} ({100 * prob[i]:.1f}%)" for i in order)
        print(f"{path}: {classes[order[0]]}    top: {tops}")
    return status


# ----------------------------------------------------------------------------------- summary
def cmd_summary(args) -> int:
    from .. import checkpoint, models  # noqa: PLC0415

    if Path(args.model).is_dir():
        model, spec, _, _ = checkpoint.load_run(args.model)
        name = spec["name"]
    else:
        name = args.model
        model = models.build(name)
    rows = models.summarize(model)
    w = max(len(r[1]) for r in rows)
    print(f"{name}: {models.MODELS[name].description}")
    print(f"{'#':>3}  {'layer':<{w}}  {'output shape':<16} {'parameters':>10}")
    print(f"{'':>3}  {'input':<{w}}  {str((1, 28, 28)):<16} {'':>10}")
    for idx, layer, shape, params in rows:
        print(f"{idx:>3}  {layer:<{w}}  {str(shape):<16} {params:>10,}")
    print(f"total parameters: {model.num_parameters():,}")
    shared = _shared_weights_line(model, rows)
    if shared:
        print(shared)
    return 0


def _shared_weights_line(model, rows) -> str | None:
    """What weight sharing saves in the model's first convolution: its parameters against those of
    a fully connected layer from the same input to the same number of neurons (the article's
    argument), or None for a model without convolutions."""
    from .. import nn  # noqa: PLC0415

    for (_, _, shape, params), layer in zip(rows, model.layers):
        if isinstance(layer, nn.Conv2d):
            inputs = layer.in_channels * 28 * 28  # summarize's input
            neurons = int(np.prod(shape))
            kh, kw = layer.weight.shape[2:]
            bias = layer.bias is not None
            dense = inputs * neurons + (neurons if bias else 0)
            return (f"shared weights: the first conv layer's {neurons:,} neurons ({shape[0]} feature maps of "
                    f"{shape[1]}x{shape[2]}) share {params:,} parameters ({shape[0]} maps x ({kh}x{kw}x"
                    f"{layer.in_channels} weights{' + 1 bias' if bias else ''})); fully connected to the same "
                    f"28x28 input they would need {dense:,}, {dense / params:,.0f}x more")
    return None


def cmd_models(args) -> int:
    from .. import models  # noqa: PLC0415

    print(f"{'name':<20} {'params':>9} {'book':>7}  description")
    for name, info in models.MODELS.items():
        n = models.build(name).num_parameters()
        book = f"{100 * info.book_accuracy:.2f}%" if info.book_accuracy else ""
        print(f"{name:<20} {n:>9,} {book:>7}  {info.description}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..checkpoint import RunError  # noqa: PLC0415
    from ..data import DataError  # noqa: PLC0415

    try:
        return args.func(args) or 0
    except BrokenPipeError:  # e.g. `cnnlab summary best | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # as a shell reports a command ended by SIGPIPE
    except (RunError, DataError, ValueError, FloatingPointError, RuntimeError, OSError) as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
