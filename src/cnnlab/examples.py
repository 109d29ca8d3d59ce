"""Convolution beyond images: a 1-D CNN on sequences and a 3-D CNN on volumes.

The article builds its networks for 2-D images, but the two ideas that make them work -- local
receptive fields with shared weights, and pooling -- do not care how many dimensions the data
has. A sequence is a 1-D "image" and a volume (or a video clip) is a 3-D one. These examples
train small networks of that kind on synthetic data that is generated from a seed, so they run
in under a minute on two CPU cores and every number they print can be reproduced:

    seq1d   classify noisy length-128 signals by which short motif they contain (a sine burst,
            a square pulse, a sawtooth, a chirp), placed anywhere in the signal;
    vol3d   classify noisy 16x16x16 volumes by the shape they contain (a solid ball, a hollow
            shell, a cube, a rod along a random axis), placed anywhere at a random size.

In both tasks *where* the pattern is carries no information and *what* it is carries all of it,
which is exactly the translation invariance that shared weights (the same detector at every
position) and max-pooling (keep the strongest response, wherever it was) provide.

Training is ``cnnlab.train.fit`` over ``DataLoader``s of the generated arrays (seeded shuffling,
mini-batches, Adam, model selection on validation data), as for images.
Usage: ``cnnlab example seq1d`` or ``run_example("vol3d", epochs=3)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import backend, nn, optim
from .data import DataLoader
from .train import evaluate, fit

SEQ_CLASSES = ("sine burst", "square pulse", "sawtooth", "chirp")
VOL_CLASSES = ("ball", "shell", "cube", "rod")

# Split indices mixed into the seed, so the three splits are independent draws for any seed.
_TRAIN, _VALIDATION, _TEST, _SHUFFLE = 0, 1, 2, 3


def _balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Labels with every class as often as possible (counts differ by at most one), shuffled."""
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


# ---------------------------------------------------------------------------------- sequences
def _motif(label: int, width: int) -> np.ndarray:
    """The noiseless motif of class ``label``, ``width`` samples long, peak value about 1."""
    t = np.arange(width) / width  # 0 .. 1 across the motif
    if label == 0:  # sine burst: 4 cycles at a constant frequency
        return np.sin(2 * np.pi * 4 * t)
    if label == 1:  # square pulse: a plateau
        return np.ones(width)
    if label == 2:  # sawtooth: 3 linear ramps from -1 to 1, each ending in a sharp drop
        return 2 * ((3 * t) % 1.0) - 1
    # chirp: the frequency rises linearly from 1 to 8 cycles per motif width
    return np.sin(2 * np.pi * (1 * t + (8 - 1) * t ** 2 / 2))


def make_sequences(n: int, seed: int = 0, length: int = 128, noise: float = 0.4):
    """``n`` noisy signals, each containing one motif at a random place; balanced classes.

    Returns (x, y): x float32 of shape (n, 1, length) (one input channel, like a grey image),
    y int64 class indices into SEQ_CLASSES. Each motif is 24-40 samples wide, starts at a
    uniformly random position, is scaled by a random amplitude in [0.5, 1.5] and sits in
    Gaussian noise of standard deviation ``noise``. ``seed`` is anything
    ``np.random.default_rng`` accepts (run_example passes [seed, split]); the same arguments
    give the same data.
    """
    rng = np.random.default_rng(seed)
    y = _balanced_labels(n, len(SEQ_CLASSES), rng)
    x = rng.normal(0.0, noise, size=(n, 1, length))
    for i, label in enumerate(y):
        width = int(rng.integers(24, 41))
        start = int(rng.integers(0, length - width + 1))
        x[i, 0, start:start + width] += rng.uniform(0.5, 1.5) * _motif(int(label), width)
    return x.astype(np.float32), y


def seq1d_model() -> nn.Module:
    """Conv1d -> ReLU -> MaxPool1d -> Conv1d -> ReLU -> global max-pool -> Linear (4,932 parameters).

    The first layer's 9-sample kernels see a short stretch of the signal; the second layer's
    kernels combine 16 such responses over ~25 samples, about one motif. Pooling over the whole
    remaining length (64 positions) keeps each detector's best response, wherever it was.

    Its measured accuracy, and the errors it makes: results/README.md, "Beyond images".
    """
    return nn.Sequential(
        nn.Conv1d(1, 16, 9, padding=4), nn.ReLU(), nn.MaxPool1d(2),   # (16, 64)
        nn.Conv1d(16, 32, 9, padding=4), nn.ReLU(), nn.MaxPool1d(64),  # (32, 1): global max
        nn.Flatten(), nn.Linear(32, len(SEQ_CLASSES)),
    )


# ---------------------------------------------------------------------------------- volumes
def _shape_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean (size, size, size) mask of one randomly sized, randomly placed shape."""
    grid = np.indices((size, size, size), dtype=np.float64)  # (3, D, H, W) voxel coordinates

    def centre(extent):  # a random centre that keeps a shape of this half-extent inside
        return rng.uniform(extent, size - 1 - extent, size=3)[:, None, None, None]

    if label in (0, 1):  # ball or shell: distance from the centre
        r = rng.uniform(3.0, 5.5) if label == 0 else rng.uniform(4.0, 6.5)
        dist = np.sqrt(((grid - centre(r)) ** 2).sum(0))
        return dist <= r if label == 0 else (dist <= r) & (dist > r - 1.5)
    if label == 2:  # cube: axis-aligned, Chebyshev distance
        h = rng.uniform(2.5, 4.5)
        return np.abs(grid - centre(h)).max(0) <= h
    # rod: a cylinder along a random axis
    axis = int(rng.integers(3))
    radius, half = rng.uniform(1.2, 2.2), rng.uniform(4.0, 7.0)
    d = grid - centre(half)
    across = np.sqrt((d ** 2).sum(0) - d[axis] ** 2)
    return (across <= radius) & (np.abs(d[axis]) <= half)


def make_volumes(n: int, seed: int = 0, size: int = 16, noise: float = 0.3):
    """``n`` noisy volumes, each containing one shape; balanced classes.

    Returns (x, y): x float32 of shape (n, 1, size, size, size), y int64 class indices into
    VOL_CLASSES. Each shape has a random size and position (a rod also a random axis), an
    intensity uniform in [0.7, 1.3] and Gaussian noise of standard deviation ``noise``.
    """
    rng = np.random.default_rng(seed)
    y = _balanced_labels(n, len(VOL_CLASSES), rng)
    x = rng.normal(0.0, noise, size=(n, 1, size, size, size))
    for i, label in enumerate(y):
        x[i, 0] += rng.uniform(0.7, 1.3) * _shape_mask(int(label), size, rng)
    return x.astype(np.float32), y


def vol3d_model() -> nn.Module:
    """(Conv3d -> ReLU -> MaxPool3d) x 2 -> Conv3d -> ReLU -> global max-pool -> Linear (17,684 parameters).

    3x3x3 kernels with 8, 16 and 32 feature maps, small enough for a CPU. After two 2x2x2
    poolings the third layer's receptive field spans 18 voxels, more than any shape, so its
    detectors can respond to a whole ball, shell, cube or rod; the global max-pool then makes
    the answer independent of where in the volume that shape was.

    Its measured accuracy, and a smaller variant that did worse: results/README.md, "Beyond images".
    """
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),    # (8, 8, 8, 8)
        nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),   # (16, 4, 4, 4)
        nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d(4),  # (32, 1, 1, 1): global max
        nn.Flatten(), nn.Linear(32, len(VOL_CLASSES)),
    )


# ---------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class ExampleSpec:
    """One example's data, model and training recipe."""
    make_data: object
    make_model: object
    n_train: int
    n_validation: int
    n_test: int
    epochs: int
    batch_size: int
    lr: float


EXAMPLES = {
    "seq1d": ExampleSpec(make_sequences, seq1d_model, 8000, 1000, 1000, epochs=10, batch_size=32, lr=3e-3),
    "vol3d": ExampleSpec(make_volumes, vol3d_model, 2000, 500, 500, epochs=6, batch_size=32, lr=2e-3),
}


def train_classifier(model, train, validation, test, epochs, batch_size, lr, seed=0, log=print,
                     name="model") -> dict:
    """Train with Adam on mini-batches (``cnnlab.train.fit``); report the test accuracy of the
    best-validation epoch.

    ``train``, ``validation`` and ``test`` are (x float (N, C, *S), y) pairs. The test set is used
    once, at the end, on the weights of the epoch with the best validation accuracy (``fit`` restores
    them into ``model``), so it never influences which model is chosen.
    """
    def loader(pair, shuffle):
        # the data is generated already scaled: no normalisation (mean 0, std 1 leave it as it is)
        return DataLoader(*pair, batch_size, shuffle=shuffle, seed=shuffle_seed, mean=0.0, std=1.0, channels=True)

    shuffle_seed = int(np.random.SeedSequence([seed, _SHUFFLE]).generate_state(1)[0])
    start = time.perf_counter()
    net = nn.fuse(model)  # the same parameters; runs of layers (activation before max-pool) fused
    history = fit(net, optim.Adam(model.parameters(), lr=lr), loader(train, True), epochs,
                  validation=loader(validation, False), progress=False, log=lambda line: log(f"{name} {line}"))
    best = history.epochs[history.best_epoch - 1]
    return {"epoch": history.best_epoch, "train_accuracy": best["train_accuracy"],
            "validation_accuracy": best["validation_accuracy"],
            "test_accuracy": evaluate(net, loader(test, False))["accuracy"], "seconds": time.perf_counter() - start}


def run_example(name: str, epochs: int | None = None, seed: int = 0, log=print, n_train: int | None = None,
                n_validation: int | None = None, n_test: int | None = None) -> dict:
    """Generate the data, train the example's model and return its accuracies (fractions).

    Returns {"name", "train_accuracy", "validation_accuracy", "test_accuracy", "seconds",
    "parameters", "epochs", "best_epoch"}; accuracies are those of the best-validation epoch and
    "seconds" covers data generation and training. The sizes default to the example's recipe;
    smaller ones make quick checks. The same arguments give the same numbers.
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    spec = EXAMPLES[name]
    epochs = spec.epochs if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    start = time.perf_counter()
    sizes = (n_train or spec.n_train, n_validation or spec.n_validation, n_test or spec.n_test)
    train, validation, test = (spec.make_data(n, seed=[seed, split])
                               for n, split in zip(sizes, (_TRAIN, _VALIDATION, _TEST)))
    backend.manual_seed(seed)  # the weights' initialisation
    model = spec.make_model()
    best = train_classifier(model, train, validation, test, epochs, spec.batch_size, spec.lr,
                            seed=seed, log=log, name=name)
    result = {
        "name": name,
        "train_accuracy": best["train_accuracy"],
        "validation_accuracy": best["validation_accuracy"],
        "test_accuracy": best["test_accuracy"],
        "seconds": time.perf_counter() - start,
        "parameters": model.num_parameters(),
        "epochs": epochs,
        "best_epoch": best["epoch"],
    }
    log(_summary_line(result))
    return result


def _summary_line(r: dict) -> str:
    return (f"{r['name']}: test accuracy {100 * r['test_accuracy']:.2f}% "
            f"(validation {100 * r['validation_accuracy']:.2f}%, train {100 * r['train_accuracy']:.2f}%, "
            f"best of {r['epochs']} epochs: {r['best_epoch']}), {r['parameters']:,} parameters, "
            f"{r['seconds']:.1f} s")
