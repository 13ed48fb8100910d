"""DeiT-Tiny distilled from the CIFAR-10 AdaptiveCNN with SOFT distillation: tau^2 * KL(p_t || p_s), tau 3.

deit_cifar with distillation_type 'soft' (SPEC §3: KL averaged over the batch; --config.distillation.kd_normalize=
element divides by B*K as DeiT's own code). Train the teacher first (configs/cifar_cnn.py).

    python -m jaxkd.train --config configs/deit_cifar_soft.py --workdir workdirs/deit_cifar_soft \\
        --config.distillation.teacher_checkpoint=workdirs/cifar_cnn
    python -m jaxkd.train --config configs/deit_cifar_soft.py:smoke --workdir /tmp/smoke \\
        --config.distillation.teacher_checkpoint=DIR   # seconds, CI

Expected: not measured yet (the original reported hard distillation only; a GPU job).
"""

from deit_cifar import get_config as deit_cifar


def get_config(arg=None):
    c = deit_cifar(arg)
    c.experiment_name = "deit_cifar_soft"
    c.distillation.distillation_type = "soft"
    return c
