"""DeiT / ViT student in Flax NNX (SPEC.md §2), with the original project's parameter names.

Parameter paths joined by '.' are the PyTorch state-dict keys of ../shared/spec/PEER_CHECKPOINTS.md (after
``jaxkd.interop``'s generic rules: ``layers`` dropped, kernel↔weight, scale↔weight, mean/var↔running_*):
``cls_token``, ``dist_token``, ``pos_embed``, ``channel_expand``, ``patch_embed.stem.{0,1,3,4}``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``, ``head``,
``head_dist``.

Images are NHWC float arrays. Compute dtype: with ``dtype=bfloat16`` the parameters stay ``param_dtype``
(float32), convolutions and matmuls run in bf16, while the residual stream, LayerNorms, softmax and the two
heads (logits) run in float32 (``promote_types(dtype, float32)``, so float64 models stay float64).

Modes: like every NNX module the model is built in train mode (dropout, drop-path and cls-token dropout active,
BatchNorm on batch statistics); call ``model.eval()`` for inference and ``model.train()`` to go back. Randomness
(dropout, drop-path, cls-token dropout) comes from the 'dropout' stream of the ``rngs`` given at construction
(falling back to 'default').
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd.config.schema import VIT_VARIANTS
from jaxkd.models.attention import (
    ATTENTION_IMPLEMENTATIONS,
    Attention,
    dense,
    layer_norm,
    trunc_normal_init,
    vit_linear,
)
from jaxkd.models.layers import Activation, BatchNorm, gelu_exact
from jaxkd.models.resize import resize_bicubic

Array = jax.Array

#: ViT width variants: name -> (embed_dim, num_heads).
VARIANTS: dict[str, tuple[int, int]] = VIT_VARIANTS  # the config's table (jaxkd.config.VIT_VARIANTS)

INFERENCE_MODES = ("cls", "dist", "avg")

__all__ = ["VARIANTS", "INFERENCE_MODES", "DeiT", "Block", "Mlp", "DropPath", "ClsTokenDropout", "PatchEmbed",
           "interpolate_pos_embed", "drop_path_rates"]


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(s) for s in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {v!r}")
    return v  # type: ignore[return-value]


def vit_conv(in_features: int, out_features: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
             use_bias: bool = False, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
             rngs: nnx.Rngs) -> nnx.Conv:
    """torch ``Conv2d(in, out, k, stride, padding, bias)`` as ``nnx.Conv`` with the peer ViT init:
    kernel (HWIO) ~ N(0, sqrt(2 / (k²·out))), bias 0. Explicit padding ((p, p), (p, p))."""
    return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), strides=(stride, stride),
                    padding=((padding, padding), (padding, padding)), use_bias=use_bias, dtype=dtype,
                    param_dtype=param_dtype, kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                    bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def drop_path_rates(depth: int, max_rate: float) -> list[float]:
    """Stochastic-depth rate of each block: ``i/(L−1)·max_rate`` for i = 0..L−1 (a single block gets 0)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {max_rate}")
    if depth == 1:
        return [0.0]
    return [i / (depth - 1) * max_rate for i in range(depth)]


def interpolate_pos_embed(pos_embed: Array, num_prefix: int, old_grid: Sequence[int],
                          new_grid: Sequence[int]) -> Array:
    """Resize the patch part of a learned positional embedding to a new token grid; prefix rows are kept.

    Args:
      pos_embed: (1, num_prefix + gh·gw, D) -- rows ordered [prefix tokens; patches row-major].
      num_prefix: number of leading class/distillation rows (1 or 2), copied unchanged.
      old_grid: (gh, gw) of the stored embedding.
      new_grid: (gh', gw') wanted.
    Returns:
      (1, num_prefix + gh'·gw', D) in pos_embed's dtype: the (gh, gw, D) patch grid resized bicubically with
      torch ``F.interpolate(mode='bicubic', align_corners=False)`` semantics (a = −0.75, no antialias;
      :func:`jaxkd.models.resize.resize_bicubic`), computed in at least float32.
    """
    gh, gw = _pair(old_grid, "old_grid")
    nh, nw = _pair(new_grid, "new_grid")
    pos_embed = jnp.asarray(pos_embed)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != num_prefix + gh * gw:
        raise ValueError(f"pos_embed must have shape (1, {num_prefix} + {gh}*{gw}, D) for num_prefix={num_prefix}"
                         f" and old_grid={(gh, gw)}, got {pos_embed.shape}")
    if (gh, gw) == (nh, nw):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    grid = patches.reshape(1, gh, gw, pos_embed.shape[-1])
    grid = resize_bicubic(grid, (nh, nw)).reshape(1, nh * nw, pos_embed.shape[-1])
    return jnp.concatenate([prefix, grid.astype(pos_embed.dtype)], axis=1)


class DropPath(nnx.Module):
    """Stochastic depth: per sample, ``x / keep · Bernoulli(keep)`` with keep = 1 − rate (mask shared over all
    non-batch axes). Identity when ``deterministic`` (eval mode) or rate == 0. Keys come from the
    ``rng_collection`` stream (default 'dropout') forked at construction, as ``nnx.Dropout`` does."""

    def __init__(self, rate: float, *, deterministic: bool = False, rng_collection: str = "dropout",
                 rngs: nnx.Rngs | None = None):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = rngs[rng_collection].fork() if rngs is not None else nnx.data(None)

    def set_view(self, deterministic: bool | None = None):
        """Hook for ``nnx.view``: set ``deterministic``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, x: Array) -> Array:
        """x (B, ...) -> same shape/dtype."""
        if self.deterministic or self.rate == 0.0:
            return x
        if self.rngs is None:
            raise ValueError("DropPath in train mode needs rngs at construction; pass rngs or call model.eval()")
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class ClsTokenDropout(nnx.Module):
    """cls-token dropout (SPEC §7, ``vit.cls_token_dropout``): in train mode, each sample's class token (token 0) is
    replaced, with probability ``rate``, by the mean of that sample's patch tokens (the tokens after the
    ``num_prefix`` class/distillation tokens); every other token, the distillation token included, is unchanged.
    The DeiT applies it after the final LayerNorm, before the heads.

    One uniform draw u ~ U[0, 1) per sample from the ``rng_collection`` stream (default 'dropout', forked at
    construction as ``nnx.Dropout`` does, and only when rate > 0, so a rate-0 module holds no state); the sample is
    replaced where u < rate. Identity when ``deterministic`` (eval mode) or rate == 0."""

    def __init__(self, rate: float, *, deterministic: bool = False, rng_collection: str = "dropout",
                 rngs: nnx.Rngs | None = None):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"cls_token_dropout must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = rngs[rng_collection].fork() if rngs is not None and self.rate > 0 else nnx.data(None)

    def set_view(self, deterministic: bool | None = None):
        """Hook for ``nnx.view``: set ``deterministic``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, tokens: Array, num_prefix: int, *, uniform: Array | None = None) -> Array:
        """tokens (B, T, D), prefix tokens first -> (B, T, D), same dtype.

        Args:
          tokens: (B, T, D) with T = num_prefix + N, N >= 1 patch tokens.
          num_prefix: 1 (class token) or 2 (class and distillation token).
          uniform: optional (B,) values in [0, 1) used instead of the random draw (sample b replaced where
            uniform[b] < rate), so that a test can fix the draw; ignored like the draw in eval mode or at rate 0.
        """
        if self.deterministic or self.rate == 0.0:
            return tokens
        b = tokens.shape[0]
        if uniform is None:
            if self.rngs is None:
                raise ValueError("ClsTokenDropout in train mode needs rngs at construction; pass rngs or call "
                                 "model.eval()")
            uniform = jax.random.uniform(self.rngs(), (b,))
        elif jnp.shape(uniform) != (b,):
            raise ValueError(f"uniform must have shape ({b},) (one value per sample), got {jnp.shape(uniform)}")
        replace = jnp.asarray(uniform) < self.rate  # (B,)
        patch_mean = jnp.mean(tokens[:, num_prefix:], axis=1)  # (B, D)
        cls = jnp.where(replace[:, None], patch_mean, tokens[:, 0])
        return tokens.at[:, 0].set(cls.astype(tokens.dtype))


class Mlp(nnx.Module):
    """``fc2(drop(GELU(fc1(x))))`` then dropout; fc1 D→hidden, fc2 hidden→D, exact-erf GELU (torch nn.GELU())."""

    def __init__(self, dim: int, hidden: int, *, drop: float = 0.0, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.fc1 = vit_linear(dim, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = Activation(gelu_exact)
        self.drop1 = nnx.Dropout(drop, rngs=rngs)
        self.fc2 = vit_linear(hidden, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.drop2 = nnx.Dropout(drop, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        """x (B, T, D) -> (B, T, D) in the compute dtype."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nnx.Module):
    """Pre-norm transformer block: ``x += DropPath(attn(norm1(x)))``; ``x += DropPath(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, ln_eps: float = 1e-5,
                 attention: str = "auto", dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.norm1 = layer_norm(dim, ln_eps, dtype, param_dtype, rngs)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                              attention=attention, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)
        self.norm2 = layer_norm(dim, ln_eps, dtype, param_dtype, rngs)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array, *, return_attention: bool = False) -> Array | tuple[Array, Array]:
        """x (B, T, D) residual stream (float32) -> same; optionally also (B, H, T, T) attention probs."""
        a = self.attn(self.norm1(x), return_attention=return_attention)
        a, probs = a if return_attention else (a, None)
        x = x + self.drop_path(a).astype(x.dtype)
        x = x + self.drop_path(self.mlp(self.norm2(x))).astype(x.dtype)
        return (x, probs) if return_attention else x


class PatchEmbed(nnx.Module):
    """Images (B, H, W, C) -> patch tokens (B, N, D), N = (H/P)·(W/P) row-major.

    Without a stem: ``proj`` = Conv(C→D, kernel P, stride P, bias). With ``use_conv_stem``: ``stem`` =
    [conv3x3 C→D/2 (no bias), BN, GELU, conv3x3 D/2→D (no bias), BN, GELU] (stride 1, padding 1), then
    ``proj`` = Conv(D→D, kernel P, stride P, bias). BatchNorms have torch semantics (jaxkd.models.layers).

    ``forward_ad`` (default False): when True, the projection as a plain ``jnp.dot`` (same values) instead of
    ``attention.dense``'s custom VJP, so forward-mode autodiff (the analysis' Hessian-vector products) can pass
    through it, as ``attention.Linear.forward_ad``.
    """

    forward_ad = False

    def __init__(self, *, img_size: tuple[int, int], patch_size: int, in_channels: int, embed_dim: int,
                 use_conv_stem: bool = False, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size {img_size} must be divisible by patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = int(patch_size)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if use_conv_stem:
            if embed_dim % 2:
                raise ValueError(f"use_conv_stem needs an even embed_dim (stem width D/2), got {embed_dim}")
            h = embed_dim // 2
            self.stem = nnx.Sequential(
                vit_conv(in_channels, h, 3, padding=1, **kw), BatchNorm(h, **kw), Activation(gelu_exact),
                vit_conv(h, embed_dim, 3, padding=1, **kw), BatchNorm(embed_dim, **kw), Activation(gelu_exact))
            proj_in = embed_dim
        else:
            self.stem = None
            proj_in = in_channels
        self.proj = vit_conv(proj_in, embed_dim, patch_size, stride=patch_size, use_bias=True, **kw)

    def __call__(self, x: Array) -> Array:
        """x (B, H, W, C) -> (B, N, D) in the compute dtype.

        ``proj`` (kernel = stride = P, no padding) runs as patchify + one GEMM: the patches (B·N, P·P·C), flattened
        in (kh, kw, c) order, times the HWIO kernel reshaped to (P·P·C, D). The same sums as the strided
        convolution, but one large matmul, which XLA:CPU runs much faster (``python -m jaxkd.bench models
        --before patchify`` times both; BENCH.md).
        """
        if self.stem is not None:
            x = self.stem(x)
        proj, p = self.proj, self.patch_size
        b, h, w, c = x.shape
        x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
        dt = proj.dtype or x.dtype
        # dense: the kernel gradient as (gᵀ·x)ᵀ, so XLA:CPU does not recompute the first block's gradient chain
        # inside a transposed copy of g (``python -m jaxkd.bench models --before patch_dense``; BENCH.md)
        kernel = proj.kernel[...].reshape(p * p * c, -1).astype(dt)
        bias = proj.bias[...].astype(dt) if proj.bias is not None else None
        if self.forward_ad:
            y = jnp.dot(x.astype(dt), kernel, precision=proj.precision)
            return y + bias if bias is not None else y
        return dense(x.astype(dt), kernel, bias, proj.precision)


class DeiT(nnx.Module):
    """DeiT (with distillation token) / ViT (without) for small images; see the module docstring.

    Attributes: ``num_prefix_tokens`` (2 with the distillation token, else 1), ``grid_size`` (h, w) of the patch
    grid, ``img_size`` (H, W), ``inference_mode`` ('cls' | 'dist' | 'avg'; may be reassigned).
    ``attention``: 'auto' (= 'fused': ``jax.nn.dot_product_attention``, XLA picks the kernel, cuDNN flash on GPU
    where eligible), 'cudnn' (forced; GPU, bf16/fp16), 'xla', or 'plain' (explicit float32 softmax). Attention
    dropout (attn_drop_rate > 0) in train mode always takes the plain path, the fused kernel has no dropout;
    float64 models (verification) also run plain, as the fused kernel's softmax is always float32.
    ``drop_rate`` applies after the positional embedding (``pos_drop``), after ``attn.proj`` and inside the MLP.
    ``cls_token_dropout`` p (train mode only): after the final LayerNorm, before the heads, each sample's class
    token is replaced with probability p by the mean of its patch tokens (:class:`ClsTokenDropout`, module
    ``cls_token_dropout``); the distillation token is untouched. At p = 0 (the default) the model holds no state for
    it, so its parameters, RNG streams and checkpoints are those of a model without the option.
    """

    def __init__(self, *, img_size: int | Sequence[int] = 32, patch_size: int = 4, in_channels: int = 3,
                 num_classes: int = 10, embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, distillation: bool = True,
                 convert_grayscale: bool = True, use_conv_stem: bool = False, ln_eps: float = 1e-5,
                 inference_mode: str = "avg", attention: str = "auto", cls_token_dropout: float = 0.0,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        img_size = _pair(img_size, "img_size")
        if inference_mode not in INFERENCE_MODES:
            raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {inference_mode!r}")
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
        if attention == "cudnn" and jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
            raise ValueError(f"attention='cudnn' needs dtype bfloat16 or float16 (got {jnp.dtype(dtype).name}); "
                             "use attention='auto' for float32")
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes), ("patch_size", patch_size),
                        ("embed_dim", embed_dim)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if use_conv_stem and embed_dim % 2:
            raise ValueError(f"use_conv_stem needs an even embed_dim (stem width D/2), got {embed_dim}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        if not (0.0 <= drop_rate < 1.0 and 0.0 <= attn_drop_rate < 1.0):
            raise ValueError(f"drop_rate and attn_drop_rate must be in [0, 1), got {drop_rate}, {attn_drop_rate}")
        if not 0.0 <= cls_token_dropout < 1.0:
            raise ValueError(f"cls_token_dropout must be in [0, 1), got {cls_token_dropout}")
        rates = drop_path_rates(depth, drop_path_rate)
        self.img_size = img_size
        self.patch_size = int(patch_size)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        self.inference_mode = inference_mode
        self.distillation = bool(distillation)
        self.num_prefix_tokens = 2 if distillation else 1
        self.dtype = dtype
        self.float_dtype = jnp.promote_types(dtype, jnp.float32)  # residual stream, norms, logits
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        tn = trunc_normal_init(0.02)

        if in_channels == 1 and convert_grayscale:
            self.channel_expand = vit_conv(1, 3, 1, **kw)
            embed_in = 3
        else:
            self.channel_expand = None
            embed_in = in_channels
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_channels=embed_in,
                                      embed_dim=embed_dim, use_conv_stem=use_conv_stem, **kw)
        self.grid_size = self.patch_embed.grid_size
        n_tok = self.patch_embed.num_patches + self.num_prefix_tokens
        self.cls_token = nnx.Param(tn(rngs.params(), (1, 1, embed_dim), param_dtype))
        self.dist_token = nnx.Param(tn(rngs.params(), (1, 1, embed_dim), param_dtype)) if distillation else None
        self.pos_embed = nnx.Param(tn(rngs.params(), (1, n_tok, embed_dim), param_dtype))
        self.pos_drop = nnx.Dropout(drop_rate, rngs=rngs)
        self.blocks = nnx.List([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=r, ln_eps=ln_eps, attention=attention, **kw)
            for r in rates])
        self.norm = layer_norm(embed_dim, ln_eps, dtype, param_dtype, rngs)
        hkw = dict(dtype=self.float_dtype, param_dtype=param_dtype, rngs=rngs)
        self.head = vit_linear(embed_dim, num_classes, **hkw)
        self.head_dist = vit_linear(embed_dim, num_classes, **hkw) if distillation else None
        # forked last (and only when p > 0), so that every other layer's dropout stream is the same as without it
        self.cls_token_dropout = ClsTokenDropout(cls_token_dropout, rngs=rngs)

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"DeiT expects NHWC images (B, H, W, {self.in_channels}), got shape {x.shape}")
        if tuple(x.shape[1:3]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[1:3])} differs from the model's img_size {self.img_size}; "
                             f"call model.resize_pos_embed({tuple(x.shape[1:3])}) first")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"DeiT expects float images, got dtype {x.dtype}; normalise/cast them first")
        return x

    def _features(self, x: Array, token_layers: Sequence[int] = (), collect_attention: bool = False):
        """Returns (final-LN tokens (B,T,D), tuple of chosen blocks' tokens, tuple of attention probs)."""
        x = self._check_input(x)
        wanted = set()
        for i in token_layers:
            i = int(i)
            if not -self.depth <= i < self.depth:
                raise ValueError(f"token layer {i} out of range for depth {self.depth} (use 0..{self.depth - 1})")
            wanted.add(i % self.depth)
        if self.channel_expand is not None:
            x = self.channel_expand(x)
        x = self.patch_embed(x).astype(self.float_dtype)
        b = x.shape[0]
        prefix = [jnp.broadcast_to(self.cls_token[...], (b, 1, self.embed_dim))]
        if self.dist_token is not None:
            prefix.append(jnp.broadcast_to(self.dist_token[...], (b, 1, self.embed_dim)))
        x = jnp.concatenate([p.astype(self.float_dtype) for p in prefix] + [x], axis=1)
        x = self.pos_drop(x + self.pos_embed[...].astype(self.float_dtype))
        feats: dict[int, Array] = {}
        maps = []
        for i, blk in enumerate(self.blocks):
            if collect_attention:
                x, probs = blk(x, return_attention=True)
                maps.append(probs)
            else:
                x = blk(x)
            if i in wanted:
                feats[i] = x
        blocks = tuple(feats[int(i) % self.depth] for i in token_layers)
        return self.norm(x), blocks, tuple(maps)

    def forward_heads(self, x: Array, token_layers: Sequence[int] = (), *,
                      cls_drop_uniform: Array | None = None) -> dict[str, Any]:
        """Both heads and the token features.

        Args:
          x: images (B, H, W, C) float, H×W = img_size.
          token_layers: block indices (negative allowed) whose output tokens to return.
          cls_drop_uniform: optional (B,) values in [0, 1) that replace cls-token dropout's per-sample uniform
            draw (sample b's class token replaced where cls_drop_uniform[b] < p); for tests that fix the draw.
            Ignored in eval mode and at p = 0.
        Returns:
          dict(cls=(B,K) float32 logits of ``head`` on the class token, dist=(B,K) float32 logits of
          ``head_dist`` on the distillation token or None, tokens=(B,T,D) float32 after the final LayerNorm
          and cls-token dropout (what the heads read; T = prefix + N, prefix tokens first), blocks=tuple of
          (B,T,D) float32 residual-stream tokens after each requested block, BEFORE the final LayerNorm, in the
          requested order).
        """
        tokens, blocks, _ = self._features(x, token_layers)
        tokens = self.cls_token_dropout(tokens, self.num_prefix_tokens, uniform=cls_drop_uniform)
        cls = self.head(tokens[:, 0])
        dist = self.head_dist(tokens[:, 1]) if self.head_dist is not None else None
        return {"cls": cls, "dist": dist, "tokens": tokens, "blocks": blocks}

    def __call__(self, x: Array) -> Array:
        """Images (B, H, W, C) -> logits (B, K) float32 by ``inference_mode``: 'cls' → head, 'dist' → head_dist,
        'avg' → (cls + dist)/2 (DeiT's rule). Without a distillation token the class head is always used."""
        if self.inference_mode not in INFERENCE_MODES:
            raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {self.inference_mode!r}")
        out = self.forward_heads(x)
        if out["dist"] is None or self.inference_mode == "cls":
            return out["cls"]
        if self.inference_mode == "dist":
            return out["dist"]
        return (out["cls"] + out["dist"]) / 2

    def attention_maps(self, x: Array) -> tuple[Array, ...]:
        """Per-block attention probabilities from the plain path: tuple of ``depth`` arrays (B, heads, T, T),
        float32, rows summing to 1 (before attention dropout); T = prefix + N, prefix tokens first."""
        return self._features(x, (), collect_attention=True)[2]

    def set_attention(self, attention: str) -> None:
        """Switch every block's attention path in place ('auto' | 'fused' | 'cudnn' | 'xla' | 'plain');
        the parameters are unchanged, so the paths can be compared on the same weights."""
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
        if attention == "cudnn" and jnp.dtype(self.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
            raise ValueError(f"attention='cudnn' needs dtype bfloat16 or float16 (got {jnp.dtype(self.dtype).name})")
        for blk in self.blocks:
            blk.attn.attention = attention

    # ------------------------------------------------------------------ resolution change
    def resize_pos_embed(self, new_img_size: int | Sequence[int]) -> None:
        """Let the model run at another input resolution, in place: the patch part of ``pos_embed`` is resized
        bicubically (:func:`interpolate_pos_embed`) from the current grid to new_img_size / patch_size; the
        class/dist rows are kept. ``img_size`` and ``grid_size`` are updated. Needs divisibility by the patch."""
        new = _pair(new_img_size, "new_img_size")
        if new[0] % self.patch_size or new[1] % self.patch_size:
            raise ValueError(f"new_img_size {new} must be divisible by patch_size {self.patch_size}")
        grid = (new[0] // self.patch_size, new[1] // self.patch_size)
        pe = interpolate_pos_embed(self.pos_embed[...], self.num_prefix_tokens, self.grid_size, grid)
        self.pos_embed.set_value(pe)
        self.img_size = new
        self.grid_size = grid
        pe_mod = self.patch_embed
        pe_mod.img_size, pe_mod.grid_size, pe_mod.num_patches = new, grid, grid[0] * grid[1]
