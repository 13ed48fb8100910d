"""Parity: jaxkd.analyze (attention distance, head statistics, CKA, Hessian-vector products) vs torch_ref.analyze and
torch's double backward, on the same inputs.

Tolerances and conditions:
* attention distance and head statistics (random attention, float64; jax under ``jax.enable_x64``): <= 1e-6 abs
  (measured ~1e-15); the same from the attention maps of a small DeiT whose weights are copied from torch_ref's
  twin, each side computing its own maps in float32 (jaxkd's production path, jaxkd.analyze.features, chunked and
  jitted; torch_ref's in float64 from its float32 maps): <= 1e-6 relative to each statistic's largest value (the
  float32 maps differ by ~1e-7);
* CKA, linear and RBF, biased and unbiased HSIC (float64; jaxkd's in numpy): <= 1e-6 abs (measured ~1e-15), on
  random features and on the pooled layer representations of a DeiT and of a CNN teacher (the MNIST AdaptiveCNN,
  its stage outputs): the same features into both <= 1e-6, each side's own float32 features (themselves <= 1e-5
  relative) <= 1e-5;
* the Hessian-vector product of the mean cross-entropy (float64, torch double, eval mode) of a DeiT and of the MNIST
  AdaptiveCNN: max |Hv_jax − Hv_torch| <= 1e-10 × max |Hv_torch|;
* negative controls, each beyond its tolerance: the special tokens kept (DIST read as a patch), rows not
  renormalised, the entropy of the per-query rows instead of the query average, the CLS map not renormalised; biased
  instead of unbiased HSIC, the RBF bandwidth over all n² distances (zeros included, the original's) and the
  unbiased HSIC without its 1ᵀK̃L̃1 term; the Gauss-Newton product (the HVP missing the second-order term of the
  network; DeiT) and chunk means summed instead of the mean over the n samples (CNN).
Measured figures are printed (run with -s) and recorded as junit properties.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from jaxkd.analyze import attention as jatt
from jaxkd.analyze import cka as jcka
from jaxkd.analyze import features
from jaxkd.analyze.hessian import HessianProblem
from jaxkd.interop import jax_to_torch, torch_to_jax
from jaxkd.interop.state_dict import model_from_torch
from jaxkd.models.cnn import AdaptiveCNN
from jaxkd.models.vit import DeiT
from parity_tests.test_cnn_parity import _randomize_bn
from parity_tests.test_vit_parity import _randomize_
from torch_ref import analyze as tana
from torch_ref import cnn as tcnn
from torch_ref import vit as tvit

TOL = 1e-6
HVP_RTOL = 1e-10


def _attn(seed: int, b: int, h: int, prefix: int, grid, sharp: float = 2.0) -> np.ndarray:
    """Softmax attention (B, H, T, T) float64 with uneven mass on the special tokens."""
    t = prefix + grid[0] * grid[1]
    logits = sharp * np.random.default_rng(seed).standard_normal((b, h, t, t))
    logits[..., :prefix] += 1.0
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _maxdiff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ------------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("prefix,grid", [(1, (8, 8)), (2, (4, 6))])
def test_attention_statistics_match_torch(prefix, grid, record_property):
    a = _attn(0, 3, 4, prefix, grid)
    ref = tana.head_statistics(torch.from_numpy(a), prefix, grid)
    with jax.enable_x64(True):
        got = jatt.head_statistics(jnp.asarray(a), prefix, grid)
        dist = jatt.attention_distance(jnp.asarray(a), prefix, grid)
        # negative controls: plausible mistakes in the way this test is about
        sliced = jnp.asarray(a)[..., prefix:, prefix:]
        d = jnp.asarray(jatt.grid_distances(grid))
        wrong = {
            "rows not renormalised": jnp.mean(jnp.einsum("bhqk,qk->bhq", sliced, d), -1),
            # the last special token read as the first patch (every patch shifted by one, the last one dropped)
            "a special token kept": jatt.attention_distance(jnp.asarray(a)[..., :-1, :-1], prefix - 1, grid),
        }
        p = jatt.patch_attention(jnp.asarray(a), prefix)
        wrong_entropy = jnp.mean(-jnp.sum(jax.scipy.special.xlogy(p, p), -1), -1)
        cls = jnp.asarray(a)[..., 0, prefix:]
        c = jnp.asarray(jatt.grid_coordinates(grid))
        m1, m2 = jnp.einsum("bhn,nc->bhc", cls, c), jnp.einsum("bhn,nc->bhc", cls, c ** 2)
        wrong_dispersion = jnp.sum(m2 - m1 ** 2, -1)
    diffs = {k: _maxdiff(got[k], ref[k].numpy()) for k in ref}
    diffs["attention_distance"] = _maxdiff(dist, ref["mean_distance"].numpy())
    print(f"[prefix {prefix}, grid {grid}] max|diff| " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    for k, v in diffs.items():
        record_property(k, v)
    assert max(diffs.values()) <= TOL, diffs
    for what, value in wrong.items():
        assert _maxdiff(value, ref["mean_distance"].numpy()) > 100 * TOL, what
    assert _maxdiff(wrong_entropy, ref["entropy"].numpy()) > 100 * TOL
    assert _maxdiff(wrong_dispersion, ref["cls_dispersion"].numpy()) > 100 * TOL


def test_uniform_patch_attention_in_torch_ref_is_4_136():
    """torch_ref's own check of the reference value LATER §4.1 quotes (8×8 grid, uniform over the patches)."""
    a = torch.full((1, 1, 65, 65), 1.0 / 65, dtype=torch.float64)
    assert abs(float(tana.attention_distance(a, 1, (8, 8))) - 4.136) < 5e-4


@pytest.fixture(scope="module")
def deit_pair():
    """torch_ref's DeiT (with DIST token: 2 special tokens, 8×8 grid) and jaxkd's with the same weights."""
    cfg = dict(img_size=32, patch_size=4, in_channels=3, mlp_ratio=2.0, use_conv_stem=False, embed_dim=48,
               num_heads=3, depth=3, drop_path_rate=0.0)
    torch.manual_seed(0)
    t = tvit.DeiT(**cfg).eval()
    _randomize_(t, 0)
    j = model_from_torch(lambda: DeiT(**cfg, rngs=nnx.Rngs(1)), t.state_dict())
    j.eval()
    x = np.random.default_rng(2).standard_normal((6, 32, 32, 3)).astype(np.float32)
    return t, j, x


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_vit_attention_maps_through_the_analysis_match_torch(deit_pair, record_property):
    t, j, x = deit_pair
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        maps = t.attention_maps(_nchw(x))
    ref = {k: [] for k in ("mean_distance", "entropy", "cls_dispersion", "cls_self_attention")}
    for m in maps:
        for k, v in tana.head_statistics(m.double(), 2, (8, 8)).items():
            ref[k].append(v.mean(0).numpy())
    got = features.attention_statistics(j, x, chunk_size=4)  # 2 chunks (4 + 2): the production path
    diffs = {k: _maxdiff(got[k], np.stack(ref[k])) / np.max(np.abs(np.stack(ref[k]))) for k in ref}
    print("[DeiT, float32 maps] max|diff| / max|value| " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    for k, v in diffs.items():
        record_property(k, v)
    assert max(diffs.values()) <= TOL, diffs
    # negative control: the DIST token read as the first patch (what a grid guessed from T would do)
    with torch.no_grad():
        wrong = [tana.attention_distance(m.double()[:, :, :-1, :-1], 1, (8, 8)).mean(0).numpy() for m in maps]
    assert _maxdiff(got["mean_distance"], np.stack(wrong)) > 100 * TOL


# ------------------------------------------------------------------------------------------------- CKA
def _features(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 12))
    return [base @ rng.standard_normal((12, d)) + s * rng.standard_normal((n, d))
            for d, s in ((16, 0.5), (24, 1.0), (8, 3.0))]


def _cka_both(xs, ys, kernel, estimator):
    got = jcka.cka_matrix(xs, ys, kernel_name=kernel, estimator=estimator)
    ref = tana.cka_matrix([torch.from_numpy(x) for x in xs], None if ys is None else
                          [torch.from_numpy(y) for y in ys], kernel_name=kernel, estimator=estimator).numpy()
    return got, ref


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cka_matches_torch(kernel, estimator, record_property):
    xs, ys = _features(0), _features(1)[:2]
    got, ref = _cka_both(xs, ys, kernel, estimator)
    got_self, ref_self = _cka_both(xs, None, kernel, estimator)
    d = max(_maxdiff(got, ref), _maxdiff(got_self, ref_self))
    print(f"[{kernel}/{estimator}] CKA max|diff| {d:.1e}; x-y values {np.round(ref.ravel(), 3)}")
    record_property("max_abs_diff", d)
    assert d <= TOL
    assert np.allclose(np.diag(got_self), 1.0, atol=1e-12)
    other = "biased" if estimator == "unbiased" else "unbiased"
    wrong, _ = _cka_both(xs, ys, kernel, other)  # negative control: the other estimator
    assert _maxdiff(wrong, ref) > 100 * TOL


def test_rbf_bandwidth_and_hsic_terms_negative_controls():
    """The RBF median over all n² squared distances (diagonal zeros included, LATER §7.9) and an unbiased HSIC
    without its 1ᵀK̃L̃1 term both move CKA well past the tolerance."""
    x, y = _features(2)[:2]
    k_ok, l_ok = jcka.rbf_kernel(x), jcka.rbf_kernel(y)
    d2x, d2y = jcka._squared_distances(x), jcka._squared_distances(y)
    k_bad, l_bad = np.exp(-d2x / (2 * np.median(d2x))), np.exp(-d2y / (2 * np.median(d2y)))
    good, bad = jcka.cka(k_ok, l_ok), jcka.cka(k_bad, l_bad)
    ref = float(tana.cka(tana.rbf_kernel(torch.from_numpy(x)), tana.rbf_kernel(torch.from_numpy(y))))
    assert abs(good - ref) <= TOL and abs(bad - ref) > 100 * TOL

    def no_cross_term(k, l):
        n = k.shape[0]
        kt, lt = k - torch.diag(torch.diagonal(k)), l - torch.diag(torch.diagonal(l))
        return (torch.trace(kt @ lt) + kt.sum() * lt.sum() / ((n - 1) * (n - 2))) / (n * (n - 3))

    kx, ky = tana.linear_kernel(torch.from_numpy(x)), tana.linear_kernel(torch.from_numpy(y))
    wrong = no_cross_term(kx, ky) / torch.sqrt(no_cross_term(kx, kx) * no_cross_term(ky, ky))
    right = jcka.cka(kx.numpy(), ky.numpy())
    assert abs(right - float(tana.cka(kx, ky))) <= TOL and abs(right - float(wrong)) > 100 * TOL


def test_cka_of_deit_and_cnn_teacher_representations_match_torch(deit_pair, record_property):
    """Student × CNN-teacher CKA end to end: jaxkd's pooled block tokens (patch tokens only) and AdaptiveCNN stage
    outputs (spatial means; LATER §7.18: the original returned zeros for CNN teachers) against torch_ref's, from the
    same weights; each side's own CKA."""
    t, j, x = deit_pair
    torch.manual_seed(0)
    tc = _randomize_bn(tcnn.AdaptiveCNN("mnist", in_channels=3, num_classes=10), seed=7).eval()
    jc = model_from_torch(lambda: AdaptiveCNN(variant="mnist", in_channels=3, num_classes=10, rngs=nnx.Rngs(3)),
                          tc.state_dict())
    jc.eval()
    xs_j = features.layer_representations(j, x, chunk_size=4)
    ys_j = features.layer_representations(jc, x, chunk_size=4)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        blocks = t.forward_heads(_nchw(x), token_layers=tuple(range(3)))["blocks"]
        xs_t = [b[:, 2:].mean(1).double().numpy() for b in blocks]
        ys_t = [m.mean(dim=(2, 3)).double().numpy() for m in tc.feature_maps(_nchw(x))]
    assert [y.shape[1] for y in ys_t] == [32, 32, 64, 128] == [y.shape[1] for y in ys_j]
    assert features.layer_names(jc) == ["stem", "stage1", "stage2", "stage3"]
    feat_diff = max(_maxdiff(a, b) / np.max(np.abs(b)) for a, b in zip(xs_j + ys_j, xs_t + ys_t))
    got = jcka.cka_matrix(xs_j, ys_j, kernel_name="linear")
    same = tana.cka_matrix([torch.from_numpy(a) for a in xs_j], [torch.from_numpy(b) for b in ys_j]).numpy()
    own = tana.cka_matrix([torch.from_numpy(a) for a in xs_t], [torch.from_numpy(b) for b in ys_t]).numpy()
    d_same, d_own = _maxdiff(got, same), _maxdiff(got, own)
    print(f"[DeiT x AdaptiveCNN] pooled features max rel diff {feat_diff:.1e}; CKA max|diff| on the same features "
          f"{d_same:.1e}, on each side's own (float32) features {d_own:.1e}; CKA {np.round(own, 3).tolist()}")
    record_property("features_max_rel_diff", feat_diff)
    record_property("cka_max_abs_diff", d_same)
    record_property("cka_own_features_max_abs_diff", d_own)
    assert feat_diff <= 1e-5 and d_same <= TOL and d_own <= 1e-5
    assert np.all(np.isfinite(got)) and np.max(np.abs(got)) > 0.05  # not the original's zeros


# ------------------------------------------------------------------------------------------------- HVP
def _torch_hvp(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, v: dict) -> dict:
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v[n]).sum() for g, n in zip(grads, names))
    return dict(zip(names, torch.autograd.grad(dot, params)))


def _compare_hvp(name, t, model_factory, x, y, record_property, control: str):
    """(rel diff of jaxkd's HVP, rel diff of a wrong product) against torch's double backward. control
    'gauss-newton': the product Jᵀ·H_loss·J·v, without the network's second-order term; 'chunk means': each chunk's
    loss averaged over its own samples (padding included) and the chunks summed, instead of the mean over the n."""
    from jax.flatten_util import ravel_pytree

    t = t.double().eval()
    sd = {k: v.clone() for k, v in t.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    v = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in t.named_parameters()}
    with torch.backends.mkldnn.flags(enabled=False):
        ref = _torch_hvp(t, _nchw(x), torch.from_numpy(y).long(), v)
    j = model_from_torch(model_factory, sd)
    problem = HessianProblem.from_model(j, x, y, chunk_size=3)  # 2 chunks, the last one padded
    # (the problem holds its own copy of the parameters: j serves from here on to convert vectors between layouts)
    v_flat = ravel_pytree(nnx.state(torch_to_jax(j, {**sd, **v}), nnx.Param))[0]
    hv = problem.hvp(v_flat)
    if control == "gauss-newton":
        graphdef, params, rest = nnx.split(j, nnx.Param, ...)[0], problem.params, problem.rest

        @jax.jit
        def gauss_newton(params, rest, x, y, v):
            logits = lambda p: nnx.merge(graphdef, p, rest)(x)  # noqa: E731
            loss = lambda z: jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1))  # noqa: E731
            z, jv = jax.jvp(logits, (params,), (v,))
            hjv = jax.jvp(jax.grad(loss), (z,), (jv,))[1]
            return ravel_pytree(jax.vjp(logits, params)[1](hjv)[0])[0]

        wrong = gauss_newton(params, rest, jnp.asarray(x), jnp.asarray(y), problem.unflatten(v_flat))
    else:  # (a shallow copy shares the compiled HVP: only the weights, an argument, change)
        chunked = copy.copy(problem)
        chunked.weights = jnp.full_like(problem.weights, 1.0 / problem.chunk_size)
        wrong = chunked.hvp(v_flat)

    def as_torch(flat):
        nnx.update(j, problem.unflatten(flat))
        return jax_to_torch(j)

    scale = max(float(r.abs().max()) for r in ref.values())
    rel = lambda d: max(_maxdiff(d[k], ref[k].numpy()) for k in ref) / scale  # noqa: E731
    ok, bad = rel(as_torch(hv)), rel(as_torch(wrong))
    print(f"[{name}] HVP vs torch double backward: max rel diff {ok:.1e} ({control} control {bad:.1e}); "
          f"max|Hv| {scale:.3g}, {problem.dim} parameters")
    record_property("hvp_max_rel_diff", ok)
    record_property("control_rel_diff", bad)
    return ok, bad


def test_hvp_matches_torch_double_backward_deit(record_property):
    cfg = dict(img_size=8, patch_size=2, in_channels=1, num_classes=5, embed_dim=16, depth=1, num_heads=2,
               mlp_ratio=2.0, use_conv_stem=False, drop_path_rate=0.0, distillation=True, inference_mode="avg")
    x = np.random.default_rng(0).standard_normal((5, 8, 8, 1))
    y = np.array([0, 1, 2, 3, 4])
    with jax.enable_x64(True):
        torch.manual_seed(0)
        t = tvit.DeiT(**cfg)
        _randomize_(t, 1)
        factory = lambda: DeiT(**cfg, dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0))  # noqa: E731
        ok, bad = _compare_hvp("DeiT", t, factory, x, y, record_property, "gauss-newton")
    assert ok <= HVP_RTOL and bad > 1e3 * HVP_RTOL


def test_hvp_matches_torch_double_backward_cnn(record_property):
    """The MNIST AdaptiveCNN (BatchNorm on running statistics, SE, max-pool in its forward-mode spelling)."""
    x = np.random.default_rng(1).standard_normal((5, 8, 8, 1))
    y = np.array([3, 1, 4, 1, 5])
    with jax.enable_x64(True):
        torch.manual_seed(0)
        t = _randomize_bn(tcnn.AdaptiveCNN("mnist", in_channels=1, num_classes=10), seed=3)
        factory = lambda: AdaptiveCNN(variant="mnist", in_channels=1, num_classes=10, dtype=jnp.float64,  # noqa: E731
                                      param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        ok, bad = _compare_hvp("AdaptiveCNN mnist", t, factory, x, y, record_property, "chunk means")
    assert ok <= HVP_RTOL and bad > 1e3 * HVP_RTOL
