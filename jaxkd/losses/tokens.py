"""Token-level distillation of SPEC.md §3 (CST-style): projection head, token resizing and L_tok.

Tokens are patch tokens only, (B, N, D) = (batch, tokens, features); callers strip class / distillation /
register tokens first. Losses compute in >= float32 and return 0-d arrays. Matmuls use HIGHEST precision so an
accelerator's TF32 default cannot change the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd.losses._common import (
    Array,
    as_float,
    check_choice,
    check_layer_pairs,
    clamped_norm,
    l2_normalize,
)
from jaxkd.models.layers import gelu_exact, torch_linear
from jaxkd.models.resize import resize_bilinear

__all__ = [
    "ProjectionHead",
    "resize_tokens",
    "token_representation_loss",
    "linear_cka",
    "rbf_cka",
    "gram_loss",
    "TOKEN_LOSS_TYPES",
    "TEACHER_MODES",
]

TOKEN_LOSS_TYPES = ("cosine", "mse", "cka_linear", "cka_rbf", "gram")
TEACHER_MODES = ("trainable", "frozen", "identity")
_HP = jax.lax.Precision.HIGHEST
_INITS = ("torch", "trunc_normal")


class ProjectionHead(nnx.Module):
    """Token projector ``Linear(in, hidden) → LN → GELU → Linear(hidden, out) → LN`` (SPEC §3 projection head).

    Attributes ``fc1``, ``norm1``, ``fc2``, ``norm2`` mirror ``torch_ref.losses.ProjectionHead`` (torch state-dict
    keys ``fc1.weight`` = ``fc1.kernel``ᵀ, ``norm1.weight`` = ``norm1.scale``, ...; see ``jaxkd.interop``).
    GELU is the exact erf form (torch ``nn.GELU()``); LayerNorms use the two-pass variance (as torch), eps
    ``ln_eps`` (1e-5, torch's default) and compute in float32 (float64 when ``dtype`` is float64).

    Init ``'torch'`` (default, as the peer's ``nn.Linear``): weight and bias U(±1/√fan_in) (kaiming-uniform,
    a = √5); ``'trunc_normal'``: weight truncated normal (σ = 0.02, cut at ±2σ), bias 0. LN weight 1, bias 0.

    Call: x (..., in_dim) in any float dtype → (..., out_dim) in max(``dtype``, float32) (linears compute in
    ``dtype``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 512,
        out_dim: int = 256,
        ln_eps: float = 1e-5,
        *,
        init: str = "torch",
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("init", init, _INITS)
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if int(v) <= 0:
                raise ValueError(f"ProjectionHead {name} must be positive; got {v}")
        self.in_dim, self.hidden_dim, self.out_dim = int(in_dim), int(hidden_dim), int(out_dim)
        self.dtype = dtype
        norm_dtype = jnp.promote_types(dtype, jnp.float32)  # LayerNorms compute in >= float32

        def linear(i: int, o: int) -> nnx.Linear:
            if init == "torch":
                return torch_linear(i, o, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            return nnx.Linear(
                i, o, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                kernel_init=nnx.initializers.truncated_normal(stddev=0.02),
                bias_init=nnx.initializers.zeros_init(),
            )

        def norm(d: int) -> nnx.LayerNorm:
            return nnx.LayerNorm(
                d, epsilon=ln_eps, dtype=norm_dtype, param_dtype=param_dtype, use_fast_variance=False, rngs=rngs
            )

        self.fc1 = linear(self.in_dim, self.hidden_dim)
        self.norm1 = norm(self.hidden_dim)
        self.fc2 = linear(self.hidden_dim, self.out_dim)
        self.norm2 = norm(self.out_dim)

    def __call__(self, x: Array) -> Array:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"ProjectionHead expects (..., {self.in_dim}) inputs; got shape {tuple(x.shape)}")
        h = self.norm1(self.fc1(x.astype(self.dtype)))
        h = gelu_exact(h)
        return self.norm2(self.fc2(h.astype(self.dtype)))


def _grid_of(n: int, grid: Any, name: str) -> tuple[int, int]:
    if grid is None:
        s = math.isqrt(n)
        if s * s != n:
            raise ValueError(f"{name}: {n} tokens is not a square grid; pass the (h, w) grid explicitly")
        return s, s
    return _as_hw(grid, name)


def _as_hw(grid: Any, name: str) -> tuple[int, int]:
    if isinstance(grid, int):
        grid = (grid, grid)
    try:
        h, w = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair (h, w); got {grid!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive; got {grid!r}")
    return h, w


def resize_tokens(tokens: Array, grid: Any, source_grid: Any = None) -> Array:
    """Resize patch tokens from their grid to ``grid`` (bilinear, torch ``align_corners=False``, no antialias).

    Args:
      tokens: (B, N, D) float, row-major over the source grid (as ViT patch tokens).
      grid: target (h, w) or an int for a square grid.
      source_grid: source (h_s, w_s) with h_s·w_s = N; default: the square grid √N × √N (N must be square).
    Returns:
      (B, h·w, D) in the input dtype; equals torch ``F.interpolate(mode='bilinear', align_corners=False)`` on
      the (B, D, h_s, w_s) grid. 16×16 → 8×8 is a 2×2 mean pool; equal grids return the tokens unchanged.
    Raises:
      ValueError: if tokens are not (B, N, D), N is not square (without ``source_grid``) or does not equal
        h_s·w_s, or a grid is not positive.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 3:
        raise ValueError(f"resize_tokens expects tokens (B, N, D); got shape {tuple(tokens.shape)}")
    b, n, d = tokens.shape
    hs, ws = _grid_of(n, source_grid, "resize_tokens source grid")
    if hs * ws != n:
        raise ValueError(f"resize_tokens: source_grid {hs}x{ws} has {hs * ws} cells but tokens have N={n}")
    h, w = _as_hw(grid, "resize_tokens grid")
    y = resize_bilinear(tokens.reshape(b, hs, ws, d), (h, w))
    return y.reshape(b, h * w, d)


def _center_gram(k: Array) -> Array:
    """H K H with H = I − 11ᵀ/N, for (..., N, N) Gram matrices."""
    return (
        k
        - jnp.mean(k, axis=-1, keepdims=True)
        - jnp.mean(k, axis=-2, keepdims=True)
        + jnp.mean(k, axis=(-2, -1), keepdims=True)
    )


def _cka_from_grams(k: Array, l: Array, eps: float) -> Array:
    kc, lc = _center_gram(k), _center_gram(l)
    hsic = jnp.sum(kc * lc, axis=(-2, -1))
    nk = jnp.sqrt(jnp.maximum(jnp.sum(kc * kc, axis=(-2, -1)), eps * eps))
    nl = jnp.sqrt(jnp.maximum(jnp.sum(lc * lc, axis=(-2, -1)), eps * eps))
    return hsic / (nk * nl)


def _check_cka_tokens(x: Array, y: Array) -> None:
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"CKA needs the same (B, N) on both sides; got {x.shape[:-1]} and {y.shape[:-1]}")
    if x.shape[-2] < 2:
        raise ValueError(f"CKA needs at least 2 tokens per image; got N={x.shape[-2]}")


def linear_cka(x: Array, y: Array, eps: float = 1e-8) -> Array:
    """Per-image linear CKA of token sets: x (B, N, Dx), y (B, N, Dy) → (B,) in [0, 1].

    ``CKA = ⟨HKH, HLH⟩_F / (‖HKH‖_F·‖HLH‖_F)``, K = x xᵀ, L = y yᵀ (N×N), the N tokens of an image are the
    samples (Kornblith et al. 2019). Norms are clamped at ``eps`` (no NaN for constant tokens; CKA is then 0).
    """
    x, y = as_float(x), as_float(y)
    _check_cka_tokens(x, y)
    k = jnp.einsum("bnd,bmd->bnm", x, x, precision=_HP)
    l = jnp.einsum("bnd,bmd->bnm", y, y, precision=_HP)
    return _cka_from_grams(k, l, eps)


def _rbf_gram(x: Array, sigma: float, eps: float) -> Array:
    sq = jnp.sum(x * x, axis=-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * jnp.einsum("bnd,bmd->bnm", x, x, precision=_HP)
    d2 = jnp.maximum(d2, 0.0)
    n = x.shape[-2]
    bw = sigma * sigma * jnp.sum(d2, axis=(-2, -1), keepdims=True) / (n * (n - 1))
    return jnp.exp(-d2 / (2.0 * jnp.maximum(bw, eps)))


def rbf_cka(x: Array, y: Array, sigma: float = 1.0, eps: float = 1e-8) -> Array:
    """Per-image RBF-kernel CKA: x (B, N, Dx), y (B, N, Dy) → (B,) in [0, 1].

    ``K_ij = exp(−‖x_i − x_j‖² / (2·s²))`` with the bandwidth ``s² = sigma² · mean_{i≠j} ‖x_i − x_j‖²`` per image
    (a differentiable stand-in for Kornblith's median heuristic: torch and NumPy disagree on the median of an
    even count); squared distances by the expansion ‖x_i‖² + ‖x_j‖² − 2x_i·x_j clamped at 0. Then as
    :func:`linear_cka`.
    """
    x, y = as_float(x), as_float(y)
    _check_cka_tokens(x, y)
    return _cka_from_grams(_rbf_gram(x, sigma, eps), _rbf_gram(y, sigma, eps), eps)


def gram_loss(x: Array, y: Array, eps: float = 1e-8) -> Array:
    """Gram-matrix (structure) loss: mean over b, i, j of ``(Ĝx − Ĝy)²``, Ĝ = x̂ x̂ᵀ the per-image (N×N) token
    cosine-similarity matrix (x̂ = rows scaled to unit norm, clamped at ``eps``). x (B, N, Dx), y (B, N, Dy)
    (feature dims may differ) → 0-d, >= 0.
    """
    x, y = as_float(x), as_float(y)
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"gram_loss needs the same (B, N) on both sides; got {x.shape[:-1]} and {y.shape[:-1]}")
    xn, yn = l2_normalize(x, eps), l2_normalize(y, eps)
    gx = jnp.einsum("bnd,bmd->bnm", xn, xn, precision=_HP)
    gy = jnp.einsum("bnd,bmd->bnm", yn, yn, precision=_HP)
    return jnp.mean((gx - gy) ** 2)


def _layer_loss(s: Array, t: Array, loss_type: str, eps: float, rbf_sigma: float) -> Array:
    if loss_type == "cosine":
        cos = jnp.sum(s * t, axis=-1) / (clamped_norm(s, eps, keepdims=False) * clamped_norm(t, eps, keepdims=False))
        return 1.0 - jnp.mean(cos)
    if loss_type == "mse":
        return jnp.mean((s - t) ** 2)
    if loss_type == "cka_linear":
        return 1.0 - jnp.mean(linear_cka(s, t, eps))
    if loss_type == "cka_rbf":
        return 1.0 - jnp.mean(rbf_cka(s, t, rbf_sigma, eps))
    return gram_loss(s, t, eps)


def token_representation_loss(
    student_tokens: Array | Sequence[Array],
    teacher_tokens: Array | Sequence[Array],
    student_projectors: Sequence[Callable[[Array], Array]] | None = None,
    teacher_projectors: Sequence[Callable[[Array], Array]] | None = None,
    *,
    loss_type: str = "cosine",
    teacher_mode: str = "trainable",
    eps: float = 1e-8,
    rbf_sigma: float = 1.0,
) -> Array:
    """L_tok: token representation loss averaged over the chosen layers (SPEC §3).

    ``L_tok = (1/|layers|)·Σ_l ℓ(P_s^l(z_s^l), P_t^l(z_t^l))`` with ℓ per ``loss_type``:
      'cosine' (default): ``1 − mean_{b,n} cos`` (cos = a·b / (max(‖a‖, eps)·max(‖b‖, eps)), as torch);
      'mse': mean over b, n, d of the squared difference; 'cka_linear' / 'cka_rbf': ``1 − mean_b CKA`` over
      the N tokens of each image (:func:`linear_cka`, :func:`rbf_cka`); 'gram': :func:`gram_loss`.

    Args:
      student_tokens: per layer (B, N, Ds_l), or one (B, N, Ds) array for a single layer.
      teacher_tokens: per layer (B, N, Dt_l), same number of layers and the same (B, N) as the student (resize
        teacher tokens first with :func:`resize_tokens`; :func:`ss_distillation_loss` does it).
      student_projectors: one callable per layer (e.g. :class:`ProjectionHead`), or None (identity).
      teacher_projectors: one callable per layer for 'trainable' / 'frozen'; must be None for 'identity'.
      teacher_mode: 'trainable' (peer: gradients reach the teacher projectors), 'frozen' (``stop_gradient`` on
        the teacher projector output: no gradient to its parameters or the teacher tokens; also exclude it from
        the optimiser so weight decay does not move it), 'identity' (raw teacher tokens).
      eps: norm clamp for cosine / CKA / Gram; rbf_sigma: RBF bandwidth factor.
    Returns:
      0-d float array (>= 0 up to rounding for every type; 0 when both sides are equal).
    Raises:
      ValueError: on unknown options, layer-count / projector-count mismatch, (B, N) mismatch, or — for
        'cosine' / 'mse' — different feature dims after projection (identity mode needs equal dims).
    """
    check_choice("loss_type", loss_type, TOKEN_LOSS_TYPES)
    check_choice("teacher_mode", teacher_mode, TEACHER_MODES)
    s_layers, t_layers = check_layer_pairs(student_tokens, teacher_tokens, student_projectors, teacher_projectors,
                                           teacher_mode)
    losses = []
    for i, (s, t) in enumerate(zip(s_layers, t_layers)):
        if s.shape[:2] != t.shape[:2]:
            raise ValueError(
                f"layer {i}: student (B, N) = {s.shape[:2]} but teacher (B, N) = {t.shape[:2]}; resize the teacher "
                "tokens to the student grid with resize_tokens first"
            )
        ps = as_float(student_projectors[i](s)) if student_projectors is not None else s
        if teacher_mode == "identity":
            pt = t
        else:
            pt = as_float(teacher_projectors[i](t))
            if teacher_mode == "frozen":
                pt = jax.lax.stop_gradient(pt)
        if loss_type in ("cosine", "mse") and ps.shape[-1] != pt.shape[-1]:
            raise ValueError(
                f"layer {i}: projected dims differ (student {ps.shape[-1]}, teacher {pt.shape[-1]}); use projectors "
                "with equal out_dim (identity mode needs the student projection dim to equal the teacher dim)"
            )
        losses.append(_layer_loss(ps, pt, loss_type, eps, rbf_sigma))
    return sum(losses[1:], losses[0]) / len(s_layers)
