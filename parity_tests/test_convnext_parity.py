"""Parity: jaxkd.models.convnext.ConvNeXtV2 (Tiny, 2×2 stem; LATER.md §2.2) vs torch_ref.convnext.ConvNeXtV2 and vs
timm's own ``convnextv2_tiny`` (timm 1.0, the test extra) with its stem replaced as the original did, same weights.

Weights: torch_ref's default initialisation with every 1-D parameter randomised (LayerNorm weights 1 + N(0, 0.2²),
biases N(0, 0.1²), GRN γ and β N(0, 0.3²) -- GRN is the identity at its zero init, so a zero GRN would test
nothing). timm's model gets torch_ref's state dict (the key layouts are the same) and is written to a
``.safetensors`` file with ``safetensors.torch.save_file``; jaxkd reads that file (the teacher loaders' reader) in
timm's layout, and also as the original's ``best_model.pth`` (``model_state_dict`` with the wrapper's ``model.``
prefix).

Tolerances: fp32 CPU logits <= 1e-5 abs (batch 2, 32×32, full Tiny: 27,870,730 parameters at 10 classes), the four
stage maps (16, 8, 4, 2 px) <= 1e-5 relative to each map's largest value; float64 gradients of a CE loss for every
parameter <= 1e-9 relative to the largest gradient, on a shallow model of the same code (depths (1, 1, 2, 1), dims
(16, 32, 64, 128), 32×32: every kind of layer, a quarter of the compile time); ImageNet initialisation
(model.pretrained_path) from a timm file with the 4×4 stem and 1000 classes: every copied tensor bit-exact, the stem
and head left as initialised, logits equal to timm's model built as the original built it (<= 1e-5).
Negative controls (must miss by > 5× the tolerance), on the shallow model after its own fp32 comparison: tanh GELU,
GRN left out, one perturbed weight (logits; gradients too). torch runs without oneDNN. Figures are printed (-s) and
recorded as junit properties.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd.interop import fit, jax_to_torch, torch_state_dict_shapes, torch_to_jax
from jaxkd.interop.pretrained import NOT_COPIED, load_pretrained
from jaxkd.interop.state_dict import model_from_torch as loaded
from jaxkd.interop.state_dict import placeholder_model as shell
from jaxkd.models import convnext as jconvnext
from jaxkd.models.layers import cast_module
from torch_ref import _torchvision
from torch_ref import convnext as tconvnext

FP32_TOL = 1e-5
MAP_REL_TOL = 1e-5
GRAD_REL_TOL = 1e-9
PARAMS = 27_870_730
SMALL = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))

_fwd = nnx.jit(lambda m, x: m(x))


def _timm():
    _torchvision.load()  # timm imports torchvision; this makes that work where its C++ ops cannot load
    try:
        import timm
    except ImportError as e:
        msg = f"timm is missing ({e}): pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return timm


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
            if ".grn." in k:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and k.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _images(seed: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 32, 32, 3)).astype(np.float32)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _jax(sd, **kw) -> jconvnext.ConvNeXtV2:
    model = loaded(lambda: jconvnext.ConvNeXtV2(in_channels=3, num_classes=10, rngs=nnx.Rngs(0), **kw), sd)
    model.eval()
    return model


def _timm_cifar(timm, num_classes: int = 10, **kw) -> torch.nn.Module:
    """timm's convnextv2_tiny with the stem the original put in (LATER.md §2.2): Conv 2×2/s2 + LayerNorm2d(eps 1e-6)."""
    m = timm.create_model("convnextv2_tiny", pretrained=False, num_classes=num_classes, **kw)
    m.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 96, kernel_size=2, stride=2),
                                 timm.layers.LayerNorm2d(96, eps=1e-6))
    return m


@pytest.fixture(scope="module")
def ref():
    """(torch_ref model, its state dict, its logits and NHWC stage maps on _images(1)): one torch forward."""
    torch.manual_seed(0)
    t = _randomise(tconvnext.ConvNeXtV2(3, 10), seed=1)
    with _no_mkldnn():
        maps = t.feature_maps(_nchw(_images(1)))
        logits = t.head(maps[-1]).numpy()
    return t, {k: v.clone() for k, v in t.state_dict().items()}, logits, [m.numpy().transpose(0, 2, 3, 1)
                                                                          for m in maps]


@pytest.fixture(scope="module")
def timm_file(ref, tmp_path_factory):
    """(timm's model holding torch_ref's weights, the .safetensors file timm's state dict was written to)."""
    from safetensors.torch import save_file

    timm = _timm()
    _, sd, _, _ = ref
    m = _timm_cifar(timm)
    m.load_state_dict(sd, strict=True)
    path = tmp_path_factory.mktemp("convnext") / "convnextv2_tiny_cifar.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return m.eval(), path


def test_param_counts_and_keys(ref, timm_file, record_property):
    t, sd, _, _ = ref
    tm, _ = timm_file
    j = _jax(sd)
    n = {"jaxkd": sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(j, nnx.Param))),
         "torch_ref": sum(p.numel() for p in t.parameters()), "timm": sum(p.numel() for p in tm.parameters())}
    assert set(n.values()) == {PARAMS}, n  # LATER.md §2.2: 27,870,730 at 10 classes with the 2×2 stem
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert torch_state_dict_shapes(j) == shapes == {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    assert len(shapes) == 200 and shapes["stages.0.blocks.0.conv_dw.weight"] == (96, 1, 7, 7)
    record_property("params", n["jaxkd"])  # (timm's ImageNet model, 28,635,496: test_pretrained_imagenet_weights)


def test_eval_logits_and_stage_maps_vs_torch_ref(ref, record_property):
    _, sd, lt, maps_t = ref
    x = _images(1)
    j = _jax(sd)
    lj = np.asarray(_fwd(j, jnp.asarray(x)))
    maps_j = [np.asarray(m) for m in nnx.jit(lambda m, x: m.feature_maps(x))(j, jnp.asarray(x))]
    assert [m.shape[1:] for m in maps_j] == [(16, 16, 96), (8, 8, 192), (4, 4, 384), (2, 2, 768)]
    diff = float(np.max(np.abs(lt - lj)))
    map_diff = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(maps_t, maps_j))
    print(f"[convnext] eval logits vs torch_ref max|diff| = {diff:.3e} (max|logit| {np.max(np.abs(lt)):.3f}); "
          f"stage maps max|diff| / max|map| = {map_diff:.3e}")
    record_property("eval_max_abs_diff", diff)
    record_property("stage_maps_max_rel_diff", map_diff)
    assert lj.dtype == np.float32 and np.max(np.abs(lt)) > 0.1
    assert diff <= FP32_TOL and map_diff <= MAP_REL_TOL


def test_timm_file_loads_and_matches_timm(ref, timm_file, tmp_path, record_property):
    """timm's own state dict, read from the .safetensors file timm wrote (the teachers' reader:
    fit.load_torch_checkpoint + fit.jaxkd_keys), gives timm's logits; so does the original's best_model.pth layout
    (``model.`` prefix)."""
    _, _, l_ref, _ = ref
    tm, path = timm_file
    x = _images(1)
    sd = fit.jaxkd_keys("convnext_v2_tiny", fit.load_torch_checkpoint(path))
    j = _jax(sd)
    with _no_mkldnn():
        l_timm = tm(_nchw(x)).numpy()
    lj = np.asarray(_fwd(j, jnp.asarray(x)))
    diff, ref_diff = float(np.max(np.abs(l_timm - lj))), float(np.max(np.abs(l_timm - l_ref)))
    original = tmp_path / "best_model.pth"
    torch.save({"epoch": 3, "model_state_dict": {f"model.{k}": v for k, v in tm.state_dict().items()}}, original)
    sd_orig = fit.jaxkd_keys("convnext_v2_tiny", fit.load_torch_checkpoint(original))
    assert sd_orig.keys() == sd.keys() and all(np.array_equal(sd_orig[k], sd[k]) for k in sd)
    print(f"[convnext] timm's file -> jaxkd vs timm logits max|diff| = {diff:.3e}; torch_ref vs timm {ref_diff:.3e}")
    record_property("timm_max_abs_diff", diff)
    record_property("torch_ref_vs_timm_max_abs_diff", ref_diff)
    assert diff <= FP32_TOL and ref_diff <= FP32_TOL


def test_drop_path_rates_are_timms(ref):
    """Stochastic depth rises linearly over the 18 blocks to drop_path_rate, as in timm's model (and torch_ref)."""
    timm = _timm()
    tm = timm.create_model("convnextv2_tiny", pretrained=False, num_classes=10, drop_path_rate=0.1)
    want = [float(getattr(b.drop_path, "drop_prob", 0.0)) for s in tm.stages for b in s.blocks]
    j = nnx.eval_shape(lambda: jconvnext.ConvNeXtV2(drop_path_rate=0.1, rngs=nnx.Rngs(0)))
    got = [b.drop_path.rate for s in j.stages for b in s.blocks]
    ours = [b.drop_path.p for s in tconvnext.ConvNeXtV2(drop_path_rate=0.1).stages for b in s.blocks]
    assert len(got) == 18 and want[-1] == pytest.approx(0.1)
    np.testing.assert_allclose(got, want, atol=1e-7)
    np.testing.assert_allclose(ours, want, atol=1e-7)


def _ce(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@pytest.fixture(scope="module")
def small():
    """torch_ref's shallow model (SMALL: every kind of layer, a quarter of the compile time), 1-D parameters
    randomised, and its state dict."""
    torch.manual_seed(2)
    t = _randomise(tconvnext.ConvNeXtV2(3, 10, **SMALL), seed=3)
    return t, {k: v.clone() for k, v in t.state_dict().items()}


def _control(name: str, diff: float, record_property) -> None:
    print(f"[convnext small] negative control, {name}: logits max|diff| = {diff:.3e}")
    record_property(name.replace(" ", "_"), diff)
    assert diff > 5 * FP32_TOL, name


def test_negative_controls(small, monkeypatch, record_property):
    """On the shallow model: its fp32 logits match torch_ref's (<= 1e-5); tanh GELU (jax.nn.gelu's default), GRN
    left out, and one depthwise weight + 1e-2 each miss them by > 5× that. Each variant is built after its patch and
    compiled afresh (a shared trace would hide the patch)."""
    t, sd = small
    x = _images(1)
    with _no_mkldnn():
        lt = t(_nchw(x)).numpy()

    def diff(weights=sd) -> float:
        j = _jax(weights, **SMALL)
        return float(np.max(np.abs(lt - np.asarray(nnx.jit(lambda m, v: m(v))(j, jnp.asarray(x))))))

    same = diff()
    print(f"[convnext small] fp32 logits vs torch_ref max|diff| = {same:.3e} (max|logit| {np.max(np.abs(lt)):.3f})")
    record_property("small_eval_max_abs_diff", same)
    assert same <= FP32_TOL and np.max(np.abs(lt)) > 0.1
    bad = dict(sd)
    w = sd["stages.2.blocks.1.conv_dw.weight"].clone()
    w[7, 0, 3, 3] += 1e-2
    bad["stages.2.blocks.1.conv_dw.weight"] = w
    _control("perturbed weight", diff(bad), record_property)
    with monkeypatch.context() as mp:
        mp.setattr(jconvnext, "gelu_exact", lambda v: jax.nn.gelu(v, approximate=True))
        _control("tanh gelu", diff(), record_property)
    with monkeypatch.context() as mp:
        mp.setattr(jconvnext.GlobalResponseNorm, "__call__", lambda self, v: v)
        _control("no grn", diff(), record_property)


@pytest.fixture(scope="module")
def f64_small(small):
    """(state dict, torch loss, torch grads, fn sd -> (jaxkd loss, grads)) of the shallow model in float64."""
    t, sd = small
    x = _images(4).astype(np.float64)
    y = np.array([1, 6])
    tt = copy.deepcopy(t).double().train()
    loss_t = torch.nn.functional.cross_entropy(tt(_nchw(x)), torch.from_numpy(y))
    loss_t.backward()
    gt = {k: p.grad.numpy() for k, p in tt.named_parameters()}
    step = nnx.jit(nnx.value_and_grad(lambda m, xb, yb: _ce(m(xb), yb)))

    def jax_grads(weights):
        with jax.enable_x64(True):
            j = _jax(weights, **SMALL)
            cast_module(j, jnp.float64)
            torch_to_jax(j, weights)
            j.train()
            loss_j, grads = step(j, jnp.asarray(x), jnp.asarray(y))
            holder = nnx.clone(j)
            nnx.update(holder, grads)
            return float(loss_j), jax_to_torch(holder)

    return sd, loss_t.item(), gt, jax_grads


def _grad_diff(gt, gj):
    scale = max(float(np.max(np.abs(g))) for g in gt.values())
    worst = max(gt, key=lambda k: np.max(np.abs(gt[k] - gj[k])))
    return float(np.max(np.abs(gt[worst] - gj[worst]))), scale, worst


def test_float64_gradients_every_parameter(f64_small, record_property):
    sd, loss_t, gt, jax_grads = f64_small
    loss_j, gj = jax_grads(sd)
    assert abs(loss_j - loss_t) <= 1e-12
    diff, scale, worst = _grad_diff(gt, gj)
    print(f"[convnext f64] {len(gt)} grads: max|diff| = {diff:.3e} at {worst}; max|grad| = {scale:.3e}; "
          f"rel = {diff / scale:.3e}")
    record_property("grad_rel_diff", diff / scale)
    assert all(gj[k].dtype == np.float64 for k in gt) and any(".grn." in k for k in gt)
    assert diff <= GRAD_REL_TOL * scale


def test_float64_gradients_negative_control(f64_small, record_property):
    sd, _, gt, jax_grads = f64_small
    bad = dict(sd)
    w = sd["stages.1.blocks.0.mlp.fc1.weight"].clone()
    w[3, 5] += 1e-3
    bad["stages.1.blocks.0.mlp.fc1.weight"] = w
    _, gj = jax_grads(bad)
    diff, scale, _ = _grad_diff(gt, gj)
    print(f"[convnext f64] perturbed weight: grads rel diff = {diff / scale:.3e}")
    record_property("perturbed_grad_rel_diff", diff / scale)
    assert diff > 1000 * GRAD_REL_TOL * scale


def test_initialisers_are_timms(monkeypatch):
    """timm's _init_weights: every conv and Linear trunc_normal_(std=0.02) (bounds ±2 absolute) with bias 0; the
    model hands that initialiser to all of them (read from an abstract build: no eager initialisation)."""
    w = np.asarray(jconvnext.timm_trunc_normal(0.02)(jax.random.key(0), (256, 1024)))
    assert abs(w.std() / 0.02 - 1) < 0.01 and np.max(np.abs(w)) < 0.2  # practically untruncated at ±100 σ
    shapes = []
    real = jconvnext.timm_trunc_normal

    def recording(std=0.02):
        init = real(std)

        def wrapped(key, shape, dtype=jnp.float32):
            shapes.append((std, tuple(shape)))
            return init(key, shape, dtype)
        return wrapped

    monkeypatch.setattr(jconvnext, "timm_trunc_normal", recording)
    nnx.eval_shape(lambda: jconvnext.ConvNeXtV2(rngs=nnx.Rngs(0)))
    assert len(shapes) == 1 + 3 + 18 * 3 + 1 and {s for s, _ in shapes} == {0.02}  # stem, downsamples, blocks, fc
    assert (0.02, (2, 2, 3, 96)) in shapes and (0.02, (768, 10)) in shapes


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """timm's ImageNet-layout convnextv2_tiny (4×4 stem, 1000 classes), 1-D parameters randomised, as timm's hub
    file would be: (its state dict, the .safetensors path)."""
    from safetensors.torch import save_file

    timm = _timm()
    torch.manual_seed(4)
    m = _randomise(timm.create_model("convnextv2_tiny", pretrained=False), seed=5)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    path = tmp_path_factory.mktemp("imagenet") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return sd, path


def test_pretrained_imagenet_weights(imagenet_file, record_property):
    """model.pretrained_path: every ImageNet tensor but the stem and the classifier copied bit for bit; those keep
    the model's initialisation; and the model equals timm's built as the original built it (ImageNet weights into
    a 10-class timm model, classifier dropped, stem replaced) when that one gets jaxkd's new stem and head."""
    sd, path = imagenet_file
    assert sum(v.numel() for v in sd.values()) == 28_635_496  # LATER.md §2.2: timm's ImageNet convnextv2_tiny
    j = shell(lambda: jconvnext.ConvNeXtV2(rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(6)
    own = {k: rng.standard_normal(s).astype(np.float32) * 0.02 for k, s in torch_state_dict_shapes(j).items()
           if k in NOT_COPIED}  # stands for the model's own initialisation of the stem and head
    torch_to_jax(j, own, strict=False)
    note = load_pretrained(j, path)
    after = jax_to_torch(j)
    copied = [k for k in after if k not in NOT_COPIED]
    assert len(copied) == 194 and all(np.array_equal(after[k], sd[k].numpy()) for k in copied)
    assert all(np.array_equal(after[k], own[k]) for k in NOT_COPIED)
    assert "194 ImageNet tensors copied" in note
    timm = _timm()
    tm = timm.create_model("convnextv2_tiny", pretrained=False, num_classes=10)
    missing, unexpected = tm.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.fc")},
                                             strict=False)
    assert sorted(missing) == ["head.fc.bias", "head.fc.weight"] and not unexpected
    tm.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 96, kernel_size=2, stride=2),
                                  timm.layers.LayerNorm2d(96, eps=1e-6))
    tm.load_state_dict({k: torch.from_numpy(after[k]) for k in NOT_COPIED}, strict=False)
    x = _images(7)
    with _no_mkldnn():
        lt = tm.eval()(_nchw(x)).numpy()
    j.eval()
    diff = float(np.max(np.abs(lt - np.asarray(_fwd(j, jnp.asarray(x))))))
    print(f"[convnext] ImageNet init: logits vs timm built as the original max|diff| = {diff:.3e}")
    record_property("pretrained_max_abs_diff", diff)
    assert diff <= FP32_TOL


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    from safetensors.numpy import save_file

    from jaxkd.config import ConfigError

    j = shell(lambda: jconvnext.ConvNeXtV2(rngs=nnx.Rngs(0)))
    resnet = tmp_path / "resnet50.safetensors"
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "layer1.0.conv1.weight": np.zeros(
        (64, 64, 1, 1), np.float32), "layer1.0.conv3.weight": np.zeros((256, 64, 1, 1), np.float32),
        "fc.weight": np.zeros((1000, 2048), np.float32)}, str(resnet))
    with pytest.raises(ConfigError, match="is not timm's convnextv2_tiny weights.*it holds a ResNet other than"):
        load_pretrained(j, resnet)
    v1 = tmp_path / "convnext_tiny.safetensors"  # ConvNeXt V1: layer scale (gamma), no GRN
    save_file({"stem.0.weight": np.zeros((96, 3, 4, 4), np.float32),
               "stages.0.blocks.0.conv_dw.weight": np.zeros((96, 1, 7, 7), np.float32),
               "stages.0.blocks.0.gamma": np.zeros((96,), np.float32)}, str(v1))
    with pytest.raises(ConfigError, match=r"convnext \(V1, no GRN\).*missing"):
        load_pretrained(j, v1)
