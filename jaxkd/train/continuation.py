"""Continuing the original PyTorch project's run in jaxkd (``convert from-torch --resume``), and handing a jaxkd run
back to it (``convert to-torch --optimizer``).

An original training checkpoint (read and checked by :mod:`jaxkd.interop.original_run`) becomes the TrainState and
host state the trainer (:mod:`jaxkd.train.loop`) holds at the end of that epoch, saved as its checkpoint
``checkpoints/<(epoch + 1) x steps_per_epoch>`` so that ``python -m jaxkd.train`` resumes at the next epoch:

* params / rest: ``model_state_dict`` (BatchNorm statistics in rest), through :func:`jaxkd.interop.torch_to_jax`;
* opt_state: the optax state of :func:`jaxkd.train.optim.make_optimizer` for the config, the moments put in
  through the same layout conversion as their parameters (:func:`jaxkd.interop.state_dict.param_tree_from_torch`):
  Adam's mu / nu = exp_avg / exp_avg_sq and its count = torch's ``step`` (the bias correction continues), SGD's and
  RMSprop's trace = momentum_buffer, RMSprop's nu = square_avg; the learning-rate schedule's count (and
  MultiSteps' counters) = the optimiser steps of epoch + 1 jaxkd epochs, so the schedule continues at the next
  epoch (jaxkd's schedule, SPEC §4, by epoch: its epochs may hold another number of steps than the original's,
  whose validation data was its test split);
* step = (epoch + 1) x steps_per_epoch micro-steps; swa_params / swa_count = the AveragedModel's parameters and
  n_averaged; lr_scale (plateau) = the learning rate's reduction; loss_scale / good_steps (fp16) = the GradScaler's;
  ema_params (a jaxkd option the original lacks) = the weights;
* host: epoch + 1 epochs done, best validation accuracy (the original's, a fraction), early stopping replayed over
  the original's validation losses, the plateau tracker (ReduceLROnPlateau's best and bad epochs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxkd import config as config_lib
from jaxkd import models, tasks
from jaxkd.interop import original_run as orig
from jaxkd.interop.state_dict import param_tree_from_torch, param_tree_to_torch, torch_to_jax
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import optim, reporting, steps

__all__ = ["check_task", "fresh_state", "resume_state", "write_history", "original_checkpoint", "opt_moments"]


def check_task(cfg, where: str) -> None:
    """Refuses a config whose task trains more than the model (the original's checkpoint holds the model only)."""
    if tasks.task_class(cfg).trainable is not tasks.Task.trainable:
        raise orig.OriginalRunError(f"{where}: this config's task trains modules besides the model (token "
                                    "distillation's projectors), which the original's checkpoint does not hold in "
                                    "model_state_dict: continuing such a run is not supported; import the weights "
                                    "alone (without --resume)")


def fresh_state(cfg, steps_per_epoch: int) -> tuple[nnx.Module, Any, optax.GradientTransformation, steps.TrainState]:
    """(model, train graphdef, optimiser, initial TrainState) built as jaxkd.train.loop builds them for `cfg` with
    `steps_per_epoch` micro-steps an epoch (supervised and CNN -> DeiT distillation: the model is what trains)."""
    model = models.build(cfg, nnx.Rngs(params=cfg.seed, dropout=cfg.seed + 1))
    gd_train, _, params, rest = steps.split_model(model)
    accum = cfg.training.gradient_accumulation_steps
    tx = optim.make_optimizer(cfg, steps_per_epoch // accum, params)
    state = steps.init_state(params, rest, tx, cfg.seed, swa=cfg.training.use_swa, ema=cfg.training.ema.enabled,
                             fp16=config_lib.precision(cfg) == "float16")
    return model, gd_train, tx, state


def _fill(x: Any, on: dict) -> Any:
    """`x` (an optax state) with each state of a type in `on` replaced by on[type](state); tuples walked."""
    for kind, fn in on.items():
        if isinstance(x, kind):
            return fn(x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_fill(f, on) for f in x))
    if isinstance(x, tuple):
        return tuple(_fill(f, on) for f in x)
    return x


def resume_state(cfg, run: orig.OriginalRun, sd: dict[str, np.ndarray], steps_per_epoch: int,
                 where: str) -> tuple[steps.TrainState, dict, list[str]]:
    """(TrainState, host state, notes) of the trainer at the end of the original's epoch `run.epoch` (see the module
    docstring); `sd` is the original's model_state_dict (torch layout, already checked against the config)."""
    check_task(cfg, where)
    t = cfg.training
    model, _, _, state = fresh_state(cfg, steps_per_epoch)
    torch_to_jax(model, sd, strict=True)
    _, _, params, rest = steps.split_model(model)
    opt_steps = (run.epoch + 1) * (steps_per_epoch // t.gradient_accumulation_steps)
    used: set[str] = set()

    def moment(like, name):
        used.add(name)
        return param_tree_from_torch(like, run.moments[name])

    count = lambda n: jnp.asarray(n, jnp.int32)  # noqa: E731
    on = {optax.ScaleByAdamState: lambda s: s._replace(count=count(run.steps), mu=moment(s.mu, "exp_avg"),
                                                       nu=moment(s.nu, "exp_avg_sq")),
          optax.TraceState: lambda s: s._replace(trace=moment(s.trace, "momentum_buffer")),
          optax.ScaleByRmsState: lambda s: s._replace(nu=moment(s.nu, "square_avg")),
          optax.ScaleByScheduleState: lambda s: s._replace(count=count(opt_steps)),
          optax.MultiStepsState: lambda s: s._replace(gradient_step=count(opt_steps),
                                                      inner_opt_state=_fill(s.inner_opt_state, on))}
    opt_state = _fill(state.opt_state, on)
    if used != set(run.moments):  # read_original_run checked the optimiser against this config: cannot happen
        raise RuntimeError(f"optimiser moments {sorted(set(run.moments) - used)} found no place in the optax state")
    copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731
    new = dict(step=count((run.epoch + 1) * steps_per_epoch), params=params, rest=rest, opt_state=opt_state,
               ema_params=copy(params) if state.ema_params is not None else None)
    notes = list(run.notes)
    if state.swa_params is not None:
        if run.swa is None:
            new.update(swa_params=copy(params), swa_count=count(0))
        else:
            new.update(swa_params=param_tree_from_torch(params, run.swa[1]), swa_count=count(run.swa[0]))
    if state.loss_scale is not None and run.scaler is not None:
        new.update(loss_scale=jnp.asarray(run.scaler["scale"], jnp.float32),
                   good_steps=count(run.scaler["growth_tracker"]))
    host = {"epoch": run.epoch + 1, "stopped_early": False, "plateau": None,
            "best_val_accuracy": run.best_val_acc / 100 if run.best_val_acc is not None else -1.0,
            "early_stop": {"best": math.inf, "bad": 0}}
    es = t.early_stopping
    for loss in run.history.get("val_loss", [])[:run.epoch + 1] if es.enabled else ():
        if loss < host["early_stop"]["best"] - es.min_delta:
            host["early_stop"] = {"best": loss, "bad": 0}
        else:
            host["early_stop"]["bad"] += 1
    if es.enabled and host["early_stop"]["bad"] >= es.patience:
        host["stopped_early"] = True  # as the original's own EarlyStopping (the same rule) ended its run here
        notes.append(f"the original's validation loss had not improved for {es.patience} epochs: early stopping "
                     "ends the run after this epoch (import again with --config.training.early_stopping.enabled="
                     "false to train on)")
    if state.ema_params is not None:
        notes.append("training.ema: the EMA (which the original does not keep) starts from the imported weights")
    if t.scheduler == "plateau":
        warm = run.epoch + 1 < t.warmup_epochs  # (the original's warm-up sets the rate itself)
        scale = 1.0 if warm or run.plateau is None else run.lr / t.learning_rate
        host["plateau"] = optim.PlateauTracker(factor=t.lr_scheduler_params.factor,
                                               patience=t.lr_scheduler_params.patience).state_dict()
        if run.plateau is not None:
            host["plateau"].update(scale=scale, best=run.plateau["best"], bad_epochs=run.plateau["bad_epochs"])
        else:
            notes.append("no ReduceLROnPlateau state in scheduler_state_dict: jaxkd's plateau tracker starts afresh")
        new["lr_scale"] = jnp.asarray(scale, jnp.float32)
    if run.epoch + 1 < t.num_epochs:
        schedule = optim.make_schedule(cfg, steps_per_epoch // t.gradient_accumulation_steps)
        lr = float(schedule(jnp.asarray(opt_steps))) * float(new.get("lr_scale", 1.0))
        if not math.isclose(lr, run.lr, rel_tol=1e-5):  # (the schedule's table is float32)
            notes.append(f"learning rate of epoch {run.epoch + 2}: the original's optimiser holds {run.lr:.6g}, "
                         f"jaxkd's schedule (SPEC §4) gives {lr:.6g}")
    if run.steps is not None and run.steps != opt_steps:
        notes.append(f"the original took {run.steps} optimiser steps in {run.epoch + 1} epoch(s); jaxkd's data gives "
                     f"{opt_steps}: the schedule continues by epoch, the bias correction from step {run.steps}")
    return state.replace(**new), host, notes


def write_history(writer: reporting.MetricWriter, history: dict[str, list[float]], epochs: int,
                  steps_per_epoch: int) -> int:
    """The original's metrics_history as metrics.jsonl rows ('train' / 'val', one per epoch, at the epoch's last
    step, marked source 'original'; accuracies as fractions); returns the number of rows."""
    rows = 0
    for i in range(epochs):
        for kind in ("train", "val"):
            values = {}
            for key, series in history.items():
                if key.startswith(kind + "_") and i < len(series):
                    name, v = key[len(kind) + 1:], series[i]
                    if name in ("acc", "accuracy"):
                        name, v = "accuracy", v / 100
                    values[name] = v
            if values:
                writer.write(kind, (i + 1) * steps_per_epoch, i + 1, source="original", **values)
                rows += 1
    return rows


def opt_moments(opt_state: Any) -> tuple[dict[str, Any], int | None, int | None]:
    """({torch moment name: params-shaped tree}, Adam / RMSprop's step count, the schedule's count) of an optax
    state of jaxkd.train.optim.make_optimizer."""
    found: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def keep(**named):
        def fn(s):
            for name, field in named.items():
                if name in ("adam_count", "schedule_count"):
                    counts[name] = int(getattr(s, field))
                else:
                    found[name] = getattr(s, field)
            return s
        return fn

    _fill(opt_state, {optax.ScaleByAdamState: keep(exp_avg="mu", exp_avg_sq="nu", adam_count="count"),
                      optax.TraceState: keep(momentum_buffer="trace"),
                      optax.ScaleByRmsState: keep(square_avg="nu"),
                      optax.ScaleByScheduleState: keep(schedule_count="count")})
    return found, counts.get("adam_count"), counts.get("schedule_count")


def _history(workdir: Path, epochs: int) -> dict[str, list[float]]:
    """metrics.jsonl as the original's metrics_history: per epoch the mean of its train rows and its val row."""
    rows = reporting.MetricWriter(workdir / "metrics.jsonl").read()
    out: dict[str, list[float]] = {}
    for e in range(1, epochs + 1):
        train = [r for r in rows if r["kind"] == "train" and e - 1 < r["epoch"] <= e]
        val = [r for r in rows if r["kind"] == "val" and r["epoch"] == e]
        for kind, picked in (("train", train), ("val", val[-1:])):
            for name, scale, key in (("loss", 1, "loss"), ("acc", 100, "accuracy")):
                values = [r[key] for r in picked if key in r]
                if values and len(out.get(f"{kind}_{name}", [])) == e - 1:
                    out.setdefault(f"{kind}_{name}", []).append(float(np.mean(values)) * scale)
    return out


def original_checkpoint(workdir: str | Path, *, optimizer: bool, log=print) -> dict:
    """The newest checkpoint of a jaxkd workdir in the original's wrapper format, as numpy arrays and plain values:
    model_state_dict (the original's key order), epoch (0-based, as the original saves it), best_val_acc (percent),
    metrics_history; with `optimizer` also optimizer_state_dict (torch's layout, parameters in the original's
    model.parameters() order), swa_model_state_dict (with SWA) and scaler_state_dict (fp16). No
    scheduler_state_dict: the original's load_checkpoint then keeps its own scheduler."""
    workdir = Path(workdir)
    cfg_file = workdir / "config.json"
    if not cfg_file.is_file():
        raise ckpt_lib.CheckpointError(f"{workdir}: no config.json; give a jaxkd workdir written by python -m "
                                       "jaxkd.train")
    cfg = config_lib.ConfigDict(json.loads(cfg_file.read_text()))
    config_lib.validate(cfg)
    check_task(cfg, str(workdir))
    model, _, _, target = fresh_state(cfg, 1)
    ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
    try:
        step, state, host = ckpts.restore_newest_good(target, log=log)
    finally:
        ckpts.close()
    if step is None:
        raise ckpt_lib.CheckpointError(f"{workdir}: no checkpoint in {workdir / 'checkpoints'}; train the run first "
                                       "(python -m jaxkd.train)")
    nnx.update(model, state.params, state.rest)
    from jaxkd.interop.state_dict import jax_to_torch

    sd = jax_to_torch(model)
    order = orig.original_key_order(sd)
    epochs = int(host["epoch"])
    best = float(host.get("best_val_accuracy", -1.0))
    out = {"epoch": epochs - 1, "model_state_dict": {k: sd[k] for k in order},
           "best_val_acc": max(best, 0.0) * 100, "metrics_history": _history(workdir, epochs)}
    if not optimizer:
        return out
    t = cfg.training
    if t.weight_decay_mask != "all" and t.weight_decay > 0:
        raise ckpt_lib.CheckpointError(f"{workdir}: the run used training.weight_decay_mask = "
                                       f"'{t.weight_decay_mask}', which the original's optimiser (one parameter "
                                       "group, decay on every parameter) cannot continue; write the weights alone "
                                       "(without --optimizer)")
    params = [k for k in order if k in set(param_tree_to_torch(state.params))]
    moments, adam_count, sched_count = opt_moments(state.opt_state)
    moments = {name: param_tree_to_torch(tree) for name, tree in moments.items()}
    logged = [r for r in reporting.MetricWriter(workdir / "metrics.jsonl").read() if r["epoch"] > 0]
    spe = max(round(logged[0]["step"] / logged[0]["epoch"]) if logged else int(step) // max(epochs, 1), 1)
    lr = float(optim.make_schedule(cfg, spe // t.gradient_accumulation_steps)(jnp.asarray(sched_count or 0)))
    lr *= float(state.lr_scale)
    out["optimizer_state_dict"] = orig.torch_optimizer_state_dict(t.optimizer, t, params, moments, adam_count, lr)
    if state.swa_params is not None and int(state.swa_count) > 0:
        swa = param_tree_to_torch(state.swa_params)
        out["swa_model_state_dict"] = {"n_averaged": np.asarray(int(state.swa_count), np.int64),
                                       **{f"module.{k}": swa.get(k, sd[k]) for k in order}}
    if state.loss_scale is not None:
        out["scaler_state_dict"] = {"scale": float(state.loss_scale), "growth_factor": 2.0, "backoff_factor": 0.5,
                                    "growth_interval": steps.FP16_GROWTH_INTERVAL,
                                    "_growth_tracker": int(state.good_steps)}
    return out
