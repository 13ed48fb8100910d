"""The jaxkd side of ``python -m jaxkd.bench models``: the trainer's own jitted training step on a fixed batch.

:class:`JaxCase` builds a step exactly as ``jaxkd.train.loop.train`` does: ``models.build`` of the preset's model,
``tasks.make_task`` (``Supervised`` or ``distill.KnowledgeDistillation`` with a frozen AdaptiveCNN teacher as the
step's ``aux`` input), ``steps.split_model`` / ``optim.make_optimizer`` / ``steps.init_state`` /
``steps.make_train_step``, the state replicated over a 1-D 'data' mesh of every device (``steps.replicate``) and
the batch split over it (``NamedSharding(mesh, P('data'))``). The only difference from a training run is the batch:
the same random arrays every step (no input pipeline), so the timing is the step alone.

Benchmark-only variants, for the experiments of the performance report (never used by the trainer):

* ``scan=K``: K steps per dispatch, the trainer's step function scanned (``lax.scan``) over K stacked batches;
* ``donate=False``: the same step function jitted without donating the state;
* ``before``: earlier implementations of the same math (:data:`BEFORE`; subclasses of the production modules that
  :func:`apply_before` gives the built model's modules, never a change to the production classes), so that a
  model-code change can be timed before vs after in one run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def make_batch(cfg, batch_size: int, mixing: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random host batch for `cfg`: image (B,H,W,C) float32 ~ N(0,1) (normalised images), label (B,) int32,
    target (B,K) float32 soft targets (a 0.7/0.3 mix of two labels) when the preset mixes (MixUp/CutMix)."""
    from jaxkd import config as config_lib

    h, w, c = config_lib.image_shape(cfg)
    k = cfg.model.num_classes
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, batch_size).astype(np.int32)
    out = {"image": rng.standard_normal((batch_size, h, w, c), dtype=np.float32), "label": labels,
           "mask": np.ones(batch_size, bool)}
    if mixing:
        other = np.roll(labels, 1)
        out["target"] = (0.7 * np.eye(k, dtype=np.float32)[labels] + 0.3 * np.eye(k, dtype=np.float32)[other])
    return out


class JaxCase:
    """The trainer's training step for `cfg` on a fixed batch.

    Args:
      cfg: resolved jaxkd config (the preset with the benchmark's overrides).
      teacher_cfg: the KD teacher's config (an AdaptiveCNN, randomly initialised: only its cost matters), or None.
      host_batch: from :func:`make_batch`.
      scan: steps per dispatch (1 = the trainer's one jitted call per step).
      donate: donate the state to the step (the trainer does).
      before: names from :data:`BEFORE` (benchmark experiments: earlier implementations of the same math).
    """

    def __init__(self, cfg, teacher_cfg, host_batch: dict, *, scan: int = 1, donate: bool = True, seed: int = 0,
                 before: tuple[str, ...] = ()):
        import jax
        from flax import nnx
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        from jaxkd import data as data_lib
        from jaxkd import models, tasks
        from jaxkd.train import optim, steps

        self.jax = jax
        self.mesh = data_lib.make_data_mesh()
        n_dev = self.mesh.devices.size
        b = len(host_batch["label"])
        if b % n_dev:
            raise ValueError(f"batch {b} is not divisible by the {n_dev} devices: use a multiple of {n_dev}")
        model = nnx.jit(lambda: models.build(cfg, nnx.Rngs(params=seed, dropout=seed + 1)))()
        apply_before(model, before)
        self.num_params = models.count_params(model)
        teacher = None
        if teacher_cfg is not None:
            tmodel = nnx.jit(lambda: models.build(teacher_cfg, nnx.Rngs(seed + 3)))()
            apply_before(tmodel, before)
            tmodel.eval()
            gd, tstate = nnx.split(tmodel)
            teacher = tasks.Teacher(gd, tstate, "classifier", "random-init AdaptiveCNN (benchmark)")
        task = tasks.make_task(cfg, teacher)
        gd_train, _, params, rest = steps.split_model(model)
        spe = 1000  # any epoch length: the step's cost does not depend on it
        tx = optim.make_optimizer(cfg, spe, params)
        schedule = optim.make_schedule(cfg, spe)
        state = steps.init_state(params, rest, tx, seed, swa=cfg.training.use_swa, ema=cfg.training.ema.enabled,
                                 fp16=False)
        self.state = steps.replicate(state, self.mesh)
        self.aux = steps.replicate(teacher.state, self.mesh) if teacher is not None else None
        step = steps.make_train_step(gd_train, task, tx, steps_per_epoch=spe, schedule=schedule, accumulation=1,
                                     ema_decay=cfg.training.ema.decay if cfg.training.ema.enabled else None)
        self.scan = int(scan)
        shard = NamedSharding(self.mesh, P("data"))
        if self.scan == 1:
            self.batch = {k: jax.device_put(v, shard) for k, v in host_batch.items()}
            self.fn = step if donate else jax.jit(step.__wrapped__)
        else:
            stacked = NamedSharding(self.mesh, P(None, "data"))
            self.batch = {k: jax.device_put(np.broadcast_to(v, (self.scan,) + v.shape), stacked)
                          for k, v in host_batch.items()}
            body = step.__wrapped__

            def multi(state, batches, aux):
                return jax.lax.scan(lambda s, bt: body(s, bt, aux), state, batches)

            self.fn = jax.jit(multi, donate_argnums=(0,) if donate else ())
        self._flops = None
        self.compile_s = self._compile()

    def _compile(self) -> float:
        t0 = time.perf_counter()
        self.state, metrics = self.fn(self.state, self.batch, self.aux)
        self.jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - t0

    def flops_per_step(self) -> float | None:
        """FLOPs of one training step from XLA's cost analysis of the lowered step (None if unavailable)."""
        if self._flops is None:
            try:
                cost = self.fn.lower(self.state, self.batch, self.aux).cost_analysis()
                cost = cost[0] if isinstance(cost, (list, tuple)) else cost
                self._flops = float(cost["flops"]) / self.scan
            except Exception:  # noqa: BLE001 -- cost analysis is optional metadata
                self._flops = float("nan")
        return None if np.isnan(self._flops) else self._flops

    def steps(self, k: int) -> float:
        """Runs k steps (rounded up to whole dispatches), blocks until the results are ready; returns the loss."""
        metrics = None
        for _ in range(max(1, -(-k // self.scan))):
            self.state, metrics = self.fn(self.state, self.batch, self.aux)
        self.jax.block_until_ready((self.state, metrics))
        return float(np.ravel(np.asarray(metrics["loss"]))[-1])

    def steps_per_call(self, k: int) -> int:
        """How many steps :meth:`steps` (k) really runs."""
        return max(1, -(-k // self.scan)) * self.scan


def make_case(prep: dict, **kw) -> JaxCase:
    """:class:`JaxCase` of a prepared model (``{"cfg", "teacher_cfg", "host", ...}``); safe in a background thread."""
    return JaxCase(prep["cfg"], prep["teacher_cfg"], prep["host"], **kw)


# Earlier implementations of the same math (the "before" of a model-code change), as subclasses of the production
# modules. The benchmark builds the production model, then re-classes the matching modules of THAT model instance
# (:func:`apply_before`); the production classes and module functions are never modified.

def _before_classes():
    import jax
    from flax import nnx

    from jaxkd.models import attention, cnn, layers, vit

    class MaxPoolBefore(layers.MaxPool2d):
        """flax's reduce-window max pool, whose gradient XLA:CPU runs as a variadic reduce-window over index arrays
        plus a scatter."""

        def __call__(self, x):
            k = self.kernel_size
            return nnx.max_pool(x, window_shape=(k, k), strides=(k, k), padding="VALID")

    class PatchEmbedBefore(vit.PatchEmbed):
        """The patch projection as a strided convolution (kernel = stride = P)."""

        def __call__(self, x):
            if self.stem is not None:
                x = self.stem(x)
            x = self.proj(x)
            return x.reshape(x.shape[0], -1, x.shape[-1])

    class PatchGemmBefore(vit.PatchEmbed):
        """Patchify + one GEMM as ``jnp.dot`` (kernel gradient ``xᵀ·g`` by autodiff) instead of
        ``attention.dense``'s ``(gᵀ·x)ᵀ``: PatchEmbed's own ``forward_ad`` path."""

        forward_ad = True

    class ResidualBlockBefore(cnn.ResidualBlock):
        """The residual block's ReLUs as ``jax.nn.relu`` (``maximum(x, 0)``) instead of ``layers.relu``'s select."""

        def __call__(self, x):
            out = jax.nn.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.se is not None:
                out = self.se(out)
            return jax.nn.relu(out + self.shortcut(x))

    class ReluBefore(layers.Activation):
        """An ``Activation(layers.relu)`` computed as ``jax.nn.relu``."""

        def __call__(self, x):
            return jax.nn.relu(x) if self.fn is layers.relu else self.fn(x)

    class LinearBefore(attention.Linear):
        """The ViT's Linear as plain ``nnx.Linear`` (kernel gradient ``xᵀ·g`` by autodiff) instead of
        ``attention.dense``'s ``(gᵀ·x)ᵀ``."""

        def __call__(self, inputs, out_sharding=None):
            return nnx.Linear.__call__(self, inputs, out_sharding=out_sharding)

    return {"maxpool": {layers.MaxPool2d: MaxPoolBefore}, "patchify": {vit.PatchEmbed: PatchEmbedBefore},
            "relu": {cnn.ResidualBlock: ResidualBlockBefore, layers.Activation: ReluBefore},
            "dense": {attention.Linear: LinearBefore}, "patch_dense": {vit.PatchEmbed: PatchGemmBefore}}


#: the names of the earlier implementations (:func:`apply_before`).
BEFORE = ("maxpool", "patchify", "relu", "dense", "patch_dense")


def apply_before(model, names) -> int:
    """Re-classes the modules of `model` (this instance only) that `names` (from :data:`BEFORE`) replace by their
    earlier implementation; returns how many modules changed. Call it before the model is split for the step."""
    from flax import nnx

    if not names:
        return 0
    table = _before_classes()
    swap = {cls: sub for name in names for cls, sub in table[name].items()}
    n = 0
    for _, node in list(nnx.iter_graph(model)):
        sub = swap.get(type(node))
        if sub is not None:
            node.__class__ = sub  # same attributes: a subclass that only overrides __call__
            n += 1
    return n


def device_info() -> dict[str, Any]:
    import jax
    import jaxlib

    devs = jax.devices()
    return {"backend": jax.default_backend(), "devices": len(devs), "device_kind": devs[0].device_kind,
            "jax": jax.__version__, "jaxlib": jaxlib.__version__}


# Dense peak FLOP/s per device (NVIDIA datasheets, SXM parts, without sparsity): bf16 tensor cores and fp32. MFU is
# stated against these assumed peaks (H100/H200 SXM: 990 TFLOP/s dense bf16); a large bf16 matmul reaches well
# below that (BENCH.md), so 100 % MFU is not reachable.
PEAK_FLOPS = {
    "H200": {"bfloat16": 990e12, "float32": 67e12},
    "H100 PCIe": {"bfloat16": 756e12, "float32": 51e12},
    "H100": {"bfloat16": 990e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
}


def peak_source(device_kind: str) -> str:
    """Which :data:`PEAK_FLOPS` row a device's MFU is against ('' for an unknown device)."""
    for name in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return f"{name} datasheet, dense (no sparsity)"
    return ""


def peak_flops(device_kind: str, precision: str) -> float | None:
    """The device's peak FLOP/s for `precision` from :data:`PEAK_FLOPS` (None for an unknown device, e.g. CPU)."""
    for name, peaks in PEAK_FLOPS.items():  # most specific names first
        if name.lower() in device_kind.lower():
            return peaks.get(precision)
    return None
