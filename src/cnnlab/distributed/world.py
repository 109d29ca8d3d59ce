"""The processes of a run: one (``World``), or every process of an MPI job (``MPIWorld``).

``init()`` looks at the environment a launcher leaves (``mpiexec``, ``mpirun``, Slurm's ``srun``):
launched as one of several processes it returns the MPI world, otherwise a one-process ``World``
whose collectives are the identity, without importing mpi4py.

Every collective of ``MPIWorld`` is nonblocking and waited on with a deadline: a process that has
died or hangs makes the others stop within ``timeout`` seconds (plus a few for the diagnosis),
with a message naming it, instead of waiting forever. While a process waits it answers the
others' "are you there?" messages; when its deadline passes it asks every process, and those that
do not answer within ``grace`` seconds are named as dead or hung before the whole job is aborted.
A launcher that sees a process die (mpiexec, srun) usually ends the job first, naming its pid:
rank 0 logs the ranks' pids at the start so that the pid can be told back into a rank.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sys
import time

import numpy as np

from .. import kernels

__all__ = ["DEFAULT_TIMEOUT", "DistributedError", "MPIWorld", "World", "init", "launched_size", "local", "pack", "unpack",
           "share_cores"]

# Seconds one process waits for the others in a collective before it asks who is missing; it
# covers the skew between processes (one saving a checkpoint, compiling a kernel), not a step.
DEFAULT_TIMEOUT = 300.0
# Environment variables that launchers set to the number of processes of the job.
# (Open MPI, MPICH / Intel MPI / srun's PMI, MVAPICH, a Slurm job step)
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
_PING, _PONG, _RESULT = 17, 18, 19  # tags of the control messages (on a communicator of their own)


class DistributedError(RuntimeError):
    """A collective could not be completed (a process died or hangs), or MPI is missing."""


class World:
    """One process: rank 0 of 1. Its collectives return their input; nothing is imported.

    Attributes:
        rank, size: this process's number and the number of processes.
        local_rank, local_size: the same among the processes on this machine.
        timeout: seconds a collective waits for the others (None: one process never waits).
    """

    rank, size, local_rank, local_size = 0, 1, 0, 1
    timeout = None

    @property
    def lead(self) -> bool:
        """Whether this is rank 0: the process that logs, shows progress and writes files."""
        return self.rank == 0

    def allreduce(self, array, what: str = "allreduce"):
        """The elementwise sum of ``array`` over the processes (NumPy; in place where it can)."""
        return array

    def broadcast(self, array, root: int = 0, what: str = "broadcast"):
        """Rank ``root``'s ``array`` on every process (copied into ``array`` elsewhere)."""
        return array

    def broadcast_object(self, obj, root: int = 0, what: str = "broadcast"):
        """Rank ``root``'s picklable ``obj`` on every process."""
        return obj

    def allgather(self, array, what: str = "allgather"):
        """(size, *array.shape): every process's ``array``, in rank order."""
        return np.asarray(array)[None]

    def post_result(self, obj, what: str = "result") -> None:
        """From a rank other than 0: start sending picklable ``obj`` to rank 0 and go on working;
        ``finish_results`` waits until rank 0 has every one (``receive_result`` there)."""
        raise DistributedError("one process has no rank 0 to send to")

    def finish_results(self, timeout: float | None = None) -> None:
        """Wait until rank 0 has received every posted result."""

    def receive_result(self, what: str = "result", timeout: float | None = None):
        """On rank 0: (source rank, obj) of the next posted result to arrive."""
        raise DistributedError("one process has no other process to receive from")

    def barrier(self, what: str = "barrier") -> None:
        """Wait until every process is here."""

    def answer_pings(self) -> None:
        """Answer the other processes' "are you there?" (a long wait elsewhere should call it)."""

    def stuck(self, what: str, waited: float):
        """Name the processes that do not answer and abort (called when a wait passed its deadline)."""
        self.abort(f"cnnlab: {what} waited {waited:g}s; stopping")

    def abort(self, message: str, code: int = 1):
        """Print ``message`` and end every process of the job with exit status ``code``."""
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(code)

    @contextlib.contextmanager
    def guard(self, what: str = "cnnlab"):
        """A block in which an error on one process ends all of them (with one process: nothing)."""
        yield

    def describe(self) -> str:
        return "one process"


def local() -> World:
    """The one-process world (what ``init`` returns outside an MPI job)."""
    return World()


def launched_size() -> int:
    """The number of processes a launcher started this job with, from its environment (1 if none)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


_world = None


def init(timeout: float | None = None) -> World:
    """This process's world: the MPI world when the job was launched with several processes,
    else the one-process world. The first call in an MPI job initialises MPI (once per process).

    Args:
        timeout: seconds a collective waits for the others (default ``DEFAULT_TIMEOUT``).

    Raises:
        DistributedError: launched as one of several processes, but mpi4py is not installed.
    """
    global _world
    if _world is not None:
        if timeout is not None:
            _world.timeout = float(timeout)
        return _world
    if launched_size() == 1 and "mpi4py.MPI" not in sys.modules:
        return World()
    try:
        import mpi4py  # noqa: PLC0415 - optional dependency, imported only under a launcher
    except ImportError:
        raise DistributedError(
            f"started as one of {launched_size()} processes (by mpiexec, mpirun or srun), but mpi4py is not "
            f"installed: `pip install 'cnnlab[dist]'`; without it every process would train alone") from None
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI
    from mpi4py import MPI  # noqa: PLC0415

    if MPI.COMM_WORLD.Get_size() == 1:
        return World()
    _world = MPIWorld(MPI.COMM_WORLD, DEFAULT_TIMEOUT if timeout is None else timeout)
    share_cores(_world)
    return _world


def share_cores(world) -> int:
    """Split the machine's cores between the processes on it: cnnlab's kernels otherwise use every
    core in each process, and N processes on one machine would oversubscribe it N times. A process
    the launcher bound to some cores (``mpiexec -bind-to core``) keeps those. Returns the threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if world.local_size > 1 and cores >= (os.cpu_count() or cores):  # not bound: every core visible
        cores = max(1, cores // world.local_size)
    kernels.set_workers(min(cores, kernels.policy.WORKERS))
    return kernels.policy.WORKERS


class MPIWorld(World):
    """The processes of an MPI communicator (``mpi4py``), with deadlines on every collective.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (usually ``MPI.COMM_WORLD``); it is duplicated, so cnnlab's
            messages never mix with the caller's.
        timeout: seconds a collective waits for the others before naming the missing ones and
            aborting the job.
        grace: seconds the others get to answer that question.
    """

    def __init__(self, comm, timeout: float = DEFAULT_TIMEOUT, grace: float = 5.0):
        from mpi4py import MPI  # noqa: PLC0415

        self.MPI = MPI
        self.comm = comm.Dup()
        self.control = comm.Dup()  # pings and results: never matched by a collective
        for c in (self.comm, self.control):
            c.Set_errhandler(MPI.ERRORS_RETURN)  # a lost process raises, so it can be named
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout, self.grace = float(timeout), float(grace)
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._answers = []  # pending sends of pongs (their buffers must live until sent)
        self._pong = np.zeros(1, np.int64)
        self._results = []  # pending sends of results: (request, buffer)
        # who is who: every process's host and pid, for messages (a launcher names a dead pid)
        me = f"{socket.gethostname()}/{os.getpid()}".encode()[:63].ljust(64, b"\0")
        names = self.allgather(np.frombuffer(me, np.uint8), "start-up")
        self.names = [bytes(n).rstrip(b"\0").decode(errors="replace") for n in names]

    # ------------------------------------------------------------------ collectives
    def allreduce(self, array, what: str = "allreduce"):
        array = np.ascontiguousarray(array)
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), what)
        return array

    def broadcast(self, array, root: int = 0, what: str = "broadcast"):
        array = np.ascontiguousarray(array)
        self._wait(self.comm.Ibcast(array, root=root), what)
        return array

    def broadcast_object(self, obj, root: int = 0, what: str = "broadcast"):
        data = np.frombuffer(pack(obj), np.uint8) if self.rank == root else np.zeros(0, np.uint8)
        n = self.broadcast(np.array([data.size], np.int64), root, what)
        buf = data.copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        return unpack(self.broadcast(buf, root, what).tobytes())

    def allgather(self, array, what: str = "allgather"):
        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, array.dtype)
        self._wait(self.comm.Iallgather(array, out), what)
        return out

    def barrier(self, what: str = "barrier") -> None:
        self._wait(self.comm.Ibarrier(), what)

    # ------------------------------------------------------------------ results to rank 0
    def post_result(self, obj, what: str = "result") -> None:
        if self.rank == 0:
            raise DistributedError("rank 0 keeps its own results")
        buf = np.frombuffer(pack(obj), np.uint8).copy()
        self._results.append((self.control.Isend(buf, dest=0, tag=_RESULT), buf, what))

    def finish_results(self, timeout: float | None = None) -> None:
        """Wait for the posted results (up to ``timeout``, default the world's, for each): rank 0
        takes them only when its own work is done, so the wait may be long."""
        for request, _, what in self._results:
            self._wait(request, f"sending the {what} to rank 0", timeout)
        self._results = []

    def receive_result(self, what: str = "result", timeout: float | None = None):
        MPI = self.MPI
        status = MPI.Status()
        start = time.monotonic()
        limit = self.timeout if timeout is None else timeout
        while not self.control.Iprobe(source=MPI.ANY_SOURCE, tag=_RESULT, status=status):
            self.answer_pings()
            if time.monotonic() - start > limit:
                self.stuck(what, limit)
            time.sleep(0.01)
        buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
        source = status.Get_source()
        self._wait(self.control.Irecv(buf, source=source, tag=_RESULT), what)
        return source, unpack(buf.tobytes())

    # ------------------------------------------------------------------ waiting with a deadline
    def _wait(self, request, what: str, timeout: float | None = None) -> None:
        """Complete ``request``: spin briefly (a step's collectives are usually met within
        microseconds), then poll with short sleeps, answering pings; past the deadline, name the
        processes that do not answer and abort."""
        start = time.monotonic()
        limit = self.timeout if timeout is None else timeout
        polls = 0
        while True:
            try:
                if request.Test():
                    return
            except self.MPI.Exception as exc:
                self.abort(f"cnnlab: rank {self.rank} of {self.size}: {what} failed: {exc.Get_error_string().strip()}"
                           f" (a process has died); stopping all {self.size} processes")
            polls += 1
            if polls < 2000:  # about a millisecond; yielding lets a peer that shares the core run
                os.sched_yield()
                continue
            self.answer_pings()
            if time.monotonic() - start > limit:
                self.stuck(what, limit)
            time.sleep(0.0002 if polls < 10000 else 0.002)

    def answer_pings(self) -> None:
        MPI = self.MPI
        status = MPI.Status()
        while self.control.Iprobe(source=MPI.ANY_SOURCE, tag=_PING, status=status):
            source = status.Get_source()
            self.control.Recv(np.zeros(1, np.int64), source=source, tag=_PING)
            self._answers.append(self.control.Isend(self._pong, dest=source, tag=_PONG))
        self._answers = [r for r in self._answers if not r.Test()]

    def silent_ranks(self, grace: float | None = None) -> list[int]:
        """Ask every other process whether it is there; the ranks that do not answer within
        ``grace`` seconds (dead, hung, or busy outside cnnlab for that long)."""
        MPI = self.MPI
        grace = self.grace if grace is None else grace
        ping = np.zeros(1, np.int64)
        sends, waiting = [], {}
        for r in range(self.size):
            if r == self.rank:
                continue
            try:
                sends.append(self.control.Isend(ping, dest=r, tag=_PING))
                buf = np.zeros(1, np.int64)
                waiting[r] = (self.control.Irecv(buf, source=r, tag=_PONG), buf)
            except MPI.Exception:
                pass  # that process is gone: it stays silent
        answered = set()
        end = time.monotonic() + grace
        while time.monotonic() < end and len(answered) < len(waiting):
            for r, (req, _) in waiting.items():
                try:
                    if r not in answered and req.Test():
                        answered.add(r)
                except MPI.Exception:
                    pass
            self.answer_pings()
            time.sleep(0.01)
        return [r for r in range(self.size) if r != self.rank and r not in answered]

    def stuck(self, what: str, waited: float):
        silent = self.silent_ranks()
        who = (f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} "
               f"({', '.join(self.names[r] for r in silent)}) did not answer: died or hung" if silent
               else "every process answers, but the collective did not complete: the processes are out of step")
        self.abort(f"cnnlab: rank {self.rank} of {self.size}: {what} waited {waited:g}s; {who}; "
                   f"stopping all {self.size} processes")

    # ------------------------------------------------------------------ failure
    def abort(self, message: str, code: int = 1):
        print(message, file=sys.stderr, flush=True)
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)  # Abort may return before the launcher ends this process

    @contextlib.contextmanager
    def guard(self, what: str = "cnnlab"):
        """An exception on one process would leave the others waiting for it: print it and abort
        the job (``SystemExit`` passes through), with the command line's exit code for it
        (docs/scripting.md): 130 interrupted, 1 diverged, 3 anything else (a file, the data, the disk)."""
        try:
            yield
        except (SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: the others would wait
            name = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            self.abort(f"cnnlab: rank {self.rank} of {self.size} ({self.names[self.rank]}): {what}: {name}; "
                       f"stopping all {self.size} processes",
                       130 if isinstance(exc, KeyboardInterrupt) else 1 if isinstance(exc, FloatingPointError) else 3)

    def describe(self) -> str:
        hosts = len(set(n.split("/")[0] for n in self.names))
        return (f"{self.size} processes on {hosts} machine{'s' if hosts > 1 else ''} (rank host/pid: "
                + ", ".join(f"{r} {n}" for r, n in enumerate(self.names)) + ")")


# ------------------------------------------------------------------ messages between processes
def pack(obj) -> bytes:
    """``obj`` as bytes for another process: JSON, with NumPy arrays, tuples, bytes and dicts with
    other keys than strings spelt out. Nothing is pickled: reading a message runs no code."""
    return json.dumps(_encode(obj), separators=(",", ":")).encode()


def unpack(data: bytes):
    """The object ``pack`` made into ``data``."""
    return _decode(json.loads(data.decode()))


def _encode(obj):
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"__ndarray__": [a.dtype.str, list(a.shape), base64.b64encode(a.tobytes()).decode()]}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise DistributedError(f"cannot send a {type(obj).__name__} to another process")


def _decode(obj):
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__ndarray__" in obj:
        dtype, shape, data = obj["__ndarray__"]
        return np.frombuffer(base64.b64decode(data), np.dtype(dtype)).reshape(shape).copy()
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(_decode(v) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k): _decode(v) for k, v in obj["__items__"]}
    return {k: _decode(v) for k, v in obj.items()}
