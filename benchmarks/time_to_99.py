"""Time to 99% MNIST test accuracy from a cold start of training: cnnlab and PyTorch, the same recipe,
side by side in one process.

The recipe is cnnlab's speedrun (src/cnnlab/speedrun.py, docs/speedrun.md): a two-block conv net
with batch norm, one pass over 40,000 of the 60,000 training images at batch 128, Adam under a one-cycle
schedule, label smoothing 0.1; then the test accuracy on all 10,000 test images. Data is
normalised in memory before the clock; kernel compilation (cnnlab's numba kernels, PyTorch's
oneDNN primitives) is done on a throw-away model first and reported on its own.

PyTorch gets the same architecture with cnnlab's initial weights for the seed, the same batches in
the same order, torch.optim.Adam and OneCycleLR with the same settings (momentum not cycled, as
cnnlab's OneCycleLR does not cycle it), and the same evaluation. Seeds alternate which framework
runs first.

    PYTHONPATH=src python benchmarks/time_to_99.py --seeds 0,1,2,3,4
    PYTHONPATH=src python benchmarks/time_to_99.py --no-torch          # cnnlab only
    PYTHONPATH=src python benchmarks/time_to_99.py --device cuda --no-torch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnlab import backend, speedrun  # noqa: E402
from cnnlab.backend import manual_seed  # noqa: E402


def torch_net(cfg, torch):
    T = torch.nn
    return T.Sequential(
        T.Conv2d(1, cfg.c1, 5), T.MaxPool2d(2), T.BatchNorm2d(cfg.c1), T.ReLU(),
        T.Conv2d(cfg.c1, cfg.c2, 3), T.MaxPool2d(2), T.BatchNorm2d(cfg.c2), T.ReLU(),
        T.Flatten(), T.Linear(cfg.c2 * 25, cfg.hidden), T.ReLU(), T.Linear(cfg.hidden, 10))


def torch_model_for_seed(cfg, seed, torch):
    """PyTorch's net with the initial weights cnnlab's speedrun draws for ``seed``."""
    manual_seed(seed)
    net = speedrun.speedrun_net(cfg.c1, cfg.c2, cfg.hidden)
    t = torch_net(cfg, torch)
    state = {k: torch.tensor(np.asarray(v.numpy()).copy()) for k, v in net.state_dict().items()}
    t.load_state_dict(state, strict=False)
    return t


def torch_run(cfg, data, seed, torch):
    """The same recipe in PyTorch: returns a SpeedrunResult."""
    tf = torch.nn.functional
    ex, ey = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)
    t0, c0 = time.perf_counter(), time.process_time()
    model = torch_model_for_seed(cfg, seed, torch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.max_lr, total_steps=cfg.steps(), pct_start=cfg.pct_start, div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor, cycle_momentum=False)
    model.train()
    for xb, yb in speedrun.batches(cfg, data, seed):  # the same batches, shifts included
        loss = tf.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb), label_smoothing=cfg.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    t1 = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(ex), cfg.eval_batch):
            correct += int((model(ex[b:b + cfg.eval_batch]).argmax(1) == ey[b:b + cfg.eval_batch]).sum())
    t2 = time.perf_counter()
    return speedrun.SpeedrunResult(seed, t2 - t0, t1 - t0, t2 - t1, correct / len(ex), time.process_time() - c0)


def torch_warm_up(cfg, data, torch):
    t0 = time.perf_counter()
    small = speedrun.SpeedrunConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)},
                                       "train_size": 2 * cfg.batch_size})
    torch_run(small, data, 0, torch)
    return time.perf_counter() - t0


def line(name, r):
    return (f"{name:<7} seed {r.seed}: {r.seconds:6.2f} s (train {r.train_seconds:.2f} s, test {r.eval_seconds:.2f} s, "
            f"CPU {r.cpu_seconds:.2f} s)  test accuracy {100 * r.accuracy:.2f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    ap.add_argument("--device", default="cpu", help="cnnlab's device: cpu or cuda (PyTorch runs on the CPU)")
    ap.add_argument("--no-torch", action="store_true", help="cnnlab only")
    ap.add_argument("--no-cnnlab", action="store_true", help="PyTorch only")
    ap.add_argument("--torch-threads", type=int, default=0, help="PyTorch's intra-op threads (0: its default)")
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--json", default=None, help="also write every result to this file")
    for f in fields(speedrun.SpeedrunConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = ap.parse_args()
    cfg = speedrun.SpeedrunConfig(**{f.name: getattr(args, f.name) for f in fields(speedrun.SpeedrunConfig)})
    seeds = [int(s) for s in args.seeds.split(",")]
    torch = None
    if not args.no_torch:
        import torch  # noqa: PLC0415

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
    print(f"# load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs; "
          f"recipe {cfg}", flush=True)
    data = speedrun.load_data(device=args.device)
    cpu_data = data if args.device == "cpu" else speedrun.load_data()
    compile_s = None if args.no_cnnlab else speedrun.warm_up(cfg, data)
    if compile_s is not None:
        print(f"cnnlab kernel compilation and warm-up (excluded): {compile_s:.2f} s", flush=True)
    if torch is not None:
        print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads) warm-up (excluded): "
              f"{torch_warm_up(cfg, cpu_data, torch):.2f} s", flush=True)
    results = {"cnnlab": [], "torch": []}
    for i, seed in enumerate(seeds):
        order = ["cnnlab", "torch"] if i % 2 == 0 else ["torch", "cnnlab"]
        for name in order:
            if (name == "torch" and torch is None) or (name == "cnnlab" and args.no_cnnlab):
                continue
            r = speedrun.run(cfg, data, seed) if name == "cnnlab" else torch_run(cfg, cpu_data, seed, torch)
            results[name].append(r)
            print(line(name, r), flush=True)
    for name, rs in results.items():
        if not rs:
            continue
        s = speedrun.summary(rs)
        ok = all(r.accuracy >= args.target for r in rs)
        print(f"{name}: median {s['median_seconds']:.2f} s over {s['runs']} seeds (slowest {s['max_seconds']:.2f} s); "
              f"test accuracy median {100 * s['median_accuracy']:.2f}%, lowest {100 * s['min_accuracy']:.2f}% "
              f"({'every seed' if ok else 'NOT every seed'} >= {100 * args.target:.1f}%)")
    if results["torch"] and results["cnnlab"]:
        mc = statistics.median(r.seconds for r in results["cnnlab"])
        mt = statistics.median(r.seconds for r in results["torch"])
        print(f"cnnlab / PyTorch time: {mc / mt:.2f} (PyTorch takes {mt / mc:.2f}x as long)")
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg.__dict__, "compile_seconds": compile_s,
                                               "results": {k: [r.as_dict() for r in v] for k, v in results.items()},
                                               "device": backend.normalize_device(args.device)}, indent=2))


if __name__ == "__main__":
    main()
