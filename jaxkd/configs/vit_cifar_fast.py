"""The original's DeiT-Tiny student (conv stem, MLP 2.0, 4,338,346 parameters without the dist token) on CIFAR-10
with jaxkd's fast GPU recipe, no distillation: the ViT baseline of the `cifar` study's "best" rows (the original's
recipe as-is is configs/vit_cifar.py), and the token teacher of configs/deit_ss_cifar_fast.py.

bf16; global batch 512; AdamW lr 1e-3, weight decay 0.05 (not on biases, norms, tokens, pos_embed), five warm-up
epochs then cosine per step; label smoothing 0.1; drop-path 0.1; random crop, flip and RandAugment(2, 9); no SWA.

    python -m jaxkd.train --config configs/vit_cifar_fast.py --workdir workdirs/vit_cifar_fast
    python -m jaxkd.train --config configs/vit_cifar_fast.py:smoke --workdir /tmp/smoke   # seconds, CI

Expected: not measured yet -- a GPU job (python -m jaxkd.study cifar --only vit_best), written for one H100/H200
in bf16; it has not run on a GPU, and its CPU smoke variant only checks that it runs.
"""

from cifar_cnn_fast import cifar_fast_base, cifar_smoke

from jaxkd.config import base_config

EPOCHS = 50


def vit_cifar_fast_base(distillation: bool):
    c = base_config()
    cifar_fast_base(c, epochs=EPOCHS, batch=512)
    c.data.augmentation.randaugment.update(enabled=True, num_ops=2, magnitude=9)
    c.model.update(model_type="deit", in_channels=3, num_classes=10)
    c.vit.update(variant="tiny", img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=2.0,
                 use_conv_stem=True, distillation=distillation, drop_path_rate=0.1,
                 inference_mode="avg" if distillation else "cls")
    c.training.update(optimizer="adamw", learning_rate=1e-3, weight_decay=0.05, weight_decay_mask="deit",
                      warmup_epochs=5)
    return c


def vit_smoke(c):
    cifar_smoke(c)
    c.vit.depth = 2
    return c


def get_config(arg=None):
    c = vit_cifar_fast_base(distillation=False)
    c.experiment_name = "vit_cifar_fast"
    if arg == "smoke":
        vit_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
