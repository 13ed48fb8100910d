"""Parity: DINOv2 weights written by timm's and Hugging Face transformers' own model classes load into jaxkd's
DINOv2 (jaxkd.tasks.teachers.load_dinov2, layout detected from the keys, jaxkd.tasks.dinov2_layouts) and give the
tokens of the official-layout model and of the library's own model.

Tiny models built with the libraries' own classes (D 32, depth 2, 2 heads, patch 14, 4×4 pretraining grid = 56
px), every 1-D parameter and token randomised (LayerScale U(0.5, 1.5), LN weights N(1, 0.2²), biases, tokens and
positions N(0, 0.1²)):

- timm: ``timm.create_model(name, pretrained=False, img_size=56, embed_dim=32, depth=2, num_heads=2)`` for
  ``vit_small_patch14_dinov2`` (MLP), ``vit_small_patch14_reg4_dinov2`` (4 registers, no_embed_class) and
  ``vit_giant_patch14_dinov2`` (packed SwiGLU; mlp_ratio 5.5 gives the official SwiGLU width 88), state dicts
  written with ``safetensors.torch.save_file``;
- transformers: ``Dinov2Model`` (MLP, written by ``save_pretrained``: the hub's config.json + model.safetensors
  folder, heads read from config.json), ``Dinov2Model(use_swiglu_ffn=True)`` and ``Dinov2WithRegistersModel``
  (4 registers), the last two as ``state_dict()`` files (transformers 5's in-memory names: q_proj, gate_proj...).

Each file is read through the detection (no layout named), then compared, fp32, max abs diff <= 1e-5, at the
native size: (a) ``get_intermediate_layers`` (blocks [0, 1], norm True and False, with the class token) against
torch_ref.dinov2 (the official architecture) loaded with the converted state dict; (b) against the library's own
model: timm's ``get_intermediate_layers(..., return_prefix_tokens=True)``, transformers' ``hidden_states`` (and
``layernorm`` over them, ``last_hidden_state``). Negative controls (must exceed 1e-5): q and k swapped in the
transformers table, LayerScale dropped, the SwiGLU halves swapped. torch runs without oneDNN. Measured figures are
printed (-s) and recorded as junit properties.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.tasks import dinov2_layouts
from jaxkd.tasks.teachers import dinov2_arch_from_state_dict, load_dinov2, read_dinov2_weights
from torch_ref import _torchvision
from torch_ref import dinov2 as tdino

TOL = 1e-5
D, DEPTH, HEADS, IMG = 32, 2, 2, 56  # the widths of test_dinov2_parity.py's TINY (its compilations serve here)
ARCH = dict(embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=14, img_size=IMG)
LAYERS = (0, 1)


def _lib(name: str):
    """timm / transformers (the test extra); missing: a failure in CI, a skip elsewhere."""
    _torchvision.load()  # both import torchvision; this makes its import work where its C++ ops cannot load
    try:
        return __import__(name)
    except ImportError as e:
        msg = f"{name} is missing ({e}): pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@contextlib.contextmanager
def _no_mkldnn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
            yield


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith(("gamma", "lambda1")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif "norm" in k and k.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 or "token" in k or "pos" in k or "position" in k:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


# ------------------------------------------------------------------ the models, written by their own libraries
TIMM = {  # case: (timm model name, extra kwargs, registers)
    "timm_mlp": ("vit_small_patch14_dinov2", {}, 0),
    "timm_reg4": ("vit_small_patch14_reg4_dinov2", {}, 4),
    "timm_swiglu": ("vit_giant_patch14_dinov2", {"mlp_ratio": 5.5}, 0),
}
HF = {  # case: (registers model?, config kwargs, written by save_pretrained (else state_dict()))
    "hf_mlp": (False, {}, True),
    "hf_swiglu": (False, {"use_swiglu_ffn": True}, False),
    "hf_reg4": (True, {"num_register_tokens": 4}, False),
}
CASES = list(TIMM) + list(HF)


def _timm_model(case: str):
    timm = _lib("timm")
    name, kw, _ = TIMM[case]
    torch.manual_seed(len(case))  # the weight matrices: the libraries' own initialisation, seeded
    m = timm.create_model(name, pretrained=False, img_size=IMG, embed_dim=D, depth=DEPTH, num_heads=HEADS, **kw)
    return _randomise(m, seed=len(case))


def _hf_model(case: str):
    transformers = _lib("transformers")
    regs, kw, _ = HF[case]
    torch.manual_seed(len(case))
    common = dict(hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=HEADS, image_size=IMG, patch_size=14)
    if regs:
        m = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**common, **kw))
    else:
        m = transformers.Dinov2Model(transformers.Dinov2Config(**common, **kw))
    return _randomise(m, seed=len(case))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """case -> (the library's model, the path it was written to)."""
    from safetensors.torch import save_file

    out = {}
    root = tmp_path_factory.mktemp("hub")
    for case in CASES:
        model = _timm_model(case) if case in TIMM else _hf_model(case)
        if case in HF and HF[case][2]:
            path = root / case  # the hub's folder: config.json + model.safetensors
            model.save_pretrained(path)
        else:
            path = root / f"{case}.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        out[case] = (model, path)
    return out


@pytest.fixture(scope="module")
def loaded(written):
    """case -> (library model, jaxkd model, official state dict, layout, hub metadata)."""
    out = {}
    for case, (model, path) in written.items():
        sd, layout, hub = read_dinov2_weights(path)
        arch = dinov2_arch_from_state_dict(sd, 0 if hub.num_heads else HEADS, where=str(path), hub=hub)
        out[case] = (model, load_dinov2(path, arch=arch, img_size=IMG), sd, layout, hub)
    return out


def _images(seed=0, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, IMG, IMG, 3)).astype(np.float32)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@nnx.jit
def _both(model, x):
    """get_intermediate_layers with norm True and False: one compilation per model structure (the timm and the
    transformers model of a case convert to the same structure)."""
    return tuple(model.get_intermediate_layers(x, LAYERS, norm=n, return_class_token=True) for n in (True, False))


def _ours(model, x, norm):
    return _both(model, x)[0 if norm else 1]


def _diff(ours, ref) -> float:
    """max |a - b| over (patch tokens, class token) pairs of each layer."""
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for o, r in zip(ours, ref) for a, b in zip(o, r))


def _official(sd, regs):
    t = tdino.DinoVisionTransformer(**ARCH, ffn_layer="swiglu" if "blocks.0.mlp.w12.weight" in sd else "mlp",
                                    num_register_tokens=regs, interpolate_offset=0.0 if regs else 0.1,
                                    interpolate_antialias=bool(regs)).eval()
    t.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in sd.items()})
    return t


def _library_tokens(case, model, x, norm):
    """[(patch tokens, class token)] of blocks LAYERS from the library's own model."""
    with _no_mkldnn():
        if case in TIMM:
            out = model.get_intermediate_layers(_nchw(x), list(LAYERS), return_prefix_tokens=True, norm=norm)
            return [(p.numpy(), pre[:, 0].numpy()) for p, pre in out]
        regs = HF[case][1].get("num_register_tokens", 0)
        res = model(pixel_values=_nchw(x), output_hidden_states=True)
        hs = [res.hidden_states[i + 1] for i in LAYERS]
        if norm:
            hs = [model.layernorm(h) for h in hs]
            assert torch.equal(hs[-1], res.last_hidden_state)  # the last block: the model's own output
        return [(h[:, 1 + regs:].numpy(), h[:, 0].numpy()) for h in hs]


@pytest.mark.parametrize("case", CASES)
def test_hub_layout_tokens_match(loaded, case, record_property):
    model, ours, sd, layout, hub = loaded[case]
    regs = 4 if "reg4" in case else 0
    assert layout == ("timm" if case in TIMM else "transformers")
    assert ours.num_register_tokens == regs and ours.num_heads == HEADS and ours.depth == DEPTH
    assert (hub.num_heads == HEADS) == (case == "hf_mlp")  # heads from the snapshot's config.json
    official = _official(sd, regs)
    x = _images()
    worst = {}
    for norm in (True, False):
        got = _ours(ours, x, norm)
        with _no_mkldnn():
            ref = official.get_intermediate_layers(_nchw(x), list(LAYERS), norm=norm, return_class_token=True)
        worst[f"official_norm{int(norm)}"] = _diff(got, [(p.numpy(), c.numpy()) for p, c in ref])
        worst[f"library_norm{int(norm)}"] = _diff(got, _library_tokens(case, model, x, norm))
    print(f"[dinov2 hub {case}] " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    for k, v in worst.items():
        record_property(k, v)
    assert max(worst.values()) <= TOL, worst


# ------------------------------------------------------------------ negative controls
def _control(label: str, d: float):
    print(f"[dinov2 hub negative control] {label}: max|diff|={d:.2e}")
    assert d > TOL, (label, d)


def test_negative_control_q_k_swapped(written, monkeypatch):
    model, path = written["hf_mlp"]
    table = dict(dinov2_layouts.HF_BLOCK)
    table["attn.qkv"] = tuple((k, q, v) for q, k, v in table["attn.qkv"])
    monkeypatch.setattr(dinov2_layouts, "HF_BLOCK", table)
    wrong = load_dinov2(path, arch=ARCH, img_size=IMG)
    x = _images(1)
    _control("transformers q and k swapped", _diff(_ours(wrong, x, True), _library_tokens("hf_mlp", model, x, True)))


@pytest.mark.parametrize("case", ["hf_reg4", "timm_mlp"])
def test_negative_control_layerscale_dropped(loaded, case):
    model, _, sd, _, _ = loaded[case]
    wrong = load_dinov2({k: v for k, v in sd.items() if ".ls" not in k}, arch=ARCH, img_size=IMG)
    x = _images(2)
    _control(f"{case} LayerScale dropped", _diff(_ours(wrong, x, False), _library_tokens(case, model, x, False)))


def test_negative_control_swiglu_halves_swapped(loaded):
    model, _, sd, _, _ = loaded["timm_swiglu"]
    wrong = dict(sd)
    for k in [k for k in sd if ".mlp.w12." in k]:
        w = np.asarray(sd[k])
        wrong[k] = np.concatenate([w[w.shape[0] // 2:], w[: w.shape[0] // 2]])
    t = load_dinov2(wrong, arch=dict(ARCH, ffn_layer="swiglu"), img_size=IMG)
    x = _images(3)
    _control("timm SwiGLU halves swapped", _diff(_ours(t, x, True), _library_tokens("timm_swiglu", model, x, True)))
