"""Fully connected layers, dropout, batch normalisation and the classification losses."""

from __future__ import annotations

import numpy as np

from .. import backend, kernels
from ..autograd import Function, Tensor
from . import ops


class Linear(Function):
    """y = x @ weight.T + bias, for x of shape (..., in_features)."""

    def forward(self, x, w, *maybe_bias):
        self.x, self.w, self.has_bias = x, w, bool(maybe_bias)
        x2 = x.reshape(-1, x.shape[-1])
        out = kernels.linear_forward(x2, w)  # (M, in) @ (in, out) -> (M, out); a few rows: (w @ x2.T).T
        if maybe_bias:
            out += maybe_bias[0]
        return out.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        g2 = g.reshape(-1, g.shape[-1])
        x2 = self.x.reshape(-1, self.x.shape[-1])
        needs = self.needs_input_grad
        gx, gw = kernels.linear_backward(g2, x2, self.w, needs[0], needs[1])
        gx = gx.reshape(self.x.shape) if gx is not None else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g2.sum(axis=0) if needs[2] else None)


def linear(x, weight, bias=None):
    """Fully connected layer: x (..., in) -> (..., out) with weight (out, in), bias (out,)."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but weight "
                         f"{weight.shape} expects {weight.shape[-1]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dimensions start_dim..end_dim, as torch.flatten (start_dim=0: one long vector);
    start_dim=1 keeps the batch: (N, C, H, W) -> (N, C*H*W), which is what nn.Flatten does."""
    return ops.flatten(x, start_dim, end_dim)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = backend.random(x.shape, x.data) >= p
    scale = np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    return x * Tensor(keep.astype(x.dtype) * scale)


def dropout2d(x, p=0.5, training=True):
    """Channel dropout (Tompson et al. 2015): each whole feature map of (N, C, H, W) is zeroed with
    probability p, the kept maps scaled by 1/(1-p). A 3-D input is read as (N, C, L), as PyTorch reads it."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout2d: p must be in [0, 1], got {p}")
    if x.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 4-D input (N, C, H, W) (or 3-D (N, C, L)), got shape {x.shape}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = backend.random(x.shape[:2], x.data) >= p  # one draw per (sample, channel)
    mask = (keep.astype(x.dtype) / x.dtype.type(1.0 - p)).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    return x * Tensor(mask)


class BatchNormTrain(Function):
    """Batch normalisation with batch statistics over all axes but the channel axis (1)."""

    def forward(self, x, w, b, eps, stats):
        xp = backend.get_array_module(x)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes)
        xc = x - mean.reshape(shape)
        var = (xc * xc).mean(axis=axes)
        inv = 1.0 / xp.sqrt(var + eps)
        xhat = xc * inv.reshape(shape)
        self.xhat, self.inv, self.w, self.axes, self.shape = xhat, inv, w, axes, shape
        stats["mean"], stats["var"] = mean, var  # for the caller's running statistics
        return xhat * w.reshape(shape) + b.reshape(shape)

    def backward(self, g):
        xhat, inv, axes, shape = self.xhat, self.inv, self.axes, self.shape
        m = g.size // g.shape[1]
        gb = g.sum(axis=axes)
        gw = (g * xhat).sum(axis=axes)
        # dx = w * inv / m * (m*g - sum(g) - xhat * sum(g*xhat))
        gx = (self.w * inv / m).reshape(shape) * (m * g - gb.reshape(shape) - xhat * gw.reshape(shape))
        return gx, gw, gb


class BatchNormReLUTrain(Function):
    """relu(batch norm with batch statistics), one compiled pass per channel (NumPy floats)."""

    def forward(self, x, w, b, eps, stats):
        out, mean, var, inv = kernels.bn_relu_train_forward(x, w, b, eps)
        self.x, self.out, self.w, self.mean, self.inv = x, out, w, mean, inv
        stats["mean"], stats["var"] = mean.astype(x.dtype), var.astype(x.dtype)
        return out

    def backward(self, g):
        gx, gw, gb = kernels.bn_relu_train_backward(g, self.x, self.out, self.w, self.mean, self.inv)
        return gx, gw.astype(self.w.dtype, copy=False), gb.astype(self.w.dtype, copy=False)


class BatchNormReLUEval(Function):
    """relu((x - running_mean) * inv * w + b) with the running statistics fixed (inv given):
    one compiled pass with the normalisation folded into a scale and shift per channel."""

    def forward(self, x, w, b, running_mean, inv):
        scale = inv * w
        self.x, self.w, self.rm, self.inv = x, w, running_mean, inv
        self.out = kernels.scale_shift_relu(x, scale, b - running_mean * scale)
        return self.out

    def backward(self, g):
        shape = (1, -1) + (1,) * (g.ndim - 2)
        axes = (0,) + tuple(range(2, g.ndim))
        gm = g * (self.out > 0)
        xhat = (self.x - self.rm.reshape(shape)) * self.inv.reshape(shape)
        gx = gm * (self.inv * self.w).reshape(shape) if self.needs_input_grad[0] else None
        return gx, (gm * xhat).sum(axis=axes), gm.sum(axis=axes)


def _bn_params(name, x, running_mean, running_var, weight, bias):
    """Check shapes; (weight, bias) with ones / zeros for missing ones."""
    if x.ndim < 2:
        raise ValueError(f"{name}: expected input of at least 2 dimensions (N, C, ...), got shape {x.shape}")
    C = x.shape[1]
    xp = backend.get_array_module(x.data)
    weight = weight if weight is not None else Tensor(xp.ones(C, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(C, dtype=x.dtype))
    for label, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                     ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (C,):
            raise ValueError(f"{name}: {label} must have shape ({C},) for input {x.shape}, got {tuple(t.shape)}")
    return weight, bias


def _train_mode(name, function, x, running_mean, running_var, weight, bias, momentum, eps):
    """``function`` (normalising with the batch's statistics) applied to x; the running statistics
    updated in place: running = (1 - momentum) * running + momentum * batch, the variance unbiased."""
    if x.size // x.shape[1] <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, got input {x.shape}")
    stats = {}
    out = function.apply(x, weight, bias, eps=eps, stats=stats)
    if running_mean is None:
        return out
    update_running_stats(running_mean, running_var, stats["mean"], stats["var"], x.size // x.shape[1], momentum)
    return out


def update_running_stats(running_mean, running_var, mean, var, n, momentum) -> None:
    """In place: running = (1 - momentum) * running + momentum * batch, with the batch variance
    ``var`` (biased, over ``n`` values per channel) made unbiased, as PyTorch does."""
    rm, rv = _data(running_mean), _data(running_var)
    rm *= 1 - momentum
    rm += momentum * mean
    rv *= 1 - momentum
    rv += momentum * var * (n / (n - 1))


def _data(t):
    return t.data if isinstance(t, Tensor) else t


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over the channel axis (1) of (N, C) or (N, C, *S) input.

    In training the batch statistics are used and the running ones updated in place
    (running = (1 - momentum) * running + momentum * batch, the variance unbiased);
    otherwise the running statistics are used.
    """
    weight, bias = _bn_params("batch_norm", x, running_mean, running_var, weight, bias)
    xp = backend.get_array_module(x.data)
    if training:
        return _train_mode("batch_norm", BatchNormTrain, x, running_mean, running_var, weight, bias, momentum, eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    rm, rv = _data(running_mean), _data(running_var)
    inv = (1.0 / xp.sqrt(rv + eps)).astype(x.dtype)
    return (x - Tensor(rm.reshape(shape).astype(x.dtype))) * Tensor(inv.reshape(shape)) * weight.reshape(shape) \
        + bias.reshape(shape)


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5):
    """relu(batch_norm(x, ...)), the same arguments as ``batch_norm``.

    On NumPy float arrays (with the compiled kernels on) it is one operator: each channel's
    statistics, normalisation, scale, shift and ReLU in one compiled pass, and the backward pass in
    two, where the separate operators make about ten passes over the activations and their
    temporaries. The result equals the composition up to floating-point rounding (the sums are
    taken in float64). Elsewhere (CuPy) it is the composition.
    """
    weight, bias = _bn_params("batch_norm_relu", x, running_mean, running_var, weight, bias)
    if not (isinstance(x, Tensor) and kernels.use_compiled(x.data)):
        return ops.relu(batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps))
    if training:
        return _train_mode("batch_norm_relu", BatchNormReLUTrain, x, running_mean, running_var, weight, bias,
                           momentum, eps)
    rm, rv = _data(running_mean), _data(running_var)
    inv = (1.0 / np.sqrt(rv.astype(np.float64) + eps)).astype(x.dtype)
    return BatchNormReLUEval.apply(x, weight, bias, rm.astype(x.dtype), inv)


def _normalise_last(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over ``axes``, the variance biased (as PyTorch's normalisations)."""
    d = x - ops.mean(x, axes, keepdim=True)
    return d / ops.sqrt(ops.mean(d * d, axes, keepdim=True) + eps)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation (Ba et al. 2016): each sample normalised over its last dimensions,
    ``normalized_shape``, then scaled by ``weight`` and shifted by ``bias`` (both of that shape)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} must be the last dimensions of the input, "
                         f"got input of shape {x.shape}")
    for label, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {label} must have shape {shape}, got {tuple(t.shape)}")
    out = _normalise_last(x, tuple(range(x.ndim - k, x.ndim)), eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation (Wu and He 2018): the C channels of (N, C, *) split into ``num_groups`` groups,
    each sample's group normalised over its channels and positions, then a scale and shift per channel."""
    if x.ndim < 2:
        raise ValueError(f"group_norm: expected input of at least 2 dimensions (N, C, ...), got shape {x.shape}")
    N, C = x.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1 \
            or C % num_groups:
        raise ValueError(f"group_norm: num_groups must be a positive int dividing the {C} channels, "
                         f"got {num_groups!r}")
    for label, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (C,):
            raise ValueError(f"group_norm: {label} must have shape ({C},), got {tuple(t.shape)}")
    per_group = int(np.prod(x.shape[1:])) // int(num_groups)
    out = _normalise_last(x.reshape(N, int(num_groups), per_group), (2,), eps).reshape(x.shape)
    shape = (1, C) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    return out if bias is None else out + bias.reshape(shape)


class LocalResponseNorm(Function):
    """out[:, c] = x[:, c] / (k + alpha / size * sum of x[:, j]^2 over channels j near c) ** beta.

    The window of channel c is c - size//2 .. c + (size-1)//2 (PyTorch's). With
    d_c = k + alpha/size * window sum, the gradient is
    dx_j = g_j d_j^-beta - 2 alpha beta / size * x_j * sum over the c whose window holds j of
    g_c x_c d_c^(-beta-1).
    """

    def forward(self, x, size, alpha, beta, k):
        # NumPy floats: the batch split over the cores, and a compiled backward pass
        self.compiled = kernels.use_compiled_lrn(x)
        if self.compiled and not any(self.needs_input_grad):  # inference: one pass, nothing kept
            return kernels.lrn_forward_eval(x, size, alpha, beta, k)
        lrn = kernels.lrn_forward if self.compiled else kernels.generic.lrn_forward
        out, self.d, self.scale = lrn(x, size, alpha, beta, k)
        self.x, self.size, self.alpha, self.beta = x, size, alpha, beta
        return out

    def backward(self, g):
        lrn = kernels.lrn_backward if self.compiled else kernels.generic.lrn_backward
        return (lrn(g, self.x, self.d, self.scale, self.size, self.alpha, self.beta),)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels (Krizhevsky et al., AlexNet), PyTorch's
    definition: each value is divided by (k + alpha / size * the sum of squares of ``size``
    neighbouring channels at the same position) ** beta. Input (N, C, *S) with at least one
    spatial axis; k must be positive (PyTorch does not check)."""
    if x.ndim < 3:
        raise ValueError(f"local_response_norm: expected input of 3 or more dimensions (N, C, ...), "
                         f"got shape {tuple(x.shape)}")
    check_lrn_args("local_response_norm", size, alpha, beta, k)
    return LocalResponseNorm.apply(x, size=int(size), alpha=float(alpha), beta=float(beta), k=float(k))


def check_lrn_args(name, size, alpha, beta, k):
    """Raise a ValueError naming ``name`` and the argument if the settings are unusable.

    Unlike PyTorch, k must be positive: with k <= 0 a window of zeros would divide by zero."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{name}: size must be a positive int, got {size!r}")
    for arg, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ValueError(f"{name}: {arg} must be a finite number, got {v!r}")
    if k <= 0:
        raise ValueError(f"{name}: k must be positive (each value is divided by (k + alpha/size * sum of "
                         f"squares) ** beta), got {k}")


class CrossEntropy(Function):
    """Mean (or sum) over the batch of -log softmax(logits)[target], with label smoothing."""

    def forward(self, logits, target, smoothing, reduction):
        xp = backend.get_array_module(logits)
        N, C = logits.shape
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        picked = logp[xp.arange(N), target]
        loss = -(1.0 - smoothing) * picked
        if smoothing:
            loss = loss - smoothing / C * logp.sum(axis=1)
        self.logp, self.target, self.smoothing, self.reduction = logp, target, smoothing, reduction
        total = loss.sum()
        return (total / N if reduction == "mean" else total).astype(logits.dtype)

    def backward(self, g):
        xp = backend.get_array_module(g)
        logp, target, eps = self.logp, self.target, self.smoothing
        N, C = logp.shape
        grad = xp.exp(logp)
        if eps:
            grad -= eps / C
        grad[xp.arange(N), target] -= 1.0 - eps
        scale = g / N if self.reduction == "mean" else g
        return grad * scale, None


def _check_target(name, logits, target):
    if logits.ndim != 2:
        raise ValueError(f"{name}: expected input of shape (N, C), got {logits.shape}")
    t = target.data if isinstance(target, Tensor) else target
    xp = backend.get_array_module(logits.data)
    t = xp.asarray(t)
    if t.ndim != 1 or t.shape[0] != logits.shape[0]:
        raise ValueError(f"{name}: target must have shape ({logits.shape[0]},) for input {logits.shape}, "
                         f"got {tuple(t.shape)}")
    if t.dtype.kind not in "iu":
        raise ValueError(f"{name}: target must hold integer class indices, got dtype {t.dtype}")
    if t.size and (int(t.min()) < 0 or int(t.max()) >= logits.shape[1]):
        raise ValueError(f"{name}: target values must be in [0, {logits.shape[1] - 1}], "
                         f"got min {int(t.min())}, max {int(t.max())}")
    return t


def cross_entropy(logits, target, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of softmax(logits) against integer targets.

    Args:
        logits: (N, C) unnormalised scores.
        target: (N,) integer class indices.
        label_smoothing: in [0, 1): mixes the one-hot target with the uniform distribution.
        reduction: 'mean' (default), 'sum' or 'none'.
    """
    t = _check_target("cross_entropy", logits, target)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if reduction in ("mean", "sum"):
        return CrossEntropy.apply(logits, Tensor(t), smoothing=float(label_smoothing), reduction=reduction)
    if reduction != "none":
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    logp = ops.log_softmax(logits, 1)
    xp = backend.get_array_module(logits.data)
    loss = -(1.0 - label_smoothing) * logp[xp.arange(logits.shape[0]), t]
    if label_smoothing:
        loss = loss - label_smoothing / logits.shape[1] * logp.sum(1)
    return loss


def nll_loss(log_probs, target, reduction="mean"):
    """Negative log-likelihood of (N, C) log-probabilities at integer targets (N,)."""
    t = _check_target("nll_loss", log_probs, target)
    xp = backend.get_array_module(log_probs.data)
    picked = -log_probs[xp.arange(log_probs.shape[0]), t]
    if reduction == "mean":
        return picked.mean()
    if reduction == "sum":
        return picked.sum()
    if reduction == "none":
        return picked
    raise ValueError(f"nll_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
