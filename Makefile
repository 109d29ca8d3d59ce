# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
TEST   := $(VENV)/.installed-test

.PHONY: train test bench bench-dist clean

$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(BASE)

$(TEST): $(BASE)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST)

## Train the default CNN on the bundled MNIST and report its test accuracy.
train: $(BASE)
	$(VENV)/bin/cnnlab train

## Create the environment, install cnnlab with its test extra, lint, run the tests.
test: $(TEST)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(PY) -m pytest -n 2 -q

## Speed and memory against PyTorch, side by side in one process.
bench: $(TEST)
	$(PY) benchmarks/bench_cpu.py

## Data-parallel images/s for 1 and 2 processes (mpiexec from the test extra's mpich wheel).
bench-dist: $(TEST)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) benchmarks/bench_dist.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache runs
