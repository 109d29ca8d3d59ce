"""What scripts rely on (docs/scripting.md): the exit codes, one per kind of outcome, the error that
marks a usage error, and ``--json``'s one document on stdout.

    0    success
    1    failed in part: some inputs failed and the others were done (predict), or training
         finished no epoch or diverged (the last good epoch is kept)
    2    usage error: the command line alone is wrong (argparse's own errors, a flag's value out of
         range, flags that do not go together); nothing was read or done
    3    bad input: the command line is fine, but what it names cannot be used (a missing, damaged
         or incomplete run, an unreadable picture or data set, a full or read-only disk, a missing
         optional package)
    130  interrupted (Ctrl-C, SIGINT); a run keeps its last finished epoch
    141  the reader of the output went away (`cnnlab models | head`), as a shell reports SIGPIPE

Every error but 141 is one line on stderr, ``cnnlab COMMAND: error: ...`` (argparse's: a usage line
and ``cnnlab COMMAND: error: ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import numpy as np

OK, PARTIAL, USAGE, BAD_INPUT, INTERRUPTED, BROKEN_PIPE = 0, 1, 2, 3, 130, 141


class UsageError(ValueError):
    """The command line alone is wrong, found without reading any file: exit 2."""


@contextlib.contextmanager
def arguments():
    """Around a check of the command line alone (parsing a flag's text, a name the zoo must know):
    its ValueError is a usage error."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add_json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of text (docs/scripting.md); errors stay "
                        "one line on stderr")


def print_json(document) -> None:
    """``document`` as one JSON document on one line of stdout: NumPy numbers as plain numbers, no NaN."""
    json.dump(document, sys.stdout, allow_nan=False, default=_plain)
    sys.stdout.write("\n")


def _plain(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")
