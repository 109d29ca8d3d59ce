"""A committee of trained nets: combine their class probabilities into one prediction.

Both rules take a list of (N, classes) probability arrays, one per member, and return (N,) labels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average", "vote", "METHODS"]


def vote(probabilities: list[np.ndarray]) -> np.ndarray:
    """Plurality vote of the members' predicted labels; a tie goes to the higher summed probability."""
    votes = np.zeros_like(probabilities[0])
    for p in probabilities:
        votes[np.arange(len(p)), p.argmax(1)] += 1.0
    total = sum(probabilities)
    # a tie-break far below one vote: 1e-6 * the mean probability, at most 1e-6
    return (votes + 1e-6 * total / len(probabilities)).argmax(1)


def average(probabilities: list[np.ndarray]) -> np.ndarray:
    """The label of the highest averaged probability (the committee averaging of Ciresan et al. 2012)."""
    return np.mean(probabilities, axis=0).argmax(1)


# name -> rule, in the order reports list them (and a tie on validation keeps the first: the vote)
METHODS = {"plurality vote": vote, "averaged probabilities": average}
