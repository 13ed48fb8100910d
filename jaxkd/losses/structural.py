"""Structural losses of the original's later work (``../shared/spec/LATER.md`` §3.1–3.4): CKA (linear or RBF
kernel; token-wise, or across the batch for CLS tokens), the Gram-matrix loss, the layer-wise structural loss with
its projectors, and the epoch weights λ_cka(e), λ_gram(e).

Tokens are (B, N, D) = (batch, tokens, features), already stripped of prefix tokens (patch mode) or the class
token alone (N = 1, CLS-only mode). Losses compute in >= float32 and return 0-d arrays. Matmuls use HIGHEST
precision. Everything is jit-traceable: the RBF bandwidth is a median computed on the device (no host sync).

Where LATER.md §7 lists a defect of the original, jaxkd's default is the corrected version and an option
reproduces the original (REVIEW notes in the docstrings below):

* §7.9 RBF bandwidth — :func:`median_bandwidth`: ``'median_offdiag'`` (default) / ``'median_all'`` (original).
* §7.8 Gram normalisation — :func:`gram_matrix_loss`: ``'squared'`` (default) / ``'frobenius'`` (original).
* §7.7 teacher projectors — :func:`layerwise_structural_loss`: ``teacher_mode='identity'`` (default) /
  ``'frozen'`` / ``'trainable'`` (original).
* §7.6 λ_gram ignored — :func:`structural_weights_at`: ``'separate'`` (default) / ``'coupled'`` (original).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.losses._common import (
    Array,
    as_float,
    check_choice,
    check_layer_pairs,
    check_tokens,
    is_host_number,
    l2_normalize,
)
from jaxkd.losses.tokens import _center_gram

__all__ = [
    "CKA_KERNELS", "RBF_BANDWIDTHS", "GRAM_NORMS", "STRUCTURAL_WEIGHTINGS", "STRUCTURAL_TEACHER_MODES",
    "median_bandwidth", "cka_kernel", "cka_loss", "gram_matrix_loss", "layerwise_structural_loss",
    "structural_weights_at", "structural_distillation_loss",
]

CKA_KERNELS = ("linear", "rbf")
RBF_BANDWIDTHS = ("median_offdiag", "median_all")  # jaxkd default, the original
GRAM_NORMS = ("squared", "frobenius")  # jaxkd default, the original
STRUCTURAL_WEIGHTINGS = ("separate", "coupled")  # jaxkd default, the original
STRUCTURAL_TEACHER_MODES = ("identity", "frozen", "trainable")  # jaxkd default first; 'trainable' = the original
NORMALIZE_EPS = 1e-12  # torch F.normalize's eps: the original's per-token L2 normalisation
_HP = jax.lax.Precision.HIGHEST


def _lower_median(v: Array) -> Array:
    """The lower median along the last axis, ``sort(v)[(M − 1) // 2]`` — what ``torch.median`` returns (for an even
    count the lower of the two middle values; ``jnp.median`` would average them)."""
    return jnp.sort(v, axis=-1)[..., (v.shape[-1] - 1) // 2]


def _sq_dists(x: Array) -> Array:
    """(..., M, D) -> (..., M, M) squared Euclidean distances ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, clamped at 0."""
    sq = jnp.sum(x * x, axis=-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * jnp.einsum("...nd,...md->...nm", x, x, precision=_HP)
    return jnp.maximum(d2, 0.0)


def median_bandwidth(d2: Array, bandwidth: str = "median_offdiag", eps: float = 1e-8) -> Array:
    """The RBF kernel's bandwidth s (``K = exp(−d² / (2·s))``) from squared distances d2 (..., M, M).

    * ``'median_offdiag'`` (default): per kernel matrix, the lower median of its off-diagonal squared distances
      (taken over the i < j entries: the matrix is symmetric, and each off-diagonal value occurs twice, so the lower
      median of the upper triangle is the lower median of all M(M − 1) off-diagonal entries) → (..., 1, 1).
    * ``'median_all'``: one value for the whole array, the lower median of all its entries, the M zeros of each
      diagonal included (the original) → 0-d.

    Plus ``eps`` (so that s > 0 when all points coincide). The lower median (``torch.median``'s definition; see
    :func:`_lower_median`) makes the value computable identically in JAX and torch.

    REVIEW (LATER §7.9): original: ``s = torch.median(d2.view(-1)).item() + eps`` over the whole batch tensor —
    the diagonal zeros pull the median down (N of the N² entries per image), and ``.item()`` forces a host sync on
    every step; jaxkd default: computed on the device (works under jit), diagonal excluded, one bandwidth per kernel
    (per image; the B×B kernel in batch mode), so that CKA_b depends on image b alone, not on the batch it came in;
    ``'median_all'`` reproduces the original. The original's "σ" is a squared distance; as the median of d² is
    the square of the median of d (a monotone map and a lower median), ``s = median(d²)`` is the usual σ² of the
    median heuristic and nothing is changed there.

    The bandwidth is a constant for autodiff (``stop_gradient``), in both modes: it chooses the kernel, it is not
    a quantity to optimise. Its gradient would reach only the one pair of points whose distance is the median
    (a sparse signal that jumps between pairs from step to step), and would let the student rescale its kernel
    instead of matching the teacher's structure. The original's ``.item()`` detached it too.
    """
    check_choice("rbf_bandwidth", bandwidth, RBF_BANDWIDTHS)
    d2 = as_float(d2)
    if bandwidth == "median_all":
        med = _lower_median(d2.reshape(-1))
    else:
        m = d2.shape[-1]
        if m < 2:
            raise ValueError(f"rbf_bandwidth 'median_offdiag' needs at least 2 points; got M={m}")
        rows, cols = np.triu_indices(m, k=1)
        med = _lower_median(d2[..., rows, cols])[..., None, None]
    return jax.lax.stop_gradient(med) + eps


def cka_kernel(x: Array, kernel_type: str = "linear", *, normalize_features: bool = True,
               rbf_bandwidth: str = "median_offdiag", eps: float = 1e-8) -> Array:
    """Kernel matrices of point sets x (..., M, D) → (..., M, M).

    ``normalize_features``: each point (token) is first L2-normalised over D (torch ``F.normalize``, eps 1e-12).
    'linear': ``K = X Xᵀ``; 'rbf': ``K = exp(−d² / (2·s))`` with s from :func:`median_bandwidth`
    (``rbf_bandwidth``; the median is taken over the whole array for 'median_all').
    """
    check_choice("kernel_type", kernel_type, CKA_KERNELS)
    x = as_float(x)
    if normalize_features:
        x = l2_normalize(x, NORMALIZE_EPS)
    if kernel_type == "linear":
        return jnp.einsum("...nd,...md->...nm", x, x, precision=_HP)
    d2 = _sq_dists(x)
    return jnp.exp(-d2 / (2.0 * median_bandwidth(d2, rbf_bandwidth, eps)))


def _cka(k: Array, l: Array, eps: float) -> Array:
    """CKA of kernel matrices (..., M, M) → (...): biased HSIC ``Σ K̃⊙L̃ / ((M − 1)² + eps)`` of the centred
    kernels K̃ = HKH, and ``HSIC(K, L) / sqrt(HSIC(K, K)·HSIC(L, L) + eps)`` (LATER §3.1; the (M − 1)² cancels
    up to eps)."""
    m = k.shape[-1]
    kc, lc = _center_gram(k), _center_gram(l)
    denom = (m - 1) ** 2 + eps

    def hsic(a, b):
        return jnp.sum(a * b, axis=(-2, -1)) / denom

    return hsic(kc, lc) / jnp.sqrt(hsic(kc, kc) * hsic(lc, lc) + eps)


def _as_point_sets(s: Array, t: Array, what: str) -> tuple[Array, Array]:
    """Token-wise: (B, N, D) as B sets of N points; batch mode (N == 1): one set of the B class tokens."""
    if s.shape[:2] != t.shape[:2]:
        raise ValueError(f"{what} needs the same (B, N) on both sides; got {s.shape[:2]} and {t.shape[:2]} (resize "
                         "the teacher tokens to the student grid first)")
    b, n = s.shape[:2]
    if n == 1 and b < 2:
        raise ValueError(f"{what} in batch mode (N = 1, class tokens) needs a batch of at least 2; got B={b}")
    if n == 1:
        return s[None, :, 0], t[None, :, 0]
    return s, t


def cka_loss(student: Array, teacher: Array, kernel_type: str = "linear", *, normalize_features: bool = True,
             rbf_bandwidth: str = "median_offdiag", eps: float = 1e-8) -> Array:
    """CKA loss of LATER §3.1: student (B, N, Ds), teacher (B, N, Dt) (feature dims may differ) → 0-d in [0, 1].

    * Token-wise (N > 1): one kernel per image over its N tokens (B kernels N×N); ``1 − mean_b CKA_b``: the
      token-token structure *within* each image is aligned.
    * Batch mode (N == 1, the class tokens of CLS-only mode): one B×B kernel over the batch (cross-sample CKA,
      Kornblith et al. 2019); ``1 − CKA``. It is computed over the whole (global) batch the step sees — the same
      number on any device count (the original: per GPU, over the local batch).

    Kernels: :func:`cka_kernel` (features L2-normalised per token when ``normalize_features``; RBF bandwidth
    :func:`median_bandwidth`); CKA with the biased HSIC as :func:`_cka`. Constant tokens give K̃ = 0, CKA = 0 and a
    finite gradient (eps inside the square root).

    REVIEW (LATER §3.1, batch mode): original: batch mode always used the linear kernel, whatever ``kernel_type``
    said; jaxkd: ``kernel_type='rbf'`` is an RBF kernel in batch mode too (bandwidth from the B×B distances);
    ``kernel_type='linear'`` reproduces the original's CLS-only runs.
    """
    check_choice("kernel_type", kernel_type, CKA_KERNELS)
    check_choice("rbf_bandwidth", rbf_bandwidth, RBF_BANDWIDTHS)
    s, t = _as_point_sets(check_tokens("student", student), check_tokens("teacher", teacher), "cka_loss")
    kw = dict(normalize_features=normalize_features, rbf_bandwidth=rbf_bandwidth, eps=eps)
    return 1.0 - jnp.mean(_cka(cka_kernel(s, kernel_type, **kw), cka_kernel(t, kernel_type, **kw), eps))


def gram_matrix_loss(student: Array, teacher: Array, *, gram_norm: str = "squared",
                     normalize_features: bool = True) -> Array:
    """Gram-matrix loss of LATER §3.2: student (B, N, Ds), teacher (B, N, Dt) → 0-d, >= 0.

    G = X̂ X̂ᵀ per image (N×N), X̂ the tokens L2-normalised over D (cosine similarities; ``normalize_features``).
    Batch mode (N == 1) compares the B×B Gram matrices of the class tokens instead (as :func:`cka_loss`; per image
    a 1×1 Gram of a unit vector is always 1, and the loss would be 0 whatever the student does).

    * ``'squared'`` (default): ``mean_b ‖Gs − Gt‖²_F / N²`` = the mean squared difference of the Gram entries.
    * ``'frobenius'`` (the original): ``mean_b ‖Gs − Gt‖_F / N²``, the Frobenius norm itself (gradient 0 where
      the two Grams are equal, as torch's ``norm``).

    REVIEW (LATER §7.8): original: the un-squared Frobenius norm over N²; its size is rms/N (1/N of the
    per-entry difference, so λ_gram means less the more tokens there are) and its gradient keeps a constant size
    ‖∂L/∂G‖ = 1/N² however close the Grams already are (no smooth minimum, a kink at equality); jaxkd default:
    the squared norm over N², the mean squared entry difference — independent of N, smooth with a vanishing
    gradient at the optimum, and the same number as the ``'gram'`` token loss (:func:`jaxkd.losses.gram_loss`);
    ``gram_norm='frobenius'`` reproduces the original.
    """
    check_choice("gram_norm", gram_norm, GRAM_NORMS)
    s, t = _as_point_sets(check_tokens("student", student), check_tokens("teacher", teacher), "gram_matrix_loss")
    gs, gt = cka_kernel(s, normalize_features=normalize_features), cka_kernel(t, normalize_features=normalize_features)
    n = gs.shape[-1]
    sq = jnp.sum((gs - gt) ** 2, axis=(-2, -1))
    if gram_norm == "squared":
        return jnp.mean(sq) / (n * n)
    pos = sq > 0
    fro = jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)  # ‖·‖_F with gradient 0 (not NaN) at 0
    return jnp.mean(fro) / (n * n)


def layerwise_structural_loss(
    student_tokens: Array | Sequence[Array],
    teacher_tokens: Array | Sequence[Array],
    student_projectors: Sequence[Callable[[Array], Array]] | None = None,
    teacher_projectors: Sequence[Callable[[Array], Array]] | None = None,
    *,
    use_cka: bool = True,
    use_gram: bool = False,
    cka_kernel_type: str = "linear",
    teacher_mode: str = "identity",
    rbf_bandwidth: str = "median_offdiag",
    gram_norm: str = "squared",
    normalize_features: bool = True,
    eps: float = 1e-8,
) -> dict[str, Array]:
    """Layer-wise structural loss of LATER §3.3: per distilled layer l, P_s^l(z_s^l) against the teacher side of
    z_t^l; ``L_cka = (1/L)·Σ_l cka_loss``, ``L_gram = (1/L)·Σ_l gram_matrix_loss``.

    Args:
      student_tokens / teacher_tokens: per layer (B, N, Ds) / (B, N, Dt), the same (B, N) (resize the teacher
        tokens to the student grid first); one array = one layer. N == 1: batch mode (CLS-only).
      student_projectors: one callable per layer (``ProjectionHead(Ds → projection_dim)``), or None (raw tokens).
      teacher_projectors: one per layer for 'frozen' / 'trainable'; None for 'identity'.
      teacher_mode: 'identity' (default: the raw teacher tokens — CKA and Gram compare N×N (or B×B) kernels, so
        the two sides need not have the same width), 'frozen' (a fixed random projector: ``stop_gradient`` on its
        output), 'trainable' (the original: gradients reach the teacher projectors).
      use_cka / use_gram, cka_kernel_type, rbf_bandwidth, gram_norm, normalize_features, eps: as :func:`cka_loss`
        and :func:`gram_matrix_loss`.
    Returns:
      ``{"cka": L_cka}`` and/or ``{"gram": L_gram}`` (the enabled ones), 0-d arrays.

    REVIEW (LATER §7.7): original: the teacher's projectors are trainable and CKA is measured between the two
    projected spaces, so the loss can be lowered by moving the *teacher* side towards the student (in the limit
    both projectors map to the same low-rank structure, CKA → 1 whatever the student learnt); jaxkd default:
    'identity' — the teacher's kernel is fixed and only the student adapts; 'frozen' keeps a (fixed, random)
    projection; ``teacher_mode='trainable'`` reproduces the original.
    """
    check_choice("teacher_mode", teacher_mode, STRUCTURAL_TEACHER_MODES)
    if not (use_cka or use_gram):
        raise ValueError("layerwise_structural_loss needs use_cka or use_gram")
    s_layers, t_layers = check_layer_pairs(student_tokens, teacher_tokens, student_projectors, teacher_projectors,
                                           teacher_mode)
    n = len(s_layers)
    cka, gram = [], []
    for i, (s, t) in enumerate(zip(s_layers, t_layers)):
        ps = as_float(student_projectors[i](s)) if student_projectors is not None else s
        pt = t if teacher_mode == "identity" else as_float(teacher_projectors[i](t))
        if teacher_mode == "frozen":
            pt = jax.lax.stop_gradient(pt)
        if use_cka:
            cka.append(cka_loss(ps, pt, cka_kernel_type, normalize_features=normalize_features,
                                rbf_bandwidth=rbf_bandwidth, eps=eps))
        if use_gram:
            gram.append(gram_matrix_loss(ps, pt, gram_norm=gram_norm, normalize_features=normalize_features))
    out = {}
    if use_cka:
        out["cka"] = sum(cka[1:], cka[0]) / n
    if use_gram:
        out["gram"] = sum(gram[1:], gram[0]) / n
    return out


def structural_weights_at(epoch: float | Array, *, use_cka: bool = False, use_gram: bool = False,
                          lambda_cka: float = 0.5, lambda_gram: float = 0.5, cka_warmup_epochs: int = 5,
                          weighting: str = "separate") -> tuple[Any, Any]:
    """(λ_cka(e), λ_gram(e)), the weights of L_cka and L_gram at ``epoch`` (LATER §3.4). Host number in → Python
    floats; a JAX scalar / tracer in → float32 0-d arrays (the switch works under jit).

    * ``'separate'`` (default): ``λ_cka(e) = λ_cka·[e >= cka_warmup_epochs]`` when ``use_cka`` (else 0) and
      ``λ_gram(e) = λ_gram·[e >= cka_warmup_epochs]`` when ``use_gram`` (else 0): each loss its own weight, one
      warm-up for both.
    * ``'coupled'`` (the original): with CKA on, ``λ_gram(e) = λ_cka(e)`` (L_gram was added to L_cka inside the
      structural loss; ``lambda_gram`` unused); Gram alone: ``λ_gram(e) = λ_gram`` from epoch 0 (its warm-up was
      forced to 0).

    REVIEW (LATER §7.6): original: with both losses on, L = … + λ_cka(e)·(L_cka + L_gram) — ``lambda_gram`` is
    ignored — and the Gram-only ablation ignores ``cka_warmup_epochs``; jaxkd default: L = … + λ_cka(e)·L_cka +
    λ_gram(e)·L_gram with the warm-up applying to both; ``weighting='coupled'`` reproduces the original.
    """
    check_choice("weighting", weighting, STRUCTURAL_WEIGHTINGS)
    if int(cka_warmup_epochs) < 0:
        raise ValueError(f"cka_warmup_epochs must be >= 0; got {cka_warmup_epochs}")
    if weighting == "separate":
        w_cka = (float(lambda_cka) if use_cka else 0.0, cka_warmup_epochs)
        w_gram = (float(lambda_gram) if use_gram else 0.0, cka_warmup_epochs)
    else:
        w_cka = (float(lambda_cka) if use_cka else 0.0, cka_warmup_epochs)
        if use_cka:
            w_gram = w_cka if use_gram else (0.0, 0)
        else:
            w_gram = (float(lambda_gram) if use_gram else 0.0, 0)
    if is_host_number(epoch):
        return tuple(0.0 if float(epoch) < warm else lam for lam, warm in (w_cka, w_gram))
    e = jnp.asarray(epoch, jnp.float32)
    return tuple(jnp.where(e < warm, 0.0, lam).astype(jnp.float32) for lam, warm in (w_cka, w_gram))


def structural_distillation_loss(
    student_tokens: Sequence[Array],
    teacher_tokens: Sequence[Array],
    student_projectors: Sequence[Callable[[Array], Array]] | None,
    teacher_projectors: Sequence[Callable[[Array], Array]] | None = None,
    *,
    epoch: float | Array,
    use_cka: bool = False,
    use_gram: bool = False,
    lambda_cka: float = 0.5,
    lambda_gram: float = 0.5,
    cka_warmup_epochs: int = 5,
    cka_kernel_type: str = "linear",
    teacher_mode: str = "identity",
    weighting: str = "separate",
    rbf_bandwidth: str = "median_offdiag",
    gram_norm: str = "squared",
) -> tuple[Array, dict[str, Array]]:
    """The structural terms of the token-distillation objective: ``λ_cka(e)·L_cka + λ_gram(e)·L_gram``
    (:func:`layerwise_structural_loss`, :func:`structural_weights_at`; the rest of L is
    :func:`jaxkd.losses.ss_distillation_loss`).

    Returns ``(weighted, parts)``: parts has ``cka`` and ``lambda_cka`` when ``use_cka``, ``gram`` and
    ``lambda_gram`` when ``use_gram`` (the unweighted losses, computed during the warm-up too so they can be
    logged, and the weights in effect); weighted is 0 when neither is on.
    """
    w_cka, w_gram = structural_weights_at(epoch, use_cka=use_cka, use_gram=use_gram, lambda_cka=lambda_cka,
                                          lambda_gram=lambda_gram, cka_warmup_epochs=cka_warmup_epochs,
                                          weighting=weighting)
    if not (use_cka or use_gram):
        return jnp.zeros((), jnp.float32), {}
    terms = layerwise_structural_loss(
        student_tokens, teacher_tokens, student_projectors, teacher_projectors, use_cka=use_cka, use_gram=use_gram,
        cka_kernel_type=cka_kernel_type, teacher_mode=teacher_mode, rbf_bandwidth=rbf_bandwidth, gram_norm=gram_norm)
    parts, total = {}, jnp.zeros((), jnp.float32)
    for name, w in (("cka", w_cka), ("gram", w_gram)):
        if name in terms:
            w = jnp.asarray(w, terms[name].dtype)
            parts[name], parts[f"lambda_{name}"] = terms[name], w
            total = total + w * terms[name]
    return total.astype(jnp.result_type(*terms.values())), parts
