"""Naive references shared by several test files (convolution, pooling), written straight from
the definitions. The checks themselves live in harness.py (re-exported here for older imports)."""

from __future__ import annotations

import itertools

import numpy as np

import cnnlab
from harness import (  # noqa: F401 - the names test files import from here
    check_against_torch,
    check_gradients,
    cnn_forward_backward,
    rel_error,
    torch,
)


# ----------------------------------------------------------------------------- naive references
def naive_conv(x, w, b, stride, padding, dilation, groups):
    """Convolution straight from the definition: one output neuron at a time.

    out[n, f, o] = b[f] + sum_{c in group, j in kernel} w[f, c, j] * xpad[n, c, o*stride + j*dilation]
    """
    d = x.ndim - 2
    N, C = x.shape[:2]
    F, Cg = w.shape[:2]
    k = w.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding))
    out_shape = tuple((x.shape[2 + i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1
                      for i in range(d))
    out = np.zeros((N, F) + out_shape, dtype=x.dtype)
    Fg = F // groups
    for n in range(N):
        for f in range(F):
            g = f // Fg
            for o in itertools.product(*(range(s) for s in out_shape)):
                acc = 0.0 if b is None else b[f]
                for c in range(Cg):
                    for j in itertools.product(*(range(kk) for kk in k)):
                        pos = tuple(o[i] * stride[i] + j[i] * dilation[i] for i in range(d))
                        acc += w[(f, c) + j] * xpad[(n, g * Cg + c) + pos]
                out[(n, f) + o] = acc
    return out


def naive_pool(x, kernel, stride, padding, mode, p=2):
    """Pooling from the definition: max, mean (zeros padded, counted) or (sum x^p)^(1/p)."""
    d = x.ndim - 2
    fill = -np.inf if mode == "max" else 0.0
    xpad = np.pad(x, ((0, 0), (0, 0)) + tuple((q, q) for q in padding), constant_values=fill)
    out_shape = tuple((x.shape[2 + i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(d))
    N, C = x.shape[:2]
    out = np.zeros((N, C) + out_shape, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for o in itertools.product(*(range(s) for s in out_shape)):
                window = [xpad[(n, c) + tuple(o[i] * stride[i] + j[i] for i in range(d))]
                          for j in itertools.product(*(range(kk) for kk in kernel))]
                if mode == "max":
                    v = max(window)
                elif mode == "avg":
                    v = sum(window) / len(window)
                else:
                    v = sum(abs(t) ** p if p % 2 else t ** p for t in window) ** (1.0 / p)
                out[(n, c) + o] = v
    return out


# ----------------------------------------------------------------------------- the GPU
def cuda():
    """(cupy, "") when CuPy is installed and sees a GPU; (None, why) when CuPy is not installed or no
    GPU is present, for a clean skip. Anything else (CuPy installed but failing to import, a CUDA
    error other than "no device", a driver that does not load while NVIDIA devices exist) is raised:
    on a GPU machine a broken CuPy must fail the GPU tests loudly, not skip them."""
    import importlib.util  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    if importlib.util.find_spec("cupy") is None:
        return None, "CuPy is not installed"
    import cupy  # noqa: PLC0415 - installed: an import error here is a real failure

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        no_device = exc.status == 100  # cudaErrorNoDevice
        no_driver = exc.status == 35 and not any(Path("/dev").glob("nvidia[0-9]*"))  # InsufficientDriver
        if no_device or no_driver:
            return None, f"no CUDA GPU ({exc})"
        raise
    return (cupy, "") if count > 0 else (None, "no CUDA GPU")


def save_short_run(out, model_name, n_images, nesterov):
    """Train ``model_name`` one epoch on the first ``n_images`` MNIST images and save it as a run."""
    from cnnlab import checkpoint, models, optim
    from cnnlab.data import DataLoader, load_dataset
    from cnnlab.train import fit

    split = load_dataset("mnist")
    cnnlab.manual_seed(0)
    model = models.build(model_name)
    loader = DataLoader(*[a[:n_images] for a in split.train], batch_size=64, seed=0)
    fit(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov), loader, epochs=1,
        progress=False, log=None)
    checkpoint.save_run(out, model, models.spec(model_name), {"dataset": "mnist", "validation": 10000},
                        {"test_accuracy": None})
    return out


def graph_ops(out):
    """Names of the operators in the graph that produced ``out``."""
    seen, stack, names = set(), [out], []
    while stack:
        ctx = stack.pop()._ctx
        if ctx is not None and id(ctx) not in seen:
            seen.add(id(ctx))
            names.append(type(ctx).__name__)
            stack.extend(ctx.inputs)
    return names
