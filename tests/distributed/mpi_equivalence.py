"""Run under mpiexec by test_mpi.py: data-parallel training against one process, case by case.

Every rank trains each case twice: alone (``parallel=None`` on the whole batches: the reference)
and data-parallel over the world; rank 0 writes {case: max abs difference of every parameter and
buffer, and of the evaluation} as JSON to the file named by argv[1].
"""

import json
import sys

import numpy as np

from cnnlab import backend, distributed, models, nn, optim
from cnnlab.data import Augment, DataLoader, load_dataset, shard_rows
from cnnlab.train import fit

world = distributed.init(timeout=120)
split = load_dataset("mnist", validation=1000)
images, labels = split.train[0][:300], split.train[1][:300]  # 300 = 8 * 37 + 4: the last batch uneven
val_x, val_y = split.validation[0][:301], split.validation[1][:301]


def small(p):
    return nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(p),
                         nn.Linear(4 * 12 * 12, 10))


def with_bn(p):
    return nn.Sequential(nn.Conv2d(1, 4, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Dropout(p), nn.Linear(4 * 12 * 12, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 10))


CASES = {  # name: (model, dtype, batch, steps (None: whole epochs), epochs, augmentation)
    "float64 plain": (lambda: small(0.0), np.float64, 37, 6, 1, None),
    "float64 batch norm": (lambda: with_bn(0.0), np.float64, 37, 6, 1, None),
    "float64 batch norm + dropout + augmentation, 2 epochs": (
        lambda: with_bn(0.3), np.float64, 37, None, 2, Augment(max_shift=2, max_degrees=10, hflip=True, erase=0.3)),
    "float32 fast (batch norm, dropout), 1 epoch": (
        lambda: models.build(models.spec("fast", hidden=32)), np.float32, 64, None, 1, Augment(max_shift=2)),
}


def train(make, dtype, batch, steps, epochs, augment, parallel_world):
    backend.manual_seed(1)
    model = make()
    model.to(dtype=dtype)
    parallel = distributed.DataParallel(model, parallel_world) if parallel_world else None
    shard = (world.rank, world.size) if parallel else None
    loader = DataLoader(images, labels, batch, seed=5, augment=augment, dtype=dtype, shard=shard)
    vx, vy = val_x, val_y
    if parallel:
        loader = parallel.loader(loader)
        start, stop = shard_rows(len(vy), world.rank, world.size)
        vx, vy = vx[start:stop], vy[start:stop]
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    history = fit(model, opt, loader, epochs, validation=DataLoader(vx, vy, 50, shuffle=False, dtype=dtype),
                  progress=False, log=None, max_batches=steps, parallel=parallel)
    if parallel:
        parallel.close()
    return model, history


results = {}
for name, (make, dtype, batch, steps, epochs, augment) in CASES.items():
    one, h1 = train(make, dtype, batch, steps, epochs, augment, None)
    many, hn = train(make, dtype, batch, steps, epochs, augment, world)
    a, b = one.state_dict(), many.state_dict()
    weights = max(float(np.abs(a[k].data - b[k].data).max()) for k in a)
    moved = max(float(np.abs(a[k].data).max()) for k in a)
    e1, en = h1.epochs[-1], hn.epochs[-1]
    everyone = world.allgather(np.concatenate([t.data.ravel() for t in b.values()]))  # bitwise the same?
    results[name] = {"weights": weights, "largest weight": moved,
                     "train loss": abs(e1["train_loss"] - en["train_loss"]),
                     "validation loss": abs(e1["validation_loss"] - en["validation_loss"]),
                     "validation accuracy": abs(e1["validation_accuracy"] - en["validation_accuracy"]),
                     "same on every rank": bool((everyone == everyone[0]).all())}
if world.rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=1)
