"""Time to 99.0% MNIST test accuracy from a cold start of training, data already on the device.

Kernel compilation is excluded and reported separately: one throw-away step on a copy of the
model runs first. Then the default model trains (batch 128, SGD Nesterov, one-cycle over
--epochs), and the test accuracy is measured after every epoch; the clock stops at the first
epoch that reaches the target (evaluation time included).

    PYTHONPATH=src python benchmarks/time_to_99.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cnnlab  # noqa: E402
import cnnlab.functional as F  # noqa: E402
from cnnlab import backend, models, nn, optim  # noqa: E402
from cnnlab.data import DeviceLoader, load_dataset  # noqa: E402
from cnnlab.train import evaluate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--target", type=float, default=0.99)
    args = ap.parse_args()
    split = load_dataset("mnist")
    train_x, train_y = split.train
    loader = DeviceLoader(train_x, train_y, args.batch_size, seed=0, max_shift=1, device=args.device)
    xp = backend.xp_for(args.device)

    def sync():
        if args.device != "cpu":
            xp.cuda.Device().synchronize()

    t0 = time.perf_counter()
    # compile every kernel once, on a throw-away model; nn.fuse: the fused blocks (on a GPU they run
    # their layers one by one)
    warm = nn.fuse(models.build("default").to(args.device))
    x, y = next(iter(loader))
    F.cross_entropy(warm(cnnlab.Tensor(x)), y).backward()
    evaluate(warm, split.test[0][:1000], split.test[1][:1000], device=args.device)
    sync()
    compile_s = time.perf_counter() - t0

    cnnlab.manual_seed(0)
    model = models.build("default").to(args.device)
    run = nn.fuse(model)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = optim.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(loader))
    loader.set_epoch(0)
    t0 = time.perf_counter()
    reached = None
    for epoch in range(1, args.epochs + 1):
        run.train()
        for x, y in loader:
            loss = F.cross_entropy(run(cnnlab.Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(run, *split.test, device=args.device)["accuracy"]
        sync()
        elapsed = time.perf_counter() - t0
        print(f"epoch {epoch}: test accuracy {100 * acc:.2f}% at {elapsed:.2f} s", flush=True)
        if acc >= args.target and reached is None:
            reached = elapsed
            break
    print(f"compilation (excluded): {compile_s:.1f} s")
    print(f"time to {100 * args.target:.1f}% test accuracy: " + (f"{reached:.2f} s" if reached else "not reached"))


if __name__ == "__main__":
    main()
