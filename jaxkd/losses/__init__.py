"""Losses of SPEC.md §3 as pure JAX functions (and the token projection head).

* :mod:`jaxkd.losses.classification` — :func:`cross_entropy`, :func:`hard_distillation`,
  :func:`soft_distillation`, :func:`distillation_loss` (DeiT), :func:`alpha_at` (α schedule).
* :mod:`jaxkd.losses.tokens` — :class:`ProjectionHead`, :func:`resize_tokens`, :func:`token_representation_loss`
  (cosine / MSE / linear & RBF CKA / Gram), :func:`linear_cka`, :func:`rbf_cka`, :func:`gram_loss`.
* :mod:`jaxkd.losses.correlation` — :func:`token_correlation_loss` (pooled B×B or full N×N; KL or Frobenius).
* :mod:`jaxkd.losses.ss` — :func:`ss_distillation_loss` (CE + λ_tok·L_tok + λ_rel(epoch)·L_rel),
  :func:`rel_weight_at`.
* :mod:`jaxkd.losses.structural` — the structural losses of the original's later work (LATER.md §3.1–3.4):
  :func:`cka_loss` (linear / RBF; token-wise, or across the batch for class tokens), :func:`gram_matrix_loss`,
  :func:`layerwise_structural_loss` (per-layer projectors, L_cka and L_gram), :func:`structural_weights_at`
  (λ_cka(e), λ_gram(e)), :func:`structural_distillation_loss` (λ_cka(e)·L_cka + λ_gram(e)·L_gram, added to
  ss_distillation_loss by the token-distillation task), :func:`median_bandwidth`, :func:`cka_kernel`.

The twin of every function is in ``torch_ref/losses.py`` (``torch_ref/structural.py`` for the structural losses);
``parity_tests/test_losses_parity.py`` and ``parity_tests/test_structural_parity.py`` compare them.
"""

from jaxkd.losses.classification import alpha_at, cross_entropy, distillation_loss, hard_distillation, soft_distillation
from jaxkd.losses.correlation import correlation_matrix, token_correlation_loss
from jaxkd.losses.ss import rel_weight_at, ss_distillation_loss
from jaxkd.losses.structural import (
    CKA_KERNELS,
    GRAM_NORMS,
    RBF_BANDWIDTHS,
    STRUCTURAL_TEACHER_MODES,
    STRUCTURAL_WEIGHTINGS,
    cka_kernel,
    cka_loss,
    gram_matrix_loss,
    layerwise_structural_loss,
    median_bandwidth,
    structural_distillation_loss,
    structural_weights_at,
)
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
    "cka_loss",
    "cka_kernel",
    "median_bandwidth",
    "gram_matrix_loss",
    "layerwise_structural_loss",
    "structural_weights_at",
    "structural_distillation_loss",
    "CKA_KERNELS",
    "RBF_BANDWIDTHS",
    "GRAM_NORMS",
    "STRUCTURAL_WEIGHTINGS",
    "STRUCTURAL_TEACHER_MODES",
]
