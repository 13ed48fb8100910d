"""DeiT-Tiny (patch 4, MLP 4.0, no conv stem, dist token: 5,365,076 parameters) distilled from the CIFAR-10
ConvNeXt V2-Tiny of configs/cifar_convnextv2.py with soft KD.

The original project's later preset (deit_convnext_distill_config@5608f14, ../shared/spec/LATER.md §5.2): the same
student and recipe as configs/deit_cifar_resnet18.py (200 epochs, AdamW lr 5e-4, soft KD α 0.5, τ 4, 5 warm-up
epochs of KD, SWA from 80 %), only the teacher differs. It reported 90.11 % test accuracy (teacher 93.10 %).

    python -m jaxkd.train --config configs/cifar_convnextv2.py --workdir workdirs/cifar_convnextv2 \\
        --config.model.pretrained_path=weights/convnextv2_tiny.fcmae_ft_in22k_in1k.safetensors
    python -m jaxkd.train --config configs/deit_cifar_convnextv2.py --workdir workdirs/deit_cifar_convnextv2 \\
        --config.distillation.teacher_checkpoint=workdirs/cifar_convnextv2   # or a .pth / .safetensors
    python -m jaxkd.train --config configs/deit_cifar_convnextv2.py:smoke --workdir /tmp/smoke \\
        --config.distillation.teacher_checkpoint=DIR   # 2 steps

Expected: not measured with jaxkd (no GPU run yet; original: 90.11 %).
"""

from deit_cifar_resnet18 import deit_from_teacher, deit_smoke


def get_config(arg=None):
    c = deit_from_teacher("deit_cifar_convnextv2", "cifar_convnextv2", "convnext_v2_tiny")
    if arg == "smoke":
        deit_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
