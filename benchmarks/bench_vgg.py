"""The zoo's VGG-style net (vgg_small: best-vgg, fashion-best) against PyTorch, side by side in one
process, alternating, medians; and what each of its two CPU speed-ups brings:

1. batch norm + ReLU as one compiled operator (F.batch_norm_relu) against the separate operators
   (BatchNormTrain then ReLU) and PyTorch's batch_norm + relu, forward + backward, on the net's
   activations at batch 64;
2. its 3x3 convolutions by the indirect GEMM (kernels/igemm.py, the float32 default where the CPU
   has AVX-512) against Winograd F(2x2, 3x3), Winograd with the weight gradient by im2col, the
   channels-last im2col path and PyTorch, forward + backward (input and weight gradients);
3. a whole training step at batch 64: everything on, the indirect GEMM off (Winograd), Winograd
   off too, the BN+ReLU fusion off, and PyTorch's step of the same net from the same weights.

    python benchmarks/bench_vgg.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
import cnnlab.functional as F  # noqa: E402
from cnnlab import kernels, nn  # noqa: E402
from cnnlab.nn.fuse import PATTERNS  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("this benchmark compares with PyTorch: pip install 'cnnlab[test]' (torch==2.13.0)")

from bench_cpu import batches, cnn_trainer, make_pair, torch_trainer  # noqa: E402
from bench_linear import alternate  # noqa: E402


@contextlib.contextmanager
def paths(igemm=True, winograd=True, dw=None):
    """The convolution paths allowed: the indirect GEMM, Winograd (and its weight gradient)."""
    with kernels.allow_igemm(igemm), kernels.allow_winograd(winograd, dw):
        yield


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


def layers(rounds):
    print("3x3 convolution (padding 1), forward + backward, ms per call (median); ratio = other's time / igemm's")
    print("(igemm: the indirect GEMM; the others with it off. dW im2col: Winograd for the output and the input "
          "gradient only)")
    print(f"{'layer (batch 64)':<22} {'igemm':>8} {'winograd':>9} {'dW im2col':>10} {'im2col':>8} {'torch':>8} "
          f"{'vs winograd':>12} {'vs im2col':>10} {'vs torch':>9}")
    rng = np.random.default_rng(0)
    for c, f, h in [(32, 32, 28), (32, 64, 14), (64, 64, 14)]:
        x = rng.standard_normal((64, c, h, h)).astype(np.float32)
        w = (0.1 * rng.standard_normal((f, c, 3, 3))).astype(np.float32)
        g = rng.standard_normal((64, f, h, h)).astype(np.float32)

        def ours(**allowed):
            def run():
                xt, wt = cnnlab.tensor(x, requires_grad=True), cnnlab.tensor(w, requires_grad=True)
                with paths(**allowed):
                    F.conv2d(xt, wt, None, 1, 1).backward(cnnlab.tensor(g))
            return run

        tx, tw, tg = torch.tensor(x), torch.tensor(w), torch.tensor(g)

        def theirs():
            a, b = tx.clone().requires_grad_(), tw.clone().requires_grad_()
            torch.nn.functional.conv2d(a, b, None, 1, 1).backward(tg)

        t = alternate({"igemm": ours(), "winograd": ours(igemm=False), "dw": ours(igemm=False, dw=False),
                       "im2col": ours(igemm=False, winograd=False), "torch": theirs}, rounds, 3)
        print(f"{f'{c}->{f} {h}x{h}':<22} {1e3 * t['igemm']:8.2f} {1e3 * t['winograd']:9.2f} {1e3 * t['dw']:10.2f} "
              f"{1e3 * t['im2col']:8.2f} {1e3 * t['torch']:8.2f} {t['winograd'] / t['igemm']:12.2f} "
              f"{t['im2col'] / t['igemm']:10.2f} {t['torch'] / t['igemm']:9.2f}")


def training_step(rounds, batch=64, steps=4):
    c, t = make_pair("vgg")
    data = batches(batch, steps)
    # nn.fuse with every pattern, and without the batch norm + ReLU row
    no_bn_relu = [p for p in PATTERNS if p.module is not nn.BatchNormReLU]
    cs, cs_separate, ts = cnn_trainer(c), cnn_trainer(c, patterns=no_bn_relu), torch_trainer(t)

    def run(step, **allowed):
        def go():
            with paths(**allowed):
                for x, y in data:
                    step(x, y)
        return go

    times = alternate({"all on": run(cs), "no igemm": run(cs, igemm=False),
                       "no igemm, no winograd": run(cs, igemm=False, winograd=False),
                       "no fusion": run(cs_separate), "none": run(cs_separate, igemm=False, winograd=False),
                       "torch": run(ts)}, rounds, 1)
    ms = {k: 1e3 * v / steps for k, v in times.items()}
    print(f"\nvgg_small training step, batch {batch}, ms (median of {rounds} rounds of {steps} steps)")
    for k in ("all on", "no igemm", "no igemm, no winograd", "no fusion", "none"):
        print(f"  cnnlab, {k + ':':<22} {ms[k]:7.1f}   ({ms[k] / ms['all on']:.2f}x the time with all on)")
    print(f"  PyTorch:                       {ms['torch']:7.1f}   cnnlab (all on) / PyTorch speed: "
          f"{ms['torch'] / ms['all on']:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cnnlab workers {kernels.policy.WORKERS}")
    operator(args.rounds)
    print()
    layers(args.rounds)
    training_step(args.rounds)


if __name__ == "__main__":
    main()
