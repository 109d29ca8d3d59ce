"""cnnlab.zeros / ones / randn / cat / stack and Tensor.unsqueeze / squeeze / clone: the definition,
finite differences and PyTorch (tests/harness.py), plus PyTorch's edge cases."""

import itertools

import numpy as np
import pytest
import torch

import cnnlab
from harness import check_op


def _naive_cat(arrays, dim):
    """One element at a time: position i along dim belongs to the array whose range holds i."""
    dim = dim % arrays[0].ndim
    total = sum(a.shape[dim] for a in arrays)
    shape = arrays[0].shape[:dim] + (total,) + arrays[0].shape[dim + 1:]
    out = np.zeros(shape)
    for idx in itertools.product(*(range(s) for s in shape)):
        i = idx[dim]
        for a in arrays:
            if i < a.shape[dim]:
                out[idx] = a[idx[:dim] + (i,) + idx[dim + 1:]]
                break
            i -= a.shape[dim]
    return out


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(dim):
    shapes = {0: [(2, 3, 2), (1, 3, 2), (3, 3, 2)], 1: [(2, 1, 2), (2, 3, 2), (2, 2, 2)],
              -1: [(2, 3, 1), (2, 3, 2), (2, 3, 3)]}[dim]
    check_op(lambda *t: cnnlab.cat(list(t), dim), shapes, lambda *a: _naive_cat(a, dim),
             lambda *t: torch.cat(list(t), dim))


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(dim):
    def naive(*arrays):
        d = dim % (arrays[0].ndim + 1)
        shape = arrays[0].shape[:d] + (len(arrays),) + arrays[0].shape[d:]
        out = np.zeros(shape)
        for idx in itertools.product(*(range(s) for s in shape)):
            out[idx] = arrays[idx[d]][idx[:d] + idx[d + 1:]]
        return out

    check_op(lambda *t: cnnlab.stack(t, dim), [(2, 3)] * 3, naive, lambda *t: torch.stack(t, dim))


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_unsqueeze(dim):
    def naive(a):
        d = dim % (a.ndim + 1)
        out = np.zeros(a.shape[:d] + (1,) + a.shape[d:])
        for idx in itertools.product(*(range(s) for s in a.shape)):
            out[idx[:d] + (0,) + idx[d:]] = a[idx]
        return out

    check_op(lambda t: t.unsqueeze(dim), [(2, 3)], naive, lambda t: t.unsqueeze(dim))


@pytest.mark.parametrize("dim", [None, 0, 2, -1, 1, (0, 3)])
def test_squeeze(dim):
    def naive(a):
        drop = [i for i, s in enumerate(a.shape) if s == 1] if dim is None else [
            i % a.ndim for i in (dim if isinstance(dim, tuple) else (dim,)) if a.shape[i] == 1]
        out = np.zeros(tuple(s for i, s in enumerate(a.shape) if i not in drop))
        for idx in itertools.product(*(range(s) for s in a.shape)):
            out[tuple(v for i, v in enumerate(idx) if i not in drop)] = a[idx]
        return out

    tfn = (lambda t: t.squeeze()) if dim is None else (lambda t: t.squeeze(dim))
    check_op(lambda t: t.squeeze(dim), [(1, 3, 1, 1)], naive, tfn)


def test_clone_is_a_tracked_copy():
    check_op(lambda t: t.clone() * 2.0, [(3, 4)], lambda a: 2 * a.copy(), lambda t: t.clone() * 2.0)
    x = cnnlab.tensor(np.ones(3), requires_grad=True)
    y = x.clone()
    assert y.requires_grad and not np.shares_memory(y.data, x.data)
    with cnnlab.no_grad():
        y[0] = 5.0  # the copy changes, the original does not
    assert x.numpy().tolist() == [1.0, 1.0, 1.0]


def test_creation_functions():
    for fn, tfn, value in ((cnnlab.zeros, torch.zeros, 0.0), (cnnlab.ones, torch.ones, 1.0)):
        a, b = fn(2, 3), fn((2, 3))
        assert a.shape == b.shape == tuple(tfn(2, 3).shape) and a.dtype == np.float32
        assert np.all(a.numpy() == value) and not a.requires_grad
        c = fn(4, dtype=np.float64, requires_grad=True)
        assert c.dtype == np.float64 and c.requires_grad and c.is_leaf
        assert fn(()).shape == () == tuple(tfn(()).shape)
    with pytest.raises(ValueError, match="zeros: sizes must be non-negative ints"):
        cnnlab.zeros(2, -1)
    cnnlab.manual_seed(3)
    r = cnnlab.randn(2000, dtype=np.float64)
    cnnlab.manual_seed(3)
    assert np.array_equal(r.numpy(), cnnlab.randn(2000, dtype=np.float64).numpy())  # seeded
    assert r.shape == (2000,) and abs(r.numpy().mean()) < 0.1 and abs(r.numpy().std() - 1) < 0.1
    assert cnnlab.randn(3, 2).dtype == np.float32


def test_bad_joins_name_the_problem():
    a, b = cnnlab.zeros(2, 3), cnnlab.zeros(2, 4)
    with pytest.raises(ValueError, match="cat: tensor 1 has shape"):
        cnnlab.cat([a, b], 0)
    assert cnnlab.cat([a, b], 1).shape == (2, 7)
    with pytest.raises(ValueError, match="stack: tensor 1 has shape"):
        cnnlab.stack([a, b])
    with pytest.raises(ValueError, match="non-empty"):
        cnnlab.cat([])
    with pytest.raises(TypeError, match="list or tuple"):
        cnnlab.cat(a)
    with pytest.raises(IndexError, match="unsqueeze: dim 3"):
        a.unsqueeze(3)
    assert a.squeeze(0).shape == (2, 3)  # a size that is not 1 stays, as in PyTorch
