"""AdaptiveCNN: the SE-ResNet teacher (SPEC.md section 1), NHWC, PyTorch-default initialisation.

Module names equal the original project's torch modules (PEER_CHECKPOINTS.md), so ``jaxkd.interop`` maps
parameters one to one: ``features.0`` = stem Sequential [conv@0, bn@1, relu@2, (maxpool@3, mnist only)],
``features.1..`` = :class:`ResidualBlock` (conv1, bn1, conv2, bn2, se.fc[0]/[2], shortcut[0]/[1]),
``classifier`` = Sequential [Linear@0, ReLU@1, Dropout@2, Linear@3].

Parameter counts: mnist 709,034; cifar 17,629,514 (with SE).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd.models.layers import (
    Activation,
    BatchNorm,
    MaxPool2d,
    global_avg_pool,
    relu,
    torch_conv,
    torch_linear,
)

Array = jax.Array

# (in_channels, out_channels, stride) of the residual blocks, after the stem.
_BLOCKS = {
    "mnist": [(32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)],
    "cifar": [
        (64, 64, 1), (64, 64, 1),
        (64, 128, 2), (128, 128, 1), (128, 128, 1),
        (128, 256, 2), (256, 256, 1), (256, 256, 1),
        (256, 512, 2), (512, 512, 1), (512, 512, 1),
    ],
}
VARIANTS = tuple(_BLOCKS)


def _float_out(x: Array) -> Array:
    """Cast to float32, or keep float64 (x64 checks): promote_types(x.dtype, float32)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class SEBlock(nnx.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 ReLU(W1 GAP(x)))``, W1: C -> C//r, W2: C//r -> C, no biases.

    x: (B,H,W,C) -> (B,H,W,C). GAP is computed in float32 (float64 for float64 input).
    """

    def __init__(self, channels: int, reduction: int = 16, *, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"SEBlock needs channels >= reduction, got channels={channels}, reduction={reduction}")
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc = nnx.Sequential(
            torch_linear(channels, hidden, **kw),
            Activation(relu),
            torch_linear(hidden, channels, **kw),
            Activation(jax.nn.sigmoid),
        )

    def __call__(self, x: Array) -> Array:
        s = global_avg_pool(_float_out(x)).astype(x.dtype)  # (B, C)
        w = self.fc(s)  # (B, C) in (0, 1)
        return x * w[:, None, None, :].astype(x.dtype)


class ResidualBlock(nnx.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN -> SE, + shortcut, then ReLU.

    shortcut = [conv1x1(stride), BN] when stride != 1 or in != out, identity (empty Sequential) otherwise.
    x: (B,H,W,in) -> (B,ceil(H/stride),ceil(W/stride),out).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, use_se: bool = True,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = torch_conv(in_channels, out_channels, 3, stride=stride, padding=1, **kw)
        self.bn1 = BatchNorm(out_channels, **kw)
        self.conv2 = torch_conv(out_channels, out_channels, 3, stride=1, padding=1, **kw)
        self.bn2 = BatchNorm(out_channels, **kw)
        self.se = SEBlock(out_channels, **kw) if use_se else None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nnx.Sequential(
                torch_conv(in_channels, out_channels, 1, stride=stride, padding=0, **kw),
                BatchNorm(out_channels, **kw),
            )
        else:
            self.shortcut = nnx.Sequential()

    def __call__(self, x: Array) -> Array:
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return relu(out + self.shortcut(x))


class AdaptiveCNN(nnx.Module):
    """SE-ResNet teacher. ``variant`` 'mnist' (stem 32 ch + maxpool, 6 blocks) or 'cifar' (stem 64 ch, 11 blocks).

    ``__call__``: x (B,H,W,in_channels) float -> logits (B,num_classes) float32 (float64 for float64 runs).
    ``features_map``: x -> last residual block's output (B,h,w,C) before global average pooling (Grad-CAM).
    ``feature_maps``: the stem's and each stage's output (a stage: the run of blocks of one width), NHWC.
    Train/eval: ``model.train()`` (BN batch statistics, dropout on, rng stream 'dropout') / ``model.eval()``.
    """

    def __init__(self, *, variant: str = "mnist", in_channels: int, num_classes: int,
                 head_dropout: float = 0.3, use_se: bool = True, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        if variant not in _BLOCKS:
            raise ValueError(f"unknown AdaptiveCNN variant {variant!r}; use one of {VARIANTS}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
        self.variant = variant
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        blocks = _BLOCKS[variant]
        c0 = blocks[0][0]
        stem = [torch_conv(in_channels, c0, 3, stride=1, padding=1, **kw), BatchNorm(c0, **kw),
                Activation(relu)]
        if variant == "mnist":
            stem.append(MaxPool2d(2))
        self.features = nnx.Sequential(
            nnx.Sequential(*stem),
            *[ResidualBlock(i, o, s, use_se=use_se, **kw) for i, o, s in blocks],
        )
        c = blocks[-1][1]
        self.num_features = c
        self.classifier = nnx.Sequential(
            torch_linear(c, c // 2, **kw),
            Activation(relu),
            nnx.Dropout(head_dropout, rngs=rngs),
            torch_linear(c // 2, num_classes, **kw),
        )

    def _check_input(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"AdaptiveCNN expects NHWC images (B, H, W, {self.in_channels}), got shape {tuple(x.shape)}"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"AdaptiveCNN expects float images, got dtype {x.dtype}; normalise to float first")
        return x.astype(self.dtype) if self.dtype is not None else x

    def features_map(self, x: Array) -> Array:
        """x (B,H,W,C_in) -> last conv feature map (B,h,w,C) in the compute dtype (before GAP)."""
        return self.features(self._check_input(x))

    def feature_maps(self, x: Array) -> list[Array]:
        """x (B,H,W,C_in) -> [stem, stage 1, ..., stage S] outputs (B,h,w,C) in the compute dtype, a stage being the
        run of residual blocks of one width (mnist: 32, 64, 128 -> 4 maps; cifar: 64, 128, 256, 512 -> 5 maps), as
        ResNet18CIFAR.feature_maps gives [stem, layer1..4]. The last entry is :meth:`features_map`."""
        layers = list(self.features.layers)
        h = layers[0](self._check_input(x))
        out = [h]
        widths = [o for _, o, _ in _BLOCKS[self.variant]]
        for i, block in enumerate(layers[1:]):
            h = block(h)
            if i + 1 == len(widths) or widths[i + 1] != widths[i]:
                out.append(h)
        return out

    def __call__(self, x: Array) -> Array:
        """x (B,H,W,C_in) float -> logits (B,num_classes) float32 (mean-pooled features -> MLP head)."""
        f = self.features_map(x)
        pooled = global_avg_pool(_float_out(f)).astype(f.dtype)
        return _float_out(self.classifier(pooled))
