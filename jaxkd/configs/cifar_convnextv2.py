"""ConvNeXt V2-Tiny with the 2×2 stem (27,870,730 parameters) on CIFAR-10, from ImageNet weights -- the teacher for
deit_cifar_convnextv2.

The original project's later preset (convnext_v2_cifar_config@5608f14, ../shared/spec/LATER.md §5.2): timm's
ImageNet convnextv2_tiny with its stem replaced by Conv 2×2/s2 + LayerNorm2d and a new 10-class head (§2.2),
drop path 0.1; 100 epochs, AdamW lr 1e-3, weight decay 0.05, cosine to 1e-6 (T_max 100) after a 5-epoch warm-up,
SWA from 75 % at lr 1e-4, early stopping after 15 epochs, label smoothing 0.1, clipping 1.0; the same augmentation
as cifar_resnet18 (crop, flip, AutoAugment, Cutout 16, CutMix α 1). Its batch was 512 per GPU on 2 GPUs (global
1024 here); it ran in bf16 (--config.training.use_amp=true). It reported 93.10 % test accuracy.

The ImageNet weights are timm's file, given by path (nothing is downloaded): `model.safetensors` of the Hugging Face
hub's timm/convnextv2_tiny.fcmae_ft_in22k_in1k (timm's default tag for the name, which the original used). Give
--config.model.pretrained_path='' to start from random weights.

    python -m jaxkd.train --config configs/cifar_convnextv2.py --workdir workdirs/cifar_convnextv2 \\
        --config.model.pretrained_path=weights/convnextv2_tiny.fcmae_ft_in22k_in1k.safetensors
    python -m jaxkd.train --config configs/cifar_convnextv2.py:smoke --workdir /tmp/smoke   # 2 steps, random init

Expected: not measured with jaxkd (no GPU run yet; original: 93.10 %).
"""

from cifar_resnet18 import teacher_augmentation, teacher_smoke

from jaxkd.config import base_config


def get_config(arg=None):
    c = base_config()
    c.experiment_name = "cifar_convnextv2"
    c.data.dataset, c.data.source = "cifar", "tfds:cifar10"
    c.data.batch_size = 1024
    teacher_augmentation(c)
    c.model.model_type, c.model.in_channels, c.model.num_classes = "convnext_v2_tiny", 3, 10
    c.model.drop_path_rate = 0.1
    c.model.pretrained_path = "weights/convnextv2_tiny.fcmae_ft_in22k_in1k.safetensors"
    t = c.training
    t.num_epochs, t.optimizer, t.learning_rate, t.weight_decay = 100, "adamw", 1e-3, 0.05
    t.scheduler, t.warmup_epochs = "cosine", 5
    t.lr_scheduler_params.update(T_max=100, eta_min=1e-6)
    t.use_swa, t.swa_start_epoch, t.swa_lr = True, 0.75, 1e-4
    t.early_stopping.update(enabled=True, patience=15, min_delta=1e-3)
    t.label_smoothing, t.gradient_clip_val = 0.1, 1.0
    if arg == "smoke":
        teacher_smoke(c)
        c.model.pretrained_path = ""  # (tests give a timm-layout file of random weights where they need one)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
