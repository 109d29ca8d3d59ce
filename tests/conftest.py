import pytest

import cnnlab


@pytest.fixture(autouse=True)
def _seed():
    cnnlab.manual_seed(0)
    yield
