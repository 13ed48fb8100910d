"""jaxkd.analyze against closed forms and exact computations: the uniform-attention distance on an 8×8 grid
(4.136 patches, LATER.md §4.1), the Hessian trace and top eigenvalues of a model small enough for its full Hessian
(jax.hessian, jnp.linalg.eigvalsh), what CKA's unbiased estimator is for, and the models' analysis hooks (stage
outputs of the CNNs, the forward-mode spellings of the custom-VJP layers). Each check has a negative control that
fails when jaxkd is wrong in the way the check is about. The torch_ref parity of the same formulas is
parity_tests/test_analyze_parity.py; the command line, tests/test_analyze_cli.py.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd.analyze import attention as att
from jaxkd.analyze import cka as ck
from jaxkd.analyze import features
from jaxkd.analyze import hessian as hs
from jaxkd.models.attention import Linear
from jaxkd.models.cnn import AdaptiveCNN
from jaxkd.models.convnext import ConvNeXtV2
from jaxkd.models.layers import MaxPool2d
from jaxkd.models.resnet import ResNet18CIFAR
from jaxkd.models.vit import DeiT

UNIFORM_8x8 = 4.136  # LATER.md §4.1, to the 3 decimals it gives


# ------------------------------------------------------------------------------------------------- attention
def _brute_force_uniform_mad(g: int) -> float:
    """The mean over all (query, key) patch pairs of their Euclidean grid distance, by enumeration."""
    cells = list(itertools.product(range(g), range(g)))
    return sum(math.dist(q, k) for q in cells for k in cells) / len(cells) ** 2


def _closed_form_uniform_mad(g: int) -> float:
    """E√(Δr² + Δc²) with Δr, Δc independent, P(Δ = 0) = 1/g, P(Δ = d) = 2(g − d)/g² for d = 1..g−1."""
    p = [1 / g] + [2 * (g - d) / g ** 2 for d in range(1, g)]
    return sum(p[a] * p[b] * math.hypot(a, b) for a in range(g) for b in range(g))


def test_uniform_attention_on_an_8x8_grid_is_4_136_patches():
    brute, closed = _brute_force_uniform_mad(8), _closed_form_uniform_mad(8)
    assert abs(brute - closed) < 1e-12 and round(brute, 3) == UNIFORM_8x8
    # a DeiT's layout: CLS and DIST first, taking a random share of each row; uniform over the 64 patches
    rng = np.random.default_rng(0)
    special = rng.uniform(0.05, 0.45, (2, 3, 66, 2))
    attn = np.concatenate([special, np.repeat((1 - special.sum(-1, keepdims=True)) / 64, 64, -1)], -1)
    assert np.allclose(attn.sum(-1), 1)
    with jax.enable_x64(True):
        mad = np.asarray(att.attention_distance(jnp.asarray(attn), 2, (8, 8)))
        # negative controls: rows not renormalised over the patches; the DIST token read as a patch
        sliced = jnp.asarray(attn)[..., 2:, 2:]
        no_renorm = np.asarray(jnp.mean(jnp.einsum("bhqk,qk->bhq", sliced, jnp.asarray(att.grid_distances((8, 8)))),
                                        -1))
        dist_kept = np.asarray(att.attention_distance(jnp.asarray(attn)[..., :-1, :-1], 1, (8, 8)))
    assert mad.shape == (2, 3) and np.max(np.abs(mad - brute)) < 1e-12
    assert np.min(np.abs(no_renorm - brute)) > 0.1 and np.min(np.abs(dist_kept - brute)) > 1e-3


def test_layout_comes_from_the_model_not_a_guess():
    """LATER §7.15: ViT-S/14 at 224 px has 1 + 16·16 = 257 tokens; the original guessed g = 8 from T. The grid given
    must fit T exactly, or the analysis refuses."""
    assert att.check_layout(257, 1, (16, 16)) == (16, 16)
    with pytest.raises(ValueError, match="does not fit"):
        att.check_layout(257, 1, (8, 8))
    model = nnx.eval_shape(lambda: DeiT(img_size=(8, 12), patch_size=2, in_channels=1, embed_dim=8, depth=1,
                                        num_heads=2, rngs=nnx.Rngs(0)))
    assert tuple(model.grid_size) == (4, 6) and model.num_prefix_tokens == 2 and features.is_vit(model)


def test_head_summary_counts_collapsed_heads():
    per_head = {"mean_distance": np.array([[1.0, 2.0], [1.4, 3.0]]), "cls_self_attention": np.array([[0.95, 0.1],
                                                                                                        [0.2, 0.3]])}
    s = att.summarize_heads(per_head)
    assert s["collapsed_heads"] == 2 and s["collapsed_heads_ratio"] == 0.5 and s["cls_collapse_ratio"] == 0.25
    assert s["layer_distances"] == [1.5, 2.2] and s["mean_distance"] == pytest.approx(1.85)


# ------------------------------------------------------------------------------------------------- CKA
def test_unbiased_cka_of_independent_features_is_near_zero_the_biased_is_not():
    """What the unbiased HSIC is for: with n = 30 and d = 100 the biased CKA of independent random features is far
    from 0 (a negative control that shows the test would catch the biased estimator), the unbiased one is near 0."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 100)), rng.standard_normal((30, 100))
    kx, ky = ck.linear_kernel(x), ck.linear_kernel(y)
    unbiased, biased = ck.cka(kx, ky, "unbiased"), ck.cka(kx, ky, "biased")
    assert abs(unbiased) < 0.05 and biased > 0.5


def test_linear_cka_invariances_and_self_similarity():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 6))
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    y = x @ rng.standard_normal((6, 9)) + 0.5 * rng.standard_normal((40, 9))
    m = ck.cka_matrix([x, 3.0 * x @ q], [y])
    s = ck.cka_matrix([x, y], kernel_name="rbf")
    assert abs(m[0, 0] - m[1, 0]) < 1e-12 and 0.2 < m[0, 0] < 1  # orthogonal transform and scale leave it
    assert np.allclose(np.diag(s), 1, atol=1e-12) and abs(s[0, 1] - s[1, 0]) < 1e-12


# ------------------------------------------------------------------------------------------------- Hessian
@pytest.fixture(scope="module")
def small_problem():
    """A 1-block DeiT (238 parameters) at its initialisation on 32 images, float64, and its exact Hessian."""
    with jax.enable_x64(True):
        model = DeiT(img_size=4, patch_size=2, in_channels=1, num_classes=3, embed_dim=4, depth=1, num_heads=2,
                     mlp_ratio=1.0, distillation=False, inference_mode="cls", drop_path_rate=0.0, dtype=jnp.float64,
                     param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        rng = np.random.default_rng(0)
        y = np.arange(32) % 3
        x = rng.standard_normal((32, 4, 4, 1)) + 0.7 * y[:, None, None, None]
        problem = hs.HessianProblem.from_model(model, x, y, chunk_size=12)  # 3 chunks, the last one padded
        # the exact Hessian of the loss over all 32 images at once (no chunks): jax.hessian = jacfwd(jacrev)
        loss = lambda f: problem.loss(problem.unflatten(f), problem.rest, jnp.asarray(x), jnp.asarray(y),  # noqa: E731
                                      jnp.full((32,), 1 / 32))
        exact = np.asarray(jax.jit(jax.hessian(loss))(problem.flat_params()))
    return problem, exact


def test_hvp_is_the_exact_hessian_times_v(small_problem):
    problem, exact = small_problem
    assert problem.dim == exact.shape[0] == 238 and np.allclose(exact, exact.T, atol=1e-12)
    with jax.enable_x64(True):
        v = np.random.default_rng(3).standard_normal(problem.dim)
        hv = np.asarray(problem.hvp(v))
    assert np.max(np.abs(hv - exact @ v)) <= 1e-10 * np.max(np.abs(exact @ v))


def test_hutchinson_trace_within_three_standard_errors_of_the_exact_trace(small_problem):
    problem, exact = small_problem
    true = float(np.trace(exact))
    with jax.enable_x64(True):
        est = hs.hutchinson_trace(problem.hvp, problem.dim, dtype=jnp.float64, seed=0, max_probes=400, rtol=0.1)
        # negative control: Gaussian probes scaled by √2 (E[vvᵀ] = 2I): twice the trace
        wrong = hs.hutchinson_trace(problem.hvp, problem.dim, dtype=jnp.float64, seed=0, max_probes=400, rtol=0.1,
                                    probe=lambda k, d, t: math.sqrt(2) * hs.gaussian_probe(k, d, t))
    print(f"trace exact {true:.4f}; Hutchinson {est['trace']:.4f} ± {est['stderr']:.4f} ({est['probes']} probes, "
          f"converged {est['converged']}); wrong scaling {wrong['trace']:.4f} ± {wrong['stderr']:.4f}")
    assert est["converged"] and est["probes"] >= 10 and est["stderr"] > 0
    assert est["stderr"] <= 0.1 * abs(est["trace"])  # the stopping rule held
    assert abs(est["trace"] - true) <= 3 * est["stderr"]
    assert abs(wrong["trace"] - true) > 3 * wrong["stderr"]
    assert len(est["samples"]) == est["probes"] and est["probe"] == "rademacher"
    assert set(np.unique(np.asarray(hs.rademacher_probe(jax.random.key(0), 50, jnp.float32)))) == {-1.0, 1.0}


def test_top_eigenvalues_match_eigvalsh(small_problem):
    problem, exact = small_problem
    ref = np.linalg.eigvalsh(exact)[::-1][:5]
    with jax.enable_x64(True):
        got = hs.top_eigenvalues(problem.hvp, problem.dim, 5, dtype=jnp.float64, tol=0)
        # negative control: power iteration without deflation finds the top eigenvalue again and again
        v, power = np.random.default_rng(0).standard_normal(problem.dim), []
        for _ in range(5):
            for _ in range(200):
                w = np.asarray(problem.hvp(v))
                v = w / np.linalg.norm(w)
            power.append(float(v @ np.asarray(problem.hvp(v))))
    rel = np.abs(np.asarray(got["eigenvalues"]) - ref) / np.abs(ref)
    print(f"top eigenvalues {np.round(got['eigenvalues'], 6)} vs eigvalsh {np.round(ref, 6)}: max rel {rel.max():.1e}"
          f" ({got['hvps']} HVPs)")
    assert got["converged"] and rel.max() <= 1e-6 and max(got["residuals"]) < 1e-6
    assert np.max(np.abs(np.asarray(power) - ref) / np.abs(ref)) > 1e-3


# ------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("variant,maps", [("mnist", [(4, 4, 32), (4, 4, 32), (2, 2, 64), (1, 1, 128)]),
                                          ("cifar", [(32, 32, 64), (32, 32, 64), (16, 16, 128), (8, 8, 256),
                                                     (4, 4, 512)])])
def test_adaptive_cnn_stage_outputs(variant, maps):
    size, c = (8, 1) if variant == "mnist" else (32, 3)
    model = nnx.eval_shape(lambda: AdaptiveCNN(variant=variant, in_channels=c, num_classes=10, rngs=nnx.Rngs(0)))
    model.eval()
    x = jax.ShapeDtypeStruct((2, size, size, c), jnp.float32)
    out = nnx.eval_shape(lambda m, a: m.feature_maps(a), model, x)
    assert [tuple(o.shape[1:]) for o in out] == maps
    assert len(features.layer_names(model)) == len(maps)


def test_every_models_layer_names_fit_its_representations():
    cases = [
        (lambda: DeiT(img_size=8, patch_size=2, in_channels=1, embed_dim=8, depth=3, num_heads=2, rngs=nnx.Rngs(0)),
         (8, 8, 1)),
        (lambda: ResNet18CIFAR(in_channels=3, num_classes=10, rngs=nnx.Rngs(0)), (32, 32, 3)),
        (lambda: ConvNeXtV2(in_channels=3, num_classes=10, depths=(1, 1, 1), dims=(8, 16, 24), rngs=nnx.Rngs(0)),
         (16, 16, 3)),
    ]
    for ctor, shape in cases:
        model = nnx.eval_shape(ctor)
        model.eval()
        feats = nnx.eval_shape(lambda m, a: features.pooled_layer_features(m, a), model,
                               jax.ShapeDtypeStruct((2, *shape), jnp.float32))
        assert len(feats) == len(features.layer_names(model)) and all(f.shape[0] == 2 for f in feats)


def test_forward_ad_spellings_compute_the_same_and_allow_forward_mode():
    """Linear's and MaxPool2d's forward_ad (what HessianProblem sets): the same values as the custom-VJP spellings
    training uses, and jax.jvp goes through them; without it, it does not (the negative control)."""
    lin = Linear(5, 3, rngs=nnx.Rngs(0))
    pool = MaxPool2d(2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 4, 5)), jnp.float32)
    base = (lin(x), pool(x))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda a: lin(a), (x,), (x,))
    lin.forward_ad = pool.forward_ad = True
    assert np.array_equal(lin(x), base[0]) and np.array_equal(pool(x), base[1])
    _, t = jax.jvp(lambda a: pool(lin(a)), (x,), (jnp.ones_like(x),))
    assert t.shape == (2, 2, 2, 3)
