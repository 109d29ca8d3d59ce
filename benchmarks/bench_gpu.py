"""cnnlab (CuPy) against PyTorch eager on the same NVIDIA GPU, side by side in one process.

Nielsen's two-conv ReLU net, identical initial weights, the same batches resident on the GPU,
forward + backward + SGD-momentum step, float32; the two alternate over several rounds and the
medians are compared (ratio above 1: cnnlab is faster). Run from the source tree on a GPU machine:

    PYTHONPATH=src python benchmarks/bench_gpu.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cupy as cp  # noqa: E402
import torch  # noqa: E402

import cnnlab  # noqa: E402
import cnnlab.functional as F  # noqa: E402
from bench_cpu import make_pair  # noqa: E402
from cnnlab import optim  # noqa: E402


def run(batch, steps, rounds):
    c, t = make_pair("nielsen")
    c.to("cuda")
    t.cuda()
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((steps, batch, 1, 28, 28)).astype(np.float32)
    ys = rng.integers(0, 10, (steps, batch))
    cx, cy = cp.asarray(xs), cp.asarray(ys)
    tx, ty = torch.tensor(xs, device="cuda"), torch.tensor(ys, device="cuda")
    copt = optim.SGD(c.parameters(), lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(t.parameters(), lr=0.01, momentum=0.9)

    def cnn_pass():
        for i in range(steps):
            loss = F.cross_entropy(c(cnnlab.Tensor(cx[i])), cy[i])
            copt.zero_grad()
            loss.backward()
            copt.step()
        cp.cuda.Device().synchronize()

    def torch_pass():
        for i in range(steps):
            loss = torch.nn.functional.cross_entropy(t(tx[i]), ty[i])
            topt.zero_grad()
            loss.backward()
            topt.step()
        torch.cuda.synchronize()

    cnn_pass(), torch_pass()  # warm-up: kernel compilation and allocator pools
    tc, tt = [], []
    for r in range(rounds):
        for fn, acc in ([(cnn_pass, tc), (torch_pass, tt)] if r % 2 == 0 else [(torch_pass, tt), (cnn_pass, tc)]):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    n = batch * steps
    sc, st = statistics.median(tc), statistics.median(tt)
    return {"batch": batch, "cnnlab_img_s": n / sc, "torch_img_s": n / st, "ratio": st / sc}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"# cnnlab (CuPy {cp.__version__}) vs PyTorch {torch.__version__} eager on {torch.cuda.get_device_name()}")
    rows = []
    for batch, steps in ((64, 50), (256, 40), (1024, 20)):
        r = run(batch, steps, args.rounds)
        rows.append(r)
        print(f"train nielsen b{batch:<5} cnnlab {r['cnnlab_img_s']:>10.0f} img/s  torch {r['torch_img_s']:>10.0f} img/s"
              f"  cnnlab/torch {r['ratio']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
