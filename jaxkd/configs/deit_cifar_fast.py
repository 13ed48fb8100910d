"""DeiT-Tiny (conv stem, MLP 2.0, dist token: 4,340,660 parameters) distilled from the AdaptiveCNN of
configs/cifar_cnn_fast.py with jaxkd's fast GPU recipe: the hard-distilled row of the `cifar` study's "best" rows
(the original's recipe as-is is configs/deit_cifar.py).

Everything but the teacher is configs/vit_cifar_fast.py's (schedule, augmentation, data order, number of steps).
Hard distillation as DeiT: alpha 0.5 from the first step, the dist head learns the teacher's argmax on the same
augmented view; inference averages the two heads.

    python -m jaxkd.train --config configs/cifar_cnn_fast.py --workdir workdirs/cifar_cnn_fast
    python -m jaxkd.train --config configs/deit_cifar_fast.py --workdir workdirs/deit_cifar_fast \\
        --config.distillation.teacher_checkpoint=workdirs/cifar_cnn_fast
    python -m jaxkd.train --config configs/deit_cifar_fast.py:smoke --workdir /tmp/smoke \\
        --config.distillation.teacher_checkpoint=DIR   # seconds, CI

Expected: not measured yet -- a GPU job (python -m jaxkd.study cifar --only deit_best), written for one H100/H200
in bf16; it has not run on a GPU, and its CPU smoke variant only checks that it runs.
"""

from vit_cifar_fast import vit_cifar_fast_base, vit_smoke


def get_config(arg=None):
    c = vit_cifar_fast_base(distillation=True)
    c.experiment_name = "deit_cifar_fast"
    c.distillation.update(enabled=True, teacher_checkpoint="workdirs/cifar_cnn_fast",
                          teacher_model_type="adaptive_cnn", distillation_type="hard", alpha=0.5, tau=3.0,
                          alpha_schedule="constant", distillation_warmup_epochs=0)
    if arg == "smoke":
        vit_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
