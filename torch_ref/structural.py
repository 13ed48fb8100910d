"""Plain-PyTorch twins of ``jaxkd.losses.structural``: the structural losses of LATER.md §3.1–3.4 (CKA, Gram,
layer-wise structural loss, λ_cka(e) / λ_gram(e)), written from LATER.md's text, not from jaxkd's code.

Same names and arguments as jaxkd. Other routes to the same numbers: centring with an explicit H = I − 11ᵀ/M
(``H @ K @ H``), HSIC as ``trace(K̃ L̃)``, squared distances by explicit differences (not the ‖a‖² + ‖b‖² − 2a·b
expansion), the bandwidth by ``torch.median`` over a boolean off-diagonal mask (jaxkd: a sort of the upper
triangle), the Frobenius norm by ``torch.linalg.matrix_norm``, L2 normalisation by ``F.normalize``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["median_bandwidth", "cka_kernel", "cka_loss", "gram_matrix_loss", "layerwise_structural_loss",
           "structural_weights_at", "structural_distillation_loss"]


def median_bandwidth(d2, bandwidth="median_offdiag", eps=1e-8):
    """LATER §3.1 (original: ``torch.median(d2.view(-1)).item() + eps``, the diagonal zeros included) or jaxkd's
    default: per matrix, torch.median of the entries off the diagonal. Detached (a constant for autograd)."""
    d2 = d2.detach()
    if bandwidth == "median_all":
        return torch.median(d2.reshape(-1)) + eps
    m = d2.shape[-1]
    off = ~torch.eye(m, dtype=torch.bool)
    per_matrix = d2.reshape(-1, m, m)[:, off]  # (batch, M(M-1))
    return (torch.median(per_matrix, dim=1).values + eps).reshape(*d2.shape[:-2], 1, 1)


def cka_kernel(x, kernel_type="linear", *, normalize_features=True, rbf_bandwidth="median_offdiag", eps=1e-8):
    """(batch, M, D) → (batch, M, M): X̂X̂ᵀ, or exp(−‖x̂_i − x̂_j‖² / (2·s))."""
    if normalize_features:
        x = F.normalize(x, p=2, dim=-1)
    if kernel_type == "linear":
        return torch.bmm(x, x.transpose(1, 2))
    d2 = (x.unsqueeze(2) - x.unsqueeze(1)).pow(2).sum(-1)
    return torch.exp(-d2 / (2 * median_bandwidth(d2, rbf_bandwidth, eps)))


def _cka(k, l, eps):
    m = k.shape[-1]
    h = torch.eye(m, dtype=k.dtype) - torch.ones(m, m, dtype=k.dtype) / m
    kc, lc = h @ k @ h, h @ l @ h

    def hsic(a, b):
        return torch.diagonal(a @ b, dim1=-2, dim2=-1).sum(-1) / ((m - 1) ** 2 + eps)

    return hsic(kc, lc) / torch.sqrt(hsic(kc, kc) * hsic(lc, lc) + eps)


def _point_sets(s, t):
    if s.shape[1] == 1:  # CLS-only: the B class tokens are the points of one kernel
        return s.squeeze(1).unsqueeze(0), t.squeeze(1).unsqueeze(0)
    return s, t


def cka_loss(student, teacher, kernel_type="linear", *, normalize_features=True, rbf_bandwidth="median_offdiag",
             eps=1e-8):
    """1 − mean_b CKA_b over per-image token kernels (N > 1), or 1 − CKA of the B×B kernel of class tokens."""
    s, t = _point_sets(student, teacher)
    kw = dict(normalize_features=normalize_features, rbf_bandwidth=rbf_bandwidth, eps=eps)
    return 1.0 - _cka(cka_kernel(s, kernel_type, **kw), cka_kernel(t, kernel_type, **kw), eps).mean()


def gram_matrix_loss(student, teacher, *, gram_norm="squared", normalize_features=True):
    """mean_b ‖G_s − G_t‖_F / N² (the original, 'frobenius') or its square over N² ('squared')."""
    s, t = _point_sets(student, teacher)
    gs, gt = (cka_kernel(z, normalize_features=normalize_features) for z in (s, t))
    fro = torch.linalg.matrix_norm(gs - gt, ord="fro")
    n = gs.shape[-1]
    return (fro.pow(2) if gram_norm == "squared" else fro).mean() / n ** 2


def layerwise_structural_loss(student_tokens, teacher_tokens, student_projectors=None, teacher_projectors=None, *,
                              use_cka=True, use_gram=False, cka_kernel_type="linear", teacher_mode="identity",
                              rbf_bandwidth="median_offdiag", gram_norm="squared", normalize_features=True,
                              eps=1e-8):
    """LATER §3.3: per layer, the student's projected tokens against the teacher's (raw, fixed projector, or
    trainable projector); each loss a stacked mean over the layers."""
    if torch.is_tensor(student_tokens):
        student_tokens, teacher_tokens = [student_tokens], [teacher_tokens]
    layers = range(len(student_tokens))
    s_side = [student_projectors[i](student_tokens[i]) if student_projectors is not None else student_tokens[i]
              for i in layers]
    if teacher_mode == "identity":
        t_side = list(teacher_tokens)
    else:
        t_side = [teacher_projectors[i](teacher_tokens[i]) for i in layers]
        if teacher_mode == "frozen":
            t_side = [z.detach() for z in t_side]
    out = {}
    if use_cka:
        out["cka"] = torch.stack([cka_loss(a, b, cka_kernel_type, normalize_features=normalize_features,
                                           rbf_bandwidth=rbf_bandwidth, eps=eps)
                                  for a, b in zip(s_side, t_side)]).mean()
    if use_gram:
        out["gram"] = torch.stack([gram_matrix_loss(a, b, gram_norm=gram_norm, normalize_features=normalize_features)
                                   for a, b in zip(s_side, t_side)]).mean()
    return out


def structural_weights_at(epoch, *, use_cka=False, use_gram=False, lambda_cka=0.5, lambda_gram=0.5,
                          cka_warmup_epochs=5, weighting="separate"):
    """LATER §3.4. 'coupled' is the original's SelfSupervisedDistillationLoss: λ_cka(e) = 0 before the warm-up or
    without CKA; with CKA, the Gram term rides inside the structural loss at λ_cka(e); Gram alone is weighted
    λ_gram from epoch 0. 'separate': each its own λ, one warm-up."""
    cka_on = use_cka and epoch >= cka_warmup_epochs
    w_cka = lambda_cka if cka_on else 0.0
    if weighting == "separate":
        return w_cka, (lambda_gram if use_gram and epoch >= cka_warmup_epochs else 0.0)
    if use_cka:
        return w_cka, (w_cka if use_gram else 0.0)
    return w_cka, (lambda_gram if use_gram else 0.0)


def structural_distillation_loss(student_tokens, teacher_tokens, student_projectors, teacher_projectors=None, *,
                                 epoch, use_cka=False, use_gram=False, lambda_cka=0.5, lambda_gram=0.5,
                                 cka_warmup_epochs=5, cka_kernel_type="linear", teacher_mode="identity",
                                 weighting="separate", rbf_bandwidth="median_offdiag", gram_norm="squared"):
    """λ_cka(e)·L_cka + λ_gram(e)·L_gram, and the parts (losses and weights) of the enabled terms."""
    w = dict(zip(("cka", "gram"), structural_weights_at(
        epoch, use_cka=use_cka, use_gram=use_gram, lambda_cka=lambda_cka, lambda_gram=lambda_gram,
        cka_warmup_epochs=cka_warmup_epochs, weighting=weighting)))
    if not (use_cka or use_gram):
        return torch.zeros(()), {}
    terms = layerwise_structural_loss(student_tokens, teacher_tokens, student_projectors, teacher_projectors,
                                      use_cka=use_cka, use_gram=use_gram, cka_kernel_type=cka_kernel_type,
                                      teacher_mode=teacher_mode, rbf_bandwidth=rbf_bandwidth, gram_norm=gram_norm)
    total = sum(w[k] * v for k, v in terms.items())
    parts = {}
    for k, v in terms.items():
        parts[k], parts[f"lambda_{k}"] = v, torch.tensor(float(w[k]))
    return total, parts
