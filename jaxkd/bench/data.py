"""``python -m jaxkd.bench data``: throughput of the CIFAR-10 training input pipeline and its share of a step.

Measures, on the default device(s):

* the input pipeline: augmented images per second of :meth:`DataPipeline.train_batches` with the preset's
  augmentation (default ``configs/vit_cifar.py``: the original CIFAR pipeline — crop, flip, ColorJitter,
  AutoAugment, RandAugment, Cutout — plus MixUp 0.8), on CIFAR-shaped random uint8 images unless ``--source``
  names real data;
* one DeiT-Tiny training step at the same batch (the preset's model): ``value_and_grad`` of the soft-target
  cross-entropy and an ``optax.adamw`` update, under ``jax.jit``.

Both data placements are timed side by side (``--placement both``, the default): ``device`` (the uint8 dataset on
every device, gathered there) and ``host`` (each batch's rows read from host memory — memory-mapped with an ``npy:``
source — and put on the devices, one batch ahead on a thread). ``share_of_step = t_data / (t_data + t_step)``, per
batch: the fraction of a training step's time the input pipeline would take if nothing overlapped (the goal is
under 5 %). Each phase is compiled first, then timed over ``--steps`` batches ending in ``block_until_ready``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DESCRIPTION = "augmented images/s of the CIFAR-10 training pipeline and its share of a DeiT-Tiny training step"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/vit_cifar.py",
                   help="preset whose data pipeline and model are timed (accepts --config.a.b=value overrides)")
    p.add_argument("--source", default="", help="a data.source to time on (default: 50,000 random 32x32x3 images)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="global batch (default: the preset's on an accelerator, 64 on CPU)")
    p.add_argument("--steps", type=int, default=0, help="timed batches per phase (default 50 accelerator / 3 CPU)")
    p.add_argument("--skip-model", action="store_true", help="time only the input pipeline")
    p.add_argument("--placement", choices=("both", "device", "host"), default="both",
                   help="data placement(s) to time (default both, side by side)")


def random_cifar(n_train: int = 50_000, n_test: int = 10_000, seed: int = 0):
    """CIFAR-shaped random data: uint8 (N, 32, 32, 3) images, 10 classes."""
    from jaxkd.data import Dataset

    rng = np.random.default_rng(seed)
    return Dataset(rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                   rng.integers(0, 10, n_train).astype(np.int32),
                   rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
                   rng.integers(0, 10, n_test).astype(np.int32), tuple(f"class{i}" for i in range(10)),
                   "random-cifar", "random")


def _batches(pipe, count: int):
    """``count`` training batches, running on into the next epochs as needed."""
    epoch = 0
    while True:
        for b in pipe.train_batches(epoch):
            yield b
            count -= 1
            if count == 0:
                return
        epoch += 1


def time_pipeline(pipe, steps: int) -> float:
    """Seconds per batch of the input pipeline alone (after one compiling batch)."""
    import jax

    jax.block_until_ready(next(_batches(pipe, 1)))
    t0 = time.perf_counter()
    last = None
    for last in _batches(pipe, steps):  # noqa: B007  (the last batch is waited on below)
        pass
    jax.block_until_ready(last)
    return (time.perf_counter() - t0) / steps


def time_train_step(config, batch, steps: int) -> float:
    """Seconds per DeiT training step (CE on soft targets, AdamW) on ``batch``, after one compiling step."""
    import jax
    import optax
    from flax import nnx

    from jaxkd.models import build

    model = nnx.jit(lambda: build(config, nnx.Rngs(0)))()  # one compiled init instead of many small ones
    model.train()
    tx = optax.adamw(config.training.learning_rate, weight_decay=config.training.weight_decay)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)

    def step(params, rest, opt_state, images, targets):
        def loss_fn(params, rest):
            params, rest = jax.tree.map(lambda x: x, (params, rest))  # fresh Variables at this trace level
            m = nnx.merge(graphdef, params, rest)
            logits = m(images).astype(np.float32)
            return optax.softmax_cross_entropy(logits, targets).mean(), nnx.split(m, nnx.Param, ...)[2]

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    images, targets = batch.image, batch.target
    params, rest, opt_state, loss = step(params, rest, opt_state, images, targets)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(steps):
        params, rest, opt_state, loss = step(params, rest, opt_state, images, targets)
    jax.block_until_ready(loss)
    if not np.isfinite(float(loss)):
        raise ValueError(f"the benchmark step produced a non-finite loss ({float(loss)})")
    return (time.perf_counter() - t0) / steps


def run(args) -> dict:
    import jax
    from ml_collections import ConfigDict

    from jaxkd import config as config_lib
    from jaxkd.data import DataPipeline, load_arrays

    config = config_lib.load(args.config, getattr(args, "overrides", []))
    on_cpu = jax.default_backend() == "cpu"
    batch_size = args.batch_size or (64 if on_cpu else int(config.data.batch_size))
    steps = args.steps or (3 if on_cpu else 50)
    config = ConfigDict(config.to_dict())
    config.data.batch_size = batch_size
    config.data.max_examples = 0
    if args.source:
        dataset = load_arrays(args.source, data_dir=config.data.data_dir, image_size=config.data.image_size)
        config.data.source = args.source
    else:
        dataset = random_cifar()
    result = {
        "batch_size": batch_size,
        "steps": steps,
        "config": args.config,
        "source": args.source or "random uint8 (50000, 32, 32, 3)",
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})",
        "placements": {},
    }
    pipe = None
    for placement in (("device", "host") if getattr(args, "placement", "both") == "both" else (args.placement,)):
        config.data.placement = placement
        pipe = DataPipeline.from_config(config, dataset=dataset)
        t_data = time_pipeline(pipe, steps)
        result["placements"][placement] = {"images_per_s": batch_size / t_data, "data_ms_per_batch": 1e3 * t_data}
        print(f"input pipeline, data on the {placement + ':':7} {batch_size / t_data:>9,.0f} augmented images/s "
              f"({1e3 * t_data:.1f} ms per batch of {batch_size}) on {result['device']}")
    first = next(iter(result["placements"].values()))
    result.update(first)  # the first placement's figures at the top level too
    if not args.skip_model:
        t_step = time_train_step(config, next(pipe.train_batches(0)), steps)
        model = (f"DeiT-{config.vit.variant.title()} (depth {config.vit.depth})" if config.model.model_type == "deit"
                 else config.model.model_type)
        for r in result["placements"].values():
            t_data = r["data_ms_per_batch"] / 1e3
            r["share_of_step"] = t_data / (t_data + t_step)
        result.update(step_ms=1e3 * t_step, share_of_step=first["share_of_step"], model=model)
        shares = ", ".join(f"data on the {k} {100 * r['share_of_step']:.1f} %" for k, r in result["placements"].items())
        print(f"{model} train step: {result['step_ms']:.1f} ms; input pipeline share: {shares} (goal < 5 %)")
    return result
