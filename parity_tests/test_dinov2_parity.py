"""Parity: jaxkd DINOv2 teacher (jaxkd.models.dinov2 via jaxkd.tasks.teachers.load_dinov2) vs torch_ref.dinov2.

torch_ref.dinov2 is a plain-torch DINOv2 with the official key names and the official
``interpolate_pos_encoding`` / ``get_intermediate_layers``. Tiny configs (D 32, depth 3, 2 heads, patch 14,
4×4 pretraining grid = 56 px): MLP without registers (hub setting: interpolate offset 0.1, no antialias), MLP
with 4 registers (hub setting: size-based, antialiased), SwiGLU (the ViT-g FFN). Random weights with every 1-D
parameter, token and LayerScale gamma randomised (gammas U(0.5, 1.5), LN weights N(1, 0.2²), biases and tokens
N(0, 0.1²)), converted with ``jaxkd.interop``.

Tolerances: fp32 max abs diff <= 1e-5 for the intermediate tokens of blocks [0, 2] and n=2 at the native size
(56 px) and at 28, 84 and 28×84 px (positional-embedding interpolation). The interpolation alone at the real
size (37×37 grid -> 16×16 etc., D 384, N(0, 1) values): vs torch_ref's official fp32 method <= 1e-5 · max|pos|
(torch computes the sampling positions in float32 -- ~1e-7 relative -- which white-noise data turns into
~1e-5 absolute; jaxkd's matrices are exact float64), and float64 vs ``F.interpolate`` in float64 with the same
arguments <= 1e-12 (the official method itself casts to float32). torch runs without oneDNN.
Negative controls must exceed 1e-5: LN eps 1e-5, antialias flipped, size= instead of the offset scale factor,
jax.image.resize for the positional grid, registers inserted before the positional embedding is added.
Measured figures are printed (-s) and recorded as junit properties.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.interop import state_dict as interop  # (its private helpers: the key and kernel rules)
from jaxkd.interop import torch_to_jax
from jaxkd.models import dinov2 as jdino
from jaxkd.tasks.teachers import DINOV2_ARCHS, dinov2_config_from_state_dict, load_dinov2
from torch_ref import dinov2 as tdino

TOL = 1e-5
F64_TOL = 1e-12
TINY = dict(embed_dim=32, depth=3, num_heads=2, patch_size=14, img_size=56)
CONFIGS = {  # name: (ffn_layer, registers); interpolation = the official hub setting for that register count
    "mlp_reg0": ("mlp", 0),
    "mlp_reg4": ("mlp", 4),
    "swiglu_reg0": ("swiglu", 0),
}
SIZES = [(56, 56), (28, 28), (84, 84), (28, 84)]
LAYERS = [[0, 2], 2]


@contextlib.contextmanager
def _no_mkldnn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _hub_interp(regs: int) -> dict:
    return dict(interpolate_offset=0.0 if regs else 0.1, interpolate_antialias=bool(regs))


def _torch_model(name: str, seed: int = 0, cls=tdino.DinoVisionTransformer) -> torch.nn.Module:
    ffn, regs = CONFIGS[name]
    torch.manual_seed(seed)
    t = cls(**TINY, ffn_layer=ffn, num_register_tokens=regs, **_hub_interp(regs)).eval()
    with torch.no_grad():
        for k, p in t.named_parameters():
            if k.endswith("gamma"):
                p.uniform_(0.5, 1.5)
            elif "norm" in k and k.endswith("weight"):
                p.normal_(1.0, 0.2)
            elif p.ndim == 1 or "token" in k:
                p.normal_(0.0, 0.1)
    return t


def _arch(name: str) -> dict:
    return dict(TINY, ffn_layer=CONFIGS[name][0])


@pytest.fixture(scope="module")
def pairs():
    out = {}
    for name in CONFIGS:
        t = _torch_model(name)
        out[name] = (t, load_dinov2(t.state_dict(), arch=_arch(name), img_size=56))
    return out


def _images(hw, seed=0, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, *hw, 3)).astype(np.float32)


def _torch_layers(t, x, layers, **kw):
    with torch.no_grad(), _no_mkldnn():
        out = t.get_intermediate_layers(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), layers, **kw)
    return out


def _maxdiff(jax_out, torch_out) -> float:
    return max(float(np.max(np.abs(np.asarray(a) - b.numpy()))) for a, b in zip(jax_out, torch_out))


@functools.partial(nnx.jit, static_argnames=("layers", "norm"))
def _jit_layers(model, x, layers, norm=True):
    """get_intermediate_layers compiled once per (model structure, input shape, layers)."""
    return model.get_intermediate_layers(x, layers, norm=norm)


@nnx.jit
def _both_layer_specs(model, x):
    """get_intermediate_layers for blocks [0, 2] and for n=2, in one compiled function per input shape."""
    return model.get_intermediate_layers(x, [0, 2], norm=True), model.get_intermediate_layers(x, 2, norm=True)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_intermediate_tokens_match_torch(pairs, name, record_property):
    t, j = pairs[name]
    regs = CONFIGS[name][1]
    assert (j.num_register_tokens, j.interpolate_offset, j.interpolate_antialias) == (
        regs, *_hub_interp(regs).values())
    for hw in SIZES if name != "swiglu_reg0" else [(56, 56), (28, 84)]:
        x = _images(hw)
        for layers, ours in zip(LAYERS, _both_layer_specs(j, x)):
            ref = _torch_layers(t, x, layers, norm=True)
            n = (hw[0] // 14) * (hw[1] // 14)
            assert len(ours) == 2 and all(o.shape == (2, n, 32) and o.dtype == jnp.float32 for o in ours)
            d = _maxdiff(ours, ref)
            print(f"[dinov2 {name}] {hw} layers={layers} max|diff|={d:.2e}")
            record_property("max_abs_diff", d)
            assert d <= TOL, (name, hw, layers, d)


def test_eager_call_matches_torch(pairs):
    """The same comparison without jit (op by op), native size and one interpolated size."""
    t, j = pairs["mlp_reg0"]
    for hw in [(56, 56), (84, 28)]:
        x = _images(hw, seed=2)
        d = _maxdiff(j.get_intermediate_layers(x, [0, 2]), _torch_layers(t, x, [0, 2]))
        print(f"[dinov2 eager] {hw} max|diff|={d:.2e}")
        assert d <= TOL


def test_unnormalised_class_token_and_forward_features(pairs):
    t, j = pairs["mlp_reg4"]
    x = _images((84, 28), seed=1)
    ours = j.get_intermediate_layers(x, [1], norm=False, return_class_token=True)  # eager, like forward_features
    ref = _torch_layers(t, x, [1], norm=False, return_class_token=True)
    d = _maxdiff(ours[0], ref[0])  # (patch tokens, class token) of block 1
    assert d <= TOL, d
    grid = j.get_intermediate_layers(x, 1, reshape=True)[0]
    ref_grid = _torch_layers(t, x, 1, reshape=True)[0].numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
    assert grid.shape == (2, 6, 2, 32) and np.max(np.abs(np.asarray(grid) - ref_grid)) <= TOL
    with torch.no_grad(), _no_mkldnn():
        rf = t.forward_features(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    of = j.forward_features(x)
    for k in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
        assert of[k].shape == tuple(rf[k].shape), k
        assert np.max(np.abs(np.asarray(of[k]) - rf[k].numpy())) <= TOL, k
    print(f"[dinov2 reg4] unnormalised + class token max|diff|={d:.2e}")


# ------------------------------------------------------------------ the interpolation at the real size
def _torch_interp(pos: np.ndarray, hw, regs: int) -> np.ndarray:
    """torch_ref's (official) interpolate_pos_encoding of a (1, 1 + 37², D) float32 pos_embed."""
    m = tdino.DinoVisionTransformer(img_size=518, patch_size=14, embed_dim=pos.shape[-1], depth=0, num_heads=6,
                                    **_hub_interp(regs))
    n = (hw[0] // 14) * (hw[1] // 14)
    with torch.no_grad():
        m.pos_embed.copy_(torch.from_numpy(pos))
        return m.interpolate_pos_encoding(torch.zeros(1, 1 + n, pos.shape[-1]), hw[0], hw[1]).numpy()


def _torch_interp_f64(pos: np.ndarray, hw, regs: int) -> np.ndarray:
    """The same F.interpolate call as the official method, in float64 (patch grid only)."""
    h = _hub_interp(regs)
    h0, w0 = hw[0] // 14, hw[1] // 14
    kw = ({"scale_factor": ((h0 + 0.1) / 37, (w0 + 0.1) / 37)} if h["interpolate_offset"] else {"size": (h0, w0)})
    g = torch.from_numpy(pos[0, 1:].reshape(1, 37, 37, -1)).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(g, mode="bicubic", antialias=h["interpolate_antialias"], **kw)
    return out.permute(0, 2, 3, 1).reshape(-1, pos.shape[-1]).numpy()


@pytest.mark.parametrize("regs", [0, 4])
def test_pos_embed_interpolation_real_size(regs, record_property):
    rng = np.random.default_rng(3)
    pos = rng.standard_normal((1, 1 + 37 * 37, 384)).astype(np.float32)
    for hw in [(224, 224), (518, 518), (560, 560), (224, 336)]:
        grid = (hw[0] // 14, hw[1] // 14)
        ours = np.asarray(jdino.interpolate_pos_encoding(jnp.asarray(pos), grid, **_interp_kw(regs)))
        d = float(np.max(np.abs(ours - _torch_interp(pos, hw, regs))))
        with jax.enable_x64(True):
            p64 = pos.astype(np.float64)
            o64 = np.asarray(jdino.interpolate_pos_encoding(jnp.asarray(p64), grid, **_interp_kw(regs)))
        d64 = 0.0 if grid == (37, 37) else float(np.max(np.abs(o64[0, 1:] - _torch_interp_f64(p64, hw, regs))))
        print(f"[dinov2 interp reg{regs}] 37x37 -> {grid}: fp32 {d:.2e} (max|pos| {np.abs(pos).max():.2f}), "
              f"f64 {d64:.2e}")
        record_property("fp32_rel", float(d / np.abs(pos).max()))
        record_property("fp64", d64)
        assert ours.shape == (1, 1 + grid[0] * grid[1], 384)
        assert np.array_equal(ours[:, 0], pos[:, 0])  # the class position is kept
        assert d <= TOL * np.abs(pos).max() and d64 <= F64_TOL, (hw, d, d64)


@pytest.mark.parametrize("offset", [0.1, 0.0])
@pytest.mark.parametrize("antialias", [False, True])
def test_interpolation_matrices_all_modes_float64(offset, antialias):
    """Every (offset, antialias) combination, up/down/unchanged axes, vs F.interpolate in float64 (<= 1e-12)."""
    g = torch.from_numpy(np.random.default_rng(4).standard_normal((1, 2, 37, 37)))
    for oh, ow in [(16, 16), (37, 40), (16, 37), (5, 50), (37, 37)]:
        kw = {"scale_factor": ((oh + offset) / 37, (ow + offset) / 37)} if offset else {"size": (oh, ow)}
        ref = torch.nn.functional.interpolate(g, mode="bicubic", antialias=antialias, **kw).numpy()
        mh = jdino.pos_embed_interpolation_matrix(37, oh, offset=offset, antialias=antialias)
        mw = jdino.pos_embed_interpolation_matrix(37, ow, offset=offset, antialias=antialias)
        d = float(np.max(np.abs(np.einsum("oh,bchw,pw->bcop", mh, g.numpy(), mw) - ref)))
        assert d <= F64_TOL, ((oh, ow), d)


def _interp_kw(regs):
    h = _hub_interp(regs)
    return dict(offset=h["interpolate_offset"], antialias=h["interpolate_antialias"])


# ------------------------------------------------------------------ layout of the real architectures
def _abstract_torch_shapes(model) -> dict:
    out = {}
    for key, (path, var) in interop._variables(model).items():
        s = tuple(var.get_value().shape)
        out[key] = s[-1:] + s[-2:-1] + s[:-2] if interop._is_kernel(path, var) else s
    return out


@pytest.mark.parametrize("arch,regs,entries,params", [
    ("vit_small", 0, 175, 22_056_576),
    ("vit_giant", 4, 568, 1_136_486_912),
])
def test_official_layout(arch, regs, entries, params):
    """torch_ref at the real sizes (on the meta device: shapes only) has the official entry and parameter
    counts; jaxkd's variables map to exactly torch_ref's keys and shapes (checked at depth 2: every block has the
    same layout); the loader reads the architecture back from the full-size shapes."""
    a = DINOV2_ARCHS[arch]
    kw = dict(embed_dim=a.embed_dim, num_heads=a.num_heads, ffn_layer=a.ffn_layer, num_register_tokens=regs,
              img_size=518, patch_size=14)

    def torch_shapes(depth):
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in tdino.DinoVisionTransformer(**kw, depth=depth).state_dict().items()}

    ref = torch_shapes(a.depth)
    assert len(ref) == entries and sum(int(np.prod(s)) for s in ref.values()) == params
    assert ref["pos_embed"] == (1, 1370, a.embed_dim) and ref["mask_token"] == (1, a.embed_dim)
    if arch == "vit_giant":
        assert ref["blocks.0.mlp.w12.weight"] == (8192, 1536) and ref["blocks.0.mlp.w3.weight"] == (1536, 4096)
        assert ref["register_tokens"] == (1, 4, 1536)
    else:
        assert ref["blocks.11.mlp.fc1.weight"] == (1536, 384) and ref["blocks.11.ls2.gamma"] == (384,)
    ours = _abstract_torch_shapes(nnx.eval_shape(lambda: jdino.DinoVisionTransformer(**kw, depth=2,
                                                                                      rngs=nnx.Rngs(0))))
    assert ours == torch_shapes(2)
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in ref.items()}  # zero-stride: no memory
    cfg = dinov2_config_from_state_dict(fake, arch)
    assert (cfg["depth"], cfg["embed_dim"], cfg["ffn_layer"], cfg["num_register_tokens"], cfg["img_size"]) == (
        a.depth, a.embed_dim, a.ffn_layer, regs, 518)


# ------------------------------------------------------------------ negative controls
def _variant(name: str, **overrides):
    """The jax model of ``name`` rebuilt with changed settings, same converted weights."""
    t = _torch_model(name)
    sd = t.state_dict()
    cfg = dinov2_config_from_state_dict(sd, _arch(name))
    kw = dict(_hub_interp(CONFIGS[name][1]))
    kw.update(overrides)
    return t, torch_to_jax(jdino.DinoVisionTransformer(**cfg, **kw, rngs=nnx.Rngs(0)), sd)


def _report(label: str, d: float):
    print(f"[dinov2 negative control] {label}: max|diff|={d:.2e}")
    assert d > TOL, (label, d)


def test_negative_control_ln_eps():
    t, j = _variant("mlp_reg0", ln_eps=1e-5)
    x = _images((56, 56))
    _report("LayerNorm eps 1e-5", _maxdiff(_jit_layers(j, x, (0, 2)), _torch_layers(t, x, [0, 2])))


@pytest.mark.parametrize("name,hw", [("mlp_reg0", (28, 28)), ("mlp_reg4", (84, 84))])
def test_negative_control_antialias_flipped(name, hw):
    """reg0 downsampled (antialias widens the filter), reg4 upsampled (the antialiased kernel uses a = -0.5)."""
    t, j = _variant(name, interpolate_antialias=not CONFIGS[name][1])
    x = _images(hw)
    _report(f"{name} antialias flipped {hw}", _maxdiff(_jit_layers(j, x, 2), _torch_layers(t, x, 2)))


@pytest.mark.parametrize("hw", [(28, 28), (84, 84)])
def test_negative_control_size_instead_of_scale_factor(hw):
    t, j = _variant("mlp_reg0", interpolate_offset=0.0)
    x = _images(hw)
    _report(f"size= instead of scale_factor (offset 0.1) {hw}", _maxdiff(_jit_layers(j, x, 2), _torch_layers(t, x, 2)))


def test_negative_control_jax_image_resize(pairs, monkeypatch):
    t, j = pairs["mlp_reg0"]

    def jax_resize(pos_embed, grid_hw, *, offset, antialias):
        m = int(round((pos_embed.shape[1] - 1) ** 0.5))
        g = pos_embed[0, 1:].reshape(m, m, -1).astype(jnp.float32)
        g = jax.image.resize(g, (*grid_hw, g.shape[-1]), method="cubic")
        return jnp.concatenate([pos_embed[:, :1], g.reshape(1, -1, g.shape[-1])], axis=1)

    monkeypatch.setattr(jdino, "interpolate_pos_encoding", jax_resize)
    x = _images((84, 28))  # eager on purpose: a jit cache entry would not see the patched function
    _report("jax.image.resize cubic", _maxdiff(j.get_intermediate_layers(x, 2), _torch_layers(t, x, 2)))


class _RegistersBeforePos(tdino.DinoVisionTransformer):
    """Bug: registers inserted before the positional embedding is added (they receive the class position)."""

    def prepare_tokens_with_masks(self, x):
        _, _, w, h = x.shape
        x = self.patch_embed(x)
        b, r = x.shape[0], self.num_register_tokens
        x = torch.cat((self.cls_token.expand(b, -1, -1), self.register_tokens.expand(b, -1, -1), x), dim=1)
        pos = self.interpolate_pos_encoding(torch.cat((x[:, :1], x[:, 1 + r:]), dim=1), w, h)
        return x + torch.cat((pos[:, :1].expand(-1, 1 + r, -1), pos[:, 1:]), dim=1)


def test_negative_control_registers_before_pos_embed(pairs):
    _, j = pairs["mlp_reg4"]
    wrong = _torch_model("mlp_reg4", cls=_RegistersBeforePos)
    x = _images((56, 56))
    _report("registers before pos_embed", _maxdiff(_jit_layers(j, x, (0, 2)), _torch_layers(wrong, x, [0, 2])))
