"""The compiled, multi-core CPU path against the portable NumPy path, on inputs large enough
to be split across cores and into cache-sized chunks."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab import kernels

rng = np.random.default_rng(0)

CASES = [
    ("conv2d", lambda x, w: F.conv2d(x, w), (96, 8, 20, 20), (16, 8, 5, 5)),
    ("conv2d_pad_stride", lambda x, w: F.conv2d(x, w, stride=2, padding=1), (96, 8, 21, 19), (16, 8, 3, 3)),
    ("conv2d_one_channel", lambda x, w: F.conv2d(x, w), (400, 1, 28, 28), (20, 1, 5, 5)),
    ("conv2d_groups", lambda x, w: F.conv2d(x, w, padding=1, groups=4), (128, 8, 16, 16), (8, 2, 3, 3)),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), (64, 16, 24, 24), None),
    ("max_pool2d_overlap", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), (64, 16, 23, 23), None),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2), (64, 16, 24, 24), None),
    ("lp_pool2d", lambda x: F.lp_pool2d(x, 2, 2), (64, 16, 24, 24), None),
    ("relu", F.relu, (64, 16, 24, 24), None),
    ("tanh", F.tanh, (64, 16, 24, 24), None),
    ("sigmoid", F.sigmoid, (64, 16, 24, 24), None),
]


def _run(fn, arrays, g_seed=1):
    ts = [cnnlab.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    g = np.random.default_rng(g_seed).standard_normal(out.shape).astype(out.dtype)
    out.backward(g)
    return out.numpy(), [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,fn,xs,ws", CASES, ids=[c[0] for c in CASES])
def test_compiled_multicore_path_matches_numpy_path(name, fn, xs, ws, dtype, monkeypatch):
    # small thresholds, whatever the tuned values: every operator here is cut into several chunks
    monkeypatch.setattr(kernels.policy, "SPLIT_MIN_BYTES", 1 << 16)
    monkeypatch.setattr(kernels.policy, "CPU_CHUNK_BYTES", 1 << 18)
    assert np.prod(xs) * np.dtype(dtype).itemsize >= kernels.policy.SPLIT_MIN_BYTES  # really split
    x = (rng.permutation(int(np.prod(xs))).reshape(xs) / np.prod(xs) - 0.5).astype(dtype)  # no ties
    arrays = [x] + ([rng.standard_normal(ws).astype(dtype)] if ws else [])
    out, grads = _run(fn, arrays)
    with kernels.compiled(False):
        ref_out, ref_grads = _run(fn, arrays)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    for a, b in zip(grads, ref_grads):
        # weight gradients sum thousands of products in a different order on the two paths
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))
    # the split is deterministic: the same call gives the same bits
    out2, grads2 = _run(fn, arrays)
    np.testing.assert_array_equal(out, out2)
    for a, b in zip(grads, grads2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("N", [1, 2, 7, 64, 257])
def test_chunks_cover_the_batch_once_in_balanced_pieces(N):
    x = np.zeros((N, 20, 12, 12), np.float32)
    chunks = kernels.conv_chunks(x, 500, 64)
    assert chunks[0][0] == 0 and chunks[-1][1] == N
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(chunks, chunks[1:]))
    sizes = [b - a for a, b in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the larger first: handed out first
    per_image = 500 * 64 * 4
    assert max(sizes) * per_image <= max(kernels.policy.CPU_CHUNK_BYTES, per_image)
    if N * per_image >= kernels.policy.SPLIT_MIN_BYTES and N >= kernels.policy.WORKERS:
        assert len(chunks) % kernels.policy.WORKERS == 0  # every core gets as many chunks
    assert kernels.conv_chunks(np.zeros((2, 1, 8, 8), np.float32), 9, 36) == [(0, 2)]  # small: one chunk


@pytest.mark.parametrize("N", [1, 2, 7, 64, 257])
@pytest.mark.parametrize("values,flops", [(900 + 20 * 576, 2 * 20 * 25 * 576), (20 * 144 + 40 * 64, 2 * 40 * 500 * 64)])
def test_indirect_chunks_split_by_work_and_size(N, values, flops, monkeypatch):
    monkeypatch.setattr(kernels.policy, "WORKERS", 2)
    x = np.zeros((N, 1, 4, 4), np.float32)
    chunks = kernels.indirect_chunks(x, values, flops)
    assert chunks[0][0] == 0 and chunks[-1][1] == N
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(chunks, chunks[1:]))
    sizes = [b - a for a, b in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the larger first: handed out first
    assert max(sizes) * values * 4 <= max(kernels.policy.INDIRECT_CHUNK_BYTES, values * 4)
    if N * flops >= kernels.policy.SPLIT_MIN_FLOPS and N >= 2:
        assert len(chunks) % 2 == 0  # both cores get as many chunks
    elif N * values * 4 <= kernels.policy.INDIRECT_CHUNK_BYTES:
        assert chunks == [(0, N)]  # little work: one chunk on the calling thread


def test_every_loop_in_kernels_cpu_is_compiled():
    """Each function of kernels/cpu.py is a numba dispatcher: a decorator lost in a merge once
    left lrn_forward_eval as plain Python loops, correct but 60-95x slower (AlexNet inference)."""
    import inspect

    from numba.core.dispatcher import Dispatcher

    from cnnlab.kernels import cpu

    plain = [n for n, o in vars(cpu).items() if inspect.isfunction(o) and o.__module__ == cpu.__name__]
    assert plain == []
    assert isinstance(cpu.lrn_forward_eval, Dispatcher)
