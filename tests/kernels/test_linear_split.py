"""Linear's large products split over the cores (policy.linear_chunks): the same values and
gradients as one product, against PyTorch too, in float32 and float64."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
from cnnlab.kernels import policy
from harness import rel_error, torch


def _run(x, w, b, up):
    ts = [cnnlab.tensor(a, requires_grad=True) for a in (x, w, b)]
    out = F.linear(*ts)
    out.backward(cnnlab.tensor(up))
    return [out.numpy()] + [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", [67, 130])  # over LINEAR_SMALL_BATCH rows, odd and even
def test_split_equals_one_product_and_torch(monkeypatch, dtype, M):
    rng = np.random.default_rng(M)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((M, 50), (30, 50), (30,)))
    up = rng.standard_normal((M, 30)).astype(dtype)
    monkeypatch.setattr(policy, "WORKERS", 2)
    monkeypatch.setattr(policy, "LINEAR_SPLIT_MIN_MACS", 1 << 40)
    assert policy.linear_chunks(M, 50, 30) == [(0, M)]
    whole = _run(x, w, b, up)
    monkeypatch.setattr(policy, "LINEAR_SPLIT_MIN_MACS", 0)
    assert len(policy.linear_chunks(M, 50, 30)) == 2
    split = _run(x, w, b, up)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for a, c in zip(split, whole):
        assert a.dtype == dtype and rel_error(a, c) < tol
    tt = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    to = torch.nn.functional.linear(*tt)
    to.backward(torch.tensor(up))
    for a, t in zip(split, [to] + [t.grad for t in tt]):
        assert rel_error(a, t.detach().numpy()) < tol


def test_small_or_serial_products_are_not_split(monkeypatch):
    monkeypatch.setattr(policy, "WORKERS", 2)
    assert policy.linear_chunks(128, 800, 256) == [(0, 64), (64, 128)]  # the speedrun's first FC layer
    assert policy.linear_chunks(128, 10, 10) == [(0, 128)]  # too few multiply-adds
    assert policy.linear_chunks(3, 4000, 4000) == [(0, 3)]  # too few rows
    monkeypatch.setattr(policy, "WORKERS", 1)
    assert policy.linear_chunks(128, 800, 256) == [(0, 128)]
