"""DeiT-Tiny with token distillation and the CKA structural loss from DINOv2 ViT-S/14 on CIFAR-10 (EXP-3).

The original project's later preset (deit_ss_distill_cka_cifar_config@5608f14, ../shared/spec/LATER.md §5.2): DeiT-Tiny
32/4, width 192, depth 12, 3 heads, MLP ratio 4.0, no conv stem, drop path 0.1, distillation token; 200 epochs,
batch 512 (one GPU), AdamW lr 5e-4, weight decay 0.05, cosine to 1e-6 (T_max 200) after a 10-epoch warm-up, SWA from
80 % at lr 1e-4, early stopping after 20 epochs, label smoothing 0.1, clipping 1.0 (bf16 in the original; fp32 here
unless training.use_amp); crop, flip, AutoAugment, Cutout, no MixUp / CutMix (LATER §7.5). Teacher dinov2_vits14 on
the clean view (use_dual_augment); token layers [3, 6, 9, 11], projection 256; λ_tok 0.5 (cosine); λ_rel 0.05
(τ 0.1, pooled KL, warm-up 10); CKA on, λ_cka 0.5, linear kernel, warm-up 5; Gram off. It reported 89.69 % test
accuracy (LATER §6; its evaluation averaged in the untrained dist head, §7.4: jaxkd predicts with the class head).

jaxkd's defaults correct the original's structural-loss defects (LATER §7.6-7.9; jaxkd.losses.structural): the
teacher side has no trainable projector (structural_teacher_projector=identity). The original's own behaviour:
--config.ss_distillation.structural_teacher_projector=trainable (and, for RBF / Gram runs, structural_weights=coupled,
cka_rbf_bandwidth=median_all, gram_norm=frobenius).

    python -m jaxkd.train --config configs/deit_ss_cifar_cka.py --workdir workdirs/deit_ss_cifar_cka \\
        --config.ss_distillation.teacher_checkpoint=/path/to/dinov2_vits14_pretrain.pth
    python -m jaxkd.train --config configs/deit_ss_cifar_cka.py:smoke --workdir /tmp/smoke \\
        --config.ss_distillation.teacher_checkpoint=TINY.pth   # a tiny DINOv2-architecture file; 2 steps, CI

Expected: accuracy not measured (a GPU job; the original reported 89.69 %).
"""

from vit_cifar import CIFAR

from jaxkd.config import base_config


def deit_ss_cka_base(name: str):
    """EXP-3 of LATER.md §5.2 (the variants change the structural and CLS-only settings only)."""
    c = base_config()
    c.experiment_name = name
    c.data.dataset, c.data.source = "cifar", "tfds:cifar10"
    c.data.batch_size = 512
    a = c.data.augmentation
    a.random_crop.update(enabled=True, padding=4)
    a.random_flip.enabled = True
    a.auto_augment.update(enabled=True, policy="cifar10")
    a.cutout.update(enabled=True, length=16)
    a.teacher_view = "clean"  # the original's use_dual_augment
    c.model.model_type, c.model.in_channels, c.model.num_classes = "deit", 3, 10
    c.vit.update(variant="tiny", img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
                 use_conv_stem=False, distillation=True, drop_path_rate=0.1,
                 inference_mode="cls")  # token distillation trains no dist head (the original averaged it in)
    t = c.training
    t.num_epochs, t.optimizer, t.learning_rate, t.weight_decay = 200, "adamw", 5e-4, 0.05
    t.scheduler, t.warmup_epochs = "cosine", 10
    t.lr_scheduler_params.update(T_max=200, eta_min=1e-6)
    t.use_swa, t.swa_start_epoch, t.swa_lr = True, 0.8, 1e-4
    t.early_stopping.update(enabled=True, patience=20, min_delta=1e-3)
    t.label_smoothing, t.gradient_clip_val = 0.1, 1.0
    c.ss_distillation.update(
        enabled=True, teacher_type="dinov2", teacher_model_name="dinov2_vits14",
        teacher_checkpoint="weights/dinov2_vits14_pretrain.pth", token_layers=[3, 6, 9, 11], projection_dim=256,
        lambda_tok=0.5, token_loss_type="cosine", lambda_rel=0.05, correlation_temperature=0.1,
        correlation_loss_type="kl", use_pooled_correlation=True, rel_warmup_epochs=10, projector_warmup_epochs=0,
        use_cka_loss=True, lambda_cka=0.5, cka_kernel_type="linear", cka_warmup_epochs=5,
        use_gram_loss=False, lambda_gram=0.0)
    return c


def ss_smoke(c):
    """Two steps on 32 CIFAR images with a tiny DINOv2-architecture teacher (tests write one from torch_ref.dinov2:
    pass its file); warm-ups off, so that every loss is switched on in the smoke run."""
    c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = CIFAR, 8, 32, 16
    c.vit.depth = 2
    c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
    c.training.use_swa = False
    c.ss_distillation.update(token_layers=[0, 1], rel_warmup_epochs=0, cka_warmup_epochs=0, teacher_img_size=28,
                             teacher_model_name="dinov2_custom", teacher_num_heads=2, projection_dim=32,
                             projection_hidden_dim=64)
    return c


def get_config(arg=None):
    c = deit_ss_cka_base("deit_ss_cifar_cka")
    if arg == "smoke":
        ss_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
