"""Operators at shapes outside bench_cpu.py's table, cnnlab against PyTorch, side by side.

bench_cpu.py's per-operator rows are a handful of fixed shapes; a user's network (or a held-out
table) has others. This script runs 37 more, forward + backward, with bench_cpu.py's harness
(the same alternating rounds, pauses and medians): 1-D convolutions, strided, grouped, dilated,
1x1 and small-map 2-D convolutions, depthwise layers of MobileNet's shapes, 3-D convolutions, and
max and average pooling in 1, 2 and 3 dimensions (L2 in 2), global windows included. The ratio is
PyTorch's time / cnnlab's (above 1: cnnlab is faster).

    python benchmarks/bench_shapes.py                     # every shape, 5 rounds each
    python benchmarks/bench_shapes.py --only s2,pool      # the shapes whose name contains one of these
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench_cpu  # noqa: E402
import cnnlab.functional as F  # noqa: E402


def shape_cases():
    """(name, x shape, w shape or None, keywords, cnnlab function, PyTorch function)."""
    tf = torch.nn.functional

    def conv(name, xs, ws, fn=F.conv2d, tfn=tf.conv2d, **kw):
        return (name, xs, ws, kw, fn, tfn)

    def pool(name, xs, fn, tfn, **kw):
        return (name, xs, None, kw, fn, tfn)

    return [
        conv("conv1d 1->16 k7 L1024 b16", (16, 1, 1024), (16, 1, 7), F.conv1d, tf.conv1d),
        conv("conv1d 32->64 k3 p1 L128 b32", (32, 32, 128), (64, 32, 3), F.conv1d, tf.conv1d, padding=1),
        conv("conv1d 64->64 k3 s2 L256 b16", (16, 64, 256), (64, 64, 3), F.conv1d, tf.conv1d, stride=2, padding=1),
        conv("conv1d 16->32 k5 L256 b32", (32, 16, 256), (32, 16, 5), F.conv1d, tf.conv1d),
        conv("conv2d 1->20 k5 28 b64", (64, 1, 28, 28), (20, 1, 5, 5)),
        conv("conv2d 3->32 k3 p1 32 b32", (32, 3, 32, 32), (32, 3, 3, 3), padding=1),
        conv("conv2d 32->32 k3 p1 32 b32", (32, 32, 32, 32), (32, 32, 3, 3), padding=1),
        conv("conv2d 64->128 k3 s2 p1 16 b32", (32, 64, 16, 16), (128, 64, 3, 3), stride=2, padding=1),
        conv("conv2d 128->256 k3 s2 p1 8 b32", (32, 128, 8, 8), (256, 128, 3, 3), stride=2, padding=1),
        conv("conv2d 16->32 k3 s2 p1 56 b16", (16, 16, 56, 56), (32, 16, 3, 3), stride=2, padding=1),
        conv("conv2d 3->64 k7 s2 p3 64 b8", (8, 3, 64, 64), (64, 3, 7, 7), stride=2, padding=3),
        conv("conv2d 3->96 k11 s4 p2 63 b16", (16, 3, 63, 63), (96, 3, 11, 11), stride=4, padding=2),
        conv("conv2d 64->64 k1 28 b16", (16, 64, 28, 28), (64, 64, 1, 1)),
        conv("conv2d 64->128 k1 s2 28 b16", (16, 64, 28, 28), (128, 64, 1, 1), stride=2),
        conv("conv2d 32->64 k3 p1 14 b64", (64, 32, 14, 14), (64, 32, 3, 3), padding=1),
        conv("conv2d 64->64 k3 p2 d2 28 b8", (8, 64, 28, 28), (64, 64, 3, 3), padding=2, dilation=2),
        conv("conv2d 64->64 k3 p1 g8 28 b16", (16, 64, 28, 28), (64, 8, 3, 3), padding=1, groups=8),
        conv("conv2d 32->64 k3 p1 g2 28 b16", (16, 32, 28, 28), (64, 16, 3, 3), padding=1, groups=2),
        conv("conv2d 64->64 k3 s2 p1 g4 28 b16", (16, 64, 28, 28), (64, 16, 3, 3), stride=2, padding=1, groups=4),
        conv("depthwise 128 k3 p1 7 b64", (64, 128, 7, 7), (128, 1, 3, 3), padding=1, groups=128),
        conv("depthwise 96 k3 s2 p1 14 b64", (64, 96, 14, 14), (96, 1, 3, 3), stride=2, padding=1, groups=96),
        conv("depthwise 32 k3 s2 p1 56 b32", (32, 32, 56, 56), (32, 1, 3, 3), stride=2, padding=1, groups=32),
        conv("depthwise 64 k5 p2 14 b32", (32, 64, 14, 14), (64, 1, 5, 5), padding=2, groups=64),
        conv("depthwise 144 k3 p1 28 b16", (16, 144, 28, 28), (144, 1, 3, 3), padding=1, groups=144),
        conv("conv3d 1->8 k3 p1 16^3 b4", (4, 1, 16, 16, 16), (8, 1, 3, 3, 3), F.conv3d, tf.conv3d, padding=1),
        conv("conv3d 8->16 k3 s2 p1 16^3 b4", (4, 8, 16, 16, 16), (16, 8, 3, 3, 3), F.conv3d, tf.conv3d, stride=2,
             padding=1),
        conv("conv3d 16->16 k3 p1 8^3 b8", (8, 16, 8, 8, 8), (16, 16, 3, 3, 3), F.conv3d, tf.conv3d, padding=1),
        pool("max_pool2d 3x3 s2 p1 56 b16", (16, 64, 56, 56), F.max_pool2d, tf.max_pool2d, kernel_size=3, stride=2,
             padding=1),
        pool("max_pool2d 2x2 28 b64 c32", (64, 32, 28, 28), F.max_pool2d, tf.max_pool2d, kernel_size=2),
        pool("avg_pool2d 2x2 28 b64 c32", (64, 32, 28, 28), F.avg_pool2d, tf.avg_pool2d, kernel_size=2),
        pool("avg_pool2d 3x3 s1 p1 14 b32", (32, 64, 14, 14), F.avg_pool2d, tf.avg_pool2d, kernel_size=3, stride=1,
             padding=1),
        pool("avg_pool2d 7x7 global b64 c256", (64, 256, 7, 7), F.avg_pool2d, tf.avg_pool2d, kernel_size=7),
        pool("lp_pool2d 3x3 s2 56 b16", (16, 32, 56, 56), F.lp_pool2d, tf.lp_pool2d, norm_type=2, kernel_size=3,
             stride=2),
        pool("max_pool1d 3 s2 L512 b16", (16, 32, 512), F.max_pool1d, tf.max_pool1d, kernel_size=3, stride=2),
        pool("avg_pool1d 4 L512 b16", (16, 32, 512), F.avg_pool1d, tf.avg_pool1d, kernel_size=4),
        pool("max_pool3d 2 16^3 b4", (4, 8, 16, 16, 16), F.max_pool3d, tf.max_pool3d, kernel_size=2),
        pool("avg_pool3d 2 16^3 b4", (4, 8, 16, 16, 16), F.avg_pool3d, tf.avg_pool3d, kernel_size=2),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma list: shapes whose name contains one of these")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    keys = args.only.split(",") if args.only else None
    cases = [c for c in shape_cases() if keys is None or any(k in c[0] for k in keys)]
    if not cases:
        sys.exit(f"no shape's name contains any of {args.only!r}")
    bench_cpu.operator_cases = lambda: cases
    print(f"# cnnlab vs PyTorch {torch.__version__}, forward + backward, medians of {args.rounds} alternating rounds")
    for r in bench_cpu.operator_times(args.rounds):
        print(f"{r['what'][3:]:36s} cnnlab {r['cnnlab']:8.3f}  torch {r['torch']:8.3f}  ms   "
              f"torch time / cnnlab time {r['ratio']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
