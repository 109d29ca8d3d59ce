#!/usr/bin/env bash
# One script for a GPU machine with CuPy, PyTorch and numba installed and no internet: installs
# nothing, runs the GPU tests, the GPU benchmark against PyTorch and a time-to-99% MNIST run from
# the source tree, and prints a summary. Budget: under 8 minutes.
#   bash benchmarks/gpu_check.sh            (OUT=dir to keep the logs)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/cnnlab-gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import cupy, torch, numba; print('cupy', cupy.__version__, '| torch', torch.__version__, '| numba', numba.__version__)"

echo "== GPU tests (every test marked gpu: operators, training steps, DeviceLoader, dropout, optimizers;"
echo "   CuPy vs the CPU path and PyTorch on the GPU); none may be skipped here"
timeout 200 $PY -m pytest -q -p no:cacheprovider -m gpu -rs tests 2>&1 | tee "$OUT/tests.log" | tail -15
tests_rc=${PIPESTATUS[0]}
if grep -q "skipped" "$OUT/tests.log"; then
  echo "GPU tests were skipped on a GPU machine: see $OUT/tests.log"
  tests_rc=1
fi

echo "== training throughput, cnnlab vs PyTorch eager, same GPU"
timeout 200 $PY benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log"

echo "== time to 99% MNIST test accuracy"
timeout 120 $PY benchmarks/time_to_99.py --device cuda --no-torch --seeds 0,1,2 2>&1 | tee "$OUT/time_to_99.log"

echo "== summary"
echo "tests: exit $tests_rc ($(tail -1 "$OUT/tests.log"))"
grep -h "cnnlab/torch" "$OUT/bench.log" || echo "benchmark: no result"
grep -h -E "median|compilation" "$OUT/time_to_99.log" || echo "time to 99%: no result"
