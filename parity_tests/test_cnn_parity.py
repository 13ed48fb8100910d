"""Parity: jaxkd.models.cnn.AdaptiveCNN vs torch_ref.cnn.AdaptiveCNN (torch weights converted into jax).

Tolerances: fp32 CPU logits (eval and train mode) <= 1e-5 abs; BN running stats after one train forward
<= 1e-6 abs; float64 gradients of a CE loss w.r.t. every parameter (MNIST variant, full size, train mode)
<= 1e-9 relative to the largest gradient magnitude. The CIFAR variant (17.6M parameters) is checked in
fp32 forward only (eval + train + running stats), to keep the suite fast. Inputs are full size
(MNIST 28x28x1, CIFAR 32x32x3), batch 4 / 2. Measured figures are printed and recorded as properties.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.interop import jax_to_torch, torch_state_dict_shapes, torch_to_jax
from jaxkd.models.cnn import AdaptiveCNN
from jaxkd.models.layers import BatchNorm, cast_module
from torch_ref import cnn as tcnn

FP32_TOL = 1e-5
STAT_TOL = 1e-6
GRAD_REL_TOL = 1e-9
CFG = {  # variant: (in_channels, H=W, batch, params, state_dict entries)
    "mnist": (1, 28, 4, 709_034, 106),
    "cifar": (3, 32, 2, 17_629_514, 182),
}


# jitted forwards: the production path, and one XLA compile per (variant, mode) instead of dozens of eager ones
_fwd = nnx.jit(lambda m, x: m(x))
_feat = nnx.jit(lambda m, x: m.features_map(x))


def _randomize_bn(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BN affine params and running stats, so that stats conversion is exercised (in place; returns
    ``model``). Also used by the bf16 and ResNet parity tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(0, 1000, (1,), generator=g)))
    return model


def _images(variant: str, seed: int) -> np.ndarray:
    c, hw, b, _, _ = CFG[variant]
    return np.random.default_rng(seed).standard_normal((b, hw, hw, c)).astype(np.float32)


def _to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class Pair:
    def __init__(self, variant: str):
        c = CFG[variant][0]
        torch.manual_seed({"mnist": 0, "cifar": 1}[variant])
        self.torch = tcnn.AdaptiveCNN(variant, in_channels=c, num_classes=10)
        _randomize_bn(self.torch, seed=7)
        self.sd = {k: v.clone() for k, v in self.torch.state_dict().items()}
        self.jax = AdaptiveCNN(variant=variant, in_channels=c, num_classes=10, rngs=nnx.Rngs(123))
        self.variant = variant

    def fresh(self):
        """(torch model, jax model) both holding the original weights and stats."""
        t = copy.deepcopy(self.torch)
        torch_to_jax(self.jax, self.sd)
        return t, self.jax


@pytest.fixture(scope="module", params=["mnist", "cifar"])
def pair(request) -> Pair:
    return Pair(request.param)


@pytest.fixture(scope="module")
def mnist_pair() -> Pair:
    return Pair("mnist")


def _logits_eval(pair: Pair, x: np.ndarray):
    t, j = pair.fresh()
    t.eval()
    j.eval()
    with torch.no_grad():
        lt = t(_to_nchw(x)).numpy()
    lj = np.asarray(_fwd(j, jnp.asarray(x)))
    return lt, lj


def test_param_count_and_keys_match_torch_ref(pair, record_property):
    _, _, _, n_params, n_entries = CFG[pair.variant]
    j_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(pair.jax, nnx.Param)))
    t_params = sum(p.numel() for p in pair.torch.parameters())
    assert j_params == t_params == n_params
    t_shapes = {k: tuple(v.shape) for k, v in pair.torch.state_dict().items()}
    assert len(t_shapes) == n_entries
    assert torch_state_dict_shapes(pair.jax) == t_shapes
    record_property("params", j_params)


def test_eval_logits(pair, record_property):
    x = _images(pair.variant, seed=1)
    lt, lj = _logits_eval(pair, x)
    diff = float(np.max(np.abs(lt - lj)))
    print(f"[{pair.variant}] eval logits max|diff| = {diff:.3e} (max|logit| {np.max(np.abs(lt)):.3f})")
    record_property("eval_max_abs_diff", diff)
    assert lj.dtype == np.float32 and lj.shape == lt.shape == (x.shape[0], 10)
    assert np.max(np.abs(lt)) > 0.1  # non-trivial logits
    assert diff <= FP32_TOL


def test_eval_negative_control_perturbed_weight(mnist_pair, record_property):
    """+1e-2 on one stem-conv kernel entry (3% of its init bound 1/3) must fail the eval comparison.

    (+1e-3 moves these small logits, max |logit| ~0.24, by only ~1.3e-5: too close to the tolerance.)"""
    x = _images("mnist", seed=1)
    sd = dict(mnist_pair.sd)
    w = sd["features.0.0.weight"].clone()
    w[3, 0, 1, 1] += 1e-2
    sd["features.0.0.weight"] = w
    t = copy.deepcopy(mnist_pair.torch).eval()
    j = torch_to_jax(mnist_pair.jax, sd)
    j.eval()
    with torch.no_grad():
        lt = t(_to_nchw(x)).numpy()
    diff = float(np.max(np.abs(lt - np.asarray(_fwd(j, jnp.asarray(x))))))
    print(f"[mnist] perturbed-weight eval max|diff| = {diff:.3e}")
    record_property("perturbed_max_abs_diff", diff)
    assert diff > 5 * FP32_TOL


def test_features_map(mnist_pair, record_property):
    x = _images("mnist", seed=2)
    t, j = mnist_pair.fresh()
    t.eval()
    j.eval()
    with torch.no_grad():
        ft = t.features_map(_to_nchw(x)).numpy().transpose(0, 2, 3, 1)
    fj = np.asarray(_feat(j, jnp.asarray(x)))
    assert fj.shape == ft.shape == (4, 4, 4, 128)
    diff = float(np.max(np.abs(ft - fj)))
    print(f"[mnist] features_map max|diff| = {diff:.3e}")
    record_property("features_max_abs_diff", diff)
    assert diff <= FP32_TOL


def test_train_logits_and_running_stats(pair, record_property):
    """Train mode (BN batch stats, dropout in eval): logits and updated BN stats agree with torch."""
    x = _images(pair.variant, seed=3)
    t, j = pair.fresh()
    t.train()
    t.classifier[2].eval()
    j.train()
    j.classifier.layers[2].deterministic = True
    lt = t(_to_nchw(x)).detach().numpy()
    lj = np.asarray(_fwd(j, jnp.asarray(x)))
    ldiff = float(np.max(np.abs(lt - lj)))
    after_t = {k: v.numpy() for k, v in t.state_dict().items()}
    after_j = jax_to_torch(j)
    stat_diff = {"running_mean": 0.0, "running_var": 0.0}
    for k, v in after_t.items():
        name = k.rsplit(".", 1)[1]
        if name in stat_diff:
            stat_diff[name] = max(stat_diff[name], float(np.max(np.abs(v - after_j[k]))))
            assert not np.allclose(v, pair.sd[k].numpy(), atol=1e-4), f"{k} did not move"
        elif name == "num_batches_tracked":
            assert int(after_j[k]) == int(v) == int(pair.sd[k]) + 1, k
    print(f"[{pair.variant}] train logits max|diff| = {ldiff:.3e}; running stats max|diff| = {stat_diff}")
    record_property("train_logits_max_abs_diff", ldiff)
    record_property("running_stats_max_abs_diff", stat_diff)
    assert ldiff <= FP32_TOL
    assert max(stat_diff.values()) <= STAT_TOL


def _ce(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def test_float64_gradients_every_parameter(mnist_pair, record_property):
    """d CE / d theta for all 61 parameter tensors (MNIST variant, full size, train mode), float64."""
    x = _images("mnist", seed=4).astype(np.float64)
    y = np.array([3, 1, 4, 1])
    t = tcnn.AdaptiveCNN("mnist", in_channels=1, num_classes=10, head_dropout=0.0)
    t.load_state_dict(mnist_pair.sd)
    t = t.double().train()
    loss_t = torch.nn.functional.cross_entropy(t(_to_nchw(x)), torch.from_numpy(y))
    loss_t.backward()
    gt = {k: p.grad.numpy() for k, p in t.named_parameters()}
    j = AdaptiveCNN(variant="mnist", in_channels=1, num_classes=10, head_dropout=0.0, rngs=nnx.Rngs(0))
    with jax.enable_x64(True):
        cast_module(j, jnp.float64)  # float64 params, stats and compute
        torch_to_jax(j, t.state_dict())
        j.train()
        step = nnx.jit(nnx.value_and_grad(lambda m, xb, yb: _ce(m(xb), yb)))
        loss_j, grads = step(j, jnp.asarray(x), jnp.asarray(y))
        holder = nnx.clone(j)
        nnx.update(holder, grads)
        gj = jax_to_torch(holder)
    assert abs(float(loss_j) - loss_t.item()) <= 1e-12
    scale = max(float(np.max(np.abs(g))) for g in gt.values())
    worst = max(gt, key=lambda k: np.max(np.abs(gt[k] - gj[k])))
    diff = float(np.max(np.abs(gt[worst] - gj[worst])))
    print(f"[mnist f64] {len(gt)} grads: max|diff| = {diff:.3e} at {worst}; max|grad| = {scale:.3e}; "
          f"rel = {diff / scale:.3e}")
    record_property("grad_rel_diff", diff / scale)
    assert len(gt) == 61 and all(gj[k].dtype == np.float64 for k in gt)
    assert diff <= GRAD_REL_TOL * scale


def test_negative_control_block_table_stride_moved(mnist_pair, monkeypatch, record_property):
    """torch_ref builds its blocks from SPEC §1's stage description, jaxkd from its own (in, out, stride) table. A
    table with the stride of RB(32→64, s2) dropped has the same parameters and state-dict keys (the shortcut stays:
    the width changes), so the counts cannot see it, but the eval logits vs torch_ref miss by > 5x the tolerance."""
    import jaxkd.models.cnn as jcnn

    table = list(jcnn._BLOCKS["mnist"])
    assert table[2] == (32, 64, 2)
    table[2] = (32, 64, 1)
    monkeypatch.setitem(jcnn._BLOCKS, "mnist", table)
    wrong = AdaptiveCNN(variant="mnist", in_channels=1, num_classes=10, rngs=nnx.Rngs(0))
    assert torch_state_dict_shapes(wrong) == {k: tuple(v.shape) for k, v in mnist_pair.sd.items()}
    torch_to_jax(wrong, mnist_pair.sd).eval()
    x = _images("mnist", seed=1)
    t = copy.deepcopy(mnist_pair.torch).eval()
    with torch.no_grad():
        lt = t(_to_nchw(x)).numpy()
    diff = float(np.max(np.abs(lt - np.asarray(_fwd(wrong, jnp.asarray(x))))))
    print(f"[mnist] stride-moved block table: eval max|diff| = {diff:.3e}")
    record_property("stride_moved_max_abs_diff", diff)
    assert diff > 5 * FP32_TOL


def test_negative_control_biased_running_var(record_property):
    """flax nnx.BatchNorm (biased running var) fails the running-var comparison that jaxkd BatchNorm passes."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 3, 8)).astype(np.float32) * 2 + 1
    tb = torch.nn.BatchNorm2d(8).train()
    tb(_to_nchw(x))
    ours = BatchNorm(8)
    ours(jnp.asarray(x))
    flax_bn = nnx.BatchNorm(8, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))  # flax convention: 1 - 0.1
    flax_bn(jnp.asarray(x))
    rv = tb.running_var.detach().numpy()
    ours_diff = float(np.max(np.abs(rv - np.asarray(ours.var[...]))))
    flax_diff = float(np.max(np.abs(rv - np.asarray(flax_bn.var[...]))))
    mean_diff = float(np.max(np.abs(tb.running_mean.numpy() - np.asarray(flax_bn.mean[...]))))
    print(f"running_var max|diff|: jaxkd {ours_diff:.3e}, flax biased {flax_diff:.3e} (means agree {mean_diff:.1e})")
    record_property("biased_var_diff", flax_diff)
    assert ours_diff <= STAT_TOL
    assert mean_diff <= STAT_TOL  # same momentum convention, so only the variance bias differs
    assert flax_diff > 100 * STAT_TOL


def test_negative_control_same_padding_stride2(record_property):
    """torch Conv2d(stride 2, padding 1) == nnx.Conv(padding ((1,1),(1,1))) != nnx.Conv(padding 'SAME')."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    x = np.random.default_rng(6).standard_normal((2, 8, 8, 4)).astype(np.float32)
    with torch.no_grad():
        ref = conv(_to_nchw(x)).numpy().transpose(0, 2, 3, 1)
    kernel = jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    diffs = {}
    for pad in [((1, 1), (1, 1)), "SAME"]:
        c = nnx.Conv(4, 6, (3, 3), strides=(2, 2), padding=pad, use_bias=False, rngs=nnx.Rngs(0))
        c.kernel[...] = kernel
        out = np.asarray(c(jnp.asarray(x)))
        diffs[str(pad)] = float(np.max(np.abs(out - ref))) if out.shape == ref.shape else float("inf")
    print(f"stride-2 conv max|diff| vs torch padding=1: {diffs}")
    record_property("padding_diffs", diffs)
    assert diffs[str(((1, 1), (1, 1)))] <= FP32_TOL
    assert diffs["SAME"] > 1e-2


def test_use_se_false_matches_torch(record_property):
    t = tcnn.AdaptiveCNN("mnist", in_channels=1, num_classes=10, use_se=False).eval()
    j = AdaptiveCNN(variant="mnist", in_channels=1, num_classes=10, use_se=False, rngs=nnx.Rngs(0))
    assert torch_state_dict_shapes(j) == {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert not any(".se." in k for k in t.state_dict())
    torch_to_jax(j, t.state_dict()).eval()
    x = _images("mnist", seed=8)[:2]
    with torch.no_grad():
        lt = t(_to_nchw(x)).numpy()
    diff = float(np.max(np.abs(lt - np.asarray(_fwd(j, jnp.asarray(x))))))
    record_property("eval_max_abs_diff", diff)
    assert diff <= FP32_TOL


def test_jax_initialised_export_loads_strict_into_torch(pair, record_property):
    """A jaxkd-initialised model exported with jax_to_torch loads strictly into torch_ref and computes the same."""
    c = CFG[pair.variant][0]
    j = AdaptiveCNN(variant=pair.variant, in_channels=c, num_classes=10, rngs=nnx.Rngs(42))
    sd = {k: torch.from_numpy(v) for k, v in jax_to_torch(j).items()}
    t = tcnn.AdaptiveCNN(pair.variant, in_channels=c, num_classes=10)
    result = t.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(sd[k], v) for k, v in t.state_dict().items())
    assert sd["features.0.1.num_batches_tracked"].dtype == torch.int64
    x = _images(pair.variant, seed=9)
    with torch.no_grad():
        lt = t.eval()(_to_nchw(x)).numpy()
    diff = float(np.max(np.abs(lt - _eval(j, x))))
    print(f"[{pair.variant}] jax-init export, eval logits max|diff| = {diff:.3e}")
    record_property("export_eval_max_abs_diff", diff)
    assert diff <= FP32_TOL


def _eval(j, x):
    j.eval()
    return np.asarray(_fwd(j, jnp.asarray(x)))


# ---- peer listing (PEER_CHECKPOINTS.md) -----------------------------------------------------------------

_PEER_FEW = {  # a few keys hardcoded from PEER_CHECKPOINTS.md (always checked, even without the spec file)
    "mnist": {"features.0.0.weight": (32, 1, 3, 3), "features.3.shortcut.0.weight": (64, 32, 1, 1),
              "features.6.se.fc.2.weight": (128, 8), "classifier.0.weight": (64, 128),
              "classifier.3.bias": (10,), "features.5.bn2.num_batches_tracked": ()},
    "cifar": {"features.0.0.weight": (64, 3, 3, 3), "features.9.shortcut.0.weight": (512, 256, 1, 1),
              "features.11.se.fc.0.weight": (32, 512), "classifier.0.weight": (256, 512),
              "classifier.3.weight": (10, 256), "features.6.shortcut.1.running_var": (256,)},
}


def _peer_listing(variant: str) -> dict[str, tuple[int, ...]] | None:
    data = Path(os.environ.get("JAXKD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    f = data.parent / "spec" / "PEER_CHECKPOINTS.md"
    if not f.is_file():
        return None
    text = f.read_text()
    section = text.split(f"## adaptive_cnn {variant}", 1)[1].split("```", 2)[1]
    out = {}
    for key, shape in re.findall(r"^(\S+) \(([\d, ]*)\)$", section, flags=re.M):
        dims = tuple(int(s) for s in shape.replace(" ", "").split(",") if s)
        out[key] = dims
        if key.endswith(".weight") and len(dims) == 1:  # BatchNorm: the listing gives only .weight
            base = key[: -len("weight")]
            out.update({base + "bias": dims, base + "running_mean": dims, base + "running_var": dims,
                        base + "num_batches_tracked": ()})
    return out


@pytest.mark.parametrize("variant", ["mnist", "cifar"])
def test_torch_ref_state_dict_equals_peer_listing(variant):
    c, _, _, n_params, n_entries = CFG[variant]
    t = tcnn.AdaptiveCNN(variant, in_channels=c, num_classes=10)
    shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert len(shapes) == n_entries and sum(p.numel() for p in t.parameters()) == n_params
    for k, s in _PEER_FEW[variant].items():
        assert shapes[k] == s, k
    listing = _peer_listing(variant)
    if listing is None:
        pytest.skip("PEER_CHECKPOINTS.md not found; counts and sample keys were checked")
    assert len(listing) == n_entries
    assert shapes == listing
