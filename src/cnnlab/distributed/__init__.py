"""Past one machine: data-parallel training and parallel tasks over MPI (``mpiexec``, ``srun``).

    $ mpiexec -n 4 cnnlab train --model fast        # one model, the batch spread over 4 processes
    $ mpiexec -n 4 cnnlab ensemble fast --seeds 0-15  # 16 models, 4 at a time

From Python, ``runs.train`` finds the world itself; the parts:

    >>> from cnnlab import distributed
    >>> world = distributed.init()                  # the MPI world, or one process without a launcher
    >>> parallel = distributed.DataParallel(model, world)   # before the optimizer
    >>> loader = parallel.loader(DataLoader(x, y, 64, shard=(world.rank, world.size)))
    >>> train.fit(model, optimizer, loader, epochs, parallel=parallel, ...)

See docs/distributed.md: what is equal to one process (weights, to rounding; batch norm; dropout
and augmentation masks), what a failure does, and the GPU path (NCCL, not yet run).
"""

from .nccl import NcclComm, use_local_gpu
from .parallel import DataParallel, ShardedBatches
from .syncbn import SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm, sync_batch_norm
from .tasks import map_tasks, my_tasks
from .world import DEFAULT_TIMEOUT, DistributedError, MPIWorld, World, init, launched_size, local, share_cores

__all__ = [
    "DEFAULT_TIMEOUT", "DataParallel", "DistributedError", "MPIWorld", "NcclComm", "ShardedBatches", "SyncBatchNorm", "World",
    "convert_sync_batchnorm", "init", "launched_size", "local", "map_tasks", "my_tasks", "revert_sync_batchnorm",
    "share_cores", "sync_batch_norm", "use_local_gpu",
]
