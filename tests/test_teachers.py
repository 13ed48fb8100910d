"""jaxkd.tasks.teachers / jaxkd.models.dinov2: loading DINOv2 weight files, checks and errors, the call contract.

A tiny DINOv2 (D 32, depth 3, 2 heads, patch 14, 4×4 pretraining grid) is built in jaxkd, exported with
``jax_to_torch`` (official key layout) and written as .pth / .safetensors / .npz; loading it back must give
bit-identical tokens. Numerical agreement with the official architecture is in parity_tests/test_dinov2_parity.py.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd.interop import jax_to_torch
from jaxkd.models.dinov2 import DinoVisionTransformer, pos_embed_interpolation_matrix, swiglu_hidden_features
from jaxkd.tasks.teachers import (
    DINOV2_ARCHS,
    TeacherError,
    TeacherWeightsNotFound,
    dinov2_weights_url,
    load_dinov2,
    read_state_dict,
)

TINY = dict(embed_dim=32, depth=3, num_heads=2, patch_size=14, img_size=56)


def _tiny_model(regs: int = 0, seed: int = 0) -> DinoVisionTransformer:
    m = DinoVisionTransformer(**TINY, num_register_tokens=regs, interpolate_offset=0.0 if regs else 0.1,
                              interpolate_antialias=bool(regs), rngs=nnx.Rngs(seed))
    # non-trivial LayerScale gammas, so that a dropped gamma would show
    for blk in m.blocks:
        for ls in (blk.ls1, blk.ls2):
            ls.gamma[...] = jnp.linspace(0.5, 1.5, 32)
    return m


@pytest.fixture(scope="module")
def tiny():
    m = _tiny_model()
    return m, jax_to_torch(m)


@pytest.fixture(scope="module")
def tiny_reg():
    m = _tiny_model(regs=4, seed=1)
    return m, jax_to_torch(m)


def _x(hw=(56, 56), seed=0, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, *hw, 3)).astype(np.float32)


@functools.partial(nnx.jit, static_argnames=("layers",))
def _layers(model, x, layers):
    """get_intermediate_layers, compiled (eager op-by-op compilation of every new shape is slow on CPU)."""
    return model.get_intermediate_layers(x, layers)


def _same(a, b):
    return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a, b))


def test_import_does_not_import_torch():
    code = ("import sys, jaxkd.tasks.teachers, jaxkd.models.dinov2; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_archs_and_urls():
    a = DINOV2_ARCHS
    assert (a["vit_small"].embed_dim, a["vit_small"].depth, a["vit_small"].num_heads) == (384, 12, 6)
    assert (a["vit_base"].embed_dim, a["vit_base"].depth, a["vit_base"].num_heads) == (768, 12, 12)
    assert (a["vit_large"].embed_dim, a["vit_large"].depth, a["vit_large"].num_heads) == (1024, 24, 16)
    assert (a["vit_giant"].embed_dim, a["vit_giant"].depth, a["vit_giant"].num_heads) == (1536, 40, 24)
    assert a["vit_giant"].ffn_layer == "swiglu" and swiglu_hidden_features(1536, 4.0) == 4096
    base = "https://dl.fbaipublicfiles.com/dinov2"
    assert dinov2_weights_url("vit_small") == f"{base}/dinov2_vits14/dinov2_vits14_pretrain.pth"
    assert dinov2_weights_url("vit_base", 4) == f"{base}/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"
    assert dinov2_weights_url("vit_giant2") == f"{base}/dinov2_vitg14/dinov2_vitg14_pretrain.pth"
    assert dinov2_weights_url("dinov2_vitl14_reg") == f"{base}/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"
    with pytest.raises(TeacherError, match="unknown DINOv2 arch 'vit_huge'"):
        dinov2_weights_url("vit_huge")


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "npz", "dict"])
def test_load_by_path_roundtrip(tiny, tmp_path, fmt):
    model, sd = tiny
    assert "mask_token" in sd and "blocks.2.ls2.gamma" in sd and "register_tokens" not in sd
    if fmt == "pth":
        import torch

        src = tmp_path / "dinov2_tiny_pretrain.pth"
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, src)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        src = tmp_path / "w.safetensors"
        save_file(sd, str(src))
    elif fmt == "npz":
        src = tmp_path / "w.npz"
        np.savez(src, **sd)
    else:
        src = {"model_state_dict": sd}
    t = load_dinov2(src, arch=TINY, img_size=28)
    assert (t.input_size, t.grid_size, t.num_patches) == ((28, 28), (2, 2), 4)
    assert (t.interpolate_offset, t.interpolate_antialias, t.num_register_tokens) == (0.1, False, 0)
    x = _x((28, 42))
    assert _same(_layers(t, x, (0, 2)), _layers(model, x, (0, 2)))


def test_registers_are_inferred_with_hub_interpolation(tiny_reg):
    model, sd = tiny_reg
    assert sd["register_tokens"].shape == (1, 4, 32)
    t = load_dinov2(sd, arch=TINY)
    assert (t.num_register_tokens, t.interpolate_offset, t.interpolate_antialias) == (4, 0.0, True)
    x = _x((84, 56))
    out = _layers(t, x, 2)
    assert [o.shape for o in out] == [(2, 24, 32)] * 2 and _same(out, _layers(model, x, 2))
    f = nnx.jit(lambda m, v: m.forward_features(v))(t, x)
    assert f["x_norm_regtokens"].shape == (2, 4, 32) and f["x_prenorm"].shape == (2, 1 + 4 + 24, 32)
    # an explicit override of the interpolation is honoured
    assert load_dinov2(sd, arch=TINY, interpolate_antialias=False).interpolate_antialias is False


def test_pth_with_code_is_refused(tmp_path, tiny):
    import torch

    marker = tmp_path / "executed"
    src = tmp_path / "evil.pth"
    torch.save({**{k: torch.from_numpy(v) for k, v in tiny[1].items()}, "x": _Evil(str(marker))}, src)
    with pytest.raises(TeacherError, match="refusing to load"):
        load_dinov2(src, arch=TINY)
    assert not marker.exists()


class _Evil:
    """Unpickling this would create a file: torch.load(weights_only=True) must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_missing_file_error(tmp_path):
    missing = tmp_path / "dinov2_vits14_pretrain.pth"
    with pytest.raises(TeacherWeightsNotFound) as e:
        load_dinov2(missing)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert str(missing) in msg
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth" in msg
    with pytest.raises(TeacherWeightsNotFound, match="dinov2_vitb14_reg4_pretrain.pth"):
        load_dinov2(str(missing), arch="vit_base", num_register_tokens=4)
    with pytest.raises(TeacherError, match="is a directory"):
        load_dinov2(tmp_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TeacherError, match="bad.pth"):
        load_dinov2(bad)


def _fake_official(arch: str, regs: int = 0) -> dict:
    """Zero-stride arrays with the official shapes of ``arch`` (no memory): enough for the checks."""
    a = DINOV2_ARCHS[arch]
    d, z = a.embed_dim, np.float32(0)
    sd = {"cls_token": (1, 1, d), "pos_embed": (1, 1370, d), "mask_token": (1, d),
          "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,), "norm.weight": (d,)}
    for i in range(a.depth):
        sd[f"blocks.{i}.mlp.fc1.weight"] = (4 * d, d)
        sd[f"blocks.{i}.ls1.gamma"] = (d,)
    if regs:
        sd["register_tokens"] = (1, regs, d)
    return {k: np.broadcast_to(z, s) for k, s in sd.items()}


def test_arch_mismatch_errors(tiny):
    with pytest.raises(TeacherError, match=r"cls_token: expected \(1, 1, 768\), got \(1, 1, 384\).*'vit_small'"):
        load_dinov2(_fake_official("vit_small"), arch="vit_base")
    with pytest.raises(ValueError, match=r"blocks.*expected 24 blocks.*got 12 blocks"):
        load_dinov2(_fake_official("vit_base"), arch={**TINY, "embed_dim": 768, "depth": 24, "num_heads": 12})
    with pytest.raises(TeacherError, match=r"register_tokens: expected \(1, 4, 384\), got absent"):
        load_dinov2(_fake_official("vit_small"), arch="dinov2_vits14_reg")
    with pytest.raises(TeacherError, match=r"register_tokens: expected absent.*got \(1, 4, 384\)"):
        load_dinov2(_fake_official("vit_small", regs=4), arch="vit_small", num_register_tokens=0)
    with pytest.raises(TeacherError, match=r"blocks.0.mlp: expected swiglu"):
        load_dinov2(_fake_official("vit_giant"), arch="vit_giant")
    _, sd = tiny
    with pytest.raises(TeacherError, match=r"patch_embed.proj.weight: expected \(32, 'C', 16, 16\)"):
        load_dinov2(sd, arch={**TINY, "patch_size": 16})
    with pytest.raises(TeacherError, match="key 'pos_embed' is missing"):
        load_dinov2({k: v for k, v in sd.items() if k != "pos_embed"}, arch=TINY)
    with pytest.raises(TeacherError, match="blocks.1.attn.qkv.weight"):  # the converter names the bad key
        load_dinov2({**sd, "blocks.1.attn.qkv.weight": np.zeros((96, 31), np.float32)}, arch=TINY)
    with pytest.raises(TeacherError, match="multiple of the DINOv2 patch size 14"):
        load_dinov2(sd, arch=TINY, img_size=32)


def test_call_contract_and_errors(tiny):
    model, _ = tiny
    x = _x((28, 70))
    a = model.get_intermediate_layers(x, [2, 0])
    assert _same(a, model.get_intermediate_layers(x, [0, 2]))  # official: ascending block order
    assert _same(model.get_intermediate_layers(x, 3), model.get_intermediate_layers(x, [0, 1, 2]))
    assert _same(model.get_intermediate_layers(x, 1), model.get_intermediate_layers(x, [2]))
    (p, c), = model.get_intermediate_layers(x, [1], return_class_token=True)
    assert p.shape == (2, 10, 32) and c.shape == (2, 32) and p.dtype == c.dtype == jnp.float32
    g, = model.get_intermediate_layers(x, [1], reshape=True)
    assert g.shape == (2, 2, 5, 32) and np.array_equal(np.asarray(g).reshape(2, 10, 32), np.asarray(p))
    assert model(x).shape == (2, 32)
    for bad, msg in [(x[..., :1], r"NHWC images \(B, H, W, 3\)"), (x[:, :27], "multiple of the patch size 14"),
                     (x.astype(np.int32), "float images")]:
        with pytest.raises(ValueError, match=msg):
            model.get_intermediate_layers(bad, 1)
    for layers in ([3], [-1], [0, 0], [], 0, 4):
        with pytest.raises(ValueError, match="layers="):
            model.get_intermediate_layers(x, layers)


def test_jit_compiles_once_per_shape(tiny):
    model, _ = tiny
    traces = []

    @nnx.jit
    def f(m, v):
        traces.append(v.shape)
        return m.get_intermediate_layers(v, [0, 2])

    x = _x((28, 70))
    out = f(model, x)
    f(model, x + 1.0)
    eager = model.get_intermediate_layers(x, [0, 2])
    assert len(traces) == 1
    assert max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(out, eager)) <= 1e-5


def test_bf16_compute_returns_float32_close_to_fp32(tiny):
    _, sd = tiny
    t16 = load_dinov2(sd, arch=TINY, dtype=jnp.bfloat16)
    t32 = load_dinov2(sd, arch=TINY)
    x = _x()
    a, = _layers(t16, x, 1)
    b, = _layers(t32, x, 1)
    assert a.dtype == jnp.float32 and t16.pos_embed[...].dtype == jnp.float32
    err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    assert 0 < err < 0.1, err


def test_interpolation_matrices():
    for offset, aa in [(0.1, False), (0.0, True), (0.0, False)]:
        for n_in, n_out in [(37, 16), (4, 6), (4, 2)]:
            m = pos_embed_interpolation_matrix(n_in, n_out, offset=offset, antialias=aa)
            assert m.shape == (n_out, n_in) and np.allclose(m.sum(1), 1.0, atol=1e-12)
    # offset 0.1 samples a slightly different grid than size= (the official scale-factor kludge)
    assert not np.allclose(pos_embed_interpolation_matrix(37, 16, offset=0.1),
                           pos_embed_interpolation_matrix(37, 16, offset=0.0))
    with pytest.raises(ValueError, match="interpolate_offset"):
        pos_embed_interpolation_matrix(4, 2, offset=-1)


def test_read_state_dict_rejects_non_mapping(tmp_path):
    import torch

    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(TeacherError, match="not a state dict"):
        read_state_dict(tmp_path / "t.pth")
