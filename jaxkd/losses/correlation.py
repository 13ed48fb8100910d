"""Token-correlation (relation) loss L_rel of SPEC.md §3 (CST-style), pooled B×B or full per-image N×N."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd.losses._common import (
    Array,
    check_choice,
    check_tokens,
    is_host_number,
    kl_rows,
    l2_normalize,
    safe_frobenius,
)

__all__ = ["correlation_matrix", "token_correlation_loss"]

_HP = jax.lax.Precision.HIGHEST
_KINDS = ("kl", "frobenius")
_FULL_REDUCTIONS = ("row_mean", "peer_batchmean")
_FROBENIUS = ("mse", "peer")


def correlation_matrix(tokens: Array, pooled: bool = True, eps: float = 1e-12) -> Array:
    """``C = normalize(z)·normalize(z)ᵀ`` (cosine similarities; normalize = torch ``F.normalize``, eps 1e-12).

    Args:
      tokens: (B, N, D).
      pooled: True → z = mean over tokens (B, D) and C is (B, B) across samples; False → per image, z (N, D)
        and C is (B, N, N) across tokens.
    Returns:
      (B, B) or (B, N, N) float (>= float32).
    """
    x = check_tokens("tokens", tokens)
    if pooled:
        z = l2_normalize(jnp.mean(x, axis=1), eps)
        return jnp.einsum("bd,cd->bc", z, z, precision=_HP)
    z = l2_normalize(x, eps)
    return jnp.einsum("bnd,bmd->bnm", z, z, precision=_HP)


def token_correlation_loss(
    student_tokens: Array,
    teacher_tokens: Array,
    tau: float = 0.1,
    pooled: bool = True,
    kind: str = "kl",
    *,
    full_reduction: str = "row_mean",
    frobenius: str = "mse",
    eps: float = 1e-12,
) -> Array:
    """L_rel: match the teacher's token-correlation structure (SPEC §3).

    ``P = softmax(C/τ)`` row-wise with C from :func:`correlation_matrix` on each side (feature dims may differ;
    only the B×B or N×N matrices are compared).

    kind='kl' (default): row-wise ``KL(P_t ‖ P_s) = Σ_j P_t,ij (log P_t,ij − log P_s,ij)``, then
      pooled: mean over the B rows (= the peer's ``kl_div(batchmean)``);
      full, ``full_reduction='row_mean'`` (default): mean over all B·N rows;
      full, ``'peer_batchmean'``: sum over the B·N rows divided by B (N × the row mean; the peer's
      ``kl_div(log P_s, P_t, reduction='batchmean')`` on (B, N, N)).
    kind='frobenius' (``full_reduction`` is ignored):
      ``frobenius='mse'`` (default): ``‖P_s − P_t‖_F² / numel`` (mean squared entry difference: independent of
      B, smooth at 0);
      ``frobenius='peer'``: ``‖P_s − P_t‖_F / numel`` as SPEC states the peer did (the un-squared norm over the
      whole (B, B) or (B, N, N) array divided by its element count, so it shrinks like 1/B or 1/N for a fixed
      per-entry error); the gradient at P_s = P_t is 0 (as torch's norm backward), not NaN.
    P is the softmaxed matrix in both Frobenius forms (SPEC writes P_s, P_t), not the raw C.

    Args:
      student_tokens: (B, N_s, D_s); teacher_tokens: (B, N_t, D_t) — the final, unprojected patch tokens.
        Pooled mode allows N_s ≠ N_t; full mode needs N_s = N_t (resize the teacher with ``resize_tokens``).
      tau: temperature (0.1), > 0.
    Returns:
      0-d float array, >= 0 (a batch of one in pooled mode gives 0: a 1×1 softmax is 1).
    """
    check_choice("kind", kind, _KINDS)
    check_choice("full_reduction", full_reduction, _FULL_REDUCTIONS)
    check_choice("frobenius", frobenius, _FROBENIUS)
    if is_host_number(tau) and not float(tau) > 0.0:
        raise ValueError(f"correlation temperature tau must be > 0; got {tau}")
    s = check_tokens("student_tokens", student_tokens)
    t = check_tokens("teacher_tokens", teacher_tokens)
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"student and teacher batch sizes differ: {s.shape[0]} vs {t.shape[0]}")
    if not pooled and s.shape[1] != t.shape[1]:
        raise ValueError(
            f"full (N×N) correlation needs equal token counts; got student N={s.shape[1]}, teacher N={t.shape[1]}: "
            "resize the teacher tokens with resize_tokens, or use pooled=True"
        )
    log_ps = jax.nn.log_softmax(correlation_matrix(s, pooled, eps) / tau, axis=-1)
    log_pt = jax.nn.log_softmax(correlation_matrix(t, pooled, eps) / tau, axis=-1)
    if kind == "kl":
        rows = kl_rows(log_pt, log_ps)  # (B,) pooled, (B, N) full
        if pooled or full_reduction == "row_mean":
            return jnp.mean(rows)
        return jnp.sum(rows) / s.shape[0]
    diff = jnp.exp(log_ps) - jnp.exp(log_pt)
    if frobenius == "mse":
        return jnp.mean(diff * diff)
    return safe_frobenius(diff) / diff.size
