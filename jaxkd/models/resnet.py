"""ResNet-18 with the CIFAR stem (../shared/spec/LATER.md §2.1; the original's ``model_type: resnet18_cifar``), NHWC.

Stem conv 3×3 / stride 1 (no bias) → BatchNorm → ReLU, **no max-pool**; four stages of two post-activation
:class:`BasicBlock` s (64, 128, 256, 512 channels; the first block of stages 2–4 has stride 2 and a 1×1 conv + BN
projection shortcut); global average pool → Linear(512 → C). At 32×32 input the maps are 32, 32, 16, 8, 4.
11,173,962 parameters at C = 10 (11,220,132 at C = 100).

Module names are the original project's state-dict keys (src/teachers.py@5608f14): ``conv1``, ``bn1``,
``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}``, ``fc`` -- so ``jaxkd.interop`` maps its
``best_model.pth`` one to one (``layers`` of an ``nnx.Sequential`` dropped, kernel ↔ weight, ...).

Initialisation as the original's ``_init_weights``: every conv Kaiming-normal (fan_out, ReLU gain: N(0, 2/(k²·out))),
BatchNorm weight 1 / bias 0 (the last BN of a block is not zero-initialised), the Linear Kaiming-normal with the
default fan_in mode (N(0, 2/512)) and bias 0. BatchNorm has torch semantics (:class:`jaxkd.models.layers.BatchNorm`:
momentum 0.1, eps 1e-5, unbiased running variance).

Compute dtype: convolutions in ``dtype`` (bf16 with ``training.use_amp``), BatchNorm statistics in float32, the
pooled features and logits in float32 (float64 for float64 models).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd.models.layers import BatchNorm, global_avg_pool, relu

Array = jax.Array

#: (channels, stride of the first block) of the four stages, two BasicBlocks each
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
BLOCKS_PER_STAGE = 2
STEM_CHANNELS = 64

__all__ = ["ResNet18CIFAR", "BasicBlock", "STAGES"]

# Kaiming-normal, mode fan_out, gain sqrt(2) (torch kaiming_normal_(mode='fan_out', nonlinearity='relu')): a plain
# (untruncated) normal of variance 2 / fan_out, fan_out of an HWIO kernel = H·W·O.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch kaiming_normal_(w) with its defaults (fan_in, leaky_relu a=0 -> gain sqrt(2)): variance 2 / fan_in.
_linear_init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def _conv(cin: int, cout: int, k: int, stride: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
    """torch ``Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)`` with explicit symmetric padding."""
    p = k // 2
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((p, p), (p, p)), use_bias=False,
                    dtype=dtype, param_dtype=param_dtype, kernel_init=_conv_init, rngs=rngs)


class BasicBlock(nnx.Module):
    """conv3×3(stride) → BN → ReLU → conv3×3 → BN, + shortcut, then ReLU (post-activation).

    shortcut = [conv1×1(stride), BN] when stride ≠ 1 or the width changes, else identity (an empty Sequential, as
    the original's ``nn.Sequential()``). x (B,H,W,cin) -> (B,⌈H/stride⌉,⌈W/stride⌉,cout).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, *, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _conv(cin, cout, 3, stride, **kw)
        self.bn1 = BatchNorm(cout, **kw)
        self.conv2 = _conv(cout, cout, 3, 1, **kw)
        self.bn2 = BatchNorm(cout, **kw)
        if stride != 1 or cin != cout:
            self.shortcut = nnx.Sequential(_conv(cin, cout, 1, stride, **kw), BatchNorm(cout, **kw))
        else:
            self.shortcut = nnx.Sequential()

    def __call__(self, x: Array) -> Array:
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return relu(out + self.shortcut(x))


class ResNet18CIFAR(nnx.Module):
    """ResNet-18, CIFAR stem (see the module docstring).

    ``__call__``: x (B,H,W,in_channels) float -> logits (B,num_classes) float32 (float64 for float64 models).
    ``features_map``: x -> layer4's output (B,h,w,512) before pooling (Grad-CAM). ``feature_maps``: the original's
    ``get_feature_maps`` for every index: [stem, layer1, layer2, layer3, layer4] outputs, NHWC.
    ``logits_from_features``: layer4's map -> logits (the head alone). Train/eval: ``model.train()`` (BatchNorm on
    batch statistics, running estimates updated) / ``model.eval()`` (running statistics).
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int = 10, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _conv(in_channels, STEM_CHANNELS, 3, 1, **kw)
        self.bn1 = BatchNorm(STEM_CHANNELS, **kw)
        width = STEM_CHANNELS
        for i, (cout, stride) in enumerate(STAGES, start=1):
            blocks = []
            for b in range(BLOCKS_PER_STAGE):
                blocks.append(BasicBlock(width, cout, stride if b == 0 else 1, **kw))
                width = cout
            setattr(self, f"layer{i}", nnx.Sequential(*blocks))
        self.num_features = width
        head_dtype = jnp.promote_types(dtype, jnp.float32)
        self.fc = nnx.Linear(width, num_classes, dtype=head_dtype, param_dtype=param_dtype, kernel_init=_linear_init,
                             bias_init=nnx.initializers.zeros_init(), rngs=rngs)

    def _check_input(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"ResNet18CIFAR expects NHWC images (B, H, W, {self.in_channels}), got shape "
                             f"{tuple(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"ResNet18CIFAR expects float images, got dtype {x.dtype}; normalise to float first")
        return x.astype(self.dtype) if self.dtype is not None else x

    def _stages(self) -> list[nnx.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def feature_maps(self, x: Array) -> list[Array]:
        """[stem, layer1, layer2, layer3, layer4] outputs (B,h,w,C), NHWC, in the compute dtype."""
        out = [relu(self.bn1(self.conv1(self._check_input(x))))]
        for stage in self._stages():
            out.append(stage(out[-1]))
        return out

    def features_map(self, x: Array) -> Array:
        """x (B,H,W,C_in) -> layer4's map (B,h,w,512) before global average pooling."""
        h = relu(self.bn1(self.conv1(self._check_input(x))))
        for stage in self._stages():
            h = stage(h)
        return h

    def logits_from_features(self, f: Array) -> Array:
        """layer4's map (B,h,w,512) -> logits (B,K): global average pool (float32) -> fc."""
        pooled = global_avg_pool(f.astype(jnp.promote_types(f.dtype, jnp.float32)))
        return self.fc(pooled)

    def __call__(self, x: Array) -> Array:
        """x (B,H,W,C_in) float -> logits (B,num_classes) float32."""
        return self.logits_from_features(self.features_map(x))
