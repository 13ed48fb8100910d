"""The train state (one pytree holding everything that determines a run) and the jitted steps over it.

The Flax NNX functional pattern (Flax performance guide): the model is split once into a static graphdef and pure
state; each step is a `jax.jit` function over pure pytrees with the state's buffers donated, that merges the model
inside, runs the task's loss, differentiates with respect to the nnx.Param leaves only, and returns a new state.
Train and eval modes are two graphdefs of the same state (dropout / BatchNorm flags are static attributes).

A task (jaxkd.tasks) is `task(model, batch, epoch, aux) -> (loss, metrics)`: supervised CE, CNN -> DeiT KD and
token distillation all plug into this one step. `aux` is a pytree passed to every step but never donated nor
updated: the frozen teacher's state (None without a teacher).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["TrainState", "split_model", "init_state", "replicate", "make_train_step", "make_eval_step", "swa_update",
           "ema_params_or_params"]

FP16_GROWTH_INTERVAL = 2000  # dynamic loss scaling: double the scale after this many finite steps


@flax.struct.dataclass
class TrainState:
    """Everything that determines a run, as one pytree (checkpointed whole).

    step: micro-steps done (int32); params: nnx.Param state of the trainable module; rest: its other state
    (BatchNorm statistics, dropout RNG counters); opt_state: optax state; rng: raw uint32 key of the data and
    augmentation stream; lr_scale: the reduce-on-plateau multiplier; swa_params / swa_count: the SWA running mean
    (None without SWA); ema_params (None without EMA); loss_scale / good_steps: fp16 dynamic loss scaling.
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    rng: jax.Array
    lr_scale: jax.Array
    swa_params: Any = None
    swa_count: jax.Array | None = None
    ema_params: Any = None
    loss_scale: jax.Array | None = None
    good_steps: jax.Array | None = None


def split_model(model: nnx.Module):
    """(train graphdef, eval graphdef, params, rest). Leaves `model` in eval mode."""
    model.train()
    gd_train, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    gd_eval = nnx.graphdef(model)
    return gd_train, gd_eval, params, rest


def init_state(params, rest, tx: optax.GradientTransformation, seed: int, *, swa: bool, ema: bool,
               fp16: bool) -> TrainState:
    copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731  (own buffers: the step donates them)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)), lr_scale=jnp.ones((), jnp.float32),
        swa_params=copy(params) if swa else None, swa_count=jnp.zeros((), jnp.int32) if swa else None,
        ema_params=copy(params) if ema else None,
        loss_scale=jnp.asarray(2.0 ** 15, jnp.float32) if fp16 else None,
        good_steps=jnp.zeros((), jnp.int32) if fp16 else None,
    )


def replicate(tree, mesh):
    """Every leaf as a global array replicated over `mesh` (works with several processes, where device_put onto
    non-addressable devices is not allowed): built per leaf from the host value with make_array_from_callback.
    Typed PRNG keys are moved as their key data and re-wrapped."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        a = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(put, tree)


def all_finite(tree) -> jax.Array:
    """True when every element of every leaf is finite (a 0-d bool array)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(gd_train, task: Callable, tx: optax.GradientTransformation, *, steps_per_epoch: int,
                    schedule: Callable, accumulation: int = 1, ema_decay: float | None = None,
                    grad_norm: bool = True) -> Callable:
    """Returns step(state, batch) -> (state, metrics), jitted with the state donated.

    `steps_per_epoch` counts micro-steps; `schedule` maps optimiser steps to the learning rate (for the metric).
    metrics: the task's scalars (batch means) plus 'lr' (of this step, with the plateau multiplier), 'grad_norm'
    (global L2 norm of the gradient before clipping; not computed with ``grad_norm=False``, the trainer's
    logging.track_grad_norm), 'params_finite' (1.0 when every parameter after the update is finite: the trainer's
    numerics guard reads it), with optax.apply_if_finite in `tx` 'skipped_updates' (the run's total so far) and,
    in fp16, 'loss_scale'. With fp16 loss scaling a step with non-finite gradients is skipped (parameters and
    optimiser state unchanged) and the scale halves.
    """
    accumulating = accumulation > 1

    def step(state: TrainState, batch: dict, aux: Any = None) -> tuple[TrainState, dict]:
        epoch = state.step // steps_per_epoch
        scale = state.loss_scale if state.loss_scale is not None else None

        def loss_fn(params, rest):
            # Fresh Variable objects at this trace level (nnx.State leaves are Variables, which may only be
            # mutated at the trace that created them; the BatchNorm update mutates `rest`).
            params, rest = jax.tree.map(lambda x: x, (params, rest))
            model = nnx.merge(gd_train, params, rest)
            loss, metrics = task(model, batch, epoch, aux)
            _, new_rest = nnx.split(model, nnx.Param, ...)[1:]
            scaled = loss * scale if scale is not None else loss
            return scaled, (loss, metrics, new_rest)

        grads, (loss, metrics, new_rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        if scale is not None:
            grads = jax.tree.map(lambda g: g / scale, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        new = dict(step=state.step + 1, params=params, rest=new_rest, opt_state=opt_state)
        if scale is not None:
            finite = all_finite(grads)
            keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(finite, x, y), a, b)  # noqa: E731
            new["params"] = keep(params, state.params)
            new["opt_state"] = keep(opt_state, state.opt_state)
            grow = state.good_steps + 1 >= FP16_GROWTH_INTERVAL
            new["loss_scale"] = jnp.where(finite, jnp.where(grow, scale * 2, scale), jnp.maximum(scale / 2, 1.0))
            new["good_steps"] = jnp.where(finite & ~grow, state.good_steps + 1, 0)
            metrics = dict(metrics, loss_scale=scale)
        if state.ema_params is not None and ema_decay is not None:
            updated = optax.MultiSteps.has_updated(opt_state) if accumulating else True
            d = jnp.where(updated, ema_decay, 1.0)
            new["ema_params"] = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state.ema_params, new["params"])
        lr = schedule(state.step // accumulation) * state.lr_scale
        metrics = dict(metrics, loss=loss, lr=lr, params_finite=all_finite(new["params"]).astype(jnp.float32))
        if grad_norm:
            metrics["grad_norm"] = optax.tree.norm(grads)
        skipped = optax.tree.get(opt_state, "total_notfinite", None)  # (present with optax.apply_if_finite)
        if skipped is not None:
            metrics["skipped_updates"] = skipped.astype(jnp.float32)
        return state.replace(**new), metrics

    return jax.jit(step, donate_argnums=(0,))


def make_eval_step(gd_eval, num_classes: int, forward: Callable, extra: Callable | None = None) -> Callable:
    """Returns eval(params, rest, batch, aux=None) -> sums over the valid examples of the batch: loss_sum (CE
    without smoothing), correct top-1/3/5, count, and the K×K confusion matrix (rows true, columns predicted).

    batch: image (B,H,W,C) float, label (B,) int, mask (B,) bool (False on padding examples).
    `forward(model, image) -> logits (B,K)` is the inference forward (jaxkd.tasks.inference_logits);
    `extra(model, batch, aux, mask) -> dict of sums` adds a task's own validation metrics (e.g. teacher agreement).
    """

    @jax.jit
    def evaluate(params, rest, batch, aux=None):
        model = nnx.merge(gd_eval, params, rest)
        logits = forward(model, batch["image"]).astype(jnp.float32)
        labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
        order = jnp.argsort(-logits, axis=-1)
        hit = order == labels[:, None]
        out = {"loss_sum": jnp.sum(nll * mask), "count": jnp.sum(mask)}
        for k in (1, 3, 5):
            out[f"top{k}"] = jnp.sum(jnp.any(hit[:, :min(k, num_classes)], axis=-1) * mask)
        pred = order[:, 0]
        out["confusion"] = jnp.einsum("bi,bj->ij", jax.nn.one_hot(labels, num_classes) * mask[:, None],
                                      jax.nn.one_hot(pred, num_classes))
        if extra is not None:
            out.update(extra(model, batch, aux, mask))
        return out

    return evaluate


@functools.partial(jax.jit, donate_argnums=(0,))
def swa_update(state: TrainState) -> TrainState:
    """SWA running mean (torch.optim.swa_utils.AveragedModel): avg ← avg + (p − avg)/(n + 1); the first call copies."""
    n = state.swa_count.astype(jnp.float32)
    avg = jax.tree.map(lambda a, p: a + (p - a) / (n + 1), state.swa_params, state.params)
    return state.replace(swa_params=avg, swa_count=state.swa_count + 1)


def ema_params_or_params(state: TrainState):
    return state.ema_params if state.ema_params is not None else state.params
