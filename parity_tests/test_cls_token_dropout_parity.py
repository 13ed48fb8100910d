"""cls-token dropout parity (SPEC §7, ``vit.cls_token_dropout``): jaxkd's DeiT vs torch_ref's, with the draw fixed.

In train mode, after the final LayerNorm and before the heads, sample b's class token is replaced by the mean of its
patch tokens (the tokens after cls, and after dist with distillation) when its uniform draw u_b < p; the dist
token is untouched. Both sides take the same (B,) uniform vector through ``forward_heads(cls_drop_uniform=)``, so
the comparison also checks the threshold's direction (u < p replaces), with values on both sides of p.

Tolerances (the ViT suite's, parity_tests/test_vit_parity.py): float32 forward, both logits heads and the final
tokens, max abs diff <= 1e-5; float64 (torch double, jax under ``jax.enable_x64``): forward <= 1e-10 abs and the
gradient of every parameter <= 1e-9 relative to the largest gradient magnitude.
Negative controls: torch_ref's module swapped for a wrong variant (no replacement; the mask applied to the dist token
instead; the mean taken over dist and patches; the mask inverted) must miss by more than the tolerance, in the
forward and, for the first two, in the float64 gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.interop import jax_to_torch, torch_to_jax
from jaxkd.models.vit import DeiT
from parity_tests.test_vit_parity import F64_TOL, GRAD_REL_TOL, TOL, _no_mkldnn, _randomize_
from torch_ref import vit as tvit

CFG = dict(img_size=8, patch_size=2, in_channels=3, num_classes=5, embed_dim=16, depth=2, num_heads=2,
           mlp_ratio=2.0, use_conv_stem=False, drop_path_rate=0.0)  # 16 patch tokens
P = 0.3
#: one draw per sample, on both sides of P: samples 0, 2 and 5 are replaced (u < P), 1, 3 and 4 are not
UNIFORM = np.array([0.05, 0.9, 0.29, 0.31, 0.6, 0.0])
REPLACED = UNIFORM < P


# ---------------------------------------------------------------------------------------------- wrong torch variants
def _no_replacement(tokens, num_prefix, uniform=None):
    return tokens


def _dist_instead(tokens, num_prefix, uniform=None):
    out = tokens.clone()
    rows = uniform < P
    out[rows, 1] = tokens[rows, num_prefix:].mean(1)
    return out


def _mean_with_dist(tokens, num_prefix, uniform=None):
    out = tokens.clone()
    rows = uniform < P
    out[rows, 0] = tokens[rows, 1:].mean(1)
    return out


def _inverted(tokens, num_prefix, uniform=None):
    out = tokens.clone()
    rows = uniform >= P
    out[rows, 0] = tokens[rows, num_prefix:].mean(1)
    return out


CONTROLS = {"none": _no_replacement, "dist_instead": _dist_instead, "mean_with_dist": _mean_with_dist,
            "inverted": _inverted}


# ---------------------------------------------------------------------------------------------------------- helpers
def _pair(distillation: bool, seed: int, float64: bool = False):
    """(torch_ref DeiT, jaxkd DeiT) with the same weights, in train mode; ``float64``: both cast to float64 after
    the float32 weights are shared (call under ``jax.enable_x64``)."""
    torch.manual_seed(seed)
    t = tvit.DeiT(**CFG, distillation=distillation, cls_token_dropout=P)
    _randomize_(t, seed)
    kw = dict(CFG, distillation=distillation, cls_token_dropout=P)
    j = DeiT(**kw, rngs=nnx.Rngs(params=seed + 1, dropout=seed + 2))
    torch_to_jax(j, t.state_dict())
    if float64:  # structure from eval_shape, values cast in one jitted call: eager float64 ops cost ~15 s to compile
        t = t.double()
        gdef, _ = nnx.split(nnx.eval_shape(lambda: DeiT(**kw, dtype=jnp.float64, param_dtype=jnp.float64,
                                                        rngs=nnx.Rngs(0))))
        state = jax.jit(lambda s: jax.tree.map(
            lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, s))(nnx.state(j))
        j = nnx.merge(gdef, state)
        assert j.cls_token[...].dtype == jnp.float64 and j.blocks[0].attn.qkv.dtype == jnp.float64
    t.train(), j.train()
    assert t.cls_token_dropout.p == j.cls_token_dropout.rate == P
    return t, j


def _images(seed: int, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((len(UNIFORM), 8, 8, 3)).astype(dtype)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _torch_out(t, x, variant=None, grad=False):
    """torch_ref's train-mode forward_heads with the fixed draw; ``variant`` replaces its cls-token dropout."""
    if variant is not None:
        t.cls_token_dropout.forward = variant
    try:
        with torch.set_grad_enabled(grad), _no_mkldnn():
            return t.forward_heads(_nchw(x), cls_drop_uniform=torch.from_numpy(UNIFORM))
    finally:
        if variant is not None:
            del t.cls_token_dropout.forward


def _np(o):
    return {k: o[k].detach().numpy() for k in ("cls", "dist", "tokens") if o[k] is not None}


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@nnx.jit
def _jit_heads(model, x, u):
    o = model.forward_heads(x, cls_drop_uniform=u)
    return {k: o[k] for k in ("cls", "dist", "tokens") if o[k] is not None}


# ---------------------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("distillation", [True, False], ids=["deit", "vit"])
def test_forward_with_fixed_draw_matches_torch(distillation, record_property):
    t, j = _pair(distillation, seed=3)
    x = _images(4)
    got = {k: np.asarray(v) for k, v in _jit_heads(j, jnp.asarray(x), jnp.asarray(UNIFORM, jnp.float32)).items()}
    d = _max_diff(_np(_torch_out(t, x)), got)
    # what was replaced, on jaxkd's side: exactly the drawn samples' cls rows, by their patch-token mean
    prefix = 2 if distillation else 1
    patch_mean = got["tokens"][:, prefix:].mean(1)
    np.testing.assert_allclose(got["tokens"][REPLACED, 0], patch_mean[REPLACED], atol=1e-6)
    assert np.all(np.max(np.abs(got["tokens"][~REPLACED, 0] - patch_mean[~REPLACED]), axis=-1) > 1e-2)
    ctrl = {name: _max_diff(_np(_torch_out(t, x, fn)), got) for name, fn in CONTROLS.items()
            if distillation or name in ("none", "inverted")}
    if distillation:  # the dist token and its head are untouched: the same as with no replacement at all
        ref_none = _np(_torch_out(t, x, _no_replacement))
        assert float(np.max(np.abs(ref_none["dist"] - got["dist"]))) <= TOL
        assert float(np.max(np.abs(ref_none["tokens"][:, 1:] - got["tokens"][:, 1:]))) <= TOL
    name = "deit" if distillation else "vit"
    print(f"[cls-token dropout {name}, fp32] max|diff| {d:.2e}; controls: "
          + ", ".join(f"{k} {v:.2e}" for k, v in ctrl.items()))
    record_property("forward", d)
    for k, v in ctrl.items():
        record_property(f"control_{k}", v)
    assert d <= TOL
    assert all(v > TOL for v in ctrl.values()), ctrl


# -------------------------------------------------------------------------------------------------------- gradients
def _loss_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, k, t, dim = len(UNIFORM), CFG["num_classes"], 16 + 2, CFG["embed_dim"]
    return {"cls": rng.standard_normal((b, k)), "dist": rng.standard_normal((b, k)),
            "tokens": rng.standard_normal((b, t, dim))}


def _torch_grads(t, x, w, variant=None):
    t.zero_grad(set_to_none=True)
    o = _torch_out(t, x, variant, grad=True)
    loss = sum((o[k] * torch.from_numpy(v)).sum() * (0.1 if k == "tokens" else 1.0) for k, v in w.items())
    loss.backward()
    return _np(o), {n: p.grad.numpy().copy() for n, p in t.named_parameters()}


@nnx.jit
def _jit_grads(model, x, u, w):
    def loss(m):
        o = m.forward_heads(x, cls_drop_uniform=u)
        val = jnp.sum(o["cls"] * w["cls"]) + jnp.sum(o["dist"] * w["dist"]) + 0.1 * jnp.sum(o["tokens"] * w["tokens"])
        return val, {k: o[k] for k in ("cls", "dist", "tokens")}

    return nnx.grad(loss, has_aux=True)(model)


def test_float64_gradients_with_fixed_draw_match_torch(record_property):
    """Train mode, depth 2, loss = random projection of both logits and the final tokens; every parameter's gradient
    vs torch_ref in float64 (jaxkd's float64 DeiT runs the plain attention path)."""
    x = _images(5, np.float64)
    w = _loss_weights(6)
    with jax.enable_x64(True):
        t, j = _pair(True, seed=7, float64=True)
        ref, gt = _torch_grads(t, x, w)
        scale = max(float(np.max(np.abs(g))) for g in gt.values())
        grads, outs = _jit_grads(j, jnp.asarray(x), jnp.asarray(UNIFORM), {k: jnp.asarray(v) for k, v in w.items()})
        assert outs["cls"].dtype == jnp.float64
        gm = nnx.clone(j)
        nnx.update(gm, grads)
        gj = jax_to_torch(gm)
        fwd = _max_diff(ref, {k: np.asarray(v) for k, v in outs.items()})

    def rel(g_other):
        return max(float(np.max(np.abs(gj[n] - g))) for n, g in g_other.items()) / scale

    assert set(gt) <= set(gj) and all(np.max(np.abs(g)) > 0 for g in gt.values())
    r = rel(gt)
    ctrl = {name: rel(_torch_grads(t, x, w, CONTROLS[name])[1]) for name in ("none", "dist_instead")}
    print(f"[cls-token dropout f64] forward max|diff| {fwd:.2e}; {len(gt)} grads: max rel diff {r:.2e}; "
          f"controls: " + ", ".join(f"{k} {v:.2e}" for k, v in ctrl.items()))
    record_property("f64_forward", fwd)
    record_property("f64_grad_rel", r)
    for k, v in ctrl.items():
        record_property(f"grad_control_{k}", v)
    assert fwd <= F64_TOL and r <= GRAD_REL_TOL
    assert all(v > GRAD_REL_TOL for v in ctrl.values()), ctrl
