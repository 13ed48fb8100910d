"""Learning-rate schedules: jaxkd.train.optim.epoch_lr (host, float64) and make_schedule (the float32 table the jitted
step reads) against torch.optim.lr_scheduler driving a real optimiser.

References: warm-up = LinearLR(start_factor=1/N, total_iters=N−1), which is exactly η_max·(t+1)/N for t < N;
after it CosineAnnealingLR(T_max, eta_min) / StepLR / ExponentialLR, chained by SequentialLR; the SWA phase is
SWALR(anneal_epochs=0) (constant swa_lr) from epoch ⌊swa_start_epoch·E⌋, where the regular scheduler stops.
Per-step stepping: the same schedulers stepped once per optimiser step with the epoch lengths scaled by
steps_per_epoch (T_max·S, step_size·S, γ^(1/S)).

Tolerances: epoch_lr 1e-12 relative; make_schedule 1e-6 relative (float32 table). Negative controls: the torch
reference shifted by one epoch, and the SWA phase started one epoch late, both fail the comparison. The measured
maxima are recorded as junit properties (epoch_lr_rel, table_rel, warmup_rel, swa_phase_rel).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as S
from torch.optim.swa_utils import SWALR

from jaxkd import config as config_lib
from jaxkd.train import optim

LR, ETA_MIN = 1e-3, 1e-5


def _cfg(scheduler="cosine", *, epochs=12, warmup=3, swa=False, unit="epoch", **params):
    cfg = config_lib.base_config()
    cfg.training.update(learning_rate=LR, num_epochs=epochs, warmup_epochs=warmup, scheduler=scheduler,
                        use_swa=swa, swa_start_epoch=0.75, swa_lr=2e-4, schedule_unit=unit)
    cfg.training.lr_scheduler_params.update(eta_min=ETA_MIN, step_size=3, gamma=0.5)
    cfg.training.lr_scheduler_params.update(**params)
    return cfg


def _main_scheduler(opt, cfg, per: int):
    """The post-warm-up torch scheduler; `per` = scheduler steps per epoch (1 per epoch, S per step)."""
    t, p = cfg.training, cfg.training.lr_scheduler_params
    if t.scheduler == "cosine":
        return S.CosineAnnealingLR(opt, T_max=(p.T_max or t.num_epochs - t.warmup_epochs) * per, eta_min=p.eta_min)
    if t.scheduler == "step":
        return S.StepLR(opt, step_size=p.step_size * per, gamma=p.gamma)
    if t.scheduler == "exponential":
        return S.ExponentialLR(opt, gamma=p.gamma ** (1 / per))
    raise ValueError(t.scheduler)


def torch_lrs(cfg, per: int = 1, *, shift: int = 0) -> list[float]:
    """The learning rate of each scheduler period (epoch, or step when per = S) of a torch run of the config.

    shift: negative control, the reference evaluated `shift` periods late."""
    t = cfg.training
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=t.learning_rate)
    n_warm, total = t.warmup_epochs * per, t.num_epochs * per
    swa_from = math.floor(t.swa_start_epoch * t.num_epochs) * per if t.use_swa else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR / SWALR deprecation chatter
        main = _main_scheduler(opt, cfg, per)
        sched = main if n_warm == 0 else S.SequentialLR(
            opt, [S.LinearLR(opt, start_factor=1 / n_warm, end_factor=1.0, total_iters=n_warm - 1), main],
            milestones=[n_warm])
        swa = None
        out = []
        for i in range(total + shift):
            if swa_from is not None and i == swa_from:
                swa = SWALR(opt, swa_lr=t.swa_lr, anneal_epochs=0)
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            (swa or sched).step()
    return out[shift:]


def _jax_epoch_lrs(cfg) -> np.ndarray:
    return np.array([optim.epoch_lr(cfg, e) for e in range(cfg.training.num_epochs)])


def _table(cfg, steps_per_epoch: int) -> np.ndarray:
    sched = optim.make_schedule(cfg, steps_per_epoch)
    return np.array([float(sched(i)) for i in range(cfg.training.num_epochs * steps_per_epoch)])


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


EPOCH_CASES = {
    "cosine-warmup3-etamin": _cfg("cosine"),
    "cosine-no-warmup": _cfg("cosine", warmup=0),
    "cosine-warmup1": _cfg("cosine", warmup=1, epochs=5),
    "cosine-Tmax": _cfg("cosine", T_max=9),  # = E − W, given explicitly
    "step": _cfg("step"),
    "exponential": _cfg("exponential", gamma=0.8),
}


@pytest.mark.parametrize("name", list(EPOCH_CASES))
def test_per_epoch_schedule_matches_torch(name, record_property):
    cfg = EPOCH_CASES[name]
    want = torch_lrs(cfg)
    host = _rel(_jax_epoch_lrs(cfg), want)
    spe = 4
    table = _table(cfg, spe)
    # Stepped per epoch: constant over the S steps of an epoch, the epoch's value.
    dev = _rel(table, np.repeat(want, spe))
    print(f"{name}: epoch_lr max rel diff {host:.1e}, make_schedule (float32) {dev:.1e}")
    record_property("epoch_lr_rel", host)
    record_property("table_rel", dev)
    if cfg.training.warmup_epochs:
        w = cfg.training.warmup_epochs
        record_property("warmup_rel", _rel(_jax_epoch_lrs(cfg)[:w], want[:w]))
    assert host < 1e-12
    assert dev < 1e-6
    # Negative control: an off-by-one epoch in the reference breaks the match.
    assert _rel(_jax_epoch_lrs(cfg), torch_lrs(cfg, shift=1)) > 1e-3


def test_warmup_is_linear_to_eta_max(record_property):
    """SPEC §4 written out: η_max·(t+1)/W for t < W, then the cosine starts at η_max."""
    cfg = _cfg("cosine")
    lrs = _jax_epoch_lrs(cfg)
    record_property("warmup_rel", _rel(lrs[:3], [LR / 3, 2 * LR / 3, LR]))
    np.testing.assert_allclose(lrs[:3], [LR / 3, 2 * LR / 3, LR], rtol=1e-12)
    assert lrs[3] == pytest.approx(LR, rel=1e-12) and lrs[-1] > ETA_MIN
    assert np.all(np.diff(lrs[2:]) <= 0)


POST_WARMUP_STEP_CASES = {
    "cosine": _cfg("cosine", unit="step"),
    "step": _cfg("step", unit="step"),
    "exponential": _cfg("exponential", unit="step", gamma=0.8),
}


@pytest.mark.parametrize("name", list(POST_WARMUP_STEP_CASES))
def test_per_step_schedule_after_warmup_matches_torch(name, record_property):
    """schedule_unit='step': after the warm-up every optimiser step gets its own value, that of the torch
    scheduler stepped per step."""
    cfg = POST_WARMUP_STEP_CASES[name]
    spe, warm = 5, cfg.training.warmup_epochs
    table = _table(cfg, spe)
    want = torch_lrs(cfg, per=spe)
    diff = _rel(table[warm * spe:], want[warm * spe:])
    print(f"per-step {name}: make_schedule max rel diff after warm-up {diff:.1e}")
    record_property("table_rel", diff)
    assert diff < 1e-6
    # It really is per step: the values change inside an epoch (per-epoch stepping would repeat them).
    # (StepLR's values change only at epoch boundaries either way.)
    if name != "step":
        assert len(set(table[warm * spe: warm * spe + spe])) == spe
        assert _rel(table[warm * spe:], np.repeat(torch_lrs(cfg), spe)[warm * spe:]) > 1e-3
    # Negative control: the reference one step late.
    assert _rel(table[warm * spe:], torch_lrs(cfg, per=spe, shift=1)[warm * spe:]) > 1e-3


def test_per_step_warmup_matches_linear_lr_per_step(record_property):
    """Per step the warm-up is LinearLR over W·S steps: η_max·(s+1)/(W·S), monotone, never above η_max."""
    cfg = _cfg("cosine", unit="step")
    spe, warm = 5, cfg.training.warmup_epochs
    table = _table(cfg, spe)
    want = torch_lrs(cfg, per=spe)
    print(f"per-step warm-up: max {table[:warm * spe].max():.3e} (η_max {LR:.0e}), "
          f"max rel diff {_rel(table[:warm * spe], want[:warm * spe]):.2e}")
    record_property("warmup_rel", _rel(table[:warm * spe], want[:warm * spe]))
    assert table[:warm * spe].max() <= LR * (1 + 1e-6)
    assert _rel(table[:warm * spe], want[:warm * spe]) < 1e-6


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_swa_phase_runs_at_swa_lr_from_three_quarters(unit, record_property):
    """E = 10: epochs 0–6 follow warm-up + cosine, epochs ⌊0.75·10⌋ = 7.. run at the constant swa_lr (SWALR
    with anneal_epochs=0 after the regular scheduler stops)."""
    cfg = _cfg("cosine", epochs=10, warmup=2, swa=True, unit=unit)
    assert optim.swa_start(cfg) == 7
    spe = 3
    per = 1 if unit == "epoch" else spe
    want = torch_lrs(cfg, per=per)
    if unit == "epoch":
        want = np.repeat(want, spe)
    table = _table(cfg, spe)
    post = slice(2 * spe, None) if unit == "step" else slice(None)  # per step, compare after the warm-up
    diff = _rel(table[post], want[post])
    print(f"SWA phase ({unit}): max rel diff {diff:.1e}")
    record_property("swa_phase_rel", diff)
    assert diff < 1e-6
    np.testing.assert_allclose(table[7 * spe:], 2e-4, rtol=1e-6)
    assert abs(table[7 * spe - 1] - 2e-4) > 1e-5
    assert optim.epoch_lr(cfg, 7) == 2e-4 and optim.epoch_lr(cfg, 6) != 2e-4
    # Negative control: the SWA phase one epoch late (from epoch 8) does not match.
    late = _cfg("cosine", epochs=10, warmup=2, swa=True, unit=unit)
    late.training.swa_start_epoch = 0.8
    assert _rel(_table(late, spe)[post], want[post]) > 1e-3


def test_swa_start_rounds_down_and_is_none_without_swa():
    assert optim.swa_start(_cfg(epochs=10, swa=True)) == 7  # ⌊7.5⌋
    assert optim.swa_start(_cfg(epochs=4, swa=True)) == 3
    assert optim.swa_start(_cfg(epochs=10, swa=False)) is None


def test_schedule_clamps_past_the_last_step():
    """Counts beyond the run (the step after the last) keep the last value instead of indexing out of range."""
    cfg = _cfg("cosine")
    sched = optim.make_schedule(cfg, 4)
    assert float(sched(12 * 4 + 7)) == float(sched(12 * 4 - 1))
    step_sched = optim.make_schedule(_cfg("cosine", unit="step"), 4)
    assert float(step_sched(10_000)) == float(step_sched(12 * 4 - 1))
