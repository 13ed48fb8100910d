"""ResNet-18 with the CIFAR stem (11,173,962 parameters) on CIFAR-10 -- the teacher for deit_cifar_resnet18.

The original project's later preset (resnet18_cifar_config@5608f14, ../shared/spec/LATER.md §5.2): 200 epochs, SGD
with Nesterov momentum 0.9, lr 0.1, weight decay 5e-4, cosine to 1e-5 (T_max 200) after a 5-epoch warm-up, SWA
from 75 % of the run at lr 1e-3, early stopping after 20 epochs without improvement, label smoothing 0.1, clipping
1.0; augmentation random crop (pad 4), flip, AutoAugment (CIFAR-10 policy), Cutout 16 px, CutMix α 1. Its batch
was 512 per GPU on 2 GPUs, so the global batch here is 1024. It ran in bf16 (--config.training.use_amp=true); jaxkd
trains in float32 unless asked, and validates on 5,000 held-out training images where the original used the test
split. It reported 95.10 % test accuracy (README@5608f14; "8 min / 200 ep" on 2×H100).

    python -m jaxkd.train --config configs/cifar_resnet18.py --workdir workdirs/cifar_resnet18
    python -m jaxkd.train --config configs/cifar_resnet18.py:smoke --workdir /tmp/smoke   # 2 steps, CI

Expected: not measured with jaxkd (no GPU run yet; original: 95.10 %).
"""

from jaxkd.config import base_config, shared_data

CIFAR = "folder:" + shared_data("cifar10-jpeg.tar.gz")


def teacher_augmentation(c):
    """The later teachers' augmentation (both YAMLs): crop 32 pad 4, flip, AutoAugment, Cutout 16, CutMix α 1."""
    a = c.data.augmentation
    a.random_crop.update(enabled=True, padding=4)
    a.random_flip.enabled = True
    a.auto_augment.update(enabled=True, policy="cifar10")
    a.cutout.update(enabled=True, length=16)
    a.cutmix.update(enabled=True, alpha=1.0)
    return c


def teacher_smoke(c):
    """Two training steps on 32 CIFAR images (the JPEG tar of ../shared/data)."""
    c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = CIFAR, 8, 32, 16
    c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
    c.training.use_swa = False
    return c


def get_config(arg=None):
    c = base_config()
    c.experiment_name = "cifar_resnet18"
    c.data.dataset, c.data.source = "cifar", "tfds:cifar10"
    c.data.batch_size = 1024
    teacher_augmentation(c)
    c.model.model_type, c.model.in_channels, c.model.num_classes = "resnet18_cifar", 3, 10
    t = c.training
    t.num_epochs, t.optimizer, t.learning_rate, t.weight_decay = 200, "sgd", 0.1, 5e-4
    t.momentum, t.nesterov = 0.9, True
    t.scheduler, t.warmup_epochs = "cosine", 5
    t.lr_scheduler_params.update(T_max=200, eta_min=1e-5)
    t.use_swa, t.swa_start_epoch, t.swa_lr = True, 0.75, 1e-3
    t.early_stopping.update(enabled=True, patience=20, min_delta=1e-3)
    t.label_smoothing, t.gradient_clip_val = 0.1, 1.0
    if arg == "smoke":
        teacher_smoke(c)
        t.learning_rate = 0.01
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
