"""Training parity: jaxkd's optimiser, schedule, clipping, label smoothing and accumulation (jaxkd.train.optim, the
jitted step of jaxkd.train.steps, jaxkd.tasks.Supervised) against the same loop in torch_ref.optim, on the same batches
from the same initial weights; and SWA averaging + BatchNorm recomputation against torch.optim.swa_utils.

Model: a small DeiT with the conv stem (so BatchNorm is in the loop), fp32, dropout and drop-path off.
Tolerance: parameters after 20 micro-steps within 1e-4 (max abs); the per-step losses within 1e-4. The measured
maxima are recorded as junit properties.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd import config as config_lib
from jaxkd import interop, tasks
from jaxkd.models.vit import DeiT
from jaxkd.train import optim, steps
from jaxkd.train.evaluators import bn_recompute
from torch_ref import optim as torch_optim
from torch_ref.vit import DeiT as TorchDeiT

TOL = 1e-4
ARCH = dict(img_size=8, patch_size=2, in_channels=3, num_classes=5, embed_dim=32, depth=2, num_heads=2,
            mlp_ratio=2.0, drop_path_rate=0.0, use_conv_stem=True)
STEPS, BATCH, STEPS_PER_EPOCH = 20, 8, 4  # 5 epochs


@functools.cache
def _jax_model(distillation: bool) -> DeiT:
    """Built once per architecture (eager NNX init costs seconds); every test reloads all its weights from torch."""
    return DeiT(distillation=distillation, inference_mode="cls", attention="plain", rngs=nnx.Rngs(1), **ARCH)


def _models(distillation: bool, seed: int = 0):
    torch.manual_seed(seed)
    tm = TorchDeiT(distillation=distillation, inference_mode="cls", **ARCH)
    jm = interop.torch_to_jax(_jax_model(distillation), tm.state_dict())
    return tm, jm


def _batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(STEPS, BATCH, 8, 8, 3)).astype(np.float32)
    ys = rng.integers(0, 5, size=(STEPS, BATCH)).astype(np.int32)
    return xs, ys


def _cfg(optimizer: str, lr: float, accumulation: int):
    cfg = config_lib.base_config()
    cfg.training.update(optimizer=optimizer, learning_rate=lr, weight_decay=0.05, num_epochs=5, warmup_epochs=1,
                        scheduler="cosine", gradient_clip_val=1.0, label_smoothing=0.1,
                        gradient_accumulation_steps=accumulation, use_swa=False, momentum=0.9, nesterov=True)
    cfg.training.lr_scheduler_params.eta_min = lr / 100
    return cfg


def _run_jax(jm, cfg, xs, ys, accumulation):
    gd_train, _, params, rest = steps.split_model(jm)
    tx = optim.make_optimizer(cfg, STEPS_PER_EPOCH // accumulation, params)
    schedule = optim.make_schedule(cfg, STEPS_PER_EPOCH // accumulation)
    state = steps.init_state(params, rest, tx, 0, swa=False, ema=False, fp16=False)
    step = steps.make_train_step(gd_train, tasks.Supervised(cfg.training.label_smoothing), tx,
                                 steps_per_epoch=STEPS_PER_EPOCH, schedule=schedule, accumulation=accumulation)
    losses = []
    for x, y in zip(xs, ys):
        state, m = step(state, {"image": jnp.asarray(x), "label": jnp.asarray(y)})
        losses.append(float(m["loss"]))
    nnx.update(jm, state.params, state.rest)
    return losses


def _run_torch(tm, cfg, xs, ys, accumulation):
    t = cfg.training
    opt, sched = torch_optim.make_optimizer(
        tm, optimizer=t.optimizer, lr=t.learning_rate, weight_decay=t.weight_decay, momentum=t.momentum,
        nesterov=t.nesterov, warmup_epochs=t.warmup_epochs, num_epochs=t.num_epochs,
        eta_min=t.lr_scheduler_params.eta_min)
    batches = [(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long())
               for x, y in zip(xs, ys)]
    # Accumulation: an epoch of STEPS_PER_EPOCH micro-batches = STEPS_PER_EPOCH // k optimiser steps.
    return torch_optim.train_steps(tm, batches, opt=opt, sched=sched, steps_per_epoch=STEPS_PER_EPOCH,
                                   accumulation=accumulation, clip=t.gradient_clip_val,
                                   label_smoothing=t.label_smoothing)


def _max_param_diff(jm, tm) -> float:
    exported = interop.jax_to_torch(jm)
    sd = tm.state_dict()
    return max(float(np.max(np.abs(exported[k].astype(np.float64) - sd[k].double().numpy()))) for k in sd
               if not k.endswith("num_batches_tracked"))


CASES = [("adamw", 2e-3, 1, False), ("adamw", 2e-3, 2, True), ("sgd", 0.05, 1, True), ("sgd", 0.05, 2, False)]


@pytest.mark.parametrize("optimizer,lr,accumulation,distillation", CASES,
                         ids=[f"{o}-accum{a}-{'deit' if d else 'vit'}" for o, _, a, d in CASES])
def test_twenty_steps_match_torch(optimizer, lr, accumulation, distillation, record_property):
    tm, jm = _models(distillation)
    xs, ys = _batches()
    cfg = _cfg(optimizer, lr, accumulation)
    jl = _run_jax(jm, cfg, xs, ys, accumulation)
    tl = _run_torch(tm, cfg, xs, ys, accumulation)
    loss_diff = max(abs(a - b) for a, b in zip(jl, tl))
    param_diff = _max_param_diff(jm, tm)
    print(f"{optimizer} accum {accumulation}: loss max diff {loss_diff:.2e}, param max diff {param_diff:.2e}")
    record_property("loss_max_abs_diff", loss_diff)
    record_property("param_max_abs_diff", param_diff)
    assert loss_diff < TOL, loss_diff
    assert param_diff < TOL, param_diff
    # The run moved the weights far beyond the tolerance (the comparison is not vacuous).
    tm0, _ = _models(distillation)
    moved = max(float((a - b).abs().max()) for (k, a), b in zip(tm.state_dict().items(), tm0.state_dict().values())
                if a.dtype.is_floating_point)
    assert moved > 100 * TOL


def test_negative_control_wrong_schedule_fails(record_property):
    """Per-step instead of per-epoch stepping of the same schedule must break the match."""
    tm, jm = _models(False)
    xs, ys = _batches()
    cfg = _cfg("adamw", 2e-3, 1)
    cfg.training.schedule_unit = "step"
    _run_jax(jm, cfg, xs, ys, 1)
    _run_torch(tm, _cfg("adamw", 2e-3, 1), xs, ys, 1)
    diff = _max_param_diff(jm, tm)
    record_property("control_param_max_abs_diff", diff)
    assert diff > TOL


def test_accumulation_equals_one_step_on_the_concatenated_batch(record_property):
    """Two micro-batches of 4 with accumulation 2 == one batch of 8 (BatchNorm-free model: a plain patch embed).

    SGD, so that the comparison is not amplified by Adam's normalisation of near-zero gradient entries."""
    arch = dict(ARCH, use_conv_stem=False)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=8).astype(np.int32)
    results = []
    jm = DeiT(distillation=False, inference_mode="cls", attention="plain", rngs=nnx.Rngs(0), **arch)
    gd, _, params0, rest0 = steps.split_model(jm)
    for accumulation, batches in ((1, [(x, y)]), (2, [(x[:4], y[:4]), (x[4:], y[4:])])):
        cfg = _cfg("sgd", 0.1, accumulation)
        cfg.training.warmup_epochs = 0
        params, rest = jax.tree.map(jnp.array, (params0, rest0))  # own copies: the step donates its state
        tx = optim.make_optimizer(cfg, 1, params)
        state = steps.init_state(params, rest, tx, 0, swa=False, ema=False, fp16=False)
        step = steps.make_train_step(gd, tasks.Supervised(0.1), tx, steps_per_epoch=accumulation,
                                     schedule=optim.make_schedule(cfg, 1), accumulation=accumulation)
        for bx, by in batches:
            state, _ = step(state, {"image": jnp.asarray(bx), "label": jnp.asarray(by)})
        results.append(jax.tree.leaves(state.params))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*results))
    print(f"accumulation vs concatenated batch: max param diff {diff:.2e}")
    record_property("accum_param_max_abs_diff", diff)
    assert diff < 1e-6


def test_swa_average_and_bn_recompute_match_swa_utils(record_property):
    tm, jm = _models(False, seed=4)
    gd_train, _, params, rest = steps.split_model(jm)
    rng = np.random.default_rng(5)
    # Three weight snapshots (perturbed copies), averaged by jaxkd's swa_update and by AveragedModel.
    snaps_j, snaps_t = [], []
    for _ in range(3):
        noise = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape).astype(np.float32) * 0.05), params)
        p_i = jax.tree.map(jnp.add, params, noise)
        snaps_j.append(p_i)
        nnx.update(jm, p_i)
        snaps_t.append({k: torch.from_numpy(v) for k, v in interop.jax_to_torch(jm).items()})
    state = steps.init_state(params, rest, optim.optax.sgd(0.1), 0, swa=True, ema=False, fp16=False)
    for p_i in snaps_j:
        state = steps.swa_update(state.replace(params=p_i))
    avg_t = torch_optim.swa_average(tm, snaps_t)
    images = [rng.normal(size=(6, 8, 8, 3)).astype(np.float32) * 2 + 0.5 for _ in range(4)]
    new_rest = bn_recompute(gd_train, state.swa_params, state.rest, [jnp.asarray(x) for x in images])
    torch_optim.update_bn([torch.from_numpy(x).permute(0, 3, 1, 2).contiguous() for x in images], avg_t)
    nnx.update(jm, state.swa_params, new_rest)
    exported = interop.jax_to_torch(jm)
    sd = avg_t.module.state_dict()
    diffs = {k: float(np.max(np.abs(exported[k].astype(np.float64) - sd[k].double().numpy()))) for k in sd}
    worst = max(diffs.values())
    var = max(v for k, v in diffs.items() if 'running_var' in k)
    print(f"SWA + update_bn: max diff {worst:.2e} (running_var {var:.2e})")
    record_property("swa_bn_max_abs_diff", worst)
    assert worst < 1e-5, {k: v for k, v in diffs.items() if v >= 1e-5}
    # Negative control: running statistics kept by the ordinary momentum-0.1 update over the same batches (what a
    # train-mode pass without update_bn's momentum=None leaves) differ from update_bn's equal-weight average.
    ema_model = nnx.merge(gd_train, state.swa_params, jax.tree.map(jnp.array, state.rest))
    for x in images:
        tasks.forward_train(ema_model, jnp.asarray(x))
    ema_mean = np.asarray(ema_model.patch_embed.stem.layers[1].mean[...])
    wrong = float(np.max(np.abs(ema_mean - sd["patch_embed.stem.1.running_mean"].numpy())))
    print(f"negative control (momentum 0.1 instead of update_bn): {wrong:.2e}")
    record_property("control_momentum_diff", wrong)
    assert wrong > 1e-3
