"""Argument helpers shared by the operators and the layers that call them."""

from __future__ import annotations

import numpy as np

# The input layout of a d-dimensional operator, for error messages.
LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def as_tuple(value, d, name):
    """``value`` as a tuple of ``d`` ints: an int is repeated, a sequence checked for its length.

    Raises ValueError naming ``name`` when a sequence has the wrong length.
    """
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    value = tuple(int(v) for v in value)
    if len(value) != d:
        raise ValueError(f"{name} must be an int or a tuple of {d} ints, got {value}")
    return value
