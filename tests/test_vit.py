"""jaxkd.models.vit / attention / resize: own behaviour (no torch).

Shapes and attributes, inference modes, parameter counts of the peer presets, init statistics, attention paths
(fused / xla / plain agree in fp32, gradients included; attention dropout forces the plain path), drop-path
schedule and semantics, functional (split/merge + jit) use, positional-embedding interpolation and running at
another resolution, bf16 compute, error messages.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxkd.models.attention as attention_mod
from jaxkd.models import count_params as count_parameters
from jaxkd.models.resize import interpolation_matrix, resize_bicubic, resize_bilinear
from jaxkd.models.vit import VARIANTS, DeiT, DropPath, drop_path_rates, interpolate_pos_embed

# the deit_cifar preset at depth 2: cheap to run, and its init ops are compiled once for the whole suite
SMALL = dict(img_size=32, patch_size=4, in_channels=3, num_classes=10, embed_dim=192, depth=2, num_heads=3,
             mlp_ratio=2.0, use_conv_stem=True)


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# jitted entry points: one XLA compilation per model structure is much cheaper on CPU than eager dispatch
@functools.partial(nnx.jit, static_argnames=("token_layers",))
def _heads(model, x, token_layers=()):
    return model.forward_heads(x, token_layers=token_layers)


@nnx.jit
def _call(model, x):
    return model(x)


@pytest.fixture(scope="module")
def small():
    m = DeiT(**SMALL, drop_path_rate=0.0, rngs=nnx.Rngs(0))
    m.eval()
    return m


# ------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("kw,expected", [
    (dict(mlp_ratio=2.0, use_conv_stem=True), 4_340_660),
    (dict(mlp_ratio=2.0, use_conv_stem=True, distillation=False), 4_338_346),
    (dict(img_size=28, patch_size=2, in_channels=1, mlp_ratio=2.0, use_conv_stem=True), 3_923_639),
    (dict(mlp_ratio=4.0, use_conv_stem=True), 6_114_740),
])
def test_peer_parameter_counts(kw, expected):
    abstract = nnx.eval_shape(lambda: DeiT(**kw, rngs=nnx.Rngs(0)))
    assert count_parameters(abstract) == expected


def test_variants_table():
    assert VARIANTS == {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
    d, h = VARIANTS["small"]
    m = nnx.eval_shape(lambda: DeiT(embed_dim=d, num_heads=h, depth=1, rngs=nnx.Rngs(0)))
    assert m.blocks[0].attn.head_dim == 64 and m.pos_embed.shape == (1, 66, 384)


def test_forward_heads_shapes_and_attributes(small):
    x = _x((2, 32, 32, 3))
    out = _heads(small, x, token_layers=(0, -1))
    assert small.num_prefix_tokens == 2 and small.grid_size == (8, 8)
    assert out["cls"].shape == out["dist"].shape == (2, 10)
    assert out["tokens"].shape == (2, 66, 192)
    assert len(out["blocks"]) == 2 and all(b.shape == (2, 66, 192) for b in out["blocks"])
    assert all(v.dtype == jnp.float32 for v in (out["cls"], out["dist"], out["tokens"], *out["blocks"]))
    # blocks are BEFORE the final norm: the last block's output normalised by `norm` gives `tokens`
    np.testing.assert_allclose(np.asarray(small.norm(out["blocks"][1])), np.asarray(out["tokens"]), atol=1e-6)
    # the class head reads token 0, the distillation head token 1
    np.testing.assert_allclose(np.asarray(small.head(out["tokens"][:, 0])), np.asarray(out["cls"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(small.head_dist(out["tokens"][:, 1])), np.asarray(out["dist"]), atol=1e-6)


def test_inference_modes(small):
    x = _x((2, 32, 32, 3), 1)
    out = _heads(small, x)
    try:
        got = {}
        for mode in ("cls", "dist", "avg"):
            small.inference_mode = mode
            got[mode] = np.asarray(_call(small, x))
    finally:
        small.inference_mode = "avg"
    np.testing.assert_array_equal(got["cls"], np.asarray(out["cls"]))
    np.testing.assert_array_equal(got["dist"], np.asarray(out["dist"]))
    np.testing.assert_allclose(got["avg"], (got["cls"] + got["dist"]) / 2, atol=1e-7)
    assert np.max(np.abs(got["cls"] - got["dist"])) > 1e-4


def test_without_distillation_token_every_mode_is_cls():
    kw = dict(SMALL, distillation=False)
    m = DeiT(**kw, rngs=nnx.Rngs(1))
    m.eval()
    assert m.num_prefix_tokens == 1 and m.dist_token is None and m.head_dist is None
    x = _x((2, 32, 32, 3), 2)
    out = _heads(m, x)
    assert out["dist"] is None and out["tokens"].shape == (2, 65, 192)
    for mode in ("cls", "dist", "avg"):
        m.inference_mode = mode
        np.testing.assert_array_equal(np.asarray(_call(m, x)), np.asarray(out["cls"]))


@pytest.mark.parametrize("convert", [True, False])
def test_grayscale_input(convert):
    m = nnx.eval_shape(lambda: DeiT(**dict(SMALL, in_channels=1, use_conv_stem=False), convert_grayscale=convert,
                                    rngs=nnx.Rngs(0)))
    if convert:
        assert m.channel_expand.kernel.shape == (1, 1, 1, 3) and m.patch_embed.proj.kernel.shape == (4, 4, 3, 192)
    else:
        assert m.channel_expand is None and m.patch_embed.proj.kernel.shape == (4, 4, 1, 192)


def test_init_statistics():
    m = DeiT(**SMALL, rngs=nnx.Rngs(3))
    k = np.asarray(m.blocks[0].mlp.fc1.kernel[...])
    assert abs(k.std() - 0.02) < 0.003 and np.abs(k).max() <= 0.04 + 1e-6  # trunc-normal, truncated at 2 std
    for tok in (m.pos_embed, m.cls_token, m.dist_token):
        assert np.abs(np.asarray(tok[...])).max() <= 0.04 + 1e-6
    assert abs(np.asarray(m.pos_embed[...]).std() - 0.02) < 0.004
    for lin in (m.blocks[1].attn.qkv, m.blocks[1].attn.proj, m.head, m.head_dist):
        assert not np.any(np.asarray(lin.bias[...]))
    for ln in (m.blocks[0].norm1, m.norm):
        assert np.all(np.asarray(ln.scale[...]) == 1) and not np.any(np.asarray(ln.bias[...]))
    conv = np.asarray(m.patch_embed.stem.layers[3].kernel[...])  # 3x3, out 192: std sqrt(2/(9*192))
    assert abs(conv.std() / np.sqrt(2 / (9 * 192)) - 1) < 0.05
    proj = np.asarray(m.patch_embed.proj.kernel[...])
    assert abs(proj.std() / np.sqrt(2 / (16 * 192)) - 1) < 0.05 and not np.any(np.asarray(m.patch_embed.proj.bias[...]))


# ------------------------------------------------------------------------------------------- attention
def _loss(model, x):
    o = model.forward_heads(x, token_layers=(0,))
    return jnp.sum(o["cls"] ** 2) + jnp.sum(o["dist"]) + jnp.mean(o["blocks"][0] ** 2), o["tokens"]


@nnx.jit
def _grads(model, x):
    return nnx.grad(_loss, has_aux=True)(model, x)


def test_attention_paths_agree_forward_and_gradients():
    """fused ('auto': XLA's dot_product_attention on CPU) vs plain, train mode (BN batch statistics)."""
    m = DeiT(**dict(SMALL, use_conv_stem=False), drop_path_rate=0.0, rngs=nnx.Rngs(4))
    m.train()
    x = _x((3, 32, 32, 3), 4)
    res = {}
    for path in ("plain", "auto"):
        m.set_attention(path)
        grads, tokens = _grads(nnx.clone(m), x)
        res[path] = (tokens, jax.tree.leaves(grads))
    (t_plain, g_plain), (t_auto, g_auto) = res["plain"], res["auto"]
    assert float(jnp.max(jnp.abs(t_auto - t_plain))) <= 1e-5
    scale = max(float(jnp.max(jnp.abs(g))) for g in g_plain)
    assert len(g_plain) == len(g_auto) == count_parameters_leaves(m)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g_auto, g_plain)) / scale <= 1e-5


def count_parameters_leaves(model) -> int:
    return len(jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_attention_maps(small):
    maps = nnx.jit(lambda m, x: m.attention_maps(x))(small, _x((2, 32, 32, 3), 5))
    assert len(maps) == 2 and all(a.shape == (2, 3, 66, 66) and a.dtype == jnp.float32 for a in maps)
    for a in maps:
        np.testing.assert_allclose(np.asarray(a.sum(-1)), 1.0, atol=1e-5)
        assert float(a.min()) >= 0


def test_attention_dropout_forces_plain_path(monkeypatch):
    m = DeiT(**SMALL, attn_drop_rate=0.5, drop_path_rate=0.0, attention="fused", rngs=nnx.Rngs(5))
    x = _x((2, 32, 32, 3), 6)

    def no_fused(*a, **k):
        raise AssertionError("fused path called")

    monkeypatch.setattr(attention_mod, "fused_attention", no_fused)
    m.train()  # (this config is traced only here, so the jit traces see the patched function)
    y1, y2 = _heads(m, x)["tokens"], _heads(m, x)["tokens"]  # train: plain path with dropout
    assert float(jnp.max(jnp.abs(y1 - y2))) > 1e-4  # fresh dropout masks per call
    m.eval()
    with pytest.raises(AssertionError, match="fused path called"):  # eval: no dropout, the fused path runs
        _call(m, x)


# ------------------------------------------------------------------------------------------- drop path
def test_drop_path_schedule():
    assert drop_path_rates(1, 0.1) == [0.0]
    np.testing.assert_allclose(drop_path_rates(12, 0.1), [i / 11 * 0.1 for i in range(12)])
    m = nnx.eval_shape(lambda: DeiT(**dict(SMALL, depth=5), drop_path_rate=0.2, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose([b.drop_path.rate for b in m.blocks], [0.0, 0.05, 0.1, 0.15, 0.2])
    with pytest.raises(ValueError, match="drop_path_rate"):
        drop_path_rates(4, 1.0)


def test_drop_path_semantics():
    rate = 0.3
    dp = DropPath(rate, rngs=nnx.Rngs(dropout=7))
    x = jnp.ones((4000, 3, 2)) * jnp.arange(1, 7, dtype=jnp.float32).reshape(1, 3, 2)
    y = np.asarray(dp(x))
    kept = np.all(np.isclose(y, np.asarray(x) / (1 - rate)), axis=(1, 2))
    dropped = np.all(y == 0, axis=(1, 2))
    assert np.all(kept | dropped)  # per sample: all of it kept (scaled by 1/keep) or all dropped
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / 4000)
    assert not np.array_equal(np.asarray(dp(x)), y)  # the stream advances
    np.testing.assert_array_equal(np.asarray(DropPath(rate, rngs=nnx.Rngs(dropout=7))(x)), y)  # seeded
    dp.eval()
    assert dp(x) is x
    with pytest.raises(ValueError, match="rate"):
        DropPath(1.0)


def test_functional_jit_step_needs_no_rng_arguments():
    m = DeiT(**SMALL, drop_path_rate=0.5, rngs=nnx.Rngs(params=0, dropout=1))
    m.train()
    graphdef, state = nnx.split(m)
    x = _x((8, 32, 32, 3), 7)

    @jax.jit
    def step(state, x):
        model = nnx.merge(graphdef, state)
        y = model(x)
        return y, nnx.state(model)

    y1, state = step(state, x)
    y2, state = step(state, x)
    assert y1.shape == (8, 10) and float(jnp.max(jnp.abs(y1 - y2))) > 1e-4  # new drop-path masks per step
    nnx.update(m, state)
    m.eval()
    y_eval = np.asarray(_call(m, x))
    np.testing.assert_array_equal(y_eval, np.asarray(_call(m, x)))  # eval: deterministic


# ------------------------------------------------------------------------------------------- cls-token dropout
TINY = dict(img_size=8, patch_size=2, in_channels=3, num_classes=5, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
            use_conv_stem=False, drop_path_rate=0.0)  # 16 patch tokens; no other randomness in train mode


def _tiny_pair(p: float):
    """(a p = 0 DeiT, a p DeiT) from the same seeds: equal weights, as cls-token dropout forks its stream last."""
    return (DeiT(**TINY, rngs=nnx.Rngs(params=0, dropout=1)),
            DeiT(**TINY, cls_token_dropout=p, rngs=nnx.Rngs(params=0, dropout=1)))


@nnx.jit
def _heads_u(model, x, u):
    return model.forward_heads(x, cls_drop_uniform=u)


def _paths(model) -> dict:
    return {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model))}


def test_cls_token_dropout_zero_changes_nothing():
    """p = 0: no state of its own (checkpoints and RNG streams as without the option), and in train mode the
    forward is the eval forward even when every draw is 0; control: p = 0.5 with the same draws changes every
    sample's cls logits and none of its dist logits."""
    m0, mp = _tiny_pair(0.5)
    s0, sp = _paths(m0), _paths(mp)
    assert not any(k.startswith("cls_token_dropout") for k in s0)
    assert {k for k in sp if k.startswith("cls_token_dropout")} == {"cls_token_dropout.rngs.count",
                                                                     "cls_token_dropout.rngs.key"}
    for k, v in s0.items():  # every other variable, the other dropout streams included, is the same
        a, b = v.get_value(), sp[k].get_value()
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
    x, zeros = _x((6, 8, 8, 3), 21), jnp.zeros(6)
    m0.train(), mp.train()
    train0 = _heads_u(m0, x, zeros)
    dropped = _heads_u(mp, x, zeros)
    m0.eval()
    eval0 = _heads(m0, x)
    for k in ("cls", "dist", "tokens"):
        np.testing.assert_allclose(np.asarray(train0[k]), np.asarray(eval0[k]), rtol=0, atol=1e-6, err_msg=k)
    assert np.all(np.max(np.abs(np.asarray(dropped["cls"] - train0["cls"])), axis=1) > 1e-3)
    np.testing.assert_allclose(np.asarray(dropped["dist"]), np.asarray(train0["dist"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dropped["tokens"][:, 0]), np.asarray(dropped["tokens"][:, 2:].mean(1)),
                               rtol=0, atol=1e-6)


def test_cls_token_dropout_eval_ignores_it():
    """Eval mode: a p = 0.9 model gives its p = 0 twin's outputs exactly, with or without injected draws of 0,
    and draws nothing (its stream's count stays)."""
    m0, mp = _tiny_pair(0.9)
    m0.eval(), mp.eval()
    x = _x((6, 8, 8, 3), 21)
    count = int(mp.cls_token_dropout.rngs.count[...])
    want = _heads(m0, x)
    for got in (_heads(mp, x), _heads_u(mp, x, jnp.zeros(6))):
        for k in ("cls", "dist", "tokens"):
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
    assert int(mp.cls_token_dropout.rngs.count[...]) == count


def test_cls_token_dropout_fraction_is_p_under_jit():
    """Real draws (seeded), jitted train steps: over 2000 samples the replaced fraction (cls logits moved away from
    the p = 0 twin's) is within 4 sigma of p, the replaced rows hold the patch-token mean, the dist logits never
    move; the stream advances (the next step replaces other samples) and the same seed repeats the draw."""
    p, n = 0.3, 2000
    m0, mp = _tiny_pair(p)
    x = _x((n, 8, 8, 3), 23)
    base = _heads(m0, x)

    def replaced(model):
        out = _heads(model, x)
        np.testing.assert_allclose(np.asarray(out["dist"]), np.asarray(base["dist"]), rtol=0, atol=1e-5)
        moved = np.max(np.abs(np.asarray(out["cls"] - base["cls"])), axis=1) > 1e-4
        mean = np.asarray(out["tokens"][:, 2:].mean(1))
        np.testing.assert_allclose(np.asarray(out["tokens"])[moved, 0], mean[moved], rtol=0, atol=1e-6)
        return moved

    first, second = replaced(mp), replaced(mp)
    assert abs(first.mean() - p) < 4 * np.sqrt(p * (1 - p) / n), first.mean()
    assert abs(second.mean() - p) < 4 * np.sqrt(p * (1 - p) / n), second.mean()
    assert 0.5 < np.mean(first == second) < 0.75  # independent draws agree on p² + (1 - p)² = 58 % of samples
    np.testing.assert_array_equal(replaced(_tiny_pair(p)[1]), first)  # seeded


def test_cls_token_dropout_from_config():
    from jaxkd import config as C
    from jaxkd.models import build

    cfg = C.load("configs/deit_mnist.py:smoke", ["--config.vit.cls_token_dropout=0.1"])
    model = nnx.eval_shape(lambda: build(cfg, nnx.Rngs(params=0, dropout=1)))
    assert model.cls_token_dropout.rate == 0.1 and model.cls_token_dropout.rngs is not None


# ------------------------------------------------------------------------------------------- resolution
def test_interpolate_pos_embed_properties():
    pe = _x((1, 2 + 16, 8), 8)
    assert interpolate_pos_embed(pe, 2, (4, 4), (4, 4)) is pe
    up = interpolate_pos_embed(pe, 2, (4, 4), (6, 6))
    assert up.shape == (1, 38, 8)
    np.testing.assert_array_equal(np.asarray(up[:, :2]), np.asarray(pe[:, :2]))
    const = jnp.concatenate([pe[:, :2], jnp.full((1, 16, 8), 0.7)], axis=1)
    np.testing.assert_allclose(np.asarray(interpolate_pos_embed(const, 2, (4, 4), (7, 3))[:, 2:]), 0.7, atol=1e-6)
    with pytest.raises(ValueError, match="pos_embed must have shape"):
        interpolate_pos_embed(pe, 1, (4, 4), (6, 6))


def test_resize_pos_embed_runs_at_new_resolution():
    m = DeiT(**SMALL, drop_path_rate=0.0, rngs=nnx.Rngs(9))
    m.eval()
    with pytest.raises(ValueError, match="resize_pos_embed"):
        _call(m, _x((1, 48, 48, 3)))
    old = np.asarray(m.pos_embed[...])
    m.resize_pos_embed(48)
    assert m.img_size == (48, 48) and m.grid_size == (12, 12) and m.pos_embed[...].shape == (1, 146, 192)
    np.testing.assert_array_equal(np.asarray(m.pos_embed[...])[:, :2], old[:, :2])
    assert _call(m, _x((2, 48, 48, 3))).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible"):
        m.resize_pos_embed(30)


# ------------------------------------------------------------------------------------------- precision
def test_bf16_compute_close_to_fp32():
    m32 = DeiT(**SMALL, drop_path_rate=0.0, rngs=nnx.Rngs(10))
    m16 = DeiT(**SMALL, drop_path_rate=0.0, dtype=jnp.bfloat16, rngs=nnx.Rngs(11))
    nnx.update(m16, nnx.state(m32))
    m32.eval(), m16.eval()
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(m16, nnx.Param)))
    x = _x((4, 32, 32, 3), 12)
    o32, o16 = _heads(m32, x, (1,)), _heads(m16, x, (1,))
    assert o16["cls"].dtype == o16["tokens"].dtype == o16["blocks"][0].dtype == jnp.float32
    diff = max(float(jnp.max(jnp.abs(o16[k] - o32[k]))) for k in ("cls", "dist"))
    assert 0 < diff <= 5e-2
    rel = float(jnp.linalg.norm(o16["tokens"] - o32["tokens"]) / jnp.linalg.norm(o32["tokens"]))
    assert rel <= 5e-2


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw,match", [
    (dict(inference_mode="mean"), "inference_mode"),
    (dict(attention="flash"), "attention"),
    (dict(attention="cudnn"), "cudnn"),
    (dict(img_size=30), "divisible"),
    (dict(embed_dim=33, num_heads=3, use_conv_stem=True), "even embed_dim"),
    (dict(embed_dim=32, num_heads=3), "divisible by num_heads"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(cls_token_dropout=1.0), "cls_token_dropout"),
    (dict(cls_token_dropout=-0.1), "cls_token_dropout"),
])
def test_constructor_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        DeiT(**{**SMALL, **kw}, rngs=nnx.Rngs(0))


def test_input_errors(small):
    with pytest.raises(ValueError, match="NHWC"):
        _call(small, _x((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="float"):
        _call(small, jnp.ones((1, 32, 32, 3), jnp.uint8))
    with pytest.raises(ValueError, match="token layer 2 out of range"):
        small.forward_heads(_x((1, 32, 32, 3)), token_layers=(2,))
    with pytest.raises(ValueError, match="cudnn"):
        small.set_attention("cudnn")


# ------------------------------------------------------------------------------------------- resize
def test_resize_own_behaviour():
    for a, b in [(8, 14), (14, 8), (5, 5), (1, 3)]:
        for mode in ("bilinear", "bicubic"):
            mat = interpolation_matrix(a, b, mode)
            assert mat.shape == (b, a)
            np.testing.assert_allclose(mat.sum(1), 1.0, atol=1e-12)
    x = _x((2, 16, 16, 3), 13)
    np.testing.assert_allclose(np.asarray(resize_bilinear(x, (8, 8))),
                               np.asarray(x).reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4)), atol=1e-6)
    xb = x.astype(jnp.bfloat16)
    assert resize_bicubic(xb, (5, 7)).dtype == jnp.bfloat16 and resize_bicubic(xb, (5, 7)).shape == (2, 5, 7, 3)
    assert resize_bilinear(x[0], (4, 4)).shape == (4, 4, 3)  # (H, W, C) works too
    with pytest.raises(ValueError, match=">= 3 dims"):
        resize_bilinear(jnp.ones((4, 4)), (2, 2))
    with pytest.raises(ValueError, match="floating"):
        resize_bilinear(jnp.ones((1, 4, 4, 1), jnp.int32), (2, 2))
    with pytest.raises(ValueError, match="out_hw"):
        resize_bicubic(x, (0, 3))
    with pytest.raises(ValueError, match="mode"):
        interpolation_matrix(4, 2, "nearest")


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_value_and_gradients_equal_the_plain_expression(use_bias):
    """attention.dense (kernel gradient formed as (gᵀx)ᵀ for XLA:CPU) == jax.grad of x @ k + b, in float64 (exact up
    to summation order) and float32; negative control: a perturbed kernel changes the gradients beyond the tolerance."""
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        for dt, tol in ((jnp.float64, 1e-13), (jnp.float32, 1e-5)):
            x = jnp.asarray(rng.standard_normal((2, 5, 7)), dt)
            k = jnp.asarray(rng.standard_normal((7, 4)), dt)
            b = jnp.asarray(rng.standard_normal(4), dt) if use_bias else None

            def plain(x, k, b):
                y = x @ k
                return jnp.sum(jnp.tanh(y if b is None else y + b) ** 2)

            def ours(x, k, b):
                return jnp.sum(jnp.tanh(attention_mod.dense(x, k, b)) ** 2)

            want = jax.grad(plain, (0, 1, 2) if use_bias else (0, 1))(x, k, b)
            got = jax.grad(ours, (0, 1, 2) if use_bias else (0, 1))(x, k, b)
            assert float(jnp.abs(ours(x, k, b) - plain(x, k, b))) <= tol
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape
                assert float(jnp.max(jnp.abs(g - w))) <= tol * float(jnp.max(jnp.abs(w)))
            control = jax.grad(plain, (0, 1))(x, k * 1.001, b)
            assert float(jnp.max(jnp.abs(control[1] - want[1]))) > tol * float(jnp.max(jnp.abs(want[1])))


def test_vit_linear_is_an_nnx_linear_with_dense():
    lin = attention_mod.vit_linear(6, 3, rngs=nnx.Rngs(0))
    assert isinstance(lin, nnx.Linear) and isinstance(lin, attention_mod.Linear)
    x = jnp.ones((2, 6))
    np.testing.assert_allclose(lin(x), x @ lin.kernel[...] + lin.bias[...], rtol=1e-6)
