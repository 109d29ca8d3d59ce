"""Run under mpiexec by test_mpi.py: a data-parallel run stopped after its first epoch and resumed.

argv: OUT (a folder) and ONE (a run trained by one process, interrupted). Every rank trains the
same 2-epoch run twice into OUT: once whole, once stopped after epoch 1 as Ctrl-C would stop it
(every process at the same point) and then resumed with ``runs.resume``; then the CLI is asked to
resume ONE, which must refuse. Rank 0 writes {"exit codes": [...], "status": ...} to OUT/report.json.
"""

import json
import sys
from pathlib import Path

import numpy as np

from cnnlab import checkpoint, distributed, recipes, runs
from cnnlab.cli import main
from cnnlab.data import Augment

world = distributed.init(timeout=120)
out, one = Path(sys.argv[1]), sys.argv[2]
# batch norm, dropout and augmentation: the random generator and the loader position matter too
config = recipes.get("default").replace(model_kwargs={"hidden": 32}, epochs=2, train_size=320, validation=200,
                                     batch_size=32, augment=Augment(max_shift=2, max_degrees=8), seed=3)
runs.train(config, out=out / "whole", progress=False, log=None)

real_fit = runs.fit


def first_epoch_then_stop(model, optimizer, loader, epochs, **kw):
    history = real_fit(model, optimizer, loader, 1, **kw)
    history.interrupted = True  # as Ctrl-C reaching every process after the first epoch's save
    return history


runs.fit = first_epoch_then_stop
runs.train(config, out=out / "cut", progress=False, log=None)
runs.fit = real_fit
status = checkpoint.read_manifest(out / "cut")["status"] if world.lead else None
resumed = runs.resume(out / "cut", progress=False, log=None)
code = main(["train", "--resume", one, "--no-progress"])
codes = world.allgather(np.array([code, len(resumed.history.epochs)]))
if world.lead:
    (out / "report.json").write_text(json.dumps({"exit codes": [int(c[0]) for c in codes],
                                                 "epochs": [int(c[1]) for c in codes], "status": status}))
