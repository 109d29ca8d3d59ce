"""3x3 stride-1 convolutions by Winograd F(2x2, 3x3) (Lavin and Gray, 2016), on NumPy arrays.

Each 2x2 block of outputs comes from a 4x4 block of inputs with 16 multiplications per (input,
output) channel pair instead of 36: Y = A^T [(G w G^T) * (B^T d B)] A. Summed over channels, the
16 elementwise products become 16 matrix products (tiles x C) @ (C x F) done by BLAS; the
transforms are compiled loops (kernels/cpu.py: winograd_input, winograd_output,
winograd_output_adjoint). Which layers take this path is kernels/policy.py's use_winograd.

Shapes: x (n, C, H, W) one chunk of the batch; weights w (F, C, 3, 3); output (OH, OW), cut into
TH x TW tiles of 2x2 (a ragged last row or column of tiles is cropped).
"""

from __future__ import annotations

import numpy as np

# F(2x2, 3x3)'s kernel transform: U = G w G^T, 4x4 from 3x3
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def winograd_weights(w):
    """(F, C, 3, 3) kernels -> (16, C, F): U[4a + b, c, f] = (G w[f, c] G^T)[a, b], computed in
    float64, returned in w's dtype."""
    u = np.einsum("ai,fcij,bj->abcf", G, np.asarray(w, dtype=np.float64), G)
    return np.ascontiguousarray(u.reshape(16, w.shape[1], w.shape[0]), dtype=w.dtype)


def winograd_transposed_weights(w):
    """The weights whose convolution (padding 2 - p) is the input gradient of the one with ``w``
    (padding p): kernels flipped in both axes, input and output channels swapped; as (16, F, C)."""
    return winograd_weights(np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]))


def _tiles(out_shape):
    """2x2 output tiles per column and row; a ragged last row/column is cropped."""
    return -(-out_shape[0] // 2), -(-out_shape[1] // 2)


def _transformed_input(x, padding, TH, TW):
    """V (16, n*TH*TW, C): the transformed 4x4 input blocks of x (n, C, H, W) with zero padding."""
    from . import cpu  # noqa: PLC0415 - numba only when first needed

    n, C, H, W = x.shape
    ph, pw = padding
    # the tiles read 2*T + 2 padded rows, which covers ph + H (since 2*T >= OH = H + 2*ph - 2)
    xh = np.zeros((n, 2 * TH + 2, 2 * TW + 2, C), dtype=x.dtype)
    xh[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    v = np.empty((16, n * TH * TW, C), dtype=x.dtype)
    cpu.winograd_input(xh, v, TH, TW)
    return v


def winograd_conv(x, u, padding, out_shape, out=None):
    """3x3 convolution (stride 1) of x (n, C, H, W) with transformed weights u (16, C, F) and
    zero padding (ph, pw) by Winograd F(2x2, 3x3), written into ``out`` (n, F, OH*OW) (a new
    array if None), which is returned."""
    from . import cpu  # noqa: PLC0415

    n = x.shape[0]
    OH, OW = out_shape
    TH, TW = _tiles(out_shape)
    m = np.matmul(_transformed_input(x, padding, TH, TW), u)  # (16, tiles, F): 16 BLAS products
    F = u.shape[2]
    y = np.empty((n, 2 * TH, 2 * TW, F), dtype=x.dtype)
    cpu.winograd_output(m, y, TH, TW)
    if out is None:
        out = np.empty((n, F, OH * OW), dtype=x.dtype)
    out.reshape(n, F, OH, OW)[...] = y[:, :OH, :OW, :].transpose(0, 3, 1, 2)
    return out


def winograd_weight_grad_part(x, g, padding, out_shape):
    """One chunk's share of the weight gradient of winograd_conv, still transformed: (16, C, F),
    sum over tiles of V[k]^T @ M[k], where V is the input's transform and M the output
    gradient's (the adjoint of the output transform). ``g`` is the output gradient channels-last,
    (n*OH*OW, F) or (n, OH, OW, F). Sum the chunks' parts, then winograd_weight_grad."""
    from . import cpu  # noqa: PLC0415

    n = x.shape[0]
    OH, OW = out_shape
    TH, TW = _tiles(out_shape)
    F = g.shape[-1]
    if (2 * TH, 2 * TW) == (OH, OW):
        gh = np.ascontiguousarray(g).reshape(n, OH, OW, F)
    else:  # the cropped outputs of the ragged tiles get no gradient
        gh = np.zeros((n, 2 * TH, 2 * TW, F), dtype=g.dtype)
        gh[:, :OH, :OW, :] = g.reshape(n, OH, OW, F)
    m = np.empty((16, n * TH * TW, F), dtype=g.dtype)
    cpu.winograd_output_adjoint(gh, m, TH, TW)
    return np.matmul(_transformed_input(x, padding, TH, TW).transpose(0, 2, 1), m)  # 16 BLAS products


def winograd_weight_grad(du, dtype):
    """(16, C, F) transformed weight gradient -> (F, C, 3, 3): G^T du G, the adjoint of
    winograd_weights' transform, computed in float64, returned in ``dtype``."""
    C, F = du.shape[1:]
    dw = np.einsum("ai,abcf,bj->fcij", G, np.asarray(du, dtype=np.float64).reshape(4, 4, C, F), G)
    return np.ascontiguousarray(dw, dtype=dtype)
