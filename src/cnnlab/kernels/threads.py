"""The thread pool that spreads a batch's chunks over the cores, and BLAS held to one thread.

Every core works on its own images (im2col, a single-threaded GEMM, col2im), so nothing is shared
but the inputs. Results come back in chunk order, so sums over them are deterministic. When work
is split, and how finely, is kernels/policy.py's decision.
"""

from __future__ import annotations

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

            _blas_limits = threadpool_limits(limits=policy.BLAS_THREADS, user_api="blas")


def _pool():
    """The executor, with policy.WORKERS threads (a new one if that number was changed)."""
    global _executor, _executor_workers
    if _executor is None or _executor_workers != policy.WORKERS:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _executor = ThreadPoolExecutor(max_workers=policy.WORKERS, thread_name_prefix="cnnlab")
        _executor_workers = policy.WORKERS
    return _executor


def run_chunks(fn, chunks, on_cpu=True):
    """``[fn(n0, n1) for (n0, n1) in chunks]``, spread over the CPU cores (policy.use_threads);
    results in chunk order. ``on_cpu`` False (CuPy work) runs them in order on this thread."""
    if on_cpu:
        configure_blas()
    if not policy.use_threads(chunks, on_cpu):
        return [fn(n0, n1) for n0, n1 in chunks]
    return list(_pool().map(lambda c: fn(*c), chunks))


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
