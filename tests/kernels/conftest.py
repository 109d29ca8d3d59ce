"""Fixtures of the kernel tests."""

import pytest

from cnnlab import kernels
from cnnlab.kernels import threads


@pytest.fixture
def pool_of(monkeypatch):
    """pool_of(n): the thread pool of n workers (helpers + caller), the compiled kernels on."""
    def set_workers(n):
        monkeypatch.setattr(kernels.policy, "WORKERS", n)
        monkeypatch.setattr(kernels.policy, "_compiled_enabled", True)

    return set_workers


@pytest.fixture
def fresh_pool(monkeypatch):
    """fresh_pool(seconds): the next call makes a new thread pool whose helpers spin ``seconds``
    after each job; that pool is stopped after the test, and the one after makes its own (a
    stopped pool handed back to later tests would leave the caller every chunk)."""
    def make(seconds):
        monkeypatch.setattr(kernels.policy, "SPIN_SECONDS", seconds)
        _drop_pool()

    yield make
    _drop_pool()


def _drop_pool():
    if threads._the_pool is not None:
        threads._the_pool.stop()
    threads._the_pool = None
