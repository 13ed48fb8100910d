"""What the one trainer (jaxkd.train.loop) asks of a task, declared once: :class:`Task` with every hook and its
default, and the frozen :class:`Teacher` a distillation task carries.

A task is what a training step optimises: ``task(model, batch, epoch, aux) -> (loss, metrics)``, pure and
jit-traceable. ``aux`` is the frozen teacher's state (None without a teacher): an input of every step, replicated,
never donated, never in the optimiser or the checkpoints.

batch: image (B,H,W,C) float (normalised, augmented), label (B,) int, optional target (B,K) float soft targets
(MixUp/CutMix), optional teacher_image (a clean view for the teacher). epoch: traced int32 scalar.
metrics: batch means ('accuracy', loss components); the step adds 'loss', 'lr', 'grad_norm'.

A new mode is one module with a Task subclass and one entry in jaxkd.tasks.TASKS.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Task", "Teacher", "TeacherInput", "forward_train", "inference_logits", "accuracy", "top1_hits",
           "teacher_precision"]


@dataclasses.dataclass(frozen=True)
class TeacherInput:
    """How a teacher sees the student's batch: the normalisation it was trained with, its input size (square) and
    channel count (a grey batch is repeated to RGB for a 3-channel teacher)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int = 3


@dataclasses.dataclass
class Teacher:
    """A frozen teacher: graphdef (eval mode) + state (the step's aux input) and what it is.

    kind: 'classifier' (CNN / ViT logits), 'dinov2' or 'jaxkd' (token features of a DINOv2 / a jaxkd ViT).
    depth, dim: blocks and token width of a token teacher (0 for a classifier).
    input: how it sees the batch (None: the student's normalised batch as it is).
    """

    graphdef: Any
    state: Any
    kind: str
    description: str
    depth: int = 0
    dim: int = 0
    input: TeacherInput | None = None

    def model(self, state=None) -> nnx.Module:
        return nnx.merge(self.graphdef, self.state if state is None else state)


def teacher_precision(model: nnx.Module, teacher_dtype: str) -> nnx.Module:
    """A frozen teacher in the precision ``teacher_dtype`` asks for (``distillation.teacher_dtype``,
    ``ss_distillation.teacher_dtype``): 'auto' leaves it as built; 'float32' / 'bfloat16' cast its parameters and
    BatchNorm statistics and set its compute dtype (halving its memory and bandwidth in bfloat16). The tasks cast
    what a teacher returns to float32. In place; returns ``model``."""
    if teacher_dtype != "auto":
        from jaxkd.models.layers import cast_module

        cast_module(model, jnp.dtype(teacher_dtype))
    return model


def forward_train(model: nnx.Module, image: jax.Array, token_layers=()) -> dict[str, Any]:
    """Both heads (and tokens) of a DeiT, or the CNN's logits as 'cls': dict(cls=(B,K), dist=(B,K) | None, ...)."""
    if hasattr(model, "forward_heads"):
        return model.forward_heads(image, token_layers=tuple(token_layers))
    return {"cls": model(image), "dist": None}


def inference_logits(model: nnx.Module, image: jax.Array) -> jax.Array:
    """The logits a trained model predicts with: the CNN's, or the DeiT's per its inference_mode (cls/dist/avg)."""
    return model(image)


def top1_hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the top-1 prediction is the label, else 0.0: (B,K), (B,) -> (B,) float32."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Top-1 accuracy, the batch mean: (B,K), (B,) -> ()."""
    return jnp.mean(top1_hits(logits, labels))


class Task:
    """Base of every task: the hooks the trainer calls, with the defaults of plain supervised training.

    Construction: ``cls.load_teacher(cfg, data)`` (None by default), then ``cls.build(cfg, teacher)``, then
    ``task.bind_data(mean, std)``; jaxkd.tasks.from_config does the three. Subclasses implement ``__call__`` and
    ``selected`` and override what they need.
    """

    teacher: Teacher | None = None

    @classmethod
    def selected(cls, cfg) -> bool:
        """Whether `cfg` asks for this task (jaxkd.tasks.TASKS is tried in order; the first that says so wins)."""
        raise NotImplementedError

    @classmethod
    def prepare_config(cls, cfg) -> tuple[Any, list[str]]:
        """The config this task trains with, and one note per change it made (the trainer prints them and records the
        resolved config in config.json). Default: unchanged."""
        return cfg, []

    @classmethod
    def load_teacher(cls, cfg, data) -> Teacher | None:
        """The frozen teacher, checked against the student's data (`data`: num_classes, image_shape, mean, std)."""
        return None

    @classmethod
    def build(cls, cfg, teacher: Teacher | None) -> Task:
        raise NotImplementedError

    def bind_data(self, mean, std) -> Task:
        """The dataset's normalisation (for tasks that rebuild the raw image for a teacher). Returns self."""
        return self

    def trainable(self, model: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
        """What the optimiser trains: the model, or a container of it and the task's own modules (projectors)."""
        return model

    def student(self, trainable: nnx.Module) -> nnx.Module:
        """The model inside what `trainable` returned: what is exported, evaluated and BatchNorm-recomputed."""
        return trainable

    def __call__(self, model, batch: dict, epoch: jax.Array, aux=None) -> tuple[jax.Array, dict]:
        raise NotImplementedError

    def inference_logits(self, trainable: nnx.Module, image: jax.Array) -> jax.Array:
        """The logits validation and test score (B,K)."""
        return inference_logits(self.student(trainable), image)

    def eval_metrics(self, trainable: nnx.Module, batch: dict, aux, mask: jax.Array) -> dict:
        """The task's own validation metrics as sums over the valid examples (mask (B,) float). Default: none."""
        return {}
