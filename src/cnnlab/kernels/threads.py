"""The thread pool that spreads a batch's chunks over the cores, and BLAS held to one thread.

Every core works on its own images (im2col, a single-threaded GEMM, col2im), so nothing is shared
but the inputs. Results come back in chunk order, so sums over them are deterministic. When work
is split, and how finely, is kernels/policy.py's decision.
"""

from __future__ import annotations

import ctypes
import itertools
import platform
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import policy

_executor = None
_executor_workers = 0
_blas_limits = None
_blas_lock = threading.Lock()


def configure_blas():
    """Hold NumPy's BLAS to policy.BLAS_THREADS threads per call, once per process.

    Called on the first CPU kernel use (run_chunks, the compiled kernels' loading, Linear's
    product), not at import: importing cnnlab changes nothing in the process it is imported into.
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


def _pool():
    """The executor of the policy.WORKERS - 1 helper threads (a new one if that number changed);
    the calling thread is the last worker."""
    global _executor, _executor_workers
    if _executor is None or _executor_workers != policy.WORKERS:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _executor = ThreadPoolExecutor(max_workers=max(1, policy.WORKERS - 1), thread_name_prefix="cnnlab")
        _executor_workers = policy.WORKERS
    return _executor


def run_chunks(fn, chunks, on_cpu=True):
    """``[fn(n0, n1) for (n0, n1) in chunks]``, spread over the CPU cores (policy.use_threads);
    results in chunk order. ``on_cpu`` False (CuPy work) runs them in order on this thread.

    The calling thread works too: it and the helpers each take the next chunk not yet taken, so a
    helper that is slow to wake (an idle core of a virtual machine can take a millisecond) leaves
    its chunks to the others rather than holding up the call."""
    if on_cpu:
        configure_blas()
    if not policy.use_threads(chunks, on_cpu):
        try:
            return [fn(n0, n1) for n0, n1 in chunks]
        except SystemError as e:
            if _as_interrupt(e) is e:
                raise
            raise _as_interrupt(e) from None
    results = [None] * len(chunks)
    taken = itertools.count()  # next() on a count is atomic under the GIL
    failed = []

    def work():
        for i in iter(taken.__next__, None):
            if i >= len(chunks) or failed:
                return
            try:
                results[i] = fn(*chunks[i])
            except BaseException as e:  # the others stop at their next chunk; re-raised below
                failed.append(e)
                return

    helpers = [_pool().submit(work) for _ in range(min(policy.WORKERS, len(chunks)) - 1)]
    work()
    for h in helpers:  # one not started yet has nothing left to do (and its thread may be ours)
        if not h.cancel():
            h.result()
    if failed:
        if _as_interrupt(failed[0]) is failed[0]:
            raise failed[0]
        raise _as_interrupt(failed[0]) from None
    return results


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
