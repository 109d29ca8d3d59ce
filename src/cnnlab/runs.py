"""A training run, the library's unit of work: one configuration in, one run directory out.

    >>> from cnnlab import recipes, runs
    >>> config = recipes.get("default").replace(epochs=2)   # a frozen TrainConfig
    >>> run = runs.train(config, out="runs/mine")            # train, evaluate each epoch, save
    >>> run.history.test_accuracy
    >>> runs.load("runs/mine").config == run.config          # config.json is the config
    True

``TrainConfig`` is the only shape a training configuration has: what ``cnnlab train`` builds from
its flags, what a recipe is (``cnnlab.recipes``), and what a run's config.json holds (its JSON
round trip). It is checked once, when it is made; everything downstream trusts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import filelock
import numpy as np

from . import backend, calibration, checkpoint, distributed, models, nn, optim
from .autograd import Tensor, no_grad
from .data import (
    APPEARANCE,
    Augment,
    DataLoader,
    DeviceLoader,
    class_names,
    expand_shifts,
    load_dataset,
    norm_stats,
    shard_rows,
)
from .errors import SettingError
from .provenance import provenance
from .train import History, eval_loader, evaluate, fit

__all__ = [
    "CONFIG_FORMAT", "OPTIMIZERS", "SCHEDULES", "SGD_NAMES", "OptimizerConfig", "Run", "TENSORBOARD_DIR", "TrainConfig",
    "calibrate", "load", "load_config", "load_metrics", "make_optimizer", "make_scheduler", "resume", "runnable",
    "temperature", "train", "unique_dir",
]

OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adam", "adamw")
SGD_NAMES = ("sgd", "nesterov")  # the optimizers that are optim.SGD: the only ones with Nielsen's L2
SCHEDULES = ("constant", "step", "cosine", "onecycle")
CONFIG_FORMAT = 2  # config.json's "format"; files without it are from before TrainConfig (format 1)
_NO_AUGMENT = Augment(max_shift=0)


def _bad(setting: str, problem: str) -> SettingError:
    return SettingError("TrainConfig", setting, problem)


def _whole(value, setting: str, low: int, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(setting, f"must be a whole number, got {value!r}")
    if value < low:
        raise _bad(setting, f"must be at least {low}{unit}, got {value}")


def _number(value, setting: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(setting, f"must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, and its settings.

    Attributes:
        name: sgd | nesterov | rmsprop | adam | adamw.
        lr: the learning rate (the peak of a one-cycle schedule).
        momentum: SGD's and RMSprop's momentum (nesterov with 0 uses 0.9); adam has none.
        weight_decay: L2 penalty as weight decay (adamw with 0 uses 1e-2).
        l2_lambda: Nielsen's lambda (cost + lambda/(2n) sum w^2), SGD only.
    """

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    l2_lambda: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise _bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        for key in ("lr", "momentum", "weight_decay", "l2_lambda"):
            object.__setattr__(self, key, _number(getattr(self, key), key))
        if not self.lr > 0:
            raise _bad("lr", f"must be positive, got {self.lr}")
        for key in ("momentum", "weight_decay", "l2_lambda"):
            if getattr(self, key) < 0:
                raise _bad(key, f"must be >= 0, got {getattr(self, key)}")
        if self.l2_lambda and self.name not in SGD_NAMES:
            raise _bad("l2_lambda", f"(Nielsen's L2, lambda {self.l2_lambda:g}) is applied by SGD only (sgd, "
                                    f"nesterov); optimizer {self.name} does not take it: set it to 0")
        if self.momentum and self.name in ("adam", "adamw"):
            raise _bad("momentum", f"must be 0: {self.name} has no momentum setting (its betas play that part), "
                                   f"got momentum {self.momentum:g}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Frozen; make variants with ``replace``.

    Attributes:
        model: an architecture of the zoo (``cnnlab.models.MODELS``), e.g. "fast", or a model
            registered with ``models.register``; "sequential" for a run of a model object saved as
            a layer spec (``train(config, model=...)`` sets it; its spec.json holds the layers).
        model_kwargs: its arguments, e.g. {"pool": "l2"}.
        dataset: "mnist", "fashion-mnist", or a folder with one sub-folder of images per class.
        epochs, batch_size: passes over the training data; images per step.
        optimizer: an OptimizerConfig.
        schedule: the learning rate over training: constant | step | cosine | onecycle.
        augment: the training images' random augmentation, a ``cnnlab.data.Augment``.
        label_smoothing: of the cross-entropy's targets, in [0, 1).
        expand: Nielsen's expanded data (every training image also shifted by one pixel four ways).
        validation: images held out from the end of the training set to choose the epoch on.
        train_size: train on only the first N training images (None: all).
        early_stopping: stop after this many epochs without a better validation accuracy.
        seed: initialisation, shuffling, dropout and augmentation.
        device: "cpu" or "cuda".
        mean, std: the inputs' normalisation, ``(pixel/255 - mean) / std``; None before training
            means the data set's own statistics, which the saved config then records.
        classes: the class names in label order; None before training means the data set's, which
            the saved config then records (a folder's sub-folders may change after training).
        recipe: the name of the preset this config was made from, if any (names runs and logs).
        provenance: which cnnlab trained it, ``cnnlab.provenance.provenance()``: {"cnnlab": version,
            "git_commit": ..., "git_dirty": ...}; ``train`` records it (None before training, and
            in runs saved before it was recorded). Read-only.
    """

    model: str = "fast"
    model_kwargs: dict = field(default_factory=dict)  # stored read-only
    dataset: str = "mnist"
    epochs: int = 6
    batch_size: int = 64
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: str = "constant"
    augment: Augment = _NO_AUGMENT
    label_smoothing: float = 0.0
    expand: bool = False
    validation: int = 10000
    train_size: int | None = None
    early_stopping: int | None = None
    seed: int = 0
    device: str = "cpu"
    mean: float | None = None
    std: float | None = None
    classes: tuple[str, ...] | None = None
    recipe: str | None = None
    provenance: dict | None = None  # stored read-only

    def __post_init__(self) -> None:
        if isinstance(self.model_kwargs, MappingProxyType):
            object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        try:
            if self.model != models.SEQUENTIAL or self.model_kwargs:
                models.spec(self.model, **_mapping(self.model_kwargs, "model_kwargs"))
        except ValueError as exc:
            raise _bad("model", str(exc).removeprefix("unknown model ")) from None
        # read-only, so that a config (a recipe's too) cannot be changed through it
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))
        if not isinstance(self.dataset, str) or not self.dataset:
            raise _bad("dataset", f"must be a data set name or a folder, got {self.dataset!r}")
        _whole(self.epochs, "epochs", 1)
        _whole(self.batch_size, "batch_size", 1)
        if not isinstance(self.optimizer, OptimizerConfig):
            raise _bad("optimizer", f"must be an OptimizerConfig, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise _bad("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not isinstance(self.augment, Augment):
            raise _bad("augment", f"must be a cnnlab.data.Augment, got {self.augment!r}")
        if not 0 <= _number(self.label_smoothing, "label_smoothing") < 1:
            raise _bad("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not isinstance(self.expand, bool):
            raise _bad("expand", f"must be True or False, got {self.expand!r}")
        _whole(self.validation, "validation", 0)
        if self.train_size is not None:
            _whole(self.train_size, "train_size", 1)
        if self.early_stopping is not None:
            _whole(self.early_stopping, "early_stopping", 1, " epoch")
            if not self.validation:
                raise _bad("early_stopping", "needs a validation set (validation > 0): it stops when validation "
                                             "accuracy stops improving")
        _whole(self.seed, "seed", 0)
        try:
            object.__setattr__(self, "device", backend.normalize_device(self.device))
        except ValueError as exc:
            raise _bad("device", str(exc)) from None
        if (self.mean is None) != (self.std is None):
            raise _bad("std" if self.std is None else "mean", "must be given with the other of mean and std")
        if self.mean is not None:
            object.__setattr__(self, "mean", _number(self.mean, "mean"))
            if not _number(self.std, "std") > 0:
                raise _bad("std", f"must be positive, got {self.std}")
            object.__setattr__(self, "std", float(self.std))
        if self.classes is not None:
            if not isinstance(self.classes, (list, tuple)) or len(self.classes) < 2 \
                    or not all(isinstance(c, str) for c in self.classes):
                raise _bad("classes", f"must be two or more names, got {self.classes!r}")
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.recipe is not None and not isinstance(self.recipe, str):
            raise _bad("recipe", f"must be a name, got {self.recipe!r}")
        if self.provenance is not None:
            if not isinstance(self.provenance, (dict, MappingProxyType)) \
                    or not all(isinstance(k, str) for k in self.provenance):
                raise _bad("provenance", f"must be a JSON object, got {self.provenance!r}")
            object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    # ------------------------------------------------------------------ variants
    def replace(self, **changes) -> TrainConfig:
        """A copy with some settings changed, checked like a new config.

        Besides the fields, the optimizer's settings (lr, momentum, weight_decay, l2_lambda) and
        the augmentation's (max_shift, max_degrees, hflip, max_scale, erase, elastic, elastic_sigma,
        stroke, blur, lowres, contrast, noise)
        can be named directly. ``optimizer`` may be a name: an SGD recipe's momentum then goes
        only to SGD (and RMSprop gets only a momentum given here); the other settings carry over.
        """
        opt_changes = {k: changes.pop(k) for k in _OPTIMIZER_KEYS if k in changes}
        aug_changes = {k: changes.pop(k) for k in _AUGMENT_KEYS if k in changes}
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            known = ", ".join(sorted(_FIELDS | _OPTIMIZER_KEYS | _AUGMENT_KEYS))
            raise _bad(unknown[0], f"is not a setting; settings are: {known}")
        optimizer = changes.pop("optimizer", self.optimizer)
        if isinstance(optimizer, str):
            keep = optimizer in SGD_NAMES and self.optimizer.name in SGD_NAMES
            opt_changes = {"name": optimizer, "momentum": self.optimizer.momentum if keep else 0.0, **opt_changes}
            optimizer = self.optimizer
        if opt_changes:  # all at once: each intermediate need not be a valid optimizer
            optimizer = dataclasses.replace(optimizer, **opt_changes)
        augment = changes.pop("augment", self.augment)
        if aug_changes:
            augment = dataclasses.replace(augment, **aug_changes)
        return dataclasses.replace(self, optimizer=optimizer, augment=augment, **changes)

    def comparable(self) -> TrainConfig:
        """The config with what is only recorded, not chosen, cleared: the recipe's name, the
        normalisation and the class names (the data set's own), and which cnnlab trained it, so two
        runs trained alike compare equal."""
        return dataclasses.replace(self, recipe=None, mean=None, std=None, classes=None, provenance=None)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def name(self) -> str:
        """The recipe's name, or the architecture's for a config made by hand."""
        return self.recipe or self.model

    # ------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The JSON form: what a run's config.json holds."""
        out = {"format": CONFIG_FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, (tuple, MappingProxyType)):
                value = list(value) if isinstance(value, tuple) else dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The config a dict from ``to_dict`` (or an older run's flat config.json) describes.

        Raises:
            SettingError: a missing, unknown or wrongly typed setting (the message names it).
        """
        data = _mapping(data, "config")
        if "format" not in data:
            data = _from_format_1(data)
        elif data["format"] != CONFIG_FORMAT:
            raise _bad("format", f"must be {CONFIG_FORMAT} (this cnnlab's), got {data['format']!r}")
        unknown = sorted(set(data) - _FIELDS - {"format"})
        if unknown:
            raise _bad(unknown[0], "is not a setting of this cnnlab's TrainConfig")
        values = {k: v for k, v in data.items() if k != "format"}
        for key, kind in (("optimizer", OptimizerConfig), ("augment", Augment)):
            if key in values:
                sub = _mapping(values[key], key)
                names = {f.name for f in dataclasses.fields(kind)}
                if set(sub) - names:
                    raise _bad(f"{key}.{sorted(set(sub) - names)[0]}", "is not a setting")
                try:
                    values[key] = kind(**sub)
                except TypeError as exc:
                    raise _bad(key, f"has a setting of the wrong type ({exc})") from None
        return cls(**values)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_OPTIMIZER_KEYS = {"lr", "momentum", "weight_decay", "l2_lambda"}
_AUGMENT_KEYS = {f.name for f in dataclasses.fields(Augment)}


def _mapping(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(what, f"must be a JSON object, got {type(value).__name__}")
    return value


def _from_format_1(old: dict) -> dict:
    """An older run's flat config.json (before TrainConfig) as ``to_dict`` would write it.

    Its "model" named a recipe that stood for an architecture (``models.LEGACY_NAMES``); the
    optimizer's and the augmentation's settings were flat keys; keys it lacks were off.
    """
    if "model" not in old:
        raise _bad("model", "is missing")
    name = old["model"]
    arch, fixed = models.LEGACY_NAMES.get(name, (name, {}))
    aug = Augment.from_config(old) or _NO_AUGMENT
    plain = ("dataset", "epochs", "batch_size", "schedule", "label_smoothing", "expand", "validation", "train_size",
             "early_stopping", "seed", "device", "mean", "std")
    kwargs = {**fixed, **_mapping(old.get("model_kwargs") or {}, "model_kwargs")}
    return {"format": CONFIG_FORMAT, "model": arch, "recipe": name, "model_kwargs": kwargs,
            "optimizer": {"name": old.get("optimizer", "sgd"), "lr": old.get("lr", 0.1),
                          "momentum": old.get("momentum") or 0.0, "weight_decay": old.get("weight_decay") or 0.0,
                          "l2_lambda": old.get("l2_lambda") or 0.0},
            "augment": dataclasses.asdict(aug), **{k: old[k] for k in plain if k in old}}


# -------------------------------------------------------------------- the parts of a run
def make_optimizer(config: OptimizerConfig, params, n_train: int):
    """The optimizer ``config`` names, over ``params``.

    ``n_train`` (training images per epoch) scales Nielsen's L2: network3.py adds
    0.5 * lambda * sum(w^2) / (number of mini-batches) to each mini-batch's cost, so its lambda acts
    as weight decay lambda / n per image.
    """
    c = config
    if c.name in SGD_NAMES:
        return optim.SGD(params, lr=c.lr, momentum=c.momentum if c.name == "sgd" else (c.momentum or 0.9),
                         nesterov=c.name == "nesterov", weight_decay=c.weight_decay, l2_lambda=c.l2_lambda,
                         n_train=n_train if c.l2_lambda else None)
    if c.name == "rmsprop":
        return optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum)
    if c.name == "adam":
        return optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    return optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay or 1e-2)


def make_scheduler(name: str, optimizer, lr: float, epochs: int, steps_per_epoch: int):
    """(scheduler or None, whether it steps after every batch rather than every epoch)."""
    total = max(epochs * steps_per_epoch, 1)
    if name == "constant":
        return None, True
    if name == "onecycle":
        return optim.OneCycleLR(optimizer, max_lr=lr, total_steps=total), True
    if name == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=total), True
    if name == "step":
        return optim.StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.1), False
    raise _bad("schedule", f"must be one of {', '.join(SCHEDULES)}, got {name!r}")


@dataclass
class Run:
    """A trained (or loaded) run.

    Attributes:
        dir: its run directory (None when nothing was saved).
        config: how it was trained, normalisation filled in.
        spec: the model's {"name", "kwargs"}, or a layer spec (``models.build(spec)`` makes it again).
        model: the trained model, with the best-validation epoch's weights (eval mode when loaded).
        metrics: what metrics.json holds: the per-epoch history, the test accuracy, the machine.
        history: the History of a run trained now (None for a loaded one).
    """

    dir: Path | None
    config: TrainConfig
    spec: dict
    model: nn.Module
    metrics: dict
    history: History | None = None

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")


def unique_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist yet."""
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def train(config: TrainConfig, out=None, *, model: nn.Module | None = None, save: bool = True,
          dry_run: bool = False, progress: bool = True, log=print, overwrite: bool = False, world=None,
          tensorboard: bool = False) -> Run:
    """Train one model as ``config`` says, evaluating after every epoch; save and return the run.

    Nielsen's protocol: the model kept (and saved, and reported) is the one of the epoch with the
    best validation accuracy, and its test accuracy is the run's. Inputs are normalised with the
    data set's own statistics (recorded in the saved config).

    The run directory is locked for the whole training (a second ``train`` into it stops at once),
    and after every epoch it holds what ``resume`` needs to go on from there; its manifest, written
    last, says which files make the run. Ctrl-C keeps the best epoch so far (nothing loadable if no
    epoch finished); divergence stops the run with the last good epoch kept.

    Args:
        config: the TrainConfig.
        model: a model object to train instead of the one ``config.model`` names, as it is (its
            weights are the starting point, and it is trained in place): an ``nn.Sequential`` of
            cnnlab's layers (saved as a layer spec), an instance of a class registered with
            ``models.register``, or a model ``models.build`` made (``models.spec_of`` says which);
            the config's model and model_kwargs are replaced by what its spec records.
        out: the run directory (default: runs/<recipe>-<dataset>, numbered if taken); a folder that
            already holds a run is refused before any work, unless ``overwrite``.
        save: write the run directory (after every epoch, and at the end).
        dry_run: a few batches of one epoch, small evaluation sets, nothing saved.
        progress: a progress bar (plain lines when not on a terminal).
        log: where the log lines go (None for silence).
        overwrite: replace a run already in ``out`` (as a stopped reproduction retrains its nets).
        world: the processes to train on (``cnnlab.distributed``); by default every process of the
            MPI job this one belongs to (``distributed.init()``), else this one alone. With several,
            they train data-parallel the model one process would train on the same global batch
            (``config.batch_size``), and rank 0 alone logs, shows progress and writes ``out``.
            Give ``distributed.local()`` to train alone inside an MPI job.
        tensorboard: also write each epoch's numbers as TensorBoard event files in RUN/tensorboard/
            (the optional package tensorboardX; nothing is written when nothing is saved).

    Returns:
        The Run (``run.history`` has the per-epoch records; ``run.dir`` is None if nothing was saved,
        and on every rank but 0).

    Raises:
        FloatingPointError: training diverged (the run directory keeps the last good epoch).
    """
    if tensorboard:
        _event_writer_class()  # a missing tensorboardX is named now, not after the first epoch
    if config.provenance is None:  # recorded in config.json: which cnnlab trained the run
        config = config.replace(provenance=provenance())
    model_spec = None
    if model is not None:
        model_spec = models.spec_of(model)  # a ValueError naming why it cannot be saved, before any work
        named = config.model == model_spec["name"]  # else the recipe's name would misname the model
        config = config.replace(model=model_spec["name"], model_kwargs=model_spec.get("kwargs", {}),
                                recipe=config.recipe if named else None)
    elif config.model == models.SEQUENTIAL:
        raise _bad("model", f"{models.SEQUENTIAL!r} names a model object saved as a layer spec: pass the model, "
                            f"runs.train(config, model=...)")
    world = distributed.init() if world is None else world
    with world.guard("training"):  # an error on one process stops them all, not only itself
        if not world.lead:  # rank 0 alone logs and writes
            save, progress, log = False, False, None
        if config.device == "cuda" and world.size > 1:
            distributed.use_local_gpu(world)  # GPU local_rank % count, before anything lands on one
        return _train(config, out, save, dry_run, progress, log, overwrite, world, (model, model_spec), tensorboard)


def _train(config, out, save, dry_run, progress, log, overwrite, world, given, tensorboard=False) -> Run:
    """``train`` on this process of ``world``."""
    if config.device == "cuda":
        backend.xp_for("cuda")  # a clear error now if CuPy or the GPU is missing
    if not save or dry_run:
        return _Training(config, None, dry_run, progress, log, world, *given).run()
    run_dir = Path(out) if out else unique_dir(Path("runs") / f"{config.name}-{Path(config.dataset).name}")
    checkpoint.check_output_path(run_dir, folder=True)  # before any work, not after the first epoch
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_into(config, run_dir, progress, log, overwrite, world, given, tensorboard)
    except BaseException:
        if made and not (run_dir / checkpoint.MANIFEST).exists():  # nothing of the run was saved: no folder
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train_into(config, run_dir: Path, progress, log, overwrite, world, given, tensorboard=False) -> Run:
    with _locked(run_dir):
        if not overwrite and ((run_dir / checkpoint.WEIGHTS).exists() or (run_dir / checkpoint.MANIFEST).exists()):
            raise ValueError(f"{run_dir} already holds a run; continue it with `cnnlab train --resume {run_dir}` "
                             f"(runs.resume), choose another folder, or delete it first")
        for stale in (checkpoint.MANIFEST, checkpoint.WEIGHTS, checkpoint.METRICS, checkpoint.METRICS_CSV):
            (run_dir / stale).unlink(missing_ok=True)  # an overwritten run's: nothing of it stays loadable
        if overwrite:
            shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)  # its curves are not this run's
        return _Training(config, run_dir, False, progress, log, world, *given, tensorboard=tensorboard).run()


def resume(run_dir, *, progress: bool = True, log=print, world=None, tensorboard: bool | None = None) -> Run:
    """Go on training a run from its last complete epoch, as if it had never stopped.

    On the CPU the final weights are bitwise those of an uninterrupted run with the same config,
    trained by as many processes: a run trained under ``mpiexec -n N`` resumes under ``mpiexec -n N``
    (rank 0 reads the checkpoint and sends it to the others; it alone writes, as in ``train``).

    Args:
        world: the processes to go on with (``cnnlab.distributed``); by default every process of
            the MPI job this one belongs to, else this one alone.
        tensorboard: write TensorBoard event files (None: if the run wrote them, as ``train`` did;
            the events of epochs after the last complete one, from the stopped attempt, are dropped).

    Raises:
        checkpoint.RunError: no such run, a finished one, one whose files are not whole, or one
            trained by another number of processes (on every rank, with the same message).
    """
    run_dir = Path(run_dir)
    world = distributed.init() if world is None else world
    if world.lead:  # rank 0 alone writes the run, its events too
        if tensorboard is None:
            tensorboard = (run_dir / TENSORBOARD_DIR).is_dir()
        if tensorboard:
            _event_writer_class()  # a missing tensorboardX is named now, not after the first epoch
    if world.size == 1:
        with _locked(_existing(run_dir)):
            config, restored = _resume_plan(run_dir, processes=1)
            if log:
                log(_resuming(run_dir, config, restored))
            return _Training(config, run_dir, False, progress, log, world, model_spec=_saved_spec(run_dir),
                             tensorboard=tensorboard).run(restored)
    if not world.lead:  # rank 0 reads the run and sends what it restores; it alone logs and writes
        plan = world.broadcast_object(None, what="reading the run to resume")
        if "error" in plan:
            raise checkpoint.RunError(plan["error"])
        with world.guard("training"):
            return _Training(TrainConfig.from_dict(plan["config"]), None, False, False, None, world,
                             model_spec=plan["spec"]).run(plan["restored"])
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_locked(_existing(run_dir)))
            config, restored = _resume_plan(run_dir, processes=world.size)
            spec = _saved_spec(run_dir)
        except Exception as exc:  # the others wait for the plan: they stop with the same line
            message = str(exc) if isinstance(exc, checkpoint.RunError) else f"{run_dir}: {type(exc).__name__}: {exc}"
            world.broadcast_object({"error": message}, what="reading the run to resume")
            raise
        world.broadcast_object({"config": config.to_dict(), "spec": spec, "restored": restored},
                               what="reading the run to resume")
        with world.guard("training"):
            if log:
                log(_resuming(run_dir, config, restored))
            return _Training(config, run_dir, False, progress, log, world, model_spec=spec,
                             tensorboard=tensorboard).run(restored)


def _existing(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise checkpoint.RunError(f"{run_dir}: no such run directory")
    return run_dir


def _resume_plan(run_dir: Path, processes: int) -> tuple[TrainConfig, tuple[dict, dict] | None]:
    """(config, (arrays, saved state) of the last complete epoch, or None to start it again) of a
    run to resume on ``processes`` processes; RunError when it cannot be resumed."""
    manifest = checkpoint.read_manifest(run_dir)
    if manifest is None:
        config_path = run_dir / checkpoint.CONFIG
        if (run_dir / checkpoint.WEIGHTS).exists():
            raise checkpoint.RunError(f"{run_dir} has no {checkpoint.MANIFEST}: it was saved by an older cnnlab "
                                      f"and cannot be resumed")
        if not config_path.exists() or "format" not in checkpoint.read_json(config_path):
            raise checkpoint.RunError(f"{run_dir}: nothing was saved before it stopped; train it again")
        return load_config(run_dir), None  # stopped before its first save: start it again, as its config says
    if manifest["status"] == "finished":
        # a run killed between its last two steps (marked finished, resume state not yet deleted)
        # keeps a state folder no longer needed: it goes now
        shutil.rmtree(run_dir / checkpoint.STATE_DIR, ignore_errors=True)
        raise checkpoint.RunError(f"{run_dir} is finished ({manifest.get('epochs_done')} epochs): nothing to "
                                  f"resume")
    if manifest["status"] == "diverged":
        raise checkpoint.RunError(f"{run_dir} diverged ({manifest.get('message')}); resuming would diverge "
                                  f"again: train it again with a smaller learning rate")
    trained_by = manifest.get("processes", 1)
    if trained_by != processes:  # its global batches split otherwise: another run, not this one resumed
        how = "without mpiexec" if trained_by == 1 else f"under `mpiexec -n {trained_by}`"
        raise checkpoint.RunError(f"{run_dir} was trained by {trained_by} process{'es' if trained_by > 1 else ''}, "
                                  f"not {processes}: resume it {how}")
    state = manifest.get("state")
    checkpoint.check_files(run_dir, manifest, [checkpoint.CONFIG] + ([state + ".safetensors", state + ".json"]
                                                                      if state else []))
    config = load_config(run_dir)
    if not state:
        if manifest.get("from_object"):  # starting again would start from the seed's weights, not the object's
            raise checkpoint.RunError(f"{run_dir} stopped before its first epoch was saved, and it started from a "
                                      f"model object whose weights were not saved: train it again with "
                                      f"runs.train(config, model=...)")
        return config, None
    return config, (checkpoint.load_weights(run_dir / f"{state}.safetensors"),
                    checkpoint.read_json(run_dir / f"{state}.json"))


def _resuming(run_dir: Path, config: TrainConfig, restored) -> str:
    if restored is None:
        return f"starting {run_dir} again: it stopped before its first epoch was saved"
    return f"resuming {run_dir} after epoch {len(restored[1]['history']['epochs'])} of {config.epochs}"


def _saved_spec(run_dir: Path) -> dict | None:
    """The run's spec.json, checked (the model a resumed run rebuilds), or None if it has none."""
    path = run_dir / checkpoint.SPEC
    return checkpoint.read_spec(path) if path.exists() else None


@contextlib.contextmanager
def _locked(run_dir: Path):
    """Hold RUN/.lock: one training per run directory at a time."""
    lock = filelock.FileLock(run_dir / ".lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise checkpoint.RunError(f"{run_dir} is being trained by another process: wait for it to finish, or "
                                  f"choose another folder") from None
    try:
        yield
    finally:
        lock.release()


def _check_fits(model: nn.Module, config: TrainConfig, image, label) -> None:
    """A model object given to ``train``, or a registered model: one training image through it
    (eval mode, no gradient) gives one score per class, or a ValueError line saying why not."""
    x, _ = next(iter(eval_loader(image, label, config.mean, config.std)))
    was = model.training
    model.eval()
    try:
        with no_grad():
            out = model(Tensor(x))
    except (ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise ValueError(f"model {config.model!r} cannot run on {config.dataset}'s images {tuple(x.shape[1:])}: "
                         f"{exc}") from None
    finally:
        model.train(was)
    if tuple(getattr(out, "shape", ())) != (1, len(config.classes)):
        raise ValueError(f"model {config.model!r} gives {' x '.join(map(str, getattr(out, 'shape', ())[1:]))} outputs per "
                         f"image, not one score for each of {config.dataset}'s {len(config.classes)} classes")


class _Training:
    """One training run's parts (data, model, loader, optimizer, schedule) and its saving."""

    def __init__(self, config: TrainConfig, run_dir: Path | None, dry_run: bool, progress: bool, log, world,
                 model: nn.Module | None = None, model_spec: dict | None = None, tensorboard: bool = False):
        self.run_dir, self.dry_run, self.progress, self.log = run_dir, dry_run, progress, log
        self.tensorboard = tensorboard and run_dir is not None
        self.events = None  # the TensorBoard writer while training
        t_load = time.perf_counter()
        split = load_dataset(config.dataset, validation=config.validation)
        if config.mean is None:
            # the data set's own (pixel/255) statistics: constants for mnist / fashion-mnist, measured on
            # the training split of a folder; recorded so evaluate / predict / show feed inputs the same way
            mean, std = norm_stats(split)
            config = config.replace(mean=float(mean), std=float(std))
        if config.classes is None:
            config = config.replace(classes=tuple(split.classes or class_names(config.dataset)))
        if len(config.classes) != 10 and "classes" not in config.model_kwargs and model_spec is None \
                and "classes" in inspect.signature(models.MODELS[config.model].builder).parameters:
            config = config.replace(model_kwargs={**config.model_kwargs, "classes": len(config.classes)})
        train_x, train_y = split.train
        if config.train_size is not None:
            train_x, train_y = train_x[:config.train_size], train_y[:config.train_size]
        if config.expand:
            train_x, train_y = expand_shifts(train_x, train_y)
        val = split.validation if config.validation > 0 else None
        test = split.test
        if dry_run:
            config = config.replace(epochs=1)
            val = (val[0][:500], val[1][:500]) if val is not None else None
            test = (test[0][:500], test[1][:500])
        self.load_seconds = time.perf_counter() - t_load
        self.config = config
        self.spec = model_spec if model_spec is not None else models.spec(config.model, **config.model_kwargs)
        backend.manual_seed(config.seed)
        self.model = model if model is not None else models.build(self.spec)
        self.from_object = model is not None  # its starting weights are the object's, not the seed's
        if (model is not None or self.spec["name"] not in models.ZOO) and config.device == "cpu":
            # a model object or a registered one (the zoo's fit by construction): before anything is written
            _check_fits(self.model, config, train_x[:1], train_y[:1])
        device = config.device
        if device != "cpu":
            self.model.to(device)
        # several processes: rank 0's weights everywhere, batch norm synchronised (before nn.fuse,
        # which leaves the synchronised batch norm as it is)
        self.parallel = distributed.DataParallel(self.model, world, device) if world.size > 1 else None
        # what trains: the same parameters, with runs of layers fused on the CPU (the saved run is
        # self.model, with its own layer names)
        self.net = runnable(self.model, device)
        aug = config.augment
        if self.parallel is None and device == "cuda" and not (
                aug.max_degrees or aug.max_scale or aug.erase or aug.elastic or aug.appearance):
            # the training set is uploaded once; batches are cut, shifted and normalised on the GPU
            self.loader = DeviceLoader(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed,
                                       max_shift=aug.max_shift, hflip=aug.hflip, mean=config.mean, std=config.std,
                                       device=device)
        else:
            self.loader = DataLoader(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed,
                                     augment=aug if aug.active else None, mean=config.mean, std=config.std,
                                     shard=(world.rank, world.size) if self.parallel else None)
        # the loader the epochs come from: its position is what a resume restores
        self.epochs = self.loader
        if self.parallel is not None:
            self.loader = self.parallel.loader(self.loader)  # this process's rows of every global batch
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(),
                                        max(1, -(-len(train_y) // config.batch_size)))
        self.max_batches = 5 if dry_run else None
        steps = min(len(self.loader), self.max_batches) if self.max_batches else len(self.loader)
        self.scheduler, self.per_batch = make_scheduler(config.schedule, self.optimizer, config.optimizer.lr,
                                                        config.epochs, steps)
        self.sizes = (len(train_y), val, test)  # the whole sets, as the log names them
        if self.parallel is not None:  # each process evaluates its share of every set; fit sums them
            val, test = (_share(pair, world) for pair in (val, test))
        self.evaluation = {name: eval_loader(*pair, config.mean, config.std, device=device) if pair else None
                           for name, pair in (("validation", val), ("test", test))}
        self.meta = {"machine": platform.node(), "python": platform.python_version(),
                     "platform": platform.platform(), "cpu_count": os.cpu_count(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.processes = world.size
        if world.size > 1:
            self.meta["processes"] = world.size

    def metrics(self, history: History) -> dict:
        return {**history.to_dict(), "data_seconds": self.load_seconds, "model": self.config.name,
                "dataset": self.config.dataset, "parameters": self.model.num_parameters(), **self.meta}

    def run(self, restored: tuple[dict, dict] | None = None) -> Run:
        """Train (from a saved epoch's (arrays, state), if given); save as it goes; the Run."""
        config, run_dir, log = self.config, self.run_dir, self.log
        resumed = self._restore(*restored) if restored else None
        if run_dir is not None:
            # best and current weights, the optimizer's state and the old state while the new one is
            # written: about five times the parameters, and a margin
            need = 5 * sum(p.data.nbytes for p in self.model.parameters()) + (1 << 20)
            free = shutil.disk_usage(run_dir).free
            if free < need:
                raise OSError(f"{run_dir}: not enough free space to save this run ({free / 2**20:.1f} MiB free, "
                              f"about {need / 2**20:.1f} MiB needed)")
        if run_dir is not None and resumed is None:
            checkpoint.write_json(run_dir / checkpoint.SPEC, self.spec)
            checkpoint.write_json(run_dir / checkpoint.CONFIG, config.to_dict())
            checkpoint.write_manifest(run_dir, "started", [checkpoint.SPEC, checkpoint.CONFIG], epochs_done=0,
                                      state=None, processes=self.processes, from_object=self.from_object)
        if self.tensorboard:  # events of epochs after the restored one (a killed attempt's) are purged
            # tensorboardX names a file by the second it was made: a resume within the same second would
            # reuse (and truncate) the stopped attempt's file; nanoseconds keep each attempt's, in order
            self.events = _event_writer_class()(logdir=str(run_dir / TENSORBOARD_DIR),
                                               purge_step=len(resumed[0].epochs) + 1 if resumed else None,
                                               filename_suffix=f".{time.time_ns()}")
        if log and resumed is None:
            log(_describe(config, self.model, *self.sizes, self.dry_run, self.load_seconds))
            if self.parallel is not None:
                log(f"  {self.parallel.describe()}" + ("; the last batch, smaller than that, is skipped"
                                                       if self.loader.skipped else ""))
        try:
            history = fit(self.net, self.optimizer, self.loader, config.epochs,
                          validation=self.evaluation["validation"], test=self.evaluation["test"],
                          scheduler=self.scheduler, scheduler_per_batch=self.per_batch,
                          label_smoothing=config.label_smoothing, early_stopping=config.early_stopping,
                          device=config.device, progress=self.progress, max_batches=self.max_batches,
                          on_epoch_end=self._save_epoch if run_dir is not None else None, log=log, resume=resumed,
                          parallel=self.parallel)
        except FloatingPointError as exc:
            if run_dir is not None:
                self._mark("diverged", message=str(exc))
            raise
        finally:
            if self.parallel is not None:
                self.parallel.close()  # plain batch norm again in the model returned
            if self.events is not None:
                self.events.close()
        if run_dir is not None and history.best_epoch is not None:
            # The best epoch's weights are in model.safetensors already; the final status and metrics.
            checkpoint.write_json(run_dir / checkpoint.METRICS, self.metrics(history))
            checkpoint.write_metrics_csv(run_dir / checkpoint.METRICS_CSV, history.epochs)
            if history.interrupted:
                self._mark("interrupted")
            else:  # nothing left to resume: the run is its four files (and its calibration)
                if self.evaluation["validation"] is not None and self.parallel is None:
                    _write_calibration(run_dir, self.net, self.evaluation["validation"], config.device)
                self._mark("finished", state=None)
                shutil.rmtree(run_dir / checkpoint.STATE_DIR, ignore_errors=True)
                for stale in run_dir.glob(".*.tmp"):  # a killed earlier attempt's half-written files
                    stale.unlink(missing_ok=True)
        return Run(run_dir, config, self.spec, self.model, self.metrics(history), history)

    # -------------------------------------------------------------- saving and resuming
    def _save_epoch(self, history: History, is_best: bool) -> None:
        """After each epoch: the best weights (if this epoch is the best), the state to resume from,
        the metrics, then the manifest."""
        run_dir, epoch = self.run_dir, len(history.epochs)
        if is_best:
            checkpoint.save_weights(self.model, run_dir / checkpoint.WEIGHTS)
        state = f"{checkpoint.STATE_DIR}/epoch-{epoch}"
        best = checkpoint.load_weights(run_dir / checkpoint.WEIGHTS)
        opt = self.optimizer.state_dict()
        arrays = {f"model/{k}": v.numpy() for k, v in self.model.state_dict().items()}
        arrays |= {f"best/{k}": v for k, v in best.items()}
        arrays |= {f"optimizer/{i}/{k}": backend.to_device(v, "cpu") for i, st in opt["state"].items()
                   for k, v in st.items() if hasattr(v, "shape")}
        scalars = {str(i): {k: v for k, v in st.items() if not hasattr(v, "shape")} for i, st in opt["state"].items()}
        (run_dir / checkpoint.STATE_DIR).mkdir(exist_ok=True)
        checkpoint.save_arrays(run_dir / f"{state}.safetensors", arrays)
        checkpoint.write_json(run_dir / f"{state}.json", {
            "history": history.to_dict(), "param_groups": opt["param_groups"], "optimizer_scalars": scalars,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": backend.rng().bit_generator.state, "loader_epoch": self.epochs.epoch})
        checkpoint.write_json(run_dir / checkpoint.METRICS, self.metrics(history))
        checkpoint.write_metrics_csv(run_dir / checkpoint.METRICS_CSV, history.epochs)
        if self.events is not None:
            _write_events(self.events, history.epochs[-1])
        self._mark("training", epochs_done=epoch, state=state)
        for old in (run_dir / checkpoint.STATE_DIR).glob("epoch-*"):
            if old.name not in (f"epoch-{epoch}.safetensors", f"epoch-{epoch}.json"):
                old.unlink(missing_ok=True)  # after the manifest moved on: a kill here loses nothing

    def _mark(self, status: str, **facts) -> None:
        """Rewrite the manifest with ``status``: the run's files as they are now."""
        old = checkpoint.read_manifest(self.run_dir) or {}
        facts = {"epochs_done": old.get("epochs_done", 0), "state": old.get("state"), "processes": self.processes,
                 **facts}
        names = [checkpoint.SPEC, checkpoint.CONFIG, checkpoint.METRICS, checkpoint.METRICS_CSV, checkpoint.WEIGHTS,
                 checkpoint.CALIBRATION]
        if facts["state"]:
            names += [facts["state"] + ".safetensors", facts["state"] + ".json"]
        checkpoint.write_manifest(self.run_dir, status, [n for n in names if (self.run_dir / n).exists()], **facts)

    def _restore(self, arrays: dict, saved: dict) -> tuple[History, dict]:
        """Put the model, optimizer, schedule, loader and random generator back as they were after
        the saved epoch (its checkpoint's arrays and JSON state); (history, best-epoch weights) for
        ``fit``."""
        self.model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        best = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
        state = {}
        for key, value in arrays.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, values in saved["optimizer_scalars"].items():
            state.setdefault(int(index), {}).update(values)
        self.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        backend.rng().bit_generator.state = saved["rng"]
        self.epochs.set_epoch(saved["loader_epoch"])
        history = History(**saved["history"])
        names = {id(t): k for k, t in self.net.state_dict().items()}  # fit keeps the net's names
        device = self.config.device
        return history, {names[id(t)]: backend.to_device(best[k], device) for k, t in self.model.state_dict().items()}


TENSORBOARD_DIR = "tensorboard"  # RUN/tensorboard/: the event files of train(..., tensorboard=True)


def _event_writer_class():
    """tensorboardX's SummaryWriter, or a RuntimeError saying how to install it."""
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415
    except ImportError:
        raise RuntimeError("TensorBoard event files need tensorboardX, an optional package: "
                           "pip install 'cnnlab[tensorboard]'") from None
    return SummaryWriter


def _write_events(writer, record: dict) -> None:
    """One epoch's record as TensorBoard scalars at step = the epoch: loss/train, loss/validation,
    loss/test, accuracy/..., lr, seconds, images_per_second (a missing value is left out)."""
    step = record["epoch"]
    for key, value in record.items():
        if key == "epoch" or value is None:
            continue
        split, _, kind = key.rpartition("_")
        tag = f"{kind}/{split}" if kind in ("loss", "accuracy") else key
        writer.add_scalar(tag, value, step)
    writer.flush()


def _write_calibration(run_dir: Path, net, loader, device: str = "cpu") -> dict:
    """Fit the temperature on ``loader`` (the validation set) and write RUN/calibration.json."""
    res = evaluate(net, loader, device=device, return_predictions=True)
    labels = np.asarray(loader.labels)
    logits = calibration.log_probabilities(res["probabilities"])
    t = calibration.fit_temperature(logits, labels)
    record = {"temperature": t, "fitted_on": "validation", "images": int(len(labels)),
              "nll": calibration.nll(logits, labels), "nll_calibrated": calibration.nll(logits, labels, t),
              "ece": calibration.expected_calibration_error(calibration.softmax(logits), labels),
              "ece_calibrated": calibration.expected_calibration_error(calibration.softmax(logits, t), labels)}
    checkpoint.write_json(run_dir / checkpoint.CALIBRATION, record)
    return record


def calibrate(run_dir) -> dict:
    """Fit a saved run's temperature on its validation set (temperature scaling, Guo et al. 2017)
    and store it in the run as calibration.json, listed in its manifest; what ``train`` does at
    the end of a finished run, for runs trained before it did.

    Returns:
        calibration.json's content: "temperature", "images", "nll" and "ece" before and after.

    Raises:
        checkpoint.RunError: the run is missing, broken, unfinished, or has no validation set.
    """
    run_dir = Path(run_dir)
    run = load(run_dir)
    if run.config.validation <= 0:
        raise checkpoint.RunError(f"{run_dir}: trained without a validation set (--validation 0): nothing to fit "
                                  "the temperature on without touching the test set")
    split = load_dataset(run.config.dataset, validation=run.config.validation)
    loader = eval_loader(*split.validation, run.config.mean, run.config.std)
    with _locked(run_dir):
        record = _write_calibration(run_dir, runnable(run.model), loader)
        manifest = checkpoint.read_manifest(run_dir)
        if manifest is not None:
            facts = {k: v for k, v in manifest.items() if k not in ("format", "status", "files")}
            files = [f for f in manifest["files"] if f != checkpoint.CALIBRATION] + [checkpoint.CALIBRATION]
            checkpoint.write_manifest(run_dir, manifest["status"], files, **facts)
    return record


def temperature(run_dir) -> float:
    """A run's fitted temperature (calibration.json), 1.0 for a run without one (trained before
    cnnlab calibrated, or without a validation set): its probabilities as the network gives them.

    Raises:
        checkpoint.RunError: calibration.json is changed since the manifest listed it, or holds no
            positive finite "temperature".
    """
    run_dir = Path(run_dir)
    path = run_dir / checkpoint.CALIBRATION
    if not path.exists():
        return 1.0
    manifest = checkpoint.read_manifest(run_dir)
    if manifest is not None and checkpoint.CALIBRATION in manifest["files"]:
        checkpoint.check_files(run_dir, manifest, [checkpoint.CALIBRATION])
    record = checkpoint.read_json(path)
    t = record.get("temperature") if isinstance(record, dict) else None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise checkpoint.RunError(f"{path}: \"temperature\" must be a positive number, got {t!r}")
    return float(t)


def _share(pair, world):
    """This process's contiguous share of an evaluation set (images, labels), or None."""
    if pair is None:
        return None
    start, stop = shard_rows(len(pair[1]), world.rank, world.size)
    return pair[0][start:stop], pair[1][start:stop]


def runnable(model: nn.Module, device: str = "cpu") -> nn.Module:
    """The model as it runs fastest on ``device``: ``nn.fuse(model)`` on the CPU (the same parameters
    and results, runs of layers as fused operators), the model itself elsewhere."""
    return nn.fuse(model) if backend.normalize_device(device) == "cpu" else model


def _describe(config: TrainConfig, model, n_train: int, val, test, dry_run: bool, load_seconds: float) -> str:
    """The two lines ``train`` logs before the first epoch: what is trained on what, and how."""
    o, a = config.optimizer, config.augment
    return (f"cnnlab: training {config.name} ({model.num_parameters():,} parameters) on {config.dataset}: "
            f"{n_train:,} train / {0 if val is None else len(val[1]):,} validation / {len(test[1]):,} test images"
            f"{' [dry run]' if dry_run else ''}\n"
            f"  {config.epochs} epoch{'s' if config.epochs != 1 else ''}, batch {config.batch_size}, "
            f"{o.name} lr {o.lr:g} ({config.schedule})"
            + (f", momentum {o.momentum:g}" if o.momentum and o.name in SGD_NAMES else "")
            + (f", weight decay {o.weight_decay:g}" if o.weight_decay else "")
            + (f", L2 lambda {o.l2_lambda:g}" if o.l2_lambda else "")
            + f", augment {a.max_shift}px" + (f", rotate {a.max_degrees:g} deg" if a.max_degrees else "")
            + (f", zoom +-{a.max_scale:g}" if a.max_scale else "")
            + (f", elastic alpha {a.elastic:g} sigma {a.elastic_sigma:g}" if a.elastic else "")
            + (", hflip" if a.hflip else "") + (f", erase p={a.erase:g}" if a.erase else "")
            + "".join(f", {name} p={getattr(a, name):g}" for name in APPEARANCE if getattr(a, name))
            + f", normalised with mean {config.mean:.4f} std {config.std:.4f}"
            + f", seed {config.seed}, device {config.device}; data loaded in {load_seconds:.1f}s")


# ------------------------------------------------------------------------------ loading
def load_config(run_dir) -> TrainConfig:
    """The TrainConfig of a saved run (an older run's flat config.json mapped; a run without one is
    taken as an MNIST run of its model with MNIST's normalisation).

    Raises:
        checkpoint.RunError: one line naming the file and the setting that is wrong.
    """
    run_dir = Path(run_dir)
    path = run_dir / checkpoint.CONFIG
    raw = checkpoint.read_json(path) if path.exists() else {}
    if not isinstance(raw, dict):
        raise checkpoint.RunError(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    mean, std = checkpoint.normalization(raw, path)
    if "format" not in raw and "model" not in raw:  # an early run: its spec.json names the model
        spec = checkpoint.read_json(run_dir / checkpoint.SPEC)
        raw = {**raw, "model": spec.get("name") if isinstance(spec, dict) else spec}
    try:
        return TrainConfig.from_dict({**raw, "mean": mean, "std": std})
    except SettingError as exc:
        raise checkpoint.RunError(f"{path}: {exc.setting} {exc.problem}") from None
    except (TypeError, ValueError) as exc:
        raise checkpoint.RunError(f"{path}: {exc}") from None


def load(run_dir) -> Run:
    """A saved run: its model rebuilt with the saved weights (in eval mode), config and metrics.

    Raises:
        checkpoint.RunError: naming what is missing, what does not match the run's manifest (an
            incomplete or changed run), or what differs between the saved tensors and the model
            the spec describes.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise checkpoint.RunError(f"{run_dir}: no such run directory")
    files = [checkpoint.WEIGHTS, checkpoint.SPEC, checkpoint.CONFIG, checkpoint.METRICS]
    for _ in range(3):  # a run being trained may save between the check and the reads: read it again
        manifest = checkpoint.read_manifest(run_dir)
        if manifest is not None:  # saved by this cnnlab: whole, or refused (older runs have none)
            if manifest["status"] == "started":
                raise checkpoint.RunError(f"{run_dir}: no epoch has finished yet, nothing to load; resume it with "
                                          f"`cnnlab train --resume {run_dir}`")
            checkpoint.check_files(run_dir, manifest, files)
        model, spec = checkpoint.load_model(run_dir)
        config = load_config(run_dir)
        metrics = load_metrics(run_dir)
        if manifest is None or (checkpoint.read_manifest(run_dir) == manifest and _still_whole(run_dir, manifest, files)):
            return Run(run_dir, config, spec, model, metrics)
    raise checkpoint.RunError(f"{run_dir} changed while it was read (is it being trained?); try again")


# metrics.json's keys that the commands read, and what each must be (None allowed where optional)
_NUMBER, _WHOLE = (int, float), (int,)
_METRICS = {"test_accuracy": (_NUMBER, True), "best_validation_accuracy": (_NUMBER, True),
            "best_epoch": (_WHOLE, True), "seconds": (_NUMBER, True), "interrupted": ((bool,), True),
            "stopped_early": ((bool,), True), "epochs": ((list,), True)}
_EPOCH = {"epoch": (_WHOLE, False), "train_loss": (_NUMBER, True), "train_accuracy": (_NUMBER, True),
          "validation_loss": (_NUMBER, True), "validation_accuracy": (_NUMBER, True), "test_loss": (_NUMBER, True),
          "test_accuracy": (_NUMBER, True), "lr": (_NUMBER, True), "seconds": (_NUMBER, True),
          "images_per_second": (_NUMBER, True)}


def load_metrics(run_dir) -> dict:
    """A run's metrics.json ({} if it has none), its keys checked: one RunError line naming the
    file and the key of a wrong type, never a traceback later."""
    path = Path(run_dir) / checkpoint.METRICS
    if not path.exists():
        return {}
    metrics = checkpoint.read_json(path)
    if not isinstance(metrics, dict):
        raise checkpoint.RunError(f"{path}: must hold a JSON object, got {type(metrics).__name__}")
    _check_types(metrics, _METRICS, path, "")
    for i, record in enumerate(metrics.get("epochs") or []):
        if not isinstance(record, dict):
            raise checkpoint.RunError(f"{path}: epochs[{i}] must be an object, got {type(record).__name__}")
        _check_types(record, _EPOCH, path, f"epochs[{i}].")
    return metrics


def _check_types(values: dict, kinds: dict, path, prefix: str) -> None:
    for key, (types, optional) in kinds.items():
        value = values.get(key)
        if value is None and optional:
            continue
        wrong = isinstance(value, bool) and bool not in types or not isinstance(value, types)
        if wrong or (isinstance(value, float) and not math.isfinite(value)):
            raise checkpoint.RunError(f"{path}: {prefix}{key} must be {' or '.join(t.__name__ for t in types)}, "
                                      f"got {value!r}")


def _still_whole(run_dir, manifest, files) -> bool:
    try:
        checkpoint.check_files(run_dir, manifest, files)
        return True
    except checkpoint.RunError:
        return False
