"""Fixtures of the kernel tests."""

import pytest

from cnnlab import kernels


@pytest.fixture
def pool_of(monkeypatch):
    """pool_of(n): the thread pool of n workers (helpers + caller), the compiled kernels on."""
    def set_workers(n):
        monkeypatch.setattr(kernels.policy, "WORKERS", n)
        monkeypatch.setattr(kernels.policy, "_compiled_enabled", True)

    return set_workers
