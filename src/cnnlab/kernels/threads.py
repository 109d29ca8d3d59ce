"""The thread pool that spreads a batch's chunks over the cores, and BLAS held to one thread.

Every core works on its own images (im2col, a single-threaded GEMM, col2im), so nothing is shared
but the inputs. Results come back in chunk order, so sums over them are deterministic. When work
is split, and how finely, is kernels/policy.py's decision.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
import threading

import numpy as np

from . import policy

_blas_limits = None
_blas_lock = threading.Lock()


def configure_blas():
    """Hold NumPy's BLAS to policy.BLAS_THREADS threads per call, once per process.

    Called on the first CPU kernel use (run_chunks, run_compiled, the compiled kernels' loading,
    Linear's product), not at import: importing cnnlab changes nothing in the process it is imported into.
    """
    global _blas_limits
    if _blas_limits is not None:
        return
    with _blas_lock:
        if _blas_limits is None:
            from threadpoolctl import threadpool_limits  # noqa: PLC0415

            configure_malloc()
            _blas_limits = threadpool_limits(limits=policy.BLAS_THREADS, user_api="blas")


def configure_malloc() -> bool:
    """glibc's mmap and trim thresholds to policy.MALLOC_MMAP_BYTES and MALLOC_TRIM_BYTES, where
    policy.tune_malloc allows and the C library is glibc; whether they were set. Called once, with
    configure_blas."""
    if not policy.tune_malloc() or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, policy.MALLOC_MMAP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, policy.MALLOC_TRIM_BYTES))


def _load_getcpu():
    """libc's sched_getcpu (the CPU the calling thread runs on), or None where there is none."""
    try:
        fn = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (), ctypes.c_int
    return fn


_getcpu = _load_getcpu() if platform.system() == "Linux" else None


def current_cpu() -> int:
    """The CPU this thread is running on (-1 where that cannot be told)."""
    return _getcpu() if _getcpu is not None else -1


class _Job:
    """One run_chunks call shared with the helpers: the chunks, who takes which, the results, and
    how many helpers are still at work on it."""

    def __init__(self, fn, chunks):
        self.fn, self.chunks = fn, chunks
        self.results = [None] * len(chunks)
        self.taken = itertools.count()  # next() on a count is atomic under the GIL
        self.failed = []
        self.lock = threading.Lock()
        self.closed = False  # no helper joins once the caller has run out of chunks
        self.active = np.zeros(1, np.int64)  # helpers at work: the caller waits (spins) on it
        self.finished = threading.Event()
        self.cpu = current_cpu()  # the caller's
        self.shared = False  # a helper joined on the caller's CPU: the caller does not spin for it
        self.sleeping = False  # the caller sleeps until the helpers leave: they leave under the lock

    def work(self):
        for i in iter(self.taken.__next__, None):
            if i >= len(self.chunks) or self.failed:
                return
            try:
                self.results[i] = self.fn(*self.chunks[i])
            except BaseException as e:  # the others stop at their next chunk; re-raised by the caller
                self.failed.append(e)
                return

    def help(self, defer=False):
        """A helper's turn: join unless the caller has closed the job, work, leave. With ``defer``
        (a helper that spins for its next job) it may stay counted in ``active`` after its work:
        then it returns True, and leaves by kernels/jobs.py's serve, without the GIL,
        so that the caller waiting for it takes the GIL at once rather than sleeping until the
        helper's last Python lines are done (20-40 us to wake on this VM, per call)."""
        with self.lock:
            if self.closed:
                return False
            self.active[0] += 1
            if self.cpu >= 0 and current_cpu() == self.cpu:
                self.shared = True
        try:
            self.work()
        finally:
            with self.lock:
                stay = defer and not self.shared and not self.sleeping
                if not stay:
                    self.active[0] -= 1
                    if self.closed and self.active[0] == 0:
                        self.finished.set()
        return stay

    def close_and_wait(self, spin_turns):
        """After the caller's own work: no more helpers join; wait for those at work, spinning
        for up to ``spin_turns`` (about the time a chunk takes), then sleeping until they end."""
        from .spin import wait_while  # noqa: PLC0415

        with self.lock:
            self.closed = True
            if self.active[0] == 0:
                return
        if self.shared:  # spinning would take the CPU from the helper it waits for
            spin_turns = 0
        addr = self.active.ctypes.data
        left = int(self.active[0])
        while left and spin_turns and wait_while(addr, left, spin_turns) != left:  # one fewer at work: spin on for the rest
            left = int(self.active[0])
        if not left:
            return
        with self.lock:  # from here helpers leave under the lock, and the last one sets finished
            self.sleeping = True
            if self.active[0] == 0:
                return
        # one that had already chosen to leave without the lock is seen by looking again
        while self.active[0] and not self.finished.wait(SLEEP_POLL_SECONDS):
            pass


class _Pool:
    """WORKERS - 1 helper threads that wait for jobs: spinning (kernels/jobs.py's serve, no GIL)
    for policy.SPIN_SECONDS after each job, so that the calls of a training step, back to back,
    find them awake, then sleeping on a condition. A job is Python chunks (run_chunks) or compiled
    ones (run_compiled, which a spinning helper runs without leaving compiled code). Nothing is
    lost if a helper never comes: the caller takes every chunk left. Where policy.pin_plan allows,
    each helper is bound to a CPU of its own, and the caller to the rest while a job runs."""

    def __init__(self, helpers):
        from . import jobs  # noqa: PLC0415 - numba, compiled once
        from .spin import turns_for  # noqa: PLC0415

        self.jobs = jobs
        self.desc = np.zeros(jobs.SLOTS, np.int64)  # the posted job (kernels/jobs.py); the helpers watch its signal
        self.desc[jobs.STATE] = jobs.CLOSED
        self.addr = self.desc.ctypes.data
        self.cond = threading.Condition()
        self.job = None  # the posted Python job (None while a compiled one is posted)
        self.sleepers = 0  # helpers at or in their sleep on cond (read by _run_compiled without the lock)
        self.stopping = False
        self.busy = threading.Lock()  # one job at a time: a nested or concurrent call runs inline
        spins = policy.spin_allowed(helpers + 1)
        self.spin_turns = turns_for(policy.SPIN_SECONDS) if spins else 0
        self.wait_turns = self.spin_turns if spins else 1  # the caller: one turn, then sleep
        plan = policy.pin_plan(helpers)
        self.home, cpus = plan if plan is not None else (None, (None,) * helpers)
        self.threads = [threading.Thread(target=self._helper, args=(cpu,), name=f"cnnlab-{i}", daemon=True)
                        for i, cpu in enumerate(cpus)]
        for t in self.threads:
            t.start()

    def _helper(self, cpu=None):
        jobs, desc = self.jobs, self.desc
        if cpu is not None:  # policy.pin_plan: this helper's own CPU
            _set_mask({cpu})
        seen, apart = 0, True
        addr = self.addr
        counted = None  # the active counter of the last Python job, where this helper has yet to leave it
        while True:
            # leave the last job, and spin until a Python job is posted or the time is up (running
            # the compiled jobs posted meanwhile), then (below) sleep; not on the caller's CPU,
            # where spinning only takes its time
            turns = self.spin_turns if apart else 0
            if counted is not None or turns:
                seen = jobs.serve(addr, seen, turns, 0 if counted is None else counted.ctypes.data)
                counted = None
            with self.cond:
                # counted before the look at the signal: a caller that posts a compiled job and then
                # sees no sleeper posted it before this look, which sees it (counted after the look,
                # a helper preempted between the two slept through the job, and a caller that waited
                # in its first chunk for another thread to take the second waited in vain)
                self.sleepers += 1
                try:
                    while desc[jobs.SIGNAL] == seen and not self.stopping:
                        self.cond.wait()
                finally:
                    self.sleepers -= 1
                if self.stopping:
                    return
                seen, job = int(desc[jobs.SIGNAL]), self.job
            if job is None:  # a compiled job (this helper slept through its start), or a Python one over
                jobs.join(addr)
                continue
            if job.help(defer=self.spin_turns > 0):
                counted = job.active  # its array, kept until left
            apart = job.cpu < 0 or current_cpu() != job.cpu
            job = None  # not kept while waiting: its chunks' arrays (the layer's input, gradients) are freed

    def run(self, fn, chunks):
        return self._pinned(self._run, fn, chunks)

    def run_compiled(self, fn, args, count):
        self._pinned(self._run_compiled, fn, args, count)

    def _pinned(self, run, *job):
        # the caller on the CPUs no helper is bound to, for this job only (policy.PIN_THREADS); a
        # thread or process started inside a chunk would inherit that binding
        before = _mask_to_leave(self.home) if self.home is not None else None
        try:  # an interrupt as or after the binding is made still gives the mask back
            if before is not None:
                _set_mask(self.home)
            return run(*job)
        finally:
            if before is not None:
                _set_mask(before)

    def _run_compiled(self, fn, args, count):
        self.jobs.post(self.addr, fn, self.jobs.address(args), count)
        if self.sleepers:
            with self.cond:
                self.cond.notify_all()
        self.jobs.finish(self.addr, self.wait_turns)

    def _run(self, fn, chunks):
        job = _Job(fn, chunks)
        try:
            with self.cond:
                self.job = job
                self.jobs.post(self.addr, 0, 0, 0)
                self.cond.notify_all()
            job.work()
        finally:  # Ctrl-C included: no helper joins after this, and the job's arrays are let go
            try:
                job.close_and_wait(self.wait_turns)
            finally:
                self.job = None
        return job

    def stop(self):
        with self.cond:
            self.stopping = True
            self.jobs.post(self.addr, 0, 0, 0)
            self.cond.notify_all()


def _mask_to_leave(cpus):
    """The calling thread's CPU mask, where binding it to ``cpus`` is wanted; None where it is
    already so bound, bound by its owner to CPUs that exclude some of ``cpus``, or where the
    system will not say."""
    try:
        before = os.sched_getaffinity(0)
    except OSError:
        return None
    return None if before == cpus or not cpus <= before else before


def _set_mask(cpus):
    """Bind the calling thread to ``cpus``, where the system allows (a CPU taken away since: the
    thread stays as it was)."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:
        pass


# A caller asleep until its helpers leave looks at their count again this often: a helper that
# chose to leave without the GIL (help's ``defer``) just before the caller went to sleep sets no
# event. Such a race needs the caller's spin to end within the helper's last few microseconds.
SLEEP_POLL_SECONDS = 0.0005

_the_pool = None
_pool_lock = threading.Lock()


def _pool():
    """The pool of policy.WORKERS - 1 helpers (a new one if that number changed)."""
    global _the_pool
    pool = _the_pool
    if pool is None or len(pool.threads) != policy.WORKERS - 1:
        with _pool_lock:
            pool = _the_pool
            if pool is None or len(pool.threads) != policy.WORKERS - 1:
                if pool is not None:
                    pool.stop()
                pool = _the_pool = _Pool(policy.WORKERS - 1)
    return pool


def _forget_pool():
    """In a forked child the helpers do not exist: the next call makes new ones."""
    global _the_pool, _pool_lock
    _the_pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_chunks(fn, chunks, on_cpu=True):
    """``[fn(n0, n1) for (n0, n1) in chunks]``, spread over the CPU cores (policy.use_threads);
    results in chunk order. ``on_cpu`` False (CuPy work) runs them in order on this thread.

    The calling thread works too: it and the helpers each take the next chunk not yet taken, so a
    helper that is slow to wake leaves its chunks to the others rather than holding up the call.
    A call made while another is running (from inside a chunk, or from another thread) runs its
    chunks on its own thread."""
    if on_cpu:
        configure_blas()
    pool = _pool() if policy.use_threads(chunks, on_cpu) else None
    held = False
    try:
        held = pool is not None and pool.busy.acquire(blocking=False)
        if not held:
            return [fn(n0, n1) for n0, n1 in chunks]
        job = pool.run(fn, chunks)
    except SystemError as e:
        if _as_interrupt(e) is e:
            raise
        raise _as_interrupt(e) from None
    finally:
        if held:  # an interrupt right after the acquire still releases it
            pool.busy.release()
    if job.failed:
        if _as_interrupt(job.failed[0]) is job.failed[0]:
            raise job.failed[0]
        raise _as_interrupt(job.failed[0]) from None
    return job.results


def run_compiled(fn, args, count):
    """Chunks 0 .. ``count`` - 1 of a compiled job (kernels/jobs.py: ``fn`` the address of a
    ``@jobs.job`` function, ``args`` its int64 argument array, kept alive by the caller), spread
    over the CPU cores as run_chunks spreads Python ones, with no Python between a helper's chunks
    and no GIL taken by the helpers. Chunks must write disjoint results."""
    from . import jobs  # noqa: PLC0415 - compiled with the kernels that make the job

    configure_blas()  # and the allocator: a layer may run compiled jobs only, never run_chunks
    pool = _pool() if policy.use_threads(range(count)) else None
    if pool is None or not pool.busy.acquire(blocking=False):
        jobs.run_alone(fn, jobs.address(args), count)
        return
    try:
        pool.run_compiled(fn, args, count)
    finally:
        pool.busy.release()


def _as_interrupt(e):
    """``e``, or a KeyboardInterrupt where ``e`` is the SystemError a compiled kernel's return
    gives when Ctrl-C arrives while it runs on the main thread ("returned a result with an
    exception set", the interrupt chained to it): the caller sees the interrupt it handles."""
    if isinstance(e, SystemError):
        seen = e.__cause__ or e.__context__
        while seen is not None:
            if isinstance(seen, KeyboardInterrupt):
                return seen
            seen = seen.__cause__ or seen.__context__
    return e


def over_batch(fn, N, nbytes):
    """``fn(n0, n1)`` over slices of a batch of N (policy.batch_ranges: all cores when the work,
    ``nbytes``, is large enough); the results (arrays, or tuples of arrays) joined along the batch."""
    # an empty batch (N = 0) is one empty slice: fn gives its results their shapes
    parts = run_chunks(fn, policy.batch_ranges(N, nbytes) or [(0, 0)])
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(items) for items in zip(*parts))
    return np.concatenate(parts)
