"""Mutation run: do the tests catch typical bugs?

Plants one bug at a time in a copy of src/cnnlab (an exact-text replacement that must apply
exactly once, else the row says "did not apply"), runs the test files that should notice it
(pytest -x, with a timeout), restores the file, and prints a table: mutation, file, the first
test that failed ("caught by") or SURVIVED.

Nothing is edited in place: src/ (MNIST in it), tests/ and pyproject.toml are copied into a temporary
folder first (tests and src from a git revision if asked), and every mutated file is restored in
a finally block before the next mutation, even on Ctrl-C. Bytecode caching is off in the copies,
so a restored file is never run from a mutant's .pyc.

    python tools/mutate.py                         # this tree's src and tests
    python tools/mutate.py --tests-rev 8461a2f     # the tests of an older commit, this tree's src
    python tools/mutate.py --only var is_min       # mutations whose name contains a word
    python tools/mutate.py --markdown              # the table in Markdown

A baseline run (no mutation) of every test file used comes first: a file that already fails is
reported and the run stops, since it would "catch" every mutation.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Test files by basename, so that the same mutation finds its tests in the flat layout of older
# commits and in today's tests/functional/, tests/nn/, ... (test_functional.py became
# functional/test_layers.py; names that do not exist in a tree are skipped).
OPS = ["test_autograd.py", "test_ops.py", "test_functional.py", "test_layers.py"]
LOSS = ["test_functional.py", "test_layers.py", "test_nn.py"]
OPTIM = ["test_optim.py"]
CONV = ["test_conv.py"]
POOL = ["test_pool.py"]
DATA = ["test_data.py", "test_device_loader.py"]
INIT = ["test_nn.py", "test_init.py"]
SCHED = ["test_optim.py", "test_cli.py"]


@dataclass
class Mutation:
    name: str
    file: str  # relative to src/cnnlab
    old: str
    new: str
    tests: list


M = Mutation
MUTATIONS = [
    # ---------------------------------------------------------------- functional/ops.py
    M("is_min ignored (min returns the max)", "functional/ops.py",
      "out = a.min(axis=axis, keepdims=True) if is_min else a.max(axis=axis, keepdims=True)",
      "out = a.max(axis=axis, keepdims=True)", OPS),
    M("max gradient to the last tie, not the first", "functional/ops.py",
      "first[int(xp.argmax(eq.reshape(-1)))] = True",
      "first[eq.size - 1 - int(xp.argmax(eq.reshape(-1)[::-1]))] = True", OPS),
    M("var divides by n when unbiased", "functional/ops.py",
      "(1 if unbiased else 0)", "(0 if unbiased else 0)", OPS),
    M("mean over several dims divides by the first only", "functional/ops.py",
      "def mean(a, dim=None, keepdim=False):\n    axes = _axes(dim, a.ndim, \"mean\", a.shape)\n"
      "    n = a.size if axes is None else int(np.prod([a.shape[d] for d in axes]))",
      "def mean(a, dim=None, keepdim=False):\n    axes = _axes(dim, a.ndim, \"mean\", a.shape)\n"
      "    n = a.size if axes is None else int(np.prod([a.shape[d] for d in axes[:1]]))", OPS),
    M("sum reduces with mean (wrong reduction)", "functional/ops.py",
      "return a.sum(axis=axis, keepdims=keepdims)", "return a.mean(axis=axis, keepdims=keepdims)", OPS),
    M("mul gradient operands swapped", "functional/ops.py",
      "return (g * self.b if na else None), (g * self.a if nb else None)",
      "return (g * self.a if na else None), (g * self.b if nb else None)", OPS),
    M("sub gradient sign of the subtrahend", "functional/ops.py",
      "        return g, -g\n", "        return g, g\n", OPS),
    M("div gradient sign", "functional/ops.py",
      "gb = -g * self.a / (self.b * self.b)", "gb = g * self.a / (self.b * self.b)", OPS),
    M("pow gradient exponent off by one", "functional/ops.py",
      "return g * p * a ** (p - 1)", "return g * p * a ** p", OPS),
    M("log gradient multiplies", "functional/ops.py",
      "        return g / self.a\n", "        return g * self.a\n", OPS),
    M("sqrt gradient misses the 2", "functional/ops.py",
      "return g / (2 * self.out)", "return g / self.out", OPS),
    M("abs gradient ignores the sign", "functional/ops.py",
      "return g * _xp(g).sign(self.a)", "return g", OPS),
    M("clamp boundary excluded from the gradient", "functional/ops.py",
      "mask &= a >= lo", "mask &= a > lo", OPS),
    M("sigmoid forward without the halving", "functional/ops.py",
      "self.out = 0.5 * (1 + xp.tanh(0.5 * a))", "self.out = 0.5 * (1 + xp.tanh(a))", OPS),
    M("softmax normalised over the last axis", "functional/ops.py",
      "self.out, self.axis = e / e.sum(axis=axis, keepdims=True), axis",
      "self.out, self.axis = e / e.sum(axis=-1, keepdims=True), axis", OPS),
    M("log_softmax backward drops the sum term", "functional/ops.py",
      "return g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)",
      "return g - xp.exp(self.out) * g", OPS),
    M("permute backward uses the permutation, not its inverse", "functional/ops.py",
      "self.inv = tuple(np.argsort(dims))", "self.inv = tuple(dims)", OPS),
    M("fancy-index gradient overwrites repeats", "functional/ops.py",
      "backend.scatter_add(out, self.index, g)", "out[self.index] = g", OPS),
    M("scalar operand upcast (dtype of the scalar)", "functional/ops.py",
      "return Tensor(xp.asarray(x, dtype=like.data.dtype))", "return Tensor(xp.asarray(x, dtype=np.float64))", OPS),
    M("matmul weight gradient transposed wrongly", "functional/ops.py",
      "gb = xp.swapaxes(self.a, -1, -2) @ g if nb else None",
      "gb = xp.swapaxes(xp.swapaxes(self.a, -1, -2) @ g, -1, -2) if nb else None", OPS),
    # ---------------------------------------------------------------- autograd.py
    M("second backward overwrites .grad", "autograd.py",
      "t.grad.data = t.grad.data + gt", "t.grad.data = gt", OPS),
    M("a tensor used twice keeps one gradient", "autograd.py",
      "grads[key] = gi if prev is None else prev + gi", "grads[key] = gi", OPS),
    M("no_grad records the graph", "autograd.py",
      "    prev = _grad_enabled\n    _grad_enabled = False", "    prev = _grad_enabled\n    _grad_enabled = True",
      OPS),
    M("Tensor.min(dim) gives arg-max indices", "autograd.py",
      "Tensor(self._data.argmin(axis=dim, keepdims=keepdim))", "Tensor(self._data.argmax(axis=dim, keepdims=keepdim))",
      OPS),
    M("reflected subtraction not reflected", "autograd.py",
      "    def __rsub__(self, other):\n        return _ops.sub(other, self)",
      "    def __rsub__(self, other):\n        return _ops.sub(self, other)", OPS),
    M("broadcast gradient summed only over leading axes", "autograd.py",
      "    if axes:\n        grad = grad.sum(axis=axes, keepdims=True)\n", "", OPS),
    # ---------------------------------------------------------------- functional/layers.py: losses, dropout
    M("cross-entropy mean gradient not divided by N", "functional/layers.py",
      'scale = g / N if self.reduction == "mean" else g', "scale = g", LOSS),
    M("label smoothing spread over C - 1 classes", "functional/layers.py",
      "loss = loss - smoothing / C * logp.sum(axis=1)", "loss = loss - smoothing / (C - 1) * logp.sum(axis=1)",
      LOSS),
    M("dropout not inverted (no 1/(1-p))", "functional/layers.py",
      "scale = np.asarray(1.0 / (1.0 - p), dtype=x.dtype)", "scale = np.asarray(1.0, dtype=x.dtype)", LOSS),
    M("dropout keeps with probability p", "functional/layers.py",
      "keep = backend.random(x.shape, x.data) >= p", "keep = backend.random(x.shape, x.data) < p", LOSS),
    M("linear bias gradient dropped", "functional/layers.py",
      "return gx, gw, (g2.sum(axis=0) if needs[2] else None)", "return gx, gw, None", LOSS),
    M("nll_loss mean is a sum", "functional/layers.py",
      '    if reduction == "mean":\n        return picked.mean()', '    if reduction == "mean":\n        return picked.sum()',
      LOSS),
    # ---------------------------------------------------------------- optim.py
    M("SGD momentum sign", "optim.py", "                    buf *= momentum\n", "                    buf *= -momentum\n",
      OPTIM),
    M("SGD nesterov look-ahead dropped", "optim.py",
      "d = d + momentum * buf if nesterov else buf", "d = buf", OPTIM),
    M("Adam bias correction of m off by one step", "optim.py",
      "update *= lr / (1.0 - beta1 ** t)", "update *= lr / (1.0 - beta1 ** (t + 1))", OPTIM),
    M("AdamW decay coupled to the gradient", "optim.py", "if self._decoupled:", "if not self._decoupled:", OPTIM),
    M("RMSprop centred variance adds the mean", "optim.py", "r = v - m * m", "r = v + m * m", OPTIM),
    M("state_dict shares arrays (no copy)", "optim.py",
      'state[index] = {k: (v.copy() if hasattr(v, "shape") else v) for k, v in st.items()}',
      "state[index] = dict(st)", OPTIM),
    M("step(closure) ignores the closure's loss", "optim.py",
      "            with enable_grad():\n                loss = closure()",
      "            with enable_grad():\n                closure()", OPTIM),
    M("StepLR decays one step late", "optim.py",
      "if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:",
      "if self.last_epoch <= 1 or (self.last_epoch - 1) % self.step_size != 0:", SCHED),
    M("cosine schedule over 2 T_max", "optim.py",
      "c = (1.0 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2.0",
      "c = (1.0 + math.cos(math.pi * self.last_epoch / (2 * self.T_max))) / 2.0", SCHED),
    # ---------------------------------------------------------------- conv, pool, init (being rewritten)
    M("conv output size off by one", "functional/conv.py",
      "(s + 2 * p - dl * (k - 1) - 1) // st + 1", "(s + 2 * p - dl * (k - 1)) // st + 1", CONV),
    M("average pool divides by the window minus one", "functional/pool.py",
      "inv = 1.0 / int(np.prod(kernel))", "inv = 1.0 / (int(np.prod(kernel)) - 1 or 1)", POOL),
    M("max pool arg-max is the last tie (NumPy path)", "kernels/generic.py",
      "arg = w.argmax(axis=-1)", "arg = w.shape[-1] - 1 - w[..., ::-1].argmax(axis=-1)", POOL),
    M("xavier_normal_ std uses fan_in only", "nn/init.py",
      "return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fi + fo)))",
      "return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fi + fi)))", INIT),
    M("kaiming_uniform_ bound sqrt(6/fan)", "nn/init.py",
      "bound = _gain(nonlinearity, a) * math.sqrt(3.0 / fan)", "bound = _gain(nonlinearity, a) * math.sqrt(6.0 / fan)",
      INIT),
    # ---------------------------------------------------------------- data/
    M("loader multiplies by std", "data/loader.py", "        x /= self._std\n", "        x *= self._std\n", DATA),
    M("IDX int16 read little-endian", "data/idx.py", '0x0B: np.dtype(">i2"),', '0x0B: np.dtype("<i2"),', DATA),
    M("shift moves content the wrong way", "data/augment.py",
      "rows = np.arange(h)[None, :] + (m - dy)[:, None]", "rows = np.arange(h)[None, :] + (m + dy)[:, None]", DATA),
]


def _copy_tree(dest: Path, tests_rev: str | None, src_rev: str | None) -> None:
    """src/ (with MNIST), tests/, pyproject.toml (from a git revision or this tree) into dest."""
    for part, rev in (("src", src_rev), ("tests", tests_rev), ("pyproject.toml", tests_rev)):
        if rev:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, part], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        elif (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / part, dest / part)
    mnist = Path("src", "cnnlab", "data", "mnist")
    if not (dest / mnist).is_dir():  # an older src revision looks for MNIST in the checkout's data/mnist
        shutil.copytree(ROOT / mnist, dest / "data" / "mnist")


def _test_files(tests_dir: Path, basenames: list) -> list:
    found = []
    for name in basenames:
        found += sorted(str(p.relative_to(tests_dir.parent)) for p in tests_dir.rglob(name))
    return list(dict.fromkeys(found))


def _pytest(work: Path, files: list, timeout: float) -> tuple[str, str]:
    """('pass' | 'fail' | 'timeout', first failing test id or a note)."""
    env = dict(os.environ, PYTHONPATH=str(work / "src"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", "--no-header",
           "-m", "not gpu", *files]
    try:
        run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"TIMEOUT after {timeout:.0f} s"
    if run.returncode == 0:
        return "pass", ""
    for line in run.stdout.splitlines():
        m = re.match(r"(FAILED|ERROR) (.+?)(?: - .*)?$", line)  # "FAILED <node id> - <message>"
        if m:
            return "fail", m.group(2)
    return "fail", f"pytest exit {run.returncode}: " + (run.stdout.strip().splitlines() or ["?"])[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests-rev", help="take tests/ and pyproject.toml from this git revision (default: this tree)")
    ap.add_argument("--src-rev", help="take src/ from this git revision (default: this tree)")
    ap.add_argument("--only", nargs="*", help="run the mutations whose name contains one of these words")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default: 900)")
    ap.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    args = ap.parse_args(argv)

    mutations = [m for m in MUTATIONS if not args.only or any(w in m.name for w in args.only)]
    with tempfile.TemporaryDirectory(prefix="cnnlab-mutate-") as tmp:
        work = Path(tmp)
        _copy_tree(work, args.tests_rev, args.src_rev)
        pkg = work / "src" / "cnnlab"
        used = sorted({f for m in mutations for f in _test_files(work / "tests", m.tests)})
        print(f"baseline: {len(used)} test files, no mutation ...", flush=True)
        status, where = _pytest(work, used, args.timeout)
        if status != "pass":
            print(f"the unmutated tree fails ({where}): fix that first", file=sys.stderr)
            return 2
        rows = []
        for m in mutations:
            path = pkg / m.file
            original = path.read_text() if path.exists() else None
            count = original.count(m.old) if original is not None else 0
            if count != 1:
                rows.append((m, f"did not apply (found {count} times)"))
                print(f"  {m.name}: did not apply ({count})", flush=True)
                continue
            files = _test_files(work / "tests", m.tests)
            t0 = time.perf_counter()
            try:
                path.write_text(original.replace(m.old, m.new))
                status, where = _pytest(work, files, args.timeout)
            finally:
                path.write_text(original)
            result = where if status != "pass" else "SURVIVED"
            rows.append((m, result))
            print(f"  {m.name}: {result} ({time.perf_counter() - t0:.0f} s)", flush=True)

    applied = [r for r in rows if not r[1].startswith("did not apply")]
    caught = [r for r in applied if r[1] != "SURVIVED"]
    print()
    def short(result):  # long parameter ids ({'lr': 0.05, ...}) cut down for the table
        return re.sub(r"\[([^\]]{28})[^\]]{4,}\]", r"[\1...]", result)

    rows = [(m, short(r)) for m, r in rows]
    if args.markdown:
        print("| mutation | file | caught by |")
        print("|---|---|---|")
        for m, result in rows:
            print(f"| {m.name} | {m.file} | {'**SURVIVED**' if result == 'SURVIVED' else '`' + result + '`'} |")
    else:
        width = max(len(m.name) for m, _ in rows)
        fw = max(len(m.file) for m, _ in rows)
        for m, result in rows:
            print(f"{m.name:<{width}}  {m.file:<{fw}}  {result}")
    print(f"\ncaught {len(caught)} of {len(applied)} applied mutations"
          f" ({len(rows) - len(applied)} did not apply); tests from {args.tests_rev or 'this tree'},"
          f" src from {args.src_rev or 'this tree'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
