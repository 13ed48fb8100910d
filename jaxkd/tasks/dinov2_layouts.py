"""DINOv2 weights in the model hubs' layouts, converted to the official one by explicit key tables.

jaxkd's DINOv2 (:mod:`jaxkd.models.dinov2`) is named after the official facebookresearch/dinov2 state dict, the
layout of ``dinov2_vits14_pretrain.pth`` and the other hub files. The same weights are published in two more
layouts; :func:`to_official` detects the layout from the keys (:func:`detect_layout`) and renames / concatenates
them into the official one, so that everything downstream (the architecture read from the shapes, the checks
against ``arch``, the strict conversion to Flax) is the official path. Pure numpy: no torch, no timm, no
transformers.

================  =================================================================================================
official          ``cls_token`` (1,1,D), ``pos_embed`` (1,1+M²,D), ``mask_token`` (1,D), [``register_tokens``
                  (1,R,D)], ``patch_embed.proj.*``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
                  mlp.fc1, mlp.fc2 | mlp.w12, mlp.w3, ls2.gamma}.*``, ``norm.*``. Recognised by ``mask_token``.
timm              ``timm.create_model('vit_{small,base,large,giant}_patch14[_reg4]_dinov2')``: the official names
                  (recognised by LayerScale ``blocks.0.ls1.gamma`` without ``mask_token``), except
                  :data:`TIMM_RENAMED` (``reg_token``); no ``mask_token`` (zeros are put in: it only replaces
                  masked patches in training); ``head.*`` (a classifier) dropped; ViT-g's packed SwiGLU under the
                  MLP's names (:data:`TIMM_SWIGLU`, told apart by shape: its ``fc1`` is twice as wide as ``fc2``'s
                  input). The ``*_reg4_dinov2`` models are ``no_embed_class``: their ``pos_embed`` (1,M²,D) has no
                  class position and their ``cls_token`` is the official ``cls_token + pos_embed[:, 0]``, so the
                  official pos_embed gets a zero class position (the same sum, exactly). A ``pos_embed`` that also
                  holds register positions (timm ``reg_tokens`` without ``no_embed_class``) has them added into the
                  register tokens (registers are never interpolated: the same sum again).
transformers      Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (``facebook/dinov2-*``), also under
                  ``dinov2.`` / ``dinov2_with_registers.`` (the ``...ForImageClassification`` files, whose
                  ``classifier.*`` is dropped): :data:`HF_GLOBAL` and :data:`HF_BLOCK` (``encoder.layer.N.`` ->
                  ``blocks.N.``). Both namings are read: the hub files' (what ``save_pretrained`` writes, and every
                  transformers 4 name) and transformers 5's in-memory ``state_dict()`` names. Separate q / k / v
                  are concatenated into ``qkv`` (rows q, k, v: the official order), SwiGLU's gate / up into
                  ``w12``; LayerScale ``layer_scale{1,2}.lambda1`` is ``ls{1,2}.gamma``. Recognised by
                  ``embeddings.cls_token`` with ``encoder.layer.N.norm1`` (a Hugging Face ``ViTModel``, with
                  ``layernorm_before``, is refused).
================  =================================================================================================

Heads are not in the weights: :func:`hub_metadata` reads them from a Hugging Face ``config.json``
(``num_attention_heads``) or a timm model name (``config.json``'s ``architecture`` in a timm hub folder, else the
weight file's name), and :mod:`jaxkd.tasks.teachers` checks them against the requested architecture. A Hugging Face
cache folder (``models--facebook--dinov2-small`` or one of its ``snapshots/<rev>``) is resolved by
:func:`hub_files`, without network.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxkd.errors import TeacherError, describe
from jaxkd.interop.torch_pickle import as_array

__all__ = ["LAYOUTS", "HF_GLOBAL", "HF_BLOCK", "HF_BLOCK_PARAMS", "TIMM_RENAMED", "TIMM_SWIGLU", "TIMM_DROPPED",
           "TIMM_DINOV2_NAME", "HubMetadata", "detect_layout", "to_official", "hub_files", "hub_metadata"]

LAYOUTS = ("official", "timm", "transformers")

#: official key <- transformers key (outside the blocks); ``mask_token`` is absent with ``use_mask_token=False``
#: (zeros are put in), ``register_tokens`` exists in ``Dinov2WithRegistersModel`` only
HF_GLOBAL: dict[str, str] = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}

#: official module of a block (``blocks.N.<module>.{weight,bias}``) <- transformers modules
#: (``encoder.layer.N.<module>.{weight,bias}``): one tuple per naming, the hub files' first, then transformers 5's
#: in-memory names; the modules of one tuple are concatenated along the output axis in that order
HF_BLOCK: dict[str, tuple[tuple[str, ...], ...]] = {
    "norm1": (("norm1",),),
    "attn.qkv": (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                 ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    "attn.proj": (("attention.output.dense",), ("attention.o_proj",)),
    "norm2": (("norm2",),),
    "mlp.fc1": (("mlp.fc1",),),  # the MLP (ViT-S/B/L) ...
    "mlp.fc2": (("mlp.fc2",),),
    "mlp.w12": (("mlp.weights_in",), ("mlp.gate_proj", "mlp.up_proj")),  # ... or SwiGLU (ViT-g): silu(gate) * up
    "mlp.w3": (("mlp.weights_out",), ("mlp.down_proj",)),
}
#: official block parameter <- transformers block parameter (LayerScale)
HF_BLOCK_PARAMS: dict[str, str] = {"ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
_HF_FFNS = (("mlp.fc1", "mlp.fc2"), ("mlp.w12", "mlp.w3"))

#: official key <- timm key, where they differ (every other key keeps its name)
TIMM_RENAMED: dict[str, str] = {"register_tokens": "reg_token"}
#: official block module <- timm's packed SwiGLU (``GluMlp``: silu(first half) * second half, as ``w12``)
TIMM_SWIGLU: dict[str, str] = {"mlp.w12": "mlp.fc1", "mlp.w3": "mlp.fc2"}
#: timm keys that are not the backbone (a classifier when ``num_classes`` > 0)
TIMM_DROPPED: tuple[str, ...] = ("head.",)
#: timm's DINOv2 model names -> the official architecture ('small' -> 'vit_small') and registers
TIMM_DINOV2_NAME = re.compile(r"vit_(small|base|large|giant)_patch14(_reg4)?_dinov2")

_EXPECTED = ("expected a DINOv2 backbone in one of the layouts jaxkd reads: the official one (cls_token, mask_token, "
             "pos_embed, blocks.N.attn.qkv.weight, blocks.N.ls1.gamma, as dinov2_vits14_pretrain.pth), timm's "
             "vit_*_patch14_dinov2 (the same names, no mask_token) or Hugging Face Dinov2Model "
             "(embeddings.cls_token, encoder.layer.N.layer_scale1.lambda1, as facebook/dinov2-small)")


def _hf_prefix(keys) -> str | None:
    """The prefix of a transformers DINOv2 (ViT) model's keys ('' or 'dinov2.' ...), None if there is none."""
    found = {k[: -len("embeddings.cls_token")] for k in keys if k.endswith("embeddings.cls_token")}
    found = {p for p in found if not p or p.endswith(".")}
    return min(found, key=len) if found else None


def detect_layout(state_dict: Mapping[str, Any]) -> str | None:
    """'official' | 'timm' | 'transformers' from the keys (see the module docstring), None for anything else."""
    keys = state_dict.keys()
    if "mask_token" in keys:
        return "official"
    if _hf_prefix(keys) is not None:
        return "transformers"
    if "cls_token" in keys and ("blocks.0.ls1.gamma" in keys or "reg_token" in keys):
        return "timm"
    return None


def _found(keys: list[str]) -> str:
    """What a state dict that is no DINOv2 looks like, for the error message."""
    ks = set(keys)
    if "conv1.weight" in ks and any(k.startswith("layer1.") for k in ks):
        return "a ResNet (conv1, layer1 .. layer4, fc)"
    if any(".layernorm_before." in k for k in ks):
        return "a Hugging Face ViT (ViTModel: layernorm_before, intermediate.dense), not a Dinov2Model"
    if "cls_token" in ks and "blocks.0.attn.qkv.weight" in ks:
        return ("a ViT without DINOv2's LayerScale and mask token (no blocks.0.ls1.gamma, no mask_token), e.g. "
                "timm's vit_small_patch16_224")
    if any(re.match(r"(features|layers?\d*|stages?)\.", k) for k in ks) or any(k.endswith("running_mean") for k in ks):
        return "a CNN"
    return f"{len(ks)} tensors that name no DINOv2 part"


def _not_dinov2(sd: Mapping[str, Any], where: str) -> TeacherError:
    keys = sorted(sd)
    return TeacherError(f"{where + ': ' if where else ''}not a DINOv2 state dict: found {_found(keys)}, keys like "
                        f"{keys[:4]}; {_EXPECTED}")


def _zeros_like_token(sd: Mapping[str, Any]) -> np.ndarray:
    cls = as_array(sd["cls_token"])
    return np.zeros((1, cls.shape[-1]), cls.dtype)


def _timm(sd: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    renamed = {v: k for k, v in TIMM_RENAMED.items()}
    for k, v in sd.items():
        if not k.startswith(TIMM_DROPPED):
            out[renamed.get(k, k)] = v
    depth = 1 + max((int(m.group(1)) for k in out if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    for i in range(depth):
        fc1, fc2 = out.get(f"blocks.{i}.mlp.fc1.weight"), out.get(f"blocks.{i}.mlp.fc2.weight")
        if fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]:  # packed SwiGLU
            for official, name in TIMM_SWIGLU.items():
                for p in ("weight", "bias"):
                    if f"blocks.{i}.{name}.{p}" in out:
                        out[f"blocks.{i}.{official}.{p}"] = out.pop(f"blocks.{i}.{name}.{p}")
    if "pos_embed" in out and "cls_token" in out:
        pos = as_array(out["pos_embed"])
        n, regs = pos.shape[1], (out["register_tokens"].shape[1] if "register_tokens" in out else 0)
        if math.isqrt(n) ** 2 == n:  # no_embed_class: the class token holds its position already
            out["pos_embed"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
        elif regs and math.isqrt(n - 1 - regs) ** 2 == n - 1 - regs:  # positions of the registers too
            out["register_tokens"] = as_array(out["register_tokens"]) + pos[:, 1:1 + regs]
            out["pos_embed"] = np.concatenate([pos[:, :1], pos[:, 1 + regs:]], axis=1)
    out.setdefault("mask_token", _zeros_like_token(out))
    return out


def _transformers(sd: Mapping[str, Any], where: str) -> dict[str, Any]:
    prefix = _hf_prefix(sd.keys()) or ""
    src = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}  # 'classifier.*' etc. dropped
    if any(".layernorm_before." in k for k in src):
        raise _not_dinov2(sd, where)
    out: dict[str, Any] = {}
    for official, name in HF_GLOBAL.items():
        if name in src:
            out[official] = src.pop(name)
    if "cls_token" in out:
        out.setdefault("mask_token", _zeros_like_token(out))
    depth = 1 + max((int(m.group(1)) for k in src if (m := re.match(r"encoder\.layer\.(\d+)\.", k))), default=-1)
    missing = []
    for i in range(depth):
        layer, block = f"encoder.layer.{i}.", f"blocks.{i}."
        for official, name in HF_BLOCK_PARAMS.items():
            if layer + name in src:
                out[block + official] = src.pop(layer + name)
            else:
                missing.append(layer + name)
        for module, namings in HF_BLOCK.items():
            for p in ("weight", "bias"):
                for names in namings:
                    keys = [f"{layer}{n}.{p}" for n in names]
                    if all(k in src for k in keys):
                        parts = [as_array(src.pop(k)) for k in keys]
                        out[f"{block}{module}.{p}"] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
                        break
        for module in ("norm1", "attn.qkv", "attn.proj", "norm2"):
            if block + module + ".weight" not in out:
                missing.append(layer + HF_BLOCK[module][0][0] + ".weight")
        if not any(all(f"{block}{m}.weight" in out for m in ffn) for ffn in _HF_FFNS):
            missing.append(f"{layer}mlp.fc1.weight (or mlp.weights_in.weight)")
    if missing or src:
        what = f"missing {missing[:3]}" if missing else f"unexpected {sorted(src)[:3]}"
        raise TeacherError(f"{where + ': ' if where else ''}a Hugging Face DINOv2 state dict with keys jaxkd does not "
                           f"know ({what}); expected Dinov2Model's (transformers 4 / the hub files, or "
                           "transformers 5): see jaxkd.tasks.dinov2_layouts.HF_BLOCK")
    return out


def to_official(state_dict: Mapping[str, Any], where: str = "") -> tuple[dict[str, Any], str]:
    """(the state dict in the official layout, the layout it was in). An official one is returned as is (a new
    dict of the same arrays); the others are converted by the tables above (numpy; torch tensors read through
    ``as_array`` where they are combined). Raises :class:`TeacherError` for anything that is no DINOv2, naming
    what it looks like and the layouts expected (``where``, e.g. the file, starts the message)."""
    layout = detect_layout(state_dict)
    if layout == "official":
        return dict(state_dict), layout
    if layout == "timm":
        return _timm(state_dict, where), layout
    if layout == "transformers":
        return _transformers(state_dict, where), layout
    if "cls_token" in state_dict and "blocks.0.attn.qkv.weight" not in state_dict:
        return dict(state_dict), "official"  # an official file with parts missing: the official checks name them
    raise _not_dinov2(state_dict, where)


# ------------------------------------------------------------------ files and metadata
@dataclasses.dataclass(frozen=True)
class HubMetadata:
    """What a hub folder or file name says beyond the weights: the attention heads and/or the official arch name
    ('vit_small' ...) that implies them, and where that was read (for messages: it names the file)."""

    num_heads: int | None = None
    arch: str | None = None
    source: str = ""


def hub_files(path: Path) -> tuple[list[Path], Path | None]:
    """(the weight files, config.json or None) of a Hugging Face / timm hub folder: a snapshot folder (config.json +
    model.safetensors, or its sharded index model.safetensors.index.json, or pytorch_model.bin) or the cache
    folder ``models--ORG--NAME`` above it (the snapshot that ``refs/main`` names, else its only snapshot). A file
    path gives ([path], the config.json beside it if any). Raises :class:`TeacherError` for a folder without
    weights."""
    if path.is_file():
        config = path.parent / "config.json"
        return [path], config if config.is_file() else None
    folder = path
    if (path / "snapshots").is_dir():
        ref = path / "refs" / "main"
        snaps = sorted(p for p in (path / "snapshots").iterdir() if p.is_dir())
        if ref.is_file() and (path / "snapshots" / ref.read_text().strip()).is_dir():
            folder = path / "snapshots" / ref.read_text().strip()
        elif len(snaps) == 1:
            folder = snaps[0]
        else:
            raise TeacherError(f"DINOv2 weights path '{path}' is a Hugging Face cache folder with "
                               f"{len(snaps)} snapshots and no refs/main: pass the snapshot folder itself "
                               f"({path}/snapshots/<revision>)")
    config = folder / "config.json" if (folder / "config.json").is_file() else None
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"], config
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            raise TeacherError(f"cannot read the shard index '{index}' ({describe(e)}); download the snapshot "
                               "again") from None
        return [folder / s for s in shards], config
    if (folder / "pytorch_model.bin").is_file():
        return [folder / "pytorch_model.bin"], config
    raise TeacherError(f"DINOv2 weights path '{path}' is a directory without a Hugging Face snapshot in it "
                       "(config.json + model.safetensors): pass the weight file itself, or the snapshot folder "
                       "(~/.cache/huggingface/hub/models--facebook--dinov2-small/snapshots/<revision>)")


def _read_config(config: Path) -> dict:
    try:
        doc = json.loads(config.read_text())
    except (ValueError, OSError) as e:
        raise TeacherError(f"cannot read '{config}' as JSON ({describe(e)}); download the snapshot again") from None
    if not isinstance(doc, dict):
        raise TeacherError(f"'{config}' holds a {type(doc).__name__}, not a model config")
    return doc


def _hf_metadata(doc: dict, config: Path) -> HubMetadata:
    model_type = doc.get("model_type")
    if model_type not in ("dinov2", "dinov2_with_registers"):
        raise TeacherError(f"'{config}' describes a {model_type!r} model, but the weights beside it are a DINOv2 "
                           "in the Hugging Face layout: expected model_type 'dinov2' or 'dinov2_with_registers' "
                           "(facebook/dinov2-*)")
    checks = [("hidden_act", "gelu", doc.get("hidden_act", "gelu") == "gelu"),
              ("layer_norm_eps", 1e-6, abs(float(doc.get("layer_norm_eps", 1e-6)) - 1e-6) <= 1e-12)]
    for field, want, ok in checks:
        if not ok:
            raise TeacherError(f"'{config}': {field} = {doc.get(field)!r}, but jaxkd's DINOv2 uses {want!r} (the "
                               "official model's); this is not a DINOv2 jaxkd can reproduce")
    heads = doc.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1:
        raise TeacherError(f"'{config}': num_attention_heads = {heads!r}, expected a positive int")
    return HubMetadata(num_heads=heads, source=f"{config} (num_attention_heads)")


def hub_metadata(files: list[Path], config: Path | None, layout: str) -> HubMetadata:
    """Heads or architecture of a hub file: transformers -> config.json's ``num_attention_heads`` (model_type,
    ``hidden_act`` 'gelu' and ``layer_norm_eps`` 1e-6 checked); timm -> the model name in config.json's
    ``architecture`` (timm's hub folders), else in the weight file's name (``vit_small_patch14_dinov2.lvd142m
    .safetensors``); nothing otherwise (the official files: the arch the caller names)."""
    doc = _read_config(config) if config is not None else None
    if layout == "transformers" and doc is not None:
        return _hf_metadata(doc, config)
    if layout == "timm":
        for name, where in ((str((doc or {}).get("architecture", "")), f"{config} (architecture)"),
                            (files[0].name, f"the name of {files[0]}")):
            m = TIMM_DINOV2_NAME.search(name)
            if m:
                return HubMetadata(arch=f"vit_{m.group(1)}", source=f"timm model name '{m.group(0)}' in {where}")
    return HubMetadata()
