"""ViT-Tiny without distillation on CIFAR-10 (4,338,346 parameters: conv stem, MLP ratio 2.0, no dist token).

The original project's preset (SPEC §6): 100 epochs, AdamW lr 2e-3, weight decay 0.05, MixUp 0.8 on its CIFAR
pipeline; 1024 per GPU on 2 GPUs, so the global batch here is 2048. It reported 86.02 % test accuracy.

    python -m jaxkd.train --config configs/vit_cifar.py --workdir workdirs/vit_cifar
    python -m jaxkd.train --config configs/vit_cifar.py:smoke --workdir /tmp/smoke   # seconds, CI

Expected: not measured yet with jaxkd (original: 86.02 %; a GPU job).
"""

from jaxkd.config import apply_peer_augmentation, base_config, shared_data

CIFAR = "folder:" + shared_data("cifar10-jpeg.tar.gz")


def vit_cifar_base(distillation: bool):
    c = base_config()
    c.data.dataset, c.data.source = "cifar", "tfds:cifar10"
    c.data.batch_size = 2048
    apply_peer_augmentation(c, "cifar")
    c.data.augmentation.mixup.update(enabled=True, alpha=0.8)
    c.model.model_type, c.model.in_channels, c.model.num_classes = "deit", 3, 10
    c.vit.update(variant="tiny", img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=2.0,
                 use_conv_stem=True, distillation=distillation, drop_path_rate=0.1,
                 inference_mode="avg" if distillation else "cls")
    c.training.num_epochs, c.training.optimizer = 100, "adamw"
    c.training.learning_rate, c.training.weight_decay = 2e-3, 0.05
    return c


def smoke(c):
    c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = CIFAR, 8, 32, 16
    c.vit.depth = 2
    c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
    c.training.use_swa = False
    return c


def get_config(arg=None):
    c = vit_cifar_base(distillation=False)
    c.experiment_name = "vit_cifar"
    if arg == "smoke":
        smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
