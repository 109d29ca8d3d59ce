"""The wheel as a user gets it: built from a clean copy of the sources, installed into a fresh
virtual environment (its dependencies from the package index), and run from another directory,
where no checkout can be seen: MNIST and the shipped model must come from the installed package.

Slow (minutes on a loaded 2-core machine: installing numpy, numba and matplotlib dominates).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import pretrained
from cnnlab.data import load_mnist

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FILES = [
    *(f"cnnlab/data/mnist/{stem}.gz" for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
    *(f"cnnlab/pretrained/default/{name}" for name in ("model.safetensors", "spec.json", "config.json", "metrics.json",
                                                        "manifest.json", "provenance.json")),
    "cnnlab/serve/static/index.html",
]
# a failure to reach the package index (offline): the one reason to skip rather than fail
OFFLINE = ("Could not find a version", "No matching distribution", "NewConnectionError", "Temporary failure in name",
           "Network is unreachable", "ConnectionError", "Max retries exceeded")


def _clean_copy(dest: Path) -> Path:
    """pyproject.toml, README.md and src/ as a fresh clone has them: no caches, stamps or egg-info."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.egg-info", ".cnnlab-verified.json", ".*.tmp*", ".lock"))
    return dest


def _run(cmd, cwd, env, timeout=600, what="") -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        text = result.stdout + result.stderr
        if any(word in text for word in OFFLINE):
            pytest.skip(f"{what}: the package index cannot be reached ({text.strip().splitlines()[-1]})")
        pytest.fail(f"{what} failed ({result.returncode}):\n{text[-3000:]}")
    return result


def _build_wheel(tree: Path, dist: Path, env) -> Path:
    """``python -m build --wheel``: without isolation when this environment's setuptools can build
    the project (no download), else in build's own isolated environment (setuptools from the index)."""
    try:
        no_isolation = int(importlib.metadata.version("setuptools").split(".")[0]) >= 77
    except importlib.metadata.PackageNotFoundError:
        no_isolation = False
    flags = ["--no-isolation", "--skip-dependency-check"] if no_isolation else []
    _run([sys.executable, "-m", "build", "--wheel", *flags, "--outdir", dist, tree], tree, env, what="building the wheel")
    (wheel,) = dist.glob("cnnlab-*.whl")
    return wheel


def _digit_png(path: Path) -> int:
    """A test digit of MNIST drawn as a user's picture: dark ink on white, 4x larger; its label."""
    ds = load_mnist()
    index = 0
    image = 255 - np.kron(ds.test_images[index], np.ones((4, 4), dtype=np.uint8))
    Image.fromarray(image).save(path)
    return int(ds.test_labels[index])


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_anywhere(tmp_path):
    assert pretrained.available(), "no shipped model: run `python tools/make_pretrained.py`"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CNNLAB_DATA", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # no user's copy of MNIST to fall back on
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    started = time.perf_counter()

    wheel = _build_wheel(_clean_copy(tmp_path / "tree"), tmp_path / "dist", env)
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in PACKAGE_FILES if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    stray = [n for n in names if n.endswith((".cnnlab-verified.json", ".lock", ".tmp")) or "/checkpoint/" in n
             or n.startswith(("tests/", "data/"))]
    assert not stray, f"the wheel carries {stray}"
    size_mb = wheel.stat().st_size / 1e6
    built = time.perf_counter()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env, what="making a venv")
    python, cnnlab = venv / "bin" / "python", venv / "bin" / "cnnlab"
    # this environment's pip installs into the new one (no pip bootstrapped there: faster)
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile", wheel], tmp_path, env,
         what="pip install of the wheel")
    installed = time.perf_counter()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import cnnlab, cnnlab.pretrained as p; from cnnlab.data import dataset_dir; "
                  "print(cnnlab.__file__); print(dataset_dir('mnist')); print(p.path())"],
                 elsewhere, env, what="importing the installed cnnlab").stdout.split()
    site = venv.resolve()
    for found in where:  # the package, its MNIST and its model: all the installed copies
        assert Path(found).resolve().is_relative_to(site), (found, site)

    digit = elsewhere / "my digit.png"
    label = _digit_png(digit)
    out = _run([cnnlab, "predict", digit], elsewhere, env, what="cnnlab predict IMAGE").stdout
    assert out.startswith(f"{digit}: {label} "), out

    out = _run([cnnlab, "show", "featuremaps", digit], elsewhere, env, what="cnnlab show featuremaps IMAGE").stdout
    assert Path(out.strip()) == Path("featuremaps.png") and (elsewhere / "featuremaps.png").stat().st_size > 0

    out = _run([cnnlab, "train", "--dry-run", "--no-progress"], elsewhere, env, what="cnnlab train --dry-run").stdout
    assert "test accuracy" in out, out
    assert sorted(p.name for p in elsewhere.iterdir()) == ["featuremaps.png", "my digit.png"]  # a dry run saves nothing
    done = time.perf_counter()
    print(f"\nwheel {size_mb:.1f} MB; build {built - started:.0f}s, install {installed - built:.0f}s, "
          f"commands {done - installed:.0f}s")
