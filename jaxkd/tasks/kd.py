"""Distillation as a teacher plus a task for the one trainer (never a forked trainer).

- CNN -> DeiT (SPEC §3): a frozen teacher of `distillation.teacher_model_type` (adaptive_cnn, resnet18_cifar,
  convnext_v2_tiny, deit) from `distillation.teacher_checkpoint` (a jaxkd workdir, or an original project `.pth` /
  a torch_ref or timm state dict as `.pth` or `.safetensors`, read without running its pickle, jaxkd.interop.fit);
  hard or soft KD on the dist head, the α schedule with KD warm-up; the teacher sees the student's augmented batch
  (as the original) or the clean view.
- Token distillation from DINOv2 (SPEC §3): see jaxkd.tasks.tokens.

The teacher runs inside the same jitted step: its state is the step's `aux` input (replicated, not donated, not in
the optimiser or the checkpoints), its BatchNorm in eval mode, and stop_gradient on its outputs.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd import config as config_lib
from jaxkd import losses, models
from jaxkd.config import ConfigError
from jaxkd.interop import fit
from jaxkd.interop.state_dict import model_from_torch
from jaxkd.interop.torch_pickle import describe_state_dict
from jaxkd.losses._common import kl_rows
from jaxkd.tasks.base import Task, Teacher, accuracy, forward_train, teacher_precision, top1_hits
from jaxkd.train import checkpoint

__all__ = ["load_kd_teacher", "KnowledgeDistillation"]


def _teacher_cfg(cfg):
    """The student's config with the teacher's model section (same data, so the same classes and image shape)."""
    tcfg = config_lib.ConfigDict(cfg.to_dict())
    tcfg.model.model_type = cfg.distillation.teacher_model_type
    return tcfg


def load_kd_teacher(cfg, num_classes: int, image_shape) -> Teacher:
    """The CNN (or ViT) teacher of CNN -> DeiT distillation, checked against the student's data."""
    path = Path(cfg.distillation.teacher_checkpoint)
    if not path.exists():
        raise ConfigError(f"teacher checkpoint '{path}' not found: train the teacher first (e.g. python -m jaxkd.train "
                          f"--config configs/cifar_cnn.py --workdir {path}) or point "
                          "--config.distillation.teacher_checkpoint at its workdir or .pth file")
    if path.is_dir():
        model, tcfg = checkpoint.load(path)
        want = cfg.distillation.teacher_model_type
        if tcfg.model.model_type != want:
            raise ConfigError(f"teacher checkpoint '{path}' holds a {tcfg.model.model_type} model but "
                              f"distillation.teacher_model_type is {want!r}: give a {want} teacher, or set "
                              f"--config.distillation.teacher_model_type={tcfg.model.model_type}")
        source = f"jaxkd workdir {path}"
    elif path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        tcfg = _teacher_cfg(cfg)
        # the original's best_model.pth, torch_ref's / timm's state dict (ConvNeXt: the original's `model.` prefix off)
        sd = fit.jaxkd_keys(tcfg.model.model_type, fit.load_torch_checkpoint(path))
        problems, _ = fit.fit_problems(fit.expected_shapes(tcfg), sd)
        if problems:  # (a short listing, not interop's full one: a CIFAR CNN for the digits is ~100 keys)
            seen = describe_state_dict(sd)
            raise ConfigError(f"teacher checkpoint '{path}' does not fit a {tcfg.model.model_type} for "
                              f"{cfg.data.dataset}: {'; '.join(problems)}{f' (it holds {seen})' if seen else ''}: "
                              "use a teacher trained on the same dataset (or set "
                              "--config.distillation.teacher_model_type)")
        # (built abstract and filled from the file: its random initialisation would only be overwritten)
        model = model_from_torch(lambda: models.build(tcfg, nnx.Rngs(0)), sd)
        source = f"PyTorch checkpoint {path}"
    else:
        raise ConfigError(f"teacher checkpoint '{path}': give a jaxkd workdir (folder) or a .pth / .safetensors "
                          "file")
    k = tcfg.model.num_classes
    if k != num_classes:
        raise ConfigError(f"teacher checkpoint '{path}' predicts {k} classes but the student's data has "
                          f"{num_classes}: use a teacher trained on the same dataset")
    if tcfg.model.in_channels != image_shape[2]:
        raise ConfigError(f"teacher checkpoint '{path}' takes {tcfg.model.in_channels}-channel images but the data "
                          f"has {image_shape[2]}: use a teacher trained on the same dataset")
    model.eval()
    teacher_precision(model, cfg.distillation.teacher_dtype)
    graphdef, state = nnx.split(model)
    if cfg.distillation.teacher_dtype != "auto":
        source += f" ({cfg.distillation.teacher_dtype})"
    return Teacher(graphdef, state, "classifier", source)


def _teacher_kl(t_logits, s_logits):
    """KL(softmax(t) ‖ softmax(s)) per row, in float32: (B,K), (B,K) -> (B,)."""
    return kl_rows(jax.nn.log_softmax(t_logits.astype(jnp.float32)), jax.nn.log_softmax(s_logits.astype(jnp.float32)))


class KnowledgeDistillation(Task):
    """DeiT distillation: (1 − α)·CE(cls head, labels) + α·KD(dist head, teacher), hard or soft (SPEC §3).

    α follows distillation.alpha_schedule over epochs after distillation_warmup_epochs (0 during the warm-up).
    """

    @classmethod
    def selected(cls, cfg) -> bool:
        return bool(cfg.distillation.enabled)

    @classmethod
    def load_teacher(cls, cfg, data) -> Teacher:
        return load_kd_teacher(cfg, data.num_classes, data.image_shape)

    @classmethod
    def build(cls, cfg, teacher: Teacher) -> KnowledgeDistillation:
        return cls(cfg, teacher)

    def __init__(self, cfg, teacher: Teacher):
        d = cfg.distillation
        self.teacher = teacher
        self.kind, self.tau, self.normalize = d.distillation_type, d.tau, d.kd_normalize
        self.label_smoothing = cfg.training.label_smoothing
        self.alpha_kw = dict(num_epochs=cfg.training.num_epochs, schedule=d.alpha_schedule, alpha=d.alpha,
                             alpha_start=d.alpha_start, alpha_end=d.alpha_end,
                             warmup_epochs=d.distillation_warmup_epochs)

    def teacher_logits(self, batch, aux):
        teacher = self.teacher.model(aux)
        image = batch.get("teacher_image", batch["image"])
        return jax.lax.stop_gradient(teacher(image).astype(jnp.float32))

    def __call__(self, model, batch, epoch, aux):
        out = forward_train(model, batch["image"])
        t_logits = self.teacher_logits(batch, aux)
        alpha = losses.alpha_at(epoch.astype(jnp.float32), **self.alpha_kw)
        targets = batch.get("target", batch["label"])
        loss, parts = losses.distillation_loss(out["cls"], out["dist"], targets, t_logits, alpha=alpha,
                                               kind=self.kind, tau=self.tau, label_smoothing=self.label_smoothing,
                                               normalize=self.normalize)
        student = out["dist"] if out["dist"] is not None else out["cls"]
        labels = batch["label"]
        return loss, {"accuracy": accuracy(out["cls"], labels),
                      "ce": parts["ce"], "kd": parts["kd"], "alpha": alpha,
                      "agreement": accuracy(student, jnp.argmax(t_logits, -1))}

    def eval_metrics(self, model, batch, aux, mask):
        """Validation: accuracies of both heads and of the teacher, student-teacher top-1 agreement and KL."""
        out = forward_train(model, batch["image"])
        t_logits = self.teacher_logits(batch, aux)
        labels = batch["label"]
        acc = lambda logits: jnp.sum(top1_hits(logits, labels) * mask)  # noqa: E731
        student = out["dist"] if out["dist"] is not None else out["cls"]
        res = {"cls_accuracy": acc(out["cls"]), "teacher_accuracy": acc(t_logits),
               "teacher_agreement": jnp.sum(top1_hits(student, jnp.argmax(t_logits, -1)) * mask),
               "teacher_kl": jnp.sum(_teacher_kl(t_logits, student) * mask)}
        if out["dist"] is not None:
            res["dist_accuracy"] = acc(out["dist"])
        return res

