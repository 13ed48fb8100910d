"""Centred kernel alignment between layers' representations (Kornblith et al. 2019; ../shared/spec/LATER.md §4.2).

A representation is a feature matrix X (n, d): n examples (the same n for both sides), one feature vector each (the
analysis mean-pools a ViT block's patch tokens, or a CNN stage's spatial map). From it a kernel matrix K (n, n):

* linear: K = X·Xᵀ;
* RBF: K_ij = exp(−‖x_i − x_j‖² / (2σ²)) with σ² = ``sigma_frac``² × the median of the squared pairwise distances
  ‖x_i − x_j‖² over the n(n−1)/2 pairs i < j (the median heuristic, σ ≈ the median distance; the median of an even
  count is the mean of its two middle values). LATER §7.9: the original took the median over all n² entries,
  diagonal zeros included, and detached it through a host sync. The bandwidth is a constant of the analysis here.

HSIC between two kernels K, L:

* ``biased``: tr(K H L H) / (n − 1)², H = I − 11ᵀ/n (the original's estimator, §4.2). Its bias makes CKA of
  unrelated representations positive, the more so the smaller n is relative to d;
* ``unbiased`` (Song et al. 2012, eq. 5): with K̃, L̃ the kernels with their diagonals set to 0,
  [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)), n ≥ 4.

CKA(K, L) = HSIC(K, L) / √(HSIC(K, K)·HSIC(L, L)) (no epsilon: a zero denominator gives NaN, which the report shows
as a missing value, rather than the original's silent 0 for CNN teachers, §7.18). The unbiased CKA of unrelated
representations is near 0 and may be slightly negative.

Computed on the host in float64 with numpy whatever the features' dtype: the sums of n² products lose digits in
float32, the matrices are (n, n) for n of a few hundred to a few thousand (cheap on a CPU), and numpy needs no
compilation per feature width (a jitted kernel would compile once for each layer's width).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["KERNELS", "ESTIMATORS", "linear_kernel", "rbf_kernel", "kernel", "hsic", "cka", "cka_matrix"]

KERNELS = ("linear", "rbf")
ESTIMATORS = ("unbiased", "biased")


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def linear_kernel(x) -> np.ndarray:
    """(n, d) -> (n, n) Gram matrix X·Xᵀ, float64."""
    x = _f64(x)
    return x @ x.T


def _squared_distances(x: np.ndarray) -> np.ndarray:
    sq = np.sum(x * x, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * (x @ x.T), 0)


def rbf_kernel(x, sigma_frac: float = 1.0) -> np.ndarray:
    """(n, d) -> (n, n) exp(−d²_ij / (2σ²)), σ² = sigma_frac² · median_{i<j} d²_ij (see the module docstring)."""
    x = _f64(x)
    d2 = _squared_distances(x)
    sigma2 = sigma_frac ** 2 * np.median(d2[np.triu_indices(x.shape[0], k=1)])
    return np.exp(-d2 / (2 * sigma2))


def kernel(x, name: str, sigma_frac: float = 1.0) -> np.ndarray:
    """The kernel matrix `name` ('linear' or 'rbf') of features (n, d)."""
    if name == "linear":
        return linear_kernel(x)
    if name == "rbf":
        return rbf_kernel(x, sigma_frac)
    raise ValueError(f"unknown kernel {name!r}: use one of {KERNELS}")


def _centre(k: np.ndarray) -> np.ndarray:
    """H K H: each row's and column's mean removed (the grand mean added back)."""
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def hsic(k, l, estimator: str = "unbiased") -> float:
    """HSIC of two (n, n) kernel matrices, 'biased' or 'unbiased' (see the module docstring)."""
    k, l = _f64(k), _f64(l)
    n = k.shape[0]
    if estimator == "biased":
        return float(np.sum(_centre(k) * l) / (n - 1) ** 2)  # tr(HKH·L) = tr(KHLH), K and L symmetric
    if estimator != "unbiased":
        raise ValueError(f"unknown HSIC estimator {estimator!r}: use one of {ESTIMATORS}")
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs n >= 4 examples, got {n}")
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    sk, sl = kt.sum(axis=0), lt.sum(axis=0)  # column sums: 1ᵀK̃, 1ᵀL̃
    trace = np.sum(kt * lt)  # tr(K̃L̃), both symmetric
    return float((trace + sk.sum() * sl.sum() / ((n - 1) * (n - 2)) - 2 * (sk @ sl) / (n - 2)) / (n * (n - 3)))


def cka(k, l, estimator: str = "unbiased") -> float:
    """CKA of two (n, n) kernel matrices: HSIC(K, L) / √(HSIC(K, K)·HSIC(L, L)) (NaN where the denominator is not
    positive)."""
    den = hsic(k, k, estimator) * hsic(l, l, estimator)
    return hsic(k, l, estimator) / np.sqrt(den) if den > 0 else float("nan")


def cka_matrix(xs: Sequence, ys: Sequence | None = None, *, kernel_name: str = "linear",
               estimator: str = "unbiased", sigma_frac: float = 1.0) -> np.ndarray:
    """(len(xs), len(ys)) CKA of every pair of feature matrices (each (n, d_i), the same n); ``ys=None`` compares
    ``xs`` with themselves (self-CKA: symmetric, ones on the diagonal). Each kernel and its self-HSIC is computed
    once."""
    kx = [kernel(x, kernel_name, sigma_frac) for x in xs]
    ky = kx if ys is None else [kernel(y, kernel_name, sigma_frac) for y in ys]
    sx = [hsic(k, k, estimator) for k in kx]
    sy = sx if ys is None else [hsic(k, k, estimator) for k in ky]
    out = np.empty((len(kx), len(ky)))
    for i, (a, s) in enumerate(zip(kx, sx)):
        for j, (b, t) in enumerate(zip(ky, sy)):
            out[i, j] = hsic(a, b, estimator) / np.sqrt(s * t) if s * t > 0 else np.nan
    return out
