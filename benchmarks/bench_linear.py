"""Small-batch training of big fully connected layers: the FC product and the SGD step.

cnnlab's ``Linear`` computes x @ W.T (W stored (out, in), as PyTorch does). For a few rows OpenBLAS
runs the same product faster as (W @ x.T).T, so ``kernels.policy.LINEAR_SMALL_BATCH`` switches to that
form up to 64 rows. This script shows why, side by side in one process, alternating, medians:

1. the forward product both ways, and PyTorch's F.linear, for Nielsen's and the zoo's FC shapes;
2. a whole training step of Nielsen's dropout net (batch 10, the book's mini-batch) with the
   switch off (LINEAR_SMALL_BATCH = 0) and on, and PyTorch's step of the same net;
3. the SGD update of that net's 1.67M parameters: the NumPy expression against the compiled
   one-pass kernel (kernels/cpu.py: sgd_update), plain and with Nesterov momentum.

    python benchmarks/bench_linear.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cnnlab  # noqa: E402
import cnnlab.functional as F  # noqa: E402
from cnnlab import models, nn, optim  # noqa: E402
from cnnlab.autograd import Tensor  # noqa: E402
from cnnlab.kernels import policy  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("this benchmark compares with PyTorch: pip install 'cnnlab[test]' (torch==2.13.0)")


def per_call(f, calls):
    f()
    t = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - t) / calls


# Seconds each function's turn waits first: the previous turn's threads (PyTorch's OpenMP threads,
# cnnlab's helpers) keep spinning after their last call, and a turn started at once shared the
# cores with them (bench_cpu.py's SETTLE_SECONDS)
SETTLE_SECONDS = 0.03


def alternate(fns: dict, rounds: int, calls: int, settle: float = SETTLE_SECONDS) -> dict:
    """Median seconds per call of each function, the functions taking turns in every round (in
    reverse order every other round), each turn after ``settle`` seconds of quiet."""
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k, f in (fns.items() if r % 2 == 0 else reversed(fns.items())):
            time.sleep(settle)
            times[k].append(per_call(f, calls))
    return {k: statistics.median(v) for k, v in times.items()}


def products(rounds):
    rng = np.random.default_rng(0)
    print("forward product, ms per call (median); ratio = x @ W.T time / the other's")
    print(f"{'rows x in -> out':<22} {'x @ W.T':>9} {'(W @ x.T).T':>12} {'torch':>8} {'ratio':>7}")
    for rows, n_in, n_out in ((10, 640, 1000), (10, 1000, 1000), (10, 640, 100), (64, 3136, 256),
                              (64, 1000, 1000), (128, 3136, 256), (256, 640, 100), (256, 3136, 256)):
        x = rng.standard_normal((rows, n_in), dtype=np.float32)
        w = rng.standard_normal((n_out, n_in), dtype=np.float32)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        t = alternate({"a": lambda: x @ w.T, "b": lambda: np.ascontiguousarray((w @ x.T).T),
                       "torch": lambda: torch.nn.functional.linear(tx, tw)}, rounds, 100)
        print(f"{rows:>4} x {n_in:>4} -> {n_out:<8} {1e3 * t['a']:9.3f} {1e3 * t['b']:12.3f} "
              f"{1e3 * t['torch']:8.3f} {t['a'] / t['b']:6.2f}x")


def dropout_step(rounds):
    cnnlab.manual_seed(0)
    net = models.build("nielsen-dropout")
    net.train()
    run = nn.fuse(net)  # the fused conv blocks, as cnnlab trains it on the CPU
    opt = optim.SGD(net.parameters(), lr=0.03)
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 20, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Conv2d(20, 40, 5),
        torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(640, 1000),
        torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(1000, 1000), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(1000, 10))
    topt = torch.optim.SGD(tnet.parameters(), lr=0.03)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 10)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = F.cross_entropy(run(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def tstep():
        loss = torch.nn.functional.cross_entropy(tnet(tx), ty)
        topt.zero_grad()
        loss.backward()
        topt.step()

    def with_switch(value):
        def run():
            policy.LINEAR_SMALL_BATCH = value
            step()
        return run

    keep = policy.LINEAR_SMALL_BATCH
    try:
        t = alternate({"off": with_switch(0), "on": with_switch(keep), "torch": tstep}, rounds, 100)
    finally:
        policy.LINEAR_SMALL_BATCH = keep
    print()
    print("Nielsen's dropout net, one training step at batch 10 (ms, median):")
    print(f"  cnnlab, x @ W.T always        {1e3 * t['off']:7.2f}  ({t['torch'] / t['off']:.2f}x PyTorch's speed)")
    print(f"  cnnlab, (W @ x.T).T to {keep} rows {1e3 * t['on']:7.2f}  ({t['torch'] / t['on']:.2f}x PyTorch's speed; "
          f"{t['off'] / t['on']:.2f}x the other)")
    print(f"  PyTorch                       {1e3 * t['torch']:7.2f}")


def sgd_steps(rounds):
    from cnnlab import kernels

    print()
    print("SGD update of the dropout net's parameters (ms, median)")
    for kwargs in (dict(lr=0.03), dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4)):
        net = models.build("nielsen-dropout")
        params = list(net.parameters())
        rng = np.random.default_rng(0)
        for p in params:
            p.grad = Tensor(rng.standard_normal(p.data.shape).astype(p.data.dtype))
        opt = optim.SGD(params, **kwargs)

        def numpy_step():
            with kernels.compiled(False):
                opt.step()

        t = alternate({"numpy": numpy_step, "compiled": opt.step}, rounds, 50)
        print(f"  {kwargs}: NumPy {1e3 * t['numpy']:.3f}, compiled {1e3 * t['compiled']:.3f} "
              f"({t['numpy'] / t['compiled']:.2f}x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"cnnlab {cnnlab.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    products(args.rounds)
    dropout_step(args.rounds)
    sgd_steps(args.rounds)


if __name__ == "__main__":
    main()
