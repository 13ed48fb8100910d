"""AdaptiveCNN (SE-ResNet, 17,629,514 parameters) on CIFAR-10 with jaxkd's fast GPU recipe: the teacher of the
`cifar` study's "best" rows (the original's recipe as-is is configs/cifar_cnn.py).

bf16 compute with fp32 weights; global batch 512; SGD with Nesterov momentum 0.9, lr 0.4, weight decay 5e-4, two
warm-up epochs then cosine, stepped per optimiser step; label smoothing 0.1; cheap augmentation that a GPU runs at
the step's speed (random crop with 4 px padding, horizontal flip, Cutout 16); no SWA.

    python -m jaxkd.train --config configs/cifar_cnn_fast.py --workdir workdirs/cifar_cnn_fast
    python -m jaxkd.train --config configs/cifar_cnn_fast.py:smoke --workdir /tmp/smoke   # seconds, CI

Expected: not measured yet -- a GPU job (python -m jaxkd.study cifar --only cnn_best), written for one H100/H200
in bf16; it has not run on a GPU, and its CPU smoke variant only checks that it runs.
"""

from jaxkd.config import base_config, shared_data

CIFAR = "folder:" + shared_data("cifar10-jpeg.tar.gz")


def cifar_fast_base(c, *, epochs: int, batch: int):
    """The shared part of the fast CIFAR recipes: data, bf16, crop + flip, per-step warm-up + cosine, no SWA."""
    c.data.update(dataset="cifar", source=CIFAR, val_size=5000, batch_size=batch)
    aug = c.data.augmentation
    aug.random_crop.update(enabled=True, padding=4)
    aug.random_flip.enabled = True
    c.training.update(num_epochs=epochs, use_amp=True, use_bf16=True, schedule_unit="step", use_swa=False,
                      label_smoothing=0.1, gradient_clip_val=0.0, log_every_steps=100, eval_every_epochs=5)
    c.training.early_stopping.enabled = False
    c.logging.save_frequency = 10
    return c


def cifar_smoke(c):
    c.data.update(batch_size=8, max_examples=32, val_size=16)
    c.training.update(num_epochs=1, warmup_epochs=0, max_steps_per_epoch=2, eval_every_epochs=1)
    return c


def get_config(arg=None):
    c = base_config()
    c.experiment_name = "cifar_cnn_fast"
    cifar_fast_base(c, epochs=30, batch=512)
    c.data.augmentation.cutout.update(enabled=True, length=16)
    c.model.update(model_type="adaptive_cnn", in_channels=3, num_classes=10, cnn_variant="cifar")
    c.training.update(optimizer="sgd", learning_rate=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                      warmup_epochs=2)
    if arg == "smoke":
        cifar_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
