"""jaxkd.tasks.dinov2_layouts through jaxkd.tasks.teachers: hub folders, detection, heads, and the errors.

The timm and transformers state dicts here are made from a tiny official one by the inverse of the module's own
tables (so these tests check the reading, resolving and checking, not the tables): that the tables match what timm
and transformers really write and compute is parity_tests/test_dinov2_hub_parity.py, with the libraries' classes.
"""

from __future__ import annotations

import functools
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from jaxkd.interop import jax_to_torch
from jaxkd.models.dinov2 import DinoVisionTransformer
from jaxkd.tasks import dinov2_layouts as L
from jaxkd.tasks.teachers import (
    DINOV2_ARCHS,
    TeacherError,
    dinov2_arch_from_state_dict,
    dinov2_config_from_state_dict,
    load_dinov2,
    read_dinov2_weights,
)

TINY = dict(embed_dim=32, depth=2, num_heads=2, patch_size=14, img_size=56)


@pytest.fixture(scope="module")
def official():
    m = DinoVisionTransformer(**TINY, rngs=nnx.Rngs(0))
    for blk in m.blocks:
        blk.ls1.gamma[...] = jnp.linspace(0.5, 1.5, 32)
    return m, jax_to_torch(m)


def _as_transformers(sd: dict, names: int = 0) -> dict:
    """official -> transformers (``names`` 0: the hub files', 1: transformers 5's in-memory names)."""
    out = {hf: sd[o] for o, hf in L.HF_GLOBAL.items() if o in sd}
    for k, v in sd.items():
        if not k.startswith("blocks."):
            continue
        _, i, rest = k.split(".", 2)
        module, _, p = rest.rpartition(".")
        layer = f"encoder.layer.{i}."
        if rest in L.HF_BLOCK_PARAMS:
            out[layer + L.HF_BLOCK_PARAMS[rest]] = v
        else:
            parts = L.HF_BLOCK[module][min(names, len(L.HF_BLOCK[module]) - 1)]
            for name, chunk in zip(parts, np.split(v, len(parts))):
                out[f"{layer}{name}.{p}"] = chunk
    return out


def _hf_config(heads=2, **kw) -> dict:
    return {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": heads,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": 56, "patch_size": 14, **kw}


def _snapshot(root, sd, config, rev="0123abc"):
    """root = a Hugging Face cache folder models--ORG--NAME with refs/main -> snapshots/rev."""
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    save_file(sd, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps(config))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    return snap


@functools.partial(nnx.jit, static_argnames=("layers",))
def _layers(model, x, layers=(0, 1)):
    return model.get_intermediate_layers(x, layers)


def _same(a, b):
    return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a, b))


X = np.random.default_rng(0).standard_normal((1, 56, 56, 3)).astype(np.float32)


@pytest.mark.parametrize("names", [0, 1])
def test_transformers_cache_folder_bit_identical(official, tmp_path, names):
    model, sd = official
    root = tmp_path / "models--facebook--dinov2-tiny"
    snap = _snapshot(root, _as_transformers(sd, names), _hf_config())
    for path in (root, snap, snap / "model.safetensors"):  # the cache folder, its snapshot, the file (config beside)
        got, layout, hub = read_dinov2_weights(path)
        assert layout == "transformers" and hub.num_heads == 2 and "config.json" in hub.source
        assert sorted(got) == sorted(sd) and all(np.array_equal(got[k], sd[k]) for k in sd)
    t = load_dinov2(root, arch=TINY, img_size=56)
    assert _same(_layers(t, X), _layers(model, X))
    # heads from config.json when none are given (a 'dinov2_custom' teacher)
    got, _, hub = read_dinov2_weights(root)
    assert dinov2_arch_from_state_dict(got, 0, hub=hub).num_heads == 2


def test_transformers_prefix_and_missing_mask_token(official):
    _, sd = official
    hf = {f"dinov2.{k}": v for k, v in _as_transformers(sd).items() if k != "embeddings.mask_token"}
    hf["classifier.weight"] = np.zeros((10, 64), np.float32)  # Dinov2ForImageClassification: dropped
    got, layout = L.to_official(hf)
    assert layout == "transformers" and not got["mask_token"].any() and sorted(got) == sorted(sd)


def test_timm_layout_registers_and_name(official, tmp_path):
    model, sd = official
    timm = {k: v for k, v in sd.items() if k != "mask_token"}
    timm["head.weight"] = np.zeros((5, 32), np.float32)
    assert L.detect_layout(timm) == "timm"
    save_file(timm, str(tmp_path / "timm.safetensors"))
    t = load_dinov2(tmp_path / "timm.safetensors", arch=TINY, img_size=56)
    assert _same(_layers(t, X), _layers(model, X))
    # no_embed_class (the *_reg4_dinov2 models): the class position folded into cls_token, none in pos_embed
    reg = dict(timm, reg_token=np.ones((1, 4, 32), np.float32), pos_embed=sd["pos_embed"][:, 1:],
               cls_token=sd["cls_token"] + sd["pos_embed"][:, :1])
    got, _ = L.to_official(reg)
    assert got["pos_embed"].shape == (1, 17, 32) and not got["pos_embed"][:, 0].any()
    assert np.array_equal(got["register_tokens"], reg["reg_token"]) and "reg_token" not in got
    # register positions in pos_embed (reg_tokens without no_embed_class) go into the registers
    pos = np.concatenate([sd["pos_embed"][:, :1], np.full((1, 4, 32), 2.0, np.float32), sd["pos_embed"][:, 1:]], 1)
    got, _ = L.to_official(dict(timm, reg_token=np.ones((1, 4, 32), np.float32), pos_embed=pos))
    assert np.array_equal(got["pos_embed"], sd["pos_embed"]) and (got["register_tokens"] == 3.0).all()
    # heads from a timm model name: vit_base_* says 12, the file has 2
    named = tmp_path / "vit_base_patch14_dinov2.lvd142m.safetensors"
    save_file(timm, str(named))
    with pytest.raises(TeacherError, match=r"timm model name 'vit_base_patch14_dinov2' in the name of .*"
                                           r"vit_base_patch14_dinov2.lvd142m.safetensors says 12 attention heads, "
                                           r"but the given arch has 2"):
        load_dinov2(named, arch=TINY)


def test_errors(official, tmp_path):
    _, sd = official
    root = tmp_path / "models--facebook--dinov2-tiny"
    _snapshot(root, _as_transformers(sd), _hf_config(heads=4))
    with pytest.raises(TeacherError, match=r"config.json \(num_attention_heads\) says 4 attention heads, but the "
                                           "given arch has 2"):
        load_dinov2(root, arch=TINY)
    got, _, hub = read_dinov2_weights(root)
    with pytest.raises(TeacherError, match=r"says 4 attention heads, but num_heads "
                                           r"\(ss_distillation.teacher_num_heads\) is 2"):
        dinov2_arch_from_state_dict(got, 2, hub=hub)
    (root / "snapshots" / "0123abc" / "config.json").write_text(json.dumps(_hf_config(hidden_act="gelu_new")))
    with pytest.raises(TeacherError, match="hidden_act = 'gelu_new'"):
        read_dinov2_weights(root)
    (root / "snapshots" / "0123abc" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(TeacherError, match="describes a 'vit' model"):
        read_dinov2_weights(root)
    (root / "refs" / "main").unlink()
    (root / "snapshots" / "other").mkdir()
    with pytest.raises(TeacherError, match="2 snapshots and no refs/main"):
        read_dinov2_weights(root)
    with pytest.raises(TeacherError, match="is a directory without a Hugging Face snapshot"):
        read_dinov2_weights(root / "snapshots" / "other")
    with pytest.raises(TeacherError, match=r"unexpected \['encoder.layer.0.attention.extra.weight'\]"):
        L.to_official({**_as_transformers(sd), "encoder.layer.0.attention.extra.weight": np.zeros(1)})
    hf = _as_transformers(sd)
    del hf["encoder.layer.1.layer_scale2.lambda1"]
    with pytest.raises(TeacherError, match=r"missing \['encoder.layer.1.layer_scale2.lambda1'\]"):
        L.to_official(hf)


@pytest.mark.parametrize("keys,found", [
    (["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"], "a ResNet"),
    (["cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.0.norm1.weight"], "a ViT without DINOv2's"),
    (["embeddings.cls_token", "encoder.layer.0.layernorm_before.weight"], "a Hugging Face ViT"),
    (["features.0.weight", "classifier.1.weight"], "a CNN"),
    (["foo"], "1 tensors that name no DINOv2 part"),
])
def test_other_architectures_are_named(keys, found):
    with pytest.raises(TeacherError, match="not a DINOv2 state dict: found " + found) as e:
        L.to_official({k: np.zeros(1, np.float32) for k in keys}, where="w.safetensors")
    msg = str(e.value)
    assert msg.startswith("w.safetensors: ") and "timm's vit_*_patch14_dinov2" in msg and "\n" not in msg


def _official_shapes(arch: str, regs: int = 0) -> dict:
    """Zero-stride arrays of an official hub file's shapes (no memory until a conversion concatenates)."""
    a = DINOV2_ARCHS[arch]
    d, h = a.embed_dim, (8192 if a.ffn_layer == "swiglu" else 4 * a.embed_dim)
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, 1370, d), "mask_token": (1, d), "norm.weight": (d,),
              "norm.bias": (d,), "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,)}
    if regs:
        shapes["register_tokens"] = (1, regs, d)
    fc = ("w12", "w3") if a.ffn_layer == "swiglu" else ("fc1", "fc2")
    for i in range(a.depth):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                       b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                       b + "ls1.gamma": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "ls2.gamma": (d,),
                       f"{b}mlp.{fc[0]}.weight": (h, d), f"{b}mlp.{fc[0]}.bias": (h,),
                       f"{b}mlp.{fc[1]}.weight": (d, h // (2 if fc[0] == "w12" else 1)), f"{b}mlp.{fc[1]}.bias": (d,)})
    return {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}


def test_real_sizes():
    """facebook/dinov2-small (with registers) and timm's vit_giant_patch14_reg4_dinov2 at their real shapes convert
    to what the official checks accept for dinov2_vits14_reg / dinov2_vitg14_reg (ViT-g's SwiGLU: 8192 -> 4096)."""
    sd = _official_shapes("vit_small", regs=4)
    got, layout = L.to_official(_as_transformers(sd))
    assert layout == "transformers" and {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in sd.items()}
    g = _official_shapes("vit_giant", regs=4)
    timm = {k.replace("mlp.w12", "mlp.fc1").replace("mlp.w3", "mlp.fc2"): v for k, v in g.items()
            if k not in ("mask_token", "register_tokens", "pos_embed")}
    timm.update(reg_token=g["register_tokens"], pos_embed=g["pos_embed"][:, 1:])
    got, layout = L.to_official(timm)
    assert layout == "timm" and {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in g.items()}
    for arch, s in (("dinov2_vits14_reg", sd), ("dinov2_vitg14_reg", got)):
        cfg = dinov2_config_from_state_dict(s, arch)
        assert cfg["num_register_tokens"] == 4 and cfg["img_size"] == 518
