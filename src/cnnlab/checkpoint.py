"""Run directories: weights (safetensors), model spec and config (JSON), metrics (JSON).

    runs/<name>/
      model.safetensors   every parameter and buffer by its state-dict name
      spec.json           {"name": ..., "kwargs": {...}}: rebuilds the architecture (a zoo or registered
                          model), or {"name": "sequential", "layers": [...]}: a Sequential's layers
      config.json         how it was trained: a ``runs.TrainConfig`` as JSON (data set, epochs,
                          optimizer, augmentation, seed, the input normalisation "mean" and "std", ...)
      metrics.json        per-epoch history and the final test_accuracy (a fraction)
      metrics.csv         the per-epoch history as a table, one row per epoch (runs.train writes it)

Every file is written to a temporary file in the same directory and renamed over the target,
so a crash or Ctrl-C never leaves a half-written file. Nothing is pickled: loading a run
executes no code from it. ``cnnlab.runs.load`` reads a whole run; this module handles its files.

What is read is checked before use, and every problem is one RunError line naming the file:
run files must be regular files (a named pipe would hang the reader); spec.json must be
{"name": str, "kwargs": {...}} with arguments the architecture accepts (``models.spec``: types,
sizes, the parameter cap); a weights file may hold only floating-point tensors, all finite, and
be no larger than ``data.limits.max_data_bytes()``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import models
from .data.errors import DataError
from .data.limits import check_regular_file, max_data_bytes, open_regular_file
from .data.loader import MNIST_MEAN, MNIST_STD
from .errors import SettingError

WEIGHTS, SPEC, CONFIG, METRICS = "model.safetensors", "spec.json", "config.json", "metrics.json"
METRICS_CSV = "metrics.csv"  # metrics.json's per-epoch records, one row each
CALIBRATION = "calibration.json"  # the temperature fitted on the validation set (runs.calibrate)
MANIFEST = "manifest.json"  # written last: which files make the run, with their checksums
STATE_DIR = "checkpoint"  # what `cnnlab train --resume` continues from


class RunError(ValueError):
    """A run directory is missing, incomplete or does not match its model."""


def check_output_path(path, folder: bool = False) -> Path:
    """Raise a ValueError naming the problem if ``path`` cannot become a file (``folder``: a
    folder) because it, or one of the folders above it, is the other kind of thing. Missing
    folders above it are fine: writers create them."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{path} is a link to something that does not exist; give another name")
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{path} is a {'file' if folder else 'folder'}; give a "
                         f"{'folder' if folder else 'file'} name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    return path


def atomic_write(path: Path, write) -> None:
    """Write ``path`` all at once or not at all: ``write(tmp)`` fills a temporary file in the same
    folder, which then replaces ``path`` (a rename); on any error the temporary file is removed."""
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and writers that recreate the file) make 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
    atomic_write(Path(path), write)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_metrics_csv(path, epochs) -> None:
    """Per-epoch records (metrics.json's "epochs": dicts of numbers) as CSV, atomically: a header
    row of the records' keys in their order, then one row per epoch; a missing value (None, e.g.
    no validation set) is an empty field, a float is written in full (its repr)."""
    columns = list(dict.fromkeys(key for record in epochs for key in record))

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for record in epochs:
                writer.writerow(["" if record.get(key) is None else record[key] for key in columns])
    atomic_write(Path(path), write)


def read_json(path) -> dict:
    """The JSON value in a run file (any JSON type: callers check the shape they need).

    Raises:
        RunError: missing, not a regular file, unreadable, or not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise RunError(f"{path}: missing (is {path.parent} a cnnlab run directory?)")
    try:
        with open_regular_file(path, "run files") as f:
            return json.loads(f.read().decode("utf-8"))
    except DataError as exc:
        raise RunError(str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RunError(f"{path}: not valid JSON (nested too deeply)") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None


def save_weights(model, path) -> None:
    """Write every parameter and buffer of ``model`` by its state-dict name (safetensors, atomic)."""
    save_arrays(path, {name: t.numpy() for name, t in model.state_dict().items()})


def save_arrays(path, arrays: dict) -> None:
    """Write named NumPy arrays as one safetensors file, atomically; a failed write (a full disk)
    is an OSError naming the file, and leaves the previous file as it was."""
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.numpy import save_file  # noqa: PLC0415

    tensors = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    try:
        atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata={"format": "cnnlab"}))
    except SafetensorError as exc:
        raise OSError(f"cannot write {path}: {exc}") from None


def load_weights(path, max_bytes: int | None = None) -> dict:
    """The tensors of a safetensors weights file, by name, as NumPy arrays.

    Args:
        path: the file (a run's model.safetensors).
        max_bytes: the largest file accepted (default ``data.limits.max_data_bytes()``: 1 GiB,
            or ``$CNNLAB_MAX_DATA_BYTES``).

    Raises:
        RunError: one line naming the file (and the tensor): missing, not a regular file, over
            ``max_bytes``, not safetensors, a tensor of a type other than floating point
            (float16/32/64), or a tensor holding NaN or infinity.
    """
    from safetensors.numpy import load  # noqa: PLC0415

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise RunError(f"{path}: missing weights file")
    limit = max_data_bytes(max_bytes)
    try:
        size = check_regular_file(path, "weights")
        if size > limit:
            raise RunError(f"{path}: {size} bytes, over cnnlab's limit of {limit} bytes for a weights file (raise it "
                           "with CNNLAB_MAX_DATA_BYTES or max_bytes=)")
        with open_regular_file(path, "weights") as f:
            blob = f.read()
    except DataError as exc:
        raise RunError(str(exc)) from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        tensors = load(blob)
    except KeyError as exc:  # safetensors.numpy meets a type NumPy lacks (BF16, F8_...)
        raise RunError(f"{path}: holds a tensor of type {exc}, which has no NumPy equivalent; cnnlab's weights "
                       "are float16, float32 or float64") from None
    except Exception as exc:  # SafetensorError, and whatever else a malformed header raises
        raise RunError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None
    except BaseException as exc:  # the Rust reader's PanicException is a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise RunError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None
    for name, array in sorted(tensors.items()):  # the first bad tensor by name, the same each time
        if array.dtype.kind != "f":
            raise RunError(f"{path}: tensor {name!r} is {array.dtype}, not floating point; cnnlab's weights are "
                           "float16, float32 or float64")
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise RunError(f"{path}: tensor {name!r} holds {bad} NaN or infinite values (of {array.size}); "
                           "the weights are unusable (did training diverge?)")
    return tensors


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def normalization(config, where="config.json") -> tuple[float, float]:
    """The (mean, std) a run's network expects its inputs normalised with: ``(pixel/255 - mean) / std``.

    ``cnnlab train`` records them in config.json as "mean" and "std". Runs saved before it did
    were all trained with MNIST's constants (whatever their data set), so a config without both
    keys gives (MNIST_MEAN, MNIST_STD).

    Args:
        config: the run's config dict (as ``load_run`` returns it; {} when there is none).
        where: how to name the config in error messages, e.g. its path.

    Returns:
        (mean, std) as floats.

    Raises:
        RunError: only one of the two keys, or values that are not finite numbers (std must be > 0).
    """
    has_mean, has_std = "mean" in config, "std" in config
    if not has_mean and not has_std:
        return MNIST_MEAN, MNIST_STD
    if has_mean != has_std:
        missing = "std" if has_mean else "mean"
        raise RunError(f"{where}: has {'mean' if has_mean else 'std'} but no {missing}: cannot normalise inputs")
    mean, std = config["mean"], config["std"]
    for key, value in (("mean", mean), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise RunError(f"{where}: {key} must be a finite number, got {value!r}")
    if not std > 0:
        raise RunError(f"{where}: std must be positive, got {std!r}")
    return float(mean), float(std)


def save_run(run_dir, model, model_spec, config=None, metrics=None) -> Path:
    """Write (or update) a run directory; returns its path."""
    run_dir = Path(run_dir)
    save_weights(model, run_dir / WEIGHTS)
    write_json(run_dir / SPEC, model_spec)
    if config is not None:
        write_json(run_dir / CONFIG, config)
    if metrics is not None:
        write_json(run_dir / METRICS, metrics)
    return run_dir


def read_spec(path) -> dict:
    """A run's spec.json, checked before anything is built: either a named model, a JSON object
    with "name" (a string: the zoo's or a registered model's) and "kwargs" (an object; missing in
    early runs, then {}) whose arguments ``models.spec`` accepts (types, sizes and the parameter
    cap), or a layer spec {"name": "sequential", "layers": [...]} that ``models.check_spec``
    accepts (cnnlab.nn's layers only, their arguments, a size bound).

    Returns:
        The spec as ``models.check_spec`` gives it.

    Raises:
        RunError: one line naming the file and what is wrong (an unregistered name: how to register it).
    """
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise RunError(f'{path}: must hold a JSON object {{"name": ..., "kwargs": {{...}}}}, got {_json_type(raw)}')
    name, kwargs = raw.get("name"), raw.get("kwargs", {})
    if not isinstance(name, str):
        raise RunError(f'{path}: "name" must be a string (a model of the zoo), got '
                       f'{"nothing" if "name" not in raw else _json_type(name)}')
    if name == models.SEQUENTIAL:
        try:
            return models.check_spec(raw)
        except ValueError as exc:
            raise RunError(f"{path}: {exc}") from None
    if not isinstance(kwargs, dict):
        raise RunError(f'{path}: "kwargs" must be a JSON object of the model\'s arguments, got {_json_type(kwargs)}')
    try:
        return models.spec(name, **kwargs)
    except SettingError as exc:
        raise RunError(f"{path}: kwargs.{exc.setting} {exc.problem}" if exc.setting != "kwargs"
                       else f"{path}: kwargs {exc.problem}") from None
    except ValueError as exc:
        raise RunError(f"{path}: {exc}") from None


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value)[:60]})"


def load_model(run_dir):
    """Rebuild the model of a run directory from its spec.json and load its weights.

    Returns (model in eval mode, spec). Raises RunError naming what is missing, what differs
    between the saved tensors and the model the spec describes, or why a layer spec's layers do
    not run on a 28x28 picture (a blank one goes through them).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    model_spec = read_spec(run_dir / SPEC)
    try:
        model = models.build(model_spec)
    except ValueError as exc:
        raise RunError(f"{run_dir / SPEC}: {exc}") from None
    weights = load_weights(run_dir / WEIGHTS)
    try:
        model.load_state_dict(weights)
    except ValueError as exc:
        raise RunError(f"{run_dir / WEIGHTS} does not match the model in {SPEC} "
                       f"({model_spec.get('name')}): {exc}") from None
    if model_spec["name"] == models.SEQUENTIAL:  # layers from a file: they must take a run's pictures
        try:
            models.summarize(model)  # one blank 28x28 picture through every layer
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise RunError(f"{run_dir / SPEC}: its layers do not run on a 28x28 picture: {exc}") from None
    return model.eval(), model_spec


# ------------------------------------------------------------------------------- the manifest
def sha256(path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(run_dir, status: str, files=(), **facts) -> dict:
    """Write RUN/manifest.json, the last file of every save: the run's ``status`` ("started",
    "training", "finished", "interrupted", "diverged"), the checksum of each of ``files`` (paths
    relative to the run) as they are now, and ``facts``. A run is whole when its files match it."""
    run_dir = Path(run_dir)
    manifest = {"format": 1, "status": status, **facts, "files": {f: sha256(run_dir / f) for f in files}}
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def read_manifest(run_dir) -> dict | None:
    """RUN/manifest.json, or None for a run saved before cnnlab wrote manifests."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
            or not isinstance(manifest.get("status"), str) or not isinstance(manifest.get("state"), (str, type(None))) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise RunError(f"{path}: not a cnnlab manifest (needs \"status\", \"state\" and \"files\")")
    return manifest


def check_files(run_dir, manifest: dict, names) -> None:
    """Raise RunError unless each of ``names`` is listed in ``manifest`` and matches its checksum."""
    run_dir = Path(run_dir)
    resume = (f"resume it with `cnnlab train --resume {run_dir}`, or train it again" if manifest["status"] != "diverged"
              else f"it diverged ({manifest.get('message', 'a non-finite loss')}): train it again")
    for name in names:
        expected = manifest["files"].get(name)
        path = run_dir / name
        if expected is None or not path.is_file():
            what = "missing" if not path.is_file() else "not in its manifest"
            raise RunError(f"{run_dir} is incomplete: {name} is {what} ({manifest['status']}, "
                           f"{manifest.get('epochs_done', 0)} epochs done); {resume}")
        if sha256(path) != expected:
            raise RunError(f"{path} does not match {run_dir / MANIFEST}: the run is incomplete or was changed "
                           f"after it was saved; {resume}")
