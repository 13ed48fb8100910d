"""Self-supervised (CST-style) distillation objective of SPEC.md §3: CE + λ_tok·L_tok + λ_rel(epoch)·L_rel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp

from jaxkd.losses._common import Array, is_host_number
from jaxkd.losses.classification import cross_entropy
from jaxkd.losses.correlation import token_correlation_loss
from jaxkd.losses.tokens import _as_hw, _grid_of, resize_tokens, token_representation_loss

__all__ = ["rel_weight_at", "ss_distillation_loss"]


def rel_weight_at(epoch: float | Array, lambda_rel: float = 0.1, rel_warmup_epochs: int = 0) -> float | Array:
    """λ_rel at ``epoch``: 0 during the relation warm-up (stage A, ``epoch < rel_warmup_epochs``), else
    ``lambda_rel`` (stage B). Host number in → Python float; JAX scalar/tracer in → float32 0-d array."""
    if int(rel_warmup_epochs) < 0:
        raise ValueError(f"rel_warmup_epochs must be >= 0; got {rel_warmup_epochs}")
    if is_host_number(epoch):
        return 0.0 if float(epoch) < rel_warmup_epochs else float(lambda_rel)
    e = jnp.asarray(epoch, jnp.float32)
    return jnp.where(e < rel_warmup_epochs, 0.0, float(lambda_rel)).astype(jnp.float32)


def _to_grid(tokens: Array, grid: tuple[int, int], source_grid: Any) -> Array:
    if tokens.shape[1] == grid[0] * grid[1] and source_grid is None:
        return tokens
    return resize_tokens(tokens, grid, source_grid)


def ss_distillation_loss(
    student_logits: Array,
    labels: Array,
    student_layer_tokens: Sequence[Array],
    teacher_layer_tokens: Sequence[Array],
    student_final_tokens: Array,
    teacher_final_tokens: Array,
    student_projectors: Sequence[Callable[[Array], Array]] | None,
    teacher_projectors: Sequence[Callable[[Array], Array]] | None = None,
    *,
    epoch: float | Array,
    lambda_tok: float = 1.0,
    lambda_rel: float = 0.1,
    rel_warmup_epochs: int = 10,
    label_smoothing: float = 0.0,
    smooth_soft_targets: bool = False,
    token_loss_type: str = "cosine",
    teacher_mode: str = "trainable",
    rbf_sigma: float = 1.0,
    correlation_tau: float = 0.1,
    pooled: bool = True,
    correlation_kind: str = "kl",
    full_reduction: str = "row_mean",
    frobenius: str = "mse",
    resize_teacher: bool = True,
    student_grid: Any = None,
    teacher_grid: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """``L = CE + λ_tok·L_tok + λ_rel(epoch)·L_rel`` with stage A (λ_rel = 0 for ``epoch < rel_warmup_epochs``)
    and stage B (λ_rel = ``lambda_rel``).

    Args:
      student_logits: (B, K) class-head logits; labels: (B,) integer or (B, K) soft targets (CE as
        :func:`cross_entropy` with ``label_smoothing`` / ``smooth_soft_targets``).
      student_layer_tokens: per chosen layer (B, N_s, D_s) patch tokens (peer: before the student's final LN).
      teacher_layer_tokens: per layer (B, N_t, D_t) (peer: after the teacher's final LN).
      student_final_tokens: (B, N_s, D_s') final-LN student patch tokens; teacher_final_tokens: (B, N_t, D_t')
        final teacher patch tokens (unprojected) — the L_rel inputs.
      student_projectors / teacher_projectors / teacher_mode / token_loss_type / rbf_sigma: as
        :func:`token_representation_loss`.
      epoch: host number or traced scalar (stage switch works under jit).
      correlation_tau, pooled, correlation_kind, full_reduction, frobenius: as :func:`token_correlation_loss`.
      resize_teacher: when N_t ≠ N_s, resize teacher tokens to the student grid (bilinear, :func:`resize_tokens`)
        *before* projection for L_tok, and in full (N×N) correlation mode for L_rel (pooled mode needs none).
      student_grid / teacher_grid: (h, w) token grids; default square (√N × √N).
    Returns:
      ``(total, {"ce", "tok", "rel", "lambda_rel"})``, 0-d float arrays; "tok" and "rel" are the unweighted
      losses (L_rel is computed in both stages so it can be logged; weighted by 0 in stage A).
    """
    ce = cross_entropy(student_logits, labels, label_smoothing, smooth_soft_targets=smooth_soft_targets)
    s_layers = [jnp.asarray(x) for x in student_layer_tokens]
    t_layers = [jnp.asarray(x) for x in teacher_layer_tokens]
    s_final, t_final = jnp.asarray(student_final_tokens), jnp.asarray(teacher_final_tokens)
    if resize_teacher and s_layers:
        n_s = s_layers[0].shape[1]
        grid = _grid_of(n_s, student_grid, "student token grid")
        if grid[0] * grid[1] != n_s:
            raise ValueError(f"student_grid {grid} does not match N_s={n_s} student tokens")
        src = None if teacher_grid is None else _as_hw(teacher_grid, "teacher_grid")
        t_layers = [_to_grid(t, grid, src) for t in t_layers]
        if not pooled:
            t_final = _to_grid(t_final, grid, src)
    tok = token_representation_loss(
        s_layers, t_layers, student_projectors, teacher_projectors,
        loss_type=token_loss_type, teacher_mode=teacher_mode, rbf_sigma=rbf_sigma,
    )
    rel = token_correlation_loss(
        s_final, t_final, correlation_tau, pooled, correlation_kind,
        full_reduction=full_reduction, frobenius=frobenius,
    )
    lam_rel = jnp.asarray(rel_weight_at(epoch, lambda_rel, rel_warmup_epochs), ce.dtype)
    total = ce + lambda_tok * tok + lam_rel * rel
    return total, {"ce": ce, "tok": tok, "rel": rel, "lambda_rel": lam_rel}
