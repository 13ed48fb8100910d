"""DeiT-Tiny with token distillation (CST-style: token cosine on blocks 6 and 11 through projectors, pooled
correlation KL) from a jaxkd ViT teacher, with jaxkd's fast GPU recipe: the token-distilled row of the `cifar`
study's "best" rows. The original used DINOv2 ViT-S/14 (configs/deit_ss_cifar.py), whose weights cannot be
downloaded here; this preset measures the same mode with the ViT of configs/vit_cifar_fast.py as the teacher.

Everything else is configs/vit_cifar_fast.py's. lambda_tok 1, lambda_rel 0.1 after 5 warm-up epochs; the teacher
sees the student's augmented view with its own normalisation; inference uses the class head.

    python -m jaxkd.train --config configs/vit_cifar_fast.py --workdir workdirs/vit_cifar_fast
    python -m jaxkd.train --config configs/deit_ss_cifar_fast.py --workdir workdirs/deit_ss_cifar_fast \\
        --config.ss_distillation.teacher_checkpoint=workdirs/vit_cifar_fast
    # with the official DINOv2 weights instead (as the original):
    python -m jaxkd.train --config configs/deit_ss_cifar_fast.py:dinov2 --workdir workdirs/deit_ss_cifar_dinov2 \\
        --config.ss_distillation.teacher_checkpoint=/path/to/dinov2_vits14_pretrain.pth

Expected: not measured yet -- a GPU job (python -m jaxkd.study cifar --only deit_ss_best), written for one H100/H200
in bf16; it has not run on a GPU, and its CPU smoke variant only checks that it runs.
"""

from vit_cifar_fast import vit_cifar_fast_base, vit_smoke


def get_config(arg=None):
    c = vit_cifar_fast_base(distillation=True)
    c.experiment_name = "deit_ss_cifar_fast"
    c.vit.inference_mode = "cls"  # token distillation trains no dist head
    c.ss_distillation.update(enabled=True, teacher_type="jaxkd", teacher_checkpoint="workdirs/vit_cifar_fast",
                             teacher_normalization="dataset", token_layers=[6, 11], projection_dim=256,
                             lambda_tok=1.0, lambda_rel=0.1, correlation_temperature=0.1,
                             correlation_loss_type="kl", use_pooled_correlation=True, rel_warmup_epochs=5)
    if arg == "dinov2":
        c.experiment_name = "deit_ss_cifar_dinov2"
        c.ss_distillation.update(teacher_type="dinov2", teacher_model_name="dinov2_vits14", teacher_img_size=224,
                                 teacher_normalization="imagenet",
                                 teacher_checkpoint="weights/dinov2_vits14_pretrain.pth")
    elif arg == "smoke":
        vit_smoke(c)
        c.ss_distillation.update(token_layers=[0, 1], rel_warmup_epochs=0, projection_dim=32,
                                 projection_hidden_dim=64)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: dinov2, smoke)")
    return c
