"""The config schema: every field with its default (base_config) and the value rules that validate() applies.

Field names and defaults follow the original project (SPEC.md §7); jaxkd's own fields are marked "jaxkd:".
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from jaxkd.errors import JaxkdError

VIT_VARIANTS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
# Native image shape (H, W, C) of the datasets jaxkd knows by name; 'custom' takes it from the data.
DATASET_SHAPES = {"mnist": (28, 28, 1), "cifar": (32, 32, 3), "digits": (8, 8, 1)}
SOURCE_KINDS = ("tfds:", "npz:", "npy:", "mnist-idx:", "cifar-python:", "folder:", "digits")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # logging.log_level, the original's Python logging levels
# model.model_type / distillation.teacher_model_type: the seed's two models and LATER.md §2's teachers
MODEL_TYPES = ("adaptive_cnn", "deit", "resnet18_cifar", "convnext_v2_tiny")
DINOV2_MODELS = tuple(f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")) + ("dinov2_custom",)


class ConfigError(JaxkdError, ValueError):
    """A config that cannot run: the message names the field, the value and what is allowed."""


def _section(**fields: Any) -> ConfigDict:
    return ConfigDict(fields)


def base_config() -> ConfigDict:
    """Every config field with its default; presets start here. Unlocked so presets can edit it freely."""
    aug = _section(
        random_rotation=_section(enabled=False, degrees=10.0),
        random_affine=_section(enabled=False, translate=0.1),
        randaugment=_section(enabled=False, num_ops=2, magnitude=9),
        cutout=_section(enabled=False, length=16),
        random_crop=_section(enabled=False, padding=4),
        random_flip=_section(enabled=False),
        color_jitter=_section(enabled=False, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
        auto_augment=_section(enabled=False, policy="cifar10"),
        mixup=_section(enabled=False, alpha=1.0),
        cutmix=_section(enabled=False, alpha=1.0),
        mix_mode="sample",  # jaxkd: 'sample' (per sample, as the original) | 'batch'
        mix_prob=1.0,  # jaxkd: probability of mixing a sample (or the batch)
        switch_prob=0.5,  # jaxkd: P(cutmix) when both mixup and cutmix are enabled
        teacher_view="student",  # jaxkd: 'student' (augmented batch, as the original) | 'clean' (dual view)
    )
    data = _section(
        dataset="cifar",  # mnist | cifar | digits | custom
        # jaxkd: tfds:NAME | npz:PATH | npy:DIR | mnist-idx:DIR | cifar-python:PATH | folder:PATH | digits
        source="tfds:cifar10",
        data_dir="",  # jaxkd: TFDS data_dir / manual dir ('' = TFDS default). The original's data_path.
        batch_size=64,  # jaxkd: the GLOBAL batch (the original's was per device)
        eval_batch_size=0,  # jaxkd: 0 = batch_size
        val_size=5000,  # jaxkd: examples held out from train for validation (the original validated on test)
        image_size=0,  # 0 = the source's native size (the original: 224, custom datasets only)
        max_examples=0,  # jaxkd: 0 = all; > 0 caps each split (train, val, test) deterministically (smoke runs)
        placement="auto",  # jaxkd: device (uint8 copy on every device) | host (rows read per batch) | auto (by size)
        normalization=_section(mean=[], std=[]),  # [] = per-dataset default (SPEC §5), else computed from train split
        augmentation=aug,
    )
    model = _section(
        model_type="adaptive_cnn",  # adaptive_cnn | deit | resnet18_cifar | convnext_v2_tiny
        in_channels=3,
        num_classes=10,
        dropout=0.5,  # kept for YAML compatibility: the original's forward never used it (head_dropout does)
        head_dropout=0.3,  # jaxkd: the CNN classifier's Dropout (hard-coded 0.3 in the original)
        use_se=True,
        cnn_variant="auto",  # jaxkd: auto (from data.dataset) | mnist | cifar
        drop_path_rate=0.0,  # the original's later key (LATER §5.1): convnext_v2_tiny's stochastic depth (max rate)
        # jaxkd: convnext_v2_tiny from ImageNet weights: timm's convnextv2_tiny file (.safetensors or .pth, timm's
        # key layout), read at the start of training, never downloaded; the stem is replaced and the head
        # re-initialised (the original's `pretrained: true`). '' = random initialisation.
        pretrained_path="",
    )
    training = _section(
        num_epochs=10,
        learning_rate=1e-3,
        weight_decay=5e-4,
        optimizer="adamw",  # adam | adamw | sgd | rmsprop
        momentum=0.9,  # jaxkd: sgd / rmsprop momentum (the original hard-coded 0.9)
        nesterov=True,  # jaxkd: sgd Nesterov (the original's CIFAR CNN used it)
        scheduler="cosine",  # cosine | step | exponential | plateau | constant
        schedule_unit="epoch",  # jaxkd: epoch (as the original) | step
        warmup_epochs=5,
        gradient_clip_val=1.0,  # 0 = no clipping
        skip_nonfinite_updates=0,  # jaxkd: 0 = a non-finite gradient stops the run; N = skip up to N in a row
        gradient_accumulation_steps=1,
        use_amp=False,  # jaxkd default False (original True): fp32 unless asked; with use_bf16 -> bf16 else fp16
        use_bf16=True,
        use_tf32=False,
        early_stopping=_section(enabled=True, patience=10, min_delta=1e-3),
        lr_scheduler_params=_section(T_max=0, eta_min=0.0, step_size=30, gamma=0.1, factor=0.1, patience=5),
        label_smoothing=0.1,
        use_swa=True,
        swa_start_epoch=0.75,  # a fraction of num_epochs
        swa_lr=5e-4,
        weight_decay_mask="all",  # jaxkd: all (as the original) | deit (no decay on biases, norms, tokens, pos_embed)
        ema=_section(enabled=False, decay=0.9999),  # jaxkd
        max_steps_per_epoch=0,  # jaxkd: 0 = full epochs; > 0 caps an epoch (smoke runs)
        log_every_steps=50,  # jaxkd: host sync interval for metrics / progress bar
        eval_every_epochs=1,  # jaxkd
    )
    logging = _section(
        log_level="INFO",  # DEBUG (INFO + each XLA compilation) | INFO | WARNING (notes only) | ERROR (errors only)
        log_dir="",  # '' = WORKDIR/tensorboard and WORKDIR/wandb; else LOG_DIR/<workdir's name> and LOG_DIR/wandb
        tensorboard=True,  # jaxkd: TensorBoard event files of every scalar, the config, images (process 0)
        profile_steps=[],  # jaxkd: [start, stop]: a jax.profiler trace of training steps start..stop-1 (1-based)
        wandb=False,  # Weights & Biases (extra .[wandb]): offline unless WANDB_MODE says otherwise (process 0)
        wandb_project="adaptive-cnn",  # the W&B project
        wandb_entity="",  # the W&B team or user; '' = W&B's default
        save_frequency=5, keep_checkpoints=3, progress_bar=True,
        track_grad_norm=True,  # the global gradient norm (before clipping) in metrics.jsonl as grad_norm
    )
    vit = _section(
        variant="tiny",  # tiny | small | base | custom (custom: embed_dim / num_heads as given)
        img_size=32,
        patch_size=4,
        embed_dim=192,
        depth=12,
        num_heads=3,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        distillation=True,
        convert_grayscale=True,
        use_conv_stem=False,
        cls_token_dropout=0.0,  # train only: p of replacing a sample's cls token by its patch-token mean (SPEC §7)
        inference_mode="avg",  # cls | dist | avg
        ln_eps=1e-5,  # jaxkd: the original's nn.LayerNorm default (DeiT/timm use 1e-6)
        attention="auto",  # jaxkd: auto | fused | cudnn | plain
    )
    distillation = _section(
        enabled=False,  # jaxkd: CNN -> DeiT distillation on/off
        teacher_checkpoint="",
        teacher_model_type="adaptive_cnn",
        distillation_type="hard",  # hard | soft
        alpha=0.5,
        tau=3.0,
        distillation_warmup_epochs=0,
        alpha_schedule="constant",  # constant | linear | cosine
        alpha_start=0.0,
        alpha_end=0.5,
        kd_normalize="batch",  # jaxkd: batch (SPEC) | element (DeiT's code: / (B*K))
        teacher_dtype="auto",  # jaxkd: auto (as the teacher was trained) | float32 | bfloat16 (parameters and compute)
    )
    ss_distillation = _section(
        enabled=False,  # jaxkd: self-supervised token distillation on/off
        teacher_type="dinov2",  # dinov2 | jaxkd (a ViT/DeiT trained by jaxkd)
        teacher_model_name="dinov2_vits14",
        teacher_checkpoint="",  # jaxkd: the official weight file (dinov2_vits14_pretrain.pth) or a jaxkd workdir
        teacher_num_heads=0,  # jaxkd: heads of a 'dinov2_custom' teacher (its other sizes are read from the file)
        teacher_img_size=224,  # jaxkd
        # jaxkd: imagenet (DINOv2's own) | dataset (the original used CIFAR stats). DINOv2 teachers only: a jaxkd
        # ViT teacher always sees its own training statistics (its data.json).
        teacher_normalization="imagenet",
        token_layers=[6, 11],
        projection_dim=256,
        projection_hidden_dim=512,  # jaxkd
        lambda_tok=1.0,
        token_loss_type="cosine",  # cosine | mse | cka_linear | cka_rbf | gram
        lambda_rel=0.1,
        correlation_temperature=0.1,
        correlation_loss_type="kl",  # kl | frobenius
        use_pooled_correlation=True,
        correlation_full_reduction="row_mean",  # jaxkd: row_mean | peer_batchmean (the original's N x row mean)
        rel_warmup_epochs=10,
        projector_warmup_epochs=0,
        teacher_projector="trainable",  # jaxkd: trainable (as the original) | frozen | identity
        teacher_dtype="auto",  # jaxkd: auto (the student's compute dtype, fp32 parameters) | float32 | bfloat16
        # The original's later keys (LATER §5.1): structural losses on the token_layers (jaxkd.losses.structural),
        # with their own projectors, and the CLS-only mode.
        use_cka_loss=False,
        lambda_cka=0.5,
        cka_kernel_type="linear",  # linear | rbf (also in CLS-only batch mode, where the original used linear)
        cka_warmup_epochs=5,  # λ_cka(e) and λ_gram(e) are 0 for e < this
        use_gram_loss=False,
        lambda_gram=0.5,
        use_cls_only=False,  # class tokens per layer (L_tok, L_rel, CKA / Gram across the batch) instead of patches
        # jaxkd: identity (raw teacher tokens) | frozen (a fixed random projector) | trainable (as the original)
        structural_teacher_projector="identity",
        structural_weights="separate",  # jaxkd: separate (λ_gram its own) | coupled (as the original: λ_cka for both)
        cka_rbf_bandwidth="median_offdiag",  # jaxkd: median_offdiag | median_all (the diagonal too, as the original)
        gram_norm="squared",  # jaxkd: squared (‖ΔG‖²_F / N²) | frobenius (‖ΔG‖_F / N², as the original)
    )
    return ConfigDict(dict(
        experiment_name="default", seed=42, output_dir="./outputs",
        data=data, model=model, training=training, logging=logging, vit=vit,
        distillation=distillation, ss_distillation=ss_distillation,
    ))


# ----------------------------------------------------------------------------------------------------------------
# Validation rules: path -> check(value, cfg) returning an error text (what is allowed) or None.

def _choice(*allowed: str) -> Callable:
    return lambda v, c: None if v in allowed else f"must be one of {', '.join(map(repr, allowed))}"


def _rng(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    def check(v, c):
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                return "must be finite"
            if lo is not None and (x < lo or (lo_open and x == lo)):
                break
            if hi is not None and (x > hi or (hi_open and x == hi)):
                break
        else:
            return None
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        return f"must be in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    return check


def _source(v, c):
    kind, colon, arg = v.partition(":")
    if v == "digits" or (colon and f"{kind}:" in SOURCE_KINDS and arg):
        return None
    return "must be 'digits' or one of " + ", ".join(f"'{k}...'" for k in SOURCE_KINDS if k.endswith(":"))


A = "data.augmentation."
RULES: dict[str, Callable] = {
    "seed": _rng(0),
    "data.dataset": _choice("mnist", "cifar", "digits", "custom"),
    "data.source": _source,
    "data.batch_size": _rng(1),
    "data.eval_batch_size": _rng(0),
    "data.val_size": _rng(0),
    "data.image_size": _rng(0),
    "data.max_examples": _rng(0),
    "data.placement": _choice("auto", "device", "host"),
    "data.normalization.std": lambda v, c: None if all(x > 0 for x in v) else "must be > 0",
    "data.normalization.mean": lambda v, c: (
        None if len(v) == len(c.data.normalization.std) else "must have as many entries as data.normalization.std"),
    A + "random_rotation.degrees": _rng(0, 180),
    A + "random_affine.translate": _rng(0, 1, hi_open=True),
    A + "randaugment.num_ops": _rng(0, 14),
    A + "randaugment.magnitude": _rng(0, 30),
    A + "cutout.length": lambda v, c: _rng(0)(v, c) or (
        "must be >= 1 when data.augmentation.cutout.enabled" if c.data.augmentation.cutout.enabled and v < 1 else None),
    A + "random_crop.padding": _rng(0),
    A + "color_jitter.brightness": _rng(0),
    A + "color_jitter.contrast": _rng(0),
    A + "color_jitter.saturation": _rng(0),
    A + "color_jitter.hue": _rng(0, 0.5),
    A + "auto_augment.policy": _choice("cifar10"),
    A + "mixup.alpha": _rng(0, lo_open=True),
    A + "cutmix.alpha": _rng(0, lo_open=True),
    A + "mix_mode": _choice("sample", "batch"),
    A + "mix_prob": _rng(0, 1),
    A + "switch_prob": _rng(0, 1),
    A + "teacher_view": _choice("student", "clean"),
    "model.model_type": _choice(*MODEL_TYPES),
    "model.in_channels": _rng(1),
    "model.num_classes": _rng(2),
    "model.dropout": _rng(0, 1, hi_open=True),
    "model.head_dropout": _rng(0, 1, hi_open=True),
    "model.cnn_variant": _choice("auto", "mnist", "cifar"),
    "model.drop_path_rate": _rng(0, 1, hi_open=True),
    "model.pretrained_path": lambda v, c: (
        None if not v or c.model.model_type == "convnext_v2_tiny" else
        f"is for model.model_type convnext_v2_tiny (ImageNet weights), not {c.model.model_type!r}: leave it empty"),
    "training.num_epochs": _rng(1),
    "training.learning_rate": _rng(0, lo_open=True),
    "training.weight_decay": _rng(0),
    "training.optimizer": _choice("adam", "adamw", "sgd", "rmsprop"),
    "training.momentum": _rng(0, 1, hi_open=True),
    "training.scheduler": _choice("cosine", "step", "exponential", "plateau", "constant"),
    "training.schedule_unit": _choice("epoch", "step"),
    "training.warmup_epochs": lambda v, c: (
        None if 0 <= v < c.training.num_epochs else f"must be in [0, training.num_epochs = {c.training.num_epochs})"),
    "training.gradient_clip_val": _rng(0),
    "training.skip_nonfinite_updates": _rng(0),
    "training.gradient_accumulation_steps": _rng(1),
    "training.early_stopping.patience": _rng(1),
    "training.early_stopping.min_delta": _rng(0),
    "training.lr_scheduler_params.T_max": _rng(0),
    "training.lr_scheduler_params.eta_min": _rng(0),
    "training.lr_scheduler_params.step_size": _rng(1),
    "training.lr_scheduler_params.gamma": _rng(0, 1, lo_open=True),
    "training.lr_scheduler_params.factor": _rng(0, 1, lo_open=True, hi_open=True),
    "training.lr_scheduler_params.patience": _rng(0),
    "training.label_smoothing": _rng(0, 1, hi_open=True),
    "training.swa_start_epoch": _rng(0, 1, lo_open=True),
    "training.swa_lr": _rng(0, lo_open=True),
    "training.weight_decay_mask": _choice("all", "deit"),
    "training.ema.decay": _rng(0, 1, lo_open=True, hi_open=True),
    "training.max_steps_per_epoch": _rng(0),
    "training.log_every_steps": _rng(1),
    "training.eval_every_epochs": _rng(1),
    "logging.profile_steps": lambda v, c: (
        None if v == [] or (len(v) == 2 and all(float(x).is_integer() for x in v) and 1 <= v[0] < v[1]) else
        "must be [] (no profile) or [start, stop] with 1 <= start < stop: the training steps start..stop-1 "
        "(1-based) are traced"),
    "logging.log_level": _choice(*LOG_LEVELS),
    "logging.wandb_project": lambda v, c: (
        None if v.strip() or not c.logging.wandb else "must name a W&B project when logging.wandb is true"),
    "logging.save_frequency": _rng(1),
    "logging.keep_checkpoints": _rng(1),
    "vit.variant": _choice("tiny", "small", "base", "custom"),
    "vit.img_size": _rng(1),
    "vit.patch_size": lambda v, c: (
        None if v >= 1 and c.vit.img_size % v == 0 else
        f"must divide vit.img_size = {c.vit.img_size} (allowed: "
        f"{', '.join(str(d) for d in range(1, c.vit.img_size + 1) if c.vit.img_size % d == 0)})"),
    "vit.embed_dim": _rng(1),
    "vit.depth": _rng(1),
    "vit.num_heads": lambda v, c: (
        None if v >= 1 and c.vit.embed_dim % v == 0 else
        f"must divide vit.embed_dim = {c.vit.embed_dim} (allowed: "
        f"{', '.join(str(d) for d in range(1, min(c.vit.embed_dim, 64) + 1) if c.vit.embed_dim % d == 0)})"),
    "vit.mlp_ratio": _rng(0, lo_open=True),
    "vit.drop_rate": _rng(0, 1, hi_open=True),
    "vit.attn_drop_rate": _rng(0, 1, hi_open=True),
    "vit.drop_path_rate": _rng(0, 1, hi_open=True),
    "vit.cls_token_dropout": _rng(0, 1, hi_open=True),
    "vit.inference_mode": lambda v, c: (
        _choice("cls", "dist", "avg")(v, c) or
        (None if v == "cls" or c.vit.distillation else "needs vit.distillation = true (a dist token); use 'cls'")),
    "vit.ln_eps": _rng(0, lo_open=True),
    "vit.attention": _choice("auto", "fused", "cudnn", "plain"),
    "distillation.teacher_model_type": _choice(*MODEL_TYPES),
    "distillation.distillation_type": _choice("hard", "soft"),
    "distillation.alpha": _rng(0, 1),
    "distillation.tau": _rng(0, lo_open=True),
    "distillation.distillation_warmup_epochs": _rng(0),
    "distillation.alpha_schedule": _choice("constant", "linear", "cosine"),
    "distillation.alpha_start": _rng(0, 1),
    "distillation.alpha_end": _rng(0, 1),
    "distillation.kd_normalize": _choice("batch", "element"),
    "distillation.teacher_dtype": _choice("auto", "float32", "bfloat16"),
    "ss_distillation.teacher_type": _choice("dinov2", "jaxkd"),
    "ss_distillation.teacher_model_name": _choice(*DINOV2_MODELS),
    "ss_distillation.teacher_img_size": _rng(1),
    "ss_distillation.teacher_num_heads": _rng(0),
    "ss_distillation.teacher_normalization": _choice("imagenet", "dataset"),
    "ss_distillation.token_layers": lambda v, c: (
        None if not c.ss_distillation.enabled or (v and all(0 <= i < c.vit.depth for i in v)) else
        f"must be a non-empty list of block indices in [0, vit.depth = {c.vit.depth})"),
    "ss_distillation.projection_dim": _rng(1),
    "ss_distillation.projection_hidden_dim": _rng(1),
    "ss_distillation.lambda_tok": _rng(0),
    "ss_distillation.token_loss_type": _choice("cosine", "mse", "cka_linear", "cka_rbf", "gram"),
    "ss_distillation.lambda_rel": _rng(0),
    "ss_distillation.correlation_temperature": _rng(0, lo_open=True),
    "ss_distillation.correlation_loss_type": _choice("kl", "frobenius"),
    "ss_distillation.correlation_full_reduction": _choice("row_mean", "peer_batchmean"),
    "ss_distillation.rel_warmup_epochs": _rng(0),
    "ss_distillation.projector_warmup_epochs": _rng(0),
    "ss_distillation.teacher_projector": _choice("trainable", "frozen", "identity"),
    "ss_distillation.teacher_dtype": _choice("auto", "float32", "bfloat16"),
    "ss_distillation.lambda_cka": _rng(0),
    "ss_distillation.cka_kernel_type": _choice("linear", "rbf"),
    "ss_distillation.cka_warmup_epochs": _rng(0),
    "ss_distillation.lambda_gram": _rng(0),
    "ss_distillation.structural_teacher_projector": _choice("identity", "frozen", "trainable"),
    "ss_distillation.structural_weights": _choice("separate", "coupled"),
    "ss_distillation.cka_rbf_bandwidth": _choice("median_offdiag", "median_all"),
    "ss_distillation.gram_norm": _choice("squared", "frobenius"),
}


_IMAGE_OPS = ("random_crop", "random_flip", "random_rotation", "random_affine", "color_jitter", "auto_augment",
              "randaugment", "cutout")

# SPEC §5 peer pipelines: per-image ops (all others disabled by apply_peer_pipeline); MixUp/CutMix per sample.
PEER_PIPELINES: dict[str, dict[str, Any]] = {
    "mnist": {
        "random_rotation": {"enabled": True, "degrees": 10.0},
        "random_affine": {"enabled": True, "translate": 0.1},
        "randaugment": {"enabled": True, "num_ops": 2, "magnitude": 9},
        "cutout": {"enabled": True, "length": 8},
        "mix_mode": "sample",
    },
    "cifar": {
        "random_crop": {"enabled": True, "padding": 4},
        "random_flip": {"enabled": True},
        "color_jitter": {"enabled": True, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
        "auto_augment": {"enabled": True, "policy": "cifar10"},
        "randaugment": {"enabled": True, "num_ops": 2, "magnitude": 9},
        "cutout": {"enabled": True, "length": 16},
        "mix_mode": "sample",
    },
}


def apply_peer_pipeline(aug_cfg: Any, name: str) -> Any:
    """Fill ``config.data.augmentation`` (ConfigDict or nested dict, edited in place and returned) with the peer
    pipeline ``name`` ('mnist' | 'cifar'): its ops enabled with the peer's settings, the other per-image ops
    disabled; mixup / cutmix settings are left as they are (they belong to the training preset)."""
    if name not in PEER_PIPELINES:
        raise ConfigError(f"unknown peer pipeline {name!r}: choose one of {', '.join(PEER_PIPELINES)}")
    for op in _IMAGE_OPS:
        aug_cfg[op]["enabled"] = False
    for key, value in PEER_PIPELINES[name].items():
        if isinstance(value, dict):
            for field, v in value.items():
                aug_cfg[key][field] = v
        else:
            aug_cfg[key] = value
    return aug_cfg


def apply_peer_augmentation(cfg: ConfigDict, name: str) -> ConfigDict:
    """Sets cfg.data.augmentation to the original project's training pipeline 'mnist' or 'cifar' (SPEC §5)."""
    if name not in PEER_PIPELINES:
        raise ConfigError(f"unknown peer pipeline {name!r}: choose one of {', '.join(PEER_PIPELINES)}")
    apply_peer_pipeline(cfg.data.augmentation, name)
    return cfg


def shared_data(name: str) -> str:
    """Path of a file in the project's shared data folder: $JAXKD_SHARED_DATA, else <repo>/../shared/data."""
    env = os.environ.get("JAXKD_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return str(root / name)


def image_shape(cfg: ConfigDict) -> tuple[int, int, int] | None:
    """(H, W, C) the model sees, when the config fixes it (data.image_size or a named dataset), else None."""
    shape = DATASET_SHAPES.get(cfg.data.dataset)
    if cfg.data.image_size:
        c = shape[2] if shape else cfg.model.in_channels
        return (cfg.data.image_size, cfg.data.image_size, c)
    return shape


def precision(cfg: ConfigDict) -> str:
    """'float32', 'bfloat16' or 'float16' from the original's use_amp / use_bf16 pair."""
    if not cfg.training.use_amp:
        return "float32"
    return "bfloat16" if cfg.training.use_bf16 else "float16"


def _cross_checks(cfg: ConfigDict) -> Iterable[str]:
    """Rules that tie sections together; yields one message per problem."""
    shape = image_shape(cfg)
    if shape is not None and cfg.model.in_channels != shape[2]:
        yield (f"config field 'model.in_channels' = {cfg.model.in_channels} does not match data.dataset "
               f"'{cfg.data.dataset}' ({shape[2]} channels): set --config.model.in_channels={shape[2]}")
    if cfg.model.model_type == "deit" and shape is not None and cfg.vit.img_size != shape[0]:
        yield (f"config field 'vit.img_size' = {cfg.vit.img_size} does not match the {cfg.data.dataset} images "
               f"({shape[0]} px): set --config.vit.img_size={shape[0]}")
    convnext = [f for f, on in (("model.model_type", cfg.model.model_type == "convnext_v2_tiny"),
                                ("distillation.teacher_model_type", cfg.distillation.enabled
                                 and cfg.distillation.teacher_model_type == "convnext_v2_tiny")) if on]
    if convnext and shape is not None and min(shape[:2]) < 16:
        yield (f"config field '{convnext[0]}' = 'convnext_v2_tiny' needs images of at least 16 px (its stem and "
               f"three downsamples halve them four times), but the {cfg.data.dataset} images are {shape[0]} px: "
               "use resnet18_cifar or adaptive_cnn, or set --config.data.image_size=32")
    if cfg.vit.variant != "custom":
        dims = VIT_VARIANTS[cfg.vit.variant]
        if (cfg.vit.embed_dim, cfg.vit.num_heads) != dims:
            yield (f"config fields 'vit.embed_dim' / 'vit.num_heads' = {cfg.vit.embed_dim} / {cfg.vit.num_heads} "
                   f"contradict vit.variant '{cfg.vit.variant}' ({dims[0]} / {dims[1]}): use vit.variant=custom")
    if cfg.distillation.enabled and cfg.ss_distillation.enabled:
        yield "config fields 'distillation.enabled' and 'ss_distillation.enabled' are both true: choose one mode"
    if cfg.distillation.enabled or cfg.ss_distillation.enabled:
        if cfg.model.model_type != "deit":
            yield "distillation trains a DeiT student: set --config.model.model_type=deit"
    if cfg.ss_distillation.enabled:
        ss = cfg.ss_distillation
        if ss.teacher_model_name == "dinov2_custom" and ss.teacher_num_heads < 1:
            yield "a 'dinov2_custom' teacher needs --config.ss_distillation.teacher_num_heads (its attention heads)"
        if ss.teacher_type == "dinov2" and ss.teacher_img_size % 14:
            yield (f"config field 'ss_distillation.teacher_img_size' = {ss.teacher_img_size} must be a multiple of "
                   "the DINOv2 patch size 14 (e.g. 224)")
        if ss.use_cls_only and ss.token_loss_type not in ("cosine", "mse"):
            yield (f"config field 'ss_distillation.token_loss_type' = {ss.token_loss_type!r} compares the tokens of "
                   "an image with each other, but use_cls_only gives one (class) token per image: use "
                   "--config.ss_distillation.token_loss_type=cosine (or mse), or use_cls_only=false")
        if ss.use_cls_only and not ss.use_pooled_correlation:
            yield ("config field 'ss_distillation.use_pooled_correlation' = false correlates the tokens of an image "
                   "(N x N), but use_cls_only gives one token per image (a 1 x 1 correlation, L_rel always 0): set "
                   "--config.ss_distillation.use_pooled_correlation=true (the B x B correlation of class tokens)")
    if cfg.distillation.enabled:
        if not cfg.distillation.teacher_checkpoint:
            yield ("config field 'distillation.teacher_checkpoint' is empty: give a jaxkd workdir, checkpoint or "
                   ".pth file of the teacher")
        if not cfg.vit.distillation:
            yield "CNN -> DeiT distillation needs the dist token: set --config.vit.distillation=true"
        if cfg.distillation.distillation_warmup_epochs >= cfg.training.num_epochs:
            yield (f"config field 'distillation.distillation_warmup_epochs' = "
                   f"{cfg.distillation.distillation_warmup_epochs} must be < training.num_epochs")
    if cfg.training.optimizer in ("sgd", "rmsprop") and cfg.training.weight_decay_mask not in ("all", "deit"):
        yield "config field 'training.weight_decay_mask' must be 'all' or 'deit'"
    if cfg.data.eval_batch_size == 0 and cfg.data.batch_size <= 0:
        yield "config field 'data.batch_size' must be >= 1"

