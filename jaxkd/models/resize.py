"""Torch-compatible spatial resizing (``F.interpolate(..., align_corners=False)``) for NHWC arrays.

``jax.image.resize`` is *not* a drop-in replacement for PyTorch's ``F.interpolate``: its cubic kernel uses
Keys' a = -0.5 (torch: a = -0.75) and it antialiases when downsampling (torch's default ``antialias=False``
does not). This module reproduces torch's sampling exactly as two separable interpolation matrices that are
built in float64 NumPy at trace time (output sizes are static) and applied with two matmuls:

* bilinear: ``src = max(0, (dst + 0.5)·in/out − 0.5)``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, in − 1)``,
  weights ``(1 − λ, λ)`` with ``λ = src − i0``  (torch's ``area_pixel_compute_source_index`` for linear modes).
* bicubic: ``src = (dst + 0.5)·in/out − 0.5`` (no clamp), ``i = floor(src)``, ``t = src − i``, the four taps
  ``i−1 … i+2`` weighted with the Keys cubic convolution kernel (a = −0.75); tap indices are clamped to
  ``[0, in − 1]`` (torch's ``upsample_get_value_bounded``), so border taps are replicated.

Neither mode antialiases, so downsampling samples (bilinear 16→8 equals a 2×2 mean pool, because every output
sits exactly half-way between two inputs). Only NumPy and JAX are imported (no torch).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BICUBIC_A",
    "interpolation_matrix",
    "resize",
    "resize_bicubic",
    "resize_bilinear",
]

#: Keys cubic-convolution coefficient used by PyTorch's bicubic interpolation (``jax.image.resize`` uses −0.5).
BICUBIC_A = -0.75

Mode = Literal["bilinear", "bicubic"]


def _cubic_weights(t: np.ndarray, a: float = BICUBIC_A) -> np.ndarray:
    """Keys cubic-convolution weights of the taps at offsets −1, 0, +1, +2 for fractional positions ``t``.

    Args:
      t: float64 array (M,) of fractional offsets in [0, 1).
      a: the kernel's free coefficient (torch: −0.75).
    Returns:
      float64 array (M, 4); every row sums to 1. Same formulas as torch's ``get_cubic_upsample_coefficients``.
    """

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


@functools.lru_cache(maxsize=256)
def _interpolation_matrix_cached(in_size: int, out_size: int, mode: str) -> np.ndarray:
    scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * scale - 0.5
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i0 = np.minimum(i0, in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        lam = src - i0
        np.add.at(mat, (rows, i0), 1.0 - lam)
        np.add.at(mat, (rows, i1), lam)
    elif mode == "bicubic":
        i = np.floor(src).astype(np.int64)
        t = src - i
        w = _cubic_weights(t)
        for k, off in enumerate((-1, 0, 1, 2)):
            idx = np.clip(i + off, 0, in_size - 1)
            np.add.at(mat, (rows, idx), w[:, k])
    else:
        raise ValueError(f"unknown interpolation mode {mode!r}; use 'bilinear' or 'bicubic'")
    mat.setflags(write=False)
    return mat


def interpolation_matrix(in_size: int, out_size: int, mode: Mode) -> np.ndarray:
    """The (out_size, in_size) float64 matrix ``M`` such that ``M @ v`` resizes a 1-D signal like torch.

    Matches ``F.interpolate(v[None, None], size=out_size, mode={'linear','cubic'-equivalent},
    align_corners=False)`` along one axis (torch's 2-D bilinear/bicubic are separable products of these).

    Args:
      in_size: input length (>= 1).
      out_size: output length (>= 1).
      mode: 'bilinear' or 'bicubic'.
    Returns:
      read-only float64 NumPy array (out_size, in_size); rows sum to 1.
    Raises:
      ValueError: for non-positive sizes or an unknown mode.
    """
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"interpolation sizes must be >= 1, got in_size={in_size}, out_size={out_size}")
    return _interpolation_matrix_cached(in_size, out_size, mode)


def _check_hw(out_hw: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in out_hw)
    except (TypeError, ValueError):
        raise ValueError(f"out_hw must be a pair (height, width) of ints, got {out_hw!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"out_hw must be positive, got {out_hw!r}")
    return h, w


def resize(x: jax.Array, out_hw: Sequence[int], mode: Mode) -> jax.Array:
    """Resize the two spatial axes of an NHWC array with torch ``F.interpolate`` semantics.

    Args:
      x: array (..., H, W, C) (typically NHWC: batch, height, width, channels), any float dtype.
      out_hw: (H_out, W_out).
      mode: 'bilinear' or 'bicubic' (align_corners=False, antialias=False, as torch's defaults).
    Returns:
      array (..., H_out, W_out, C) in x's dtype. Computation: two matmuls with the interpolation matrices in
      at least float32 (float64 for float64 input) at HIGHEST precision, then cast back to x's dtype.
    Raises:
      ValueError: if x has fewer than 3 dimensions, or out_hw/mode are invalid.
    """
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"resize expects an array (..., H, W, C) with >= 3 dims, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"resize expects a floating-point array, got dtype {x.dtype}; cast it first")
    out_h, out_w = _check_hw(out_hw)
    in_h, in_w = x.shape[-3], x.shape[-2]
    if (in_h, in_w) == (out_h, out_w):
        # torch with an unchanged size and align_corners=False uses scale 1 → src == dst exactly: identity.
        return x
    compute = jnp.promote_types(x.dtype, jnp.float32)
    mh = jnp.asarray(interpolation_matrix(in_h, out_h, mode), dtype=compute)
    mw = jnp.asarray(interpolation_matrix(in_w, out_w, mode), dtype=compute)
    hp = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,...hwc->...owc", mh, x.astype(compute), precision=hp)
    y = jnp.einsum("pw,...owc->...opc", mw, y, precision=hp)
    return y.astype(x.dtype)


def resize_bilinear(x: jax.Array, out_hw: Sequence[int]) -> jax.Array:
    """Bilinear resize of (..., H, W, C) to (..., *out_hw, C), equal to torch
    ``F.interpolate(x_nchw, size=out_hw, mode='bilinear', align_corners=False)`` (no antialias).

    For an exact factor-2 downsample (e.g. 16→8) this is a 2×2 mean pool. Returns x's dtype.
    """
    return resize(x, out_hw, "bilinear")


def resize_bicubic(x: jax.Array, out_hw: Sequence[int]) -> jax.Array:
    """Bicubic resize of (..., H, W, C) to (..., *out_hw, C), equal to torch
    ``F.interpolate(x_nchw, size=out_hw, mode='bicubic', align_corners=False)`` (a = −0.75, border taps clamped,
    no antialias; not clamped to the input range, so it can overshoot). Returns x's dtype.
    """
    return resize(x, out_hw, "bicubic")
