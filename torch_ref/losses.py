"""Plain-PyTorch twins of ``jaxkd.losses`` (SPEC.md §3), written for obviousness, not speed.

Same names and arguments as jaxkd. Where possible a different route to the same number is taken, so the parity
suite is a real cross-check: CE via ``F.cross_entropy(label_smoothing=ε)``, KL via ``F.kl_div``, cosine via
``F.cosine_similarity``, resize via ``F.interpolate``, linear CKA in feature form (‖Y_cᵀX_c‖²) instead of the
centred-Gram form, RBF distances by explicit differences, centring with an explicit H = I − 11ᵀ/N.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cross_entropy", "hard_distillation", "soft_distillation", "distillation_loss", "alpha_at",
    "ProjectionHead", "resize_tokens", "token_representation_loss", "linear_cka", "rbf_cka", "gram_loss",
    "correlation_matrix", "token_correlation_loss", "rel_weight_at", "ss_distillation_loss",
]


def cross_entropy(logits, targets, label_smoothing=0.0, *, smooth_soft_targets=False, reduction="mean"):
    """(B, K) logits; (B,) int labels → F.cross_entropy; (B, K) soft targets → −Σ t·log_softmax."""
    if targets.dim() == logits.dim() - 1:
        return F.cross_entropy(logits, targets.long(), label_smoothing=label_smoothing, reduction=reduction)
    t = targets.to(logits.dtype)
    if smooth_soft_targets:
        t = t * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    per = -(t * F.log_softmax(logits, dim=-1)).sum(-1)
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[reduction]()


def hard_distillation(student_logits, teacher_logits, label_smoothing=0.0):
    """SPEC §3: CE(y_dist, argmax(y_teacher)); the teacher's pseudo-labels are plain class indices."""
    with torch.no_grad():
        pseudo_labels = torch.max(teacher_logits, dim=-1).indices
    return F.cross_entropy(student_logits.flatten(0, -2), pseudo_labels.flatten(), label_smoothing=label_smoothing)


def soft_distillation(student_logits, teacher_logits, tau=3.0, normalize="batch"):
    """SPEC §3: τ²·KL(p_t‖p_s), p = softmax(logits/τ), KL summed over classes, mean over the batch: torch's
    ``F.kl_div(log p_s, log p_t, log_target=True)`` with its own 'batchmean' reduction (÷ B), further ÷ K for
    ``normalize='element'`` (DeiT's code: ÷ B·K; torch's 'mean' reduction, which is that, is deprecated)."""
    k = student_logits.shape[-1]
    log_ps = F.log_softmax(student_logits.reshape(-1, k) / tau, dim=1)
    log_pt = F.log_softmax(teacher_logits.reshape(-1, k) / tau, dim=1)
    per_sample_mean = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    return tau ** 2 * per_sample_mean / {"batch": 1, "element": k}[normalize]


_KD = {"hard": lambda head, teacher, tau, normalize: hard_distillation(head, teacher),
       "soft": soft_distillation}


def distillation_loss(cls_logits, dist_logits, labels, teacher_logits, *, alpha=0.5, kind="hard", tau=3.0,
                      label_smoothing=0.0, smooth_soft_targets=False, normalize="batch"):
    """SPEC §3 (DeiT): (1−α)·CE(class head, labels) + α·KD(distillation head, teacher), the KD term on the class
    head when the student has no distillation token; the mix is ``torch.lerp(CE, KD, α)``."""
    terms = {
        "ce": cross_entropy(cls_logits, labels, label_smoothing, smooth_soft_targets=smooth_soft_targets),
        "kd": _KD[kind](cls_logits if dist_logits is None else dist_logits, teacher_logits, tau, normalize),
    }
    total = torch.lerp(terms["ce"], terms["kd"], float(alpha))
    return total, {**terms, "alpha": torch.tensor(float(alpha))}


def alpha_at(epoch, num_epochs, schedule="constant", alpha=0.5, alpha_start=0.0, alpha_end=0.5, warmup_epochs=0):
    if epoch < warmup_epochs:
        return 0.0
    p = min(max((epoch - warmup_epochs) / (num_epochs - warmup_epochs), 0.0), 1.0)
    if schedule == "constant":
        return alpha
    if schedule == "linear":
        return alpha_start + (alpha_end - alpha_start) * p
    return alpha_start + (alpha_end - alpha_start) * (1.0 - math.cos(math.pi * p)) / 2.0


class ProjectionHead(nn.Module):
    """Linear(in, hidden) → LayerNorm → GELU (erf) → Linear(hidden, out) → LayerNorm; torch default init."""

    def __init__(self, in_dim, hidden_dim=512, out_dim=256, ln_eps=1e-5):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim, eps=ln_eps)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim, eps=ln_eps)

    def forward(self, x):
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))


def resize_tokens(tokens, grid, source_grid=None):
    """(B, N, D) → (B, h·w, D) via F.interpolate(bilinear, align_corners=False) on the (B, D, hs, ws) grid."""
    b, n, d = tokens.shape
    hs, ws = source_grid if source_grid is not None else (math.isqrt(n), math.isqrt(n))
    h, w = (grid, grid) if isinstance(grid, int) else grid
    x = tokens.reshape(b, hs, ws, d).permute(0, 3, 1, 2)
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return y.permute(0, 2, 3, 1).reshape(b, h * w, d)


def _cka_ratio(hsic, nx, ny, eps):
    return hsic / (nx.clamp_min(eps) * ny.clamp_min(eps))


def linear_cka(x, y, eps=1e-8):
    """Per image (B,): feature form ‖Y_cᵀX_c‖_F² / (‖X_cᵀX_c‖_F·‖Y_cᵀY_c‖_F), X_c = tokens minus their mean."""
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    fro = lambda m: m.pow(2).sum(dim=(-2, -1))  # noqa: E731
    hsic = fro(yc.transpose(1, 2) @ xc)
    return _cka_ratio(hsic, fro(xc.transpose(1, 2) @ xc).sqrt(), fro(yc.transpose(1, 2) @ yc).sqrt(), eps)


def _rbf_gram(x, sigma, eps):
    n = x.shape[1]
    d2 = (x[:, :, None, :] - x[:, None, :, :]).pow(2).sum(-1)
    bw = sigma * sigma * d2.sum(dim=(-2, -1), keepdim=True) / (n * (n - 1))
    return torch.exp(-d2 / (2.0 * bw.clamp_min(eps)))


def rbf_cka(x, y, sigma=1.0, eps=1e-8):
    n = x.shape[1]
    h = torch.eye(n, dtype=x.dtype) - 1.0 / n
    kc = h @ _rbf_gram(x, sigma, eps) @ h
    lc = h @ _rbf_gram(y, sigma, eps) @ h
    nrm = lambda m: m.pow(2).sum(dim=(-2, -1)).sqrt()  # noqa: E731
    return _cka_ratio((kc * lc).sum(dim=(-2, -1)), nrm(kc), nrm(lc), eps)


def gram_loss(x, y, eps=1e-8):
    xn, yn = F.normalize(x, dim=-1, eps=eps), F.normalize(y, dim=-1, eps=eps)
    return F.mse_loss(xn @ xn.transpose(1, 2), yn @ yn.transpose(1, 2))


_TOKEN_LOSSES = {  # ℓ(projected student tokens, projected teacher tokens), SPEC §3 and its options
    "cosine": lambda s, t, eps, sigma: 1.0 - F.cosine_similarity(s, t, dim=-1, eps=eps).mean(),
    "mse": lambda s, t, eps, sigma: F.mse_loss(s, t),
    "cka_linear": lambda s, t, eps, sigma: 1.0 - linear_cka(s, t, eps).mean(),
    "cka_rbf": lambda s, t, eps, sigma: 1.0 - rbf_cka(s, t, sigma, eps).mean(),
    "gram": lambda s, t, eps, sigma: gram_loss(s, t, eps),
}


def _teacher_side(teacher_mode, teacher_projectors, n_layers):
    """One map per layer for the teacher tokens: the projector ('trainable', the peer), the projector cut off from
    autograd ('frozen'), or nothing ('identity')."""
    if teacher_mode == "identity":
        return [nn.Identity()] * n_layers
    if teacher_mode == "frozen":
        return [lambda z, m=m: m(z).detach() for m in teacher_projectors]
    return list(teacher_projectors)


def token_representation_loss(student_tokens, teacher_tokens, student_projectors=None, teacher_projectors=None, *,
                              loss_type="cosine", teacher_mode="trainable", eps=1e-8, rbf_sigma=1.0):
    """SPEC §3: L_tok = (1/|layers|)·Σ_l ℓ(P_s^l(z_s^l), P_t^l(z_t^l)), tokens (B, N, D) per layer: the per-layer
    losses stacked into one (L,) tensor and averaged."""
    if torch.is_tensor(student_tokens):
        student_tokens, teacher_tokens = [student_tokens], [teacher_tokens]
    n_layers = len(student_tokens)
    student_side = list(student_projectors) if student_projectors is not None else [nn.Identity()] * n_layers
    per_layer = torch.stack([
        _TOKEN_LOSSES[loss_type](project_s(z_s), project_t(z_t), eps, rbf_sigma)
        for project_s, z_s, project_t, z_t in zip(student_side, student_tokens,
                                                    _teacher_side(teacher_mode, teacher_projectors, n_layers),
                                                    teacher_tokens, strict=True)
    ])
    return per_layer.mean()


def correlation_matrix(tokens, pooled=True, eps=1e-12):
    if pooled:
        z = F.normalize(tokens.mean(dim=1), dim=-1, eps=eps)
        return z @ z.t()
    z = F.normalize(tokens, dim=-1, eps=eps)
    return z @ z.transpose(1, 2)


def token_correlation_loss(student_tokens, teacher_tokens, tau=0.1, pooled=True, kind="kl", *,
                           full_reduction="row_mean", frobenius="mse", eps=1e-12):
    """KL(P_t‖P_s) with F.kl_div(log P_s, P_t, 'batchmean'); or Frobenius on the softmaxed matrices."""
    log_ps = F.log_softmax(correlation_matrix(student_tokens, pooled, eps) / tau, dim=-1)
    p_t = F.softmax(correlation_matrix(teacher_tokens, pooled, eps) / tau, dim=-1)
    if kind == "kl":
        if not pooled and full_reduction == "row_mean":
            k = log_ps.shape[-1]
            return F.kl_div(log_ps.reshape(-1, k), p_t.reshape(-1, k), reduction="batchmean")
        return F.kl_div(log_ps, p_t, reduction="batchmean")
    if frobenius == "mse":
        return F.mse_loss(log_ps.exp(), p_t)
    return torch.norm(log_ps.exp() - p_t, p="fro") / p_t.numel()


def rel_weight_at(epoch, lambda_rel=0.1, rel_warmup_epochs=0):
    return 0.0 if epoch < rel_warmup_epochs else lambda_rel


def ss_distillation_loss(student_logits, labels, student_layer_tokens, teacher_layer_tokens, student_final_tokens,
                         teacher_final_tokens, student_projectors, teacher_projectors=None, *, epoch, lambda_tok=1.0,
                         lambda_rel=0.1, rel_warmup_epochs=10, label_smoothing=0.0, smooth_soft_targets=False,
                         token_loss_type="cosine", teacher_mode="trainable", rbf_sigma=1.0, correlation_tau=0.1,
                         pooled=True, correlation_kind="kl", full_reduction="row_mean", frobenius="mse",
                         resize_teacher=True):
    """CE + λ_tok·L_tok + λ_rel(epoch)·L_rel; teacher tokens resized to the student's square grid when N differs."""
    ce = cross_entropy(student_logits, labels, label_smoothing, smooth_soft_targets=smooth_soft_targets)
    n_s = student_layer_tokens[0].shape[1]
    g = math.isqrt(n_s)
    if resize_teacher:
        teacher_layer_tokens = [t if t.shape[1] == n_s else resize_tokens(t, g) for t in teacher_layer_tokens]
        if not pooled and teacher_final_tokens.shape[1] != n_s:
            teacher_final_tokens = resize_tokens(teacher_final_tokens, g)
    tok = token_representation_loss(student_layer_tokens, teacher_layer_tokens, student_projectors,
                                     teacher_projectors, loss_type=token_loss_type, teacher_mode=teacher_mode,
                                     rbf_sigma=rbf_sigma)
    rel = token_correlation_loss(student_final_tokens, teacher_final_tokens, correlation_tau, pooled,
                                 correlation_kind, full_reduction=full_reduction, frobenius=frobenius)
    lam = rel_weight_at(epoch, lambda_rel, rel_warmup_epochs)
    total = ce + lambda_tok * tok + lam * rel
    return total, {"ce": ce, "tok": tok, "rel": rel, "lambda_rel": torch.tensor(float(lam))}
