"""DeiT-Tiny with CLS-only token distillation and CKA across the batch from DINOv2 ViT-S/14 on CIFAR-10 (EXP-3b).

The original project's later preset (deit_ss_distill_cka_cls_cifar_config@5608f14, ../shared/spec/LATER.md §5.2): as
configs/deit_ss_cifar_cka.py (EXP-3) but use_cls_only — the class token of blocks [8, 9, 10, 11] of student and
teacher for L_tok, L_rel (pooled) and CKA, which then compares the B×B kernels of the batch's class tokens —,
λ_cka 1.0 and SWA off. No accuracy of this run is reported (LATER §6; its YAML hoped for > 90.2 %); EXP-3's was
89.69 %.

In jaxkd the CLS-only CKA uses the kernel that cka_kernel_type names (linear here, as the original, which used
linear whatever it said) over the whole batch the step sees (the original: per GPU). L_rel uses the class token of
the teacher's last block (the original: of the last token layer, the same block here).

    python -m jaxkd.train --config configs/deit_ss_cifar_cka_cls.py --workdir workdirs/deit_ss_cifar_cka_cls \\
        --config.ss_distillation.teacher_checkpoint=/path/to/dinov2_vits14_pretrain.pth
    python -m jaxkd.train --config configs/deit_ss_cifar_cka_cls.py:smoke --workdir /tmp/smoke \\
        --config.ss_distillation.teacher_checkpoint=TINY.pth   # a tiny DINOv2-architecture file; 2 steps, CI

Expected: accuracy not measured (a GPU job; the original reported none for this preset).
"""

from deit_ss_cifar_cka import deit_ss_cka_base, ss_smoke


def get_config(arg=None):
    c = deit_ss_cka_base("deit_ss_cifar_cka_cls")
    c.training.use_swa = False
    c.ss_distillation.update(use_cls_only=True, token_layers=[8, 9, 10, 11], lambda_cka=1.0)
    if arg == "smoke":
        ss_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
