"""Evaluation over whole splits and the BatchNorm recomputation of averaged weights: what the trainer, the
evaluate command and the tests use to score a model (one host fetch per split)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.tasks.base import forward_train

__all__ = ["batch_dict", "evaluate_split", "bn_recompute"]


def batch_dict(batch, mixing: bool) -> dict:
    """The pipeline's Batch as the task's dict: soft targets only when MixUp/CutMix made them (so that label
    smoothing applies to plain labels, as the original)."""
    d = {"image": batch.image, "label": batch.label, "mask": batch.mask}
    if mixing:
        d["target"] = batch.target
    if batch.teacher_image is not None:
        d["teacher_image"] = batch.teacher_image
    return d


def evaluate_split(eval_step, params, rest, data, split: str, aux=None) -> dict:
    """Loss, top-1/3/5, the confusion matrix and the task's extra metrics (means) over every example of a split;
    one host fetch at the end."""
    total = None
    for batch in data.eval_batches(split):
        out = eval_step(params, rest, batch_dict(batch, False), aux)
        total = out if total is None else jax.tree.map(jnp.add, total, out)
    if total is None:
        return {}
    total = jax.device_get(total)
    n = max(float(total["count"]), 1.0)
    res = {"loss": float(total["loss_sum"]) / n, "accuracy": float(total["top1"]) / n,
           "top1": float(total["top1"]) / n, "top3": float(total["top3"]) / n, "top5": float(total["top5"]) / n,
           "count": int(total["count"]), "confusion": np.asarray(total["confusion"]).round().astype(np.int64)}
    for k, v in total.items():
        if k not in ("loss_sum", "count", "top1", "top3", "top5", "confusion"):
            res[k] = float(v) / n
    return res


def bn_recompute(gd_train, params, rest, images, student: Callable[[nnx.Module], nnx.Module] = lambda m: m):
    """torch.optim.swa_utils.update_bn: BatchNorm running statistics recomputed, with the weights fixed, as the
    equal-weight average over the batches of `images` (an iterable of (B,H,W,C) arrays) of each batch's mean and
    unbiased variance (torch's momentum=None). Runs the train-mode forward with momentum 1, so each forward leaves
    exactly its batch statistics; num_batches_tracked advances by the number of batches, as in torch.
    `student(trainable) -> model` picks the model inside a task's container (jaxkd.tasks.base.Task.student)."""
    model = nnx.merge(gd_train, params, jax.tree.map(lambda x: x, rest))
    bns = [m for _, m in nnx.iter_modules(model) if hasattr(m, "num_batches_tracked")]
    if not bns:
        return rest
    for bn in bns:
        bn.momentum = 1.0
    gd_capture = nnx.graphdef(model)

    @jax.jit
    def batch_stats(rest, image):
        m = nnx.merge(gd_capture, params, jax.tree.map(lambda x: x, rest))
        forward_train(student(m), image)  # the model inside what the task trains (projectors aside)
        return nnx.split(m, nnx.Param, ...)[2]

    avg, n = None, 0
    for image in images:
        new = batch_stats(rest, image)
        avg = new if avg is None else jax.tree.map(
            lambda a, b: a + (b - a) / (n + 1) if jnp.issubdtype(a.dtype, jnp.floating) else b,  # noqa: B023
            avg, new)  # (called at once: n is this iteration's)
        n += 1
    if avg is None:
        return rest
    # Statistics from the average; integer counters (num_batches_tracked) advance by n; RNG state unchanged.
    return jax.tree.map(lambda old, a: a if jnp.issubdtype(a.dtype, jnp.floating) else old + n
                        if old.dtype == jnp.int32 and old.ndim == 0 else old, rest, avg)
