"""Training and evaluation as library functions with explicit arguments.

``fit`` follows Nielsen's protocol: after every epoch it measures validation and test accuracy,
and the test accuracy it reports is the one at the epoch of best validation accuracy (the model
is chosen on validation data, never on test data). The weights of that epoch are restored at
the end, so a saved run evaluates to the accuracy it reports.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad
from .data.augment import shift_images
from .data.loader import DataLoader


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    validation_loss: float | None
    validation_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    lr: float
    seconds: float
    images_per_second: float


@dataclass
class History:
    epochs: list = field(default_factory=list)
    best_epoch: int | None = None
    best_validation_accuracy: float | None = None
    test_accuracy: float | None = None  # at the best-validation epoch (or the last epoch)
    interrupted: bool = False
    stopped_early: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Progress:
    """A progress bar on a terminal (tqdm), a few plain lines otherwise."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None, unit: str = "batch"):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total, self.desc, self.n = total, desc, 0
        self.start = time.perf_counter()
        self.bar = None
        self._next_line = 0
        if enabled and self.stream.isatty():
            from tqdm import tqdm  # noqa: PLC0415

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream,
                            dynamic_ncols=True)

    def update(self, n: int, **stats):
        self.n += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in stats.items()), refresh=False)
            self.bar.update(n)
        elif self.n >= self._next_line or self.n == self.total:
            # plain lines at every 25% of the epoch when output is not a terminal
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            body = " ".join(f"{k}={v}" for k, v in stats.items())
            print(f"{self.desc} {self.n}/{self.total} {body} eta={eta:.0f}s", file=self.stream, flush=True)
            self._next_line = self.n + max(1, self.total // 4)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _batches_to_device(x, y, device):
    if device == "cpu":
        return x, y
    return backend.to_device(x, device), backend.to_device(y, device)


def evaluate(model, loader, device: str = "cpu", return_predictions: bool = False) -> dict:
    """Mean cross-entropy and accuracy (a fraction) of ``model`` over the batches of ``loader``.

    Args:
        model: an nn.Module returning (B, classes) logits for a batch (B, C, *S); any input size,
            channel count and number of classes.
        loader: an iterable of (x, y) batches, e.g. ``DataLoader(images, labels, 256, shuffle=False,
            mean=..., std=...)``: the normalisation is the loader's.
        device: 'cpu' or 'cuda' (batches are moved there).
        return_predictions: also return "predictions" (N,) and "probabilities" (N, classes).

    Returns:
        {"loss", "accuracy", "n"} and, if asked, "predictions" and "probabilities".
    """
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    preds, probs = [], []
    try:
        with no_grad():
            for x, y in loader:
                x, yd = _batches_to_device(x, y, device)
                logits = model(Tensor(x))
                loss = F.cross_entropy(logits, yd, reduction="sum")
                total_loss += float(loss.item())
                p = backend.to_device(logits.data.argmax(axis=1), "cpu")
                correct += int((p == backend.to_device(y, "cpu")).sum())
                n += len(y)
                if return_predictions:
                    preds.append(p)
                    probs.append(backend.to_device(F.softmax(logits, 1).data, "cpu"))
    finally:
        model.train(was_training)
    out = {"loss": total_loss / max(n, 1), "accuracy": correct / max(n, 1), "n": n}
    if return_predictions:
        out["predictions"] = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        out["probabilities"] = np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)
    return out


def eval_loader(images, labels, mean, std, batch_size: int | None = None, device: str = "cpu") -> DataLoader:
    """A loader over a whole evaluation set in order, normalised with ``mean`` and ``std``.

    ``batch_size`` defaults to 256 on the CPU, where larger batches spill the caches (see
    benchmarks/README.md, "evaluation batch"), and to 1000 on a GPU.
    """
    if batch_size is None:
        batch_size = 256 if device == "cpu" else 1000
    return DataLoader(images, labels, batch_size, shuffle=False, mean=mean, std=std)


def tta_views(images: np.ndarray, mirror: bool = False, shift: bool = False) -> list[np.ndarray]:
    """The images as seen by test-time augmentation: themselves first, then their variants.

    ``mirror`` adds each image's left-right mirror; ``shift`` adds its four 1-pixel shifts (down, up,
    right, left, the border filled with zeros) of every view so far. uint8 (N, H, W) in, a list out.
    """
    views = [images]
    if mirror:
        views.append(np.ascontiguousarray(images[:, :, ::-1]))
    if shift:
        views += [shift_images(v, dy, dx) for v in list(views) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return views


def fit(model, optimizer, train_loader, epochs: int, validation=None, test=None, scheduler=None,
        scheduler_per_batch: bool = True, label_smoothing: float = 0.0, early_stopping: int | None = None,
        device: str = "cpu", progress: bool = True, max_batches: int | None = None, on_epoch_end=None,
        log=print, resume: tuple[History, dict] | None = None, parallel=None) -> History:
    """Train ``model`` and evaluate it after every epoch.

    Args:
        model: an nn.Module returning (N, classes) logits.
        optimizer: a cnnlab.optim optimizer over the model's parameters.
        train_loader: an iterable with a length of (x float (B, C, *S), y int (B,)) batches, e.g. a
            DataLoader; a new pass over it each epoch.
        epochs: number of passes over the training data.
        validation, test: loaders of evaluation batches (e.g. ``eval_loader``), or None.
        scheduler: a learning-rate scheduler, stepped after every batch (or every epoch when
            ``scheduler_per_batch`` is False).
        label_smoothing: passed to cross_entropy.
        early_stopping: stop after this many epochs without a better validation accuracy.
        device: 'cpu' or 'cuda'.
        progress: show a progress bar (or plain lines when not on a terminal).
        max_batches: stop each epoch after this many batches (dry runs).
        on_epoch_end: callback(history, is_best) after each epoch, e.g. to save the run.
        log: where the one-line epoch summaries go (None for silence).
        resume: (History, best-epoch state dict) of epochs already trained: training goes on at the
            next epoch. The caller restores the model, optimizer, scheduler, loader position and
            random generators as they were after that epoch.
        parallel: data-parallel training over several processes (a ``cnnlab.distributed.DataParallel``;
            ``train_loader`` and the evaluation loaders then hold this process's shards):
            ``parallel.backward(loss, logits, y)`` replaces ``loss.backward()`` (and sums the
            gradients over the processes), ``parallel.reduce`` sums each evaluation's shards.

    Returns:
        History with per-epoch records and the test accuracy at the best-validation epoch (without
        a validation set: the last epoch, whose weights are kept; best_validation_accuracy None).
        Ctrl-C ends training cleanly: the history so far is returned with ``interrupted=True``.

    Raises:
        FloatingPointError: training diverged: a non-finite loss (naming epoch and batch), parameters
            or evaluation loss (naming the epoch). The best epoch's weights are restored first.
    """
    if early_stopping is not None and (isinstance(early_stopping, bool) or early_stopping < 1):
        raise ValueError(f"early stopping must wait at least 1 epoch, got {early_stopping!r}")
    if early_stopping is not None and validation is None:
        raise ValueError("early stopping needs a validation set: it stops when validation accuracy stops improving")
    history, best_state = resume if resume is not None else (History(), None)
    since_best = len(history.epochs) - history.best_epoch if history.best_epoch else 0
    t_start = time.perf_counter() - history.seconds
    try:
        for epoch in range(len(history.epochs) + 1, epochs + 1):
            # decided from the history before each epoch, so a resumed run stops where it would have
            if early_stopping is not None and since_best >= early_stopping:
                history.stopped_early = True
                if log is not None:
                    log(f"early stopping: no better validation accuracy for {early_stopping} epochs")
                break
            model.train()
            n_batches = len(train_loader) if max_batches is None else min(len(train_loader), max_batches)
            bar = Progress(n_batches, f"epoch {epoch}/{epochs}", enabled=progress)
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            try:
                for i, (x, y) in enumerate(train_loader):
                    if i >= n_batches:
                        break
                    xd, yd = _batches_to_device(x, y, device)
                    logits = model(Tensor(xd))
                    loss = F.cross_entropy(logits, yd, label_smoothing=label_smoothing)
                    optimizer.zero_grad()
                    if parallel is None:
                        loss.backward()
                        lv, hits, b = float(loss.item()), None, len(y)
                    else:  # the global batch's: gradients and statistics summed over the processes
                        lv, hits, b = parallel.backward(loss, logits, yd)
                    optimizer.step()
                    if scheduler is not None and scheduler_per_batch:
                        scheduler.step()
                    if not math.isfinite(lv):
                        raise FloatingPointError(
                            f"training diverged: loss is {lv} at epoch {epoch}, batch {i + 1}; "
                            f"try a smaller learning rate")
                    loss_sum += lv * b
                    correct += int((logits.data.argmax(axis=1) == yd).sum()) if hits is None else hits
                    seen += b
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(1, loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", img_s=f"{rate:.0f}")
            finally:
                bar.close()
            if scheduler is not None and not scheduler_per_batch:
                scheduler.step()
            train_seconds = time.perf_counter() - t0
            _check_finite_parameters(model, epoch, n_batches)
            val = evaluate(model, validation, device) if validation is not None else None
            tst = evaluate(model, test, device) if test is not None else None
            if parallel is not None:  # each process evaluated its shard
                val, tst = parallel.reduce(val), parallel.reduce(tst)
            for name, res in (("validation", val), ("test", tst)):
                if res is not None and not math.isfinite(res["loss"]):
                    raise FloatingPointError(f"training diverged: the {name} loss is {res['loss']} after epoch "
                                             f"{epoch} (the weights grew too large); try a smaller learning rate")
            rec = EpochRecord(
                epoch=epoch, train_loss=loss_sum / max(seen, 1), train_accuracy=correct / max(seen, 1),
                validation_loss=val and val["loss"], validation_accuracy=val and val["accuracy"],
                test_loss=tst and tst["loss"], test_accuracy=tst and tst["accuracy"],
                lr=float(optimizer.param_groups[0]["lr"]), seconds=time.perf_counter() - t0,
                images_per_second=seen / max(train_seconds, 1e-9))
            history.epochs.append(asdict(rec))
            if val is not None:
                is_best = (history.best_validation_accuracy is None
                           or rec.validation_accuracy > history.best_validation_accuracy)
            else:  # nothing to choose on: the last epoch is the one kept
                is_best = True
            if is_best:
                history.best_epoch = epoch
                if val is not None:
                    history.best_validation_accuracy = rec.validation_accuracy
                history.test_accuracy = rec.test_accuracy
                best_state = {k: v.data.copy() for k, v in model.state_dict().items()}
                since_best = 0
            else:
                since_best += 1
            if log is not None:
                parts = [f"epoch {epoch:>3}/{epochs}", f"loss {rec.train_loss:.4f}", f"train {rec.train_accuracy:.4f}"]
                if val is not None:
                    parts.append(f"val {rec.validation_accuracy:.4f}")
                if tst is not None:
                    parts.append(f"test {rec.test_accuracy:.4f}")
                parts.append(f"{rec.images_per_second:.0f} img/s {rec.seconds:.1f}s"
                             + ("  *best" if is_best and val is not None else ""))
                log("  ".join(parts))
            history.seconds = time.perf_counter() - t_start
            if on_epoch_end is not None:
                on_epoch_end(history, is_best)
    except KeyboardInterrupt:
        history.interrupted = True
        if log is not None:
            log("interrupted: keeping the best epoch so far")
    except FloatingPointError:
        _restore(model, best_state)  # the last good epoch, not the diverged weights
        raise
    _restore(model, best_state)
    history.seconds = time.perf_counter() - t_start
    return history


def _restore(model, state) -> None:
    if state is not None:
        for k, v in model.state_dict().items():
            v.data[...] = state[k]


def _check_finite_parameters(model, epoch: int, batches: int) -> None:
    """Raise FloatingPointError naming the first parameter with a NaN or infinity."""
    for name, p in model.state_dict().items():
        xp = backend.get_array_module(p.data)
        if xp.issubdtype(p.data.dtype, xp.floating) and not bool(xp.isfinite(p.data).all()):
            raise FloatingPointError(f"training diverged: parameter {name} is not finite after epoch {epoch}, "
                                     f"batch {batches}; try a smaller learning rate")
