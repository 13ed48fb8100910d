"""ViT-Tiny without distillation on MNIST (patch 2 on 28 px, grayscale 1->3 adapter, conv stem, MLP ratio 2.0).

The original project's MNIST ViT (SPEC §6 reports 99.64 % test accuracy); schedule as deit_mnist without the
teacher: 20 epochs, AdamW lr 1e-3, weight decay 0.05, its MNIST augmentation, global batch 1024.

    python -m jaxkd.train --config configs/vit_mnist.py --workdir workdirs/vit_mnist
    python -m jaxkd.train --config configs/vit_mnist.py:smoke --workdir /tmp/smoke   # seconds, CI

Expected: not measured yet with jaxkd (original: 99.64 %).
"""

from jaxkd.config import apply_peer_augmentation, base_config, shared_data

MNIST = "npz:" + shared_data("mnist.npz")


def vit_mnist_base(distillation: bool):
    c = base_config()
    c.data.dataset, c.data.source = "mnist", "tfds:mnist"
    c.data.batch_size = 1024
    apply_peer_augmentation(c, "mnist")
    c.model.model_type, c.model.in_channels, c.model.num_classes = "deit", 1, 10
    c.vit.update(variant="tiny", img_size=28, patch_size=2, embed_dim=192, depth=12, num_heads=3, mlp_ratio=2.0,
                 use_conv_stem=True, convert_grayscale=True, distillation=distillation, drop_path_rate=0.1,
                 inference_mode="avg" if distillation else "cls")
    c.training.num_epochs, c.training.optimizer = 20, "adamw"
    c.training.learning_rate, c.training.weight_decay = 1e-3, 0.05
    return c


def smoke(c):
    c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = MNIST, 8, 32, 16
    c.vit.depth = 2
    c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
    c.training.use_swa = False
    return c


def get_config(arg=None):
    c = vit_mnist_base(distillation=False)
    c.experiment_name = "vit_mnist"
    if arg == "smoke":
        smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
