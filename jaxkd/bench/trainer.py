"""``python -m jaxkd.bench trainer``: the trainer's loop against its bare step, per preset, in one run.

For each preset (``configs/NAME.py``; default cifar_cnn, vit_cifar, deit_cifar, mnist_cnn) it measures, at one batch:

* ``step``: the bare training step (``jaxkd.bench._jax_side.JaxCase``: the trainer's own jitted step, donated
  state, KD teacher inside the step) on ONE fixed pre-made batch, images/s;
* ``pipeline``: the input pipeline alone, :meth:`DataPipeline.train_batches` with the preset's real augmentation
  (crop / flip / ColorJitter / AutoAugment / RandAugment / Cutout, rotation / translation for MNIST, and the
  preset's MixUp / CutMix), images/s;
* ``trainer``: both together as ``jaxkd.train`` runs them: each batch of ``train_batches`` handed to the step with
  asynchronous dispatch and no host synchronisation per step (one ``block_until_ready`` at the end), images/s.

``ratio = trainer / step`` (goal on a GPU: >= 0.9) and ``pipeline_share = t_pipeline / (t_pipeline + t_step)`` per
batch, the fraction of a step's time the pipeline would take if nothing overlapped (goal on CPU for DeiT-Tiny:
< 5 %). On CPU the pipeline and the step share the same cores, so ``ratio`` is about ``1 - pipeline_share``.
The JSON also has each phase's process CPU time per batch (``cpu_ms``, ``pipeline_share_cpu``): on a CPU machine
shared with other work, wall times swing with the load and CPU time is the steadier figure.

Data: synthetic uniform uint8 images of the preset's shape (CIFAR 32x32x3, MNIST 28x28x1, ...), 10 classes,
made in-process; the pipeline's cost does not depend on the pixel values (every augmentation branch is computed
for every sample whatever the pixels; only the data-dependent table sizes, which are static, matter), so no
dataset is needed. A distillation preset gets a randomly initialised teacher of its ``teacher_model_type``
(``distill._teacher_cfg``) instead of loading a checkpoint: only its cost matters.
Timing: per preset, compile everything first, then ``--rounds`` rounds of (step, pipeline, trainer), each over
``--steps`` batches ending in ``block_until_ready``; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from jaxkd.config import ConfigError as UsageError  # bad options: one error: line, exit 2

DESCRIPTION = "trainer loop (pipeline + step) vs the bare step and the input pipeline alone, images/s per preset"

DEFAULT_PRESETS = "cifar_cnn,vit_cifar,deit_cifar,mnist_cnn"
#: (batch, steps, rounds) per setting when not given
_SIZES = {"cpu": (64, 4, 3), "quick": (8, 2, 1), "gpu": (0, 30, 3)}  # gpu batch 0 = the preset's own


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--presets", default=DEFAULT_PRESETS,
                   help="comma-separated configs/NAME.py presets (NAME or NAME:variant; default %(default)s)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="global batch for every preset (default: 64 on CPU, 8 with --quick, the preset's on GPU)")
    p.add_argument("--steps", type=int, default=0, help="batches per timed phase (default 4 CPU, 2 quick, 30 GPU)")
    p.add_argument("--rounds", type=int, default=0,
                   help="timed rounds per preset, median reported (default 3, 1 quick)")
    p.add_argument("--quick", action="store_true", help="small batch, few steps, one round (CI smoke)")
    p.add_argument("--device", default="cpu", help="cpu or gpu (the default backend of a GPU machine)")
    p.add_argument("--examples", type=int, default=0,
                   help="synthetic training examples (default: enough for every batch of a round without repeats)")


def _check(args) -> None:
    if args.device not in ("cpu", "gpu"):
        raise UsageError(f"--device {args.device!r}: use cpu or gpu")
    for name in ("batch_size", "steps", "rounds", "examples"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if not [p for p in args.presets.split(",") if p]:
        raise UsageError("--presets: give at least one configs/NAME.py preset, e.g. --presets cifar_cnn")


def synthetic_dataset(shape: tuple[int, int, int], n_train: int, n_test: int, num_classes: int, seed: int = 0):
    """Uniform random uint8 images (N, H, W, C) and labels in [0, num_classes): a :class:`jaxkd.data.Dataset`."""
    from jaxkd.data import Dataset

    rng = np.random.default_rng(seed)
    h, w, c = shape
    return Dataset(rng.integers(0, 256, (n_train, h, w, c), dtype=np.uint8),
                   rng.integers(0, num_classes, n_train).astype(np.int32),
                   rng.integers(0, 256, (n_test, h, w, c), dtype=np.uint8),
                   rng.integers(0, num_classes, n_test).astype(np.int32),
                   tuple(f"class{i}" for i in range(num_classes)), "synthetic", "random")


def _config(preset: str, batch: int, overrides: list[str]):
    from ml_collections import ConfigDict

    from jaxkd import config as config_lib

    cfg = config_lib.load(preset, list(overrides))  # a bare NAME[:variant] is looked up in the repository's configs/
    cfg = ConfigDict(cfg.to_dict())
    cfg.data.batch_size = int(batch or cfg.data.batch_size)
    cfg.data.eval_batch_size = cfg.data.batch_size
    cfg.data.max_examples, cfg.data.val_size = 0, 0
    return cfg


def _median(xs):
    return statistics.median(xs)


def time_preset(preset: str, batch: int, steps: int, rounds: int, examples: int, overrides: list[str]) -> dict:
    """The three measurements of one preset (see the module docstring); seconds per batch and images/s."""
    import jax

    from jaxkd import config as config_lib
    from jaxkd.bench import _jax_side as js
    from jaxkd.data import DataPipeline
    from jaxkd.tasks import kd as distill
    from jaxkd.train.evaluators import batch_dict as _batch_dict

    cfg = _config(preset, batch, overrides)
    b = int(cfg.data.batch_size)
    shape = config_lib.image_shape(cfg) or (32, 32, 3)
    aug = cfg.data.augmentation
    mixing = bool(aug.mixup.enabled or aug.cutmix.enabled)
    n_train = examples or b * (steps * 2 + 2)  # one epoch holds a whole round: no epoch turnover inside a phase
    data = DataPipeline.from_config(cfg, dataset=synthetic_dataset(shape, n_train, b, int(cfg.model.num_classes)))
    if data.steps_per_epoch < 1:
        raise UsageError(f"--examples {n_train} is less than one batch of {b}")

    def batches(count: int, epoch0: int = 0):
        """``count`` training batches from ``epoch0`` on, running into the next epochs as needed."""
        epoch = epoch0
        while count > 0:
            for bt in data.train_batches(epoch, num_steps=count):
                yield bt
                count -= 1
            epoch += 1

    t0 = time.perf_counter()
    first = next(batches(1))
    jax.block_until_ready(first)
    pipe_compile_s = time.perf_counter() - t0
    host = jax.device_get(_batch_dict(first, mixing))
    teacher_cfg = distill._teacher_cfg(cfg) if cfg.distillation.enabled else None
    t0 = time.perf_counter()
    case = js.JaxCase(cfg, teacher_cfg, host)  # compiles the step on the fixed batch
    step_compile_s = time.perf_counter() - t0
    case.steps(1)

    def timed(fn, n: int) -> tuple[float, float]:
        """(wall, process CPU) seconds per batch of ``fn()`` running n batches."""
        t, c = time.perf_counter(), time.process_time()
        fn()
        return (time.perf_counter() - t) / n, (time.process_time() - c) / n

    def run_step():
        loss = case.steps(steps)
        if not np.isfinite(loss):
            raise ValueError(f"{preset}: the benchmark step produced a non-finite loss ({loss})")

    def run_pipeline():
        last = None
        for last in batches(steps):  # noqa: B007  (the last batch is waited on below)
            pass
        jax.block_until_ready(last)

    def run_trainer():  # jaxkd.train's loop: no host sync per step
        pending = []
        for bt in batches(steps, epoch0=1):
            case.state, metrics = case.fn(case.state, _batch_dict(bt, mixing), case.aux)
            pending.append(metrics)
        jax.block_until_ready((case.state, pending))

    def phase_step():
        return timed(run_step, case.steps_per_call(steps))

    def phase_pipeline():
        return timed(run_pipeline, steps)

    def phase_trainer():
        return timed(run_trainer, steps)

    phase_trainer()  # the trainer's dispatch path once untimed (pipeline arrays into the step)
    t_step, t_pipe, t_loop = [], [], []
    for _ in range(rounds):
        t_step.append(phase_step())
        t_pipe.append(phase_pipeline())
        t_loop.append(phase_trainer())
    s, p, l = (_median([w for w, _ in t]) for t in (t_step, t_pipe, t_loop))
    cs, cp, cl = (_median([c for _, c in t]) for t in (t_step, t_pipe, t_loop))
    model = cfg.model.model_type + (f"-{cfg.vit.variant}" if cfg.model.model_type in ("deit", "vit") else "")
    ops_on = [k for k in ("random_crop", "random_flip", "random_rotation", "random_affine", "color_jitter",
                          "auto_augment", "randaugment", "cutout", "mixup", "cutmix") if aug[k].enabled]
    return {"preset": preset, "model": model, "teacher": teacher_cfg.model.model_type if teacher_cfg else None,
            "batch": b, "steps": steps, "rounds": rounds, "image_shape": list(shape), "augmentation": ops_on,
            "step_images_per_s": b / s, "pipeline_images_per_s": b / p, "trainer_images_per_s": b / l,
            "ratio": s / l, "pipeline_share": p / (p + s), "step_ms": 1e3 * s, "pipeline_ms": 1e3 * p,
            "trainer_ms": 1e3 * l, "rounds_ms": {"step": [1e3 * w for w, _ in t_step],
                                                 "pipeline": [1e3 * w for w, _ in t_pipe],
                                                 "trainer": [1e3 * w for w, _ in t_loop]},
            # process CPU time per batch (all threads): on a shared CPU machine a steadier measure of the work
            # than wall time; pipeline_share_cpu is the pipeline's share of the CPU work of pipeline + step
            "cpu_ms": {"step": 1e3 * cs, "pipeline": 1e3 * cp, "trainer": 1e3 * cl},
            "pipeline_share_cpu": cp / (cp + cs),
            "compile_s": {"pipeline": pipe_compile_s, "step": step_compile_s}}


def format_table(rows: list[dict]) -> str:
    head = (f"{'preset':<14} {'model':<16} {'batch':>5} {'step img/s':>11} {'pipeline img/s':>15} "
            f"{'trainer img/s':>14} {'trainer/step':>12} {'pipeline share':>15} {'(by CPU time)':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['preset']:<14} {r['model']:<16} {r['batch']:>5} {r['step_images_per_s']:>11,.0f} "
                     f"{r['pipeline_images_per_s']:>15,.0f} {r['trainer_images_per_s']:>14,.0f} "
                     f"{r['ratio']:>12.2f} {100 * r['pipeline_share']:>14.1f}% {100 * r['pipeline_share_cpu']:>13.1f}%")
    return "\n".join(lines)


def run(args) -> dict:
    """Entry point of the subcommand; returns the JSON figures (and prints the table)."""
    _check(args)
    if "jax" not in sys.modules and args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from jaxkd.bench._jax_side import device_info

    if args.device == "gpu" and jax.default_backend() != "gpu":
        raise UsageError(f"--device gpu: JAX's backend is {jax.default_backend()!r}; run on a machine with a GPU "
                         "build of jax, or use --device cpu")
    if args.device == "cpu" and jax.default_backend() != "cpu":
        raise UsageError("--device cpu: JAX has already started on another backend; set JAX_PLATFORMS=cpu")
    setting = "quick" if args.quick else args.device
    d_batch, d_steps, d_rounds = _SIZES[setting]
    batch, steps, rounds = args.batch_size or d_batch, args.steps or d_steps, args.rounds or d_rounds
    info = device_info()
    print(f"trainer vs step on {info['devices']} x {info['device_kind']} ({info['backend']}); "
          f"{steps} batches per phase, {rounds} round(s), synthetic uint8 data", flush=True)
    rows = []
    for preset in [p for p in args.presets.split(",") if p]:
        r = time_preset(preset, batch, steps, rounds, args.examples, list(getattr(args, "overrides", None) or []))
        rows.append(r)
        print(f"  {preset}: step {r['step_ms']:.1f} ms, pipeline {r['pipeline_ms']:.1f} ms, trainer "
              f"{r['trainer_ms']:.1f} ms per batch of {r['batch']} "
              f"(compile: pipeline {r['compile_s']['pipeline']:.1f} s, "
              f"step {r['compile_s']['step']:.1f} s)", flush=True)
    print(format_table(rows))
    deit = [r for r in rows if r["model"].startswith("deit")]
    if info["backend"] == "cpu" and deit:
        print("input pipeline share of a DeiT step on CPU: "
              + ", ".join(f"{r['preset']} {100 * r['pipeline_share']:.1f} % (by CPU time "
                         f"{100 * r['pipeline_share_cpu']:.1f} %)" for r in deit) + " (goal < 5 %)")
    return {"device": info, "setting": setting, "data": "synthetic uniform uint8 of each preset's image shape",
            "goal": "trainer/step >= 0.9 on GPU; pipeline share of a DeiT-Tiny step < 5 % on CPU",
            "presets": {r["preset"]: r for r in rows}}
