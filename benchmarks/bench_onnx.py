"""cnnlab inference against ONNX Runtime on the CPU, side by side in one process.

For each zoo model: random weights (and batch-norm statistics), exported with
``cnnlab.onnx_export.export_onnx``; cnnlab runs ``runs.runnable(model)`` (nn.fuse, eval mode,
no_grad), ONNX Runtime the exported graph (CPUExecutionProvider, default session options: its
own thread pool, one thread per physical core). Both get the same MNIST test images, normalised.
Each measurement alternates the two for several rounds; medians. The ratio is ORT seconds /
cnnlab seconds, i.e. cnnlab's speed relative to ONNX Runtime's: above 1, cnnlab is faster.

    python benchmarks/bench_onnx.py                          # the zoo, batch 1 and 1000
    python benchmarks/bench_onnx.py --models fast,lenet5 --rounds 5
    python benchmarks/bench_onnx.py --json out.json
    python benchmarks/bench_onnx.py --threads 1              # one thread each: per-core efficiency

On a loaded machine the default (two threads each) mostly measures scheduling: ONNX Runtime's
workers spin while they wait, cnnlab's sleep. ``--threads 1`` (ORT intra_op_num_threads=1, cnnlab
policy.WORKERS=1) compares the work each does per core with no hand-offs between threads, and
``--threads 1 --clock cpu`` times it in CPU seconds of the process (time.process_time), which
other programs on the machine disturb far less than the wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cnnlab  # noqa: E402
from cnnlab import kernels, models, runs  # noqa: E402
from cnnlab.autograd import Tensor, no_grad  # noqa: E402
from cnnlab.data import load_dataset, standardize  # noqa: E402
from cnnlab.onnx_export import export_onnx  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover
    sys.exit("this benchmark runs ONNX Runtime: pip install 'cnnlab[onnx]'")

DEFAULT_MODELS = ["nielsen-conv2", "fast", "lenet5", "article", "alexnet", "vgg-small", "nielsen-fc",
                  "nielsen-conv1", "nielsen-dropout", "cs231n"]


def randomise(model, seed=0):
    """Weights and statistics away from their initial values (a zero classifier would hide errors)."""
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        shape = t.shape
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) > 1:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            value = rng.uniform(-0.5, 0.5, shape) + (1.0 if name.endswith("weight") else 0.0)
        t.data[...] = value.astype(t.dtype)
    return model.eval()


CLOCK = time.perf_counter


def median_pair(a, b, rounds, calls):
    """Alternate ``a`` and ``b`` (each called ``calls`` times per round) over ``rounds``: median seconds per call."""
    a(), b()  # warm-up: compilation, ORT's first-run allocations
    ta, tb = [], []
    for r in range(rounds):
        order = [(a, ta), (b, tb)] if r % 2 == 0 else [(b, tb), (a, ta)]
        for fn, acc in order:
            t = CLOCK()
            for _ in range(calls):
                fn()
            acc.append((CLOCK() - t) / calls)
    return statistics.median(ta), statistics.median(tb)


def bench(name, images, batches, rounds, calls_b1, threads=None):
    cnnlab.manual_seed(0)
    model = randomise(models.build(name))
    proto = export_onnx(model, (1, 28, 28), name=name)
    data = proto.SerializeToString()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    net = runs.runnable(model)
    row = {"model": name, "bytes": len(data)}
    x = images[:1000]
    with no_grad():
        want = net(Tensor(x)).numpy()
    got = session.run(None, {"input": x})[0]
    row["max_abs_diff"] = float(np.abs(got - want).max())
    row["max_rel_diff"] = row["max_abs_diff"] / float(np.abs(want).max())
    for batch in batches:
        xb = images[:batch]

        def c():
            with no_grad():
                return net(Tensor(xb)).data

        def o():
            return session.run(None, {"input": xb})[0]

        calls = calls_b1 if batch == 1 else max(1, 1000 // batch)
        sc, so = median_pair(c, o, rounds, calls)
        row[f"cnnlab_ms_b{batch}"] = 1e3 * sc
        row[f"ort_ms_b{batch}"] = 1e3 * so
        row[f"ratio_b{batch}"] = so / sc
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--batches", default="1,1000")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=100, help="calls per round at batch 1")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for each (default: ORT's default, one per physical core; cnnlab's policy.WORKERS)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time (all the process's threads: use with "
                         "--threads 1, since ONNX Runtime's idle workers spin)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        kernels.policy.WORKERS = args.threads
    batches = [int(b) for b in args.batches.split(",")]
    test = load_dataset("mnist").test[0]
    images = standardize(test[:max(batches + [1000])], 0.1307, 0.3081).reshape(-1, 1, 28, 28).astype(np.float32)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"onnxruntime {ort.__version__}, {args.rounds} rounds, threads {args.threads or 'default'}, {args.clock} clock\n"
          f"ratio = ORT time / cnnlab time (above 1: cnnlab faster)")
    head = f"{'model':<16} {'bytes':>10} {'max diff':>9} {'rel':>8}"
    for b in batches:
        head += f" {'cnnlab ms b' + str(b):>15} {'ORT ms':>9} {'ratio':>6}"
    print(head)
    rows = []
    for name in args.models.split(","):
        row = bench(name, images, batches, args.rounds, args.calls, args.threads)
        rows.append(row)
        line = f"{name:<16} {row['bytes']:>10,} {row['max_abs_diff']:>9.1e} {row['max_rel_diff']:>8.1e}"
        for b in batches:
            line += f" {row[f'cnnlab_ms_b{b}']:>15.3f} {row[f'ort_ms_b{b}']:>9.3f} {row[f'ratio_b{b}']:>5.2f}x"
        print(line, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
