"""The ablation of deit_ss_cifar: the same DeiT, data and schedule with the token losses switched off
(lambda_tok = lambda_rel = 0), so the teacher's contribution can be read off against deit_ss_cifar.

    python -m jaxkd.train --config configs/deit_ss_cifar_ce_only.py --workdir workdirs/deit_ss_cifar_ce_only \\
        --config.ss_distillation.teacher_checkpoint=/path/to/dinov2_vits14_pretrain.pth
    python -m jaxkd.train --config configs/deit_ss_cifar_ce_only.py:smoke --workdir /tmp/smoke \\
        --config.ss_distillation.teacher_checkpoint=TINY.pth   # CI

Expected: not measured yet (a GPU job). The teacher still runs (its tokens are computed and logged as L_tok /
L_rel at weight 0), so the timing is comparable with deit_ss_cifar.
"""

from deit_ss_cifar import get_config as deit_ss_cifar


def get_config(arg=None):
    c = deit_ss_cifar(arg)
    c.experiment_name = "deit_ss_cifar_ce_only"
    c.ss_distillation.update(lambda_tok=0.0, lambda_rel=0.0)
    return c
