"""DeiT-Tiny distilled from the CIFAR-10 AdaptiveCNN (4,340,660 parameters: conv stem, MLP 2.0, dist token).

The original project's preset (SPEC §6): vit_cifar plus hard distillation, alpha cosine 0 -> 0.6, tau 3, five KD
warm-up epochs. Train the teacher first (configs/cifar_cnn.py), then point teacher_checkpoint at its workdir.
It reported 84.39 % test accuracy.

    python -m jaxkd.train --config configs/cifar_cnn.py --workdir workdirs/cifar_cnn
    python -m jaxkd.train --config configs/deit_cifar.py --workdir workdirs/deit_cifar \\
        --config.distillation.teacher_checkpoint=workdirs/cifar_cnn
    python -m jaxkd.train --config configs/deit_cifar.py:smoke --workdir /tmp/smoke \\
        --config.distillation.teacher_checkpoint=DIR   # seconds, CI

Expected: not measured yet with jaxkd (original: 84.39 %; a GPU job).
"""

from vit_cifar import smoke, vit_cifar_base


def get_config(arg=None):
    c = vit_cifar_base(distillation=True)
    c.experiment_name = "deit_cifar"
    c.distillation.update(enabled=True, teacher_checkpoint="workdirs/cifar_cnn", teacher_model_type="adaptive_cnn",
                          distillation_type="hard", tau=3.0, alpha_schedule="cosine", alpha_start=0.0,
                          alpha_end=0.6, distillation_warmup_epochs=5)
    if arg == "smoke":
        smoke(c)
        c.distillation.distillation_warmup_epochs = 0
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
