"""Where a training step's time goes, per operator, forward and backward (cnnlab only).

Wraps every Function's forward and backward with a timer while Nielsen's net trains, and prints
milliseconds per step for each (operator, pass), largest first, with the share of the step.

    python benchmarks/profile_step.py --batch 256 --steps 20
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import batches, cnn_trainer, make_pair  # noqa: E402
from cnnlab.autograd import Function  # noqa: E402


def instrument():
    """Time every Function subclass's forward/backward; returns the totals dict."""
    totals = collections.defaultdict(float)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in set(subclasses(Function)):
        for name in ("forward", "backward"):
            if name not in vars(cls):
                continue
            orig = vars(cls)[name]

            def timed(self, *a, _orig=orig, _key=(cls.__name__, name), **k):
                t = time.perf_counter()
                try:
                    return _orig(self, *a, **k)
                finally:
                    totals[_key] += time.perf_counter() - t
            setattr(cls, name, timed)
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--net", default="nielsen", choices=["nielsen", "article", "lenet5", "vgg", "alexnet"])
    args = ap.parse_args()
    c, _ = make_pair(args.net)
    step = cnn_trainer(c)
    data = batches(args.batch, 4)
    for x, y in data[:2]:
        step(x, y)  # compile and warm up before timing
    totals = instrument()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(*data[i % len(data)])
    wall = (time.perf_counter() - t0) / args.steps
    print(f"{args.net}, batch {args.batch}: {1e3 * wall:.1f} ms per training step, {args.batch / wall:.0f} img/s")
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    for (op, phase), sec in rows:
        ms = 1e3 * sec / args.steps
        print(f"  {op:<16} {phase:<9} {ms:8.2f} ms  {100 * ms / (1e3 * wall):5.1f}%")
    rest = wall - sum(totals.values()) / args.steps
    print(f"  {'(engine, optimizer, Python)':<26} {1e3 * rest:8.2f} ms  {100 * rest / wall:5.1f}%")


if __name__ == "__main__":
    main()
