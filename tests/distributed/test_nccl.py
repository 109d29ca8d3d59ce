"""NCCL collectives on GPUs (cupy.cuda.nccl). Marked gpu: skipped without CuPy and a GPU, as on
the machines this was written on, so this code has NOT RUN yet (docs/distributed.md says so)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")


def test_one_process_nccl_allreduce_and_broadcast():
    from cnnlab import distributed

    comm = distributed.NcclComm(distributed.local())
    a = cp.arange(6, dtype=cp.float32)
    assert cp.array_equal(comm.allreduce(a.copy()), a)
    assert cp.array_equal(comm.broadcast(a.copy()), a)
    np.testing.assert_array_equal(comm.allreduce(np.ones(3)), np.ones(3))  # NumPy goes through the world


@pytest.mark.skipif(not shutil.which("mpiexec", path=str(Path(sys.executable).parent)), reason="no mpiexec")
def test_two_gpu_processes_train_the_one_process_model():
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("NCCL needs a GPU per process: this machine has one")
    script = ("from cnnlab import recipes, runs\n"
              "cfg = recipes.get('default').replace(epochs=1, train_size=512, validation=512, device='cuda')\n"
              "run = runs.train(cfg, save=False, progress=False)\n"
              "print('accuracy', run.history.test_accuracy)\n")
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.run([shutil.which("mpiexec", path=str(Path(sys.executable).parent)), "-n", "2", sys.executable,
                           "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(src)})
    assert proc.returncode == 0 and proc.stdout.count("accuracy") == 2, proc.stdout + proc.stderr
