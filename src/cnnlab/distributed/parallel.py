"""Data-parallel training: N processes, one model, each process a disjoint part of every batch.

``DataParallel(model, world)`` makes the processes train the model that one process would train on
the whole (global) batch:

- the same start: rank 0's weights and buffers are broadcast to every process;
- the same batches: each process's loader is sharded (``DataLoader(shard=(rank, size))``): the same
  seeded permutation every epoch, each process a contiguous part of every global batch, and the
  augmentation's and dropout's random numbers drawn for the global batch, each process keeping its
  rows (``RowsOf``, ``backend.set_batch_rows``): the masks are the one-process run's;
- the same statistics: batch norm layers become ``SyncBatchNorm`` (global-batch mean and variance);
- the same gradient: each process's mean loss is weighted by its share of the global batch
  (rows / global rows, which is 1/N unless the last batch is uneven) before the backward pass, and
  after it every gradient, with the batch's loss and hit count, is summed over the processes in one
  flat buffer (one allreduce per step and dtype).

So after every step the weights are those of one process, up to the order of floating-point sums.
"""

from __future__ import annotations

import time

import numpy as np

from .. import backend
from ..autograd import Tensor
from .syncbn import SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["DataParallel", "ShardedBatches"]


class ShardedBatches:
    """Iterates a sharded DataLoader, declaring each batch's rows (``backend.set_batch_rows``)
    while it is out, so that dropout and synchronised batch norm see the global batch.

    A final global batch with fewer images than processes would leave some process with none: it
    is skipped on every process (``skipped`` says whether one is).
    """

    def __init__(self, loader, world):
        if loader.shard != (world.rank, world.size):
            raise ValueError(f"the loader must be sharded as (rank, size) = ({world.rank}, {world.size}), "
                             f"got shard {loader.shard}")
        if loader.batch_size < world.size:
            raise ValueError(f"the batch size ({loader.batch_size}) is the global batch: it must be at least the "
                             f"number of processes ({world.size})")
        self.loader = loader
        n = len(loader)
        self.skipped = n > 0 and loader.batch_rows(n - 1)[0] < world.size
        self.length = n - self.skipped

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        batches = iter(self.loader)
        try:
            for b in range(self.length):
                batch = next(batches)
                backend.set_batch_rows(self.loader.batch_rows(b))
                yield batch
        finally:
            backend.set_batch_rows(None)


class DataParallel:
    """Train ``model`` on the processes of ``world`` as one process would on the global batch.

    Made before the optimizer (batch norm layers are replaced, sharing their parameters). ``fit``
    takes it as ``parallel=``: ``backward`` replaces ``loss.backward()`` and ``reduce`` sums an
    evaluation's shards. ``close`` puts plain batch norm back.

    Args:
        model: the nn.Module, identical in structure on every process.
        world: a ``World`` (``cnnlab.distributed.init()``).
        device: "cpu", or "cuda" for NCCL collectives on each process's GPU.

    Attributes:
        synced: how many batch norm layers were synchronised.
        comm_seconds, steps: time spent in the gradient allreduce, over how many steps.
    """

    def __init__(self, model, world, device: str = "cpu"):
        self.model, self.world = model, world
        if device == "cuda":
            from .nccl import NcclComm  # noqa: PLC0415 - CuPy only when asked for

            self.comm = NcclComm(world)
        else:
            self.comm = world
        self.synced = convert_sync_batchnorm(model, self.comm)
        left = [name for name, m in model.named_modules()
                if "BatchNorm" in type(m).__name__ and not isinstance(m, SyncBatchNorm)]
        if left:
            raise ValueError(f"DataParallel: {', '.join(left)} of {type(model).__name__} would normalise with "
                             f"statistics that are not synchronised; make the DataParallel before nn.fuse, which "
                             f"hides batch norm in fused modules")
        self.comm_seconds, self.steps = 0.0, 0
        self.broadcast_weights()

    def loader(self, loader) -> ShardedBatches:
        """The training batches of a DataLoader made with ``shard=(world.rank, world.size)``."""
        return ShardedBatches(loader, self.world)

    def broadcast_weights(self, root: int = 0) -> None:
        """Every parameter and buffer of the model set to rank ``root``'s (one broadcast per dtype)."""
        for tensors in _by_dtype(list(self.model.state_dict().values())):
            xp = backend.get_array_module(tensors[0].data)
            flat = self.comm.broadcast(xp.concatenate([t.data.ravel() for t in tensors]), root, "initial weights")
            offset = 0
            for t in tensors:
                t.data[...] = flat[offset:offset + t.size].reshape(t.shape)
                offset += t.size

    def backward(self, loss, logits, target) -> tuple[float, int, int]:
        """The backward pass of this process's part of the global batch, and the gradient summed
        over the processes into every parameter's ``.grad``.

        Args:
            loss: this process's mean loss over its rows (a one-element Tensor).
            logits: (rows, classes) the model's output, to count the hits.
            target: (rows,) the labels (on the logits' device).

        Returns:
            (the global batch's mean loss, its hits, its images): the same on every process.
        """
        rows = backend.batch_rows()
        if rows is None:
            raise RuntimeError("DataParallel.backward: no batch rows declared; iterate DataParallel.loader(...)")
        total, start, stop = rows
        xp = backend.get_array_module(loss.data)
        # the global loss is the mean over all rows: this process's mean loss weighs rows/total
        loss.backward(xp.asarray((stop - start) / total, dtype=loss.data.dtype))
        params = self.model.parameters()
        hits = (logits.data.argmax(axis=1) == target).sum()
        t0 = time.perf_counter()
        stats = None
        for group in _by_dtype(params):
            xp = backend.get_array_module(group[0].data)
            dtype = group[0].data.dtype
            parts = [p.grad.data.ravel() if p.grad is not None else xp.zeros(p.size, dtype) for p in group]
            if stats is None:  # the batch's loss sum, hits and images ride with the first group
                parts.append(xp.stack([loss.data.reshape(()).astype(dtype) * (stop - start),
                                       hits.astype(dtype), xp.asarray(stop - start, dtype)]))
            flat = self.comm.allreduce(xp.concatenate(parts), f"gradient allreduce (step {self.steps + 1})")
            offset = 0
            for p in group:
                if p.grad is not None:
                    p.grad = Tensor(flat[offset:offset + p.size].reshape(p.shape))
                offset += p.size
            if stats is None:
                stats = [float(v) for v in backend.to_device(flat[offset:offset + 3], "cpu")]
        self.comm_seconds += time.perf_counter() - t0
        self.steps += 1
        loss_sum, hits_all, images = stats
        return loss_sum / images, int(round(hits_all)), int(round(images))

    def reduce(self, result: dict | None) -> dict | None:
        """``evaluate``'s result over this process's shard -> the result over all shards."""
        if result is None:
            return None
        n = result["n"]
        sums = self.world.allreduce(np.array([result["loss"] * n, round(result["accuracy"] * n), n], np.float64),
                                    "evaluation sums")
        total = max(int(round(sums[2])), 1)
        return {**result, "loss": float(sums[0]) / total, "accuracy": int(round(sums[1])) / total,
                "n": int(round(sums[2]))}

    def close(self) -> None:
        """Plain batch norm back in the model (its training statistics are then the local batch's)."""
        revert_sync_batchnorm(self.model)

    def describe(self) -> str:
        return (f"data-parallel on {self.world.describe()}; batch norm synchronised in {self.synced} "
                f"layer{'s' if self.synced != 1 else ''}")


def _by_dtype(tensors) -> list[list]:
    """The tensors grouped by dtype (in first-seen order), one flat buffer each."""
    groups: dict = {}
    for t in tensors:
        groups.setdefault(np.dtype(t.data.dtype), []).append(t)
    return list(groups.values())
