"""Classification and logit-distillation losses of SPEC.md §3 (CE, hard/soft KD, DeiT objective, α schedule).

Every loss casts its inputs to at least float32 (float64 stays float64) and returns a 0-d array in that dtype.
Logit arrays are (..., K) with K classes on the last axis; "the batch" below is every leading position
(normally (B, K) logits, B samples). The functions are pure and jit/grad-safe; no stop-gradient is applied to
teacher logits (jaxkd's trainer computes them outside the differentiated function; the gradient with respect to
them is the mathematical one, which the parity suite checks).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxkd.losses._common import Array, as_float, check_choice, is_host_number, kl_rows

__all__ = ["cross_entropy", "hard_distillation", "soft_distillation", "distillation_loss", "alpha_at"]

_REDUCTIONS = ("mean", "sum", "none")
_KD_KINDS = ("hard", "soft")
_KD_NORMALIZE = ("batch", "element")
_ALPHA_SCHEDULES = ("constant", "linear", "cosine")


def _reduce(per_sample: Array, reduction: str) -> Array:
    check_choice("reduction", reduction, _REDUCTIONS)
    if reduction == "mean":
        return jnp.mean(per_sample)
    if reduction == "sum":
        return jnp.sum(per_sample)
    return per_sample


def _check_host_range(name: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> None:
    if is_host_number(value):
        v = float(value)
        ok = lo <= v < hi if hi_open else lo <= v <= hi
        if not ok:
            bracket = ")" if hi_open else "]"
            raise ValueError(f"{name} must be in [{lo}, {hi}{bracket}; got {value}")


def _check_tau(tau: Any) -> None:
    if is_host_number(tau) and not float(tau) > 0.0:
        raise ValueError(f"temperature tau must be > 0; got {tau}")


def cross_entropy(
    logits: Array,
    targets: Array,
    label_smoothing: float = 0.0,
    *,
    smooth_soft_targets: bool = False,
    reduction: str = "mean",
) -> Array:
    """Cross-entropy with integer labels or soft targets, with SPEC §3 label smoothing.

    Args:
      logits: (..., K) float, any float dtype (computed in >= float32).
      targets: integer class indices (...) in [0, K), or soft targets (..., K) (rows summing to 1, e.g. from
        MixUp/CutMix). Out-of-range integer labels are not checked (under jit they cannot be).
      label_smoothing: ε in [0, 1). Integer labels: ``L = (1−ε)·CE(y, k) + ε·(1/K)·Σ_i CE(y, i)``, i.e.
        ``−(1−ε)·log p_k − (ε/K)·Σ_i log p_i`` (= torch ``F.cross_entropy(label_smoothing=ε)``).
      smooth_soft_targets: soft targets are used as given by default (``L = −Σ_k t_k log p_k``, as the peer);
        True smooths them too: ``t ← (1−ε)·t + ε/K``.
      reduction: 'mean' (default, over the batch positions), 'sum', or 'none' (per-sample, shape (...)).
    Returns:
      0-d array (or (...) for 'none'), dtype of the promoted logits.
    Raises:
      ValueError: on mismatched shapes, non-integer 1-fewer-dim targets, or ε outside [0, 1).
    """
    logits = as_float(logits)
    targets = jnp.asarray(targets)
    if logits.ndim < 1:
        raise ValueError("logits must be (..., K); got a scalar")
    _check_host_range("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
    num_classes = logits.shape[-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    eps = label_smoothing
    if targets.ndim == logits.ndim - 1:
        if not jnp.issubdtype(targets.dtype, jnp.integer):
            raise ValueError(f"hard targets must be integer class indices; got dtype {targets.dtype}")
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"hard targets shape {targets.shape} must equal logits shape[:-1] {logits.shape[:-1]}")
        nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
        if is_host_number(eps) and float(eps) == 0.0:
            per_sample = nll
        else:
            per_sample = (1.0 - eps) * nll - eps * jnp.mean(logp, axis=-1)
    elif targets.shape == logits.shape:
        t = targets.astype(logp.dtype)
        if smooth_soft_targets:
            t = (1.0 - eps) * t + eps / num_classes
        per_sample = -jnp.sum(t * logp, axis=-1)
    else:
        raise ValueError(
            f"targets must be integer labels of shape {logits.shape[:-1]} or soft targets of shape "
            f"{logits.shape}; got shape {targets.shape}"
        )
    return _reduce(per_sample, reduction)


def hard_distillation(student_logits: Array, teacher_logits: Array, label_smoothing: float = 0.0) -> Array:
    """DeiT hard distillation: ``CE(student, argmax(teacher))``, mean over the batch.

    Args:
      student_logits: (..., K) float.
      teacher_logits: (..., K) float, same shape; only its argmax is used (first maximal index on ties, as
        torch), so no gradient reaches it.
      label_smoothing: ε applied to the pseudo-labels (0 in DeiT).
    Returns:
      0-d float array.
    """
    student_logits = as_float(student_logits)
    teacher_logits = jnp.asarray(teacher_logits)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {teacher_logits.shape} must match student logits {student_logits.shape}")
    pseudo = jnp.argmax(teacher_logits, axis=-1)
    return cross_entropy(student_logits, pseudo, label_smoothing)


def soft_distillation(
    student_logits: Array, teacher_logits: Array, tau: float = 3.0, normalize: str = "batch"
) -> Array:
    """Soft distillation ``τ²·KL(p_t ‖ p_s)``, p = softmax(logits/τ), KL summed over classes.

    Args:
      student_logits, teacher_logits: (..., K) float, same shape.
      tau: temperature τ > 0 (SPEC default 3.0); may be a traced scalar.
      normalize: 'batch' (default, SPEC): ``τ²·Σ_{b,k} KL_bk / B`` (mean over the batch of the per-sample KL);
        'element': divide by B·K instead, as DeiT's own code (``kl_div(sum)·τ²/numel``).
    Returns:
      0-d float array, >= 0.
    """
    check_choice("normalize", normalize, _KD_NORMALIZE)
    _check_tau(tau)
    s = as_float(student_logits)
    t = as_float(teacher_logits)
    if s.shape != t.shape:
        raise ValueError(f"teacher logits {t.shape} must match student logits {s.shape}")
    log_ps = jax.nn.log_softmax(s / tau, axis=-1)
    log_pt = jax.nn.log_softmax(t / tau, axis=-1)
    total = jnp.sum(kl_rows(log_pt, log_ps))
    denom = s.size if normalize == "element" else s.size // s.shape[-1]
    return total * (tau * tau) / denom


def distillation_loss(
    cls_logits: Array,
    dist_logits: Array | None,
    labels: Array,
    teacher_logits: Array,
    *,
    alpha: float | Array = 0.5,
    kind: str = "hard",
    tau: float = 3.0,
    label_smoothing: float = 0.0,
    smooth_soft_targets: bool = False,
    normalize: str = "batch",
) -> tuple[Array, dict[str, Array]]:
    """DeiT objective ``(1−α)·CE(cls head, labels) + α·KD(dist head, teacher)``.

    Args:
      cls_logits: (B, K) class-token head logits.
      dist_logits: (B, K) distillation-token head logits, or None (no distillation token: the KD term uses
        ``cls_logits``, as DeiT does).
      labels: (B,) integer labels or (B, K) soft targets (MixUp/CutMix) for the CE term.
      teacher_logits: (B, K).
      alpha: α in [0, 1] (host float or traced scalar, e.g. from :func:`alpha_at`).
      kind: 'hard' (CE to the teacher's argmax, :func:`hard_distillation`) or 'soft' (:func:`soft_distillation`).
      tau, normalize: soft distillation only (see :func:`soft_distillation`).
      label_smoothing, smooth_soft_targets: for the CE term only (see :func:`cross_entropy`).
    Returns:
      ``(total, {"ce": CE term, "kd": KD term, "alpha": α})``; all 0-d float arrays; the components are the
      unweighted terms.
    """
    check_choice("kind", kind, _KD_KINDS)
    _check_host_range("alpha", alpha, 0.0, 1.0)
    kd_logits = cls_logits if dist_logits is None else dist_logits
    ce = cross_entropy(cls_logits, labels, label_smoothing, smooth_soft_targets=smooth_soft_targets)
    if kind == "hard":
        kd = hard_distillation(kd_logits, teacher_logits)
    else:
        kd = soft_distillation(kd_logits, teacher_logits, tau, normalize)
    a = jnp.asarray(alpha, ce.dtype)
    total = (1.0 - a) * ce + a * kd
    return total, {"ce": ce, "kd": kd, "alpha": a}


def alpha_at(
    epoch: float | Array,
    num_epochs: int,
    schedule: str = "constant",
    alpha: float = 0.5,
    alpha_start: float = 0.0,
    alpha_end: float = 0.5,
    warmup_epochs: int = 0,
) -> float | Array:
    """Distillation weight α at ``epoch`` (SPEC §3 α schedule).

    Progress ``p = clip((e − W)/(E − W), 0, 1)`` with E = ``num_epochs``, W = ``warmup_epochs``; α = 0 while
    ``e < W`` (KD warm-up, CE only); afterwards 'constant': ``alpha``; 'linear': ``α_s + (α_e − α_s)·p``;
    'cosine': ``α_s + (α_e − α_s)·(1 − cos πp)/2``. Epochs are 0-based and may be fractional; α_start is reached
    at e = W and α_end at e = E (so the last integer epoch E − 1 gets p = (E−1−W)/(E−W), as the formula says).

    Args:
      epoch: a host number (returns a Python float, no JAX dispatch) or a JAX scalar/tracer (returns a float32
        0-d array; usable under jit with a traced epoch).
      num_epochs, warmup_epochs: host ints with 0 <= W < E.
      schedule: 'constant' | 'linear' | 'cosine'.
      alpha, alpha_start, alpha_end: host floats in [0, 1].
    Raises:
      ValueError: unknown schedule, W >= E, negative W, or α values outside [0, 1].
    """
    check_choice("schedule", schedule, _ALPHA_SCHEDULES)
    num_epochs, warmup_epochs = int(num_epochs), int(warmup_epochs)
    if warmup_epochs < 0 or num_epochs <= warmup_epochs:
        raise ValueError(
            f"need 0 <= warmup_epochs < num_epochs for the α schedule; got warmup_epochs={warmup_epochs}, "
            f"num_epochs={num_epochs}"
        )
    for name, v in (("alpha", alpha), ("alpha_start", alpha_start), ("alpha_end", alpha_end)):
        _check_host_range(name, v, 0.0, 1.0)
    span = float(num_epochs - warmup_epochs)
    if is_host_number(epoch):
        e = float(epoch)
        if e < warmup_epochs:
            return 0.0
        p = min(max((e - warmup_epochs) / span, 0.0), 1.0)
        if schedule == "constant":
            return float(alpha)
        if schedule == "linear":
            return float(alpha_start + (alpha_end - alpha_start) * p)
        return float(alpha_start + (alpha_end - alpha_start) * (1.0 - math.cos(math.pi * p)) / 2.0)
    e = jnp.asarray(epoch, jnp.float32)
    p = jnp.clip((e - warmup_epochs) / span, 0.0, 1.0)
    if schedule == "constant":
        a = jnp.full_like(e, alpha)
    elif schedule == "linear":
        a = alpha_start + (alpha_end - alpha_start) * p
    else:
        a = alpha_start + (alpha_end - alpha_start) * (1.0 - jnp.cos(jnp.pi * p)) / 2.0
    return jnp.where(e < warmup_epochs, jnp.zeros_like(a), a)
