"""What the demo page shows about one saved run, computed by cnnlab: the prediction for a picture,
the picture as the network sees it (each step of the conversion), every conv, pooling and
activation layer's feature maps, the first layer's learned filters, a Grad-CAM map and the run's
summary. Plain Python and NumPy, no web framework: ``app.py`` only puts it on the web.

Arrays go to the page as ``{"width", "height", "data"}`` with ``data`` the base64 of uint8 pixels,
row by row (several maps: one after the other), which the page draws on canvases.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .. import checkpoint, models, nn, runs
from ..autograd import Tensor, no_grad
from ..data import DataError, class_names, form_for, standardize
from ..viz.common import hooked_maps, is_sequential, named_convs
from ..viz.featuremaps import short_name
from ..viz.gradcam import grad_cam, upsample
from .uploads import PictureError

__all__ = ["DISPLAY_SIDE", "MAX_MAPS", "DemoRun", "find_runs", "gray_payload", "receptive_fields"]

MAX_MAPS = 64  # feature maps sent per layer, as `cnnlab show featuremaps` draws
DISPLAY_SIDE = 160  # conversion steps are shrunk to this side for the page (not for the network)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh)
INPUT_SIDE = 28

# cnnlab's kernels share one thread pool, so one picture runs through one network at a time.
COMPUTE_LOCK = threading.Lock()


def gray_payload(a: np.ndarray) -> dict:
    """A uint8 array (H, W) or a stack of them (N, H, W) as JSON: width, height, base64 pixels."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return {"width": int(a.shape[-1]), "height": int(a.shape[-2]), "data": base64.b64encode(a.tobytes()).decode()}


def _to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values from lo (0) to hi (255); all 0 if the range is empty."""
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint(np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _for_display(a: np.ndarray) -> np.ndarray:
    """A conversion step shrunk (aspect kept) so its longer side is at most DISPLAY_SIDE."""
    if max(a.shape) <= DISPLAY_SIDE:
        return a
    img = Image.fromarray(a)
    img.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _pairs(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def receptive_fields(layers, input_side: int = INPUT_SIDE) -> dict[int, dict]:
    """Where in the input each unit of each layer looks: its receptive field, per layer index.

    Per axis, for a layer with kernel k, stride s, padding p, dilation d after the layers before
    it (field size r, jump j between neighbouring units, centre ``start`` of unit 0, in input
    pixels): r += (k - 1) d j, start += ((k - 1) d / 2 - p) j, j *= s. Unit (y, x) then sees input
    rows start_y + y j_y -+ (r_y - 1) / 2 (and columns alike), clipped to the image.

    Args:
        layers: a Sequential model's layers.
        input_side: the input's side, for "same" padding only.

    Returns:
        {layer index: {"size": [rh, rw], "jump": [jh, jw], "start": [sh, sw]}} for every layer up to
        the first that is neither a convolution, a pooling nor elementwise (e.g. Flatten).
    """
    r, j, start = [1, 1], [1, 1], [0.0, 0.0]
    out = {}
    for i, layer in enumerate(layers):
        if isinstance(layer, (nn.Conv2d, *POOLS)):
            k = _pairs(layer.kernel_size)
            s = _pairs(layer.stride)
            d = _pairs(getattr(layer, "dilation", 1))
            padding = getattr(layer, "padding", 0)
            if isinstance(padding, str):  # "same" keeps the size, "valid" pads nothing
                p = tuple((k[a] - 1) * d[a] // 2 if padding == "same" else 0 for a in range(2))
            else:
                p = _pairs(padding)
            for a in range(2):
                start[a] += ((k[a] - 1) * d[a] / 2 - p[a]) * j[a]
                r[a] += (k[a] - 1) * d[a] * j[a]
                j[a] *= s[a]
        elif isinstance(layer, (nn.Flatten, nn.Linear)):
            break
        out[i] = {"size": list(r), "jump": list(j), "start": list(start)}
    return out


def _grid_sample(cam: np.ndarray, field: dict, side: int = INPUT_SIDE) -> np.ndarray:
    """A coarse map (h, w) placed over the input (side, side): each unit at the centre of its
    receptive field, bilinear in between, constant beyond the outermost centres."""
    def axis(n, a):
        u = np.clip((np.arange(side) - field["start"][a]) / field["jump"][a], 0, n - 1)
        i0 = np.floor(u).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), u - i0

    h, w = cam.shape
    y0, y1, fy = axis(h, 0)
    x0, x1, fx = axis(w, 1)
    rows = cam[y0] * (1 - fy)[:, None] + cam[y1] * fy[:, None]  # (side, w)
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx  # (side, side)


def find_runs(folder="runs") -> list[Path]:
    """The run directories (holding weights) directly under ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / checkpoint.WEIGHTS).is_file())


class DemoRun:
    """One saved run, ready to show what it does with a picture.

    Args:
        run: a ``runs.Run`` (``runs.load(run_dir)``): a Sequential, or any model with its own forward.
        index: its number on the page (runs are only ever named by this number).
    """

    def __init__(self, run: runs.Run, index: int = 0):
        self.run, self.index = run, index
        self.model = run.model
        self.model.eval()  # dropout off, batch norm on running statistics
        # A Sequential is walked layer by layer; a model with its own forward is looked into with
        # forward hooks on its conv, pooling and activation layers, named by module path.
        self.sequential = is_sequential(self.model)
        self.layers = list(self.model.layers) if self.sequential else []
        self.classes = class_names(run.config.dataset)
        self.convert, self.form_name = form_for(run.config.dataset)
        self.fields = receptive_fields(self.layers) if self.sequential else {}
        try:
            self.info = self.describe()
        except (ValueError, TypeError) as exc:  # e.g. a model made for another input
            raise ValueError(f"{run.dir}: the demo cannot run this {type(self.model).__name__} on a "
                             f"{INPUT_SIDE}x{INPUT_SIDE} picture: {exc}") from exc

    @classmethod
    def load(cls, run_dir, index: int = 0) -> DemoRun:
        """``DemoRun(runs.load(run_dir), index)``."""
        return cls(runs.load(run_dir), index)

    # ------------------------------------------------------------------ the run
    def describe(self) -> dict:
        """The run as the page's summary shows it: name, data, accuracy, layers, parameters, the
        shared-weights sentence, and the first convolution's filters."""
        run, model = self.run, self.model
        rows = models.summarize(model)
        dataset = run.config.dataset
        arch = run.spec.get("name")
        return {
            "id": self.index,
            "name": run.config.name,
            "folder": run.dir.name if run.dir is not None else None,
            "dataset": dataset if dataset in ("mnist", "fashion-mnist") else Path(dataset).name,
            "architecture": arch,
            "description": models.describe(run.spec),
            "test_accuracy": run.metrics.get("test_accuracy"),
            "best_epoch": run.metrics.get("best_epoch"),
            "classes": self.classes,
            "form": self.form_name,
            "parameters": model.num_parameters(),
            "layers": [{"index": int(i) if i.isdigit() else i,  # a module path for a model with its own forward
                        "layer": name, "shape": [int(v) for v in shape], "parameters": int(n)}
                       for i, name, shape, n in rows],
            "shared_weights": models.shared_weights_line(model, rows),
            "filters": self.filters(),
        }

    def filters(self) -> dict | None:
        """The first convolution's kernels (their first input channel), on one gray scale with
        mid-gray at 0: {"layer" (index, or module path for a model with its own forward), "name", "count",
        "channels", "vmax", "maps": (count, kh, kw)}."""
        convs = ([(i, m) for i, m in enumerate(self.layers) if isinstance(m, nn.Conv2d)] if self.sequential
                 else named_convs(self.model))
        for i, layer in convs[:1]:
            if isinstance(layer, nn.Conv2d):
                w = np.asarray(layer.weight.numpy(), dtype=np.float64)[:, 0]  # (F, C, kh, kw) -> (F, kh, kw)
                vmax = float(np.abs(w).max()) or 1.0
                return {"layer": i, "name": short_name(layer), "count": int(w.shape[0]),
                        "channels": int(layer.in_channels), "vmax": vmax,
                        "maps": gray_payload(_to_uint8(w, -vmax, vmax))}
        return None

    # ------------------------------------------------------------------ a picture
    def predict(self, picture: Image.Image, notes=(), started: float | None = None) -> dict:
        """Convert a picture as the run's data set was made, and show what the network does with it.

        Args:
            picture: a decoded PIL image (``uploads.read_picture``).
            notes: what was done to it before (e.g. it was shrunk), shown with the steps.
            started: ``time.perf_counter()`` when the work on it began (default: now), for "ms".

        Returns:
            ``predict_form``'s answer, with "steps" holding every conversion step.

        Raises:
            PictureError: 422 when the conversion finds no digit (or object) in the picture.
        """
        t0 = time.perf_counter() if started is None else started
        steps = []
        try:
            form = self.convert(picture, steps=steps)
        except DataError as exc:
            message = str(exc)  # "<PIL image>: no digit found (...)": the name means nothing here
            raise PictureError(message.split(": ", 1)[-1] if message.startswith("<") else message, 422) from None
        shown = [{"caption": caption, **gray_payload(_for_display(a))} for caption, a in steps]
        return self.predict_form(form, steps=shown, notes=list(notes), started=t0)

    def predict_form(self, form: np.ndarray, steps=(), notes=(), started: float | None = None) -> dict:
        """Run a 28x28 picture in the data set's form through the network, layer by layer.

        Args:
            form: (28, 28) uint8, as ``to_mnist_form`` returns.
            steps, notes: passed through to the answer.
            started: ``time.perf_counter()`` when the work began (default: now).

        Returns:
            {"run", "class", "name", "probability", "probabilities" (one per class), "input" (the
            28x28 picture), "steps", "notes", "layers" (per conv/pool/activation layer: "index",
            "name", "kind", "shape", "lo", "hi", "field" (receptive field), "maps"), "gradcam",
            "ms" (the server's time for all of it)}.
        """
        t0 = time.perf_counter() if started is None else started
        form = np.asarray(form, dtype=np.uint8)
        if form.shape != (INPUT_SIDE, INPUT_SIDE):
            raise ValueError(f"expected a {INPUT_SIDE}x{INPUT_SIDE} picture, got shape {form.shape}")
        x = standardize(form, self.run.config.mean, self.run.config.std).reshape(1, 1, INPUT_SIDE, INPUT_SIDE)
        if not self.sequential:
            return self._predict_hooked(form, x, steps, notes, t0)
        blocks, last = [], None
        with COMPUTE_LOCK:
            with no_grad():
                t = Tensor(x)
                for i, layer in enumerate(self.layers):
                    t = layer(t)
                    if t.ndim == 4:
                        last = (i, t.numpy())
                        if isinstance(layer, (nn.Conv2d, *POOLS, *ACTIVATIONS)):
                            blocks.append((i, layer, t.numpy()[0]))
            logits = np.asarray(t.numpy(), dtype=np.float64).reshape(-1)
            e = np.exp(logits - logits.max())
            prob = e / e.sum()
            k = int(prob.argmax())
            cam = self.grad_cam(last[0], last[1], k) if last is not None else None
        layers = [self._layer_payload(i, layer, maps) for i, layer, maps in blocks]
        return self._answer(form, prob, k, steps, notes, layers, cam, t0)

    def _predict_hooked(self, form, x, steps, notes, t0) -> dict:
        """``predict_form`` for a model with its own forward: its conv, pooling and activation layers'
        maps through forward hooks, in call order (each layer's "path" its module path, "index" its
        place among them, no receptive field), and Grad-CAM proper on its last Conv2d."""
        kinds = (nn.Conv2d, *POOLS, *ACTIVATIONS)
        with COMPUTE_LOCK:
            blocks, out = hooked_maps(self.model, x, kinds)
            logits = np.asarray(out, dtype=np.float64).reshape(-1)
            e = np.exp(logits - logits.max())
            prob = e / e.sum()
            k = int(prob.argmax())
            cam = None
            if named_convs(self.model):
                found = grad_cam(self.model, x, target=k)
                self.model.eval()  # grad_cam restores the mode it found; the demo's is eval
                top = float(found.cells.max())
                if top > 0:
                    path = next(n for n, m in self.model.named_modules() if m is found.layer)
                    cam = {"layer": path, "name": short_name(found.layer), "class": k,
                           "size": [int(v) for v in found.cells.shape],
                           "cells": gray_payload(_to_uint8(found.cells, 0.0, top)),
                           "map": gray_payload(_to_uint8(upsample(found.cells / top, form.shape), 0.0, 1.0))}
        layers = []
        for index, (path, layer, maps) in enumerate(blocks):
            payload = self._layer_payload(index, layer, maps)
            payload["path"] = path
            layers.append(payload)
        return self._answer(form, prob, k, steps, notes, layers, cam, t0)

    def _answer(self, form, prob, k, steps, notes, layers, cam, t0) -> dict:
        """The JSON answer of ``predict_form``, however the maps were taken."""
        return {
            "run": self.index,
            "class": k,
            "name": self.classes[k] if k < len(self.classes) else str(k),
            "probability": float(prob[k]),
            "probabilities": [float(p) for p in prob],
            "input": gray_payload(form),
            "steps": list(steps),
            "notes": list(notes),
            "layers": layers,
            "gradcam": cam,
            "ms": round(1000 * (time.perf_counter() - t0), 2),
        }

    def _layer_payload(self, i: int, layer, maps: np.ndarray) -> dict:
        shown = np.asarray(maps[:MAX_MAPS], dtype=np.float64)  # (C, H, W)
        lo, hi = float(shown.min()), float(shown.max())
        kind = "conv" if isinstance(layer, nn.Conv2d) else "pool" if isinstance(layer, POOLS) else "activation"
        c, h, w = maps.shape
        return {"index": i, "name": short_name(layer), "kind": kind, "shape": [int(c), int(h), int(w)],
                "shown": int(len(shown)), "lo": lo, "hi": hi, "field": self.fields.get(i),
                "maps": gray_payload(_to_uint8(shown, lo, hi))}

    def grad_cam(self, i: int, features: np.ndarray, k: int) -> dict | None:
        """Where in the picture the evidence for class ``k`` lies, from the output of layer ``i``:
        Grad-CAM in its element-wise form (HiResCAM, Draelos and Carin 2020), the feature maps
        times the gradient of class ``k``'s score at each unit, summed over the maps, negatives
        cut, placed over the input by each unit's receptive field.

        Grad-CAM proper (Selvaraju et al. 2017) first averages each map's gradient over its units;
        with the article's three maps feeding a linear layer that average is often negative for
        all three, and the map empty (half of MNIST's first 200 test digits). Element-wise, a net
        whose last maps feed a linear layer gets exactly each unit's share of the class score.

        Args:
            i: the index of the last layer with (N, C, H, W) output.
            features: its output for the picture, (1, C, H, W).
            k: the class.

        Returns:
            {"layer", "name", "class", "size" (H, W), "cells" (the map itself, H x W), "map" (placed
            over the 28x28 input)}, both 0-255 of the map's maximum; or None when no unit of that
            layer speaks for the class (the map is all zero).
        """
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:  # gradients for the picture only, none into the weights
            p.requires_grad = False
        try:
            leaf = Tensor(features.copy(), requires_grad=True)
            t = leaf
            for layer in self.layers[i + 1:]:
                t = layer(t)
            seed = np.zeros(t.shape, dtype=t.numpy().dtype)  # d(score of class k) / d(logits)
            seed[0, k] = 1.0
            t.backward(seed)
            grad = np.asarray(leaf.grad.numpy()[0], dtype=np.float64)  # (C, H, W)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad = flag
        a = np.asarray(features[0], dtype=np.float64)
        cam = np.maximum((grad * a).sum(axis=0), 0.0)  # (C, H, W) -> (H, W): each unit's share, for k
        top = float(cam.max())
        if not top > 0 or i not in self.fields:
            return None
        placed = _grid_sample(cam / top, self.fields[i])
        return {"layer": i, "name": short_name(self.layers[i]), "class": k, "size": [int(v) for v in cam.shape],
                "cells": gray_payload(_to_uint8(cam, 0.0, top)), "map": gray_payload(_to_uint8(placed, 0.0, 1.0))}

    def warm_up(self) -> None:
        """One prediction on a plain stroke, so the first visitor does not wait for compilation."""
        form = np.zeros((INPUT_SIDE, INPUT_SIDE), dtype=np.uint8)
        form[4:24, 13:16] = 255
        self.predict_form(form)
