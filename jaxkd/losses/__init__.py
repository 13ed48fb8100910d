"""Losses of SPEC.md §3 as pure JAX functions (and the token projection head).

* :mod:`jaxkd.losses.classification` — :func:`cross_entropy`, :func:`hard_distillation`,
  :func:`soft_distillation`, :func:`distillation_loss` (DeiT), :func:`alpha_at` (α schedule).
* :mod:`jaxkd.losses.tokens` — :class:`ProjectionHead`, :func:`resize_tokens`, :func:`token_representation_loss`
  (cosine / MSE / linear & RBF CKA / Gram), :func:`linear_cka`, :func:`rbf_cka`, :func:`gram_loss`.
* :mod:`jaxkd.losses.correlation` — :func:`token_correlation_loss` (pooled B×B or full N×N; KL or Frobenius).
* :mod:`jaxkd.losses.ss` — :func:`ss_distillation_loss` (CE + λ_tok·L_tok + λ_rel(epoch)·L_rel),
  :func:`rel_weight_at`.

The twin of every function is in ``torch_ref/losses.py``; ``parity_tests/test_losses_parity.py`` compares them.
"""

from jaxkd.losses.classification import alpha_at, cross_entropy, distillation_loss, hard_distillation, soft_distillation
from jaxkd.losses.correlation import correlation_matrix, token_correlation_loss
from jaxkd.losses.ss import rel_weight_at, ss_distillation_loss
from jaxkd.losses.tokens import (
    TEACHER_MODES,
    TOKEN_LOSS_TYPES,
    ProjectionHead,
    gram_loss,
    linear_cka,
    rbf_cka,
    resize_tokens,
    token_representation_loss,
)

__all__ = [
    "cross_entropy",
    "hard_distillation",
    "soft_distillation",
    "distillation_loss",
    "alpha_at",
    "ProjectionHead",
    "resize_tokens",
    "token_representation_loss",
    "linear_cka",
    "rbf_cka",
    "gram_loss",
    "TOKEN_LOSS_TYPES",
    "TEACHER_MODES",
    "correlation_matrix",
    "token_correlation_loss",
    "rel_weight_at",
    "ss_distillation_loss",
]
