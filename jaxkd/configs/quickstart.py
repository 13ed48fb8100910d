"""Quickstart: the MNIST-variant AdaptiveCNN on scikit-learn's bundled 8x8 handwritten digits (1,797 real images).

Needs no download; the README's first command. Small batch, 15 epochs, AdamW with warm-up and cosine decay.

    python -m jaxkd.train --config configs/quickstart.py --workdir workdirs/quickstart

Expected: measured on a CI clean clone (2 CPU cores), test accuracy 0.9750, training 15 s, 44-49 s with the install.
"""

from jaxkd.config import base_config


def get_config(arg=None):
    c = base_config()
    c.experiment_name = "quickstart"
    c.data.update(dataset="digits", source="digits", batch_size=64, val_size=180)
    c.model.update(model_type="adaptive_cnn", in_channels=1, num_classes=10, cnn_variant="mnist")
    c.training.update(num_epochs=15, optimizer="adamw", learning_rate=2e-3, weight_decay=5e-4, warmup_epochs=1,
                      use_swa=False, log_every_steps=10)
    c.training.early_stopping.enabled = False
    if arg == "smoke":
        c.training.update(num_epochs=1, warmup_epochs=0, max_steps_per_epoch=2)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
