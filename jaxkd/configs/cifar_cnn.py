"""AdaptiveCNN (SE-ResNet, 17,629,514 parameters) on CIFAR-10 — the teacher for deit_cifar.

The original project's preset (SPEC §6): 40 epochs, SGD with Nesterov momentum 0.9, lr 0.8, CutMix and AutoAugment
on top of its CIFAR pipeline; its batch was 2048 per GPU on 2 GPUs, so the global batch here is 4096.
It reported 82.90 % test accuracy.

    python -m jaxkd.train --config configs/cifar_cnn.py --workdir workdirs/cifar_cnn
    python -m jaxkd.train --config configs/cifar_cnn.py:smoke --workdir /tmp/smoke   # under a minute, CI

Expected: not measured yet with jaxkd (original: 82.90 %; GPU hours, not a CPU job).
"""

from jaxkd.config import apply_peer_augmentation, base_config, shared_data

CIFAR = "folder:" + shared_data("cifar10-jpeg.tar.gz")


def get_config(arg=None):
    c = base_config()
    c.experiment_name = "cifar_cnn"
    c.data.dataset, c.data.source = "cifar", "tfds:cifar10"
    c.data.batch_size = 4096
    apply_peer_augmentation(c, "cifar")
    c.data.augmentation.cutmix.update(enabled=True, alpha=1.0)
    c.model.model_type, c.model.in_channels, c.model.num_classes = "adaptive_cnn", 3, 10
    c.training.num_epochs, c.training.optimizer, c.training.learning_rate = 40, "sgd", 0.8
    c.training.momentum, c.training.nesterov = 0.9, True
    if arg == "smoke":
        c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = CIFAR, 8, 32, 16
        c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
        c.training.learning_rate = 0.01
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
