"""Parity: jaxkd.models.resnet.ResNet18CIFAR vs torch_ref.resnet.ResNet18CIFAR (LATER.md §2.1), same weights.

Tolerances: fp32 CPU logits (eval and train mode) <= 1e-5 abs; the five stage maps (eval; values up to ~20) <= 1e-5
relative to each map's largest value; BatchNorm running statistics after one train-mode forward <= 1e-6 abs
(momentum 0.1, unbiased variance), num_batches_tracked + 1; float64 gradients of a CE loss with respect to all 62
parameter tensors (train mode) <= 1e-9 relative to the largest gradient. Full-size model
(11,173,962 parameters at 10 classes), batch 2, 32×32 (gradients: 16×16, which runs every layer, layer4 at 2×2).
BatchNorm affine parameters and running statistics are randomised so that every conversion is exercised. Negative
controls (each must miss by far more than the tolerance): one perturbed stem weight (logits and gradients), a
BatchNorm storing the biased batch variance (running statistics), a max-pool after the stem (the ImageNet stem's).
Measured figures are printed (-s) and recorded as junit properties.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.interop import jax_to_torch, torch_state_dict_shapes, torch_to_jax
from jaxkd.interop.state_dict import model_from_torch as loaded
from jaxkd.models import layers as jlayers
from jaxkd.models import resnet as jresnet
from jaxkd.models.layers import cast_module
from parity_tests.test_cnn_parity import _randomize_bn
from torch_ref import resnet as tresnet

FP32_TOL = 1e-5
STAT_TOL = 1e-6
MAP_REL_TOL = 1e-5
GRAD_REL_TOL = 1e-9
PARAMS, ENTRIES, PARAM_TENSORS = 11_173_962, 122, 62
# keys and shapes of the original's best_model.pth (src/teachers.py@5608f14's module names), a sample
ORIGINAL_KEYS = {"conv1.weight": (64, 3, 3, 3), "bn1.running_var": (64,), "layer1.1.conv2.weight": (64, 64, 3, 3),
                 "layer2.0.shortcut.0.weight": (128, 64, 1, 1), "layer3.0.shortcut.1.num_batches_tracked": (),
                 "layer4.1.bn2.bias": (512,), "fc.weight": (10, 512), "fc.bias": (10,)}

_fwd = nnx.jit(lambda m, x: m(x))


def _images(seed: int, size: int = 32, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(np.float32)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _jax_model(sd) -> jresnet.ResNet18CIFAR:
    return loaded(lambda: jresnet.ResNet18CIFAR(in_channels=3, num_classes=10, rngs=nnx.Rngs(0)), sd)


@pytest.fixture(scope="module")
def ref():
    """(torch_ref model with randomised BatchNorms, its state dict)."""
    torch.manual_seed(0)
    t = _randomize_bn(tresnet.ResNet18CIFAR(3, 10), seed=7)
    return t, {k: v.clone() for k, v in t.state_dict().items()}


def test_param_count_and_keys(ref, record_property):
    t, sd = ref
    j = _jax_model(sd)
    j_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(j, nnx.Param)))
    t_params = sum(p.numel() for p in t.parameters())
    assert j_params == t_params == PARAMS  # LATER.md §2.1: 11,173,962 at 10 classes
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert len(shapes) == ENTRIES and len(list(t.parameters())) == PARAM_TENSORS
    assert torch_state_dict_shapes(j) == shapes
    for k, s in ORIGINAL_KEYS.items():
        assert shapes[k] == s, k
    assert sum(p.numel() for p in tresnet.ResNet18CIFAR(3, 100).parameters()) == 11_220_132  # §2.1, C = 100
    record_property("params", j_params)


def _eval_logits(t, j, x):
    with torch.no_grad():
        lt = copy.deepcopy(t).eval()(_nchw(x)).numpy()
    j.eval()
    return lt, np.asarray(_fwd(j, jnp.asarray(x)))


def test_eval_logits_and_feature_maps(ref, record_property):
    t, sd = ref
    x = _images(1)
    j = _jax_model(sd)
    lt, lj = _eval_logits(t, j, x)
    diff = float(np.max(np.abs(lt - lj)))
    with torch.no_grad():
        maps_t = [m.numpy().transpose(0, 2, 3, 1) for m in copy.deepcopy(t).eval().feature_maps(_nchw(x))]
    maps_j = [np.asarray(m) for m in nnx.jit(lambda m, x: m.feature_maps(x))(j, jnp.asarray(x))]
    assert [m.shape[1:3] for m in maps_j] == [(32, 32), (32, 32), (16, 16), (8, 8), (4, 4)]  # no max-pool
    # the maps grow to O(10-100) through the residual sums: compared relative to each map's largest value
    map_diff = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(maps_t, maps_j))
    print(f"[resnet18] eval logits max|diff| = {diff:.3e} (max|logit| {np.max(np.abs(lt)):.3f}); "
          f"stage maps max|diff| / max|map| = {map_diff:.3e} (max|map| "
          f"{', '.join(f'{np.max(np.abs(a)):.1f}' for a in maps_t)})")
    record_property("eval_max_abs_diff", diff)
    record_property("feature_maps_max_rel_diff", map_diff)
    assert lj.dtype == np.float32 and lj.shape == (2, 10) and np.max(np.abs(lt)) > 0.1
    assert diff <= FP32_TOL and map_diff <= MAP_REL_TOL


def test_eval_negative_control_perturbed_weight(ref, record_property):
    """+1e-2 on one stem-conv weight must fail the eval comparison."""
    t, sd = ref
    bad = dict(sd)
    w = sd["conv1.weight"].clone()
    w[5, 1, 1, 1] += 1e-2
    bad["conv1.weight"] = w
    lt, lj = _eval_logits(t, _jax_model(bad), _images(1))
    diff = float(np.max(np.abs(lt - lj)))
    print(f"[resnet18] perturbed stem weight: eval max|diff| = {diff:.3e}")
    record_property("perturbed_max_abs_diff", diff)
    assert diff > 5 * FP32_TOL


def test_negative_control_maxpool_stem(ref, monkeypatch, record_property):
    """The ImageNet stem's 3×3/s2 max-pool after conv1 (LATER.md §2.1: the CIFAR stem has none) changes no parameter
    or key, so only the comparison with torch_ref can see it."""
    t, sd = ref

    def pooled_stem(self, x):
        h = jlayers.relu(self.bn1(self.conv1(self._check_input(x))))
        h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in self._stages():
            h = stage(h)
        return h

    monkeypatch.setattr(jresnet.ResNet18CIFAR, "features_map", pooled_stem)
    j = _jax_model(sd)
    x = _images(1)
    with torch.no_grad():
        lt = copy.deepcopy(t).eval()(_nchw(x)).numpy()
    j.eval()
    fresh = nnx.jit(lambda m, x: m(x))  # (a new trace: the shared one was compiled before the patch)
    diff = float(np.max(np.abs(lt - np.asarray(fresh(j, jnp.asarray(x))))))
    print(f"[resnet18] max-pool stem: eval max|diff| = {diff:.3e}")
    record_property("maxpool_stem_max_abs_diff", diff)
    assert diff > 5 * FP32_TOL


def _train_step(t, sd, x, fwd=_fwd):
    """(torch logits, jaxkd logits, torch state dict after, jaxkd state dict after) of one train-mode forward."""
    tt = copy.deepcopy(t).train()
    lt = tt(_nchw(x)).detach().numpy()
    j = _jax_model(sd)
    j.train()
    lj = np.asarray(fwd(j, jnp.asarray(x)))
    return lt, lj, {k: v.numpy() for k, v in tt.state_dict().items()}, jax_to_torch(j)


def _stat_diffs(after_t, after_j):
    diffs = {"running_mean": 0.0, "running_var": 0.0}
    for k, v in after_t.items():
        name = k.rsplit(".", 1)[1]
        if name in diffs:
            diffs[name] = max(diffs[name], float(np.max(np.abs(v - after_j[k]))))
    return diffs


def test_train_logits_and_running_stats(ref, record_property):
    """Train mode (batch statistics): logits, and every BatchNorm's running mean / unbiased variance / counter after
    the step, agree with torch."""
    t, sd = ref
    lt, lj, after_t, after_j = _train_step(t, sd, _images(3))
    ldiff = float(np.max(np.abs(lt - lj)))
    stats = _stat_diffs(after_t, after_j)
    for k, v in after_t.items():
        if k.endswith("num_batches_tracked"):
            assert int(after_j[k]) == int(v) == int(sd[k]) + 1, k
        elif k.endswith("running_var"):
            assert not np.allclose(v, sd[k].numpy(), atol=1e-4), f"{k} did not move"
    print(f"[resnet18] train logits max|diff| = {ldiff:.3e}; running stats max|diff| = {stats}")
    record_property("train_logits_max_abs_diff", ldiff)
    record_property("running_stats_max_abs_diff", stats)
    assert ldiff <= FP32_TOL
    assert max(stats.values()) <= STAT_TOL


def test_negative_control_biased_running_var(ref, monkeypatch, record_property):
    """A BatchNorm that stores the biased batch variance in its running estimate (flax's nnx.BatchNorm does) fails
    the running-variance comparison the real one passes; the running means still agree (same momentum)."""
    t, sd = ref
    unbiased_call = jlayers.BatchNorm.__call__

    def biased_call(self, x, *, use_running_average=None):
        old = self.var[...]
        y = unbiased_call(self, x, use_running_average=use_running_average)
        if not (self.use_running_average if use_running_average is None else use_running_average):
            n = x.size // x.shape[-1]
            m = self.momentum
            self.var[...] = (1 - m) * old + (self.var[...] - (1 - m) * old) * ((n - 1) / n)
        return y

    monkeypatch.setattr(jlayers.BatchNorm, "__call__", biased_call)
    _, _, after_t, after_j = _train_step(t, sd, _images(3), fwd=nnx.jit(lambda m, x: m(x)))  # (a new trace)
    stats = _stat_diffs(after_t, after_j)
    print(f"[resnet18] biased running var: max|diff| = {stats}")
    record_property("biased_var_diff", stats["running_var"])
    assert stats["running_mean"] <= STAT_TOL
    assert stats["running_var"] > 100 * STAT_TOL


def _ce(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@pytest.fixture(scope="module")
def f64_grads(ref):
    """(torch loss, torch grads at the reference weights, fn sd -> (jaxkd loss, jaxkd grads)), float64, train mode,
    16×16 input; jaxkd's jitted gradient is compiled once and reused by the negative control."""
    t, sd = ref
    x = _images(4, size=16).astype(np.float64)
    y = np.array([3, 8])
    tt = copy.deepcopy(t).double().train()
    loss_t = torch.nn.functional.cross_entropy(tt(_nchw(x)), torch.from_numpy(y))
    loss_t.backward()
    gt = {k: p.grad.numpy() for k, p in tt.named_parameters()}
    step = nnx.jit(nnx.value_and_grad(lambda m, xb, yb: _ce(m(xb), yb)))

    def jax_grads(weights):
        with jax.enable_x64(True):
            j = _jax_model(weights)
            cast_module(j, jnp.float64)
            torch_to_jax(j, weights)  # the float32 weights, exactly, in float64
            j.train()
            loss_j, grads = step(j, jnp.asarray(x), jnp.asarray(y))
            holder = nnx.clone(j)
            nnx.update(holder, grads)
            return float(loss_j), {k: v for k, v in jax_to_torch(holder).items() if k in gt}

    return loss_t.item(), gt, jax_grads


def _grad_diff(gt, gj):
    scale = max(float(np.max(np.abs(g))) for g in gt.values())
    worst = max(gt, key=lambda k: np.max(np.abs(gt[k] - gj[k])))
    return float(np.max(np.abs(gt[worst] - gj[worst]))), scale, worst


def test_float64_gradients_every_parameter(ref, f64_grads, record_property):
    _, sd = ref
    loss_t, gt, jax_grads = f64_grads
    loss_j, gj = jax_grads(sd)
    assert abs(loss_j - loss_t) <= 1e-12
    diff, scale, worst = _grad_diff(gt, gj)
    print(f"[resnet18 f64] {len(gt)} grads: max|diff| = {diff:.3e} at {worst}; max|grad| = {scale:.3e}; "
          f"rel = {diff / scale:.3e}")
    record_property("grad_rel_diff", diff / scale)
    assert len(gt) == PARAM_TENSORS and all(gj[k].dtype == np.float64 for k in gt)
    assert diff <= GRAD_REL_TOL * scale


def test_float64_gradients_negative_control(ref, f64_grads, record_property):
    """jaxkd's gradients with one stem weight moved by 1e-3 against torch's at the true weights: far outside the
    gradient tolerance (the comparison resolves a change that small)."""
    _, sd = ref
    bad = dict(sd)
    w = sd["conv1.weight"].clone()
    w[5, 1, 1, 1] += 1e-3
    bad["conv1.weight"] = w
    _, gt, jax_grads = f64_grads
    _, gj = jax_grads(bad)
    diff, scale, _ = _grad_diff(gt, gj)
    print(f"[resnet18 f64] perturbed weight: grads rel diff = {diff / scale:.3e}")
    record_property("perturbed_grad_rel_diff", diff / scale)
    assert diff > 1000 * GRAD_REL_TOL * scale


def test_initialisation_follows_the_original(monkeypatch):
    """LATER.md §2.1: convs Kaiming-normal fan_out (std sqrt(2 / (k²·out))), the Linear Kaiming-normal fan_in (std
    sqrt(2 / 512)) with bias 0, BatchNorm 1 / 0. The initialisers' laws are checked on samples and on a projection
    block; that the model gives them to all its 20 convolutions and its Linear is read from an abstract build
    (building the whole model eagerly would compile every initialiser for each shape: seconds)."""
    blk = jresnet.BasicBlock(256, 512, 2, rngs=nnx.Rngs(0))
    for conv, k in ((blk.conv1, 3), (blk.conv2, 3), (blk.shortcut.layers[0], 1)):
        w = np.asarray(conv.kernel[...])
        want = np.sqrt(2.0 / (k * k * 512))
        assert abs(w.std() / want - 1) < 0.03 and abs(w.mean()) < 0.05 * want, (k, w.std(), want)
        assert conv.bias is None
    for bn in (blk.bn1, blk.bn2, blk.shortcut.layers[1]):
        assert np.all(np.asarray(bn.scale[...]) == 1) and np.all(np.asarray(bn.bias[...]) == 0)
    w = np.asarray(jresnet._linear_init(jax.random.key(1), (512, 1000)))
    assert abs(w.std() / np.sqrt(2.0 / 512) - 1) < 0.02
    used = {"conv": [], "linear": []}

    def recording(kind, init):
        def wrapped(key, shape, dtype=jnp.float32):
            used[kind].append(tuple(shape))
            return init(key, shape, dtype)
        return wrapped

    monkeypatch.setattr(jresnet, "_conv_init", recording("conv", jresnet._conv_init))
    monkeypatch.setattr(jresnet, "_linear_init", recording("linear", jresnet._linear_init))
    nnx.eval_shape(lambda: jresnet.ResNet18CIFAR(rngs=nnx.Rngs(0)))
    assert len(used["conv"]) == 20 and used["linear"] == [(512, 10)]
    # torch_ref's init is the same law (checked on its own fresh model)
    torch.manual_seed(1)
    tw = tresnet.ResNet18CIFAR(3, 10).layer4[0].conv1.weight.detach().numpy()
    assert abs(tw.std() / np.sqrt(2.0 / (9 * 512)) - 1) < 0.03


def test_jax_export_loads_strict_into_torch_ref(ref, record_property):
    """A jaxkd model exported with jax_to_torch loads strictly into torch_ref and computes the same."""
    _, sd = ref
    j = _jax_model(sd)
    out = {k: torch.from_numpy(v) for k, v in jax_to_torch(j).items()}
    t = tresnet.ResNet18CIFAR(3, 10)
    result = t.load_state_dict(out, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(out[k], v) for k, v in sd.items())  # bit-exact round trip
    assert out["layer2.0.shortcut.1.num_batches_tracked"].dtype == torch.int64
