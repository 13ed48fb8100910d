"""Cutout, MixUp and CutMix (SPEC §5) in JAX.

* Cutout (DeVries & Taylor, as the peer): centre (cy, cx) uniform over the pixel grid, box
  ``[clip(cy - L//2, 0, H), clip(cy + L//2, 0, H)) x [clip(cx - L//2, 0, W), clip(cx + L//2, 0, W))``,
  ``img * mask`` on the NORMALISED image.
* MixUp: ``x = lam x1 + (1 - lam) x2``, ``y = lam y1 + (1 - lam) y2``, ``lam ~ Beta(alpha, alpha)``.
* CutMix (Yun et al. ``rand_bbox``): ``cut_rat = sqrt(1 - lam)``, ``cut_w = int(W cut_rat)``,
  ``cut_h = int(H cut_rat)``, centre uniform, box clipped, ``x1[box] = x2[box]``, ``lam = 1 - box_area / (H W)``.
Partner: ``x2 = x[perm]`` with ``perm`` one random permutation of the batch (``torch.randperm`` as in the reference
MixUp/CutMix code) or, with ``partner='flip'``, the reversed batch (timm's elementwise mode). In ``mode='sample'``
every sample draws its own apply flag, mixup/cutmix switch, lambda and box (the peer mixed per sample); in
``mode='batch'`` one draw is shared by the whole batch.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.data.spec import MixSpec

Array = jax.Array


def cutout_box(centre: Array, height: int, width: int, length: int) -> Array:
    """Cutout box int32[4] = (y1, y2, x1, x2) = (clip(cy - L//2, 0, H), clip(cy + L//2, 0, H), same for x)."""
    half = int(length) // 2
    cy, cx = centre[0], centre[1]
    return jnp.stack([jnp.clip(cy - half, 0, height), jnp.clip(cy + half, 0, height),
                      jnp.clip(cx - half, 0, width), jnp.clip(cx + half, 0, width)]).astype(jnp.int32)


@functools.cache
def _square_thresholds(size: int) -> tuple[np.ndarray, np.ndarray]:
    """1 - k^2 / size^2 for k = 1..size as float32 pairs (hi, lo), hi = RN(t), lo = RN(t - hi), from exact rationals."""
    t = [Fraction(size * size - k * k, size * size) for k in range(1, size + 1)]
    hi = np.array([float(v) for v in t], np.float32)
    lo = np.array([float(v - Fraction(float(h))) for v, h in zip(t, hi)], np.float32)
    return hi, lo


def _cut_size(lam: Array, size: int) -> Array:
    """int(size * sqrt(1 - lam)) exactly (as the float64 original computes it for a float32 lam): the number of
    k in 1..size with k^2 <= size^2 (1 - lam), i.e. lam <= 1 - k^2/size^2, decided by comparisons only."""
    hi, lo = (jnp.asarray(a) for a in _square_thresholds(size))
    lam = jnp.asarray(lam, jnp.float32)[..., None]
    le = (lam < hi) | ((lam == hi) & (lo >= 0))
    return jnp.sum(le, axis=-1).astype(jnp.int32)


def cutmix_box(lam: Array, cy: Array, cx: Array, height: int, width: int) -> tuple[Array, Array]:
    """CutMix box for raw ``lam`` and centre (cy, cx): returns (int32[..., 4] = (y1, y2, x1, x2), float32 recomputed
    lam = 1 - box_area / (H W), the float64 value rounded to float32). ``lam``, ``cy``, ``cx`` are scalars or
    equal-shape arrays. cut_w = int(W sqrt(1 - lam)), cut_h = int(H sqrt(1 - lam)), evaluated exactly."""
    cut_w = _cut_size(lam, width)
    cut_h = _cut_size(lam, height)
    y1 = jnp.clip(cy - cut_h // 2, 0, height)
    y2 = jnp.clip(cy + cut_h // 2, 0, height)
    x1 = jnp.clip(cx - cut_w // 2, 0, width)
    x2 = jnp.clip(cx + cut_w // 2, 0, width)
    area = (y2 - y1) * (x2 - x1)
    lam_table = (1.0 - np.arange(height * width + 1) / float(height * width)).astype(np.float32)
    return jnp.stack([y1, y2, x1, x2], axis=-1).astype(jnp.int32), jnp.asarray(lam_table)[area]


def _no_fma(t: Array) -> Array:
    """Identity that keeps the product ``t`` from being contracted with the following add into an FMA (XLA does
    that, torch does not), so ``lam * x1 + (1 - lam) * x2`` rounds like the peer's torch code."""
    return jnp.where(jnp.isnan(t), jnp.nan, t)


def symmetric_beta(key: Array, alpha: Array) -> Array:
    """Beta(alpha, alpha) draws, one per entry of ``alpha`` (float32 array > 0), as ``jax.random.beta`` computes
    them (ratio of Gamma variates in log space) but with a single Gamma sampler (one while loop to compile)."""
    log_g = jax.random.loggamma(key, jnp.stack([alpha, alpha]), dtype=jnp.float32)
    g = jnp.exp(log_g - jnp.max(log_g, axis=0))
    return g[0] / (g[0] + g[1])


def _box_mask(box: Array, height: int, width: int) -> Array:
    """(..., 4) boxes -> (..., H, W, 1) bool inside-mask."""
    ys = jnp.arange(height)[:, None]
    xs = jnp.arange(width)[None, :]
    b = box[..., None, None, :]
    inside = (ys >= b[..., 0]) & (ys < b[..., 1]) & (xs >= b[..., 2]) & (xs < b[..., 3])
    return inside[..., None]


def mix_batch(key: Array, x: Array, labels: Array, *, num_classes: int, mixup_alpha: float | None,
              cutmix_alpha: float | None, mode: str = "sample", mix_prob: float = 1.0, switch_prob: float = 0.5,
              partner: str = "permute") -> tuple[Array, Array, dict[str, Array]]:
    """MixUp / CutMix a batch. ``x`` float (B, H, W, C), ``labels`` int (B,). ``mixup_alpha`` / ``cutmix_alpha``
    None disables that method; with both on, a (sample or batch) uses CutMix with probability ``switch_prob``;
    ``mix_prob`` is the probability of mixing at all (else lam = 1, unchanged).

    Returns (x_mixed (B, H, W, C) x.dtype, soft targets float32 (B, K) = lam onehot(y) + (1 - lam) onehot(y[perm]),
    info) with info = {perm (B,), applied (B,), use_cutmix (B,), lam (B,) final, lam_raw (B,) Beta draw used,
    centre (B, 2) CutMix (cy, cx), box (B, 4) CutMix (y1, y2, x1, x2)}.
    """
    if mixup_alpha is None and cutmix_alpha is None:
        raise ValueError("mix_batch needs mixup_alpha or cutmix_alpha; enable augmentation.mixup or .cutmix")
    if mode not in ("sample", "batch"):
        raise ValueError(f"augmentation.mix_mode must be 'sample' or 'batch', got {mode!r}")
    if partner not in ("permute", "flip"):
        raise ValueError(f"partner must be 'permute' or 'flip', got {partner!r}")
    if x.ndim != 4 or labels.shape != x.shape[:1]:
        raise ValueError(f"expected x (B, H, W, C) and labels (B,), got {tuple(x.shape)} and {tuple(labels.shape)}")
    b, h, w, _ = x.shape
    k_perm, k_apply, k_switch, k_lam, k_cy, k_cx = jax.random.split(key, 6)
    perm = jax.random.permutation(k_perm, b) if partner == "permute" else jnp.arange(b)[::-1]
    n = b if mode == "sample" else 1
    applied = jax.random.uniform(k_apply, (n,)) < mix_prob
    if mixup_alpha is not None and cutmix_alpha is not None:
        use_cut = jax.random.uniform(k_switch, (n,)) < switch_prob
    else:
        use_cut = jnp.full((n,), cutmix_alpha is not None)
    # one Beta draw per (sample or batch), with the alpha of the method it uses
    alpha = jnp.where(use_cut, cutmix_alpha or 1.0, mixup_alpha or 1.0).astype(jnp.float32)
    lam_raw = symmetric_beta(k_lam, alpha)
    centre = jnp.stack([jax.random.randint(k_cy, (n,), 0, h), jax.random.randint(k_cx, (n,), 0, w)], axis=-1)
    box, lam_cut = cutmix_box(lam_raw, centre[:, 0], centre[:, 1], h, w)
    lam = jnp.where(applied, jnp.where(use_cut, lam_cut, lam_raw), 1.0).astype(jnp.float32)

    def full(a):  # (n, ...) -> (b, ...)
        return jnp.broadcast_to(a, (b,) + a.shape[1:])

    applied, use_cut, lam, lam_raw, centre, box = (full(a) for a in (applied, use_cut, lam, lam_raw, centre, box))
    x2 = x[perm]
    lam_x = lam.astype(x.dtype)[:, None, None, None]
    mixed = _no_fma(lam_x * x) + _no_fma((1 - lam_x) * x2)
    cut = jnp.where(_box_mask(box, h, w), x2, x)
    sel_cut = (applied & use_cut)[:, None, None, None]
    sel_mix = (applied & ~use_cut)[:, None, None, None]
    x_out = jnp.where(sel_cut, cut, jnp.where(sel_mix, mixed, x))
    y1 = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    targets = lam[:, None] * y1 + (1.0 - lam)[:, None] * y1[perm]
    info = {"perm": perm, "applied": applied, "use_cutmix": use_cut, "lam": lam, "lam_raw": lam_raw,
            "centre": centre, "box": box}
    return x_out, targets, info


def make_mix(spec: MixSpec, num_classes: int, *, partner: str = "permute"):
    """None when ``spec`` (``MixSpec.from_config(config.data.augmentation)``) mixes nothing, else a jitted
    ``f(key, x float (B, H, W, C), labels int (B,)) -> (x_mixed, soft_targets float32 (B, num_classes))``."""
    if not spec.enabled:
        return None
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")

    @jax.jit
    def mix(key: Array, x: Array, labels: Array) -> tuple[Array, Array]:
        out, targets, _ = mix_batch(key, x, labels, num_classes=int(num_classes), mixup_alpha=spec.mixup_alpha,
                                    cutmix_alpha=spec.cutmix_alpha, mode=spec.mode, mix_prob=spec.mix_prob,
                                    switch_prob=spec.switch_prob, partner=partner)
        return out, targets

    return mix
