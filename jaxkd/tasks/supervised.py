"""Supervised training: cross-entropy on the labels (or MixUp/CutMix soft targets) with label smoothing (SPEC §3)."""

from __future__ import annotations

from jaxkd import losses
from jaxkd.tasks.base import Task, accuracy, forward_train

__all__ = ["Supervised"]


class Supervised(Task):
    """Cross-entropy on the labels (or MixUp/CutMix soft targets) with label smoothing (SPEC §3).

    A DeiT with a distillation token but no teacher trains both heads on the labels: (CE(cls) + CE(dist)) / 2.
    """

    def __init__(self, label_smoothing: float = 0.0, smooth_soft_targets: bool = False):
        self.label_smoothing = label_smoothing
        self.smooth_soft_targets = smooth_soft_targets

    @classmethod
    def selected(cls, cfg) -> bool:
        return True

    @classmethod
    def build(cls, cfg, teacher=None) -> Supervised:
        return cls(cfg.training.label_smoothing)

    def ce(self, logits, batch):
        targets = batch.get("target", batch["label"])
        return losses.cross_entropy(logits, targets, self.label_smoothing,
                                    smooth_soft_targets=self.smooth_soft_targets)

    def __call__(self, model, batch, epoch, aux=None):
        out = forward_train(model, batch["image"])
        loss = self.ce(out["cls"], batch)
        if out.get("dist") is not None:
            loss = (loss + self.ce(out["dist"], batch)) / 2
        return loss, {"accuracy": accuracy(out["cls"], batch["label"])}
