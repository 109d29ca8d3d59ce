"""Run under mpiexec by test_mpi.py: data-parallel steps in which rank 1 fails at step 3.

    python mpi_fault.py MODE TIMEOUT     MODE: hang (SIGSTOP itself) | kill (SIGKILL) | error (raise)
"""

import os
import signal
import sys

import numpy as np
from mpi4py import MPI

from cnnlab import backend, distributed, nn, optim
from cnnlab.data import DataLoader
from cnnlab.train import fit

mode, timeout = sys.argv[1], float(sys.argv[2])
world = distributed.MPIWorld(MPI.COMM_WORLD, timeout=timeout, grace=2.0)
if world.rank == 0:
    print(world.describe(), flush=True)
backend.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
parallel = distributed.DataParallel(model, world)
rng = np.random.default_rng(0)
x, y = rng.random((4000, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 4000)
loader = parallel.loader(DataLoader(x, y, 16, seed=0, shard=(world.rank, world.size)))
opt = optim.SGD(model.parameters(), lr=0.1)
real_backward = parallel.backward


def backward(loss, logits, target):
    if world.rank == 1 and parallel.steps == 3:
        if mode == "hang":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            raise OSError("disk full (a simulated failure)")
    return real_backward(loss, logits, target)


parallel.backward = backward
with world.guard("training"):
    fit(model, opt, loader, 100, progress=False, log=None, parallel=parallel)
print("finished: the failure went unnoticed", flush=True)
