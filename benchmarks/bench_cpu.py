"""cnnlab against PyTorch on the CPU, side by side in one process.

Both frameworks get the same network with identical initial weights and the same batches. Each
measurement alternates the two for several rounds and reports medians; the ratio is
cnnlab throughput / PyTorch throughput (above 1: cnnlab is faster).

    python benchmarks/bench_cpu.py                 # everything, a table
    python benchmarks/bench_cpu.py --quick         # fewer rounds
    python benchmarks/bench_cpu.py --json out.json # also write the numbers as JSON

Memory is the peak resident set size of a child process that runs 30 training steps at batch 256
of one framework, less the same process's size just before them (imports, data and a warm-up step on
2 images included in neither).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cnnlab  # noqa: E402
import cnnlab.functional as F  # noqa: E402
from cnnlab import nn, optim  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("this benchmark compares with PyTorch: pip install 'cnnlab[test]' (torch==2.13.0)")


# ------------------------------------------------------------------------------ the networks
def nielsen_pair():
    c = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 40, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10))
    t = torch.nn.Sequential(torch.nn.Conv2d(1, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                            torch.nn.Conv2d(20, 40, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                            torch.nn.Linear(640, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    return c, t


def article_pair():
    c = nn.Sequential(nn.Conv2d(1, 3, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(432, 10))
    t = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(432, 10))
    return c, t


def lenet_pair():
    c = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                      nn.Linear(84, 10))
    t = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.Tanh(), torch.nn.AvgPool2d(2),
                            torch.nn.Conv2d(6, 16, 5), torch.nn.Tanh(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                            torch.nn.Linear(400, 120), torch.nn.Tanh(), torch.nn.Linear(120, 84), torch.nn.Tanh(),
                            torch.nn.Linear(84, 10))
    return c, t


def vgg_pair():
    """The zoo's vgg_small (best-vgg, fashion-best): 3x3 convolutions, batch norm, two pools, dropout."""
    from cnnlab.models import vgg_small  # noqa: PLC0415

    c = vgg_small()
    T = torch.nn
    t = T.Sequential(
        T.Conv2d(1, 32, 3, padding=1, bias=False), T.BatchNorm2d(32), T.ReLU(),
        T.Conv2d(32, 32, 3, padding=1, bias=False), T.MaxPool2d(2), T.BatchNorm2d(32), T.ReLU(),
        T.Conv2d(32, 64, 3, padding=1, bias=False), T.BatchNorm2d(64), T.ReLU(),
        T.Conv2d(64, 64, 3, padding=1, bias=False), T.MaxPool2d(2), T.BatchNorm2d(64), T.ReLU(),
        T.Flatten(), T.Dropout(0.3), T.Linear(64 * 7 * 7, 256), T.ReLU(), T.Dropout(0.3), T.Linear(256, 10))
    return c, t


def alexnet_pair():
    """The zoo's AlexNet-style net: five convolutions with local response norm and overlapping pools."""
    from cnnlab.models import alexnet  # noqa: PLC0415

    c = alexnet()
    T = torch.nn
    t = T.Sequential(
        T.Conv2d(1, 32, 5, padding=2), T.ReLU(), T.LocalResponseNorm(5, 1e-4, 0.75, 2.0), T.MaxPool2d(3, 2),
        T.Conv2d(32, 64, 5, padding=2), T.ReLU(), T.LocalResponseNorm(5, 1e-4, 0.75, 2.0), T.MaxPool2d(3, 2),
        T.Conv2d(64, 128, 3, padding=1), T.ReLU(),
        T.Conv2d(128, 128, 3, padding=1), T.ReLU(),
        T.Conv2d(128, 128, 3, padding=1), T.MaxPool2d(3, 2), T.ReLU(),
        T.Flatten(), T.Dropout(0.5), T.Linear(512, 1024), T.ReLU(), T.Dropout(0.5), T.Linear(1024, 1024), T.ReLU(),
        T.Linear(1024, 10))
    return c, t


NETS = {"nielsen": nielsen_pair, "article": article_pair, "lenet5": lenet_pair, "vgg": vgg_pair,
        "alexnet": alexnet_pair}


def make_pair(name, seed=0):
    """The same architecture in both frameworks, PyTorch given cnnlab's initial weights."""
    cnnlab.manual_seed(seed)
    c, t = NETS[name]()
    t.load_state_dict({k: torch.tensor(v.numpy().copy()) for k, v in c.state_dict().items()})
    return c, t


def batches(batch, count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch))
            for _ in range(count)]


# ------------------------------------------------------------------------------ steps
def cnn_trainer(model, lr=0.01, patterns=None):
    """One SGD step of ``nn.fuse(model)`` (the fused blocks: what cnnlab trains with on the CPU); the
    fused model shares the model's parameters. ``patterns``: nn.fuse's, all by default."""
    run = nn.fuse(model, patterns)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step(x, y):
        loss = F.cross_entropy(run(cnnlab.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def torch_trainer(model, lr=0.01):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def timed(fn, data):
    t = time.perf_counter()
    for x, y in data:
        fn(x, y)
    return time.perf_counter() - t


# Seconds between one framework's pass and the other's: after its last call each framework's
# threads keep spinning (PyTorch's OpenMP threads 6-9 ms of CPU, cnnlab's helpers 2 ms), and a
# pass started at once shared the cores with them: cnnlab's first 8 steps of a depthwise layer
# 1.57-2.04 ms against 1.29-1.43 without PyTorch before it, 1.23-1.32 from the third step 20 ms
# after (benchmarks/README.md, "Helpers that spin before they sleep").
SETTLE_SECONDS = 0.03


def side_by_side(cnn_fn, torch_fn, data, rounds, warmup=2, settle=SETTLE_SECONDS):
    """Alternate the two frameworks over ``rounds``; median seconds for one pass over ``data``.

    Each pass waits ``settle`` seconds for the other framework's threads to go idle, then makes
    two untimed calls of its own: on this virtual machine an idle core takes milliseconds to come
    back, and the first calls after a pause paid for it, whichever framework it was
    (benchmarks/README.md, "Indirect GEMM")."""
    for x, y in data[:warmup]:
        cnn_fn(x, y)
        torch_fn(x, y)
    tc, tt = [], []
    for r in range(rounds):
        order = [(cnn_fn, tc), (torch_fn, tt)] if r % 2 == 0 else [(torch_fn, tt), (cnn_fn, tc)]
        for fn, acc in order:
            time.sleep(settle)
            fn(*data[0])
            fn(*data[0])
            acc.append(timed(fn, data))
    return statistics.median(tc), statistics.median(tt)


def training_throughput(name, batch, rounds, steps):
    c, t = make_pair(name)
    data = batches(batch, steps)
    sc, st = side_by_side(cnn_trainer(c), torch_trainer(t), data, rounds)
    n = batch * steps
    return {"what": f"train {name} b{batch}", "cnnlab": n / sc, "torch": n / st, "unit": "img/s", "ratio": st / sc}


def inference_throughput(name, batch, rounds, steps):
    c, t = make_pair(name)
    c.eval()
    t.eval()
    fc = nn.fuse(c)
    data = batches(batch, steps)

    def cf(x, y):
        with cnnlab.no_grad():
            return fc(cnnlab.Tensor(x)).data.argmax(1)

    def tf(x, y):
        with torch.no_grad():
            return t(torch.from_numpy(x)).argmax(1)

    sc, st = side_by_side(cf, tf, data, rounds, warmup=1)
    n = batch * steps
    return {"what": f"infer {name} b{batch}", "cnnlab": n / sc, "torch": n / st, "unit": "img/s", "ratio": st / sc}


def loss_agreement(steps=20, batch=64):
    """The first 20 training losses of both frameworks from the same weights and batches."""
    c, t = make_pair("nielsen")
    cs, ts = cnn_trainer(c), torch_trainer(t)
    rows = [(cs(x, y), ts(x, y)) for x, y in batches(batch, steps, seed=1)]
    worst = max(abs(a - b) / abs(b) for a, b in rows)
    return {"steps": steps, "max_relative_difference": worst, "losses": rows}


# ------------------------------------------------------------------------------ operators
def operator_cases():
    tf = torch.nn.functional
    return [
        ("conv1d 16->32 k5 L256", (8, 16, 256), (32, 16, 5), {}, F.conv1d, tf.conv1d),
        ("conv2d 20->40 k5 12x12", (64, 20, 12, 12), (40, 20, 5, 5), {}, F.conv2d, tf.conv2d),
        ("conv2d 32->64 k3 s2 p1 28x28", (32, 32, 28, 28), (64, 32, 3, 3), {"stride": 2, "padding": 1}, F.conv2d, tf.conv2d),
        ("conv2d 32->32 k3 p1 g4 28x28", (32, 32, 28, 28), (32, 8, 3, 3), {"padding": 1, "groups": 4}, F.conv2d, tf.conv2d),
        ("conv3d 4->8 k3 16^3", (4, 4, 16, 16, 16), (8, 4, 3, 3, 3), {}, F.conv3d, tf.conv3d),
        ("depthwise 32 k3 p1 28x28", (32, 32, 28, 28), (32, 1, 3, 3), {"padding": 1, "groups": 32}, F.conv2d,
         tf.conv2d),
        ("depthwise 64 k3 s2 p1 28x28", (32, 64, 28, 28), (64, 1, 3, 3), {"stride": 2, "padding": 1, "groups": 64},
         F.conv2d, tf.conv2d),
        ("max_pool2d 2x2 24x24", (64, 20, 24, 24), None, {"kernel_size": 2}, F.max_pool2d, tf.max_pool2d),
        ("avg_pool2d 2x2 24x24", (64, 20, 24, 24), None, {"kernel_size": 2}, F.avg_pool2d, tf.avg_pool2d),
        ("lp_pool2d (L2) 2x2 24x24", (64, 20, 24, 24), None, {"norm_type": 2, "kernel_size": 2},
         F.lp_pool2d, tf.lp_pool2d),
        ("avg_pool2d 3x3 s2 28x28", (64, 20, 28, 28), None, {"kernel_size": 3, "stride": 2}, F.avg_pool2d,
         tf.avg_pool2d),
        ("lp_pool2d (L2) 3x3 s2 28x28", (64, 20, 28, 28), None, {"norm_type": 2, "kernel_size": 3, "stride": 2},
         F.lp_pool2d, tf.lp_pool2d),
        ("local_response_norm 5 32x28x28", (64, 32, 28, 28), None, {"size": 5, "k": 2.0},
         F.local_response_norm, tf.local_response_norm),
    ]


def operator_times(rounds, reps=5):
    rows = []
    rng = np.random.default_rng(0)
    for name, xs, ws, kw, cf, tf in operator_cases():
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32) * 0.1 if ws else None

        def run_c(_x=x, _w=w, _cf=cf, _kw=kw):
            xt = cnnlab.tensor(_x, requires_grad=True)
            args = (xt, cnnlab.tensor(_w, requires_grad=True)) if _w is not None else (xt,)
            out = _cf(*args, **_kw)
            out.backward(np.ones(out.shape, np.float32))

        def run_t(_x=x, _w=w, _tf=tf, _kw=kw):
            xt = torch.tensor(_x, requires_grad=True)
            args = (xt, torch.tensor(_w, requires_grad=True)) if _w is not None else (xt,)
            out = _tf(*args, **_kw)
            out.backward(torch.ones_like(out))

        def many(fn):
            return lambda a, b: [fn() for _ in range(reps)]

        sc, st = side_by_side(many(run_c), many(run_t), [(None, None)], rounds, warmup=1)
        rows.append({"what": f"op {name}", "cnnlab": sc / reps * 1e3, "torch": st / reps * 1e3, "unit": "ms fwd+bwd",
                     "ratio": st / sc})
    return rows


# ------------------------------------------------------------------------------ memory
def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(framework, batch=256, steps=30):
    """Peak RSS growth of ``steps`` training steps of one framework in a fresh process.

    The child builds only its own framework's network, so the other library's import does not
    count; after a warm-up step on 2 images, VmHWM (peak) is compared with VmRSS before the measured steps.
    """
    data = batches(batch, 4)
    if framework == "cnnlab":
        cnnlab.manual_seed(0)
        step = cnn_trainer(NETS["nielsen"]()[0])
    else:
        torch.manual_seed(0)
        step = torch_trainer(NETS["nielsen"]()[1])
    x0, y0 = data[0]
    step(x0[:2], y0[:2])  # a 2-image warm-up step: lazy initialisation (numba kernels, oneDNN) excluded
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    for i in range(steps):
        x, y = data[i % len(data)]
        step(x, y)
    peak = _status_kib("VmHWM")
    print(json.dumps({"framework": framework, "peak_kib": peak, "base_kib": base, "delta_mib": (peak - base) / 1024}))


def peak_memory(extra=()):
    out = {}
    for fw in ("cnnlab", "torch"):
        r = subprocess.run([sys.executable, __file__, "--memory-child", fw, *extra], capture_output=True, text=True,
                           check=True)
        out[fw] = json.loads(r.stdout.strip().splitlines()[-1])["delta_mib"]
    return {"what": "peak memory train nielsen b256", "cnnlab": out["cnnlab"], "torch": out["torch"], "unit": "MiB",
            "ratio": out["torch"] / max(out["cnnlab"], 1e-9), "ratio_name": "torch's memory / cnnlab's"}


# ------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    ap.add_argument("--json", default=None, help="also write results to this JSON file")
    ap.add_argument("--only", default=None, help="comma list of: train,infer,ops,memory,agree")
    ap.add_argument("--no-igemm", action="store_true",
                    help="cnnlab without its indirect-GEMM convolutions (the BLAS and Winograd paths), for A/B runs")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.no_igemm:
        from cnnlab import kernels  # noqa: PLC0415

        kernels.policy._igemm_enabled = False  # for the whole process (kernels.allow_igemm's switch)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    torch.manual_seed(0)
    rounds = 3 if args.quick else 7
    only = set(args.only.split(",")) if args.only else {"train", "infer", "ops", "memory", "agree"}
    import numba  # noqa: PLC0415
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    from cnnlab import kernels  # noqa: PLC0415

    kernels.threads.configure_blas()  # what cnnlab's first CPU kernel call does, so the header shows it

    info = {
        "machine": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
        "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
        "blas": [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info()],
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": rounds,
        "igemm": not args.no_igemm and kernels.policy.has_avx512(),
    }
    print(f"# cnnlab vs PyTorch {torch.__version__}, CPU, {os.cpu_count()} cores; torch threads "
          f"{info['torch_threads']}, BLAS {info['blas']}, numba threads {info['numba_threads']}; "
          f"medians of {rounds} alternating rounds; cnnlab's float32 convolutions: "
          f"{'indirect GEMM (AVX-512)' if info['igemm'] else 'BLAS and Winograd'}")
    rows = []

    def show(r):
        rows.append(r)
        print(f"{r['what']:<40} cnnlab {r['cnnlab']:>10.1f}  torch {r['torch']:>10.1f}  {r['unit']:<11} "
              f"{r.get('ratio_name', 'cnnlab speed / torch speed')} {r['ratio']:.2f}x", flush=True)

    if "train" in only:
        for batch, steps in ((10, 60), (64, 20), (256, 6)):
            show(training_throughput("nielsen", batch, rounds, steps if not args.quick else max(steps // 2, 3)))
        show(training_throughput("article", 64, rounds, 20))
        show(training_throughput("lenet5", 64, rounds, 20))
        show(training_throughput("alexnet", 64, rounds, 6))
    if "infer" in only:
        show(inference_throughput("nielsen", 1000, rounds, 3))
    if "memory" in only:
        show(peak_memory(("--no-igemm",) if args.no_igemm else ()))
    if "ops" in only:
        for r in operator_times(rounds):
            show(r)
    agree = None
    if "agree" in only:
        agree = loss_agreement()
        print(f"losses of the first {agree['steps']} steps agree to a relative {agree['max_relative_difference']:.2e} "
              f"(step 1: {agree['losses'][0][0]:.6f} vs {agree['losses'][0][1]:.6f}; "
              f"step 20: {agree['losses'][-1][0]:.6f} vs {agree['losses'][-1][1]:.6f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": rows, "loss_agreement": agree}, indent=2))


if __name__ == "__main__":
    main()
