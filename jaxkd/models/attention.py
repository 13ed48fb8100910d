"""Multi-head self-attention of the DeiT/ViT student (SPEC.md §2): plain and fused paths, and the module.

Two numerically equivalent paths compute ``softmax(Q·Kᵀ·scale)·V`` per head, scale = 1/√(D/heads):

* :func:`plain_attention` -- explicit einsums; the logits are accumulated and the softmax is taken in at least
  float32 whatever the compute dtype; it also returns the attention probabilities (attention maps, rollout)
  and is the only path that supports attention-probability dropout.
* :func:`fused_attention` -- ``jax.nn.dot_product_attention``. ``implementation=None`` lets XLA choose (on
  GPU with bf16/fp16 inputs it may dispatch to cuDNN flash attention); ``'cudnn'`` forces the cuDNN kernel
  (GPU only, bf16/fp16 only); ``'xla'`` forces the XLA composite.

Layout everywhere: q, k, v are (B, T, H, hd) = (batch, tokens, heads, head dim).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

#: accepted values of the ``attention`` field: 'auto' (= 'fused'), 'fused' (XLA picks the kernel),
#: 'cudnn' (force cuDNN flash attention; GPU + bf16/fp16 only), 'xla' (XLA composite), 'plain' (explicit einsums).
ATTENTION_IMPLEMENTATIONS = ("auto", "fused", "cudnn", "xla", "plain")


def plain_attention(q: Array, k: Array, v: Array, *, scale: float,
                    probs_dropout: Callable[[Array], Array] | None = None) -> tuple[Array, Array]:
    """Explicit scaled dot-product attention.

    Args:
      q, k, v: (B, T, H, hd) arrays in the compute dtype.
      scale: multiplier of the logits (1/√hd).
      probs_dropout: optional function applied to the (B, H, T, T) probabilities (attention dropout).
    Returns:
      (out, probs): out (B, T, H, hd) in v's dtype; probs (B, H, T, T) in float32 (float64 for float64 input),
      rows summing to 1 (before dropout). Logits ``Σ_d q·k`` are accumulated in that float type, times scale,
      softmax over the key axis in that float type, then cast to v's dtype for the weighted sum of values.
    """
    acc = jnp.promote_types(q.dtype, jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc) * scale
    probs = jax.nn.softmax(logits.astype(acc), axis=-1)
    p = probs if probs_dropout is None else probs_dropout(probs)
    out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)
    return out, probs


def fused_attention(q: Array, k: Array, v: Array, *, scale: float,
                    implementation: str | None = None) -> Array:
    """``jax.nn.dot_product_attention`` (no mask, no bias, no dropout).

    Args:
      q, k, v: (B, T, H, hd) in the compute dtype.
      scale: multiplier of the logits (1/√hd).
      implementation: None (XLA chooses; cuDNN flash attention on GPU where eligible), 'cudnn' or 'xla'.
    Returns:
      (B, T, H, hd) in q's dtype. Softmax inside the kernel is computed in float32 for half-precision inputs.
    """
    return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=implementation)


def trunc_normal_init(std: float = 0.02) -> Callable[..., Array]:
    """Initialiser ``std · TruncatedNormal(−2, 2)`` (torch ``trunc_normal_(std=std, a=−2std, b=2std)``)."""

    def init(key: Array, shape, dtype: Any = jnp.float32) -> Array:
        return (std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)).astype(dtype)

    return init


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def dense(x: Array, kernel: Array, bias: Array | None, precision: Any = None) -> Array:
    """``x @ kernel + bias``: x (..., K), kernel (K, N), bias (N,) or None -> (..., N), in the operands' dtype.

    The value and gradients are those of the plain expression (``jax.grad`` of it, same dtypes); only the
    kernel gradient is formed as ``(gᵀ·x)ᵀ`` (a (N, K) product, then a transpose) rather than ``xᵀ·g``. Same math, one
    more transpose of a weight-sized matrix; the point is which operand XLA has to copy. On XLA:CPU the
    ``xᵀ·g`` form made it copy (transpose) the output gradient ``g``, and its instruction fusion recomputed the
    residual stream's whole gradient chain (back through every later block) inside each such copy:
    ``python -m jaxkd.bench profile --models deit_kd`` measures those copies' share of the step, and
    ``python -m jaxkd.bench models --before dense`` times the old form against this one (figures: BENCH.md).
    """
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    return y if bias is None else y + bias


def _dense_fwd(x, kernel, bias, precision):
    return dense(x, kernel, bias, precision), (x, kernel, bias is None)


def _dense_bwd(precision, res, g):
    x, kernel, no_bias = res
    dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
    g2 = g.reshape(-1, g.shape[-1])
    dk = jax.lax.dot_general(g2, x.reshape(-1, x.shape[-1]), (((0,), (0,)), ((), ())), precision=precision).T
    return dx, dk, (None if no_bias else jnp.sum(g2, axis=0))


dense.defvjp(_dense_fwd, _dense_bwd)


class Linear(nnx.Linear):
    """``nnx.Linear`` (same parameters, init, dtype promotion) computed with :func:`dense`.

    ``forward_ad`` (default False): when True, ``nnx.Linear``'s own expression instead, the same values, through
    which forward-mode autodiff can go (``jax.jvp``, ``jax.hessian``, forward-over-reverse Hessian-vector products:
    jaxkd.analyze), which :func:`dense`'s custom VJP does not allow. Set it on a whole model with
    ``model.set_attributes(forward_ad=True, raise_if_not_found=False)``; training never does.
    """

    forward_ad = False

    def __call__(self, inputs: Array, out_sharding=None) -> Array:
        if out_sharding is not None or self.preferred_element_type is not None or self.forward_ad:
            return super().__call__(inputs, out_sharding=out_sharding)
        kernel = self.kernel[...]
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        return dense(inputs, kernel, bias, self.precision)


def layer_norm(dim: int, eps: float, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """The transformers' LayerNorm: statistics in float32 (two-pass variance, as torch), output float32 (float64
    for float64 models)."""
    return nnx.LayerNorm(dim, epsilon=eps, dtype=jnp.promote_types(dtype, jnp.float32), param_dtype=param_dtype,
                         use_fast_variance=False, rngs=rngs)


def vit_linear(in_features: int, out_features: int, *, use_bias: bool = True, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
    """:class:`Linear` (an ``nnx.Linear``) with the peer ViT init: kernel trunc-normal std 0.02, bias 0.
    Kernel (in, out)."""
    return Linear(in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                  kernel_init=trunc_normal_init(0.02), bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class Attention(nnx.Module):
    """Multi-head self-attention: ``proj(attention(split_heads(qkv(x))))`` (timm/DeiT layout).

    Parameters (torch names): ``qkv`` Linear D→3D (bias = qkv_bias), ``proj`` Linear D→D with bias. The qkv
    output is split as (3, heads, hd) along the feature axis, exactly like timm's
    ``qkv.reshape(B, T, 3, H, hd)``. ``attn_drop`` drops attention probabilities, ``proj_drop`` the output.

    Path choice: ``attention='plain'`` always uses :func:`plain_attention`; 'auto'/'fused'/'xla'/'cudnn' use
    :func:`fused_attention`, EXCEPT when attention dropout is active (attn_drop rate > 0 in train mode), which
    the fused kernel cannot do, when the probabilities are requested, or for float64 compute (the fused
    kernel's softmax is always float32, which would silently drop float64 precision) -- then the plain path
    runs.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, attention: str = "auto", dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
        if attention == "cudnn" and jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
            raise ValueError(f"attention='cudnn' needs dtype bfloat16 or float16 (got {jnp.dtype(dtype).name}); "
                             "use attention='auto' for float32")
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.scale = self.head_dim ** -0.5
        self.attention = attention
        self.qkv = vit_linear(dim, 3 * dim, use_bias=qkv_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn_drop = nnx.Dropout(attn_drop, rngs=rngs)
        self.proj = vit_linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)

    def _fused_impl(self) -> str | None:
        return {"auto": None, "fused": None, "xla": "xla", "cudnn": "cudnn"}[self.attention]

    def __call__(self, x: Array, *, return_attention: bool = False) -> Array | tuple[Array, Array]:
        """x (B, T, D) -> (B, T, D) in the compute dtype; with return_attention also the (B, H, T, T) float32
        probabilities (plain path, before attention dropout)."""
        b, t, d = x.shape
        if d != self.dim:
            raise ValueError(f"Attention expects (B, T, {self.dim}) input, got shape {x.shape}")
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        drop_active = self.attn_drop.rate > 0.0 and not self.attn_drop.deterministic
        # jax's fused attention always takes the softmax in float32, so float64 (verification) runs plain
        f64 = q.dtype == jnp.float64
        probs = None
        # XLA:CPU has no float16 dot with float32 accumulation, which the fused path asks for: plain there.
        f16_cpu = q.dtype == jnp.float16 and jax.default_backend() == "cpu"
        if self.attention == "plain" or return_attention or drop_active or f64 or f16_cpu:
            out, probs = plain_attention(q, k, v, scale=self.scale,
                                         probs_dropout=self.attn_drop if drop_active else None)
        else:
            out = fused_attention(q, k, v, scale=self.scale, implementation=self._fused_impl())
        out = self.proj_drop(self.proj(out.reshape(b, t, d)))
        return (out, probs) if return_attention else out
