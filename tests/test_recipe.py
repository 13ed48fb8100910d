"""Presets tell the truth (issue 15 §4): the original project's MNIST CNN recipe, shrunk to a CPU budget, with the
learning rate that failed and with one that works.

Why the preset reached only 87.79 % (one H200, full MNIST, batch 8192, 20 epochs, 120 steps; test accuracy):
AdamW at lr 0.08 is the cause, not jaxkd. With everything else of the recipe unchanged, lr 0.008 gives 99.35 % and
lr 0.002 gives 99.32 % (SWA 99.48 %); without augmentation lr 0.08 gives 98.72 % in jaxkd and 98.49 % in torch_ref
(torch.optim.AdamW, same schedule, same data), both with the same ~7 epochs of 10-25 % accuracy at the start. The
heavy MNIST augmentation (RandAugment(2, 9) + Cutout 8 + rotation + translation) is what turns that unstable start
into a failure (lr 0.08 without RandAugment: 98.27 %). BatchNorm statistics are not involved: the same weights
evaluated with running, batch or recomputed statistics agree within 0.5 point. Adam's step is about lr per
parameter whatever the batch, so the lr-to-batch ratio does not carry the failure to a small batch (batch 256 at
lr 0.0025 reaches 98.55 %); the absolute lr does (batch 256 at lr 0.08: 62 %, like the GPU run).

This test keeps the recipe's optimiser (AdamW, weight decay 5e-4 on every parameter, clipping 1.0, label smoothing
0.1), its schedule (20 epochs, linear warm-up over 2 epochs then cosine, stepped per epoch, SWA from epoch 15 at
5e-4), its augmentation and its number of optimiser steps (7 per epoch, 140 in all) and Adam's per-step size, on
224 real MNIST images at batch 32. Measured on 2 CPU cores (the two tests side by side under pytest -n 2,
142 s each on a machine at load average 11-13 from other jobs; not yet timed on an idle one): lr 0.002 reaches
test accuracy 0.826 (SWA 0.902); the original's lr 0.08 reaches 0.371 (SWA 0.362). At full scale a 5-epoch warm-up
(the original's default, now in configs/mnist_cnn.py) rescues lr 0.08 (99.00 % on an H200); at this scale it does
not (0.317 with warm-up 5 and lr 0.08: 140 steps of 32 images leave Adam no room), so the test keeps the lr.
"""

from __future__ import annotations

from jaxkd import config as config_lib
from jaxkd.config import apply_peer_augmentation
from jaxkd.train import loop as train_lib

BATCH, STEPS_PER_EPOCH = 32, 7
FIXED_LR, ORIGINAL_LR = 2e-3, 0.08
FIXED_MIN, ORIGINAL_MAX = 0.70, 0.55  # measured 0.826 and 0.371 (module docstring)


def recipe(shared_data_dir, lr: float):
    """The original's MNIST recipe (SPEC §4-§6), every rule set here so that preset edits do not move the test."""
    n = BATCH * STEPS_PER_EPOCH
    cfg = config_lib.load("configs/mnist_cnn.py", [
        f"--config.data.source=npz:{shared_data_dir / 'mnist.npz'}", f"--config.data.batch_size={BATCH}",
        f"--config.data.max_examples={n}", f"--config.data.val_size={n}",
        "--config.logging.progress_bar=false", "--config.logging.save_frequency=100",
        "--config.training.eval_every_epochs=20", "--config.training.early_stopping.enabled=false",
    ])
    apply_peer_augmentation(cfg, "mnist")  # rotation 10, translate 0.1, RandAugment(2, 9), Cutout 8
    t = cfg.training
    t.optimizer, t.learning_rate, t.weight_decay, t.weight_decay_mask = "adamw", lr, 5e-4, "all"
    t.scheduler, t.schedule_unit, t.num_epochs, t.warmup_epochs = "cosine", "epoch", 20, 2
    t.lr_scheduler_params.T_max, t.lr_scheduler_params.eta_min = 0, 0.0
    t.gradient_clip_val, t.label_smoothing, t.gradient_accumulation_steps = 1.0, 0.1, 1
    t.use_swa, t.swa_start_epoch, t.swa_lr = True, 0.75, 5e-4
    t.use_amp, t.max_steps_per_epoch = False, 0
    config_lib.validate(cfg)
    return cfg


def _train(shared_data_dir, tmp_path, lr):
    summary = train_lib.train(recipe(shared_data_dir, lr), tmp_path)
    assert summary["steps"] == 20 * STEPS_PER_EPOCH
    return summary


def test_recipe_with_working_lr_learns(shared_data_dir, tmp_path):
    s = _train(shared_data_dir, tmp_path, FIXED_LR)
    assert s["test_accuracy"] >= FIXED_MIN, s
    assert s["swa_test_accuracy"] >= FIXED_MIN, s


def test_original_lr_fails_negative_control(shared_data_dir, tmp_path):
    """The original's lr 0.08: the same run must stay far below the working one (what the 87.79 % GPU run was)."""
    s = _train(shared_data_dir, tmp_path, ORIGINAL_LR)
    assert s["test_accuracy"] <= ORIGINAL_MAX, s
