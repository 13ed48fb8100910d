"""DeiT-Tiny (patch 4, MLP 4.0, no conv stem, dist token: 5,365,076 parameters) distilled from the CIFAR-10
ResNet-18 of configs/cifar_resnet18.py with soft KD.

The original project's later preset (deit_resnet18_distill_config@5608f14, ../shared/spec/LATER.md §5.2): DeiT-Tiny
32/4, width 192, depth 12, 3 heads, MLP ratio 4.0, drop path 0.1, distillation token, inference averaging both
heads; 200 epochs, AdamW lr 5e-4, weight decay 0.05, cosine to 1e-6 (T_max 200) after a 10-epoch warm-up, SWA from
80 % at lr 1e-4; soft KD, α 0.5 constant, τ 4, α 0 for the first 5 epochs (distillation warm-up); label smoothing
0.1, clipping 1.0. Its batch was 1024 per GPU on 2 GPUs, so the global batch here is 2048; bf16 in the original.
Augmentation: that YAML was deleted (c00bdbb) before the history this is read from; LATER.md §7.3 gives the EXP-1/2
recipe as AutoAugment + CutMix, and the teachers' pipeline (crop, flip, AutoAugment, Cutout 16, CutMix α 1) is used.
It reported 90.05 % test accuracy (teacher 95.10 %).

    python -m jaxkd.train --config configs/cifar_resnet18.py --workdir workdirs/cifar_resnet18
    python -m jaxkd.train --config configs/deit_cifar_resnet18.py --workdir workdirs/deit_cifar_resnet18 \\
        --config.distillation.teacher_checkpoint=workdirs/cifar_resnet18     # or the original's best_model.pth
    python -m jaxkd.train --config configs/deit_cifar_resnet18.py:smoke --workdir /tmp/smoke \\
        --config.distillation.teacher_checkpoint=DIR   # 2 steps, CI

Expected: not measured with jaxkd (no GPU run yet; original: 90.05 %).
"""

from cifar_resnet18 import CIFAR, teacher_augmentation

from jaxkd.config import base_config


def deit_from_teacher(name: str, teacher_preset: str, teacher_model_type: str):
    """The later DeiT-Tiny soft-KD recipe of LATER.md §5.2 with the teacher of ``teacher_preset``."""
    c = base_config()
    c.experiment_name = name
    c.data.dataset, c.data.source = "cifar", "tfds:cifar10"
    c.data.batch_size = 2048
    teacher_augmentation(c)
    c.model.model_type, c.model.in_channels, c.model.num_classes = "deit", 3, 10
    c.vit.update(variant="tiny", img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
                 use_conv_stem=False, distillation=True, drop_path_rate=0.1, inference_mode="avg")
    t = c.training
    t.num_epochs, t.optimizer, t.learning_rate, t.weight_decay = 200, "adamw", 5e-4, 0.05
    t.scheduler, t.warmup_epochs = "cosine", 10
    t.lr_scheduler_params.update(T_max=200, eta_min=1e-6)
    t.use_swa, t.swa_start_epoch, t.swa_lr = True, 0.8, 1e-4
    t.label_smoothing, t.gradient_clip_val = 0.1, 1.0
    c.distillation.update(enabled=True, teacher_checkpoint=f"workdirs/{teacher_preset}",
                          teacher_model_type=teacher_model_type, distillation_type="soft", alpha=0.5, tau=4.0,
                          alpha_schedule="constant", distillation_warmup_epochs=5)
    return c


def deit_smoke(c):
    c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = CIFAR, 8, 32, 16
    c.vit.depth = 2
    c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
    c.training.use_swa = False
    c.distillation.distillation_warmup_epochs = 0
    return c


def get_config(arg=None):
    c = deit_from_teacher("deit_cifar_resnet18", "cifar_resnet18", "resnet18_cifar")
    if arg == "smoke":
        deit_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
