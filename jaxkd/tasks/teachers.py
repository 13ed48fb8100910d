"""Frozen self-supervised teachers: DINOv2 ViTs loaded from the official PyTorch weight files or the hubs' files.

There is no network access: the user downloads the weight file (``dinov2_vits14_pretrain.pth`` etc., URLs by
:func:`dinov2_weights_url`) and passes its path. ``.pth``/``.pt``/``.bin`` files are read with
``torch.load(path, map_location='cpu', weights_only=True)`` (torch imported lazily, only then; a file that would
need arbitrary pickled code is refused); ``.safetensors`` (``safetensors``' numpy API) and ``.npz`` need no torch.

Accepted layouts, detected from the keys and converted to the official one by explicit key tables
(:mod:`jaxkd.tasks.dinov2_layouts`, which lists every rule): the official facebookresearch/dinov2 hub files;
timm's ``vit_{small,base,large,giant}_patch14[_reg4]_dinov2`` (what ``timm.create_model(...).state_dict()`` or
timm's hub ``model.safetensors`` holds); Hugging Face transformers' ``Dinov2Model`` /
``Dinov2WithRegistersModel`` (``facebook/dinov2-*``: separate q / k / v, ``layer_scale1.lambda1``...). A Hugging
Face snapshot folder (``config.json`` + ``model.safetensors``) or the cache folder above it
(``~/.cache/huggingface/hub/models--facebook--dinov2-small``) is read as it is, offline. The attention heads are
not in the weights: a named ``arch`` states them; a transformers ``config.json`` (in the folder, or beside the
file) states them too (``num_attention_heads``), and so does a timm model name (``architecture`` in a timm hub
folder's config.json, else the weight file's name): a disagreement is an error, and a ``dinov2_custom`` teacher
takes them from there or from ``teacher_num_heads``. Whatever the layout, the positional-embedding interpolation
is the official hub models' (below): timm and transformers resample slightly differently at inputs other than
the pretraining size (pass ``interpolate_offset`` / ``interpolate_antialias`` to choose).

    teacher = load_dinov2("dinov2_vits14_pretrain.pth", arch="vit_small", img_size=224)
    t6, t11 = teacher.get_intermediate_layers(x_nhwc, [6, 11], norm=True)   # (B, 256, 384) each

The architecture (embed dim, depth, registers, FFN type, patch size, pretraining grid) is read from the state
dict and checked against ``arch``; the positional-embedding interpolation follows the official hub models
(offset 0.1 / no antialias without registers, size-based / antialiased with registers), see
:mod:`jaxkd.models.dinov2`. ``import jaxkd.tasks.teachers`` never imports torch.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.errors import TeacherError, TeacherWeightsNotFound, describe, first_line
from jaxkd.interop import StateDictMismatch, torch_to_jax, unwrap_state_dict
from jaxkd.models.dinov2 import DinoVisionTransformer
from jaxkd.tasks import dinov2_layouts as layouts
from jaxkd.tasks.dinov2_layouts import HubMetadata

__all__ = ["TeacherError", "TeacherWeightsNotFound", "DinoV2Arch", "DINOV2_ARCHS", "DINOV2_BASE_URL",
           "HubMetadata", "dinov2_weights_url", "read_dinov2_weights", "read_state_dict",
           "dinov2_arch_from_state_dict", "dinov2_config_from_state_dict", "load_dinov2"]

DINOV2_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"


@dataclasses.dataclass(frozen=True)
class DinoV2Arch:
    """A DINOv2 architecture: width, depth, heads, FFN ('mlp' | 'swiglu'), MLP ratio, patch size,
    pretraining image size (sizes ``pos_embed``) and the short hub name ('vits' -> dinov2_vits14)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn_layer: str = "mlp"
    mlp_ratio: float = 4.0
    patch_size: int = 14
    img_size: int = 518
    hub: str = ""


#: the official architectures (hub: dinov2_vit{s,b,l,g}14[_reg]); ViT-g is the official ``vit_giant2``.
DINOV2_ARCHS: dict[str, DinoV2Arch] = {
    "vit_small": DinoV2Arch(384, 12, 6, hub="vits"),
    "vit_base": DinoV2Arch(768, 12, 12, hub="vitb"),
    "vit_large": DinoV2Arch(1024, 24, 16, hub="vitl"),
    "vit_giant": DinoV2Arch(1536, 40, 24, ffn_layer="swiglu", hub="vitg"),
}
_HUB_NAMES = {f"dinov2_{a.hub}14": k for k, a in DINOV2_ARCHS.items()}


def _resolve_arch(arch: str | DinoV2Arch | Mapping[str, Any]) -> tuple[str, DinoV2Arch, int | None]:
    """-> (display name, architecture, registers implied by a hub name or None)."""
    if isinstance(arch, DinoV2Arch):
        return "custom", arch, None
    if isinstance(arch, Mapping):
        try:
            return "custom", DinoV2Arch(**arch), None
        except TypeError as e:
            raise TeacherError(f"bad custom DINOv2 arch {dict(arch)!r}: {e}") from None
    name = str(arch)
    regs = None
    if name == "vit_giant2":
        name = "vit_giant"
    m = re.fullmatch(r"(dinov2_vit[sblg]14)(_reg4?)?", name)
    if m and m.group(1) in _HUB_NAMES:
        name, regs = _HUB_NAMES[m.group(1)], (4 if m.group(2) else 0)
    if name not in DINOV2_ARCHS:
        raise TeacherError(f"unknown DINOv2 arch {arch!r}; use one of {sorted(DINOV2_ARCHS)} "
                           f"(or a hub name such as 'dinov2_vits14' / 'dinov2_vits14_reg')")
    return name, DINOV2_ARCHS[name], regs


def dinov2_weights_url(arch: str | DinoV2Arch = "vit_small", num_register_tokens: int = 0) -> str:
    """Official download URL of the pretrained weights, e.g. vit_small ->
    https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth (``_reg4_pretrain.pth`` with
    4 registers)."""
    _, a, regs = _resolve_arch(arch)
    regs = num_register_tokens if regs is None else regs
    if not a.hub:
        raise TeacherError("a custom DINOv2 arch has no official weights URL")
    base = f"dinov2_{a.hub}{a.patch_size}"
    return f"{DINOV2_BASE_URL}/{base}/{base}{f'_reg{regs}' if regs else ''}_pretrain.pth"


def _where_to_get(arch: Any, num_register_tokens: int | None) -> str:
    try:
        if num_register_tokens:
            return dinov2_weights_url(arch, num_register_tokens)
        return f"{dinov2_weights_url(arch, 0)} (with registers: {dinov2_weights_url(arch, 4)})"
    except TeacherError:
        return f"{DINOV2_BASE_URL}/dinov2_vits14/dinov2_vits14_pretrain.pth (or the file of your architecture)"


def read_dinov2_weights(path: str | os.PathLike, *, arch: Any = "vit_small",
                        num_register_tokens: int | None = None) -> tuple[dict[str, Any], str, HubMetadata]:
    """(the state dict in the official layout, the layout the file was in, what its hub folder says: heads / arch).

    ``path``: a weight file (read by :func:`read_state_dict`'s rules), or a Hugging Face / timm hub folder: a
    snapshot (``config.json`` + ``model.safetensors``, sharded ``model.safetensors.index.json`` or
    ``pytorch_model.bin``) or the cache folder ``models--ORG--NAME`` above its snapshots (no network). The layout
    (official, timm, transformers) is detected from the keys and converted (:mod:`jaxkd.tasks.dinov2_layouts`);
    heads come from a transformers ``config.json`` (``num_attention_heads``, also beside a file) or a timm model
    name (``architecture`` in its config.json, or the file name). ``arch`` / ``num_register_tokens`` only choose
    the download URL named by the missing-file error.
    """
    p = os.path.expanduser(os.fspath(path))
    if not os.path.exists(p):
        raise TeacherWeightsNotFound(
            f"DINOv2 weight file not found: {p!r}. jaxkd does not download weights: fetch "
            f"{_where_to_get(arch, num_register_tokens)} (or a Hugging Face snapshot of facebook/dinov2-*) and "
            "pass the local path")
    files, config = layouts.hub_files(Path(p))
    sd: dict[str, Any] = {}
    for f in files:
        sd.update(_read_file(os.fspath(f), arch, num_register_tokens))
    official, layout = layouts.to_official(sd, where=p)
    return official, layout, layouts.hub_metadata(files, config, layout)


def read_state_dict(path: str | os.PathLike, *, arch: Any = "vit_small",
                    num_register_tokens: int | None = None) -> dict[str, Any]:
    """Read DINOv2 weights into a dict key -> array (numpy, or torch tensors for .pth) in the official layout,
    without running code: :func:`read_dinov2_weights` without the metadata.

    ``.safetensors`` -> ``safetensors.numpy.load_file``; ``.npz`` -> ``np.load(allow_pickle=False)``; anything
    else (``.pth``, ``.pt``, ``.bin``) -> ``torch.load(path, map_location='cpu', weights_only=True)`` (torch
    imported here, lazily). A ``{'model_state_dict'|'state_dict': sd}`` wrapper is unwrapped; a timm or
    transformers layout is converted; a hub folder is read as by :func:`read_dinov2_weights`.
    Raises :class:`TeacherWeightsNotFound` (missing file) or :class:`TeacherError` (unreadable / unsafe file, or
    no DINOv2 in any layout).
    """
    return read_dinov2_weights(path, arch=arch, num_register_tokens=num_register_tokens)[0]


def _read_file(p: str, arch: Any, num_register_tokens: int | None) -> dict[str, Any]:
    """One weight file -> dict key -> array, in the layout it holds (see :func:`read_state_dict`)."""
    suffix = os.path.splitext(p)[1].lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise TeacherError(f"reading {p!r} needs the 'safetensors' package: pip install safetensors") from None
        try:
            sd: Any = load_file(p)
        except Exception as e:  # safetensors raises its own SafetensorError (and OSError) on a damaged file
            raise TeacherError(f"cannot read {p!r} as a safetensors file ({describe(e)}); fetch or export it "
                               "again") from None
    elif suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                sd = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise TeacherError(f"cannot read {p!r} as an .npz weight file ({describe(e)}); write it again with "
                               "np.savez") from None
    else:
        if not zipfile.is_zipfile(p):
            raise TeacherError(f"{p!r} is not a PyTorch zip checkpoint (damaged or partial download?): fetch it "
                               f"again from {_where_to_get(arch, num_register_tokens)}, or pass a .safetensors file")
        try:
            import pickle

            import torch
        except ImportError:
            raise TeacherError(f"reading the PyTorch file {p!r} needs torch (the CPU build is enough), or convert "
                               "it to .safetensors") from None
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise TeacherError(f"refusing to load {p!r}: it holds pickled objects other than tensors, which "
                               f"torch.load(weights_only=True) will not run ({first_line(e)})") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise TeacherError(f"cannot read {p!r} as a PyTorch weight file: {first_line(e)}") from None
    if not isinstance(sd, Mapping):
        raise TeacherError(f"{p!r} holds a {type(sd).__name__}, not a state dict (name -> tensor)")
    return dict(unwrap_state_dict(sd))


def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    return tuple(int(s) for s in sd[key].shape) if key in sd else None


def _mismatch(key: str, expected: Any, got: Any, name: str, hint: str = "") -> TeacherError:
    return TeacherError(f"DINOv2 state dict does not match arch {name!r}: {key}: expected {expected}, got {got}"
                        + (f"; {hint}" if hint else ""))


def _check_dinov2_keys(sd: Mapping[str, Any], where: str = "", extra: tuple[str, ...] = ()) -> None:
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", *extra):
        if key not in sd:
            raise TeacherError(f"{where + ' is ' if where else ''}not a DINOv2 state dict: key {key!r} is missing "
                               f"(got keys like {sorted(sd)[:5]}); pass the backbone weights such as "
                               "dinov2_vits14_pretrain.pth")


def _depth(sd: Mapping[str, Any]) -> int:
    return 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)


def _ffn(sd: Mapping[str, Any]) -> tuple[str, int]:
    """('swiglu' | 'mlp', hidden width) of the blocks' FFN."""
    if "blocks.0.mlp.w12.weight" in sd:
        return "swiglu", _shape(sd, "blocks.0.mlp.w12.weight")[0] // 2
    return "mlp", (_shape(sd, "blocks.0.mlp.fc1.weight") or (0,))[0]


def _hub_heads(hub: HubMetadata | None, heads: int, what: str, where: str) -> int:
    """The heads to build with: ``heads`` (what the caller set; 0 = not set) checked against the hub folder's (a
    transformers config.json's num_attention_heads, or the official arch of a timm model name)."""
    said = None if hub is None else hub.num_heads or (DINOV2_ARCHS[hub.arch].num_heads if hub.arch else None)
    if said is None:
        if heads < 1:
            raise TeacherError(f"{where or 'the DINOv2 weights'}: the number of attention heads is not in the weights "
                               "and no config.json or timm model name states it: set it (teacher_num_heads)")
        return heads
    if heads and heads != said:
        raise TeacherError(f"{hub.source} says {said} attention heads, but {what} {heads}: set {said}, or pass "
                           "weights of the architecture you meant")
    return said


def dinov2_arch_from_state_dict(state_dict: Mapping[str, Any], num_heads: int, where: str = "",
                                hub: HubMetadata | None = None) -> DinoV2Arch:
    """The architecture of a DINOv2 state dict of any size ('dinov2_custom'; any layout, see
    :mod:`jaxkd.tasks.dinov2_layouts`): width, depth, FFN, patch size and pretraining image size read from its keys
    and shapes; heads (not in the weights) as given, checked against what its hub folder says (``hub``, from
    :func:`read_dinov2_weights`: a transformers config.json or a timm model name), or taken from there when
    ``num_heads`` is 0. :func:`dinov2_config_from_state_dict` then checks the file against it as against a named
    arch."""
    sd, _ = layouts.to_official(unwrap_state_dict(state_dict), where)
    _check_dinov2_keys(sd, where, extra=("blocks.0.norm1.weight",))
    num_heads = _hub_heads(hub, int(num_heads or 0), "num_heads (ss_distillation.teacher_num_heads) is", where)
    d, p = _shape(sd, "cls_token")[-1], _shape(sd, "patch_embed.proj.weight")[-1]
    grid = int(round(max(_shape(sd, "pos_embed")[1] - 1, 0) ** 0.5))
    ffn, hidden = _ffn(sd)
    ratio = hidden / d if ffn == "mlp" else 4.0
    return DinoV2Arch(d, _depth(sd), int(num_heads), ffn_layer=ffn, mlp_ratio=float(ratio), patch_size=p,
                      img_size=grid * p)


def dinov2_config_from_state_dict(state_dict: Mapping[str, Any], arch: str | DinoV2Arch | Mapping = "vit_small",
                                  num_register_tokens: int | None = None) -> dict[str, Any]:
    """Read the architecture from an official-layout state dict and check it against ``arch``.

    Returns the keyword arguments of :class:`jaxkd.models.dinov2.DinoVisionTransformer` (img_size, patch_size,
    in_chans, embed_dim, depth, num_heads, mlp_ratio, ffn_layer, init_values, num_register_tokens).
    Raises :class:`TeacherError` naming the first key whose shape (or presence) disagrees, with the expected vs
    got shape, and pointing at the matching arch when the width identifies one.
    """
    name, a, hub_regs = _resolve_arch(arch)
    sd, _ = layouts.to_official(unwrap_state_dict(state_dict))
    _check_dinov2_keys(sd)
    d = a.embed_dim
    got_d = _shape(sd, "cls_token")[-1]
    other = [k for k, v in DINOV2_ARCHS.items() if v.embed_dim == got_d]
    hint = f"the file looks like arch {other[0]!r}" if other else ""
    if _shape(sd, "cls_token") != (1, 1, d):
        raise _mismatch("cls_token", (1, 1, d), _shape(sd, "cls_token"), name, hint)
    w = _shape(sd, "patch_embed.proj.weight")
    p = a.patch_size
    if len(w) != 4 or w[0] != d or w[2:] != (p, p):
        raise _mismatch("patch_embed.proj.weight", (d, "C", p, p), w, name)
    depth = _depth(sd)
    if depth != a.depth:
        raise _mismatch("blocks.*", f"{a.depth} blocks (blocks.0 .. blocks.{a.depth - 1})",
                        f"{depth} blocks", name, hint)
    want_regs = hub_regs if num_register_tokens is None else int(num_register_tokens)
    reg = _shape(sd, "register_tokens")
    regs = 0 if reg is None else reg[1]
    if want_regs is not None and regs != want_regs:
        raise _mismatch("register_tokens", (1, want_regs, d) if want_regs else "absent (no registers)",
                        reg if reg is not None else "absent (no registers)", name,
                        "load the matching file (…_reg4_pretrain.pth has 4 registers) or set num_register_tokens")
    if reg is not None and (len(reg) != 3 or reg[0] != 1 or reg[2] != d):
        raise _mismatch("register_tokens", (1, "R", d), reg, name)
    n = _shape(sd, "pos_embed")[1] - 1
    grid = int(round(max(n, 0) ** 0.5))
    if _shape(sd, "pos_embed")[::2] != (1, d) or grid * grid != n or grid == 0:
        raise _mismatch("pos_embed", (1, "1 + M*M", d), _shape(sd, "pos_embed"), name)
    ffn, hidden = _ffn(sd)
    if ffn != a.ffn_layer:
        raise _mismatch("blocks.0.mlp", f"{a.ffn_layer} ({'w12/w3' if a.ffn_layer == 'swiglu' else 'fc1/fc2'})",
                        ffn, name)
    if ffn == "mlp" and hidden != int(d * a.mlp_ratio):
        raise _mismatch("blocks.0.mlp.fc1.weight", (int(d * a.mlp_ratio), d), _shape(sd, "blocks.0.mlp.fc1.weight"),
                        name)
    return dict(img_size=grid * p, patch_size=p, in_chans=w[1], embed_dim=d, depth=depth, num_heads=a.num_heads,
                mlp_ratio=a.mlp_ratio, ffn_layer=ffn, init_values=1.0 if "blocks.0.ls1.gamma" in sd else None,
                num_register_tokens=regs)


def load_dinov2(path_or_state_dict: str | os.PathLike | Mapping[str, Any],
                arch: str | DinoV2Arch | Mapping[str, Any] = "vit_small", img_size: int | Sequence[int] = 224,
                num_register_tokens: int | None = None, *, interpolate_offset: float | None = None,
                interpolate_antialias: bool | None = None, attention: str = "auto", dtype: Any = jnp.float32,
                param_dtype: Any = jnp.float32) -> DinoVisionTransformer:
    """Build the Flax DINOv2 teacher from official weights (a file path or an already-loaded state dict).

    Args:
      path_or_state_dict: ``.pth``/``.pt`` (torch, weights_only), ``.safetensors``, ``.npz`` path, or a mapping
        key -> torch tensor / numpy array with the official keys.
      arch: 'vit_small' | 'vit_base' | 'vit_large' | 'vit_giant' (alias 'vit_giant2'), a hub name
        ('dinov2_vits14', 'dinov2_vitb14_reg', ...: registers implied), or a :class:`DinoV2Arch` / mapping.
      img_size: the input resolution the teacher will see (int or (H, W), multiples of the patch size); sets
        ``teacher.input_size``, ``teacher.grid_size`` (H/P, W/P) and ``teacher.num_patches``. Other sizes still
        work: the positional embedding is interpolated per input shape (static under jit).
      num_register_tokens: None -> read from the file; an int is checked against the file.
      interpolate_offset / interpolate_antialias: None -> the official hub setting (no registers: 0.1 / False;
        registers: 0.0 / True).
      attention, dtype, param_dtype: as :class:`jaxkd.models.vit.DeiT` (compute dtype; outputs stay float32).
    Returns:
      the :class:`DinoVisionTransformer` in eval mode with the weights loaded.
    Raises:
      TeacherWeightsNotFound: missing file (message names the file and the download URL).
      TeacherError: unreadable/unsafe file, or a state dict that does not match ``arch`` (key, expected vs got).
    """
    hub, where = None, ""
    if isinstance(path_or_state_dict, Mapping):
        sd, _ = layouts.to_official(unwrap_state_dict(path_or_state_dict))
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        sd, _, hub = read_dinov2_weights(path_or_state_dict, arch=arch, num_register_tokens=num_register_tokens)
        where = os.fspath(path_or_state_dict)
    else:
        raise TeacherError(f"load_dinov2 needs a weight file path or a state dict, got "
                           f"{type(path_or_state_dict).__name__}")
    cfg = dinov2_config_from_state_dict(sd, arch, num_register_tokens)
    name = _resolve_arch(arch)[0]
    _hub_heads(hub, cfg["num_heads"], "the given arch has" if name == "custom" else f"arch {name!r} has", where)
    size = (img_size, img_size) if isinstance(img_size, (int, np.integer)) else tuple(int(s) for s in img_size)
    p = cfg["patch_size"]
    if len(size) != 2 or min(size) < p or size[0] % p or size[1] % p:
        raise TeacherError(f"img_size {img_size} must be a multiple of the DINOv2 patch size {p} "
                           f"(e.g. {16 * p} = 16 patches); resize the teacher inputs accordingly")
    regs = cfg["num_register_tokens"]
    if interpolate_offset is None:
        interpolate_offset = 0.0 if regs else 0.1
    if interpolate_antialias is None:
        interpolate_antialias = bool(regs)
    model = DinoVisionTransformer(**cfg, interpolate_offset=interpolate_offset,
                                  interpolate_antialias=interpolate_antialias, attention=attention, dtype=dtype,
                                  param_dtype=param_dtype, rngs=nnx.Rngs(0))
    try:
        torch_to_jax(model, sd, strict=True)
    except StateDictMismatch as e:
        raise TeacherError(f"DINOv2 weights do not fit the {cfg['embed_dim']}-d, {cfg['depth']}-block model: {e}") \
            from None
    model.eval()
    model.input_size = size
    model.grid_size = (size[0] // p, size[1] // p)
    model.num_patches = model.grid_size[0] * model.grid_size[1]
    return model
