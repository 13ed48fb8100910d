"""Models of SPEC.md §1-2 — the AdaptiveCNN teacher and the DeiT/ViT student —, the later teachers of LATER.md §2
(ResNet-18 with the CIFAR stem, ConvNeXt V2-Tiny with the 2×2 stem) and `build(config, rngs)`."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

from jaxkd import config as config_lib

__all__ = ["build", "cnn_variant", "compute_dtype", "count_params"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(cfg: ConfigDict):
    """The activation dtype a config asks for (parameters stay float32)."""
    return _DTYPES[config_lib.precision(cfg)]


def cnn_variant(cfg: ConfigDict) -> str:
    """'mnist' or 'cifar' AdaptiveCNN: model.cnn_variant, or from the dataset when 'auto'."""
    if cfg.model.cnn_variant != "auto":
        return cfg.model.cnn_variant
    if cfg.data.dataset in ("mnist", "digits"):
        return "mnist"
    if cfg.data.dataset == "cifar":
        return "cifar"
    return "mnist" if cfg.model.in_channels == 1 else "cifar"


def build(cfg: ConfigDict, rngs: nnx.Rngs, *, dtype=None) -> nnx.Module:
    """Builds the model `cfg.model` (and `cfg.vit` for DeiT) describes, freshly initialised."""
    dtype = compute_dtype(cfg) if dtype is None else dtype
    m = cfg.model
    if m.model_type == "adaptive_cnn":
        from jaxkd.models.cnn import AdaptiveCNN

        return AdaptiveCNN(variant=cnn_variant(cfg), in_channels=m.in_channels, num_classes=m.num_classes,
                           head_dropout=m.head_dropout, use_se=m.use_se, dtype=dtype, rngs=rngs)
    if m.model_type == "deit":
        from jaxkd.models.vit import DeiT

        v = cfg.vit
        return DeiT(img_size=v.img_size, patch_size=v.patch_size, in_channels=m.in_channels,
                    num_classes=m.num_classes, embed_dim=v.embed_dim, depth=v.depth, num_heads=v.num_heads,
                    mlp_ratio=v.mlp_ratio, qkv_bias=v.qkv_bias, drop_rate=v.drop_rate,
                    attn_drop_rate=v.attn_drop_rate, drop_path_rate=v.drop_path_rate,
                    distillation=v.distillation, convert_grayscale=v.convert_grayscale,
                    use_conv_stem=v.use_conv_stem, ln_eps=v.ln_eps, inference_mode=v.inference_mode,
                    attention=v.attention, cls_token_dropout=v.cls_token_dropout, dtype=dtype, rngs=rngs)
    if m.model_type == "resnet18_cifar":
        from jaxkd.models.resnet import ResNet18CIFAR

        return ResNet18CIFAR(in_channels=m.in_channels, num_classes=m.num_classes, dtype=dtype, rngs=rngs)
    if m.model_type == "convnext_v2_tiny":
        from jaxkd.models.convnext import ConvNeXtV2

        # (ImageNet weights, model.pretrained_path, are read by the trainer: jaxkd.interop.pretrained)
        return ConvNeXtV2(in_channels=m.in_channels, num_classes=m.num_classes, drop_path_rate=m.drop_path_rate,
                          dtype=dtype, rngs=rngs)
    raise config_lib.ConfigError(f"config field 'model.model_type' = {m.model_type!r}: use one of "
                                 f"{', '.join(config_lib.MODEL_TYPES)}")


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param leaves), as torch's sum(p.numel() for p in parameters())."""
    import jax

    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
