"""Optimisers and learning-rate schedules from the `training` config section (SPEC.md §4), built on optax.

- AdamW (decoupled weight decay), Adam and RMSprop (L2 weight decay added to the gradient, as torch), SGD with
  (Nesterov) momentum and L2 weight decay (as torch.optim.SGD).
- Weight-decay mask: 'all' (the original: every parameter) or 'deit' (no decay on biases, norm scales, tokens and
  the positional embedding).
- Schedules cosine (η_min), step, exponential, plateau and constant, each after a linear warm-up
  η(t) = η_max·(t+1)/W for the first W epochs; stepped per epoch (as the original) or per step. The SWA phase
  (epochs ≥ ⌊swa_start_epoch·E⌋) runs at the constant swa_lr.
- Reduce-on-plateau is host-driven: `PlateauTracker` keeps the multiplier from validation losses, and the train step
  multiplies the updates by it (it lives in the train state, so a resumed run continues it).
- Global-norm clipping (optax.clip_by_global_norm: g·c/max(‖g‖, c); torch's clip_grad_norm_ divides by ‖g‖+1e-6, a
  1e-6 relative difference) and gradient accumulation (optax.MultiSteps: the mean of k micro-batch gradients, which
  equals the gradient of the concatenated batch for equal micro-batches).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

__all__ = ["epoch_lr", "make_schedule", "make_optimizer", "weight_decay_mask", "PlateauTracker", "swa_start"]

_NO_DECAY_NAMES = ("cls_token", "dist_token", "pos_embed", "register_tokens", "mask_token")


def swa_start(cfg: ConfigDict) -> int | None:
    """First SWA epoch ⌊swa_start_epoch·E⌋, or None without SWA."""
    t = cfg.training
    return int(math.floor(t.swa_start_epoch * t.num_epochs)) if t.use_swa else None


def epoch_lr(cfg: ConfigDict, epoch: float, steps_per_epoch: int = 1) -> float:
    """The learning rate at a (possibly fractional) epoch, before any plateau multiplier. Host-side, float64.

    Warm-up: η_max·(t+1)/(W·S) for the t-th of the W·S warm-up units, S = `steps_per_epoch` units per epoch (S = 1:
    SPEC's per-epoch η_max·(e+1)/W; stepped per step, t = e·S is the step). After warm-up, with
    t = e − W and T = lr_scheduler_params.T_max (0: E − W):
      cosine:      η_min + (η_max − η_min)(1 + cos(π·min(t, T)/T))/2
      step:        η_max·γ^⌊t/step_size⌋
      exponential: η_max·γ^t
      plateau, constant: η_max
    """
    t_cfg = cfg.training
    p = t_cfg.lr_scheduler_params
    lr, warm, epochs = t_cfg.learning_rate, t_cfg.warmup_epochs, t_cfg.num_epochs
    start = swa_start(cfg)
    if start is not None and epoch >= start:
        return t_cfg.swa_lr
    if epoch < warm:
        return lr * (round(epoch * steps_per_epoch) + 1) / (warm * steps_per_epoch)
    t = epoch - warm
    if t_cfg.scheduler == "cosine":
        T = p.T_max or max(epochs - warm, 1)
        return p.eta_min + (lr - p.eta_min) * (1 + math.cos(math.pi * min(t, T) / T)) / 2
    if t_cfg.scheduler == "step":
        return lr * p.gamma ** math.floor(t / p.step_size)
    if t_cfg.scheduler == "exponential":
        return lr * p.gamma ** t
    return lr


def make_schedule(cfg: ConfigDict, steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """optax schedule: optimiser step -> learning rate, per epoch (the original) or per step.

    `steps_per_epoch` counts optimiser steps (micro-batches / gradient_accumulation_steps). The per-epoch values are
    tabulated on the host in float64 and looked up in the step, so the jitted step does no schedule arithmetic that
    could drift from the torch reference.
    """
    epochs = cfg.training.num_epochs
    if cfg.training.schedule_unit == "epoch":
        table = jnp.asarray([epoch_lr(cfg, e) for e in range(epochs)], jnp.float32)

        def schedule(count):
            return table[jnp.clip(count // steps_per_epoch, 0, epochs - 1)]
    else:
        total = epochs * steps_per_epoch
        table = jnp.asarray([epoch_lr(cfg, s / steps_per_epoch, steps_per_epoch) for s in range(total)], jnp.float32)

        def schedule(count):
            return table[jnp.clip(count, 0, total - 1)]
    return schedule


def weight_decay_mask(params: Any, mode: str) -> Any:
    """Pytree of bools: True where weight decay applies. 'all': everywhere; 'deit': not on biases, norm scales (any
    parameter with ndim ≤ 1), tokens or pos_embed."""
    if mode == "all":
        return jax.tree.map(lambda _: True, params)

    def decide(path, leaf):
        names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        return not (jnp.ndim(leaf) <= 1 or any(n in _NO_DECAY_NAMES for n in names))

    return jax.tree_util.tree_map_with_path(decide, params)


def make_optimizer(cfg: ConfigDict, steps_per_epoch: int, params: Any = None) -> optax.GradientTransformation:
    """The full update rule: [clip] → optimiser (with weight decay, mask) → −lr(step), wrapped in
    optax.apply_if_finite when skip_nonfinite_updates > 0 and in MultiSteps when gradient_accumulation_steps > 1.
    `params` (or an abstract pytree of them) is needed for the 'deit' mask."""
    t = cfg.training
    schedule = make_schedule(cfg, steps_per_epoch)
    wd = t.weight_decay
    mask = None
    if t.weight_decay_mask != "all":
        if params is None:
            raise ValueError("weight_decay_mask 'deit' needs the parameter pytree")
        mask = weight_decay_mask(params, t.weight_decay_mask)
    decay = [optax.add_decayed_weights(wd, mask)] if wd > 0 else []
    if t.optimizer == "adamw":
        core = [optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8), *decay]
    elif t.optimizer == "adam":
        core = [*decay, optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)]
    elif t.optimizer == "sgd":
        core = [*decay, optax.trace(decay=t.momentum, nesterov=t.nesterov)] if t.momentum > 0 else decay
    elif t.optimizer == "rmsprop":
        core = [*decay, optax.scale_by_rms(decay=0.99, eps=1e-8, eps_in_sqrt=False)]
        if t.momentum > 0:
            core.append(optax.trace(decay=t.momentum, nesterov=False))
    else:
        raise ValueError(f"unknown optimizer {t.optimizer!r}")
    clip = [optax.clip_by_global_norm(t.gradient_clip_val)] if t.gradient_clip_val > 0 else []
    tx = optax.chain(*clip, *core, optax.scale_by_learning_rate(schedule))
    if t.skip_nonfinite_updates > 0:  # an update with a NaN / inf gradient is dropped (counted), up to N in a row
        tx = optax.apply_if_finite(tx, max_consecutive_errors=t.skip_nonfinite_updates)
    if t.gradient_accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=t.gradient_accumulation_steps)
    return tx


@dataclasses.dataclass
class PlateauTracker:
    """torch.optim.lr_scheduler.ReduceLROnPlateau(mode='min', threshold_mode='rel', threshold=1e-4), host-side.

    `update(val_loss)` returns the new multiplier of the learning rate; its state is (scale, best, bad_epochs).
    """

    factor: float
    patience: int
    threshold: float = 1e-4
    scale: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0

    def update(self, val_loss: float) -> float:
        if val_loss < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.scale *= self.factor
                self.bad_epochs = 0
        return self.scale

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, d: dict) -> None:
        self.scale, self.best, self.bad_epochs = float(d["scale"]), float(d["best"]), int(d["bad_epochs"])
