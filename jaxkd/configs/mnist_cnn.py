"""AdaptiveCNN (SE-ResNet, 709,034 parameters) on MNIST -- the original project's recipe, the teacher for deit_mnist.

The original project's preset (SPEC §6): 20 epochs, AdamW lr 0.08, its MNIST augmentation (rotation 10, translation
0.1, RandAugment(2, 9), Cutout 8), SWA from epoch 15; its batch was 4096 per GPU on 2 GPUs, so the global batch here
is 8192 (6 steps per epoch after the 5,000-image validation hold-out). SPEC §6 names no warm-up for this preset, so
it has the original's default, 5 epochs (stepped per epoch). It reported 99.08 % test accuracy. For a CPU budget use
configs/mnist_cnn_fast.py.

    python -m jaxkd.train --config configs/mnist_cnn.py --workdir workdirs/mnist_cnn \
        --config.data.source=npz:../shared/data/mnist.npz
    python -m jaxkd.train --config configs/mnist_cnn.py:smoke --workdir /tmp/smoke   # seconds, CI

Expected: 99.00 % test (original: 99.08 %). Measured on one NVIDIA H200 (jax 0.11.2, 2026-12-04, seed 42, about
40-46 s per run, test accuracy of the final / SWA weights on the 10,000 test images):
- this recipe (warm-up 5): 99.00 / 98.99 %;
- with the 2-epoch warm-up jaxkd's preset had until then: 87.09 / 86.54 % (validation 9-49 % for 8 epochs).
  lr 0.08 is what breaks it: lr 0.008 99.35 / 99.41, lr 0.002 99.32 / 99.48 %. Without RandAugment 98.27 %, without
  any augmentation 98.72 %, without warm-up 53.68 %, without clipping 82.76 %, weight decay 0 90.25 %, label
  smoothing 0 89.08 %, without SWA 90.80 % (each at lr 0.08, warm-up 2). BatchNorm is not the cause: running,
  batch and recomputed statistics agree within 0.5 point in every run. torch_ref's AdaptiveCNN with torch AdamW on
  the same split, no augmentation: 98.49 % at lr 0.08 and 99.26 % at lr 0.002 (jaxkd 98.72 / 99.38 %).
  `python -m jaxkd.study mnist_recipe --workdir studies/mnist_recipe --set data.source=npz:../shared/data/mnist.npz`
  reruns the main variants (with seed 0; the figures above are seed 42, run one by one with --config overrides).
"""

from jaxkd.config import apply_peer_augmentation, base_config, shared_data

MNIST = "npz:" + shared_data("mnist.npz")


def get_config(arg=None):
    c = base_config()
    c.experiment_name = "mnist_cnn"
    c.data.dataset, c.data.source = "mnist", "tfds:mnist"
    c.data.batch_size = 8192
    apply_peer_augmentation(c, "mnist")
    c.model.model_type, c.model.in_channels, c.model.num_classes = "adaptive_cnn", 1, 10
    c.training.num_epochs, c.training.optimizer, c.training.learning_rate = 20, "adamw", 0.08
    c.training.warmup_epochs = 5  # the original's default: SPEC §6 gives this preset none
    if arg == "smoke":
        c.data.source, c.data.batch_size, c.data.max_examples, c.data.val_size = MNIST, 16, 64, 32
        c.training.num_epochs, c.training.warmup_epochs, c.training.max_steps_per_epoch = 1, 0, 2
        c.training.learning_rate = 1e-3
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: smoke)")
    return c
