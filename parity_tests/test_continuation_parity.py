"""Continuing an original run (``convert from-torch --resume``, jaxkd.train.continuation) against torch continuing
the same run: torch_ref trains K steps with torch.optim (AdamW, or SGD with Nesterov momentum; clipping, label
smoothing and the per-epoch LambdaLR of jaxkd's schedule), saves a checkpoint in the original's format
(torch_ref.optim.save_checkpoint, torch.save), jaxkd imports it into a workdir, restores the trainer's checkpoint
from it and trains the next N steps; torch loads the same file as the original's load_checkpoint does and trains
the same N batches.

Model: a tiny DeiT on 8x8 grey images (channel_expand, conv stem with BatchNorm, 2 blocks), fp32, dropout and
drop-path off; 3 steps an epoch, K = 6 (2 epochs), N = 5 (across the epoch boundary, where the learning rate
changes: the schedule's position is carried over). Tolerance: every parameter and BatchNorm statistic after the N
steps within 1e-5 (max abs). Negative control: the same import with the optimiser's moments dropped (Adam's mu /
nu, SGD's trace set to zero) differs by more than 1e-5. The measured maxima are recorded as junit properties.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxkd import config as config_lib
from jaxkd import convert, interop, tasks
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import continuation, optim, steps
from torch_ref import optim as torch_optim
from torch_ref.vit import DeiT as TorchDeiT

TOL = 1e-5
K, N, SPE, BATCH = 6, 5, 3, 8
ARCH = dict(img_size=8, patch_size=2, in_channels=1, num_classes=10, embed_dim=32, depth=2, num_heads=2,
            mlp_ratio=2.0, drop_path_rate=0.0, use_conv_stem=True, distillation=False, inference_mode="cls")
ARGS = ["--config.model.model_type=deit", "--config.vit.variant=custom", "--config.vit.img_size=8",
        "--config.vit.patch_size=2", "--config.vit.embed_dim=32", "--config.vit.depth=2", "--config.vit.num_heads=2",
        "--config.vit.mlp_ratio=2.0", "--config.vit.use_conv_stem=true", "--config.vit.distillation=false",
        "--config.vit.inference_mode=cls", "--config.vit.drop_path_rate=0.0", "--config.vit.attention=plain",
        f"--config.data.batch_size={BATCH}", "--config.training.num_epochs=4", "--config.training.warmup_epochs=1",
        f"--config.training.max_steps_per_epoch={SPE}", "--config.training.weight_decay=0.05",
        "--config.training.label_smoothing=0.1", "--config.logging.progress_bar=false"]
CASES = {"adamw": ["--config.training.optimizer=adamw", "--config.training.learning_rate=0.002",
                   "--config.training.lr_scheduler_params.eta_min=2e-5"],
         "sgd-nesterov": ["--config.training.optimizer=sgd", "--config.training.learning_rate=0.05",
                          "--config.training.momentum=0.9", "--config.training.nesterov=true",
                          "--config.training.lr_scheduler_params.eta_min=5e-4"]}


@dataclasses.dataclass
class TrainingConfig:  # stands in for the original's pickled config classes
    optimizer: str
    num_epochs: int = 4


@dataclasses.dataclass
class Config:
    training: TrainingConfig


def _batches():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(K + N, BATCH, 8, 8, 1)).astype(np.float32)
    ys = rng.integers(0, 10, size=(K + N, BATCH)).astype(np.int32)
    return xs, ys


def _torch_batches(xs, ys):
    return [(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()) for x, y in zip(xs, ys)]


def _torch_optimizer(tm, cfg):
    t = cfg.training
    return torch_optim.make_optimizer(tm, optimizer=t.optimizer, lr=t.learning_rate, weight_decay=t.weight_decay,
                                      momentum=t.momentum, nesterov=t.nesterov, warmup_epochs=t.warmup_epochs,
                                      num_epochs=t.num_epochs, eta_min=t.lr_scheduler_params.eta_min)


def _train_torch(tm, opt, sched, batches, cfg):
    return torch_optim.train_steps(tm, batches, opt=opt, sched=sched, steps_per_epoch=SPE,
                                   clip=cfg.training.gradient_clip_val, label_smoothing=cfg.training.label_smoothing)


@pytest.fixture(scope="module", params=list(CASES))
def continued(request, tmp_path_factory):
    """(case, cfg, the original's checkpoint, the imported workdir, torch's model after K + N steps)."""
    case, tmp = request.param, tmp_path_factory.mktemp(request.param)
    overrides = ARGS + CASES[case]
    cfg = config_lib.load("configs/quickstart.py", overrides)
    xs, ys = _batches()
    batches = _torch_batches(xs, ys)
    torch.manual_seed(0)
    tm = TorchDeiT(**ARCH)
    opt, sched = _torch_optimizer(tm, cfg)
    losses = _train_torch(tm, opt, sched, batches[:K], cfg)
    path = tmp / "checkpoint_epoch_2.pth"
    history = {"train_loss": [float(np.mean(losses[:SPE])), float(np.mean(losses[SPE:]))],
               "val_loss": [2.2, 2.1], "val_acc": [20.0, 25.0]}
    torch_optim.save_checkpoint(path, tm, opt, sched, epoch=K // SPE - 1, best_val_acc=25.0, metrics_history=history,
                                config=Config(TrainingConfig(cfg.training.optimizer)))
    workdir = convert.from_torch("configs/quickstart.py", path, tmp / "work", overrides, resume=True,
                                 log=lambda *_: None)
    torch.manual_seed(1)
    tm2 = TorchDeiT(**ARCH)
    opt2, sched2 = _torch_optimizer(tm2, cfg)
    kept = torch_optim.load_checkpoint(path, tm2, opt2, sched2, safe_globals=[Config, TrainingConfig])
    assert kept["epoch"] == K // SPE - 1
    _train_torch(tm2, opt2, sched2, batches[K:], cfg)
    return case, cfg, path, workdir, tm2, (xs[K:], ys[K:])


def _continue_jax(cfg, workdir: Path, xs, ys, drop_moments: bool = False):
    model, gd_train, tx, target = continuation.fresh_state(cfg, SPE)
    ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
    step, state, host = ckpts.restore_newest_good(target)
    ckpts.close()
    assert step == K and host["epoch"] == K // SPE
    if drop_moments:  # the negative control: the import without the optimiser's moments
        for name in ("mu", "nu", "trace"):
            tree = optax.tree.get(state.opt_state, name, None)
            if tree is not None:
                state = state.replace(opt_state=optax.tree.set(state.opt_state,
                                                               **{name: jax.tree.map(jnp.zeros_like, tree)}))
    train_step = steps.make_train_step(gd_train, tasks.Supervised(cfg.training.label_smoothing), tx,
                                       steps_per_epoch=SPE, schedule=optim.make_schedule(cfg, SPE))
    lrs = []
    for x, y in zip(xs, ys):
        state, m = train_step(state, {"image": jnp.asarray(x), "label": jnp.asarray(y)})
        lrs.append(float(m["lr"]))
    from flax import nnx

    nnx.update(model, state.params, state.rest)
    return interop.jax_to_torch(model), lrs


def _max_diff(exported: dict, tm) -> float:
    sd = tm.state_dict()
    return max(float(np.max(np.abs(exported[k].astype(np.float64) - sd[k].double().numpy()))) for k in sd
               if not k.endswith("num_batches_tracked"))


def test_next_steps_match_torch(continued, record_property):
    case, cfg, _, workdir, tm2, (xs, ys) = continued
    exported, lrs = _continue_jax(cfg, workdir, xs, ys)
    diff = _max_diff(exported, tm2)
    print(f"{case}: {N} steps after the import, max param diff {diff:.2e}; lr {lrs}")
    record_property("param_max_abs_diff", diff)
    assert diff <= TOL, diff
    # the schedule continued at epoch 3 (and moved on at epoch 4): jaxkd's own per-epoch learning rates
    assert lrs == pytest.approx([optim.epoch_lr(cfg, 2)] * SPE + [optim.epoch_lr(cfg, 3)] * (N - SPE), rel=1e-6)


def test_negative_control_moments_dropped_fails(continued, record_property):
    case, cfg, _, workdir, tm2, (xs, ys) = continued
    exported, _ = _continue_jax(cfg, workdir, xs, ys, drop_moments=True)
    diff = _max_diff(exported, tm2)
    print(f"{case} without the moments: max param diff {diff:.2e}")
    record_property("control_param_max_abs_diff", diff)
    assert diff > 10 * TOL, diff
