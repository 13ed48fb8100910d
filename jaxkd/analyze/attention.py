"""Where the heads of a ViT look: mean attention distance and per-head statistics (../shared/spec/LATER.md §4.1, §4.4).

Pure functions of one block's attention probabilities ``attn`` (B, H, T, T) (rows = queries, summing to 1 over the
keys), the number of special tokens ``num_prefix`` that lead the sequence (CLS, and DIST for a DeiT) and the patch
grid ``(gh, gw)`` (T = num_prefix + gh·gw, patches row-major). The grid and the prefix come from the model
(``DeiT.grid_size``, ``DeiT.num_prefix_tokens``), never from guessing a square root of T (LATER §7.15: the
original's guess gave ViT-S/14 at 224 px an 8×8 grid); :func:`check_layout` refuses a mismatch.

Patch-patch attention: the special tokens are removed from the queries AND the keys, and each query row is
renormalised over the gh·gw patch keys (§4.1). Distances are Euclidean between integer (row, col) grid
coordinates, in patch units (× patch size for pixels). Uniform attention on an 8×8 grid gives 4.136 patches.

Every statistic is returned per image and head, (B, H); the analysis averages over the images (and over the heads
for a layer's value). All computation is in the input's float type (float32, or float64 under ``jax.enable_x64``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["COLLAPSE_MAD", "CLS_COLLAPSE", "check_layout", "grid_coordinates", "grid_distances", "patch_attention",
           "attention_distance", "head_statistics", "summarize_heads"]

Array = jax.Array

#: a head is "collapsed" (attends only next to itself) when its mean attention distance is below this (patches)
COLLAPSE_MAD = 1.5
#: a head's CLS query "collapses" onto itself when its self-attention exceeds this
CLS_COLLAPSE = 0.9


def check_layout(num_tokens: int, num_prefix: int, grid: Sequence[int]) -> tuple[int, int]:
    """(gh, gw) after checking that T = num_prefix + gh·gw; a ValueError naming the three numbers otherwise."""
    gh, gw = (int(g) for g in grid)
    if num_prefix < 0 or gh < 1 or gw < 1 or num_tokens != num_prefix + gh * gw:
        raise ValueError(f"attention over {num_tokens} tokens does not fit {num_prefix} special tokens and a "
                         f"{gh}x{gw} patch grid ({num_prefix + gh * gw} tokens)")
    return gh, gw


def grid_coordinates(grid: Sequence[int]) -> np.ndarray:
    """(gh·gw, 2) float64 (row, col) of each patch, row-major (the token order of the patch embedding)."""
    gh, gw = (int(g) for g in grid)
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    return np.stack([rows, cols], axis=-1).astype(np.float64)


def grid_distances(grid: Sequence[int]) -> np.ndarray:
    """(N, N) float64 Euclidean distances between the patches' grid coordinates, N = gh·gw, in patch units."""
    c = grid_coordinates(grid)
    return np.sqrt(np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1))


def patch_attention(attn: Array, num_prefix: int) -> Array:
    """(B, H, T, T) -> (B, H, N, N): the special tokens' rows and columns dropped, each row divided by its sum over
    the N patch keys (a row with no mass on the patches stays 0)."""
    a = jnp.asarray(attn)[..., num_prefix:, num_prefix:]
    total = jnp.sum(a, axis=-1, keepdims=True)
    return jnp.where(total > 0, a / jnp.where(total > 0, total, 1), 0)


def attention_distance(attn: Array, num_prefix: int, grid: Sequence[int]) -> Array:
    """Mean attention distance of each image and head, (B, H): the mean over the queries q of
    Σ_k a_qk·dist(q, k), a being the patch-patch attention renormalised over the patches (§4.1)."""
    attn = jnp.asarray(attn)
    check_layout(attn.shape[-1], num_prefix, grid)
    a = patch_attention(attn, num_prefix)
    d = jnp.asarray(grid_distances(grid), a.dtype)
    return jnp.mean(jnp.einsum("bhqk,qk->bhq", a, d), axis=-1)


def head_statistics(attn: Array, num_prefix: int, grid: Sequence[int]) -> dict[str, Array]:
    """Per-image, per-head statistics of one block's attention (§4.4), each (B, H):

    * ``mean_distance``: :func:`attention_distance`;
    * ``entropy``: −Σ_k p_k·log p_k (nats) of the query-averaged patch attention p_k = mean_q a_qk;
    * ``cls_dispersion``: the spatial variance var(row) + var(col), in patch², of the CLS query's attention to the
      patches renormalised over the patches (how spread out the class token's view is);
    * ``cls_self_attention``: a[CLS, CLS], the class token's attention to itself in the full softmax (no
      renormalisation).
    """
    attn = jnp.asarray(attn)
    if num_prefix < 1:
        raise ValueError("head statistics need a class token (num_prefix >= 1)")
    check_layout(attn.shape[-1], num_prefix, grid)
    a = patch_attention(attn, num_prefix)
    p = jnp.mean(a, axis=-2)  # (B, H, N)
    entropy = -jnp.sum(jax.scipy.special.xlogy(p, p), axis=-1)
    cls = attn[..., 0, num_prefix:]
    cls = cls / jnp.sum(cls, axis=-1, keepdims=True)
    coords = jnp.asarray(grid_coordinates(grid), attn.dtype)  # (N, 2)
    mean = jnp.einsum("bhn,nc->bhc", cls, coords)
    second = jnp.einsum("bhn,nc->bhc", cls, coords ** 2)
    dispersion = jnp.sum(second - mean ** 2, axis=-1)
    return {"mean_distance": attention_distance(attn, num_prefix, grid), "entropy": entropy,
            "cls_dispersion": dispersion, "cls_self_attention": attn[..., 0, 0]}


def summarize_heads(per_head: dict[str, np.ndarray], *, collapse_mad: float = COLLAPSE_MAD,
                    cls_collapse: float = CLS_COLLAPSE) -> dict:
    """The model-level figures of §4.4 from per-layer, per-head means (each (L, H), averaged over the images):
    per-layer MAD (the mean over heads), the overall MAD (unweighted mean over layers), the fraction of heads with
    MAD < ``collapse_mad`` patches (``collapsed_heads_ratio``) and with CLS self-attention > ``cls_collapse``
    (``cls_collapse_ratio``), and the per-layer means of the other statistics."""
    mad = np.asarray(per_head["mean_distance"], np.float64)
    out = {"layer_distances": mad.mean(axis=1).tolist(), "mean_distance": float(mad.mean(axis=1).mean()),
           "collapsed_heads": int(np.sum(mad < collapse_mad)), "num_heads_total": int(mad.size),
           "collapsed_heads_ratio": float(np.mean(mad < collapse_mad)), "collapse_threshold": collapse_mad}
    if "cls_self_attention" in per_head:
        cls = np.asarray(per_head["cls_self_attention"], np.float64)
        out.update(cls_collapsed_heads=int(np.sum(cls > cls_collapse)),
                   cls_collapse_ratio=float(np.mean(cls > cls_collapse)), cls_collapse_threshold=cls_collapse)
    for k in ("entropy", "cls_dispersion", "cls_self_attention"):
        if k in per_head:
            out[f"layer_{k}"] = np.asarray(per_head[k], np.float64).mean(axis=1).tolist()
    return out
