"""Waiting on a shared counter without the GIL and without sleeping: the thread pool's caller
spins here for its helpers (kernels/threads.py), and the helpers spin for a short while after
each call (kernels/jobs.py's serve), so the next call finds them awake. A sleeping helper is
woken through the kernel, and on a virtual machine an idle core can take 0.1-1 ms to come back;
the convolutions' chunks last 0.05-0.3 ms (benchmarks/README.md, "Helpers that spin before they
sleep")."""

from __future__ import annotations

import platform
import time

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _codegen(context, builder, signature, args):
    addr, old, limit = args
    i64 = ir.IntType(64)
    ptr = builder.inttoptr(addr, i64.as_pointer())
    entry = builder.block
    loop = builder.function.append_basic_block("spin_loop")
    done = builder.function.append_basic_block("spin_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    i = builder.phi(i64)
    value = builder.load_atomic(ptr, "acquire", 8)
    if _X86:  # the spin-wait hint: fewer cycles and less power per turn, the other core's load sooner
        pause = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                               "llvm.x86.sse2.pause")
        builder.call(pause, [])
    i1 = builder.add(i, ir.Constant(i64, 1))
    i.add_incoming(ir.Constant(i64, 0), entry)
    i.add_incoming(i1, loop)
    more = builder.and_(builder.icmp_signed("==", value, old), builder.icmp_signed("<", i1, limit))
    builder.cbranch(more, loop, done)
    builder.position_at_end(done)
    return value


@intrinsic
def _spin(typingctx, addr, old, limit):
    """Load the int64 at ``addr`` (atomically, acquire) until it differs from ``old`` or ``limit``
    turns have passed; the last value loaded."""
    return types.int64(types.int64, types.int64, types.int64), _codegen


@njit(nogil=True, cache=True)
def wait_while(addr, old, turns):
    """The int64 at address ``addr`` once it differs from ``old``, or after ``turns`` turns (then
    possibly still ``old``); runs without the GIL."""
    return _spin(addr, old, max(turns, 1))


_turn_seconds = None


def turns_for(seconds):
    """About how many turns of wait_while last ``seconds`` on this CPU (measured once)."""
    global _turn_seconds
    if _turn_seconds is None:
        import numpy as np  # noqa: PLC0415

        cell = np.zeros(1, np.int64)
        wait_while(cell.ctypes.data, 0, 1)  # compiled (or loaded from the cache) before timing
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            wait_while(cell.ctypes.data, 0, 20000)
            best = min(best, time.perf_counter() - t)
        _turn_seconds = max(best / 20000, 1e-10)
    return int(seconds / _turn_seconds)
