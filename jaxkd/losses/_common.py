"""Numerical helpers shared by the loss modules (private).

All helpers compute in at least float32 (float64 input stays float64) and never produce NaN gradients at zero
vectors: norms clamp the *squared* norm before the square root, so ``sqrt(max(s, eps²)) == max(sqrt(s), eps)``
in value (torch's ``clamp_min(norm, eps)``) and the gradient is the torch one wherever ``‖x‖ > eps``.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def as_float(x: Any) -> Array:
    """``x`` as a JAX array of at least float32 (bf16/fp16 are promoted; float64 is kept)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def is_host_number(x: Any) -> bool:
    """True for Python / NumPy scalars (host-side values), False for JAX arrays and tracers."""
    return isinstance(x, (numbers.Number, np.number)) or (isinstance(x, np.ndarray) and x.ndim == 0)


def clamped_norm(x: Array, eps: float, axis: int = -1, keepdims: bool = True) -> Array:
    """``max(‖x‖₂, eps)`` along ``axis``, computed as ``sqrt(max(Σx², eps²))`` (finite gradient at x = 0)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    return jnp.sqrt(jnp.maximum(sq, eps * eps))


def l2_normalize(x: Array, eps: float = 1e-12, axis: int = -1) -> Array:
    """``x / max(‖x‖₂, eps)`` along ``axis``: torch ``F.normalize(x, dim=axis, eps=eps)``."""
    return x / clamped_norm(x, eps, axis=axis)


def safe_frobenius(x: Array) -> Array:
    """``‖x‖_F`` over *all* elements with gradient 0 (not NaN) at x = 0, as torch's ``norm`` backward."""
    sq = jnp.sum(x * x)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def kl_rows(log_p_teacher: Array, log_p_student: Array) -> Array:
    """Row-wise ``KL(p_t ‖ p_s) = Σ_k p_t,k (log p_t,k − log p_s,k)`` over the last axis.

    Inputs are log-probabilities of equal shape (..., K); returns (...). Where p_t underflows to 0 the term is
    exactly 0 (log-probabilities are finite, so no 0·∞), matching torch ``F.kl_div(..., log_target=True)``.
    """
    return jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a one-line ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_tokens(name: str, x: Array) -> Array:
    """Check a token array is (B, N, D) floating point; returns it as at least float32."""
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{name} must be tokens (B, N, D); got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point; got dtype {x.dtype}")
    return as_float(x)


def as_layers(x: Any) -> list:
    """Per-layer token arrays as a list: one (B, N, D) array is one layer; None is none."""
    if x is None:
        return []
    return [x] if hasattr(x, "ndim") else list(x)


def check_layer_pairs(student_tokens: Any, teacher_tokens: Any, student_projectors: Any, teacher_projectors: Any,
                      teacher_mode: str) -> tuple[list, list]:
    """The (student, teacher) token layers of a layer-wise loss, each checked as :func:`check_tokens`: the same
    non-zero number of layers, one student projector per layer (or None), and teacher projectors as
    ``teacher_mode`` needs them (none for 'identity', one per layer otherwise). One-line ValueErrors."""
    s_layers = [check_tokens(f"student_tokens[{i}]", x) for i, x in enumerate(as_layers(student_tokens))]
    t_layers = [check_tokens(f"teacher_tokens[{i}]", x) for i, x in enumerate(as_layers(teacher_tokens))]
    n = len(s_layers)
    if not n or n != len(t_layers):
        raise ValueError(f"need the same non-zero number of student and teacher layers; got {n} and {len(t_layers)}")
    if student_projectors is not None and len(student_projectors) != n:
        raise ValueError(f"need one student projector per layer ({n}); got {len(student_projectors)}")
    if teacher_mode == "identity":
        if teacher_projectors is not None:
            raise ValueError("teacher_mode='identity' uses no teacher projectors; pass teacher_projectors=None")
    elif teacher_projectors is None or len(teacher_projectors) != n:
        got = "None" if teacher_projectors is None else len(teacher_projectors)
        raise ValueError(f"teacher_mode={teacher_mode!r} needs one teacher projector per layer ({n}); got {got}")
    return s_layers, t_layers
