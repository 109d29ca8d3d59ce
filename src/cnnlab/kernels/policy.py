"""When each fast path applies: every threshold and rule of kernels/, on one page.

The operators (functional/) and the kernels' own functions (kernels/__init__.py) ask the
questions below and nothing else decides between paths. Each constant says in one sentence why
it has its value; the measurements behind it are in benchmarks/README.md, section "The
thresholds of kernels/policy.py". Every rule reads the constants at call time, so a test or a
benchmark that wants another value patches it here: ``monkeypatch.setattr(policy, NAME, value)``.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np

# ------------------------------------------------------------------ switches (tests and benchmarks)
_compiled_enabled = True
_winograd_enabled = True
_winograd_weight_grad_enabled = True
# CNNLAB_IGEMM=0 turns the indirect-GEMM convolutions off for the process (kernels/igemm.py)
_igemm_enabled = os.environ.get("CNNLAB_IGEMM", "1") != "0"


@contextlib.contextmanager
def compiled(enabled: bool):
    """Temporarily switch the numba kernels (and the thread pool) on or off: off, every operator
    takes its portable NumPy/CuPy path (tests compare both paths)."""
    global _compiled_enabled
    prev = _compiled_enabled
    _compiled_enabled = enabled
    try:
        yield
    finally:
        _compiled_enabled = prev


@contextlib.contextmanager
def allow_winograd(enabled: bool, weight_grad: bool | None = None):
    """Temporarily allow or forbid the Winograd path for 3x3 convolutions (tests and benchmarks
    compare both); ``weight_grad`` (default: ``enabled``) alone switches the weight gradient's."""
    global _winograd_enabled, _winograd_weight_grad_enabled
    prev = _winograd_enabled, _winograd_weight_grad_enabled
    _winograd_enabled = enabled
    _winograd_weight_grad_enabled = enabled if weight_grad is None else weight_grad
    try:
        yield
    finally:
        _winograd_enabled, _winograd_weight_grad_enabled = prev


@contextlib.contextmanager
def allow_igemm(enabled: bool):
    """Temporarily allow or forbid the indirect-GEMM convolutions (kernels/igemm.py; tests and
    benchmarks compare them with the BLAS paths)."""
    global _igemm_enabled
    prev = _igemm_enabled
    _igemm_enabled = enabled
    try:
        yield
    finally:
        _igemm_enabled = prev


# ------------------------------------------------------------------ when the compiled kernels apply
def use_compiled(a) -> bool:
    """The compiled (numba) kernels apply to ``a``: a float32 or float64 NumPy array, kernels on.
    CuPy arrays and other dtypes take the portable path (kernels/generic.py)."""
    return _compiled_enabled and isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)


def use_compiled_2d(a, d) -> bool:
    """The compiled 2-D loops (col2im, pooling) apply: ``use_compiled(a)`` and d == 2 spatial axes."""
    return d == 2 and use_compiled(a)


def use_fused_conv(x) -> bool:
    """F.conv2d_maxpool_act / F.conv2d_act_avgpool run as one pass per chunk: a batch of 2-D
    images (N, C, H, W) that the compiled kernels apply to; elsewhere they run layer by layer."""
    return x.ndim == 4 and use_compiled_2d(x, 2)


def use_compiled_sgd(data, g) -> bool:
    """optim.SGD's one-pass compiled update applies: C-contiguous float NumPy parameter and
    gradient, not empty. It runs on the calling thread: split over the cores it was slower
    (benchmarks/README.md, "SGD update")."""
    return use_compiled(data) and data.flags.c_contiguous and isinstance(g, np.ndarray) and data.size > 0


def use_compiled_lrn(x) -> bool:
    """Local response normalisation splits the batch over the cores and has a compiled backward
    pass: NumPy floats, not empty (an empty batch takes the array expressions)."""
    return use_compiled(x) and x.size > 0


# ------------------------------------------------------------------ threads
# One worker per core this process may use, capped at 8 (the cap is not measured: the reference
# machine has two cores).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
WORKERS = max(1, min(CORES, 8))

# After each call the pool's helpers wait this long spinning (no GIL, no sleep) before they sleep:
# the calls of a training step come back to back, and a sleeping helper on a virtual machine's
# idle core took 0.1-1 ms to wake, longer than most chunks (benchmarks/README.md, "Helpers that
# spin before they sleep"). CNNLAB_SPIN_SECONDS sets another time; 0 never spins.
SPIN_SECONDS = float(os.environ.get("CNNLAB_SPIN_SECONDS", "0.002"))


def spin_allowed(threads) -> bool:
    """Whether ``threads`` threads of this process may spin: each has a core of its own (a spinning
    thread on a shared core would take time from the one it waits for)."""
    return SPIN_SECONDS > 0 and threads <= CORES


# Where the process may use exactly as many CPUs as it has workers, each helper is bound to a CPU
# of its own and the calling thread, for the length of each job, to the others. This virtual
# machine's scheduler (booted with sched_vcpu_pack) otherwise put a woken helper on the caller's
# CPU, or moved the caller onto the helper's, and the two took turns while the other CPU idled:
# after 30 ms pauses a depthwise layer ran 1.20-1.38 ms a call unbound, 0.75-0.82 bound
# (benchmarks/README.md, "Eighth session of issue 22"). The caller's own mask is put back before
# each job returns, so threads it starts between calls are not bound (one started inside a chunk
# would be). It is on by default wherever the process may use as many CPUs as workers (any machine
# of up to 8 CPUs without taskset): two such processes on one machine then share the same CPUs,
# as unbound they would share them too. CNNLAB_PIN_THREADS=0 leaves every thread where the
# scheduler puts it.
PIN_THREADS = os.environ.get("CNNLAB_PIN_THREADS", "1") != "0"


def pin_plan(helpers):
    """(the caller's CPUs during a job, one CPU per helper) for a pool of ``helpers`` helper
    threads, or None where threads stay unbound: pinning off, no affinity calls, or a process that
    may use more or fewer CPUs than its workers (kernels.set_workers by hand, or distributed
    training's share of a machine's cores)."""
    if not PIN_THREADS or helpers < 1 or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) != helpers + 1:
        return None
    return frozenset(cpus[:1]), tuple(cpus[1:])


# Work smaller than this (bytes touched) runs on one core: a thread hand-off costs more than it
# saves (benchmarks/README.md, "SPLIT_MIN_BYTES").
SPLIT_MIN_BYTES = 2 << 20

# Threads per BLAS call: cnnlab spreads each batch over the cores itself, and a multi-threaded
# OpenBLAS busy-waits after every call, starving the other cores' chunks (benchmarks/README.md,
# "BLAS_THREADS"). Set CNNLAB_BLAS_THREADS to keep another count. Applied on the first CPU kernel
# use (kernels/threads.py: configure_blas), not at import.
BLAS_THREADS = int(os.environ.get("CNNLAB_BLAS_THREADS", "1"))

# glibc's allocator, on the first CPU kernel use (kernels/threads.py: configure_malloc): arrays up
# to MALLOC_MMAP_BYTES come from its heaps rather than fresh mappings, and free memory at a heap's
# top is handed back only beyond MALLOC_TRIM_BYTES. These are the values glibc's own dynamic rule
# reaches after a 32 MiB array is freed; set from the start, the calling thread's chunks (main
# heap) no longer fault in every page of their buffers again each step: 2,000 page faults per
# Nielsen b256 step without, 0 with (benchmarks/README.md, "The thread pool"). CNNLAB_MALLOPT=0,
# or any MALLOC_*_ variable of glibc's set by the user, leaves the allocator as it is.
MALLOC_MMAP_BYTES = 32 << 20
MALLOC_TRIM_BYTES = 64 << 20


def tune_malloc() -> bool:
    """Whether configure_malloc sets glibc's thresholds (see MALLOC_MMAP_BYTES)."""
    if os.environ.get("CNNLAB_MALLOPT", "1") == "0":
        return False
    return not any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                                             "MALLOC_MMAP_MAX_"))


def use_threads(chunks, on_cpu=True) -> bool:
    """``chunks`` are spread over the thread pool: NumPy work of two chunks or more, two workers
    or more, and the compiled kernels on (off, everything runs serially on the calling thread)."""
    return on_cpu and len(chunks) >= 2 and WORKERS >= 2 and _compiled_enabled


# ------------------------------------------------------------------ how a batch is split
# Bytes of one chunk's receptive fields: small enough to stay in the CPU's shared L3 cache while
# its GEMMs, pooling and activation use it, large enough that per-chunk overheads stay small
# (benchmarks/README.md, "CPU_CHUNK_BYTES").
CPU_CHUNK_BYTES = 4 << 20


def even_ranges(N, count):
    """``count`` consecutive (start, stop) ranges over N items, sizes within one of each other,
    the larger first. The pool hands chunks out in order, so a core that takes a larger chunk
    early can still even out with the smaller ones at the end; with the larger ones spread out
    (or last) the last to finish ran up to a whole image longer: the 3x3 stride-2 layer's
    backward, 32 images in 6 chunks, ended 0.14-0.19 ms apart on the two cores
    (benchmarks/README.md, "Eighth session of issue 22")."""
    q, r = divmod(N, count)
    ends = [(i + 1) * q + min(i + 1, r) for i in range(count)]
    return list(zip([0] + ends[:-1], ends))


def conv_chunks(x, CK, L, target=None):
    """(start, stop) ranges over the batch of ``x``: cache-sized chunks on the CPU (at least one
    per core when the batch allows; ``target`` bytes of CK*L values per chunk, CPU_CHUNK_BYTES by
    default), a single chunk on a GPU."""
    N = x.shape[0]
    if not isinstance(x, np.ndarray) or N <= 1:
        return [(0, N)]
    per_image = max(CK * L * x.dtype.itemsize, 1)
    # small layers are not split across cores: a thread hand-off costs more than it saves
    cores = WORKERS if N * per_image >= SPLIT_MIN_BYTES else 1
    count = -(-N // max(1, (target or CPU_CHUNK_BYTES) // per_image))  # chunks of at most the target
    count = min(N, -(-count // cores) * cores)  # a multiple of the cores, so none idles at the end
    return even_ranges(N, count)  # equal sizes, to within one image


# An indirect-GEMM convolution (no receptive fields copied) is split over the cores when its
# batch's product has at least this many floating-point operations; its im2col bytes, which
# SPLIT_MIN_BYTES counts, say little about its work (a first layer of one channel and 20 filters
# at batch 64: 1.07 ms on one core, 0.72 split; benchmarks/README.md, "SPLIT_MIN_FLOPS").
SPLIT_MIN_FLOPS = 16_000_000


# Bytes of padded input and output per indirect-GEMM chunk: its buffers (the padded input, the
# row-major product, the packed gradient) scale with it. Nielsen's net at batch 256 (MiB peak,
# img/s): 4 MiB 58.0, 14.3k; 1 MiB 27.5, 16.8k; 512 KiB 19.9, 15.9k (benchmarks/README.md,
# "INDIRECT_CHUNK_BYTES").
INDIRECT_CHUNK_BYTES = 1 << 20


def indirect_chunks(x, image_values, image_flops):
    """(start, stop) ranges over the batch of ``x`` for the indirect GEMM: chunks of at most
    INDIRECT_CHUNK_BYTES of padded input and output (``image_values`` per image), a multiple of
    the cores once the batch's work (``image_flops`` per image) reaches SPLIT_MIN_FLOPS."""
    N = x.shape[0]
    if N <= 1:
        return [(0, N)]
    cores = WORKERS if N * image_flops >= SPLIT_MIN_FLOPS else 1
    count = -(-N // max(1, INDIRECT_CHUNK_BYTES // max(1, image_values * x.dtype.itemsize)))
    count = min(N, -(-count // cores) * cores)
    return even_ranges(N, count)


def split_backward(chunks, pass_flops) -> bool:
    """Whether a convolution whose batch is one chunk (``chunks``) computes its input gradient and
    its weight gradient as two jobs on two cores, side by side: where there are two workers and
    the two products (``pass_flops`` each) together reach SPLIT_MIN_FLOPS. bench_cpu's conv1d
    layer (8 signals, 10 MFLOP a product): forward + backward 0.236 -> 0.221 ms
    (benchmarks/README.md, "Ninth session of issue 22")."""
    return len(chunks) == 1 and WORKERS >= 2 and _compiled_enabled and 2 * pass_flops >= SPLIT_MIN_FLOPS


# An indirect-GEMM layer whose batch chunks each reduce over fewer output positions than this
# computes its weight gradient over the whole batch instead, the fields' rows split over the
# cores, beside the chunks' input gradients (weight_rows)
WEIGHT_ROWS_MAX_POSITIONS = 512


def weight_rows(chunks, L) -> bool:
    """Whether an indirect-GEMM layer's weight gradient runs as WORKERS jobs over the whole batch,
    each for a share of the receptive fields' elements (the product's rows), rather than one part
    per batch chunk, summed after: where there are two workers or more and the chunks, of
    ``L`` output positions per image, reduce over fewer than WEIGHT_ROWS_MAX_POSITIONS. Short
    reductions paid each block's set-up and stores per chunk, and the parts, as large as the
    weights, were zeroed, transposed and summed: a 128->256 3x3 stride-2 layer on 8x8 maps at
    batch 32 (4 chunks of 128 positions) (benchmarks/README.md, "Tenth session of issue 22")."""
    return (WORKERS >= 2 and _compiled_enabled and len(chunks) >= 2
            and max(n1 - n0 for n0, n1 in chunks) * L < WEIGHT_ROWS_MAX_POSITIONS)


# Depthwise layers are split into two chunks per core from this many bytes of input and output,
# one per core below: each chunk boundary is a hand-off of the GIL between the two threads
# (20-30 us on this machine when the other holds it), as long as a small layer's whole chunk
DEPTHWISE_PARTS_BYTES = 16 << 20


def depthwise_chunks(x, L):
    """(start, stop) ranges over the batch of ``x`` (N, C, H, W) for kernels/depthwise.py, whose
    output maps have L positions: it works plane by plane in a scratch plane of its own and writes
    straight into the result, so no chunk need fit a cache: one per core once the input and output
    reach SPLIT_MIN_BYTES, two per core from DEPTHWISE_PARTS_BYTES (so that a core slowed by
    another process leaves its second chunk to the other). fwd+bwd on two cores, ms, two chunks per
    core / one (PyTorch), alternating in one process: 256 channels on 7x7 b32 0.558 / 0.483 (0.534);
    64 on 14x14 b32 0.633 / 0.451 (0.529); 32 on 28x28 b32 0.930 / 0.841 (1.200); 64 stride 2 on
    28x28 b32 0.835 / 0.767 (1.131); 144 on 28x28 b32 (29 MB) 4.64 / 4.69 (benchmarks/README.md,
    "Eleventh session of issue 22")."""
    N = x.shape[0]
    nbytes = N * x.shape[1] * (math.prod(x.shape[2:]) + L) * x.dtype.itemsize
    if nbytes < SPLIT_MIN_BYTES:
        return even_ranges(N, 1)
    return even_ranges(N, min(N, WORKERS * (2 if nbytes >= DEPTHWISE_PARTS_BYTES else 1)))


BATCH_PARTS_PER_WORKER = 2


def batch_ranges(N, nbytes):
    """(n0, n1) slices of a batch of N: BATCH_PARTS_PER_WORKER per core when the work (``nbytes``)
    is large enough, the larger first (even_ranges), so that a core slowed by another process
    leaves its last slices to the other."""
    if nbytes < SPLIT_MIN_BYTES or N <= 1:
        return [(0, N)] if N else []
    return even_ranges(N, min(N, BATCH_PARTS_PER_WORKER * WORKERS))


def flat_chunks(size, itemsize=4):
    """(lo, hi) ranges of a flat array of ``size`` elements: one per core, none under SPLIT_MIN_BYTES."""
    step = max(SPLIT_MIN_BYTES // itemsize, -(-size // WORKERS))
    return [(lo, min(size, lo + step)) for lo in range(0, size, step)]


def channel_chunks(x):
    """(c0, c1) channel ranges of an (N, C, ...) array: one per core when the work is large enough."""
    C = x.shape[1]
    parts = min(C, WORKERS if x.nbytes >= SPLIT_MIN_BYTES else 1)
    return even_ranges(C, parts)


# ------------------------------------------------------------------ convolution layouts
# Channels-last im2col copies each kernel row as one run of KW*C values; below this many values
# per run the column layout's runs along an output row are longer, and it wins (e.g. C = 1;
# benchmarks/README.md, "NHWC_MIN_RUN").
NHWC_MIN_RUN = 16


def use_nhwc(x, w_shape, groups) -> bool:
    """The channels-last 2-D convolution path applies: NumPy floats, long kernel rows (KW * C/groups
    values). A grouped layer then makes one product per group with n*L rows, instead of one small
    product per image and group (benchmarks/README.md, "Grouped, 1-D and 3-D convolutions")."""
    return len(w_shape) == 4 and use_compiled_2d(x, 2) and w_shape[1] * w_shape[3] >= NHWC_MIN_RUN


_avx512 = None


def has_avx512() -> bool:
    """The CPU has AVX-512F, so the 16-lane vectors of kernels/igemm.py are single registers
    (numba compiles for the host CPU). Read once from LLVM's host description."""
    global _avx512
    if _avx512 is None:
        try:
            import llvmlite.binding as llvm  # noqa: PLC0415

            _avx512 = bool(llvm.get_host_cpu_features().get("avx512f", False))
        except Exception:  # noqa: BLE001 - no feature list: take the BLAS paths
            _avx512 = False
    return _avx512


# Outside the direct forward pass (stride-1 layers whose output rows fill most of the padded
# width), fewer filters per group than this or a shorter reduction (input channels per group x
# kernel elements) and the micro-kernel's 16-wide vectors and short loops waste more than the
# BLAS paths lose to im2col: first layers on one channel (5x5: 25 products) were 1.3-1.5x slower.
# Direct layers take it with any number of filters: with the direct weight gradient, 3 to 6
# filters ran 1.4-2.2x faster than on BLAS (benchmarks/README.md, "Indirect GEMM" and "Direct or
# transposed").
IGEMM_MIN_FILTERS = 8
IGEMM_MIN_REDUCTION = 32


def use_igemm(x, w_shape, stride, padding, dilation, groups) -> bool:
    """The indirect-GEMM convolution applies (kernels/igemm.py): a 2-D convolution of float32
    NumPy arrays that is not depthwise, on a CPU with AVX-512, compiled kernels on; and either a
    stride-1 layer whose forward pass runs direct (igemm.direct_forward: any number of filters and
    products per output) or one with at least IGEMM_MIN_FILTERS filters per group and
    IGEMM_MIN_REDUCTION products per output. Its 16-lane micro-kernel ran at about 2x OpenBLAS's
    single-core rate where OpenBLAS is held to AVX2, and it beat Winograd on every 3x3 layer
    measured (benchmarks/README.md, "Indirect GEMM"); float64 keeps the BLAS paths. A 3-D
    convolution with as many filters and products takes it too, its padded volumes read in place,
    but for a stride-1 layer of at most DIRECT_MAX_FILTERS filters per group whose input gradient
    would not be the flipped convolution under FLIP_MAX_GROWTH (igemm.flip_padding's rule for
    wide groups, not the narrow one's): as stacked depth slices
    (functional/conv.py) that one gets the 2-D direct forms, positions along the vectors
    (benchmarks/README.md, "Tenth session of issue 22")."""
    d = len(w_shape) - 2
    if not (_igemm_enabled and d in (2, 3) and x.ndim == d + 2 and use_compiled(x) and x.dtype == np.float32
            and not use_depthwise(x, w_shape, groups) and has_avx512()):
        return False
    from .igemm import DIRECT_MAX_FILTERS, direct_forward, flip_padding  # noqa: PLC0415

    padded = [s + 2 * p for s, p in zip(x.shape[2:], padding)]
    out = [(s - dl * (k - 1) - 1) // st + 1 for s, k, dl, st in zip(padded, w_shape[2:], dilation, stride)]
    if (d == 3 and all(st == 1 for st in stride) and w_shape[0] // groups <= DIRECT_MAX_FILTERS
            and flip_padding(tuple(x.shape[2:]), tuple(out), tuple(stride), tuple(padding), tuple(w_shape[2:]),
                             tuple(dilation)) is None):  # the wide rule: 4->8 on 16^3 (1.49x) stays stacked
        return False  # stacked: the 2-D layer's direct forms fill the vectors with positions
    if d == 2 and min(out) >= 1 and direct_forward(padded, out, stride):
        return True
    return w_shape[0] // groups >= IGEMM_MIN_FILTERS and math.prod(w_shape[1:]) >= IGEMM_MIN_REDUCTION


def use_depthwise(x, w_shape, groups) -> bool:
    """The compiled depthwise 2-D loops apply: NumPy floats, one input channel per group and one
    output channel per input channel (groups == C == F > 1). A product per image and channel of a
    1 x KH*KW row was 6x slower than PyTorch (benchmarks/README.md, "Grouped, 1-D and 3-D
    convolutions")."""
    return (len(w_shape) == 4 and use_compiled_2d(x, 2) and w_shape[1] == 1 and groups > 1
            and w_shape[0] == groups == x.shape[1])


def use_depthwise_vectors(a) -> bool:
    """A depthwise layer (use_depthwise) or a pooling window run as one takes kernels/depthwise.py's
    16-lane plane-by-plane kernels: float32 on a CPU with AVX-512; float64 and other CPUs keep the
    whole-plane loops of kernels/cpu.py (benchmarks/README.md, "Depthwise in registers")."""
    return a.dtype == np.float32 and has_avx512()


# Bytes of one Winograd chunk's transformed input (16 values per 2x2 output tile and channel), so
# that the chunk's transforms and its 16 matrix products stay in cache (benchmarks/README.md,
# "WINOGRAD_CHUNK_BYTES").
WINOGRAD_CHUNK_BYTES = 768 << 10
# Fewer channels than this in or out and the 16 products are too thin for BLAS to gain
# (benchmarks/README.md, "WINOGRAD_MIN_CHANNELS").
WINOGRAD_MIN_CHANNELS = 8
# Smaller output maps and more channels take im2col instead: with few 2x2 tiles per image, or
# chunks of one or two images, the transforms cost more than the multiplications saved
# (benchmarks/README.md, "WINOGRAD_MIN_OUT and WINOGRAD_MAX_CHANNELS").
WINOGRAD_MIN_OUT = 10
WINOGRAD_MAX_CHANNELS = 64
# Fewer 2x2 output tiles than this in the whole batch (e.g. inference on one image) and the 16
# products are too short for the transforms to pay: im2col's one GEMM is 1.6-4x faster there
# (benchmarks/README.md, "WINOGRAD_MIN_TILES").
WINOGRAD_MIN_TILES = 768


def use_winograd(x, w_shape, stride, padding, dilation, groups) -> bool:
    """The Winograd F(2x2, 3x3) path applies: a 3x3, stride-1, undilated, ungrouped 2-D
    convolution of NumPy floats with padding at most 2, output maps of at least WINOGRAD_MIN_OUT
    on each side, WINOGRAD_MIN_CHANNELS to WINOGRAD_MAX_CHANNELS channels in and out, and at least
    WINOGRAD_MIN_TILES 2x2 output tiles in the batch."""
    if not (_winograd_enabled and groups == 1 and use_nhwc(x, w_shape, groups) and tuple(w_shape[2:]) == (3, 3)
            and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and max(padding) <= 2
            and WINOGRAD_MIN_CHANNELS <= min(w_shape[0], w_shape[1])
            and max(w_shape[0], w_shape[1]) <= WINOGRAD_MAX_CHANNELS):
        return False
    out = [s + 2 * p - 2 for s, p in zip(x.shape[2:], padding)]
    return min(out) >= WINOGRAD_MIN_OUT and x.shape[0] * math.prod(-(-o // 2) for o in out) >= WINOGRAD_MIN_TILES


def use_winograd_weight_grad() -> bool:
    """Where use_winograd holds, the weight gradient takes the Winograd path too (else im2col)."""
    return _winograd_weight_grad_enabled


def winograd_chunks(x, C, L):
    """conv_chunks for a Winograd layer with C input channels and L outputs per image: chunks of
    WINOGRAD_CHUNK_BYTES of transformed input (16 values per channel and 2x2 tile, L/4 tiles)."""
    return conv_chunks(x, 16 * C, L // 4, target=WINOGRAD_CHUNK_BYTES)


# ------------------------------------------------------------------ small batches
# Up to this many rows Linear's forward multiplies (w @ x.T).T rather than x @ w.T: for a few rows
# OpenBLAS is faster that way round (benchmarks/README.md, "LINEAR_SMALL_BATCH").
LINEAR_SMALL_BATCH = 64


# Linear's three products on the indirect GEMM (one core) rather than one-thread OpenBLAS: float32
# on AVX-512, at least LINEAR_IGEMM_MIN_ROWS rows (the weight gradient's reduction runs over the
# batch) and at most LINEAR_IGEMM_MAX_WEIGHTS weights (packed again each call). Forward + both
# gradients, one core (BLAS / igemm, ms): 128x800x256 1.34 / 0.86, 256x800x256 2.62 / 1.63,
# 1000x640x100 3.41 / 2.07; 128x256x10 0.031 / 0.039; 64x1024x1024 3.80 / 7.22
# (benchmarks/README.md, "Linear on the indirect GEMM").
LINEAR_IGEMM_MIN_ROWS = 128
LINEAR_IGEMM_MAX_WEIGHTS = 1 << 18
LINEAR_IGEMM_MIN_OUT = 16


def use_igemm_linear(x2, w) -> bool:
    """Linear's products run on igemm (see LINEAR_IGEMM_MIN_ROWS): float32 NumPy (M, in) input
    of at least LINEAR_IGEMM_MIN_ROWS rows, a weight of at least LINEAR_IGEMM_MIN_OUT outputs and
    at most LINEAR_IGEMM_MAX_WEIGHTS elements, AVX-512, the kernel and compiled kernels on."""
    return (_igemm_enabled and _compiled_enabled and isinstance(x2, np.ndarray) and x2.dtype == np.float32
            and w.dtype == np.float32 and x2.shape[0] >= LINEAR_IGEMM_MIN_ROWS
            and w.shape[0] >= LINEAR_IGEMM_MIN_OUT and w.size <= LINEAR_IGEMM_MAX_WEIGHTS and has_avx512())


def use_transposed_linear(x2) -> bool:
    """Linear's forward computes (w @ x2.T).T: a NumPy (M, in) input of at most LINEAR_SMALL_BATCH rows."""
    return x2.shape[0] <= LINEAR_SMALL_BATCH and isinstance(x2, np.ndarray)
