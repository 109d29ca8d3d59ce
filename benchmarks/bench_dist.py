"""Data-parallel training speed on this machine, and a model on paper for scaling out.

    python benchmarks/bench_dist.py                 # measure, then print the paper model
    python benchmarks/bench_dist.py --paper-only    # the paper model with compute times measured now

Measured (the "default" recipe's net, float32, MNIST batches with its 2-px augmentation, SGD with
momentum; warm-up steps first, then images/s over whole steps, loader included):
  1 process, 1 core (kernels.set_workers(1))   the baseline
  1 process, all cores                         what one process gets from the machine
  2 processes (mpiexec -n 2), 1 core each      the same global batch split in two, gradients
                                               allreduced; also the seconds per step spent in the
                                               gradient allreduce and in all collectives (that
                                               includes synchronised batch norm's)
Paper model: the bytes one step allreduces for every net of the zoo (float32 gradients, plus
batch norm's float64 statistics), a ring allreduce's time at 10, 25 and 100 Gb/s, and the
efficiency compute / (compute + communication) at 8, 64 and 256 processes with 64 images per
process (weak scaling), the compute measured here on one core. Assumptions are printed with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from cnnlab import Tensor, backend, distributed, kernels, models, optim, runs  # noqa: E402
from cnnlab import functional as F  # noqa: E402
from cnnlab.data import Augment, DataLoader, load_dataset  # noqa: E402


def measure(world, batch: int, steps: int, warmup: int, repeats: int = 3, model_name: str = "fast") -> dict:
    """Images/s of training steps at global batch ``batch`` on this process's world: the best of
    ``repeats`` runs of ``steps`` steps (a machine shared with other jobs slows some runs down)."""
    split = load_dataset("mnist", validation=0)
    x, y = split.train
    backend.manual_seed(0)
    model = models.build(models.spec(model_name))
    parallel = distributed.DataParallel(model, world) if world.size > 1 else None
    net = runs.runnable(model)  # fused, as `cnnlab train` runs it (after DataParallel: batch norm synchronised)
    collective = [0.0, 0.0]  # wall and CPU seconds inside collectives
    if parallel is not None:  # time every collective, batch norm's included
        real = world.allreduce

        def timed(array, what="allreduce"):
            t0, c0 = time.perf_counter(), time.process_time()
            out = real(array, what)
            collective[0] += time.perf_counter() - t0
            collective[1] += time.process_time() - c0
            return out

        world.allreduce = timed
    loader = DataLoader(x, y, batch, seed=0, augment=Augment(max_shift=2),
                        shard=(world.rank, world.size) if parallel else None)
    batches = iter(parallel.loader(loader) if parallel else loader)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def step():
        nonlocal batches
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(parallel.loader(loader) if parallel else loader)
            xb, yb = next(batches)
        logits = net(Tensor(xb))
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        if parallel is None:
            loss.backward()
        else:
            parallel.backward(loss, logits, yb)
        opt.step()

    for _ in range(warmup):
        step()
    best = None
    for _ in range(repeats):
        if parallel is not None:
            world.barrier()
            parallel.comm_seconds, parallel.steps, collective[:] = 0.0, 0, [0.0, 0.0]
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        cpu = time.process_time() - c0
        if parallel is not None:
            world.barrier()
        seconds = time.perf_counter() - t0
        run = {"images_per_second": steps * batch / seconds, "step_seconds": seconds / steps,
               "cpu_seconds_per_step": (cpu - collective[1]) / steps}  # computing, not waiting
        if parallel is not None:
            run["allreduce_seconds_per_step"] = parallel.comm_seconds / steps
            run["collective_seconds_per_step"] = collective[0] / steps
        if best is None or run["images_per_second"] > best["images_per_second"]:
            best = run
    return best


def pure_allreduce(world, nbytes: int, repeats: int = 30) -> float:
    """The fastest of ``repeats`` back-to-back allreduces of ``nbytes`` (float32) between processes
    that are already in step: the transfer itself, without waiting for a slower process."""
    a = np.ones(max(1, nbytes // 4), np.float32)
    best = float("inf")
    for _ in range(repeats):
        world.barrier()
        t0 = time.perf_counter()
        world.allreduce(a)
        best = min(best, time.perf_counter() - t0)
    return best


def worker(args) -> None:
    """One rank of the 2-process measurement (started by mpiexec); rank 0 prints JSON."""
    world = distributed.init(timeout=600)
    kernels.set_workers(1)
    results = {}
    grads, bn = allreduce_bytes(models.build(models.spec("fast")))
    results["pure"] = {"gradients": pure_allreduce(world, grads), "small": pure_allreduce(world, 16 * 64),
                       "collectives_per_step": 1 + 3 * bn}
    for batch in args.batches:
        results[batch] = measure(world, batch, args.steps, args.warmup, args.repeats)
    if world.rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


def step_seconds(model_name: str, batch: int = 64, steps: int = 3) -> float:
    """One core's CPU seconds for a training step of ``batch`` images of ``model_name``: the least
    of ``steps`` steps after a warm-up (CPU time, so other jobs on the machine count little)."""
    kernels.set_workers(1)
    model = runs.runnable(models.build(models.spec(model_name)))
    x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, batch)
    opt = optim.SGD(model.parameters(), lr=0.01)
    best = float("inf")
    for i in range(steps + 1):
        c0 = time.process_time()
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            best = min(best, time.process_time() - c0)
    return best


def allreduce_bytes(model) -> tuple[int, int]:
    """(bytes of the gradient buffer, number of batch norm layers) of one step."""
    grads = sum(p.size for p in model.parameters()) * 4 + 3 * 4  # float32 gradients + loss, hits, images
    bns = [m for m in model.modules() if type(m).__name__ in ("BatchNorm1d", "BatchNorm2d")]
    return grads, len(bns)


def ring_seconds(nbytes: float, n: int, gbit: float, latency: float) -> float:
    """A ring allreduce: 2 (n-1) steps, each moving nbytes / n over each link, plus a latency each."""
    return 2 * (n - 1) * (latency + nbytes / n / (gbit * 1e9 / 8))


def small_seconds(nbytes: float, n: int, gbit: float, latency: float) -> float:
    """A small allreduce (recursive doubling): log2(n) rounds of the whole message."""
    return math.ceil(math.log2(n)) * (latency + nbytes / (gbit * 1e9 / 8))


def paper(latency: float = 10e-6, batch: int = 64) -> None:
    print(f"\nPaper model: weak scaling, {batch} images per process, float32 gradients in one buffer allreduced "
          f"after the backward pass (no overlap),\nring allreduce 2(N-1)/N x bytes per link with {latency * 1e6:g} us "
          f"per message step, synchronised batch norm: 3 small allreduces per layer and step\n(2 x C and 2C float64, "
          f"recursive doubling), compute = one core of this machine per process, measured now; full-duplex links,\n"
          f"one process per machine (or per GPU/socket with its own link), no stragglers, loader cost in compute.")
    print(f"{'net':<16}{'params':>11}{'MB/step':>9}{'compute':>10}   " + "   ".join(
        f"{g:>3g} Gb/s: ring ms at 64 | eff 8/64/256" for g in (10, 25, 100)))
    for name in models.MODELS:
        model = models.build(models.spec(name))
        nbytes, bn = allreduce_bytes(model)
        try:
            compute = step_seconds(name, batch)
        except Exception as exc:  # noqa: BLE001 - a net that does not take 28x28 input is skipped
            print(f"{name:<16} skipped: {exc}")
            continue
        cells = []
        for g in (10, 25, 100):
            effs = []
            for n in (8, 64, 256):
                comm = ring_seconds(nbytes, n, g, latency) + 3 * bn * small_seconds(16 * 64, n, g, latency)
                effs.append(compute / (compute + comm))
            cells.append(f"{1e3 * ring_seconds(nbytes, 64, g, latency):>7.2f} | "
                         + " / ".join(f"{100 * e:.0f}%" for e in effs))
        print(f"{name:<16}{model.num_parameters():>11,}{nbytes / 1e6:>9.2f}{1e3 * compute:>7.1f}ms   " + "   ".join(
            f"{c:>33}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="runs of STEPS steps; the best counts")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--paper-only", action="store_true")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if not args.paper_only:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; "
              f"net 'default' (fast), float32, best of {args.repeats} runs of {args.steps} steps after {args.warmup} "
              f"warm-up")
        world = distributed.local()
        rows = {}
        for batch in args.batches:
            kernels.set_workers(1)
            one = measure(world, batch, args.steps, args.warmup, args.repeats)
            kernels.set_workers(os.cpu_count() or 1)
            both = measure(world, batch, args.steps, args.warmup, args.repeats)
            rows[batch] = (one, both)
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        command = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
                  "--repeats", str(args.repeats), "--batches", *map(str, args.batches)]
        proc = subprocess.run([mpiexec, "-n", "2", *command], capture_output=True, text=True, env=env, timeout=1800)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.exit(f"the 2-process run failed:\n{proc.stdout}\n{proc.stderr}")
        two = json.loads(line[0][7:])
        pure = two.pop("pure")
        two = {int(k): v for k, v in two.items()}
        print(f"{'batch':>6}{'1 proc 1 core':>15}{'1 proc all cores':>18}{'2 procs 1 core each':>21}"
              f"{'2 procs / 1 core':>18}{'grad allreduce':>16}{'all collectives':>17}")
        for batch in args.batches:
            one, both = rows[batch]
            t = two[batch]
            print(f"{batch:>6}{one['images_per_second']:>11.0f} i/s{both['images_per_second']:>14.0f} i/s"
                  f"{t['images_per_second']:>17.0f} i/s{t['images_per_second'] / one['images_per_second']:>17.2f}x"
                  f"{1e3 * t['allreduce_seconds_per_step']:>10.2f} ms/st"
                  f"{1e3 * t['collective_seconds_per_step']:>11.2f} ms/st"
                  f" ({100 * t['collective_seconds_per_step'] / t['step_seconds']:.0f}% of a step)")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        comm = pure["gradients"] + (pure["collectives_per_step"] - 1) * pure["small"]
        megabytes = allreduce_bytes(models.build(models.spec("fast")))[0] / 1e6
        print(f"\nIn step, the 2 processes' allreduce of the {megabytes:.2f} MB "
              f"gradient buffer takes {1e3 * pure['gradients']:.2f} ms, a batch-norm one {1e6 * pure['small']:.0f} us "
              f"({pure['collectives_per_step']} collectives a step: {1e3 * comm:.2f} ms).")
        print("CPU seconds per step (robust to the other jobs' load): one process on one core at batch B, and a "
              "process of the two at B/2;\nprojected 2-process speed-up on an idle machine = "
              "cpu(1 proc, B) / (cpu(rank, B/2) + the in-step collectives)")
        for batch in args.batches:
            one, t = rows[batch][0], two[batch]
            projected = one["cpu_seconds_per_step"] / (t["cpu_seconds_per_step"] + comm)
            print(f"{batch:>6}  1 proc {1e3 * one['cpu_seconds_per_step']:.1f} ms   rank "
                  f"{1e3 * t['cpu_seconds_per_step']:.1f} ms (outside collectives)   projected {projected:.2f}x")
    paper()


if __name__ == "__main__":
    main()
