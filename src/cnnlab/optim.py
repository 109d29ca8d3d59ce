"""Optimizers and learning-rate schedulers with a PyTorch-like interface.

Optimizers update :class:`cnnlab.nn.Parameter` objects in place from their ``.grad``:

* :class:`SGD` -- stochastic gradient descent with momentum, dampening, Nesterov momentum and
  weight decay (same arithmetic as ``torch.optim.SGD``), plus Nielsen's L2 regularisation
  (``l2_lambda`` / ``n_train``) as in ``network3.py`` of *Neural Networks and Deep Learning*.
* :class:`RMSprop` -- Hinton's RMSProp (the cs231n solver's rule), with the same arithmetic and
  options as ``torch.optim.RMSprop`` (smoothing constant, momentum, centred variant, weight decay).
* :class:`Adam` and :class:`AdamW` -- same arithmetic as ``torch.optim.Adam`` / ``AdamW``
  (bias correction, optional AMSGrad, coupled or decoupled weight decay).

Every optimizer accepts either an iterable of parameters or a list of *parameter groups*
(dicts with a ``"params"`` entry and optional per-group hyper-parameters), exposes
``param_groups``, ``zero_grad()``, ``step()``, ``state_dict()`` and ``load_state_dict()``.
State dicts are plain Python dicts of arrays and numbers, so a run can be saved and resumed.

Schedulers (:class:`StepLR`, :class:`CosineAnnealingLR`, :class:`OneCycleLR`) rewrite
``group["lr"]`` of an optimizer each time their ``step()`` is called, like
``torch.optim.lr_scheduler``.

All array arithmetic goes through the array module of the parameter (NumPy or CuPy), and
optimizer state is kept in the parameter's own dtype: a float32 model stays float32.
"""

from __future__ import annotations

import bisect
import copy
import math
import numbers

import numpy as np

from . import backend, kernels
from .autograd import Tensor, enable_grad, increment_version

__all__ = [
    "Optimizer", "SGD", "RMSprop", "Adam", "AdamW",
    "LRScheduler", "StepLR", "CosineAnnealingLR", "OneCycleLR", "MultiStepLR", "LambdaLR", "LinearLR",
    "ReduceLROnPlateau", "SequentialLR",
]


# ============================================================================ helpers
def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_nonneg(name, value):
    """Raise ValueError unless ``value`` is a real number >= 0 (NaN is rejected too)."""
    if not _is_real(value) or not value >= 0:
        raise ValueError(f"Invalid {name}: {value!r} (expected a number >= 0)")


def _check_unit_interval(name, value, *, closed_right=False):
    """Raise ValueError unless ``0 <= value < 1`` (or ``<= 1`` when ``closed_right``)."""
    ok = _is_real(value) and value >= 0 and (value <= 1 if closed_right else value < 1)
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"Invalid {name}: {value!r} (expected a number in {interval})")


def _grad_array(p):
    """The gradient of ``p`` as an array of ``p``'s dtype, or None when there is none."""
    g = p.grad
    if g is None:
        return None
    g = g.data if isinstance(g, Tensor) else g
    if g.shape != p.data.shape:
        raise ValueError(f"gradient of shape {tuple(g.shape)} does not match parameter of shape "
                         f"{tuple(p.data.shape)}")
    if g.dtype != p.data.dtype:
        g = g.astype(p.data.dtype)
    return g


# ============================================================================ optimizers
class Optimizer:
    """Base class of the optimizers.

    Args:
        params: an iterable of parameters (Tensors), or an iterable of dicts, each with a
            ``"params"`` entry and optional hyper-parameters overriding ``defaults``.
        defaults: the hyper-parameters (name -> value) used by groups that do not set them.

    Attributes:
        param_groups: list of dicts; each holds ``"params"`` (a list) and every hyper-parameter.
        state: per-parameter state (a dict keyed by the parameter object).
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self._validate_group(self.defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}

        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, got a single Tensor; "
                            "pass e.g. model.parameters() or [tensor]")
        if isinstance(params, dict):
            params = [params]
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    # ------------------------------------------------------------- groups
    def _validate_group(self, group: dict) -> None:  # pragma: no cover - overridden
        pass

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (a dict with ``"params"``), filling in default settings."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if params is None:
            raise ValueError("a parameter group needs a 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("parameters must be given in an ordered collection, not a set")
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("a parameter group contains the same parameter twice")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if existing.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")

        group = {k: v for k, v in param_group.items() if k != "params"}
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate_group(group)
        group["params"] = params
        self.param_groups.append(group)

    # ------------------------------------------------------------- gradients
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients: set ``p.grad = None`` (or zero them in place if not set_to_none)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
            for p in group["params"]:
                if p.grad is not None:
                    # changed in place (a compiled kernel may write p.data): a graph that used the old
                    # values must not backward any more (autograd.py, "version")
                    increment_version(p)
        return loss

    def _update_group(self, group: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------- (de)serialisation
    def state_dict(self) -> dict:
        """A snapshot of the optimizer as plain dicts, lists, numbers and (copied) arrays.

        ``{"state": {index: {name: array_or_number}}, "param_groups": [{..., "params": [index]}]}``
        where the index counts parameters over all groups in order.
        """
        index = 0
        groups, state = [], {}
        for group in self.param_groups:
            g = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
            g["params"] = []
            for p in group["params"]:
                g["params"].append(index)
                st = self.state.get(p)
                if st:
                    state[index] = {k: (v.copy() if hasattr(v, "shape") else v) for k, v in st.items()}
                index += 1
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by :meth:`state_dict` (arrays are copied)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state dict has {len(saved_groups)} parameter groups, "
                             f"optimizer has {len(self.param_groups)}")
        for saved, group in zip(saved_groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("state dict's parameter groups do not match the optimizer's sizes")
        index_to_param = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for i, p in zip(saved["params"], group["params"]):
                index_to_param[int(i)] = p

        new_state = {}
        for key, st in state_dict["state"].items():
            p = index_to_param.get(int(key))
            if p is None:
                raise ValueError(f"state dict holds state for unknown parameter index {key!r}")
            device = backend.device_of(p.data)
            entry = {}
            for name, value in st.items():
                if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
                    if tuple(value.shape) != tuple(p.data.shape):
                        raise ValueError(f"state {name!r} of parameter {key} has shape "
                                         f"{tuple(value.shape)}, expected {tuple(p.data.shape)}")
                    value = backend.to_device(value, device).astype(p.data.dtype, copy=True)
                elif hasattr(value, "item"):  # 0-d array or NumPy scalar
                    value = value.item()
                entry[name] = value
            new_state[p] = entry

        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            g = dict(group)
            for k, v in saved.items():
                if k != "params":
                    g[k] = tuple(v) if isinstance(group.get(k), tuple) else v
            self._validate_group(g)
            new_groups.append(g)
        for group, g in zip(self.param_groups, new_groups):
            group.update(g)  # keep the same dict objects (schedulers may hold them)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        lines.append(")")
        return "\n".join(lines)


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum, Nesterov momentum and weight decay.

    Per parameter ``p`` with gradient ``g`` (the same arithmetic as ``torch.optim.SGD``)::

        d = g + weight_decay * p   (+ (l2_lambda / n_train) * p   if p.ndim >= 2)
        if momentum:
            buf = d                                      on the first step
            buf = momentum * buf + (1 - dampening) * d   afterwards
            d = d + momentum * buf   if nesterov   else   buf
        p -= lr * d

    **Nielsen's L2 regularisation.** Chapter 3 of Nielsen's *Neural Networks and Deep Learning*
    (network2.py) adds ``(lambda / (2 n)) * sum(w**2)`` to the cost, ``n`` being the size of
    the training set, so the gradient gains ``(lambda / n) * w``. Give ``l2_lambda`` (lambda)
    and ``n_train`` (n) to get exactly that: an extra weight decay of ``l2_lambda / n_train``.
    Chapter 6's network3.py divides by the number of mini-batches instead of n; pass that as
    ``n_train`` to reproduce it (``cnnlab train --l2`` and ``cnnlab reproduce`` do).
    Like Nielsen, it is applied to *weights only*: parameters with ``ndim >= 2`` (linear and
    convolution weights), never to biases or other 1-D parameters. ``weight_decay`` on the
    other hand applies to every parameter, as in PyTorch; the two add up.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        dampening: dampening for momentum, in [0, 1].
        weight_decay: L2 penalty added to the gradient of every parameter (>= 0).
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening == 0).
        l2_lambda: Nielsen's lambda (>= 0); needs ``n_train``.
        n_train: number of training examples ``n`` used to scale ``l2_lambda``.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 l2_lambda=0.0, n_train=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, l2_lambda=l2_lambda, n_train=n_train)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("lr", group["lr"])
        _check_nonneg("momentum", group["momentum"])
        _check_unit_interval("dampening", group["dampening"], closed_right=True)
        _check_nonneg("weight_decay", group["weight_decay"])
        _check_nonneg("l2_lambda", group["l2_lambda"])
        n = group["n_train"]
        if n is not None and (not _is_real(n) or not n > 0):
            raise ValueError(f"Invalid n_train: {n!r} (expected a positive number of training examples)")
        if group["l2_lambda"] > 0 and n is None:
            raise ValueError("l2_lambda > 0 needs n_train (the training-set size n in lambda / n)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening == 0")

    def _update_group(self, group):
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        weight_decay = float(group["weight_decay"])
        nesterov = bool(group["nesterov"])
        l2 = float(group["l2_lambda"]) / float(group["n_train"]) if group["l2_lambda"] else 0.0

        for p in group["params"]:
            g = _grad_array(p)
            if g is None:
                continue
            decay = weight_decay + (l2 if p.data.ndim >= 2 else 0.0)
            if kernels.use_compiled_sgd(p.data, g):
                self._fused_update(p, g, lr, decay, momentum, dampening, nesterov)
                continue
            d = g + decay * p.data if decay != 0 else g
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = d.copy()
                    state["momentum_buffer"] = buf
                else:
                    buf *= momentum
                    buf += (1.0 - dampening) * d
                d = d + momentum * buf if nesterov else buf
            p.data -= lr * d

    def _fused_update(self, p, g, lr, decay, momentum, dampening, nesterov):
        """The update above in one compiled pass: no temporaries, the parameter read and written once,
        bit for bit the same (benchmarks/README.md, "SGD update")."""
        t = p.data.dtype.type
        buf, first = np.empty(0, p.data.dtype), False  # momentum 0: no buffer
        if momentum != 0:
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            first = buf is None
            if first:
                buf = state["momentum_buffer"] = np.empty_like(p.data)
            elif not (isinstance(buf, np.ndarray) and buf.flags.c_contiguous and buf.dtype == p.data.dtype):
                buf = state["momentum_buffer"] = np.ascontiguousarray(backend.to_device(buf, "cpu"), p.data.dtype)
        kernels.sgd_update(p.data, np.ascontiguousarray(g), buf, t(lr), t(decay), t(momentum), t(1.0 - dampening),
                           nesterov, first)


class RMSprop(Optimizer):
    r"""RMSProp (Tieleman & Hinton, 2012), with the same arithmetic as ``torch.optim.RMSprop``.

    Each weight's step is divided by a running root mean square of its recent gradients, so
    weights with large gradients take smaller steps. Per parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g               (v starts at 0)
        if centered:                                      (divide by a running standard deviation)
            m = alpha * m + (1 - alpha) * g               (m starts at 0)
            r = sqrt(v - m * m) + eps
        else:
            r = sqrt(v) + eps
        if momentum:
            buf = momentum * buf + g / r                  (buf starts at 0)
            p -= lr * buf
        else:
            p -= lr * g / r

    With the defaults it is the rule of cs231n's solver (decay 0.99, eps 1e-8).

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        alpha: smoothing constant of the running average of squared gradients, in [0, 1].
        eps: term added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        momentum: momentum factor (>= 0).
        centered: divide by the gradients' running standard deviation instead of their running
            root mean square.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("lr", group["lr"])
        _check_unit_interval("alpha", group["alpha"], closed_right=True)
        _check_nonneg("eps", group["eps"])
        _check_nonneg("weight_decay", group["weight_decay"])
        _check_nonneg("momentum", group["momentum"])

    def _update_group(self, group):
        lr = float(group["lr"])
        alpha = float(group["alpha"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        momentum = float(group["momentum"])
        centered = bool(group["centered"])

        for p in group["params"]:
            g = _grad_array(p)
            if g is None:
                continue
            xp = backend.get_array_module(p.data)
            state = self.state.setdefault(p, {})
            if "step" not in state:
                state["step"] = 0
                state["square_avg"] = xp.zeros_like(p.data)
            if centered and "grad_avg" not in state:
                state["grad_avg"] = xp.zeros_like(p.data)
            if momentum != 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            state["step"] += 1

            if weight_decay != 0:
                g = g + weight_decay * p.data
            # the same roundings as torch: v * alpha + ((1 - alpha) * g) * g, and m moved toward g
            v = state["square_avg"]
            v *= alpha
            v += ((1.0 - alpha) * g) * g
            if centered:
                m = state["grad_avg"]
                if 1.0 - alpha < 0.5:  # torch's lerp: m + w * (g - m) for w < 0.5, else g - (1 - w) * (g - m)
                    m += (1.0 - alpha) * (g - m)
                else:
                    m[...] = g - alpha * (g - m)
                r = v - m * m
                xp.sqrt(r, out=r)
            else:
                r = xp.sqrt(v)
            r += eps
            step = g / r
            if momentum != 0:
                buf = state["momentum_buffer"]
                buf *= momentum
                buf += step
                step = buf
            p.data -= lr * step


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with the same arithmetic as ``torch.optim.Adam``.

    Per parameter, at step ``t`` (starting at 1)::

        g = g + weight_decay * p                 (coupled L2; AdamW decouples it instead)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad else v
        p -= lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        betas: decay rates of the first and second moment averages, each in [0, 1).
        eps: term added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        amsgrad: use the running maximum of the second moment (AMSGrad).
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("lr", group["lr"])
        betas = group["betas"]
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))") from None
        _check_unit_interval("betas[0]", beta1)
        _check_unit_interval("betas[1]", beta2)
        group["betas"] = (beta1, beta2)
        _check_nonneg("eps", group["eps"])
        _check_nonneg("weight_decay", group["weight_decay"])

    def _update_group(self, group):
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        amsgrad = bool(group["amsgrad"])

        for p in group["params"]:
            g = _grad_array(p)
            if g is None:
                continue
            xp = backend.get_array_module(p.data)
            state = self.state.setdefault(p, {})
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = xp.zeros_like(p.data)
                state["exp_avg_sq"] = xp.zeros_like(p.data)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]

            if weight_decay != 0:
                if self._decoupled:
                    p.data *= 1.0 - lr * weight_decay
                else:
                    g = g + weight_decay * p.data

            m, v = state["exp_avg"], state["exp_avg_sq"]
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * (g * g)

            if amsgrad:
                vmax = state["max_exp_avg_sq"]
                xp.maximum(vmax, v, out=vmax)
                denom = xp.sqrt(vmax)
            else:
                denom = xp.sqrt(v)
            denom /= math.sqrt(1.0 - beta2 ** t)
            denom += eps
            update = m / denom
            update *= lr / (1.0 - beta1 ** t)
            p.data -= update


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter), like ``torch.optim.AdamW``.

    Identical to :class:`Adam` except that the weight decay is not added to the gradient;
    instead each step first shrinks the parameter: ``p *= 1 - lr * weight_decay``.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


# ============================================================================ schedulers
class _LastLR:
    """What every scheduler shares: the last learning rates written, and its state as plain values."""

    def get_last_lr(self) -> list:
        """The learning rates last written by the scheduler, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """The scheduler's state (everything except the optimizer), as plain Python values."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "optimizer"})

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state saved by :meth:`state_dict`."""
        for k, v in copy.deepcopy(dict(state_dict)).items():
            setattr(self, k, v)


class LRScheduler(_LastLR):
    """Base class of the learning-rate schedulers.

    On construction each group gets ``"initial_lr"`` (its current lr, unless already set),
    ``base_lrs`` records those, and the schedule's value for step 0 is written to the groups.
    Each :meth:`step` advances ``last_epoch`` by one and writes the new ``group["lr"]``.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a cnnlab Optimizer")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.step()

    def get_lr(self) -> list:  # pragma: no cover - abstract
        """The learning rates of the groups at ``self.last_epoch``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance the schedule by one step (one epoch or one batch, as the user chooses)."""
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (expected a positive integer)")


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps.

    ``lr = base_lr * gamma ** (last_epoch // step_size)``, computed multiplicatively from the
    current ``group["lr"]`` like PyTorch's (so it composes with manual changes to the lr).
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        _check_positive_int("step_size", step_size)
        _check_nonneg("gamma", gamma)
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from each group's base lr down to ``eta_min`` over ``T_max`` steps.

    Uses the closed form ``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``
    (``t = last_epoch``), which equals PyTorch's recursive form for a plain schedule; past
    ``T_max`` it rises again with period ``2 * T_max`` as PyTorch's does. Unlike PyTorch's
    recursive form it ignores changes made to ``group["lr"]`` by anything else.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):
        _check_positive_int("T_max", T_max)
        _check_nonneg("eta_min", eta_min)
        self.T_max = int(T_max)
        self.eta_min = eta_min
        super().__init__(optimizer)

    def get_lr(self):
        c = (1.0 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2.0
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up to ``max_lr``, then anneal far below.

    Call :meth:`step` once per batch, ``total_steps`` times at most. The lr starts at
    ``initial_lr = max_lr / div_factor`` (set on construction), rises to ``max_lr`` over the
    first ``pct_start * total_steps`` steps, then falls to
    ``min_lr = initial_lr / final_div_factor`` at step ``total_steps - 1``. With
    ``three_phase=True`` it first comes back down to ``initial_lr`` symmetrically and only then
    anneals to ``min_lr``. ``anneal_strategy`` is ``"cos"`` or ``"linear"``. The values match
    ``torch.optim.lr_scheduler.OneCycleLR``.

    Unlike PyTorch, momentum (or Adam's beta1) is **not** cycled: only the lr changes.

    Args:
        optimizer: the optimizer whose groups' lr is scheduled.
        max_lr: peak lr, a number or one per parameter group.
        total_steps: number of steps in the cycle (or give ``epochs`` and ``steps_per_epoch``).
    """

    def __init__(self, optimizer, max_lr, total_steps=None, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, anneal_strategy="cos", three_phase=False, *,
                 epochs=None, steps_per_epoch=None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a cnnlab Optimizer")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
            _check_positive_int("epochs", epochs)
            _check_positive_int("steps_per_epoch", steps_per_epoch)
            total_steps = int(epochs) * int(steps_per_epoch)
        _check_positive_int("total_steps", total_steps)
        _check_unit_interval("pct_start", pct_start, closed_right=True)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"Invalid anneal_strategy: {anneal_strategy!r} (expected 'cos' or 'linear')")
        if not _is_real(div_factor) or not div_factor > 0:
            raise ValueError(f"Invalid div_factor: {div_factor!r} (expected a number > 0)")
        if not _is_real(final_div_factor) or not final_div_factor > 0:
            raise ValueError(f"Invalid final_div_factor: {final_div_factor!r} (expected a number > 0)")

        groups = optimizer.param_groups
        if isinstance(max_lr, (list, tuple)):
            if len(max_lr) != len(groups):
                raise ValueError(f"Invalid max_lr: expected {len(groups)} values (one per parameter "
                                 f"group), got {len(max_lr)}")
            max_lrs = list(max_lr)
        else:
            max_lrs = [max_lr] * len(groups)
        for v in max_lrs:
            _check_nonneg("max_lr", v)

        self.total_steps = int(total_steps)
        self.anneal_strategy = anneal_strategy
        self.three_phase = bool(three_phase)
        # Each phase: (last step of the phase, lr key at its start, lr key at its end).
        n = self.total_steps
        if self.three_phase:
            self.phases = [
                [float(pct_start * n) - 1, "initial_lr", "max_lr"],
                [float(2 * pct_start * n) - 2, "max_lr", "initial_lr"],
                [float(n - 1), "initial_lr", "min_lr"],
            ]
        else:
            self.phases = [
                [float(pct_start * n) - 1, "initial_lr", "max_lr"],
                [float(n - 1), "max_lr", "min_lr"],
            ]
        for group, peak in zip(groups, max_lrs):
            group["max_lr"] = peak
            group["initial_lr"] = peak / div_factor
            group["min_lr"] = group["initial_lr"] / final_div_factor
        super().__init__(optimizer)

    def _anneal(self, start, end, frac):
        if self.anneal_strategy == "cos":
            return end + (start - end) * (1.0 + math.cos(math.pi * frac)) / 2.0
        return start + (end - start) * frac

    def get_lr(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {t} times, more than total_steps={self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            begin = 0.0
            for i, (end, start_key, end_key) in enumerate(self.phases):
                if t <= end or i == len(self.phases) - 1:
                    span = end - begin
                    frac = (t - begin) / span if span != 0 else 1.0
                    lrs.append(self._anneal(group[start_key], group[end_key], frac))
                    break
                begin = end
        return lrs


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each of the ``milestones`` (step counts; one listed
    twice multiplies twice), multiplicatively from the current ``group["lr"]``, as PyTorch's."""

    def __init__(self, optimizer, milestones, gamma=0.1):
        milestones = list(milestones) if isinstance(milestones, (list, tuple, set)) else None
        if not milestones:
            raise ValueError(f"Invalid milestones: {milestones!r} (expected a non-empty list of step counts)")
        for m in milestones:
            _check_positive_int("milestone", m)
        _check_nonneg("gamma", gamma)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self):
        hits = self.milestones.count(self.last_epoch)
        return [group["lr"] * self.gamma ** hits for group in self.optimizer.param_groups]


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(step)``: one function for every group, or one per group. The
    functions are not part of ``state_dict`` (as in PyTorch): give them again when restoring."""

    def __init__(self, optimizer, lr_lambda):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a cnnlab Optimizer")
        n = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(lambdas) != n:
            raise ValueError(f"Invalid lr_lambda: expected {n} functions (one per parameter group), got {len(lambdas)}")
        if not all(callable(f) for f in lambdas):
            raise TypeError("Invalid lr_lambda: expected a function of the step count (or one per group)")
        self.lr_lambdas = lambdas
        super().__init__(optimizer)

    def get_lr(self):
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]

    def state_dict(self) -> dict:
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in ("optimizer", "lr_lambdas")})


class LinearLR(LRScheduler):
    """Linear warm-up (or decay): the lr goes from ``start_factor * base_lr`` to ``end_factor * base_lr``
    over ``total_iters`` steps and stays there: ``base_lr * (start + (end - start) * min(t, total) / total)``,
    the closed form of PyTorch's LinearLR (which it equals for a plain schedule)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        if not _is_real(start_factor) or not 0 < start_factor <= 1:
            raise ValueError(f"Invalid start_factor: {start_factor!r} (expected a number in (0, 1])")
        if not _is_real(end_factor) or not 0 <= end_factor <= 1:
            raise ValueError(f"Invalid end_factor: {end_factor!r} (expected a number in [0, 1])")
        _check_positive_int("total_iters", total_iters)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, int(total_iters)
        super().__init__(optimizer)

    def get_lr(self):
        frac = min(self.last_epoch, self.total_iters) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * frac
        return [base * factor for base in self.base_lrs]


class ReduceLROnPlateau(_LastLR):
    """Divide the lr when a metric stops improving: ``step(metric)`` once per epoch; after more than
    ``patience`` epochs without an improvement (better than the best by ``threshold``, relative or
    absolute), every group's lr becomes ``max(lr * factor, min_lr)``, then ``cooldown`` epochs pass
    before counting again. PyTorch's rules and defaults."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a cnnlab Optimizer")
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {mode!r} (expected 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"Invalid threshold_mode: {threshold_mode!r} (expected 'rel' or 'abs')")
        if not _is_real(factor) or not 0 <= factor < 1:
            raise ValueError(f"Invalid factor: {factor!r} (expected a number in [0, 1))")
        for name, v in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"Invalid {name}: {v!r} (expected a whole number >= 0)")
        _check_nonneg("threshold", threshold)
        _check_nonneg("eps", eps)
        groups = optimizer.param_groups
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * len(groups)
        if len(min_lrs) != len(groups):
            raise ValueError(f"Invalid min_lr: expected {len(groups)} values (one per parameter group), "
                             f"got {len(min_lrs)}")
        for v in min_lrs:
            _check_nonneg("min_lr", v)
        self.optimizer = optimizer
        self.mode, self.factor, self.patience, self.threshold = mode, factor, int(patience), threshold
        self.threshold_mode, self.cooldown, self.min_lrs, self.eps = threshold_mode, int(cooldown), min_lrs, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = self.last_epoch = 0
        self._last_lr = [group["lr"] for group in groups]

    def is_better(self, value, best) -> bool:
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (best * (1 - self.threshold) if rel else best - self.threshold)
        return value > (best * (1 + self.threshold) if rel else best + self.threshold)

    def step(self, metrics) -> None:
        """Record one epoch's metric (a number, or a one-element Tensor)."""
        value = float(metrics.item() if isinstance(metrics, Tensor) else metrics)
        self.last_epoch += 1
        if self.is_better(value, self.best):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(group["lr"] * self.factor, floor)
                if group["lr"] - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class SequentialLR:
    """Schedulers one after another (e.g. a LinearLR warm-up, then cosine annealing): ``schedulers[i]``
    runs from ``milestones[i - 1]`` on, restarted at step 0 there, as PyTorch's SequentialLR."""

    def __init__(self, optimizer, schedulers, milestones):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a cnnlab Optimizer")
        schedulers, milestones = list(schedulers), list(milestones)
        if len(schedulers) < 1 or len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: expected one milestone fewer than schedulers, got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if any(not isinstance(s, LRScheduler) or s.optimizer is not optimizer for s in schedulers):
            raise ValueError("SequentialLR: every scheduler must be an LRScheduler of this optimizer")
        for m in milestones:
            _check_positive_int("milestone", m)
        if milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must increase, got {milestones}")
        self.optimizer, self.schedulers, self.milestones = optimizer, schedulers, [int(m) for m in milestones]
        # as PyTorch: undo what the later schedulers' construction did, then start the first one again
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in schedulers:
            s.last_epoch -= 1
        schedulers[0].step()
        self.last_epoch = 0
        self._last_lr = schedulers[0].get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect.bisect_right(self.milestones, self.last_epoch)
        s = self.schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            # restart it at its step 0, from the initial lr (PyTorch steps it to 0 in closed form)
            s.last_epoch = -1
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"]
        s.step()
        self._last_lr = s.get_last_lr()

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "_last_lr": list(self._last_lr),
                "schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch, self._last_lr = state_dict["last_epoch"], list(state_dict["_last_lr"])
        for s, st in zip(self.schedulers, state_dict["schedulers"]):
            s.load_state_dict(st)
