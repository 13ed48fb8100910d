"""Properties of jaxkd.losses (no torch): non-negativity, exact zeros, α-schedule endpoints, resize invariants,
finiteness over the parity ranges, jit-compatibility and clear errors.

Shapes are fixed per test (B ∈ {1, 6} for logits, B = 3 for tokens, K = 10, N = 16) and the functions are jitted once
per configuration, so
hypothesis examples reuse compiled code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxkd.losses as jl

K, N, D, DT = 10, 16, 12, 20  # the parity suite's shapes, so one pytest session reuses compiled ops
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
batches = st.sampled_from([1, 6])
taus = st.sampled_from([1.0, 3.0, 4.0])


def _logits(seed, b, extreme):
    rng = np.random.default_rng(seed)
    if extreme:
        x = rng.uniform(-50.0, 50.0, (b, K))
        x[:, 0], x[:, -1] = 50.0, -50.0
    else:
        x = 3.0 * rng.standard_normal((b, K))
    return jnp.asarray(x, jnp.float32)


def _tokens(seed, b, d=D, n=N, offset=0.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((b, n, d)) + offset, jnp.float32)


def _finite(*trees):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for t in trees for leaf in jax.tree.leaves(t))


KD_VARIANTS = (("hard", "batch"), ("soft", "batch"), ("soft", "element"))


@jax.jit
def _kd_all(c, d, t, y, alpha, tau):
    """Value, components and gradients of every distillation_loss variant (one compile per shape)."""
    out = []
    for kind, normalize in KD_VARIANTS:
        def f(c, d, t, kind=kind, normalize=normalize):
            return jl.distillation_loss(c, d, y, t, alpha=alpha, kind=kind, tau=tau, normalize=normalize,
                                        label_smoothing=0.1)

        (total, parts), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(c, d, t)
        out.append((total, parts, grads))
    return out


# ---------------------------------------------------------------- logit losses
@SETTINGS
@given(seed=seeds, b=batches, tau=taus, extreme=st.booleans(), alpha=st.floats(0.0, 1.0))
def test_distillation_nonnegative_and_finite(seed, b, tau, extreme, alpha):
    c, d, t = (_logits(seed + i, b, extreme) for i in range(3))
    y = jnp.asarray(np.random.default_rng(seed).integers(0, K, b))
    for total, parts, grads in _kd_all(c, d, t, y, alpha, tau):
        assert _finite(total, parts, grads)
        assert float(parts["ce"]) >= 0.0 and float(parts["kd"]) >= -1e-6 and float(total) >= -1e-6
        assert float(total) == pytest.approx((1 - alpha) * float(parts["ce"]) + alpha * float(parts["kd"]),
                                             rel=1e-6, abs=1e-6)


@SETTINGS
@given(seed=seeds, b=batches, tau=taus, extreme=st.booleans())
def test_soft_distillation_zero_on_equal_logits_and_normalisations(seed, b, tau, extreme):
    s, t = _logits(seed, b, extreme), _logits(seed + 1, b, extreme)
    assert float(jl.soft_distillation(s, s, tau)) == 0.0
    batch = float(jl.soft_distillation(s, t, tau, "batch"))
    assert float(jl.soft_distillation(s, t, tau, "element")) == pytest.approx(batch / K, rel=1e-6)


@SETTINGS
@given(seed=seeds, b=batches, eps=st.sampled_from([0.0, 0.1, 0.3]), extreme=st.booleans())
def test_cross_entropy_forms_agree(seed, b, eps, extreme):
    x = _logits(seed, b, extreme)
    y = jnp.asarray(np.random.default_rng(seed).integers(0, K, b))
    onehot = jax.nn.one_hot(y, K)
    hard = float(jl.cross_entropy(x, y, eps))
    assert hard >= 0.0 and math.isfinite(hard)
    # integer labels with smoothing ε == soft targets (1−ε)·onehot + ε/K, and == smoothing the one-hot targets
    assert float(jl.cross_entropy(x, (1 - eps) * onehot + eps / K)) == pytest.approx(hard, rel=1e-5, abs=1e-6)
    assert float(jl.cross_entropy(x, onehot, eps, smooth_soft_targets=True)) == pytest.approx(hard, rel=1e-5,
                                                                                             abs=1e-6)
    # soft targets are not smoothed by default (the peer's behaviour)
    assert float(jl.cross_entropy(x, onehot, eps)) == pytest.approx(float(jl.cross_entropy(x, y)), rel=1e-6)
    per = jl.cross_entropy(x, y, eps, reduction="none")
    assert per.shape == (b,) and float(jnp.mean(per)) == pytest.approx(hard, rel=1e-6)
    assert float(jl.hard_distillation(x, x)) == pytest.approx(float(jl.cross_entropy(x, jnp.argmax(x, -1))))


# ---------------------------------------------------------------- α schedule
@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 5])
def test_alpha_schedule_endpoints(schedule, warmup):
    kw = dict(num_epochs=20, schedule=schedule, alpha=0.4, alpha_start=0.1, alpha_end=0.6, warmup_epochs=warmup)
    start, end = (0.4, 0.4) if schedule == "constant" else (0.1, 0.6)
    for e in range(warmup):
        assert jl.alpha_at(e, **kw) == 0.0  # KD warm-up: CE only
    assert jl.alpha_at(warmup, **kw) == pytest.approx(start)
    assert jl.alpha_at(20, **kw) == pytest.approx(end) and jl.alpha_at(35, **kw) == pytest.approx(end)
    if schedule != "constant":
        mid = (warmup + 20) / 2
        assert jl.alpha_at(mid, **kw) == pytest.approx(0.35)  # both linear and cosine pass the midpoint
        vals = [jl.alpha_at(e, **kw) for e in np.linspace(warmup, 20, 41)]
        assert all(b >= a for a, b in zip(vals, vals[1:]))  # monotone for α_end > α_start
    traced = jax.jit(lambda e: jl.alpha_at(e, **kw))
    for e in (0.0, warmup - 0.5, warmup, 7.25, 19.0, 20.0, 30.0):
        assert float(traced(jnp.float32(e))) == pytest.approx(jl.alpha_at(e, **kw), abs=1e-6)
    assert isinstance(jl.alpha_at(3, **kw), float)


def test_alpha_schedule_errors():
    with pytest.raises(ValueError, match="warmup_epochs"):
        jl.alpha_at(0, num_epochs=5, warmup_epochs=5)
    with pytest.raises(ValueError, match="schedule"):
        jl.alpha_at(0, num_epochs=5, schedule="step")
    with pytest.raises(ValueError, match="alpha_end"):
        jl.alpha_at(0, num_epochs=5, alpha_end=1.5)


# ---------------------------------------------------------------- resize
@SETTINGS
@given(value=st.floats(-1e3, 1e3), src=st.sampled_from([4, 16]), dst=st.sampled_from([(3, 3), (5, 9)]))
def test_resize_constant_grid_stays_constant(value, src, dst):
    x = jnp.full((2, src * src, 3), value, jnp.float32)
    y = jl.resize_tokens(x, dst)
    assert y.shape == (2, dst[0] * dst[1], 3)
    np.testing.assert_allclose(np.asarray(y), value, rtol=1e-6, atol=1e-6)


def test_resize_16_to_8_is_2x2_mean_pool_and_identity_on_same_grid():
    x = _tokens(0, 2, d=5, n=256)
    pooled = np.asarray(x).reshape(2, 8, 2, 8, 2, 5).mean(axis=(2, 4)).reshape(2, 64, 5)
    np.testing.assert_allclose(np.asarray(jl.resize_tokens(x, 8)), pooled, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(jl.resize_tokens(x, (16, 16))), np.asarray(x))


def test_resize_errors():
    with pytest.raises(ValueError, match="not a square grid"):
        jl.resize_tokens(jnp.zeros((1, 15, 3)), 4)
    with pytest.raises(ValueError, match="source_grid"):
        jl.resize_tokens(jnp.zeros((1, 15, 3)), 4, source_grid=(4, 4))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        jl.resize_tokens(jnp.zeros((16, 3)), 4)
    assert jl.resize_tokens(jnp.ones((1, 15, 3)), (2, 2), source_grid=(3, 5)).shape == (1, 4, 3)


# ---------------------------------------------------------------- token losses
TOKEN_TYPES = list(jl.TOKEN_LOSS_TYPES)


@jax.jit
def _tok_identity(s, t):
    """{loss_type: (value, grads)} for every token loss type, identity projectors (one compile per shape)."""
    out = {}
    for lt in TOKEN_TYPES:
        f = lambda s, t, lt=lt: jl.token_representation_loss([s], [t], teacher_mode="identity", loss_type=lt)  # noqa
        out[lt] = jax.value_and_grad(f, argnums=(0, 1))(s, t)
    return out


@SETTINGS
@given(seed=seeds, scale=st.sampled_from([1e-3, 1.0, 50.0]))
def test_token_losses_nonnegative_zero_on_equal_and_finite(seed, scale):
    b = 3  # (a batch of one: the parity suite, which also asserts finiteness; one shape = one compile here)
    s, t = scale * _tokens(seed, b), scale * _tokens(seed + 1, b, offset=0.5)
    diff, same = _tok_identity(s, t), _tok_identity(s, s)
    for lt in TOKEN_TYPES:
        assert _finite(diff[lt]) and float(diff[lt][0]) >= -1e-6, lt
        assert _finite(same[lt]) and abs(float(same[lt][0])) <= 1e-5, (lt, float(same[lt][0]))  # s = t → 0


def test_token_losses_finite_on_degenerate_tokens():
    """All-zero and all-equal tokens (zero norms, zero centred Gram, zero RBF bandwidth) give finite values/grads."""
    zero, const = jnp.zeros((3, N, D)), jnp.ones((3, N, D))
    for s, t in ((zero, _tokens(0, 3)), (const, const), (zero, zero)):
        out = _tok_identity(s, t)
        for lt in TOKEN_TYPES:
            assert _finite(out[lt]), lt


def _heads():
    """Two student heads D→16→8 and two teacher heads DT→16→8 (shared shapes keep compiled ops cached)."""
    return ([jl.ProjectionHead(D, 16, 8, rngs=nnx.Rngs(i)) for i in range(2)],
            [jl.ProjectionHead(DT, 16, 8, rngs=nnx.Rngs(5 + i)) for i in range(2)])


def test_token_loss_with_projectors_and_layers():
    heads_s, heads_t = _heads()
    s = [_tokens(i, 3) for i in range(2)]
    t = [_tokens(9 + i, 3, d=DT) for i in range(2)]
    per_layer = [float(jl.token_representation_loss(a, c, [hs], [ht])) for a, c, hs, ht in zip(s, t, heads_s, heads_t)]
    both = float(jl.token_representation_loss(s, t, heads_s, heads_t))
    assert both == pytest.approx(sum(per_layer) / 2, rel=1e-6)  # mean over layers
    assert float(jl.token_representation_loss(s, t, heads_s, heads_t, teacher_mode="frozen")) == pytest.approx(both)
    with pytest.raises(ValueError, match="identity"):  # dims 8 vs 20 without a teacher projector
        jl.token_representation_loss(s, t, heads_s, None, teacher_mode="identity")
    with pytest.raises(ValueError, match="teacher_projectors=None"):
        jl.token_representation_loss(s, t, heads_s, heads_t, teacher_mode="identity")
    with pytest.raises(ValueError, match="one teacher projector per layer"):
        jl.token_representation_loss(s, t, heads_s, heads_t[:1])
    with pytest.raises(ValueError, match="resize_tokens"):
        jl.token_representation_loss(s, [_tokens(0, 3, d=DT, n=64)] * 2, heads_s, heads_t)
    with pytest.raises(ValueError, match="loss_type"):
        jl.token_representation_loss(s, t, heads_s, heads_t, loss_type="l1")
    # CKA / Gram compare structures, so different feature dims are fine without projectors
    assert math.isfinite(float(jl.token_representation_loss(s, t, loss_type="cka_linear", teacher_mode="identity")))


def test_projection_head_structure_and_init():
    default = nnx.eval_shape(lambda: jl.ProjectionHead(40, rngs=nnx.Rngs(0)))  # defaults: hidden 512, out 256
    assert (default.fc1.kernel.shape, default.fc2.kernel.shape, default.norm2.scale.shape) == (
        (40, 512), (512, 256), (256,))
    assert default.norm1.epsilon == 1e-5
    head = jl.ProjectionHead(D, 16, 8, rngs=nnx.Rngs(0))
    bound = 1 / math.sqrt(D)
    assert float(jnp.max(jnp.abs(head.fc1.kernel[...]))) <= bound
    assert float(jnp.max(jnp.abs(head.fc1.bias[...]))) <= bound and float(jnp.std(head.fc1.bias[...])) > 0
    y = head(_tokens(0, 3))
    assert y.shape == (3, N, 8) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y.mean(-1)), 0.0, atol=1e-5)  # final LN with weight 1, bias 0
    np.testing.assert_allclose(np.asarray(y.var(-1)), 1.0, rtol=1e-3)
    tn = jl.ProjectionHead(D, 16, 8, init="trunc_normal", rngs=nnx.Rngs(0))
    assert float(jnp.max(jnp.abs(tn.fc1.kernel[...]))) <= 0.04 + 1e-6 and float(jnp.max(jnp.abs(tn.fc1.bias[...]))) == 0
    bf = jl.ProjectionHead(D, 16, 8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    out = jax.eval_shape(bf, jax.ShapeDtypeStruct((3, N, D), jnp.bfloat16))
    assert out.dtype == jnp.float32 and bf.fc1.kernel.dtype == jnp.float32  # bf16 compute, fp32 params and LN
    with pytest.raises(ValueError, match="expects"):
        head(_tokens(0, 1, d=D + 1))


# ---------------------------------------------------------------- correlation loss
CORR_VARIANTS = [(True, "kl", "row_mean", "mse"), (False, "kl", "row_mean", "mse"),
                 (False, "kl", "peer_batchmean", "mse"), (True, "frobenius", "row_mean", "mse"),
                 (False, "frobenius", "row_mean", "peer")]


@jax.jit
def _corr(s, t, tau):
    """[(value, grads)] for every CORR_VARIANTS entry (one compile per shape)."""
    out = []
    for pooled, kind, red, fro in CORR_VARIANTS:
        f = lambda s, t, p=pooled, k=kind, r=red, fr=fro: jl.token_correlation_loss(  # noqa: E731
            s, t, tau, p, k, full_reduction=r, frobenius=fr)
        out.append(jax.value_and_grad(f, argnums=(0, 1))(s, t))
    return out


@SETTINGS
@given(seed=seeds, tau=st.sampled_from([0.05, 0.1, 1.0]), scale=st.sampled_from([0.0, 1e-3, 1.0, 50.0]))
def test_correlation_nonnegative_zero_on_equal_and_finite(seed, tau, scale):
    b = 3  # (a batch of one: the parity suite checks B = 1 values, grads and finiteness)
    s, t = scale * _tokens(seed, b), scale * _tokens(seed + 1, b, offset=0.3)
    for (_pooled, *_), (val, grads), (same, sgrads) in zip(CORR_VARIANTS, _corr(s, t, tau), _corr(s, s, tau)):
        assert _finite(val, grads) and float(val) >= -1e-6
        assert _finite(same, sgrads) and abs(float(same)) <= 1e-7


def test_correlation_reductions_and_errors():
    s, t = _tokens(0, 3), _tokens(1, 3, d=DT)
    row = float(jl.token_correlation_loss(s, t, pooled=False))
    assert float(jl.token_correlation_loss(s, t, pooled=False, full_reduction="peer_batchmean")) == pytest.approx(
        N * row, rel=1e-6)
    # pooled mode accepts different token counts; full mode needs equal N
    assert math.isfinite(float(jl.token_correlation_loss(s, _tokens(1, 3, n=64))))
    with pytest.raises(ValueError, match="resize_tokens"):
        jl.token_correlation_loss(s, _tokens(1, 3, n=64), pooled=False)
    with pytest.raises(ValueError, match="batch sizes"):
        jl.token_correlation_loss(s, _tokens(1, 2))
    with pytest.raises(ValueError, match="kind"):
        jl.token_correlation_loss(s, t, kind="cosine")
    with pytest.raises(ValueError, match="tau"):
        jl.token_correlation_loss(s, t, tau=0.0)


# ---------------------------------------------------------------- full objective
def test_ss_distillation_stages_and_zero_token_terms():
    """Identity projectors with student = teacher: L_tok = L_rel = 0 and the loss is CE; the stage switch works
    under jit with a traced epoch; teacher tokens on a finer grid are resized."""
    lg, y = _logits(0, 3, False), jnp.arange(3)
    s_layers, s_fin = [_tokens(1, 3), _tokens(2, 3)], _tokens(3, 3, offset=0.3)
    ce = float(jl.cross_entropy(lg, y))
    total, parts = jl.ss_distillation_loss(lg, y, s_layers, s_layers, s_fin, s_fin, None, None, epoch=12,
                                           teacher_mode="identity")
    assert abs(float(parts["tok"])) <= 1e-6 and float(parts["rel"]) == 0.0 and float(total) == pytest.approx(ce)

    heads_s, heads_t = _heads()
    t_layers, t_fin = [_tokens(4, 3, d=DT, n=64), _tokens(5, 3, d=DT, n=64)], _tokens(6, 3, d=DT, n=64)

    @jax.jit
    def run(epoch):
        return jl.ss_distillation_loss(lg, y, s_layers, t_layers, s_fin, t_fin, heads_s, heads_t, epoch=epoch,
                                       rel_warmup_epochs=10, lambda_rel=0.1, pooled=False)

    (a, pa), (b, pb) = run(jnp.int32(9)), run(jnp.int32(10))
    assert float(pa["lambda_rel"]) == 0.0 and float(pb["lambda_rel"]) == pytest.approx(0.1)
    assert float(a) == pytest.approx(float(pa["ce"] + pa["tok"]), rel=1e-6)
    assert float(b) == pytest.approx(float(pb["ce"] + pb["tok"] + 0.1 * pb["rel"]), rel=1e-6)
    assert float(pa["rel"]) > 0 and _finite(a, b, pa, pb)
    host, _ = jl.ss_distillation_loss(lg, y, s_layers, t_layers, s_fin, t_fin, heads_s, heads_t, epoch=10,
                                      lambda_rel=0.1, pooled=False)
    assert float(host) == pytest.approx(float(b), rel=1e-6)
    assert jl.rel_weight_at(9, 0.1, 10) == 0.0 and jl.rel_weight_at(10, 0.1, 10) == 0.1


def test_distillation_loss_options_and_errors():
    c, d, t = _logits(0, 6, False), _logits(1, 6, False), _logits(2, 6, False)
    y = jnp.arange(6)
    total, parts = jl.distillation_loss(c, None, y, t, alpha=0.5, kind="soft")
    assert float(parts["kd"]) == pytest.approx(float(jl.soft_distillation(c, t, 3.0)))  # no dist token: cls logits
    traced, _ = jax.jit(lambda a: jl.distillation_loss(c, d, y, t, alpha=a))(jnp.float32(0.25))
    assert float(traced) == pytest.approx(float(jl.distillation_loss(c, d, y, t, alpha=0.25)[0]), rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        jl.distillation_loss(c, d, y, t, kind="feature")
    with pytest.raises(ValueError, match="alpha"):
        jl.distillation_loss(c, d, y, t, alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        jl.soft_distillation(c, t, tau=0.0)
    with pytest.raises(ValueError, match="normalize"):
        jl.soft_distillation(c, t, normalize="mean")
    with pytest.raises(ValueError, match="label_smoothing"):
        jl.cross_entropy(c, y, 1.0)
    with pytest.raises(ValueError, match="integer"):
        jl.cross_entropy(c, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="soft targets"):
        jl.cross_entropy(c, jnp.zeros((4, 3)))
