"""Batch norm + ReLU as one compiled operator (F.batch_norm_relu) against the separate operators
and PyTorch, side by side in one process, alternating, medians:

1. forward + backward of batch norm (batch statistics) and ReLU on the activations of the zoo's
   vgg_small (best-vgg, fashion-best) at batch 64: cnnlab fused, cnnlab separate (BatchNormTrain
   then ReLU, as before the fusion), and PyTorch's batch_norm + relu;
2. a whole vgg_small training step at batch 64 with Sequential's [BatchNorm, ReLU] fusion on and
   off, and PyTorch's step of the same net from the same weights.

    python benchmarks/bench_bn_relu.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
import cnnlab.functional as F  # noqa: E402
from cnnlab import nn  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("this benchmark compares with PyTorch: pip install 'cnnlab[test]' (torch==2.13.0)")

from bench_cpu import batches, cnn_trainer, make_pair, torch_trainer  # noqa: E402
from bench_linear import alternate  # noqa: E402


def separate(x, w, b):
    return F.relu(F.batch_norm(x, None, None, w, b, training=True))


def fused(x, w, b):
    return F.batch_norm_relu(x, None, None, w, b, training=True)


def operator(rounds):
    print("batch norm + ReLU, forward + backward, ms per call (median); ratio = other's time / fused time")
    print(f"{'activations':<18} {'fused':>8} {'separate':>9} {'torch':>8} {'vs separate':>12} {'vs torch':>9}")
    rng = np.random.default_rng(0)
    for shape in [(64, 32, 28, 28), (64, 32, 14, 14), (64, 64, 14, 14), (64, 64, 7, 7)]:
        C = shape[1]
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)

        def ours(fn):
            def run():
                ts = [cnnlab.tensor(a, requires_grad=True) for a in (x, w, b)]
                fn(*ts).backward(cnnlab.tensor(g))
            return run

        tt = [torch.tensor(a) for a in (x, w, b)]
        tg = torch.tensor(g)

        def theirs():
            ts = [a.clone().requires_grad_() for a in tt]
            torch.relu(torch.nn.functional.batch_norm(ts[0], None, None, ts[1], ts[2], training=True)).backward(tg)

        t = alternate({"fused": ours(fused), "separate": ours(separate), "torch": theirs}, rounds, 10)
        print(f"{'x'.join(map(str, shape)):<18} {1e3 * t['fused']:8.2f} {1e3 * t['separate']:9.2f} "
              f"{1e3 * t['torch']:8.2f} {t['separate'] / t['fused']:12.2f} {t['torch'] / t['fused']:9.2f}")


def training_step(rounds, batch=64, steps=4):
    c, t = make_pair("vgg")
    data = batches(batch, steps)
    cs, ts = cnn_trainer(c), torch_trainer(t)

    def run(step, fuse=True):
        def go():
            nn.BatchNorm2d.relu_fusable = fuse
            try:
                for x, y in data:
                    step(x, y)
            finally:
                nn.BatchNorm2d.relu_fusable = True
        return go

    times = alternate({"fused": run(cs), "separate": run(cs, False), "torch": run(ts)}, rounds, 1)
    ms = {k: 1e3 * v / steps for k, v in times.items()}
    print(f"\nvgg_small training step, batch {batch}, ms (median of {rounds} rounds of {steps} steps)")
    print(f"  cnnlab, BN+ReLU fused:    {ms['fused']:7.1f}")
    print(f"  cnnlab, separate:         {ms['separate']:7.1f}   fused is {ms['separate'] / ms['fused']:.2f}x faster")
    print(f"  PyTorch:                  {ms['torch']:7.1f}   cnnlab (fused) / PyTorch speed: "
          f"{ms['torch'] / ms['fused']:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cnnlab workers "
          f"{cnnlab.kernels.WORKERS}")
    operator(args.rounds)
    training_step(args.rounds)


if __name__ == "__main__":
    main()
