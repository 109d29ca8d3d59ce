"""The hot loops, chosen by array type in one place.

``generic`` works on any array module (NumPy or CuPy) and any number of spatial dimensions.
``cpu`` holds numba-compiled loops for NumPy arrays; callers go through the functions here,
which pick the fastest implementation that fits the arrays they are given.
"""

from __future__ import annotations

from . import generic

im2col = generic.im2col
col2im = generic.col2im
max_pool_forward = generic.max_pool_forward
max_pool_backward = generic.max_pool_backward
sum_pool_forward = generic.sum_pool_forward
sum_pool_backward = generic.sum_pool_backward
