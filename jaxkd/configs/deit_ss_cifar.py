"""DeiT-Tiny with self-supervised token distillation from DINOv2 ViT-S/14 on CIFAR-10.

The original project's preset (SPEC §3, §6): 100 epochs, AdamW lr 1e-3, 256 per GPU on 2 GPUs (global 512), token
layers [6, 11], projection 256, lambda_tok 1, lambda_rel 0.1, correlation tau 0.1, pooled KL, relation warm-up 10.
The teacher weights are the official `dinov2_vits14_pretrain.pth` (no network here: pass its path).
It reported 89.18 % test accuracy.

    python -m jaxkd.train --config configs/deit_ss_cifar.py --workdir workdirs/deit_ss_cifar \\
        --config.ss_distillation.teacher_checkpoint=/path/to/dinov2_vits14_pretrain.pth
    python -m jaxkd.train --config configs/deit_ss_cifar.py:smoke --workdir /tmp/smoke \\
        --config.ss_distillation.teacher_checkpoint=TINY.pth   # a tiny DINOv2-architecture file; CI

Expected: not measured yet with jaxkd (original: 89.18 %; a GPU job).
"""

from vit_cifar import smoke, vit_cifar_base


def get_config(arg=None):
    c = vit_cifar_base(distillation=True)
    c.experiment_name = "deit_ss_cifar"
    c.data.batch_size = 512
    c.training.learning_rate = 1e-3
    c.vit.inference_mode = "cls"  # the dist head is not trained in this mode (the original averaged it in)
    c.ss_distillation.update(enabled=True, teacher_type="dinov2", teacher_model_name="dinov2_vits14",
                             teacher_checkpoint="weights/dinov2_vits14_pretrain.pth",
                             token_layers=[6, 11], projection_dim=256, lambda_tok=1.0, lambda_rel=0.1,
                             correlation_temperature=0.1, correlation_loss_type="kl", use_pooled_correlation=True,
                             rel_warmup_epochs=10)
    if arg == "smoke":
        smoke(c)
        # A tiny DINOv2-architecture teacher (tests write one from torch_ref.dinov2): pass its file and heads.
        c.ss_distillation.update(token_layers=[0, 1], rel_warmup_epochs=0, teacher_img_size=28,
                                 teacher_model_name="dinov2_custom", teacher_num_heads=2, projection_dim=32,
                                 projection_hidden_dim=64)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
