"""Synchronised batch normalisation: the statistics of the global batch, not of one process's part.

With N processes each holding rows of a global batch, plain batch norm would normalise each part
by its own mean and variance, and the trained model would differ from one process's. Here the
per-channel sums are summed over the processes (``comm.allreduce``), forward and backward:

    forward:  mean = sum(x) / m,  var = sum((x - mean)^2) / m     two allreduces of C numbers
    backward: dx = w * inv / m * (m * g - sum(g) - xhat * sum(g * xhat))   one allreduce of 2C

with m the global batch's values per channel. The two forward sums are taken one after the
other (not sum(x) and sum(x^2) at once) so the variance is as exact as one process's. The
parameter gradients (sum(g), sum(g * xhat)) are returned as this process's part: the gradient
allreduce after the backward pass adds the parts up, like every other parameter's.

The incoming gradient g must be that of the global batch's loss (each process's mean loss weighted
by its share of the batch, see ``DataParallel.backward``), or the sums would mix scales.
"""

from __future__ import annotations

import numpy as np

from .. import backend, kernels
from .. import functional as F
from ..autograd import Function, Tensor
from ..functional.layers import update_running_stats
from ..nn import BatchNorm1d, BatchNorm2d, Module

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm", "sync_batch_norm"]

# the layers it replaces, and the input dimensions each takes
PLAIN = {BatchNorm1d: (2, 3), BatchNorm2d: (4,)}


class SyncBatchNormTrain(Function):
    """Batch norm (then ReLU if ``relu``) with the statistics of the whole batch, summed over the
    processes of ``comm``.

    The arithmetic is that of the one-process batch norm + ReLU kernel (``kernels.bn_relu_train_*``,
    which every zoo net's [BatchNorm, ReLU] runs through on the CPU): sums, statistics and each
    value in float64, rounded once to the input's dtype; on NumPy arrays the same compiled loops
    in parts (``kernels.bn_sums``, ``bn_apply``, ``bn_grad_sums``, ``bn_grad_input``), elsewhere
    the array module's operations. So a float32 value here is, but for the order of the float64
    sums, the one-process value: a rounding-level difference would otherwise flip ReLU masks and
    max-pool winners now and then, and two float32 runs would drift apart.
    """

    def forward(self, x, w, b, eps, stats, comm, m, name, relu):
        xp = backend.get_array_module(x)
        compiled = kernels.compiled_applies(x)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        local = kernels.bn_sums(x) if compiled else x.astype(xp.float64).sum(axis=axes)
        mean = comm.allreduce(local, f"batch-norm mean (layer {name})") / m
        if compiled:
            local = kernels.bn_sums(x, mean)
        else:
            d = x.astype(xp.float64) - mean.reshape(shape)  # (N, C, *S) float64
            local = (d * d).sum(axis=axes)
        var = comm.allreduce(local, f"batch-norm variance (layer {name})") / m
        inv = 1.0 / xp.sqrt(var + eps)
        scale = w.astype(xp.float64) * inv  # normalise, scale and shift folded into x * scale + shift
        shift = b.astype(xp.float64) - mean * scale
        if compiled:
            out = kernels.bn_apply(x, scale, shift, relu)
        else:
            out = (x.astype(xp.float64) * scale.reshape(shape) + shift.reshape(shape)).astype(x.dtype)
            if relu:
                out = xp.maximum(out, 0)
        self.x, self.out, self.w, self.mean, self.inv, self.axes, self.shape = x, out, w, mean, inv, axes, shape
        self.comm, self.m, self.name, self.relu, self.compiled = comm, m, name, relu, compiled
        stats["mean"], stats["var"] = mean.astype(x.dtype), var.astype(x.dtype)
        return out

    def backward(self, g):
        xp = backend.get_array_module(g)
        shape, m, inv, mean = self.shape, self.m, self.inv, self.mean
        if self.compiled:
            gb, gw = kernels.bn_grad_sums(g, self.x, self.out, mean, self.relu)
        else:
            g64 = g.astype(xp.float64)
            if self.relu:
                g64 = g64 * (self.out > 0)
            d = self.x.astype(xp.float64) - mean.reshape(shape)
            gb, gw = g64.sum(axis=self.axes), (g64 * d).sum(axis=self.axes)
        gw = gw * inv  # this process's sum(g) and sum(g * xhat), float64
        C = gb.shape[0]
        both = self.comm.allreduce(xp.concatenate([gb, gw]), f"batch-norm gradient (layer {self.name})")
        a, q = both[:C] / m, both[C:] / m
        if self.compiled:
            gx = kernels.bn_grad_input(g, self.x, self.out, self.w, mean, inv, a, q, self.relu)
        else:
            # dx = w * inv * (g - sum(g) / m - xhat * sum(g * xhat) / m)
            k = self.w.astype(xp.float64) * inv
            gx = (k.reshape(shape) * (g64 - a.reshape(shape) - d * (inv * q).reshape(shape))).astype(g.dtype)
        dtype = self.w.dtype
        return gx, gw.astype(dtype), gb.astype(dtype)  # the parameters': this process's parts


def sync_batch_norm(x, running_mean, running_var, weight, bias, momentum, eps, comm, total_rows, name="batch norm",
                    relu=False):
    """Training-mode batch norm (then ReLU if ``relu``) of this process's rows ``x`` (N, C, *S)
    with the statistics of the global batch of ``total_rows`` rows spread over ``comm``'s
    processes; the running statistics (identical on every process) are updated with the global
    mean and unbiased variance."""
    C = x.shape[1]
    m = total_rows * (x.size // max(x.shape[0] * C, 1))  # values per channel in the global batch
    if m <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel in the global batch when training, "
                         f"got {total_rows} rows of shape {tuple(x.shape[1:])}")
    xp = backend.get_array_module(x.data)
    weight = weight if weight is not None else Tensor(xp.ones(C, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(C, dtype=x.dtype))
    stats = {}
    out = SyncBatchNormTrain.apply(x, weight, bias, eps=eps, stats=stats, comm=comm, m=m, name=name, relu=relu)
    if running_mean is not None:
        update_running_stats(running_mean, running_var, stats["mean"], stats["var"], m, momentum)
    return out


class SyncBatchNorm(Module):
    """A BatchNorm1d or BatchNorm2d whose training statistics are the global batch's.

    It holds the very parameters and running statistics of the layer it replaces, under the same
    names, so state dicts (and saved runs) are those of the plain model. In eval mode it is the
    plain layer: the running statistics are the same on every process.

    Args:
        plain: the BatchNorm1d / BatchNorm2d to synchronise.
        comm: the processes' communicator (``World``, or the NCCL one on GPUs).
        name: the layer's name in the model, for messages.
    """

    def __init__(self, plain, comm, name: str = "batch norm"):
        super().__init__()
        self.plain_type = type(plain)
        self.ndims = PLAIN[type(plain)]
        self.num_features, self.eps, self.momentum = plain.num_features, plain.eps, plain.momentum
        self.weight, self.bias = plain.weight, plain.bias
        self.running_mean, self.running_var = plain.running_mean, plain.running_var
        self.training = plain.training
        self.comm, self.name = comm, name

    relu_fusable = True  # Sequential runs [SyncBatchNorm, ReLU] as forward_relu, as for BatchNorm2d

    def forward(self, x):
        return self._run(x, False)

    def forward_relu(self, x):
        """relu(self(x)) as one operator, like BatchNorm2d.forward_relu (the same arithmetic)."""
        return self._run(x, True)

    def _run(self, x, relu):
        if x.ndim not in self.ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{self.name} ({self.plain_type.__name__}({self.num_features})): cannot take input of "
                             f"shape {x.shape}")
        if not (self.training or self.running_mean is None):
            fn = F.batch_norm_relu if relu else F.batch_norm
            return fn(x, self.running_mean, self.running_var, self.weight, self.bias, False, self.momentum, self.eps)
        rows = backend.batch_rows()  # set by DataParallel's loader; else count the rows now
        total = rows[0] if rows is not None else int(self.comm.allreduce(np.array([x.shape[0]]), "batch rows")[0])
        return sync_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.momentum,
                               self.eps, self.comm, total, self.name, relu)

    def to_plain(self):
        """The plain layer, holding this one's parameters and running statistics."""
        plain = self.plain_type(self.num_features, self.eps, self.momentum, affine=self.weight is not None,
                                track_running_stats=self.running_mean is not None)
        plain.weight, plain.bias = self.weight, self.bias
        plain.running_mean, plain.running_var = self.running_mean, self.running_var
        plain.training = self.training
        return plain

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, synchronised ({self.plain_type.__name__})"


def _replace(model, swap) -> int:
    """Replace, in every module's attributes and lists of modules, each child ``swap`` returns a
    new module for; the number replaced."""
    count = 0
    modules = list(model.named_modules())
    names = {id(m): name for name, m in modules}
    for _, module in modules:
        for attr, value in list(vars(module).items()):
            if isinstance(value, Module):
                new = swap(value, names[id(value)])
                if new is not None:
                    setattr(module, attr, new)
                    count += 1
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                items = list(value)
                for i, v in enumerate(items):
                    new = swap(v, names.get(id(v), f"{attr}.{i}"))
                    if new is not None:
                        items[i] = new
                        count += 1
                if items != list(value):
                    setattr(module, attr, items if isinstance(value, list) else tuple(items))
    return count


def convert_sync_batchnorm(model, comm) -> int:
    """Make every BatchNorm1d / BatchNorm2d of ``model`` a SyncBatchNorm over ``comm``, in place
    (run it before ``nn.fuse``, which would hide them in fused modules). Returns how many."""
    return _replace(model, lambda m, name: SyncBatchNorm(m, comm, name) if type(m) in PLAIN else None)


def revert_sync_batchnorm(model) -> int:
    """Turn every SyncBatchNorm of ``model`` back into its plain layer, in place. Returns how many."""
    return _replace(model, lambda m, name: m.to_plain() if isinstance(m, SyncBatchNorm) else None)
