"""Tasks: what a training step optimises. Each is `task(model, batch, epoch, aux) -> (loss, metrics)`, pure and
jit-traceable, so supervised training and every distillation mode share the one trainer (jaxkd.train). `aux` is
the frozen teacher's state (None without a teacher).

batch: image (B,H,W,C) float (normalised, augmented), label (B,) int, optional target (B,K) float soft targets
(MixUp/CutMix), optional teacher_image (a clean view for the teacher). epoch: traced int32 scalar.
metrics: batch means ('accuracy', loss components); the step adds 'loss', 'lr', 'grad_norm'.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd import losses

__all__ = ["forward_train", "inference_logits", "Supervised", "make_task"]


def forward_train(model: nnx.Module, image: jax.Array, token_layers=()) -> dict[str, Any]:
    """Both heads (and tokens) of a DeiT, or the CNN's logits as 'cls': dict(cls=(B,K), dist=(B,K) | None, ...)."""
    if hasattr(model, "forward_heads"):
        return model.forward_heads(image, token_layers=tuple(token_layers))
    return {"cls": model(image), "dist": None}


def inference_logits(model: nnx.Module, image: jax.Array) -> jax.Array:
    """The logits a trained model predicts with: the CNN's, or the DeiT's per its inference_mode (cls/dist/avg)."""
    return model(image)


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


class Supervised:
    """Cross-entropy on the labels (or MixUp/CutMix soft targets) with label smoothing (SPEC §3).

    A DeiT with a distillation token but no teacher trains both heads on the labels: (CE(cls) + CE(dist)) / 2.
    """

    def __init__(self, label_smoothing: float = 0.0, smooth_soft_targets: bool = False):
        self.label_smoothing = label_smoothing
        self.smooth_soft_targets = smooth_soft_targets

    def ce(self, logits, batch):
        targets = batch.get("target", batch["label"])
        return losses.cross_entropy(logits, targets, self.label_smoothing,
                                    smooth_soft_targets=self.smooth_soft_targets)

    def __call__(self, model, batch, epoch, aux=None):
        out = forward_train(model, batch["image"])
        loss = self.ce(out["cls"], batch)
        if out.get("dist") is not None:
            loss = (loss + self.ce(out["dist"], batch)) / 2
        return loss, {"accuracy": _accuracy(out["cls"], batch["label"])}


def make_task(cfg, teacher=None):
    """The task a config asks for. Distillation tasks (jaxkd.distill) take the loaded, frozen teacher."""
    if cfg.distillation.enabled or cfg.ss_distillation.enabled:
        from jaxkd import distill  # noqa: F401  (added with the distillation modes)

        return distill.make_task(cfg, teacher)
    return Supervised(cfg.training.label_smoothing)
