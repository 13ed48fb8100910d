"""DropPath parity (SPEC §2: x / keep · Bernoulli(keep) per sample, rate of block i = i/(L−1)·max_rate).

Every other parity test builds drop-path with rate 0, so torch_ref's DropPath never runs there. Here it runs in
train mode with the per-sample Bernoulli masks injected on both sides (torch's Tensor.bernoulli_ and
jax.random.bernoulli replaced by one queue of fixed masks, consumed in call order), so the two forwards must
agree to TOL; the keep probabilities each side asked for must equal 1 - i/(L-1)·max_rate per block.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jaxkd.interop import torch_to_jax
from jaxkd.models.vit import DeiT
from parity_tests.test_vit_parity import TOL, _diffs, _randomize_, _torch_heads, _worst
from torch_ref import vit as tvit

DP_CFG = dict(img_size=8, patch_size=2, in_channels=3, num_classes=5, embed_dim=16, depth=3, num_heads=2,
              mlp_ratio=2.0, use_conv_stem=False)
DP_RATE = 0.5  # block rates 0, 0.25, 0.5 -> keep 0.75 (block 1, twice) and 0.5 (block 2, twice)


def _dp_masks(n_calls: int, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = [rng.random(batch) < 0.5 for _ in range(n_calls)]
    for m in masks:  # every mask keeps and drops at least one sample
        m[0], m[1] = True, False
    return masks


@contextlib.contextmanager
def _injected_masks(monkeypatch, masks, keeps_seen):
    queue = list(masks)

    def torch_bernoulli_(self, p=0.5, *args, **kwargs):
        keeps_seen["torch"].append(float(p))
        return self.copy_(torch.from_numpy(queue.pop(0).astype(np.float64)).to(self.dtype).reshape(self.shape))

    def jax_bernoulli(key, p=0.5, shape=None):
        keeps_seen["jax"].append(float(p))
        return jnp.asarray(queue.pop(0)).reshape(shape)

    with monkeypatch.context() as mp:
        mp.setattr(torch.Tensor, "bernoulli_", torch_bernoulli_)
        mp.setattr(jax.random, "bernoulli", jax_bernoulli)
        yield queue


@nnx.jit
def _jit_train_heads(model, x):
    return model.forward_heads(x, token_layers=(0, 1, 2))


def test_drop_path_with_injected_masks_matches_torch(monkeypatch, record_property):
    torch.manual_seed(5)
    t = tvit.DeiT(**DP_CFG, drop_path_rate=DP_RATE)
    _randomize_(t, 5)
    j = DeiT(**DP_CFG, drop_path_rate=DP_RATE, attention="plain", rngs=nnx.Rngs(params=0, dropout=1))
    torch_to_jax(j, t.state_dict())
    assert [b.drop_path.drop_prob for b in t.blocks] == [0.0, 0.25, 0.5]
    assert [b.drop_path.rate for b in j.blocks] == [0.0, 0.25, 0.5]
    t.train(), j.train()
    x = np.random.default_rng(5).standard_normal((6, 8, 8, 3)).astype(np.float32)
    masks = _dp_masks(4, 6)
    keeps = {"torch": [], "jax": []}
    with _injected_masks(monkeypatch, masks, keeps) as q:
        tq = _torch_heads(t, x, (0, 1, 2))
        assert not q
    with _injected_masks(monkeypatch, masks, keeps) as q:
        o = _jit_train_heads(j, jnp.asarray(x))
        jq = {"cls": np.asarray(o["cls"]), "dist": np.asarray(o["dist"]), "tokens": np.asarray(o["tokens"]),
              "blocks": [np.asarray(b) for b in o["blocks"]]}
        assert not q
    assert keeps["torch"] == keeps["jax"] == [0.75, 0.75, 0.5, 0.5]
    d = _worst(_diffs(tq, jq))
    # control: the same torch forward with one sample's mask flipped in the last block's MLP branch
    flipped = [m.copy() for m in masks]
    flipped[3][2] = not flipped[3][2]
    with _injected_masks(monkeypatch, flipped, {"torch": [], "jax": []}):
        tf = _torch_heads(t, x, (0, 1, 2))
    ctrl = _worst(_diffs(tf, jq))
    # the masks matter: eval mode (no drop-path) is far from the train-mode forward
    t.eval()
    ev = _worst(_diffs(_torch_heads(t, x, (0, 1, 2)), jq))
    print(f"[drop-path] train-mode forward with injected masks: max diff {d:.2e}; flipped mask {ctrl:.2e}; "
          f"eval mode {ev:.2e}")
    record_property("drop_path_forward", d)
    record_property("drop_path_control_flipped_mask", ctrl)
    assert d <= TOL
    assert ctrl > TOL and ev > TOL


def test_drop_path_formula_and_statistics(monkeypatch, record_property):
    """The module alone: x / keep · mask per sample (mask shared over the other axes), identity in eval mode;
    and, without injection, the drop rate and the mean (E[out] = x) over 4000 samples on each side."""
    from jaxkd.models.vit import DropPath as JDropPath

    rate, keep = 0.3, 0.7
    x = np.random.default_rng(1).standard_normal((6, 4, 5)).astype(np.float32)
    masks = _dp_masks(1, 6, seed=1)
    want = x / keep * masks[0][:, None, None]
    tdp, jdp = tvit.DropPath(rate).train(), JDropPath(rate, rngs=nnx.Rngs(0))
    with _injected_masks(monkeypatch, masks, {"torch": [], "jax": []}):
        tout = tdp(torch.from_numpy(x)).numpy()
    with _injected_masks(monkeypatch, masks, {"torch": [], "jax": []}):
        jout = np.asarray(jdp(jnp.asarray(x)))
    d = max(float(np.max(np.abs(tout - want))), float(np.max(np.abs(jout - want))))
    wrong = float(np.max(np.abs(tout - x * masks[0][:, None, None])))  # control: the mask without 1/keep
    record_property("drop_path_formula", d)
    assert d <= 1e-6 and wrong > 0.1
    tdp.eval()
    jdp.eval()
    assert np.array_equal(tdp(torch.from_numpy(x)).numpy(), x) and np.array_equal(np.asarray(jdp(jnp.asarray(x))), x)
    # statistics (real random masks): fraction dropped ~ rate, mean ~ 1 on a ones input (4000 samples: 5 sigma)
    ones = np.ones((4000, 3), np.float32)
    torch.manual_seed(0)
    for name, out in (("torch", tvit.DropPath(rate).train()(torch.from_numpy(ones)).numpy()),
                      ("jax", np.asarray(JDropPath(rate, rngs=nnx.Rngs(0))(jnp.asarray(ones))))):
        dropped = float(np.mean(out[:, 0] == 0))
        assert np.all((out == 0) | np.isclose(out, 1 / keep)), name
        assert np.all(out == out[:, :1]), name  # one mask per sample
        assert abs(dropped - rate) < 5 * np.sqrt(rate * keep / 4000), (name, dropped)
        assert abs(float(out.mean()) - 1.0) < 5 * np.sqrt(rate / keep / 4000), (name, float(out.mean()))
