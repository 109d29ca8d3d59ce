"""How the cost of a training step grows: batch size, image size, width; cnnlab beside PyTorch.

The net is Nielsen's two-conv ReLU net scaled by a width factor w: conv 5x5 1 -> 20w, max-pool 2,
ReLU, conv 5x5 20w -> 40w, max-pool 2, ReLU, FC -> 100, FC -> 10, on S x S images (the FC layer's
input grows with S). One axis moves at a time from batch 64, 28 px, width x1.

Each (configuration, framework) runs in a fresh child process, so that peak memory is that
framework's alone: the child builds the net, takes one warm-up step (compilation, lazy
initialisation), resets the peak resident set size, then times ``steps`` SGD steps; it reports
the median step time and the peak RSS growth over the steps. Children alternate which framework
goes first, several rounds; the table gives medians of the rounds.

    python benchmarks/bench_scaling.py                      # the default grid
    python benchmarks/bench_scaling.py --batches 1,64,4096 --sizes 28 --widths 1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "src"))


def feature(size):
    return ((size - 4) // 2 - 4) // 2


def build(framework, width, size):
    c1, c2, f = 20 * width, 40 * width, feature(size)
    if framework == "cnnlab":
        from cnnlab import nn  # noqa: PLC0415

        return nn.Sequential(nn.Conv2d(1, c1, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(c1, c2, 5), nn.MaxPool2d(2),
                             nn.ReLU(), nn.Flatten(), nn.Linear(c2 * f * f, 100), nn.ReLU(), nn.Linear(100, 10))
    import torch  # noqa: PLC0415

    T = torch.nn
    return T.Sequential(T.Conv2d(1, c1, 5), T.MaxPool2d(2), T.ReLU(), T.Conv2d(c1, c2, 5), T.MaxPool2d(2), T.ReLU(),
                        T.Flatten(), T.Linear(c2 * f * f, 100), T.ReLU(), T.Linear(100, 10))


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(framework, batch, size, width, steps, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    if framework == "cnnlab":
        import cnnlab  # noqa: PLC0415
        import cnnlab.functional as F  # noqa: PLC0415
        from cnnlab import kernels, nn, optim  # noqa: PLC0415

        if threads:
            kernels.set_workers(threads)
        cnnlab.manual_seed(0)
        model = build("cnnlab", width, size)
        run = nn.fuse(model)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss = F.cross_entropy(run(cnnlab.Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        import torch  # noqa: PLC0415

        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = build("torch", width, size)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
    step()  # warm-up: compilation and lazy initialisation excluded
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    times, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = _status_kib("VmHWM")
    print(json.dumps({"ms": 1e3 * statistics.median(times), "cpu_ms": 1e3 * statistics.median(cpu),
                      "mib": (peak - base) / 1024}))


def measure(framework, batch, size, width, steps, threads):
    r = subprocess.run([sys.executable, str(HERE), "--child", framework, str(batch), str(size), str(width),
                        str(steps), str(threads)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def grid(batches, sizes, widths):
    """One axis at a time from (64, 28, 1)."""
    points = [(b, 28, 1) for b in batches]
    points += [(64, s, 1) for s in sizes if s != 28]
    points += [(64, 28, w) for w in widths if w != 1]
    return list(dict.fromkeys(points))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,16,64,256,1024,4096")
    ap.add_argument("--sizes", default="28,56,112")
    ap.add_argument("--widths", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for both (cnnlab's workers, PyTorch's intra-op threads); 0: each its default")
    ap.add_argument("--child", nargs=6, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fw, b, s, w, n, t = args.child
        child(fw, int(b), int(s), int(w), int(n), int(t))
        return
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    points = grid(ints(args.batches), ints(args.sizes), ints(args.widths))
    print(f"# load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; medians of {args.rounds} rounds, "
          f"each a fresh process per framework; threads {args.threads or 'default'}; ms = wall time per step, "
          f"CPU = process CPU time per step (all threads)")
    print(f"{'batch':>6} {'px':>4} {'width':>5} | {'cnnlab ms':>10} {'torch ms':>10} {'ratio':>6} | {'cnnlab CPU':>10} "
          f"{'torch CPU':>10} {'ratio':>6} | {'cnnlab MiB':>10} {'torch MiB':>10}", flush=True)
    rows = []
    for batch, size, width in points:
        # about 4k images (or 3 steps at least, 20 at most) per measurement
        steps = max(3, min(20, 4096 // batch))
        res = {"cnnlab": [], "torch": []}
        for r in range(args.rounds):
            for fw in (("cnnlab", "torch") if r % 2 == 0 else ("torch", "cnnlab")):
                res[fw].append(measure(fw, batch, size, width, steps, args.threads))
        keys = ("ms", "cpu_ms", "mib")
        med = {fw: {k: statistics.median(m[k] for m in v) for k in keys} for fw, v in res.items()}
        row = {"batch": batch, "size": size, "width": width, **{f"{fw}_{k}": med[fw][k] for fw in med for k in keys}}
        rows.append(row)
        c, t = med["cnnlab"], med["torch"]
        print(f"{batch:>6} {size:>4} {'x' + str(width):>5} | {c['ms']:>10.2f} {t['ms']:>10.2f} {t['ms'] / c['ms']:>5.2f}x | "
              f"{c['cpu_ms']:>10.2f} {t['cpu_ms']:>10.2f} {t['cpu_ms'] / c['cpu_ms']:>5.2f}x | {c['mib']:>10.1f} "
              f"{t['mib']:>10.1f}", flush=True)
    print(f"# load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
