"""ConvNeXt V2 (../shared/spec/LATER.md §2.2; the original's ``model_type: convnext_v2_tiny``), NHWC, with the 2×2
stem for 32×32 images.

Tiny: depths (3, 3, 9, 3), dims (96, 192, 384, 768). Stem: Conv 2×2 / stride 2 (bias) → LayerNorm2d (eps 1e-6).
Each block: depthwise Conv 7×7 (pad 3, bias) → LayerNorm (eps 1e-6) → Linear(d → 4d) → GELU (exact, erf) → GRN(4d)
→ Linear(4d → d) → DropPath → + residual; no layer scale. Stages 1–3 start with a downsample LayerNorm2d → Conv
2×2 / stride 2. Head: global average pool → LayerNorm(768) → Linear(768 → C). At 32×32 input the stages run at
16, 8, 4 and 2 px. 27,870,730 parameters at C = 10 (28,635,496 for timm's ImageNet model with its 4×4 stem).

GRN (global response normalisation, ConvNeXt V2): ``x + β + γ·(x·N(x))`` with ``G(x) = ‖x‖₂`` over H and W per
channel and ``N(x) = G(x) / (mean_C G(x) + 1e-6)``; γ and β start at zero (GRN is the identity at init).

Module names are timm's ``convnextv2_tiny`` state-dict keys (timm 1.0): ``stem.{0,1}``,
``stages.{i}.downsample.{0,1}`` (i ≥ 1), ``stages.{i}.blocks.{j}.{conv_dw, norm, mlp.fc1, mlp.grn, mlp.fc2}``,
``head.{norm, fc}``; the GRN's parameters are ``weight`` (γ) and ``bias`` (β) as timm's. So a timm state dict (and,
less its ``model.`` prefix, the original's ``best_model.pth``) loads through ``jaxkd.interop`` one to one; the
depthwise kernel (C, 1, 7, 7) becomes the HWIO (7, 7, 1, C) of a grouped ``nnx.Conv``.

Initialisation as timm's ``_init_weights``: convolutions and Linears ``trunc_normal_(std=0.02)`` (torch's
truncation at ±2 absolute, i.e. ±100 σ) with bias 0, LayerNorms 1 / 0, GRN 0 / 0. Stochastic depth rates rise
linearly from 0 to ``drop_path_rate`` over the 18 blocks (timm's ``linspace``). ImageNet weights:
``jaxkd.interop.pretrained`` (the stem replaced, the head re-initialised, as the original did).

Compute dtype: convolutions and Linears in ``dtype`` (bf16 with ``training.use_amp``); the residual stream,
LayerNorms, GRN and logits in float32 (float64 for float64 models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd.models.attention import Linear, layer_norm
from jaxkd.models.layers import Activation, gelu_exact, global_avg_pool
from jaxkd.models.vit import DropPath, drop_path_rates

Array = jax.Array

TINY_DEPTHS = (3, 3, 9, 3)
TINY_DIMS = (96, 192, 384, 768)
LN_EPS = 1e-6
GRN_EPS = 1e-6

__all__ = ["ConvNeXtV2", "ConvNeXtBlock", "GlobalResponseNorm", "timm_trunc_normal", "TINY_DEPTHS", "TINY_DIMS"]


def timm_trunc_normal(std: float = 0.02):
    """torch ``trunc_normal_(w, std=std)`` (a = −2, b = 2, absolute bounds, as timm calls it): N(0, std²) cut at
    ±2, i.e. at ±2/std standard deviations."""

    def init(key: Array, shape, dtype: Any = jnp.float32) -> Array:
        return (std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, jnp.float32)).astype(dtype)

    return init


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, groups: int = 1, dtype: Any,
          param_dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
    """torch ``Conv2d(cin, cout, k, stride, padding, groups=groups, bias=True)``, timm's init."""
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
                    feature_group_count=groups, use_bias=True, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=timm_trunc_normal(0.02), bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def _linear(cin: int, cout: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> Linear:
    return Linear(cin, cout, dtype=dtype, param_dtype=param_dtype, kernel_init=timm_trunc_normal(0.02),
                  bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class GlobalResponseNorm(nnx.Module):
    """GRN over channels-last x (B,H,W,C) -> same shape and dtype; computed in float32 (float64 for float64 input).

    Parameters ``weight`` (γ) and ``bias`` (β), (C,), zero at init. ‖x‖₂ over (H, W) is taken as
    ``sqrt(Σx²)`` with a zero gradient where Σx² = 0 (torch's ``norm`` backward there; a plain ``sqrt`` would give
    NaN for a channel that is exactly zero over the whole map).
    """

    def __init__(self, dim: int, *, eps: float = GRN_EPS, param_dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None):
        del rngs  # deterministic init
        self.eps = float(eps)
        self.weight = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))

    def __call__(self, x: Array) -> Array:
        xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        ss = jnp.sum(jnp.square(xs), axis=(1, 2), keepdims=True)  # (B,1,1,C)
        pos = ss > 0
        gx = jnp.where(pos, jnp.sqrt(jnp.where(pos, ss, 1.0)), 0.0)
        nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + self.eps)
        w = self.weight[...].astype(xs.dtype)
        b = self.bias[...].astype(xs.dtype)
        return (xs + b + w * (xs * nx)).astype(x.dtype)


class GlobalResponseNormMlp(nnx.Module):
    """timm's ``GlobalResponseNormMlp``: fc1 (d → h) → GELU → GRN(h) → fc2 (h → d); (..., d) -> (..., d)."""

    def __init__(self, dim: int, hidden: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = _linear(dim, hidden, **kw)
        self.act = Activation(gelu_exact)
        self.grn = GlobalResponseNorm(hidden, param_dtype=param_dtype)
        self.fc2 = _linear(hidden, dim, **kw)

    def __call__(self, x: Array) -> Array:
        return self.fc2(self.grn(self.act(self.fc1(x))))


class ConvNeXtBlock(nnx.Module):
    """x + DropPath(mlp(norm(conv_dw(x)))) on (B,H,W,d); the residual stream in float32."""

    def __init__(self, dim: int, *, drop_path: float = 0.0, mlp_ratio: int = 4, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv_dw = _conv(dim, dim, 7, padding=3, groups=dim, **kw)
        self.norm = layer_norm(dim, LN_EPS, dtype, param_dtype, rngs)
        self.mlp = GlobalResponseNormMlp(dim, mlp_ratio * dim, **kw)
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        h = self.mlp(self.norm(self.conv_dw(x)))
        return x + self.drop_path(h).astype(x.dtype)


class ConvNeXtStage(nnx.Module):
    """[downsample: LayerNorm2d → Conv 2×2 / stride 2 (stages ≥ 1)] → blocks."""

    def __init__(self, cin: int, cout: int, depth: int, rates: Sequence[float], *, downsample: bool,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if downsample:
            self.downsample = nnx.Sequential(layer_norm(cin, LN_EPS, dtype, param_dtype, rngs),
                                             _conv(cin, cout, 2, stride=2, **kw))
        else:
            self.downsample = None
        self.blocks = nnx.List([ConvNeXtBlock(cout, drop_path=r, **kw) for r in rates[:depth]])

    def __call__(self, x: Array) -> Array:
        if self.downsample is not None:
            x = self.downsample(x)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # the residual stream
        for blk in self.blocks:
            x = blk(x)
        return x


class ConvNeXtHead(nnx.Module):
    """Global average pool → LayerNorm → Linear, (B,h,w,d) -> (B,K), float32."""

    def __init__(self, dim: int, num_classes: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.norm = layer_norm(dim, LN_EPS, dtype, param_dtype, rngs)
        self.fc = _linear(dim, num_classes, dtype=jnp.promote_types(dtype, jnp.float32), param_dtype=param_dtype,
                          rngs=rngs)

    def __call__(self, f: Array) -> Array:
        pooled = global_avg_pool(f.astype(jnp.promote_types(f.dtype, jnp.float32)))
        return self.fc(self.norm(pooled))


class ConvNeXtV2(nnx.Module):
    """ConvNeXt V2 with the 2×2 stem (see the module docstring); Tiny by default.

    ``__call__``: x (B,H,W,in_channels) float -> logits (B,num_classes) float32 (float64 for float64 models).
    ``feature_maps``: the four stages' outputs (B,h,w,d) (the original's ``get_intermediate_features``).
    ``features_map``: the last stage's output (Grad-CAM); ``logits_from_features``: that map -> logits.
    Train/eval: ``model.train()`` turns drop path on (rng stream 'dropout'), ``model.eval()`` off.
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int = 10, depths: Sequence[int] = TINY_DEPTHS,
                 dims: Sequence[int] = TINY_DIMS, drop_path_rate: float = 0.0, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        depths, dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
        if len(depths) != len(dims) or not depths or min(depths) < 1 or min(dims) < 1:
            raise ValueError(f"depths and dims must be equally long lists of positive ints, got {depths}, {dims}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.depths, self.dims = depths, dims
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = nnx.Sequential(_conv(in_channels, dims[0], 2, stride=2, **kw),
                                   layer_norm(dims[0], LN_EPS, dtype, param_dtype, rngs))
        rates = drop_path_rates(sum(depths), drop_path_rate)
        stages, start = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            cin = dims[i - 1] if i else dims[0]
            stages.append(ConvNeXtStage(cin, dim, depth, rates[start:start + depth], downsample=i > 0, **kw))
            start += depth
        self.stages = nnx.List(stages)
        self.num_features = dims[-1]
        self.head = ConvNeXtHead(dims[-1], num_classes, **kw)

    def _check_input(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"ConvNeXtV2 expects NHWC images (B, H, W, {self.in_channels}), got shape "
                             f"{tuple(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"ConvNeXtV2 expects float images, got dtype {x.dtype}; normalise to float first")
        need = 2 ** len(self.depths)
        if x.shape[1] < need or x.shape[2] < need:
            raise ValueError(f"ConvNeXtV2 halves the image {len(self.depths)} times: it needs at least {need}×{need} "
                             f"pixels, got {x.shape[1]}×{x.shape[2]}")
        return x.astype(self.dtype) if self.dtype is not None else x

    def feature_maps(self, x: Array) -> list[Array]:
        """The stages' outputs (B,h,w,d), float32: at 32×32 input 16, 8, 4 and 2 px."""
        h = self.stem(self._check_input(x))
        out = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def features_map(self, x: Array) -> Array:
        """x (B,H,W,C_in) -> the last stage's output (B,h,w,d) before pooling."""
        h = self.stem(self._check_input(x))
        for stage in self.stages:
            h = stage(h)
        return h

    def logits_from_features(self, f: Array) -> Array:
        """The last stage's map (B,h,w,d) -> logits (B,K) float32 (the head alone)."""
        return self.head(f)

    def __call__(self, x: Array) -> Array:
        """x (B,H,W,C_in) float -> logits (B,num_classes) float32."""
        return self.head(self.features_map(x))
