"""Own behaviour of jaxkd.models.layers (BatchNorm vs a numpy float64 formula, torch-default inits, exact GELU,
pooling, cast_module) and of AdaptiveCNN's input handling / modes. No torch here."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd.models.cnn import AdaptiveCNN
from jaxkd.models.layers import (
    Activation,
    BatchNorm,
    MaxPool2d,
    cast_module,
    gelu_exact,
    global_avg_pool,
    relu,
    torch_conv,
    torch_linear,
)


def _np_bn_train(x, scale, bias, rm, rv, eps=1e-5, m=0.1, unbiased=True):
    """Reference in float64: returns (y, new_running_mean, new_running_var); torch keeps the unbiased var."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    n = int(np.prod([x.shape[a] for a in axes]))
    mu = x.mean(axis=axes)
    var_b = ((x - mu) ** 2).mean(axis=axes)
    y = (x - mu) / np.sqrt(var_b + eps) * scale + bias
    return y, (1 - m) * rm + m * mu, (1 - m) * rv + m * var_b * (n / (n - 1) if unbiased else 1.0)


def _bn_with_random_affine(c, seed=0):
    rng = np.random.default_rng(seed)
    bn = BatchNorm(c)
    bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
    bn.bias[...] = jnp.asarray(rng.normal(0, 0.3, c), jnp.float32)
    bn.mean[...] = jnp.asarray(rng.normal(0, 0.5, c), jnp.float32)
    bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)
    return bn


def _state(bn):
    return [np.asarray(v[...], np.float64) for v in (bn.scale, bn.bias, bn.mean, bn.var)]


def test_batchnorm_train_matches_numpy_formula():
    bn = _bn_with_random_affine(6)
    x = np.random.default_rng(1).standard_normal((4, 5, 5, 6)).astype(np.float32) * 3 + 2
    for step in (1, 2):  # two consecutive updates accumulate
        s, b, rm, rv = _state(bn)
        y_ref, rm_ref, rv_ref = _np_bn_train(x * step, s, b, rm, rv)
        y = bn(jnp.asarray(x * step))
        assert y.dtype == jnp.float32 and y.shape == x.shape
        np.testing.assert_allclose(np.asarray(y), y_ref, atol=2e-5, rtol=0)
        np.testing.assert_allclose(np.asarray(bn.mean[...]), rm_ref, atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.asarray(bn.var[...]), rv_ref, atol=1e-6, rtol=0)
        assert int(bn.num_batches_tracked[...]) == step
        # negative control: a biased running variance (flax's convention) would fail the check above
        _, _, rv_biased = _np_bn_train(x * step, s, b, rm, rv, unbiased=False)
        assert np.max(np.abs(np.asarray(bn.var[...]) - rv_biased)) > 1e-4


def test_batchnorm_eval_uses_running_stats_and_keeps_state():
    bn = _bn_with_random_affine(3, seed=2)
    bn.eval()
    assert bn.use_running_average is True
    x = np.random.default_rng(3).standard_normal((1, 2, 2, 3)).astype(np.float32)  # 4 values: fine in eval
    s, b, rm, rv = _state(bn)
    y = np.asarray(bn(jnp.asarray(x)))
    np.testing.assert_allclose(y, (x - rm) / np.sqrt(rv + 1e-5) * s + b, atol=1e-6, rtol=0)
    assert all(np.array_equal(p, q) for p, q in zip(_state(bn), (s, b, rm, rv)))
    assert int(bn.num_batches_tracked[...]) == 0
    # call-time override
    y_train = bn(jnp.asarray(x), use_running_average=False)
    assert int(bn.num_batches_tracked[...]) == 1 and not np.allclose(np.asarray(y_train), y)


def test_batchnorm_2d_input_and_train_eval_toggle_in_container():
    seq = nnx.Sequential(nnx.Linear(3, 5, rngs=nnx.Rngs(0)), BatchNorm(5))
    seq.eval()
    assert seq.layers[1].use_running_average
    seq.train()
    assert not seq.layers[1].use_running_average
    x = np.random.default_rng(4).standard_normal((7, 5)).astype(np.float32)
    bn = BatchNorm(5)
    y_ref, rm_ref, rv_ref = _np_bn_train(x, 1.0, 0.0, np.zeros(5), np.ones(5))
    np.testing.assert_allclose(np.asarray(bn(jnp.asarray(x))), y_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(bn.var[...]), rv_ref, atol=1e-6, rtol=0)


def test_batchnorm_jit_matches_eager():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 4, 4, 8)).astype(np.float32))
    eager, jitted = _bn_with_random_affine(8), _bn_with_random_affine(8)
    y1 = eager(x)
    y2 = nnx.jit(lambda m, v: m(v))(jitted, x)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), atol=1e-6, rtol=0)
    for a, b in zip(_state(eager), _state(jitted)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)  # XLA fusion: ~1 ulp
    assert int(jitted.num_batches_tracked[...]) == 1


def test_batchnorm_bf16_compute_keeps_float32_stats():
    x = np.random.default_rng(6).standard_normal((4, 3, 3, 4)).astype(np.float32)
    xb = jnp.asarray(x, jnp.bfloat16)
    bf, f32 = BatchNorm(4, dtype=jnp.bfloat16), BatchNorm(4)
    yb = bf(xb)
    y32 = f32(xb.astype(jnp.float32))  # same (bf16-rounded) values in float32
    assert yb.dtype == jnp.bfloat16 and bf.mean[...].dtype == jnp.float32 and bf.scale[...].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(bf.var[...]), np.asarray(f32.var[...]))
    np.testing.assert_allclose(np.asarray(yb, np.float32), np.asarray(y32), atol=3e-2, rtol=0)


def test_batchnorm_errors():
    bn = BatchNorm(4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        bn(jnp.ones((2, 3, 3, 5)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(jnp.ones((1, 1, 1, 4)))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(4, momentum=1.5)


def test_torch_default_init_distributions():
    """U(+-1/sqrt(fan_in)) for conv/linear weights and biases: bound respected, std = bound/sqrt(3) +-5%."""
    conv = torch_conv(256, 256, 3, padding=1, use_bias=True, rngs=nnx.Rngs(0))
    lin = torch_linear(4096, 4096, rngs=nnx.Rngs(1))
    for arr, fan_in in [(conv.kernel[...], 256 * 9), (conv.bias[...], 256 * 9),
                        (lin.kernel[...], 4096), (lin.bias[...], 4096)]:
        a = np.asarray(arr)
        bound = 1 / math.sqrt(fan_in)
        assert np.max(np.abs(a)) <= bound
        assert abs(a.std() / (bound / math.sqrt(3)) - 1) < 0.05, (a.shape, a.std())
        assert abs(a.mean()) < 0.05 * bound
    assert conv.kernel[...].shape == (3, 3, 256, 256) and conv.padding == ((1, 1), (1, 1))
    # negative control: flax's default (lecun normal) has std 1/sqrt(fan_in), sqrt(3) times larger
    flax_k = np.asarray(nnx.Linear(4096, 4096, rngs=nnx.Rngs(1)).kernel[...])
    assert flax_k.std() / (1 / math.sqrt(4096 * 3)) > 1.5


def test_gelu_exact_is_erf_form():
    x = np.linspace(-6, 6, 1001)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    got = np.asarray(gelu_exact(jnp.asarray(x, jnp.float32)))
    assert np.max(np.abs(got - ref)) < 1e-6
    tanh_form = np.asarray(jax.nn.gelu(jnp.asarray(x, jnp.float32), approximate=True))
    assert np.max(np.abs(tanh_form - ref)) > 1e-4  # negative control: the tanh form is a different function


def test_pools_and_activation():
    x = jnp.arange(2 * 7 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 7, 3)
    y = MaxPool2d(2)(x)
    assert y.shape == (2, 3, 3, 3)  # floor, like torch MaxPool2d(2)
    assert float(y[0, 0, 0, 0]) == float(x[0, 1, 1, 0])
    np.testing.assert_allclose(np.asarray(global_avg_pool(x)), np.asarray(x).mean(axis=(1, 2)), rtol=1e-6)
    assert float(Activation(jax.nn.relu)(jnp.asarray(-1.0))) == 0.0
    with pytest.raises(ValueError, match="callable"):
        Activation(3)


def test_cast_module_float64():
    seq = nnx.Sequential(torch_linear(3, 4, rngs=nnx.Rngs(0)), BatchNorm(4))
    with jax.enable_x64(True):
        cast_module(seq, jnp.float64)
        assert seq.layers[0].kernel[...].dtype == jnp.float64 and seq.layers[1].var[...].dtype == jnp.float64
        assert seq.layers[1].num_batches_tracked[...].dtype == jnp.int32
        y = seq(jnp.ones((2, 3), jnp.float64))
        assert y.dtype == jnp.float64


# ---- AdaptiveCNN own behaviour (the parity suite covers numerics against torch) ----------------------------

@pytest.fixture(scope="module")
def mnist_cnn():
    return AdaptiveCNN(variant="mnist", in_channels=1, num_classes=10, rngs=nnx.Rngs(0))


def test_cnn_input_validation(mnist_cnn):
    with pytest.raises(ValueError, match=r"\(B, H, W, 1\)"):
        mnist_cnn(jnp.ones((2, 1, 28, 28)))
    with pytest.raises(ValueError, match="float"):
        mnist_cnn(jnp.ones((2, 28, 28, 1), jnp.uint8))
    with pytest.raises(ValueError, match="variant"):
        AdaptiveCNN(variant="imagenet", in_channels=3, num_classes=10, rngs=nnx.Rngs(0))


def test_cnn_dropout_stochastic_in_jitted_train_step_and_eval_deterministic(mnist_cnn):
    """A split/merge functional step needs no rng argument: the 'dropout' stream lives in the module."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 28, 28, 1)), jnp.float32)
    mnist_cnn.train()

    @jax.jit
    def step(graphdef, state, xb):
        m = nnx.merge(graphdef, state)
        out = m(xb)
        return out, nnx.state(m)

    graphdef, state = nnx.split(mnist_cnn)
    out1, state = step(graphdef, state, x)
    out2, state = step(graphdef, state, x)
    nnx.update(mnist_cnn, state)
    assert out1.dtype == jnp.float32 and out1.shape == (4, 10)
    # same batch => same BN batch stats: only the dropout mask differs
    assert not np.allclose(np.asarray(out1), np.asarray(out2))
    assert int(mnist_cnn.features.layers[0].layers[1].num_batches_tracked[...]) == 2
    mnist_cnn.eval()
    fwd = nnx.jit(lambda m, xb: m(xb))
    e1, e2 = fwd(mnist_cnn, x), fwd(mnist_cnn, x)
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    assert nnx.eval_shape(lambda m: m.features_map(x), mnist_cnn).shape == (4, 4, 4, 128)


def test_cnn_bf16_compute_returns_float32_logits(mnist_cnn):
    m = AdaptiveCNN(variant="mnist", in_channels=1, num_classes=10, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    nnx.update(m, nnx.state(mnist_cnn))  # same float32 weights and stats
    m.eval()
    mnist_cnn.eval()
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 28, 28, 1)), jnp.float32)
    fwd = nnx.jit(lambda mm, xx: (mm(xx), mm.features_map(xx)))
    out, feats = fwd(m, x)
    ref, _ = fwd(mnist_cnn, x)
    assert out.dtype == jnp.float32 and feats.dtype == jnp.bfloat16
    assert m.features.layers[1].conv1.kernel[...].dtype == jnp.float32  # param_dtype stays float32
    r = np.asarray(ref)
    assert np.max(np.abs(np.asarray(out) - r)) < 0.05 * max(1.0, float(np.max(np.abs(r))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_relu_equals_max_with_zero_gradient_at_zero(dtype):
    """layers.relu (a select, for XLA's fusion) has jax.nn.relu's values and gradients: 0 below and at 0, x above,
    gradient 0 at exactly 0 (torch's convention), NaN propagated; negative control: a select with the gradient 1
    at 0."""
    x = jnp.asarray([-3.0, -1e-30, -0.0, 0.0, 1e-30, 2.5, float("nan"), float("inf"), -float("inf")], dtype)
    np.testing.assert_array_equal(np.asarray(relu(x), np.float64), np.asarray(jax.nn.relu(x), np.float64))
    assert relu(x).dtype == x.dtype
    g = jax.grad(lambda v: jnp.sum(relu(v)))(x[:6])
    np.testing.assert_array_equal(np.asarray(g, np.float64), [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(np.asarray(g), np.asarray(jax.grad(lambda v: jnp.sum(jax.nn.relu(v)))(x[:6])))
    wrong = jax.grad(lambda v: jnp.sum(jnp.where(v < 0, 0, v)))(x[:6])  # gradient 1 at 0
    assert not np.array_equal(np.asarray(wrong), np.asarray(g))
