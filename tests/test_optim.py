"""jaxkd.train.optim against torch: one to three updates of each optimiser on a tiny parameter pytree with fixed
gradients (float64), the weight-decay masks on a real DeiT, global-norm clipping against clip_grad_norm_, and the
host-side plateau tracker against torch.optim.lr_scheduler.ReduceLROnPlateau.

Tolerances: optimiser updates 1e-12 relative in float64 (the learning rate 0.125 is exact in the float32 schedule
table); clipping 1e-6 relative (torch divides by ‖g‖ + 1e-6, optax by ‖g‖); plateau multipliers 1e-12.
Each family has a negative control (Adam-L2 for AdamW, plain momentum for Nesterov, clip threshold doubled,
threshold 0 for the plateau tracker).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd import config as config_lib
from jaxkd.train import optim

LR, WD = 0.125, 0.05
SHAPES = {"w": (3, 4), "b": (4,), "k": (2, 2, 1, 3)}


def _cfg(optimizer: str, **training) -> config_lib.ConfigDict:
    """A constant learning rate LR (no warm-up, no SWA, no clipping) unless overridden."""
    cfg = config_lib.base_config()
    cfg.training.update(optimizer=optimizer, learning_rate=LR, weight_decay=WD, num_epochs=3, warmup_epochs=0,
                        scheduler="constant", gradient_clip_val=0.0, use_swa=False, momentum=0.9, nesterov=True)
    cfg.training.update(**training)
    return cfg


def _params_and_grads(n_steps: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(n_steps)]
    return params, grads


def _run_jax(cfg, params, grads):
    """Applies make_optimizer's update rule to `params` for each gradient, in float64; returns numpy arrays."""
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
        tx = optim.make_optimizer(cfg, 1, p)
        state = tx.init(p)
        for g in grads:
            g = {k: jnp.asarray(v, jnp.float64) for k, v in g.items()}
            updates, state = tx.update(g, state, p)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
        return {k: np.asarray(v) for k, v in p.items()}


def _run_torch(make_opt, params, grads):
    tp = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params.items()}
    opt = make_opt(list(tp.values()))
    for g in grads:
        for k, t in tp.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
    return {k: t.detach().numpy() for k, t in tp.items()}


def _rel_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in a)


TORCH_TWINS = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, betas=(0.9, 0.999), eps=1e-8),
    "adam": lambda ps: torch.optim.Adam(ps, lr=LR, weight_decay=WD, betas=(0.9, 0.999), eps=1e-8),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=LR, weight_decay=WD, momentum=0.9, nesterov=True),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=LR, weight_decay=WD, alpha=0.99, eps=1e-8, momentum=0.9),
}


@pytest.mark.parametrize("optimizer", list(TORCH_TWINS))
def test_optimizer_matches_torch(optimizer):
    params, grads = _params_and_grads()
    got = _run_jax(_cfg(optimizer), params, grads)
    want = _run_torch(TORCH_TWINS[optimizer], params, grads)
    diff = _rel_diff(got, want)
    print(f"{optimizer}: max rel diff {diff:.1e}")
    assert diff < 1e-12
    assert _rel_diff(want, params) > 1e-2  # the parameters moved: the comparison is not vacuous


def test_rmsprop_without_momentum_and_sgd_without_momentum_match_torch():
    params, grads = _params_and_grads(seed=1)
    for name, cfg, twin in [
        ("rmsprop", _cfg("rmsprop", momentum=0.0),
         lambda ps: torch.optim.RMSprop(ps, lr=LR, weight_decay=WD, alpha=0.99, eps=1e-8)),
        ("sgd", _cfg("sgd", momentum=0.0), lambda ps: torch.optim.SGD(ps, lr=LR, weight_decay=WD)),
        ("sgd-no-nesterov", _cfg("sgd", nesterov=False),
         lambda ps: torch.optim.SGD(ps, lr=LR, weight_decay=WD, momentum=0.9)),
    ]:
        diff = _rel_diff(_run_jax(cfg, params, grads), _run_torch(twin, params, grads))
        print(f"{name}: max rel diff {diff:.1e}")
        assert diff < 1e-12, name


def test_negative_controls_optimizers_are_distinguishable():
    """AdamW (decoupled) vs torch Adam (L2) and Nesterov vs plain momentum differ far beyond the tolerance."""
    params, grads = _params_and_grads()
    adamw = _run_jax(_cfg("adamw"), params, grads)
    assert _rel_diff(adamw, _run_torch(TORCH_TWINS["adam"], params, grads)) > 1e-4
    nesterov = _run_jax(_cfg("sgd"), params, grads)
    plain = _run_torch(lambda ps: torch.optim.SGD(ps, lr=LR, weight_decay=WD, momentum=0.9), params, grads)
    assert _rel_diff(nesterov, plain) > 1e-3


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="needs the parameter pytree"):
        optim.make_optimizer(_cfg("adamw", weight_decay_mask="deit"), 1, None)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer(_cfg("lion"), 1, {"w": jnp.zeros(2)})


# ----------------------------------------------------------------------------------------------------------------
# Weight-decay masks on a real DeiT


@pytest.fixture(scope="module")
def deit_params():
    from jaxkd.models.vit import DeiT

    # Built abstractly (eager NNX init costs seconds) and filled with nonzero values: the mask depends only on the
    # tree's names and shapes, the decay check on nonzero values.
    model = nnx.eval_shape(lambda: DeiT(img_size=8, patch_size=2, in_channels=3, num_classes=5, embed_dim=16,
                                        depth=1, num_heads=2, mlp_ratio=2.0, distillation=True, use_conv_stem=True,
                                        inference_mode="avg", rngs=nnx.Rngs(0)))
    abstract = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(abstract)
    rng = np.random.default_rng(0)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(size=a.shape) + 0.5, a.dtype) for a in leaves])


def _flat(tree) -> dict[str, object]:
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_deit_mask_excludes_biases_norms_tokens_and_pos_embed(deit_params):
    mask = _flat(optim.weight_decay_mask(deit_params, "deit"))
    shapes = {k: np.shape(v) for k, v in _flat(deit_params).items()}
    excluded = {k for k, m in mask.items() if not m}
    # The excluded set, spelled out: every bias, every norm scale (LayerNorm and the conv stem's BatchNorm),
    # both tokens and the positional embedding; every kernel (2-D linear, 4-D conv) decays.
    for name in ("['cls_token']", "['dist_token']", "['pos_embed']"):
        assert any(k.startswith(name) for k in excluded), name
        assert len(shapes[next(k for k in shapes if k.startswith(name))]) == 3  # not excluded by ndim alone
    for k, shape in shapes.items():
        if "bias" in k or "scale" in k:
            assert not mask[k], k
        if k.endswith("['kernel'].value") or k.endswith("['kernel']"):
            assert mask[k] and len(shape) in (2, 4), k
    assert sum(mask.values()) == sum(1 for k in shapes if "kernel" in k)
    assert all(_flat(optim.weight_decay_mask(deit_params, "all")).values())


@pytest.mark.parametrize("mode", ["deit", "all"])
def test_deit_mask_applies_in_the_optimizer(deit_params, mode):
    """One AdamW step with zero gradients moves exactly the decayed leaves, each by the factor (1 − lr·wd)."""
    cfg = _cfg("adamw", weight_decay_mask=mode)
    params = jax.tree.map(jnp.asarray, deit_params)
    tx = optim.make_optimizer(cfg, 1, params)

    @jax.jit
    def one_step(params):
        updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
        return jax.tree.map(lambda p, u: p + u, params, updates)

    new = _flat(one_step(params))
    old = _flat(params)
    mask = _flat(optim.weight_decay_mask(deit_params, mode))
    for k in old:
        expected = np.asarray(old[k]) * (1 - LR * WD) if mask[k] else np.asarray(old[k])
        np.testing.assert_allclose(np.asarray(new[k]), expected, rtol=1e-6, atol=0, err_msg=k)
    moved = {k for k in old if not np.array_equal(np.asarray(new[k]), np.asarray(old[k]))}
    if mode == "all":
        assert moved == set(old)
    else:
        assert moved == {k for k in old if mask[k]} and len(moved) < len(old)


# ----------------------------------------------------------------------------------------------------------------
# Global-norm clipping


def _clip_jax(grads: dict, max_norm: float) -> dict:
    """make_optimizer with plain SGD (no momentum, no decay) at lr 1: the update is −clip(g)."""
    cfg = _cfg("sgd", momentum=0.0, weight_decay=0.0, learning_rate=1.0, gradient_clip_val=max_norm)
    p = {k: jnp.zeros(v.shape, jnp.float32) for k, v in grads.items()}
    tx = optim.make_optimizer(cfg, 1, p)
    updates, _ = tx.update({k: jnp.asarray(v) for k, v in grads.items()}, tx.init(p), p)
    return {k: -np.asarray(v) for k, v in updates.items()}


def _clip_torch(grads: dict, max_norm: float) -> dict:
    ts = {k: torch.zeros(v.shape, requires_grad=True) for k, v in grads.items()}
    for k, t in ts.items():
        t.grad = torch.tensor(grads[k])
    torch.nn.utils.clip_grad_norm_(list(ts.values()), max_norm)
    return {k: t.grad.numpy() for k, t in ts.items()}


@pytest.mark.parametrize("scale", [10.0, 0.05])
def test_global_norm_clipping_matches_clip_grad_norm(scale):
    rng = np.random.default_rng(2)
    grads = {k: (rng.normal(size=s) * scale).astype(np.float32) for k, s in SHAPES.items()}
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    got, want = _clip_jax(grads, 1.0), _clip_torch(grads, 1.0)
    diff = _rel_diff(got, want)
    print(f"clip at norm {norm:.3f}: max rel diff {diff:.1e}")
    assert diff < 1e-6
    clipped_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in got.values()))
    if norm > 1.0:
        assert clipped_norm == pytest.approx(1.0, rel=1e-6)
    else:  # below the threshold the gradient passes unchanged
        assert _rel_diff(got, grads) == 0.0
    # Negative control: a doubled threshold is visible when clipping is active.
    if norm > 2.0:
        assert _rel_diff(_clip_jax(grads, 2.0), want) > 0.5


# ----------------------------------------------------------------------------------------------------------------
# Reduce-on-plateau

LOSSES = [1.0, 0.9, 0.9, 0.89995, 0.95, 0.8, 0.8, 0.8, 0.8, 0.7999, 0.79995, 0.8, 0.9, 0.5, 0.5, 0.5]


def _torch_plateau_lrs(losses, factor, patience, lr=1e6):
    """torch's learning rates divided by `lr`. torch ignores a reduction smaller than its eps = 1e-8 (absolute, on
    the learning rate); the large base lr keeps every reduction of these sequences above it."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=factor, patience=patience,
                                                       threshold=1e-4, threshold_mode="rel")
    out = []
    for loss in losses:
        sched.step(loss)
        out.append(opt.param_groups[0]["lr"] / lr)
    return out


@pytest.mark.parametrize("factor,patience", [(0.1, 0), (0.5, 1), (0.3, 2)])
def test_plateau_tracker_matches_reduce_lr_on_plateau(factor, patience):
    tracker = optim.PlateauTracker(factor=factor, patience=patience)
    got = [tracker.update(v) for v in LOSSES]
    want = _torch_plateau_lrs(LOSSES, factor, patience)
    print(f"plateau factor {factor} patience {patience}: {got}")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert min(want) < 1.0  # the sequence triggers reductions
    # Resuming from a state_dict continues identically.
    resumed = optim.PlateauTracker(factor=factor, patience=patience)
    half = optim.PlateauTracker(factor=factor, patience=patience)
    for v in LOSSES[:7]:
        half.update(v)
    resumed.load_state_dict(half.state_dict())
    np.testing.assert_allclose([resumed.update(v) for v in LOSSES[7:]], want[7:], rtol=1e-12)


def test_plateau_negative_control_threshold_matters():
    """0.89995 after 0.9 is a relative improvement of 5.6e-5 < 1e-4: not an improvement for torch. A tracker with
    threshold 0 counts it and drifts from torch."""
    tracker = optim.PlateauTracker(factor=0.1, patience=0, threshold=0.0)
    got = [tracker.update(v) for v in LOSSES]
    assert not np.allclose(got, _torch_plateau_lrs(LOSSES, 0.1, 0), rtol=1e-6)
