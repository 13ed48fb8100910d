"""The Gram-matrix ablation of EXP-3: DeiT-Tiny with token distillation and the Gram structural loss instead of CKA,
from DINOv2 ViT-S/14 on CIFAR-10.

The original project's later preset (deit_ss_distill_gram_ablation_config@5608f14, ../shared/spec/LATER.md §5.2): as
configs/deit_ss_cifar_cka.py (EXP-3) but use_cka_loss false, use_gram_loss true, λ_gram 0.5. No accuracy of this run
is reported (LATER §6); EXP-3's was 89.69 %.

jaxkd's defaults differ from the original here (LATER §7.6, §7.8; jaxkd.losses.structural): the Gram loss is the
squared Frobenius norm over N² (gram_norm=squared; the original's un-squared norm: gram_norm=frobenius), it waits for
cka_warmup_epochs (5) like CKA (the original forced its warm-up to 0: structural_weights=coupled), and the teacher
side has no trainable projector (structural_teacher_projector=identity; the original's: trainable).

    python -m jaxkd.train --config configs/deit_ss_cifar_gram.py --workdir workdirs/deit_ss_cifar_gram \\
        --config.ss_distillation.teacher_checkpoint=/path/to/dinov2_vits14_pretrain.pth
    python -m jaxkd.train --config configs/deit_ss_cifar_gram.py:smoke --workdir /tmp/smoke \\
        --config.ss_distillation.teacher_checkpoint=TINY.pth   # a tiny DINOv2-architecture file; 2 steps, CI

Expected: accuracy not measured (a GPU job; the original reported none for this preset).
"""

from deit_ss_cifar_cka import deit_ss_cka_base, ss_smoke


def get_config(arg=None):
    c = deit_ss_cka_base("deit_ss_cifar_gram")
    c.ss_distillation.update(use_cka_loss=False, lambda_cka=0.0, use_gram_loss=True, lambda_gram=0.5)
    if arg == "smoke":
        ss_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
