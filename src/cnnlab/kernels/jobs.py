"""Jobs whose chunks are compiled functions: the thread pool's helpers (kernels/threads.py) take
their chunks without ever holding the GIL.

A job of Python chunks costs 30-45 us on this machine beyond its work, whatever the work: the
helper that sees it posted must take the GIL (asleep on it while the caller still runs Python:
5-30 us to wake on this VM), run the pool's Python and the chunk's own before its compiled loop
starts, and the caller waits for the GIL again after its own share (benchmarks/README.md,
"Twelfth session of issue 22"). Layers of a few tenths of a millisecond (a depthwise layer on 7x7
maps) lost a quarter of their time to it. Here a chunk is a compiled function ``job(args, i)``
(a numba cfunc, ``@jobs.job``): ``args`` the address of an int64 array of the job's arguments (the
addresses of its arrays, its sizes), ``i`` the chunk. The pool's descriptor (an int64 array, slots
below) says which function, which arguments and how many chunks; a helper spinning in ``serve``
sees the signal change, joins the job unless the caller has closed it, and takes chunks by an
atomic counter until none are left, all in compiled code: 2-6 us per job beyond the work.

Every chunk runs once, on whichever thread takes it; chunks write disjoint parts of their results
(a sum over chunks is written per chunk and added up in chunk order by the caller), so results do
not depend on who ran what.
"""

from __future__ import annotations

import platform
import threading

import numpy as np
from llvmlite import ir
from numba import cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# the descriptor's slots: the job's sequence number (bumped once per job, Python jobs included),
# its function (0: a Python job, kernels/threads.py's _Job), arguments' address, chunk count, the
# next chunk to take, and its state: helpers at work on it, plus CLOSED once no one may join
SIGNAL, FUNCTION, ARGS, COUNT, NEXT, STATE = range(6)
SLOTS = 8
CLOSED = 1 << 40

SIGNATURE = types.void(types.int64, types.int64)
_I64 = ir.IntType(64)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


class _Job:
    """A job function, compiled (or loaded from numba's cache) on first use of its ``address``:
    compiled at import, every job of a module took its kernels with it, used or not (a first
    convolution from a cold cache 25.7 s against 5.8 before the jobs)."""

    def __init__(self, fn):
        self.fn, self.compiled = fn, None
        self.__doc__ = fn.__doc__

    @property
    def address(self):
        if self.compiled is None:
            with _compiling:
                if self.compiled is None:
                    self.compiled = cfunc(SIGNATURE, cache=True, boundscheck=False)(self.fn)
        return self.compiled.address


_compiling = threading.Lock()


def job(fn):
    """Decorator: ``fn(args, i)`` (args: the int64 address of the job's argument array; i: the
    chunk) compiled as a C function the pool calls by its address (``.address``, compiled on
    first use)."""
    return _Job(fn)


def _pointer(builder, addr, ty=_I64):
    return builder.inttoptr(addr, ty.as_pointer())


@intrinsic
def slot(typingctx, addr, i):
    """The int64 at ``addr`` + 8 ``i`` (an argument of a job)."""
    def codegen(context, builder, sig, args):
        return builder.load(builder.gep(_pointer(builder, args[0]), [args[1]]))
    return types.int64(types.int64, types.int64), codegen


def _pointer_to(numba_type, llvm_type):
    @intrinsic
    def cast(typingctx, addr):
        def codegen(context, builder, sig, args):
            return _pointer(builder, args[0], llvm_type)
        return types.CPointer(numba_type)(types.int64), codegen
    return cast


# typed pointers from addresses, for numba.carray(pointer, shape): a job's arrays
f32 = _pointer_to(types.float32, ir.FloatType())
f64 = _pointer_to(types.float64, ir.DoubleType())
i16 = _pointer_to(types.int16, ir.IntType(16))
i32 = _pointer_to(types.int32, ir.IntType(32))
i64 = _pointer_to(types.int64, _I64)


@intrinsic
def _load(typingctx, addr):
    """The int64 at ``addr``, loaded atomically (acquire)."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_pointer(builder, args[0]), "acquire", 8)
    return types.int64(types.int64), codegen


@intrinsic
def _store(typingctx, addr, value):
    """Store ``value`` at ``addr`` atomically (release)."""
    def codegen(context, builder, sig, args):
        builder.store_atomic(args[1], _pointer(builder, args[0]), "release", 8)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64), codegen


@intrinsic
def _add(typingctx, addr, value):
    """Atomically add ``value`` to the int64 at ``addr``; the value before."""
    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _pointer(builder, args[0]), args[1], "seq_cst")
    return types.int64(types.int64, types.int64), codegen


@intrinsic
def _swap_if(typingctx, addr, old, new):
    """Atomically replace the int64 at ``addr`` by ``new`` where it is ``old``; whether it was."""
    def codegen(context, builder, sig, args):
        pair = builder.cmpxchg(_pointer(builder, args[0]), args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return types.boolean(types.int64, types.int64, types.int64), codegen


@intrinsic
def _call(typingctx, fn, args, i):
    """Call the C function at address ``fn`` with (args, i)."""
    def codegen(context, builder, sig, a):
        target = _pointer(builder, a[0], ir.FunctionType(ir.VoidType(), [_I64, _I64]))
        builder.call(target, [a[1], a[2]])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64), codegen


@intrinsic
def _pause(typingctx):
    """The spin-wait hint (x86's pause); nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _yield(typingctx):
    """sched_yield: let another thread on this CPU run (the helper a waiting caller shares it with)."""
    def codegen(context, builder, sig, args):
        builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                    "sched_yield"), [])
        return context.get_dummy_value()
    return types.void(), codegen


_OPTS = dict(nogil=True, cache=True)


@njit(**_OPTS)
def address(a):
    """The address of array ``a``'s data (6x faster than ``a.ctypes.data``, 0.14 us against 0.87)."""
    return a.ctypes.data


@njit(**_OPTS)
def _work(d):
    """Take the posted job's chunks, one at a time, until none is left."""
    fn, args, count = _load(d + 8 * FUNCTION), _load(d + 8 * ARGS), _load(d + 8 * COUNT)
    while True:
        i = _add(d + 8 * NEXT, 1)
        if i >= count:
            return
        _call(fn, args, i)


@njit(**_OPTS)
def join(d):
    """A helper's share of the compiled job posted at descriptor ``d``, unless it is closed."""
    while True:
        s = _load(d + 8 * STATE)
        if s & CLOSED:
            return
        if _swap_if(d + 8 * STATE, s, s + 1):
            break
    _work(d)
    _add(d + 8 * STATE, -1)


@njit(**_OPTS)
def serve(d, seen, turns, counter):
    """A helper between jobs, without the GIL: first leave a Python job (subtract 1 from the int64
    at ``counter``, where it is not 0), then spin on the signal; run every compiled job posted
    meanwhile (spinning afresh after each); return the last signal seen before a Python job is
    posted, or once ``turns`` turns pass with no job."""
    if counter:
        _add(counter, -1)
    t = 0
    while True:
        v = _load(d + 8 * SIGNAL)
        if v == seen:
            t += 1
            if t >= turns:
                return seen
            _pause()
            continue
        if _load(d + 8 * FUNCTION) == 0:
            return seen  # not v: the caller's Python sees the signal past it and takes the job
        seen = v
        join(d)
        t = 0


@njit(**_OPTS)
def post(d, fn, args, count):
    """Post a job at descriptor ``d``: compiled (``fn`` a job's address, ``count`` chunks of
    ``args``) or, with ``fn`` 0, a Python one (kernels/threads.py's _Job); the signal last."""
    _store(d + 8 * FUNCTION, fn)
    if fn:
        _store(d + 8 * ARGS, args)
        _store(d + 8 * COUNT, count)
        _store(d + 8 * NEXT, 0)
        _store(d + 8 * STATE, 0)  # open: helpers may join from here
    _add(d + 8 * SIGNAL, 1)


@njit(**_OPTS)
def finish(d, turns):
    """The caller's share of the compiled job it posted, then close it and wait for the helpers
    at work on it: spinning ``turns`` turns, then yielding the CPU between looks (a helper that
    shares the caller's CPU gets it)."""
    _work(d)
    _add(d + 8 * STATE, CLOSED)
    t = 0
    while _load(d + 8 * STATE) != CLOSED:
        t += 1
        if t < turns:
            _pause()
        else:
            _yield()


@njit(**_OPTS)
def run_alone(fn, args, count):
    """Every chunk of a compiled job on the calling thread, in order."""
    for i in range(count):
        _call(fn, args, i)


@job
def pair(a, i):
    """Two jobs as one (slots: first's function, arguments and chunk count, second's function and
    arguments): its chunks the first's, then the second's."""
    first = slot(a, 2)
    if i < first:
        _call(slot(a, 0), slot(a, 1), i)
    else:
        _call(slot(a, 3), slot(a, 4), i - first)


_ndarray = np.ndarray


def _slots(args):
    """A job's int64 arguments from ints (Python's, NumPy's, bools) and arrays (their addresses):
    2.2 us for 40, 4.1 with int() on each."""
    return np.array([address(v) if type(v) is _ndarray else v for v in args], np.int64)


class Job:
    """A pass over a batch as a compiled job: ``fn`` the address of a ``@job`` function, ``args``
    its int64 arguments (arrays given as themselves are taken by their address), ``count`` its
    chunks; ``keep`` holds every array whose address is in ``args`` until the job is done; ``sums``
    a gradient's per-chunk parts (chunks, ...), for the caller to add in chunk order. Run it with
    kernels/threads.py's run_compiled(job.fn, job.args, job.count), or ``run_here``."""

    def __init__(self, fn, args, count, keep, sums=None):
        self.fn, self.count, self.keep, self.sums = fn, count, keep, sums
        self.args = args if type(args) is _ndarray else _slots(args)  # an array: made by the caller (int64)

    def run_here(self):
        """Every chunk on the calling thread."""
        run_alone(self.fn, address(self.args), self.count)
        return self


class Templates:
    """Jobs' arguments kept per key (a pass, a layer shape and a chunking), so that a call copies
    them and puts in its own arrays' addresses instead of building them: 7-12 us a job from the
    Python values, as long as a small layer's chunk; 2-3 us from a template."""

    def __init__(self, size=8):
        self.cache, self.size = {}, size

    def job(self, key, values, slots, arrays, make, sums=None):
        """A Job for ``key``, made by ``make()`` the first time: (its function, its arguments as
        Job takes them, its chunk count, the arrays those arguments point to that outlive the
        call); ``values`` (the call's array addresses, or 0) put at ``slots``, ``arrays`` (the
        call's) kept with the template's until the job is done."""
        got = self.cache.get(key)
        if got is None:
            fn, args, count, keep = make()
            if len(self.cache) >= self.size:
                self.cache.clear()
            got = self.cache[key] = (fn, _slots(args), count, keep)
        fn, template, count, keep = got
        args = template.copy()
        for at, v in zip(slots, values):
            args[at] = v
        return Job(fn, args, count, (keep, arrays), sums)


def table(chunks):
    """A job's chunk table: (count, 2) int64 ranges; one empty range where there are none."""
    return np.array(chunks or [(0, 0)], np.int64).reshape(-1, 2)


def chunk_sizes(ranges):
    """Two sizes of a chunk table's ranges, for a job that reads a table per size (the second a
    repeat of the first where all ranges have one size); a table's ranges come in at most two
    sizes (policy.even_ranges)."""
    sizes = sorted({int(b - a) for a, b in ranges})[:2]
    return (sizes + sizes[:1])[:2]


def paired(first, second):
    """Two Jobs as one (``pair``): the first's chunks, then the second's (an input gradient beside
    a weight gradient); the second's ``sums`` go with it."""
    args = np.array((first.fn, address(first.args), first.count, second.fn, address(second.args)), np.int64)
    return Job(pair.address, args, first.count + second.count, (first, second), second.sums)
