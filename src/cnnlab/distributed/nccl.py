"""Collectives on GPUs: NCCL through CuPy (``cupy.cuda.nccl``), one GPU per process.

NOT RUN YET: written against CuPy's documented NCCL binding, but no GPU was at hand when it was
written; its test (tests/distributed/test_nccl.py) is marked ``gpu`` and skips without one.

Each process uses GPU ``local_rank % count`` of its machine. Rank 0 makes the NCCL unique id and
broadcasts it over MPI; then ``allreduce`` / ``broadcast`` of CuPy arrays run on the current stream,
and are waited on with the world's deadline (an event polled, answering the MPI pings meanwhile),
so a process that dies or hangs still stops the others. NumPy arrays go through MPI as before.
"""

from __future__ import annotations

import time

from .. import backend

__all__ = ["NcclComm", "use_local_gpu"]


def use_local_gpu(world) -> int:
    """Make GPU ``world.local_rank % count`` this process's current device; returns its number."""
    cp = backend.xp_for("cuda")
    count = cp.cuda.runtime.getDeviceCount()
    device = world.local_rank % count
    cp.cuda.Device(device).use()
    return device


class NcclComm:
    """The processes of ``world`` with NCCL collectives for CuPy arrays (MPI for NumPy arrays).

    Args:
        world: an ``MPIWorld`` (its MPI communicator carries the unique id, the pings and aborts).
    """

    def __init__(self, world):
        cp = backend.xp_for("cuda")
        from cupy.cuda import nccl  # noqa: PLC0415

        self.cp, self.nccl, self.world = cp, nccl, world
        self.rank, self.size = world.rank, world.size
        self.device = use_local_gpu(world)
        uid = nccl.get_unique_id() if world.rank == 0 else None
        uid = world.broadcast_object(uid, 0, "NCCL unique id")
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16,
                       "int64": nccl.NCCL_INT64, "int32": nccl.NCCL_INT32}

    def _wait(self, stream, what: str) -> None:
        event = self.cp.cuda.Event(disable_timing=True)
        event.record(stream)
        start = time.monotonic()
        while not event.done:
            self.world.answer_pings()
            if time.monotonic() - start > self.world.timeout:
                self.comm.abort()
                self.world.stuck(what, self.world.timeout)
            time.sleep(0.0002)

    def allreduce(self, array, what: str = "allreduce"):
        """The sum of ``array`` over the processes (a CuPy array in place; NumPy through MPI)."""
        if backend.get_array_module(array) is not self.cp:
            return self.world.allreduce(array, what)
        array = self.cp.ascontiguousarray(array)
        stream = self.cp.cuda.get_current_stream()
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._types[array.dtype.name],
                            self.nccl.NCCL_SUM, stream.ptr)
        self._wait(stream, what)
        return array

    def broadcast(self, array, root: int = 0, what: str = "broadcast"):
        """Rank ``root``'s ``array`` everywhere (a CuPy array in place; NumPy through MPI)."""
        if backend.get_array_module(array) is not self.cp:
            return self.world.broadcast(array, root, what)
        array = self.cp.ascontiguousarray(array)
        stream = self.cp.cuda.get_current_stream()
        self.comm.bcast(array.data.ptr, array.size, self._types[array.dtype.name], root, stream.ptr)
        self._wait(stream, what)
        return array
