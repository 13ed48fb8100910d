"""Tasks: what a training step optimises, and the teacher it carries. Supervised training and every distillation
mode share the one trainer (jaxkd.train.loop), which knows only the :class:`Task` interface (jaxkd.tasks.base).

The modes, tried in order (the first whose ``selected(cfg)`` holds is built):

==============  =================================  ===================================================
name            class                              selected by
==============  =================================  ===================================================
``kd``          tasks.kd.KnowledgeDistillation     ``distillation.enabled`` (CNN -> DeiT, SPEC §3)
``tokens``      tasks.tokens.SelfSupervisedDist.``ss_distillation.enabled`` (DINOv2 -> ViT tokens)
``supervised``  tasks.supervised.Supervised        otherwise
==============  =================================  ===================================================

A new mode: one module with a Task subclass, and one entry in :data:`TASKS`.
"""

from __future__ import annotations

import importlib

from jaxkd.tasks.base import Task, Teacher, TeacherInput, accuracy, forward_train, inference_logits
from jaxkd.tasks.supervised import Supervised

__all__ = ["TASKS", "task_class", "make_task", "from_config", "Task", "Teacher", "TeacherInput", "Supervised",
           "forward_train", "inference_logits", "accuracy"]

#: name -> "module:Class", in the order they are tried (imported only when a config is checked against them)
TASKS: dict[str, str] = {
    "kd": "jaxkd.tasks.kd:KnowledgeDistillation",
    "tokens": "jaxkd.tasks.tokens:SelfSupervisedDistillation",
    "supervised": "jaxkd.tasks.supervised:Supervised",
}


def _load(spec: str) -> type[Task]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def task_class(cfg) -> type[Task]:
    """The Task class a config asks for."""
    for spec in TASKS.values():
        cls = _load(spec)
        if cls.selected(cfg):
            return cls
    raise LookupError("no task is selected by this config")  # (Supervised always is)


def make_task(cfg, teacher: Teacher | None = None) -> Task:
    """The task of `cfg` around an already loaded teacher (None for supervised training)."""
    return task_class(cfg).build(cfg, teacher)


def from_config(cfg, data) -> Task:
    """The task of `cfg` with its teacher loaded and checked against `data` (num_classes, image_shape, mean, std),
    bound to the data's normalisation."""
    cls = task_class(cfg)
    return cls.build(cfg, cls.load_teacher(cfg, data)).bind_data(data.mean, data.std)
