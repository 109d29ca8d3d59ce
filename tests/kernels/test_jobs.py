"""Compiled jobs (kernels/jobs.py) on the thread pool (kernels/threads.py's run_compiled): every
chunk run once, helpers taking chunks without the GIL, Python and compiled jobs interleaved, nested
calls inline; the depthwise passes built on them give the bits of their one-chunk runs."""

import threading
import time

import numpy as np
import pytest
from numba import carray

from cnnlab import kernels
from cnnlab.kernels import jobs, threads


@jobs.job
def _count(a, i):
    """hits[i] += 1 (slots: hits address, size)."""
    hits = carray(jobs.i64(jobs.slot(a, 0)), (jobs.slot(a, 1),))
    hits[i] += 1


@jobs.job
def _meet(a, i):
    """Chunk 0 waits (up to a bound) for chunk 1 to start; seen[0] = whether it did (slots: seen
    address, flag address). Only two threads at once can meet."""
    seen = carray(jobs.i64(jobs.slot(a, 0)), (1,))
    flag = jobs.slot(a, 1)
    if i == 1:
        jobs._store(flag, 1)
        return
    for _ in range(2_000_000_000):
        if jobs._load(flag):
            seen[0] = 1
            return
        jobs._pause()


def _run_count(count):
    hits = np.zeros(max(count, 1), np.int64)
    args = np.array([hits.ctypes.data, hits.shape[0]], np.int64)
    threads.run_compiled(_count.address, args, count)
    return hits[:count]


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 300])
def test_every_chunk_runs_once(pool_of, workers, count):
    pool_of(workers)
    for _ in range(20):
        assert (_run_count(count) == 1).all()


def test_a_helper_runs_a_chunk_beside_the_caller(pool_of):
    """Chunk 0 spins until chunk 1 has started: it can only see that if another thread took
    chunk 1 while the caller ran chunk 0 (a helper asleep is woken for it)."""
    pool_of(2)
    for _ in range(5):
        seen, flag = np.zeros(1, np.int64), np.zeros(1, np.int64)
        threads.run_compiled(_meet.address, np.array([seen.ctypes.data, flag.ctypes.data], np.int64), 2)
        assert seen[0] == 1 and flag[0] == 1


@pytest.mark.parametrize("spin", [0.0, 0.002])
def test_a_sleeping_helper_is_woken_for_a_compiled_job(pool_of, fresh_pool, spin):
    """Helpers that never spin (CNNLAB_SPIN_SECONDS=0), or have gone to sleep after their spin,
    are woken for a compiled job and take its chunks."""
    pool_of(2)
    fresh_pool(spin)
    assert (_run_count(3) == 1).all()  # the pool made
    for _ in range(3):
        time.sleep(0.02)  # past any spin: the helper sleeps
        seen, flag = np.zeros(1, np.int64), np.zeros(1, np.int64)
        threads.run_compiled(_meet.address, np.array([seen.ctypes.data, flag.ctypes.data], np.int64), 2)
        assert seen[0] == 1 and flag[0] == 1


def test_python_and_compiled_jobs_interleave(pool_of):
    """A helper that runs compiled jobs inside its spin still takes the Python jobs posted between
    them, and the other way round: every result whole, both kinds helped."""
    pool_of(2)
    names = set()

    def fn(n0, n1):
        time.sleep(0.0005)  # the GIL let go, so that a helper can take the next chunk
        names.add(threading.current_thread().name)
        return n0

    for k in range(300):
        assert (_run_count(2 + k % 5) == 1).all()
        assert threads.run_chunks(fn, [(i, i + 1) for i in range(4)]) == list(range(4))
    assert len(names) >= 2


def test_a_compiled_job_inside_a_chunk_runs_on_its_thread(pool_of):
    pool_of(2)

    def fn(n0, n1):
        return _run_count(5).tolist()

    assert threads.run_chunks(fn, [(0, 1), (1, 2)]) == [[1] * 5, [1] * 5]


def test_the_pair_of_two_jobs_runs_both(pool_of):
    pool_of(2)
    a, b = np.zeros(3, np.int64), np.zeros(4, np.int64)
    first, second = (np.array([h.ctypes.data, h.shape[0]], np.int64) for h in (a, b))
    args = np.array([_count.address, first.ctypes.data, 3, _count.address, second.ctypes.data], np.int64)
    threads.run_compiled(jobs.pair.address, args, 7)
    assert (a == 1).all() and (b == 1).all()


def _depthwise_layers():
    # (x shape, kernel, stride, padding, dilation): the three kernels of kernels/depthwise.py
    # (in place "same", narrow, scratch planes) for the forward pass and each gradient
    return [((6, 5, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1)),
            ((5, 4, 12, 12), (3, 3), (2, 2), (1, 1), (1, 1)),
            ((4, 3, 30, 26), (5, 3), (2, 1), (2, 1), (1, 2)),
            ((7, 2, 23, 23), (3, 3), (1, 1), (1, 1), (1, 1))]


@pytest.mark.skipif(not kernels.policy.use_depthwise_vectors(np.zeros(1, np.float32)), reason="needs AVX-512")
@pytest.mark.parametrize("layer", _depthwise_layers())
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_depthwise_batch_jobs_give_the_bits_of_one_chunk(pool_of, layer, workers):
    """The whole-batch depthwise jobs over any chunking: the output and input gradient of the
    one-chunk kernels bit for bit, and the weight gradient's parts, one per chunk, added in chunk
    order, that of the chunks run one at a time."""
    from cnnlab.functional.conv import conv_output_shape
    from cnnlab.kernels import depthwise

    pool_of(workers)
    shape, kernel, stride, padding, dilation = layer
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    N, C = shape[:2]
    w = rng.standard_normal((C, 1) + kernel).astype(np.float32)
    out_shape = conv_output_shape(shape[2:], kernel, stride, padding, dilation)
    geom = (kernel, stride, padding, dilation, out_shape)
    g = rng.standard_normal((N, C, out_shape[0] * out_shape[1])).astype(np.float32)
    y1 = depthwise.forward(x, w, *geom)
    gx1 = depthwise.input_grad(g, w, shape[2:], *geom)
    for chunks in ([(0, N)], [(0, 2), (2, N)], [(i, i + 1) for i in range(N)], [(0, 3), (3, 3), (3, N)]):
        y = np.full_like(y1, np.nan)
        kernels.depthwise_batch_forward(x, w, *geom, y, chunks)
        assert np.array_equal(y, y1)
        gx = np.full_like(x, np.nan)
        got = kernels.depthwise_batch_backward(g, x, w, *geom, gx, chunks, chunks)
        assert np.array_equal(gx, gx1)
        parts = [depthwise.weight_grad_part(g[a:b], x[a:b], *geom) for a, b in chunks]
        total, gw = parts[0], got[0]
        for p, q in zip(parts[1:], got[1:]):
            total, gw = total + p, gw + q
        assert len(got) == len(parts) and np.array_equal(gw, total)
        assert kernels.depthwise_batch_backward(g, x, w, *geom, None, chunks, None) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geom", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (2, 1), (0, 0))])
def test_max_pooling_as_a_job_gives_the_bits_of_one_chunk(pool_of, monkeypatch, dtype, geom):
    """2-D max pooling split into chunks (a compiled job): the one-chunk output, arg-max routing
    and input gradient, ties included (repeated values)."""
    from cnnlab.functional.conv import conv_output_shape

    pool_of(2)
    kernel, stride, padding = geom
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (7, 3, 11, 10)).astype(dtype)  # ties: the first maximum wins
    out_shape = conv_output_shape(x.shape[2:], kernel, stride, padding, (1, 1))
    g = rng.standard_normal((7, 3) + tuple(out_shape)).astype(dtype)
    whole, r1 = kernels.max_pool_forward(x, kernel, stride, padding, out_shape)
    dx1 = kernels.max_pool_backward(g, r1, x.shape, kernel, stride, padding, out_shape)
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_BYTES", 0)
    assert len(kernels.policy.batch_ranges(7, x.nbytes)) == 4
    split, r2 = kernels.max_pool_forward(x, kernel, stride, padding, out_shape)
    dx2 = kernels.max_pool_backward(g, r2, x.shape, kernel, stride, padding, out_shape)
    assert np.array_equal(split, whole) and np.array_equal(dx2, dx1)
    assert np.array_equal(r2[1], r1[1])


@pytest.mark.skipif(not kernels.policy.use_depthwise_vectors(np.zeros(1, np.float32)), reason="needs AVX-512")
@pytest.mark.parametrize("layer", [((9, 5, 12, 12), (8, 5, 3, 3), 1, 1), ((7, 4, 20, 20), (16, 4, 3, 3), 1, 1),
                                   ((8, 8, 11, 13), (32, 4, 3, 3), 2, 2), ((5, 3, 6, 7, 8), (8, 3, 3, 3, 3), 1, 1),
                                   ((6, 4, 1, 40), (8, 4, 1, 5), 1, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_the_indirect_forward_job_gives_the_bits_of_its_chunks(pool_of, monkeypatch, layer, bias):
    """ConvPlan's forward pass as one compiled job (igemm's forward_job: the direct and the
    indirect forms, images, volumes, signals lifted to images, bias added in the job) gives the
    bits of the same chunks run one at a time."""
    from cnnlab.functional.conv import ConvPlan

    pool_of(2)
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(kernels.policy, "CPU_CHUNK_BYTES", 1 << 10)
    xs, ws, stride, groups = layer
    rng = np.random.default_rng(len(xs) + ws[0])
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    d = len(xs) - 2
    plan = ConvPlan(x, w, b, (stride,) * d, (1,) * d if d > 1 else (0,), (1,) * d, groups)
    assert plan.indirect and len(plan.chunks) >= 2
    out = np.full((xs[0], plan.F, plan.L), np.nan, np.float32)
    plan.forward_batch(x, out)
    ref = np.full_like(out, np.nan)
    for n0, n1 in plan.chunks:
        plan.forward_chunk(x[n0:n1], ref[n0:n1])
    assert np.array_equal(out, ref)


@pytest.mark.skipif(not kernels.policy.use_depthwise_vectors(np.zeros(1, np.float32)), reason="needs AVX-512")
@pytest.mark.parametrize("layer", [((9, 5, 12, 12), (8, 5, 3, 3), 1, 1, 1), ((7, 4, 20, 20), (16, 4, 3, 3), 1, 1, 1),
                                   ((4, 8, 32, 32), (16, 4, 3, 3), 2, 1, 2), ((3, 16, 28, 28), (32, 16, 3, 3), 2, 1, 1),
                                   ((5, 3, 6, 7, 8), (8, 3, 3, 3, 3), 1, 1, 1), ((6, 4, 40), (8, 4, 5), 1, 2, 1),
                                   ((4, 32, 4, 4), (64, 32, 3, 3), 1, 1, 1), ((6, 16, 9, 9), (32, 16, 3, 3), 2, 1, 1),
                                   ((3, 256, 4, 4), (512, 256, 3, 3), 1, 1, 1), ((6, 16, 9, 9), (32, 8, 3, 3), 2, 1, 2),
                                   ((4, 8, 7, 7, 7), (16, 8, 3, 3, 3), 2, 1, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_the_indirect_backward_job_gives_the_bits_of_python_chunks(pool_of, monkeypatch, layer, bias):
    """An indirect-GEMM layer's backward pass as one compiled job (input gradient by the phases
    or the flipped convolution, weight gradient per chunk, direct or packed, or by columns over
    the batch; the 9x9 and 7^3 stride-2 layers' input gradients by col2im) gives the bits of backward's
    Python chunks, and the job was taken (the last layer's 1.2M weights: the filters as the
    product's rows)."""
    import cnnlab
    import cnnlab.functional as F
    from cnnlab.functional.conv import ConvPlan

    pool_of(2)
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(kernels.policy, "CPU_CHUNK_BYTES", 1 << 10)
    xs, ws, stride, padding, groups = layer
    rng = np.random.default_rng(len(xs) + ws[0] + stride)
    xa = rng.standard_normal(xs).astype(np.float32)
    wa = rng.standard_normal(ws).astype(np.float32)
    ba = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[len(xs)]

    def grads():
        x, w = cnnlab.tensor(xa, requires_grad=True), cnnlab.tensor(wa, requires_grad=True)
        b = cnnlab.tensor(ba, requires_grad=True) if bias else None
        y = conv(x, w, b, stride=stride, padding=padding, groups=groups)
        y.backward(np.linspace(-1, 1, y.numpy().size, dtype=np.float32).reshape(y.shape))
        return [t.grad.numpy() for t in (x, w, b) if t is not None]

    taken, rule = [], ConvPlan._indirect_batch_backward
    monkeypatch.setattr(ConvPlan, "_indirect_batch_backward", lambda *a: taken.append(rule(*a)) or taken[-1])
    job = grads()
    assert taken and taken[0] is not None
    monkeypatch.setattr(ConvPlan, "_indirect_batch_backward", lambda *a: None)
    for a, c in zip(job, grads()):
        assert np.array_equal(a, c)


@pytest.mark.skipif(not kernels.policy.use_depthwise_vectors(np.zeros(1, np.float32)), reason="needs AVX-512")
@pytest.mark.parametrize("layer", [((9, 1, 28, 28), (6, 1, 5, 5), (2, 2, 0)), ((7, 5, 12, 12), (16, 5, 3, 3), (2, 2, 0)),
                                   ((6, 8, 13, 13), (32, 8, 3, 3), (3, 2, 1)), ((5, 16, 10, 10), (40, 16, 3, 3), (2, 2, 0))])
@pytest.mark.parametrize("act", [None, "relu"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_fused_conv_pool_job_gives_the_bits_of_its_python_chunks(pool_of, monkeypatch, layer, act, bias, workers):
    """A fused convolution -> max pooling (-> ReLU) as one compiled job (the direct form for few
    filters, the indirect one, pools with padding and overlap) gives the outputs and arg-maxes
    of its chunks run one at a time by the operators' own functions."""
    from cnnlab.functional.conv import ConvPlan

    pool_of(workers)
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(kernels.policy, "CPU_CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(kernels.policy, "INDIRECT_CHUNK_BYTES", 1 << 12)
    xs, ws, (k, s, p) = layer
    rng = np.random.default_rng(xs[1] + ws[0])
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    plan = ConvPlan(x, w, b, (1, 1), (0, 0), (1, 1), 1)
    assert plan.indirect and len(plan.chunks) >= 2
    OH, OW = plan.out_shape
    PH, PW = (OH + 2 * p - k) // s + 1, (OW + 2 * p - k) // s + 1
    out = np.full((xs[0], plan.F, PH, PW), np.nan, np.float32)
    arg = np.full(out.shape, -1, np.int32)
    job = plan.ig.conv_max_pool_job(x, plan.chunks, b, ((k, k), (s, s), (p, p)), out, arg, act == "relu")
    kernels.run_compiled(job.fn, job.args, job.count)
    for n0, n1 in plan.chunks:
        y = np.empty((n1 - n0, plan.F, plan.L), np.float32)
        plan.forward_chunk(x[n0:n1], y)
        o, a = kernels.max_pool2d_chunk(y.reshape(n1 - n0, plan.F, OH, OW), (k, k), (s, s), (p, p), (PH, PW))
        kernels.act_forward_chunk(act, o)
        assert np.array_equal(out[n0:n1], o) and np.array_equal(arg[n0:n1], a)
