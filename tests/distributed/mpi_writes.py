"""Run under mpiexec by test_mpi.py: `cnnlab train` (cli.main) with every file write recorded.

Every checkpoint write goes through checkpoint.atomic_write; each rank counts its own, and rank 0
writes {rank: [paths written]} as JSON to argv[1]. The rest of argv are the train command's flags.
"""

import json
import sys

import numpy as np

from cnnlab import checkpoint, distributed
from cnnlab.cli import main

world = distributed.init(timeout=120)
written = []
real_write = checkpoint.atomic_write


def atomic_write(path, write):
    written.append(str(path))
    return real_write(path, write)


checkpoint.atomic_write = atomic_write
code = main(["train", *sys.argv[2:]])
counts = world.allgather(np.array([len(written), code]))
if world.rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump({"writes": {str(r): int(c[0]) for r, c in enumerate(counts)}, "paths": written,
                   "exit codes": [int(c[1]) for c in counts]}, f)
