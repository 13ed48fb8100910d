"""DINOv2 vision transformer (facebookresearch/dinov2 ``DinoVisionTransformer``) in Flax NNX, inference only.

Parameter paths joined by '.' are the official state-dict keys (``jaxkd.interop`` rules: kernel↔weight,
scale↔weight, other leaves keep their names): ``cls_token`` (1,1,D), ``pos_embed`` (1,1+M²,D), ``mask_token``
(1,D; unused at inference), optional ``register_tokens`` (1,R,D), ``patch_embed.proj`` (Conv P×P stride P),
``blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2 | mlp.w12, mlp.w3, ls2.gamma}``,
``norm``.

Forward (official ``prepare_tokens_with_masks`` + blocks): patch tokens, class token prepended, the positional
embedding (interpolated to the input grid, see :func:`interpolate_pos_encoding`) added, THEN the register
tokens inserted after the class token (they get no position); pre-norm blocks
``x += ls1(attn(norm1(x)))``, ``x += ls2(mlp(norm2(x)))``; LayerNorm eps 1e-6; exact GELU (or SwiGLU for
ViT-g). Images are NHWC float, already normalised as the teacher expects (ImageNet mean/std for DINOv2).

Precision: parameters ``param_dtype`` (float32); convolution and matmuls in ``dtype``; the residual stream,
LayerNorms, positional interpolation and every returned token in float32 (float64 for float64 models).
The model has no dropout / drop-path, so train and eval mode compute the same function.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.models.attention import ATTENTION_IMPLEMENTATIONS, Attention, layer_norm, trunc_normal_init, vit_linear
from jaxkd.models.resize import _cubic_weights, interpolation_matrix
from jaxkd.models.vit import Mlp, PatchEmbed

Array = jax.Array

FFN_LAYERS = ("mlp", "swiglu")

__all__ = ["FFN_LAYERS", "LayerScale", "SwiGLUFFN", "DinoBlock", "DinoVisionTransformer",
           "pos_embed_interpolation_matrix", "interpolate_pos_encoding", "swiglu_hidden_features"]


def swiglu_hidden_features(dim: int, mlp_ratio: float) -> int:
    """Hidden width of the official ``SwiGLUFFNFused``: ``(int(int(dim·ratio)·2/3) + 7) // 8 · 8``
    (ViT-g: 1536·4 = 6144 → 4096)."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def _aa_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Cubic filter of torch's antialiased bicubic (PIL's, a = −0.5), zero for |x| >= 2."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=128)
def _matrix_cached(in_size: int, out_size: int, offset: float, antialias: bool) -> np.ndarray:
    # torch's source scale: 1/scale_factor when a scale factor is passed (offset > 0), else in/out
    scale = 1.0 / ((out_size + offset) / in_size) if offset else in_size / out_size
    rows = np.arange(out_size)
    mat = np.zeros((out_size, in_size), np.float64)
    if antialias and in_size == out_size:  # torch's antialiased kernel skips an axis whose size is unchanged
        mat[rows, rows] = 1.0
    elif antialias:  # torch _upsample_bicubic2d_aa: PIL-style filter, support widened when downsampling
        support = 2.0 * scale if scale >= 1.0 else 2.0
        inv = 1.0 / scale if scale >= 1.0 else 1.0
        for i in rows:
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), in_size)
            j = np.arange(lo, hi)
            w = _aa_cubic((j - center + 0.5) * inv)
            mat[i, j] = w / w.sum() if w.sum() != 0.0 else w
    elif not offset:
        mat[...] = interpolation_matrix(in_size, out_size, "bicubic")
    else:  # upsample_bicubic2d with an explicit scale: Keys a = −0.75 taps, indices clamped to the border
        src = (rows + 0.5) * scale - 0.5
        i0 = np.floor(src).astype(np.int64)
        w = _cubic_weights(src - i0)
        for k, off in enumerate((-1, 0, 1, 2)):
            np.add.at(mat, (rows, np.clip(i0 + off, 0, in_size - 1)), w[:, k])
    mat.setflags(write=False)
    return mat


def pos_embed_interpolation_matrix(in_size: int, out_size: int, *, offset: float = 0.1,
                                   antialias: bool = False) -> np.ndarray:
    """(out_size, in_size) float64 matrix of torch ``F.interpolate(mode='bicubic', align_corners=False)`` along
    one axis, as the official ``interpolate_pos_encoding`` calls it.

    ``offset > 0``: called with ``scale_factor=(out + offset)/in`` (hub models without registers, offset 0.1),
    so torch samples at ``src = (dst + 0.5)·in/(out + offset) − 0.5`` -- NOT the ``size=out`` grid.
    ``offset == 0``: called with ``size=out`` (hub models with registers). ``antialias=True``: torch's
    antialiased kernel (cubic a = −0.5, support scaled by in/out when downsampling, weights renormalised at the
    borders; an axis whose size is unchanged is copied, whatever the scale factor); otherwise Keys a = −0.75
    with border taps clamped (:mod:`jaxkd.models.resize`). Rows sum to 1.
    """
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"interpolation sizes must be >= 1, got {in_size} -> {out_size}")
    if offset < 0:
        raise ValueError(f"interpolate_offset must be >= 0, got {offset}")
    return _matrix_cached(in_size, out_size, float(offset), bool(antialias))


def interpolate_pos_encoding(pos_embed: Array, grid_hw: Sequence[int], *, offset: float = 0.1,
                             antialias: bool = False) -> Array:
    """The official ``DinoVisionTransformer.interpolate_pos_encoding`` for an input grid of ``grid_hw`` patches.

    Args:
      pos_embed: (1, 1 + M·M, D) -- class row then the M×M patch grid row-major (the pretraining grid).
      grid_hw: (h, w) patch grid of the input (H/P, W/P).
      offset, antialias: the model's ``interpolate_offset`` / ``interpolate_antialias`` (see
        :func:`pos_embed_interpolation_matrix`).
    Returns:
      (1, 1 + h·w, D) float32 (float64 for float64 input): ``pos_embed`` unchanged when (h, w) == (M, M) (the
      official early return), else the class row followed by the bicubically resized patch grid; the resize
      is two matmuls with constant matrices at HIGHEST precision (shapes are static, so it is jit-friendly).
    """
    n = pos_embed.shape[1] - 1
    m = int(round(n ** 0.5))
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or m * m != n:
        raise ValueError(f"pos_embed must be (1, 1 + M*M, D) with a square patch grid, got {pos_embed.shape}")
    h, w = (int(s) for s in grid_hw)
    compute = jnp.promote_types(pos_embed.dtype, jnp.float32)
    pos_embed = pos_embed.astype(compute)
    if (h, w) == (m, m):
        return pos_embed
    mh = jnp.asarray(pos_embed_interpolation_matrix(m, h, offset=offset, antialias=antialias), compute)
    mw = jnp.asarray(pos_embed_interpolation_matrix(m, w, offset=offset, antialias=antialias), compute)
    grid = pos_embed[0, 1:].reshape(m, m, -1)
    hp = jax.lax.Precision.HIGHEST
    grid = jnp.einsum("oh,hwc->owc", mh, grid, precision=hp)
    grid = jnp.einsum("pw,owc->opc", mw, grid, precision=hp)
    return jnp.concatenate([pos_embed[:, :1], grid.reshape(1, h * w, -1)], axis=1)


class LayerScale(nnx.Module):
    """``x · gamma`` with a learned per-channel ``gamma`` (D,) (official init ``init_values``, 1e-5 by default)."""

    def __init__(self, dim: int, init_values: float = 1e-5, *, param_dtype: Any = jnp.float32):
        self.gamma = nnx.Param(jnp.full((dim,), init_values, param_dtype))

    def __call__(self, x: Array) -> Array:
        """x (..., D) -> same shape and dtype."""
        return x * self.gamma[...].astype(x.dtype)


class SwiGLUFFN(nnx.Module):
    """ViT-g feed-forward: ``w3(silu(x1) · x2)`` with ``x1, x2 = split(w12(x), 2)``; w12 D→2h, w3 h→D."""

    def __init__(self, dim: int, hidden: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.w12 = vit_linear(dim, 2 * hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.w3 = vit_linear(hidden, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        """x (B, T, D) -> (B, T, D) in the compute dtype."""
        x1, x2 = jnp.split(self.w12(x), 2, axis=-1)
        return self.w3(jax.nn.silu(x1) * x2)


class DinoBlock(nnx.Module):
    """DINOv2 pre-norm block: ``x += ls1(attn(norm1(x)))``; ``x += ls2(mlp(norm2(x)))`` (LayerScale optional)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, ffn_layer: str = "mlp",
                 init_values: float | None = 1.0, ln_eps: float = 1e-6, qkv_bias: bool = True,
                 attention: str = "auto", dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = layer_norm(dim, ln_eps, dtype, param_dtype, rngs)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attention=attention, **kw)
        self.ls1 = LayerScale(dim, init_values, param_dtype=param_dtype) if init_values else None
        self.norm2 = layer_norm(dim, ln_eps, dtype, param_dtype, rngs)
        if ffn_layer == "mlp":
            self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)
        elif ffn_layer == "swiglu":
            self.mlp = SwiGLUFFN(dim, swiglu_hidden_features(dim, mlp_ratio), **kw)
        else:
            raise ValueError(f"ffn_layer must be one of {FFN_LAYERS}, got {ffn_layer!r}")
        self.ls2 = LayerScale(dim, init_values, param_dtype=param_dtype) if init_values else None

    def __call__(self, x: Array) -> Array:
        """x (B, T, D) residual stream (float32) -> same shape and dtype."""
        a = self.attn(self.norm1(x))
        x = x + (self.ls1(a) if self.ls1 is not None else a).astype(x.dtype)
        f = self.mlp(self.norm2(x))
        return x + (self.ls2(f) if self.ls2 is not None else f).astype(x.dtype)


class DinoVisionTransformer(nnx.Module):
    """The DINOv2 backbone (see the module docstring); build it with :func:`jaxkd.tasks.teachers.load_dinov2`.

    ``img_size`` is the PRETRAINING resolution that sizes ``pos_embed`` (hub models: 518 = 37 patches of 14);
    any input whose sides are multiples of ``patch_size`` is accepted, the positional embedding being
    interpolated like the official model (``interpolate_offset`` 0.1 / ``interpolate_antialias`` False for the
    hub models without registers, 0.0 / True for those with registers).
    """

    def __init__(self, *, img_size: int = 518, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0, ffn_layer: str = "mlp",
                 init_values: float | None = 1.0, num_register_tokens: int = 0, interpolate_offset: float = 0.1,
                 interpolate_antialias: bool = False, ln_eps: float = 1e-6, qkv_bias: bool = True,
                 attention: str = "auto", dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(f"ffn_layer must be one of {FFN_LAYERS}, got {ffn_layer!r}")
        if patch_size < 1 or img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a positive multiple of patch_size {patch_size}")
        if depth < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"need depth >= 1 and embed_dim {embed_dim} divisible by num_heads {num_heads}")
        if num_register_tokens < 0 or interpolate_offset < 0:
            raise ValueError("num_register_tokens and interpolate_offset must be >= 0")
        self.patch_size = int(patch_size)
        self.in_chans = int(in_chans)
        self.embed_dim = int(embed_dim)
        self.depth = self.n_blocks = int(depth)
        self.num_heads = int(num_heads)
        self.num_register_tokens = int(num_register_tokens)
        self.interpolate_offset = float(interpolate_offset)
        self.interpolate_antialias = bool(interpolate_antialias)
        self.pos_grid = img_size // patch_size
        self.float_dtype = jnp.promote_types(dtype, jnp.float32)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        tn = trunc_normal_init(0.02)
        self.patch_embed = PatchEmbed(img_size=(img_size, img_size), patch_size=patch_size, in_channels=in_chans,
                                      embed_dim=embed_dim, **kw)
        self.cls_token = nnx.Param(tn(rngs.params(), (1, 1, embed_dim), param_dtype))
        self.pos_embed = nnx.Param(tn(rngs.params(), (1, 1 + self.pos_grid ** 2, embed_dim), param_dtype))
        self.register_tokens = (nnx.Param(tn(rngs.params(), (1, num_register_tokens, embed_dim), param_dtype))
                                if num_register_tokens else None)
        self.mask_token = nnx.Param(jnp.zeros((1, embed_dim), param_dtype))
        self.blocks = nnx.List([
            DinoBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, ffn_layer=ffn_layer, init_values=init_values,
                      ln_eps=ln_eps, qkv_bias=qkv_bias, attention=attention, **kw)
            for _ in range(depth)])
        self.norm = layer_norm(embed_dim, ln_eps, dtype, param_dtype, rngs)

    # ------------------------------------------------------------------ tokens
    def _grid(self, x: Array) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[-1] != self.in_chans:
            raise ValueError(f"DINOv2 expects NHWC images (B, H, W, {self.in_chans}), got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"DINOv2 expects float images, got dtype {x.dtype}; normalise/cast them first")
        h, w = x.shape[1], x.shape[2]
        if h % self.patch_size or w % self.patch_size or h == 0 or w == 0:
            raise ValueError(f"input size {(h, w)} must be a positive multiple of the patch size {self.patch_size}; "
                             "resize or crop the images first")
        return h // self.patch_size, w // self.patch_size

    def interpolate_pos_encoding(self, grid_hw: Sequence[int]) -> Array:
        """Positional embedding (1, 1 + h·w, D) float32 for an input grid (h, w) (see the module function)."""
        return interpolate_pos_encoding(self.pos_embed[...], grid_hw, offset=self.interpolate_offset,
                                        antialias=self.interpolate_antialias)

    def prepare_tokens(self, x: Array) -> Array:
        """Images (B, H, W, C) -> tokens (B, 1 + R + h·w, D) float32: [cls, registers, patches] with the
        (interpolated) positional embedding added to cls and patches BEFORE the registers are inserted."""
        grid = self._grid(x)
        t = self.patch_embed(x).astype(self.float_dtype)
        b = t.shape[0]
        cls = jnp.broadcast_to(self.cls_token[...].astype(self.float_dtype), (b, 1, self.embed_dim))
        t = jnp.concatenate([cls, t], axis=1) + self.interpolate_pos_encoding(grid).astype(self.float_dtype)
        if self.register_tokens is not None:
            reg = jnp.broadcast_to(self.register_tokens[...].astype(self.float_dtype),
                                   (b, self.num_register_tokens, self.embed_dim))
            t = jnp.concatenate([t[:, :1], reg, t[:, 1:]], axis=1)
        return t

    def _blocks_to_take(self, layers: int | Sequence[int]) -> list[int]:
        if isinstance(layers, (int, np.integer)):
            n = int(layers)
            if not 1 <= n <= self.depth:
                raise ValueError(f"layers={n}: the number of last blocks must be in 1..{self.depth}")
            return list(range(self.depth - n, self.depth))
        idx = [int(i) for i in layers]
        bad = [i for i in idx if not 0 <= i < self.depth]
        if bad or not idx or len(set(idx)) != len(idx):
            raise ValueError(f"layers={list(idx)}: need distinct block indices in 0..{self.depth - 1} "
                             "(or an int n for the last n blocks)")
        return sorted(idx)

    def get_intermediate_layers(self, x: Array, layers: int | Sequence[int] = 1, reshape: bool = False,
                                return_class_token: bool = False, norm: bool = True) -> tuple:
        """The official ``get_intermediate_layers`` (its ``n`` is ``layers``), NHWC.

        Args:
          x: images (B, H, W, C) float, H and W multiples of the patch size.
          layers: int n -> the last n blocks; a sequence -> those block indices (0-based, distinct). As in the
            official code the outputs come in ascending block order whatever the order given.
          reshape: return (B, H/P, W/P, D) grids instead of (B, N, D) (official: NCHW; here channels-last).
          return_class_token: return ``(patch_tokens, class_token (B, D))`` pairs.
          norm: apply the final LayerNorm ``norm`` to each block output.
        Returns:
          tuple (one entry per block) of (B, N, D) float32 patch tokens, N = (H/P)·(W/P) row-major, class and
          register tokens removed (or grids / pairs as above).
        """
        take = self._blocks_to_take(layers)
        t = self.prepare_tokens(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            if i > take[-1]:  # later blocks cannot change the requested outputs
                break
            t = blk(t)
            if i in take:
                outs.append(self.norm(t) if norm else t)
        cls = [o[:, 0] for o in outs]
        patches = [o[:, 1 + self.num_register_tokens:] for o in outs]
        if reshape:
            gh, gw = self._grid(x)
            patches = [p.reshape(p.shape[0], gh, gw, -1) for p in patches]
        if return_class_token:
            return tuple(zip(patches, cls))
        return tuple(patches)

    def forward_features(self, x: Array) -> dict[str, Array]:
        """Official ``forward_features`` (no masks): dict ``x_norm_clstoken`` (B, D), ``x_norm_regtokens``
        (B, R, D), ``x_norm_patchtokens`` (B, N, D) after ``norm``, ``x_prenorm`` (B, 1+R+N, D); float32."""
        t = self.prepare_tokens(x)
        for blk in self.blocks:
            t = blk(t)
        xn = self.norm(t)
        r = self.num_register_tokens
        return {"x_norm_clstoken": xn[:, 0], "x_norm_regtokens": xn[:, 1:1 + r],
                "x_norm_patchtokens": xn[:, 1 + r:], "x_prenorm": t}

    def __call__(self, x: Array) -> Array:
        """Images (B, H, W, C) -> the normalised class token (B, D) float32 (official forward, head = Identity)."""
        return self.forward_features(x)["x_norm_clstoken"]
