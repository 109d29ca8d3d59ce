"""Train the model cnnlab ships and put it into the package: the single source of
src/cnnlab/pretrained/default/.

    python tools/make_pretrained.py            # train the default recipe (about 75 s on 2 quiet cores)
    python tools/make_pretrained.py --check    # train it twice; install only if the weights are identical

It trains ``recipes.get("default")`` (with the recipe's seed, recorded in the run's config.json)
exactly as ``make train`` does, in a temporary folder next to the destination, writes
``provenance.json`` (recipe, seed, accuracy, the weights' SHA-256, thread settings, versions),
and only then swaps the new run in for the old one (renames: the destination is never half
written; a previous model is removed after the new one is in place).

Bit for bit: the weights depend on how each batch is cut into chunks for the cores
(kernels.policy.WORKERS) and on the BLAS thread count (measured: each changes them), so both are
fixed here, WORKERS to 2 and BLAS to one thread, whatever the machine. With those, two runs on the
same machine give the same bytes. Another CPU model may not: OpenBLAS and numba pick their
vector kernels for the CPU they run on.

Run it with this checkout's cnnlab (``pip install -e .``, or ``PYTHONPATH=src``).
"""

from __future__ import annotations

import os

# Before NumPy is imported: one BLAS thread however the BLAS library was built (cnnlab also
# limits it with threadpoolctl on first use, CNNLAB_BLAS_THREADS says how far).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CNNLAB_BLAS_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2  # chunks per batch: the reference machine's core count; fixed so the bits do not depend on the machine
BLAS_THREADS = 1
RECIPE = "default"


def _commit() -> str | None:
    """This checkout's commit, "+dirty" if it has uncommitted changes (None outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "tools"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture: the bits may differ on another CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def train_once(config, out: Path, log):
    """Train ``config`` into ``out`` (a new folder); the Run and its training seconds."""
    from cnnlab import runs  # noqa: PLC0415

    started = time.perf_counter()
    run = runs.train(config, out=out, progress=False, log=log)
    seconds = time.perf_counter() - started
    (out / ".lock").unlink(missing_ok=True)  # the training lock: not part of the shipped run
    if run.history.interrupted or run.history.test_accuracy is None:
        raise RuntimeError(f"training into {out} did not finish")
    return run, seconds


def install(tmp: Path, dest: Path) -> None:
    """Put the finished run ``tmp`` where ``dest`` is, by renames in the same folder."""
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="train twice and install only if both give the same weights, byte for byte")
    parser.add_argument("--dest", type=Path, default=ROOT / "src" / "cnnlab" / "pretrained" / RECIPE,
                        help="the run directory to write (default: the package's)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on the first N images only (a quick trial of this tool; recorded)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs instead of the recipe's (a quick trial; recorded)")
    args = parser.parse_args(argv)

    import cnnlab  # noqa: PLC0415
    from cnnlab import checkpoint, pretrained, recipes  # noqa: PLC0415
    from cnnlab.kernels import policy  # noqa: PLC0415

    if not Path(cnnlab.__file__).resolve().is_relative_to(ROOT / "src"):
        print(f"make_pretrained: error: cnnlab is imported from {Path(cnnlab.__file__).parent}, not this checkout's "
              f"src/: run it with `pip install -e .` or PYTHONPATH=src", file=sys.stderr)
        return 2
    policy.WORKERS, policy.BLAS_THREADS = WORKERS, BLAS_THREADS

    changes = {k: v for k, v in (("train_size", args.train_size), ("epochs", args.epochs)) if v is not None}
    config = recipes.get(RECIPE).replace(**changes)
    dest = args.dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    again = dest.parent / f".{dest.name}.check-{os.getpid()}"
    log = print
    commit = _commit()  # the code that trains, before anything can change in the checkout
    try:
        run, seconds = train_once(config, tmp, log)
        sha = checkpoint.sha256(tmp / checkpoint.WEIGHTS)
        print(f"weights sha256 {sha}, test accuracy {100 * run.history.test_accuracy:.2f}%, {seconds:.0f}s")
        second = None
        if args.check:
            _, second_seconds = train_once(config, again, log)
            second = checkpoint.sha256(again / checkpoint.WEIGHTS)
            print(f"second run: weights sha256 {second}, {second_seconds:.0f}s")
            if second != sha:
                print("make_pretrained: error: the two trainings gave different weights: not bit-reproducible here; "
                      "nothing installed", file=sys.stderr)
                return 1
        h = run.history
        facts = {
            "made_by": "tools/make_pretrained.py",
            "recipe": RECIPE,
            "seed": run.config.seed,
            "changes": changes,  # empty for the shipped model: the recipe as it is
            "test_accuracy": h.test_accuracy,
            "best_validation_accuracy": h.best_validation_accuracy,
            "best_epoch": h.best_epoch,
            "weights_sha256": sha,
            "reproduced": second == sha if second is not None else None,
            "workers": WORKERS,
            "blas_threads": BLAS_THREADS,
            "train_seconds": round(seconds, 1),
            "cnnlab_commit": commit,
            "cnnlab_version": cnnlab.__version__,
            "numpy": __import__("numpy").__version__,
            "numba": __import__("numba").__version__,
            "python": platform.python_version(),
            "cpu": _cpu_model(),
            "made": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        checkpoint.write_json(tmp / pretrained.PROVENANCE, facts)
        install(tmp, dest)
    finally:
        for leftover in (tmp, again):
            shutil.rmtree(leftover, ignore_errors=True)
    print(f"installed {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
