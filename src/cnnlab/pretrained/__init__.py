"""The model that ships with cnnlab: the ``default`` recipe trained once, so that right after
``pip install cnnlab`` a picture can be classified with no training.

    >>> from cnnlab import pretrained
    >>> run = pretrained.load()            # a runs.Run, as runs.load(pretrained.path()) gives
    >>> pretrained.provenance()["weights_sha256"]

The run directory ``cnnlab/pretrained/default/`` is package data, written only by
``tools/make_pretrained.py`` (its recipe, seed and thread settings recorded in ``provenance.json``
next to the run's usual files). Loading it checks every file against the run's manifest and the
weights against the recorded SHA-256.
"""

from __future__ import annotations

from pathlib import Path

from .. import checkpoint, runs

__all__ = ["NAME", "PROVENANCE", "available", "load", "path", "provenance"]

NAME = "default"
PROVENANCE = "provenance.json"  # recipe, seed, threads, weights' SHA-256, versions: how the run was made

_HERE = Path(__file__).resolve().parent


def path(name: str = NAME) -> Path:
    """The shipped run directory (it need not exist: see ``available``)."""
    if name != NAME:
        raise ValueError(f"unknown shipped model {name!r}; cnnlab ships one: {NAME!r}")
    return _HERE / name


def available(name: str = NAME) -> bool:
    """Whether this install holds the shipped model (a run's weights and its provenance)."""
    where = path(name)
    return (where / checkpoint.WEIGHTS).is_file() and (where / PROVENANCE).is_file()


def provenance(name: str = NAME) -> dict:
    """How the shipped model was made: recipe, seed, test accuracy, weights' SHA-256, threads,
    versions (``provenance.json``).

    Raises:
        checkpoint.RunError: the shipped model is missing from this install, or its file is broken.
    """
    where = path(name)
    if not available(name):
        raise checkpoint.RunError(f"this cnnlab has no shipped model ({where} is missing or incomplete): reinstall "
                                  f"cnnlab, or in a source checkout run `python tools/make_pretrained.py`")
    facts = checkpoint.read_json(where / PROVENANCE)
    if not isinstance(facts, dict) or not isinstance(facts.get("weights_sha256"), str):
        raise checkpoint.RunError(f"{where / PROVENANCE}: needs a JSON object with \"weights_sha256\"")
    return facts


def load(name: str = NAME) -> runs.Run:
    """The shipped model as a ``runs.Run`` (model in eval mode, config, metrics).

    Raises:
        checkpoint.RunError: missing, incomplete or changed (its files against the manifest, its
            weights against the SHA-256 in ``provenance.json``).
    """
    expected = provenance(name)["weights_sha256"]
    where = path(name)
    got = checkpoint.sha256(where / checkpoint.WEIGHTS)
    if got != expected:
        raise checkpoint.RunError(f"{where / checkpoint.WEIGHTS}: SHA-256 {got} is not the recorded {expected} "
                                  f"({where / PROVENANCE}): the shipped model was changed; reinstall cnnlab")
    return runs.load(where)
