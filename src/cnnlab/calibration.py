"""How far a run's probabilities can be trusted: temperature scaling (Guo et al. 2017, "On
Calibration of Modern Neural Networks") and the expected calibration error.

A network trained to low loss is over-confident: its top probability is higher than how often it
is right. Dividing the logits by one scalar T > 1, fitted on held-out data by minimising the
negative log-likelihood, fixes most of it without changing a single prediction (the order of the
logits is kept). ``runs.calibrate`` fits T on a run's validation set and stores it in the run.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["CONFIDENT", "expected_calibration_error", "fit_temperature", "flag", "log_probabilities", "nll",
           "softmax"]

# Below this calibrated top probability a prediction is flagged "not confident": after temperature
# scaling a top probability p is right about p of the time, so under 0.8 one answer in five or more
# is wrong. (docs/photos.md: how often clean MNIST digits are flagged.)
CONFIDENT = 0.8

# T is searched in [1/20, 20]: far beyond what any trained net needs (Guo et al. report 1 to 4)
_LOG_T_BOUNDS = (-np.log(20.0), np.log(20.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of (N, K) (or (K,)) logits divided by ``temperature``, in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Logits recovered from probabilities (log p; softmax(log p / T) = softmax(logits / T)),
    with underflowed zeros held at the smallest float32 so they stay finite."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), np.finfo(np.float32).tiny))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of ``labels`` (a 1-D bounded search on log T;
    the NLL is convex in 1/T).

    Raises:
        ValueError: no rows, or logits and labels of different lengths.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if logits.ndim != 2 or len(logits) == 0 or len(logits) != len(labels):
        raise ValueError(f"need (N, K) logits and N labels, N > 0; got {logits.shape} and {labels.shape}")
    best = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=_LOG_T_BOUNDS,
                           method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the gap between confidence (top probability) and accuracy, averaged over ``bins``
    equal-width confidence bins weighted by how many predictions fall in each (Guo et al.)."""
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    right = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - right[inside].mean())
    return float(total)


def flag(probabilities: np.ndarray, doubt: str | None = None) -> str | None:
    """What ``cnnlab predict`` says next to a prediction: "not a digit? (<doubt>)" when the picture's
    ink has no digit's shape (``data.shape_doubt``), "not confident" when the calibrated top
    probability is under CONFIDENT, else None."""
    if doubt:
        return f"not a digit? ({doubt})"
    top = float(np.max(probabilities))
    if top < CONFIDENT:
        return f"not confident (top {100 * top:.0f}% < {100 * CONFIDENT:.0f}%)"
    return None
