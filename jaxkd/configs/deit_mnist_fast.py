"""The small DeiT of configs/vit_mnist_fast.py (plus a distillation token and head) distilled from the AdaptiveCNN of
configs/mnist_cnn_fast.py: the distilled students of the `mnist` study. `:soft` selects soft distillation
(`:smoke` and `:soft,smoke` are the CI variants).

Everything but the teacher is the ViT twin's (same size up to the dist token and head, schedule, data order and
number of steps). Hard distillation as DeiT: alpha 0.5 from the first step, CE of the dist head to the teacher's
argmax; soft: alpha 0.5, tau 3, KL(p_t || p_s) * tau^2. The teacher sees the same augmented view; inference averages
the two heads (DeiT's rule).

    python -m jaxkd.train --config configs/mnist_cnn_fast.py --workdir workdirs/mnist_cnn_fast
    python -m jaxkd.train --config configs/deit_mnist_fast.py --workdir workdirs/deit_mnist_fast \\
        --config.distillation.teacher_checkpoint=workdirs/mnist_cnn_fast
    python -m jaxkd.train --config configs/deit_mnist_fast.py:soft --workdir workdirs/deit_mnist_fast_soft
    python -m jaxkd.train --config configs/deit_mnist_fast.py:smoke --workdir /tmp/smoke \\
        --config.distillation.teacher_checkpoint=DIR   # seconds, CI

Expected: hard 98.8 %, soft 98.7 % test. Measured by `python -m jaxkd.study mnist --workdir W --seeds 3 --jobs 2`
(one CPU core each, beside another run; jax 0.10.2, jaxkd 2ebc71d; teacher 99.51 %, seed 0): hard 98.76 % +- 0.06
over seeds 0-2 (98.82, 98.75, 98.71; 28 min a run), paired with the ViT twin (98.56, 98.65, 98.61) +0.15 points,
95 % interval [-0.08, +0.38]; soft 98.71 % +- 0.11 (98.70, 98.83, 98.61; 29 min a run), +0.11 points, [-0.13, +0.34].
Results: results/mnist/RESULTS.md and README "Results".
"""

from mnist_cnn_fast import mnist_smoke
from vit_mnist_fast import vit_mnist_fast_base


def get_config(arg=None):
    args = set(filter(None, (arg or "").split(",")))
    if args - {"soft", "smoke"}:
        raise ValueError(f"unknown variant {arg!r} (known: soft, smoke, soft,smoke)")
    c = vit_mnist_fast_base(distillation=True)
    kind = "soft" if "soft" in args else "hard"
    c.experiment_name = "deit_mnist_fast" + ("_soft" if kind == "soft" else "")
    c.distillation.update(enabled=True, teacher_checkpoint="workdirs/mnist_cnn_fast",
                          teacher_model_type="adaptive_cnn", distillation_type=kind, alpha=0.5, tau=3.0,
                          alpha_schedule="constant", distillation_warmup_epochs=0)
    if "smoke" in args:
        mnist_smoke(c)
        c.vit.depth = 2
    return c
