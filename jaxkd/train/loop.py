"""`python -m jaxkd.train --config configs/<preset>.py[:arg] --workdir DIR [--config.x.y=value ...]`

The one trainer of every mode: supervised CNN or ViT, CNN -> DeiT distillation and token distillation differ only
in the task (jaxkd.tasks: a Task and the Teacher it carries); this file names no mode. Sections: distributed, mesh,
input, model, update, shard, checkpoint, evals, loop, report.

Writes to the workdir: config.json (resolved), metrics.jsonl (train: loss, accuracy, lr, grad_norm (unless
logging.track_grad_norm is false), images/s per log interval; val: per epoch), checkpoints/, and at the end model/
(inference weights), test_report.txt, report.json, training_curves.png, confusion_matrix.png and summary.json.

What the trainer prints follows logging.log_level: INFO (default) its progress bar, the first step's time, the
per-run lines and the final report; WARNING only its `note:` lines; ERROR neither (errors are raised, and the
command prints them); DEBUG adds every XLA compilation JAX performs (jax.log_compiles) to INFO.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd import config as config_lib
from jaxkd import models, paths, tasks
from jaxkd.config import ConfigError
from jaxkd.errors import NonFiniteError
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import optim, reporting, steps, writers
from jaxkd.train.evaluators import batch_dict, bn_recompute, evaluate_split

__all__ = ["train", "main", "maybe_initialize_distributed", "epoch_steps", "data_json"]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def maybe_initialize_distributed() -> None:
    """jax.distributed.initialize() when the environment asks for several processes.

    JAXKD_COORDINATOR (host:port), JAXKD_NUM_PROCESSES and JAXKD_PROCESS_ID name them explicitly; otherwise a
    cluster environment JAX detects itself (SLURM, Open MPI, ...) with JAXKD_DISTRIBUTED=1.
    """
    if jax.distributed.is_initialized() if hasattr(jax.distributed, "is_initialized") else False:
        return
    coord = os.environ.get("JAXKD_COORDINATOR")
    if coord:
        jax.distributed.initialize(coordinator_address=coord,
                                   num_processes=int(os.environ["JAXKD_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAXKD_PROCESS_ID"]))
    elif os.environ.get("JAXKD_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    else:
        return
    if jax.process_count() > 1 and jax.default_backend() == "cpu" and _CPU_CACHE_HANGS:
        # jax 0.12 on CPU: a program with cross-process collectives loaded from the persistent compilation cache
        # waits forever in its first all-reduce (jax 0.12.1: every process blocks in the first training step once
        # the cache holds it, a cold cache runs; jax 0.10.2 and 0.11.2 run either way). Such runs compile instead.
        jax.config.update("jax_enable_compilation_cache", False)


# jax versions whose multi-process CPU runs hang on programs from the persistent compilation cache (see above)
_CPU_CACHE_HANGS = tuple(int(p) for p in jax.__version__.split(".")[:2]) >= (0, 12)


class _StopOnSignal:
    """Records SIGTERM / SIGINT instead of dying, so the loop can save a checkpoint and exit (main thread only).

    Several processes: a signal reaches one process, but all must leave the loop at the same step (a process that
    left alone would wait in the checkpoint's barrier while the others wait for it in the next step's all-reduce).
    `agreed()` is called by every process at the same steps (the log and epoch boundaries, where the loop syncs
    anyway) and all-gathers the flags: every process sees the same answer.
    """

    def __init__(self):
        self.signum = 0
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def agreed(self) -> int:
        """The signal any process has received (0: none); a collective when there are several processes."""
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def _exit_stopped(ckpts, step, state, host, signum, stop, progress, workdir) -> None:
    """Saves `step`, waits for every save, says so and exits 0 (a stop by signal is a success: resume with the
    same command)."""
    progress.close()
    ckpts.save(step, state, host)
    ckpts.wait()
    ckpts.close()
    who = "" if stop.signum else " (received by another process)"
    print(f"stopped by signal {signum}{who} at step {step}: checkpoint saved in {workdir / 'checkpoints'}; run the "
          "same command to resume", file=sys.stderr, flush=True)
    raise SystemExit(0)


def _check_numerics(fetched: list[dict], first_step: int, cfg, ckpts, workdir: Path) -> None:
    """The numerics guard, at each host sync: stops the run (FloatingPointError, exit 2) at the first of the fetched
    steps whose loss or gradient norm is not finite (unless training.skip_nonfinite_updates skips such updates),
    or after which a weight is not finite (without logging.track_grad_norm, a non-finite gradient shows there);
    the checkpoints on disk are all from before it."""
    skipping = cfg.training.skip_nonfinite_updates > 0
    for i, m in enumerate(fetched):
        what, gradients = None, False
        if not skipping and not (np.isfinite(m["loss"]) and np.isfinite(m.get("grad_norm", 0.0))):
            what = ("loss" if not np.isfinite(m["loss"]) else "gradient") + f" at step {first_step + i}"
            gradients = True
        elif not m["params_finite"]:
            what = (f"weights after step {first_step + i}" + (f" ({cfg.training.skip_nonfinite_updates} non-finite "
                    "updates in a row were skipped first)" if skipping else ""))
        if what:
            raise NonFiniteError(_nonfinite_message(what, cfg, ckpts, workdir, gradients))


def _nonfinite_message(what: str, cfg, ckpts, workdir: Path, gradients: bool = False) -> str:
    last = ckpts.latest_step()
    kept = (f"the last good checkpoint (step {last}) is the newest in {workdir / 'checkpoints'}" if last is not None
            else "no checkpoint had been written yet")
    t = cfg.training
    fixes = [f"lower training.learning_rate (now {t.learning_rate:g})"]
    if t.gradient_clip_val == 0:
        fixes.append("clip gradients (training.gradient_clip_val=1.0)")
    if config_lib.precision(cfg) != "float32":
        fixes.append(f"train in float32 (training.use_amp=false; now {config_lib.precision(cfg)})")
    if gradients and t.skip_nonfinite_updates == 0:
        fixes.append("skip such steps (training.skip_nonfinite_updates=N)")
    return f"non-finite {what}; {kept}; {', '.join(fixes)}, or check the data"


def _printer(enabled: bool) -> Callable[[str], None]:
    """print to stderr, or nothing (logging.log_level above the message's level)."""
    return (lambda m: print(m, file=sys.stderr)) if enabled else (lambda m: None)


def _largest_weight(params) -> float:
    return float(max(jnp.max(jnp.abs(x.astype(jnp.float32))) for x in jax.tree.leaves(params)))


def epoch_steps(cfg, data) -> int:
    """Micro-steps of one epoch: the data's full batches, capped by training.max_steps_per_epoch, rounded down to
    a multiple of training.gradient_accumulation_steps."""
    steps_per_epoch = data.steps_per_epoch
    if cfg.training.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.training.max_steps_per_epoch)
    accum = cfg.training.gradient_accumulation_steps
    if steps_per_epoch < accum:
        raise ConfigError(f"config field 'training.gradient_accumulation_steps' = {accum} exceeds the "
                          f"{steps_per_epoch} steps of an epoch: lower it or the batch size")
    return steps_per_epoch - steps_per_epoch % accum


def data_json(data) -> dict:
    """A workdir's data.json: class names, image shape (H, W, C) and the normalisation of the pipeline `data`."""
    return {"class_names": list(data.class_names), "image_shape": list(data.image_shape),
            "mean": [float(v) for v in np.ravel(data.mean)], "std": [float(v) for v in np.ravel(data.std)]}


def train(cfg, workdir: str | os.PathLike, *, force: bool = False,
          on_step: Callable[[int], None] | None = None) -> dict:
    """Trains per `cfg` into `workdir`; returns the summary dict (also written to summary.json).

    on_step(step): called after each training step is dispatched (the step count before it), on the host, without
    a sync: a hook for tests and tools (e.g. jaxkd.faults slows steps down to open a window to kill a run in)."""
    t_start = time.time()
    # --- distributed -------------------------------------------------------------------------------------------
    maybe_initialize_distributed()
    is_main = jax.process_index() == 0
    multi = jax.process_count() > 1
    stop = _StopOnSignal()  # from here on a SIGTERM / SIGINT is answered by a checkpoint at the next sync point
    lock = ckpt_lib.WorkdirLock(workdir)  # one run per workdir (held by process 0)
    run = types.SimpleNamespace(ckpts=None, sinks=[], profiling=False, failed=True)  # what _train opened (error path)
    try:
        with jax.log_compiles(True) if cfg.logging.log_level == "DEBUG" else contextlib.nullcontext():
            summary = _train(cfg, Path(workdir), force, t_start, is_main, multi, stop, lock, run, on_step)
            run.failed = False
            return summary
    except OSError as e:  # a full or read-only disk under one of the run's own files: one line, saves finished
        raise ckpt_lib.workdir_write_error(e, Path(workdir), run.ckpts) from e
    finally:
        if run.profiling:
            jax.profiler.stop_trace()
        for sink in run.sinks:  # (TensorBoard, W&B: what is queued is written; W&B learns whether the run failed)
            sink.close(failed=run.failed)
        lock.release()
        stop.restore()


def _train(cfg, workdir, force, t_start, is_main, multi, stop, lock, run, on_step) -> dict:
    status = reporting.Status(workdir, enabled=is_main)
    level = config_lib.LOG_LEVELS.index(cfg.logging.log_level)
    say = is_main and level <= config_lib.LOG_LEVELS.index("INFO")  # progress and results
    warn = is_main and level <= config_lib.LOG_LEVELS.index("WARNING")  # notes
    stale = None  # the holder named by a lock file that a killed run left behind
    if is_main and workdir.is_dir():  # before --force may move a run aside; a new workdir is locked on creation
        stale = lock.acquire()
    # fp32 matmuls and convolutions in full fp32 unless TF32 is asked for (XLA:GPU's default on Ampere+ is TF32).
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if cfg.training.use_tf32 else "float32")
    cfg, notes = tasks.task_class(cfg).prepare_config(cfg)  # (config.json records what the task resolved)
    if cfg.logging.wandb and is_main:
        writers.require_wandb()  # (before the workdir is touched)
    for note in notes if warn else ():
        print(f"note: {note}", file=sys.stderr)
    if is_main:
        ckpt_lib.check_workdir(workdir, config_lib.to_json(cfg), force)
        if stale and warn:
            print(f"note: {lock.path} names a run that is no longer running ({stale}): it was killed; taking the "
                  "workdir over", file=sys.stderr)
    # --- mesh ----------------------------------------------------------------------------------------------------
    from jaxkd import data as data_lib

    mesh = data_lib.make_data_mesh()
    n_dev = mesh.devices.size
    if cfg.data.batch_size % n_dev:
        raise ConfigError(f"config field 'data.batch_size' = {cfg.data.batch_size} is not divisible by the {n_dev} "
                          f"devices: use a multiple of {n_dev}")
    # --- input ---------------------------------------------------------------------------------------------------
    data = data_lib.DataPipeline.from_config(cfg, mesh=mesh)
    aug = cfg.data.augmentation
    mixing = aug.mixup.enabled or aug.cutmix.enabled
    if data.dataset.num_classes != cfg.model.num_classes:  # (the pipeline widens its targets to a wider model)
        k = data.dataset.num_classes
        raise ConfigError(f"config field 'model.num_classes' = {cfg.model.num_classes} but the data has "
                          f"{k} classes: set --config.model.num_classes={k}")
    if tuple(data.image_shape) != tuple(config_lib.image_shape(cfg) or data.image_shape):
        raise ConfigError(f"the data's images are {data.image_shape} but the config expects "
                          f"{config_lib.image_shape(cfg)}: check data.dataset / data.image_size")
    steps_per_epoch = epoch_steps(cfg, data)
    accum = cfg.training.gradient_accumulation_steps
    epochs = cfg.training.num_epochs
    profile = [int(x) for x in cfg.logging.profile_steps]  # [start, stop): 1-based training steps to trace
    if profile and profile[1] - 1 > epochs * steps_per_epoch:
        raise ConfigError(f"config field 'logging.profile_steps' = {profile} traces steps {profile[0]}.."
                          f"{profile[1] - 1}, but the run has {epochs * steps_per_epoch} training steps ({epochs} "
                          f"epochs of {steps_per_epoch}): give a window inside them, e.g. "
                          f"[{min(2, epochs * steps_per_epoch)}, {min(2, epochs * steps_per_epoch) + 1}]")
    if (cfg.logging.tensorboard or cfg.logging.wandb) and cfg.logging.log_dir and is_main:
        paths.output_dir(cfg.logging.log_dir, "config field 'logging.log_dir'")
    # --- model ---------------------------------------------------------------------------------------------------
    imagenet = None
    if cfg.model.pretrained_path:  # ImageNet weights (convnext_v2_tiny), read and checked before the model is built
        from jaxkd.interop import pretrained

        imagenet = pretrained.pretrained_weights(cfg)
    model = models.build(cfg, nnx.Rngs(params=cfg.seed, dropout=cfg.seed + 1))
    if imagenet is not None:  # (the stem and the head keep their fresh initialisation)
        _printer(warn)(f"note: {pretrained.load_pretrained(model, imagenet)}")
    task = tasks.from_config(cfg, data)  # (its teacher loaded and checked against the data)
    trainable = task.trainable(model, nnx.Rngs(cfg.seed + 2))
    gd_train, gd_eval, params, rest = steps.split_model(trainable)
    # --- update --------------------------------------------------------------------------------------------------
    tx = optim.make_optimizer(cfg, steps_per_epoch // accum, params)
    schedule = optim.make_schedule(cfg, steps_per_epoch // accum)
    fp16 = config_lib.precision(cfg) == "float16"
    state = steps.init_state(params, rest, tx, cfg.seed, swa=cfg.training.use_swa, ema=cfg.training.ema.enabled,
                             fp16=fp16)
    # --- shard: parameters and optimiser state replicated over the mesh, batches split over 'data' ---------------
    state = steps.replicate(state, mesh)
    train_step = steps.make_train_step(gd_train, task, tx, steps_per_epoch=steps_per_epoch, schedule=schedule,
                                       accumulation=accum, grad_norm=cfg.logging.track_grad_norm,
                                       ema_decay=cfg.training.ema.decay if cfg.training.ema.enabled else None)
    eval_step = steps.make_eval_step(gd_eval, data.num_classes, task.inference_logits, task.eval_metrics)
    # The frozen teacher's state: an input of every step (replicated, never donated, never checkpointed).
    aux = steps.replicate(task.teacher.state, mesh) if task.teacher is not None else None
    # --- checkpoint ----------------------------------------------------------------------------------------------
    host = {"epoch": 0, "best_val_accuracy": -1.0, "early_stop": {"best": math.inf, "bad": 0}, "plateau": None,
            "stopped_early": False}
    plateau = None
    if cfg.training.scheduler == "plateau":
        p = cfg.training.lr_scheduler_params
        plateau = optim.PlateauTracker(factor=p.factor, patience=p.patience)
    if is_main:
        lock.acquire()  # (creates the workdir)
        (workdir / "config.json").write_text(config_lib.to_json(cfg) + "\n")
        reporting.write_json_atomic(workdir / "data.json", data_json(data))
    ckpts = run.ckpts = ckpt_lib.Checkpoints(workdir, keep=cfg.logging.keep_checkpoints)
    for partial in ckpts.removed_partial if warn else ():
        print(f"note: removed {partial}, a checkpoint a killed run left half-written", file=sys.stderr)
    writer = reporting.MetricWriter(workdir / "metrics.jsonl" if is_main else None)
    start_step, restored, meta = ckpts.restore_newest_good(state, log=_printer(warn))
    if start_step is not None:
        state, host = restored, meta
        if plateau is not None and host.get("plateau"):
            plateau.load_state_dict(host["plateau"])
        damaged = writer.truncate_after(start_step)  # rows a killed run logged after its last checkpoint replay
        if damaged and warn:
            print(f"note: {workdir / 'metrics.jsonl'}: dropped {damaged} partly written line(s) a killed run left",
                  file=sys.stderr)
        if say:
            print(f"resuming from step {start_step} (epoch {start_step / steps_per_epoch:.2f})", flush=True)
    if is_main:  # TensorBoard, W&B: each gets every metrics.jsonl row
        run.sinks = writers.open_sinks(cfg, workdir, start_step or 0, cfg_json=config_lib.to_json(cfg),
                                       flat_config=config_lib.flatten(cfg), say=say)
        writer.sinks.extend(run.sinks)
    start_step = start_step or 0
    status.set("setup", start_step)  # (only now: a run refused on a bad workdir leaves it as it was)
    stopping = 0  # the signal every process has agreed to stop on (see _StopOnSignal)
    swa_from = optim.swa_start(cfg)
    es = cfg.training.early_stopping
    progress = reporting.Progress(say and cfg.logging.progress_bar, epochs * steps_per_epoch, start_step)
    images_per_step = cfg.data.batch_size
    # --- loop ----------------------------------------------------------------------------------------------------
    step = start_step
    epoch = step // steps_per_epoch
    first_step_s = None
    while epoch < epochs and not host["stopped_early"]:
        progress.set_description(f"epoch {epoch + 1}/{epochs}")
        status.set("train", step)
        pending, timer, since = [], reporting.Timer(), 0
        for batch in data.train_batches(epoch, step - epoch * steps_per_epoch,
                                        num_steps=steps_per_epoch - (step - epoch * steps_per_epoch)):
            if profile and is_main and step + 1 == profile[0]:
                jax.profiler.start_trace(str(workdir / "profile"))
                run.profiling = True
            state, metrics = train_step(state, batch_dict(batch, mixing), aux)
            if run.profiling and step + 1 == profile[1] - 1:
                jax.block_until_ready(metrics)
                jax.profiler.stop_trace()
                run.profiling = False
                print(f"profiled training steps {profile[0]}..{profile[1] - 1} into {workdir / 'profile'} (view: "
                      f"tensorboard --logdir {workdir / 'profile'}, or xprof)", file=sys.stderr, flush=True)
            if first_step_s is None:  # one sync, once: the time to the first finished step (compilation included)
                jax.block_until_ready(metrics)
                first_step_s = time.time() - t_start
                if say:
                    print(f"first step done {first_step_s:.1f} s after start", file=sys.stderr, flush=True)
                for sink in run.sinks if step == 0 else ():  # what the model (and the teacher) sees
                    sink.first_batch(batch, data.mean, data.std)
            if on_step is not None:
                on_step(step)
            pending.append(metrics)
            step += 1
            since += 1
            last_of_epoch = step % steps_per_epoch == 0
            # one process alone checks its flag every step; several agree on it at the log and epoch boundaries
            if since == cfg.training.log_every_steps or last_of_epoch or (stop.signum and not multi):
                stopping = stop.agreed()
                fetched = jax.device_get(pending)
                _check_numerics(fetched, step - len(fetched) + 1, cfg, ckpts, workdir)
                mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "params_finite"}
                mean["images_per_s"] = since * images_per_step / max(timer.lap(), 1e-9)
                writer.write("train", step, step / steps_per_epoch, **mean)
                progress.update(since, loss=mean["loss"], acc=mean.get("accuracy", float("nan")), lr=mean["lr"],
                                img_s=f"{mean['images_per_s']:.0f}")
                pending, since = [], 0
            if stopping:
                break
        # SIGTERM / SIGINT (on any process): all save the same step and exit 0; the same command resumes there.
        # Mid-epoch: at once; on an epoch's last step, after its end-of-epoch work (a resume starts the next epoch).
        if stopping and step % steps_per_epoch:
            _exit_stopped(ckpts, step, state, dict(host, epoch=step // steps_per_epoch), stopping, stop, progress,
                          workdir)
        epoch = step // steps_per_epoch
        # --- end of epoch: SWA, validation, plateau, early stopping, checkpoint ------------------------------
        if swa_from is not None and epoch - 1 >= swa_from:
            state = steps.swa_update(state)
        if epoch % cfg.training.eval_every_epochs == 0 or epoch == epochs:
            status.set("evaluate", step)
            val = evaluate_split(eval_step, steps.ema_params_or_params(state), state.rest, data, "val", aux)
            if val and not math.isfinite(val["loss"]):  # (BatchNorm's training mode hides weights out of range)
                raise NonFiniteError(_nonfinite_message(
                    f"validation loss ({val['loss']}) after epoch {epoch}, step {step}, although every training "
                    f"loss was finite: the largest weight is {_largest_weight(state.params):.3g}", cfg, ckpts,
                    workdir))
            if val:
                writer.write("val", step, epoch, **{k: v for k, v in val.items() if k != "confusion"})
                if val["accuracy"] > host["best_val_accuracy"]:
                    host["best_val_accuracy"] = val["accuracy"]
                    status.set("checkpoint", step)
                    ckpts.save(step, state, host, best=True)
                if plateau is not None:
                    state = state.replace(lr_scale=jnp.asarray(plateau.update(val["loss"]), jnp.float32))
                    host["plateau"] = plateau.state_dict()
                if es.enabled:
                    if val["loss"] < host["early_stop"]["best"] - es.min_delta:
                        host["early_stop"] = {"best": val["loss"], "bad": 0}
                    else:
                        host["early_stop"]["bad"] += 1
                        if host["early_stop"]["bad"] >= es.patience:
                            host["stopped_early"] = True
                            if say:
                                print(f"early stopping after epoch {epoch}: validation loss has not improved by "
                                      f"{es.min_delta} for {es.patience} epochs", flush=True)
        host["epoch"] = epoch
        if stopping:
            _exit_stopped(ckpts, step, state, host, stopping, stop, progress, workdir)
        if epoch % cfg.logging.save_frequency == 0 or epoch == epochs or host["stopped_early"]:
            status.set("checkpoint", step)
            ckpts.save(step, state, host)
    progress.close()
    if not multi:  # one process: a signal from here on ends the run (the same command redoes the final phase);
        stop.restore()  # several keep the handler and finish together, since one leaving alone would hang the rest
    ckpts.wait()
    # --- evals: final weights, SWA (with recomputed BatchNorm statistics), EMA; test only here -----------------
    results = {}
    candidates = {"final": (state.params, state.rest)}
    if state.swa_params is not None and int(state.swa_count) > 0:
        # BatchNorm statistics for the averaged weights, from one pass over the (augmented) training stream
        images = (b.image for b in data.train_batches(0, num_steps=steps_per_epoch))
        status.set("swa_bn", step)
        candidates["swa"] = (state.swa_params, bn_recompute(gd_train, state.swa_params, state.rest, images,
                                                            task.student))
    if state.ema_params is not None:
        candidates["ema"] = (state.ema_params, state.rest)
    status.set("final_evaluate", step)
    for name, (p, r) in candidates.items():
        results[name] = {"val": evaluate_split(eval_step, p, r, data, "val", aux),
                         "test": evaluate_split(eval_step, p, r, data, "test", aux)}
    final = results["final"]
    summary = {
        "experiment_name": cfg.experiment_name, "test_accuracy": final["test"]["accuracy"],
        "test_loss": final["test"]["loss"], "test_top5": final["test"]["top5"],
        "val_accuracy": final["val"].get("accuracy"), "val_loss": final["val"].get("loss"),
        "epochs": epoch, "steps": step, "wall_s": time.time() - t_start, "devices": n_dev,
        "processes": jax.process_count(), "stopped_early": host["stopped_early"],
        "params": models.count_params(model), "params_sha256": ckpt_lib.params_sha256(state.params),
        "best_val_accuracy": host["best_val_accuracy"], "time_to_first_step_s": first_step_s,
        "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
        "versions": {"jax": jax.__version__, "flax": _version("flax"), "optax": _version("optax")},
    }
    for name in ("swa", "ema"):
        if name in results:
            summary[f"{name}_test_accuracy"] = results[name]["test"]["accuracy"]
            summary[f"{name}_val_accuracy"] = results[name]["val"].get("accuracy")
            summary[f"{name}_params_sha256"] = ckpt_lib.params_sha256(candidates[name][0])
    export_params, export_rest = state.params, state.rest
    if trainable is not model:  # the task trains more than the model (projectors): export the model alone
        _, export_params, export_rest = nnx.split(task.student(nnx.merge(gd_eval, state.params, state.rest)),
                                                  nnx.Param, ...)
    if not math.isfinite(final["test"]["loss"]) or not bool(jax.jit(steps.all_finite)(export_params)):
        raise NonFiniteError(_nonfinite_message(
            f"test loss ({final['test']['loss']}) of the final weights (largest weight "
            f"{_largest_weight(export_params):.3g}); the model was not exported", cfg, ckpts, workdir))
    status.set("export", step)
    ckpt_lib.export_model(workdir / "model", export_params, export_rest)  # collective: every process takes part
    status.set("report", step)
    if is_main:
        report = reporting.classification_report(final["test"]["confusion"], data.class_names)
        report.update({k: final["test"][k] for k in ("top1", "top3", "top5", "loss")})
        text = reporting.format_report(report, f"{cfg.experiment_name}: test split ({final['test']['count']} images)")
        (workdir / "test_report.txt").write_text(text + "\n")
        reporting.write_json_atomic(workdir / "report.json", {
            name: {split: {k: v for k, v in r.items()} for split, r in res.items()} for name, res in results.items()})
        reporting.plot_training_curves(writer.read(), workdir / "training_curves.png")
        reporting.plot_confusion_matrix(final["test"]["confusion"], data.class_names,
                                        workdir / "confusion_matrix.png", title=f"{cfg.experiment_name} (test)")
        reporting.write_json_atomic(workdir / "summary.json", summary)
        for sink in run.sinks:
            sink.final(config_lib.flatten(cfg), summary, step, workdir / "confusion_matrix.png")
    if say:
        print(text)
        extra = "".join(f", {n} {summary[f'{n}_test_accuracy']:.4f}" for n in ("swa", "ema") if n in results)
        print(f"test accuracy {summary['test_accuracy']:.4f}{extra} ({summary['wall_s']:.0f} s)", flush=True)
    status.set("done", step)
    ckpts.close()
    return summary


def main(argv=None, on_step: Callable[[int], None] | None = None) -> int:
    parser = config_lib.ArgumentParser(prog="python -m jaxkd.train", description="Train a jaxkd model.")
    config_lib.add_config_args(parser)
    parser.add_argument("--workdir", required=True, help="output directory (resumes when it holds a checkpoint)")
    parser.add_argument("--force", action="store_true", help="reuse a workdir that holds a different run")
    args, cfg = config_lib.parse_config_args(parser, argv)
    train(cfg, paths.output_dir(args.workdir, "--workdir"), force=args.force, on_step=on_step)
    return 0
