"""The original project's YAML keys (SPEC.md §7), for :mod:`jaxkd.interop.yaml_import`: every key per section, the
ones that only configure PyTorch machinery (with what jaxkd does instead), the forms an augmentation key takes, and
did-you-mean suggestions for a key neither project knows."""

from __future__ import annotations

import difflib

from jaxkd import config as config_lib

__all__ = ["SECTIONS", "TOP_LEVEL", "MODES", "ORIGINAL_KEYS", "NO_EQUIVALENT", "AUG_OPS", "AUG_PARAMS", "LR_PARAMS",
           "DINOV2_WIDTHS", "did_you_mean"]

SECTIONS = ("data", "model", "training", "logging", "vit", "distillation", "ss_distillation")
TOP_LEVEL = ("experiment_name", "seed", "output_dir")
MODES = ("auto", "supervised", "distillation", "ss")

#: Every key of the original project's YAML configs, per section (SPEC.md §7).
ORIGINAL_KEYS: dict[str, tuple[str, ...]] = {
    "": ("experiment_name", "seed", "output_dir", "device", *SECTIONS),
    "data": ("dataset", "batch_size", "data_path", "num_workers", "pin_memory", "persistent_workers",
             "prefetch_factor", "normalization", "augmentation", "image_size"),
    "data.normalization": ("mean", "std"),
    "data.augmentation": ("random_rotation", "random_affine", "randaugment", "randaugment_n", "randaugment_m",
                          "cutout", "random_crop", "random_flip", "color_jitter", "auto_augment", "mixup",
                          "mixup_alpha", "cutmix", "cutmix_alpha", "image_size"),
    "model": ("model_type", "in_channels", "num_classes", "dropout", "use_se", "architecture", "classifier_layers"),
    "training": ("num_epochs", "learning_rate", "weight_decay", "optimizer", "scheduler", "warmup_epochs",
                 "gradient_clip_val", "gradient_accumulation_steps", "use_amp", "amp_backend", "early_stopping",
                 "early_stopping_patience", "early_stopping_min_delta", "lr_scheduler_params", "label_smoothing",
                 "use_swa", "swa_start_epoch", "swa_lr", "use_bf16", "use_compile", "compile_mode",
                 "use_fused_optimizer", "use_tf32"),
    "training.lr_scheduler_params": ("T_max", "eta_min", "step_size", "gamma", "factor", "patience"),
    "logging": ("log_level", "log_dir", "wandb", "wandb_project", "wandb_entity", "save_frequency",
                "track_grad_norm"),
    "vit": ("variant", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_rate",
            "attn_drop_rate", "drop_path_rate", "distillation", "convert_grayscale", "use_conv_stem",
            "cls_token_dropout", "inference_mode"),
    "distillation": ("teacher_checkpoint", "teacher_model_type", "distillation_type", "alpha", "tau",
                     "distillation_warmup_epochs", "alpha_schedule", "alpha_start", "alpha_end"),
    "ss_distillation": ("teacher_type", "teacher_model_name", "token_layers", "projection_dim", "lambda_tok",
                        "token_loss_type", "lambda_rel", "correlation_temperature", "correlation_loss_type",
                        "use_pooled_correlation", "rel_warmup_epochs", "projector_warmup_epochs",
                        # the original's later keys (LATER §5.1) and the teacher width its YAMLs state
                        "use_cka_loss", "lambda_cka", "cka_kernel_type", "cka_warmup_epochs", "use_gram_loss",
                        "lambda_gram", "use_dual_augment", "use_cls_only", "teacher_embed_dim"),
}
#: Token width of each official DINOv2 size (dinov2_vit{s,b,l,g}14[_reg]): the original's ss_distillation.
#: teacher_embed_dim, which jaxkd reads from the teacher's weights instead (checked on import).
DINOV2_WIDTHS = {"s": 384, "b": 768, "l": 1024, "g": 1536}

#: The original's fields that only configure PyTorch machinery: what jaxkd does instead (one note each on import).
NO_EQUIVALENT = {
    "device": "the original's torch device; jaxkd runs on JAX's default backend (a GPU or TPU when jax has one, "
              "JAX_PLATFORMS=cpu for the CPU) and splits each batch over all its local devices",
    "data.num_workers": "DataLoader worker processes; jaxkd needs none: it augments on the device, inside one jitted "
                        "function per batch",
    "data.pin_memory": "DataLoader pinned host memory; jaxkd keeps the dataset on the device as uint8 "
                       "(data.placement=host reads each batch's rows on a background thread instead)",
    "data.persistent_workers": "DataLoader workers kept between epochs; jaxkd has no worker processes",
    "data.prefetch_factor": "DataLoader prefetching; jaxkd dispatches batches asynchronously, the next one prepared "
                            "while a step runs (data.placement=host reads one batch ahead)",
    "training.amp_backend": "torch's AMP backend; jaxkd's mixed precision is training.use_amp with use_bf16 (bf16, "
                            "or fp16 with dynamic loss scaling), compiled by XLA",
    "training.use_compile": "torch.compile; every jaxkd step is compiled by XLA (jax.jit), always, and kept in a "
                            "persistent compilation cache",
    "training.compile_mode": "torch.compile's mode; XLA has no modes (it always compiles with full optimisation)",
    "training.use_fused_optimizer": "fused CUDA optimiser kernels; XLA fuses the optax update into the jitted train "
                                    "step on every platform",
}

DATASET_SOURCES = {"mnist": "tfds:mnist", "cifar": "tfds:cifar10"}
# op -> (field a bare number sets, fields a mapping may give)
AUG_OPS = {
    "random_rotation": ("degrees", ("degrees",)),
    "random_affine": ("translate", ("translate", "degrees", "scale", "shear")),
    "randaugment": (None, ("num_ops", "magnitude")),
    "cutout": ("length", ("length", "n_holes")),
    "random_crop": ("padding", ("padding", "size")),
    "random_flip": (None, ("p",)),
    "color_jitter": ("brightness", ("brightness", "contrast", "saturation", "hue")),
    "auto_augment": (None, ("policy",)),
    "mixup": ("alpha", ("alpha", "prob")),
    "cutmix": ("alpha", ("alpha", "prob")),
}
# the original's flat augmentation keys: key -> (op, field)
AUG_PARAMS = {"randaugment_n": ("randaugment", "num_ops"), "randaugment_m": ("randaugment", "magnitude"),
               "mixup_alpha": ("mixup", "alpha"), "cutmix_alpha": ("cutmix", "alpha")}
LR_PARAMS = ORIGINAL_KEYS["training.lr_scheduler_params"]
EARLY_STOP_ALIASES = {"patience": "patience", "min_delta": "min_delta", "early_stopping_patience": "patience",
                       "early_stopping_min_delta": "min_delta"}
NATIVE_CUTOUT = {"mnist": 8}  # SPEC §5: the original's Cutout is 8 px on MNIST, 16 on CIFAR (jaxkd's default)


def _known_keys() -> list[str]:
    """Every YAML key either project knows (dotted), for did-you-mean suggestions."""
    known = set()
    for path in config_lib.flatten(config_lib.base_config()):
        parts = path.split(".")
        known.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    for section, keys in ORIGINAL_KEYS.items():
        known.update(f"{section}.{k}" if section else k for k in keys)
    return sorted(known)


def did_you_mean(key: str) -> str:
    """The suffix " (did you mean 'KEY'?)" naming the closest key either project knows, or ''."""
    hint = difflib.get_close_matches(key, _known_keys(), n=1, cutoff=0.6)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
