"""The structural losses (jaxkd.losses.structural, LATER.md §3.1–3.4) on their own: edge cases (constant tokens, N == 1
switching to batch mode, a batch of one), invariances CKA must have, the bandwidth as a jit-able constant, the
config keys (defaults, ranges, cross-checks) and the import of the original's EXP-3 YAMLs. Values against torch_ref:
parity_tests/test_structural_parity.py; which tensors the task feeds them: tests/test_wiring_structural.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxkd import config as config_lib
from jaxkd import losses
from jaxkd.config import ConfigError
from jaxkd.interop.yaml_import import yaml_to_config

KERNELS = [("linear", "median_offdiag"), ("rbf", "median_offdiag"), ("rbf", "median_all")]


def _x(shape, seed=0, shift=0.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) + shift, jnp.float32)


def _value_and_grad(fn, *xs):
    v, g = jax.value_and_grad(fn, argnums=tuple(range(len(xs))))(*xs)
    return float(v), [np.asarray(a) for a in g]


@pytest.mark.parametrize("kernel,bandwidth", KERNELS)
@pytest.mark.parametrize("n", [6, 1])
def test_constant_tokens_give_finite_values_and_gradients(kernel, bandwidth, n):
    """Every token of an image equal (token-wise), or every image's class token equal (batch mode): the centred
    kernel is 0, CKA 0 (loss 1), no NaN in the value or the gradient, for either side constant; zero tokens too."""
    const = jnp.ones((4, n, 5), jnp.float32) * jnp.asarray([0.3, -1.0, 2.0, 0.5, 0.0])
    other = _x((4, n, 7), 1)
    for s, t in ((const, other), (other, const), (const, const), (jnp.zeros_like(const), other)):
        v, grads = _value_and_grad(lambda a, b: losses.cka_loss(a, b, kernel, rbf_bandwidth=bandwidth), s, t)
        assert np.isfinite(v) and all(np.all(np.isfinite(g)) for g in grads), (v, kernel, n)
        assert v == pytest.approx(1.0, abs=1e-3)
        for norm in losses.GRAM_NORMS:
            v, grads = _value_and_grad(lambda a, b: losses.gram_matrix_loss(a, b, gram_norm=norm), s, t)
            assert np.isfinite(v) and all(np.all(np.isfinite(g)) for g in grads)


def test_equal_grams_give_zero_frobenius_loss_and_zero_gradient():
    """The original's un-squared norm at G_s = G_t: value 0 and gradient 0 (torch's norm backward), not NaN."""
    x = _x((3, 5, 4))
    v, (g,) = _value_and_grad(lambda a: losses.gram_matrix_loss(a, x, gram_norm="frobenius"), x)
    assert v == 0.0 and np.all(g == 0.0)


@pytest.mark.parametrize("kernel,bandwidth", KERNELS)
def test_one_token_switches_to_batch_mode(kernel, bandwidth):
    """N == 1 (class tokens): one B×B kernel over the batch, i.e. the same number as the token-wise loss of one
    'image' whose tokens are the B class tokens; a batch of one cannot form a kernel (an error, not a NaN)."""
    s, t = _x((7, 1, 5), 2), _x((7, 1, 9), 3, 0.4)
    kw = dict(rbf_bandwidth=bandwidth)
    got = float(losses.cka_loss(s, t, kernel, **kw))
    want = float(losses.cka_loss(jnp.swapaxes(s, 0, 1), jnp.swapaxes(t, 0, 1), kernel, **kw))
    assert got == pytest.approx(want, abs=1e-6) and 0.0 < got < 1.0
    g = float(losses.gram_matrix_loss(s, t))
    assert g == pytest.approx(float(losses.gram_matrix_loss(jnp.swapaxes(s, 0, 1), jnp.swapaxes(t, 0, 1))), abs=1e-7)
    with pytest.raises(ValueError, match="batch of at least 2"):
        losses.cka_loss(s[:1], t[:1])


@pytest.mark.parametrize("kernel,bandwidth", KERNELS)
def test_cka_invariances(kernel, bandwidth):
    """CKA(x, x) = 1 (loss 0 up to the eps inside the square root); invariant to an orthogonal map and a scaling
    of either side's features (both kernels see unit tokens: cosines and the distances between them); and it does
    depend on the token structure (a shuffle of one side's tokens moves it)."""
    s, t = _x((3, 8, 6), 4), _x((3, 8, 10), 5, 0.3)
    kw = dict(rbf_bandwidth=bandwidth)
    base = float(losses.cka_loss(s, t, kernel, **kw))
    assert float(losses.cka_loss(s, s, kernel, **kw)) < 1e-4
    q, _ = np.linalg.qr(np.random.default_rng(6).standard_normal((10, 10)))
    moved = float(losses.cka_loss(3.0 * s, t @ jnp.asarray(q, jnp.float32), kernel, **kw))
    assert moved == pytest.approx(base, abs=2e-6)
    shuffled = float(losses.cka_loss(s, t[:, ::-1], kernel, **kw))
    assert abs(shuffled - base) > 1e-3


def test_bandwidth_is_a_jittable_constant():
    """The RBF bandwidth is computed on the device: the loss runs under jit with no host callback in its program,
    and the bandwidth has no gradient (a constant for autodiff)."""
    s, t = _x((2, 6, 4), 7), _x((2, 6, 5), 8)
    f = jax.jit(lambda a, b: losses.cka_loss(a, b, "rbf"))
    assert float(f(s, t)) == pytest.approx(float(losses.cka_loss(s, t, "rbf")), abs=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda a, b: losses.cka_loss(a, b, "rbf"))(s, t))
    assert "callback" not in jaxpr and "sort" in jaxpr
    d2 = jnp.abs(_x((2, 5, 5), 9))
    for mode in losses.RBF_BANDWIDTHS:
        g = jax.grad(lambda d: jnp.sum(losses.median_bandwidth(d, mode)))(d2)
        assert np.all(np.asarray(g) == 0.0), mode


def test_structural_weights():
    """λ_cka(e), λ_gram(e) by hand for both weightings (host numbers; traced epochs: the parity test)."""
    f = lambda e, **kw: losses.structural_weights_at(  # noqa: E731
        e, lambda_cka=0.5, lambda_gram=0.2, cka_warmup_epochs=3, **kw)
    assert f(2, use_cka=True, use_gram=True) == (0.0, 0.0)
    assert f(3, use_cka=True, use_gram=True) == (0.5, 0.2)
    assert f(3, use_cka=True, use_gram=True, weighting="coupled") == (0.5, 0.5)  # λ_gram ignored
    assert f(0, use_gram=True) == (0.0, 0.0)
    assert f(0, use_gram=True, weighting="coupled") == (0.0, 0.2)  # Gram alone: no warm-up
    assert f(9) == (0.0, 0.0)
    with pytest.raises(ValueError, match="weighting"):
        f(3, use_cka=True, weighting="original")


def test_argument_errors():
    s, t = _x((2, 4, 3)), _x((2, 5, 3))
    with pytest.raises(ValueError, match="same \\(B, N\\)"):
        losses.cka_loss(s, t)
    with pytest.raises(ValueError, match="kernel_type"):
        losses.cka_loss(s, s, "poly")
    with pytest.raises(ValueError, match="uses no teacher projectors"):
        losses.layerwise_structural_loss([s], [s], None, [lambda z: z])
    with pytest.raises(ValueError, match="needs one teacher projector per layer"):
        losses.layerwise_structural_loss([s], [s], None, None, teacher_mode="trainable")
    with pytest.raises(ValueError, match="use_cka or use_gram"):
        losses.layerwise_structural_loss([s], [s], use_cka=False)


# ------------------------------------------------------------------------------------------------------ config
def test_config_defaults_are_the_originals_keys():
    """LATER §5.1's keys with the original's code defaults, and jaxkd's corrections as the default options."""
    ss = config_lib.base_config().ss_distillation
    assert (ss.use_cka_loss, ss.lambda_cka, ss.cka_kernel_type, ss.cka_warmup_epochs) == (False, 0.5, "linear", 5)
    assert (ss.use_gram_loss, ss.lambda_gram, ss.use_cls_only) == (False, 0.5, False)
    assert (ss.structural_teacher_projector, ss.structural_weights, ss.cka_rbf_bandwidth, ss.gram_norm) == (
        "identity", "separate", "median_offdiag", "squared")


def _ss(**kw):
    return ["--config.ss_distillation.enabled=true", "--config.vit.inference_mode=cls"] + [
        f"--config.ss_distillation.{k}={v}" for k, v in kw.items()]


@pytest.mark.parametrize("kw,message", [
    (dict(lambda_gram=-1), "'ss_distillation.lambda_gram' = -1.0 must be in [0, inf]"),
    (dict(cka_warmup_epochs=-2), "'ss_distillation.cka_warmup_epochs' = -2 must be in [0, inf]"),
    (dict(structural_teacher_projector="shared"), "must be one of 'identity', 'frozen', 'trainable'"),
    (dict(structural_weights="original"), "must be one of 'separate', 'coupled'"),
    (dict(cka_rbf_bandwidth="median"), "must be one of 'median_offdiag', 'median_all'"),
    (dict(use_cls_only="true", token_loss_type="gram"), "use_cls_only gives one (class) token per image"),
])
def test_config_errors(kw, message):
    with pytest.raises(ConfigError, match=None) as e:
        config_lib.load("configs/deit_ss_cifar.py", _ss(**kw))
    assert message in str(e.value)


# ------------------------------------------------------------------------------------------------------ YAML
def _exp3(**ss):
    """The ss_distillation section of the original's EXP-3 YAML (deit_ss_distill_cka_cifar_config@5608f14) with
    its other sections cut to what selects the mode; ``ss`` changes keys (None removes one)."""
    section = {"teacher_type": "dinov2", "teacher_model_name": "dinov2_vits14", "teacher_embed_dim": 384,
               "token_layers": [3, 6, 9, 11], "projection_dim": 256, "lambda_tok": 0.5, "token_loss_type": "cosine",
               "lambda_rel": 0.05, "correlation_temperature": 0.1, "correlation_loss_type": "kl",
               "use_pooled_correlation": True, "rel_warmup_epochs": 10, "use_cka_loss": True, "lambda_cka": 0.5,
               "cka_kernel_type": "linear", "cka_warmup_epochs": 5, "use_gram_loss": False, "lambda_gram": 0.0,
               "use_dual_augment": True, "projector_warmup_epochs": 0}
    section.update(ss)
    return {"data": {"dataset": "cifar", "batch_size": 512}, "model": {"model_type": "deit", "num_classes": 10},
            "vit": {"variant": "tiny", "img_size": 32, "patch_size": 4, "distillation": True,
                    "inference_mode": "avg"},
            "ss_distillation": {k: v for k, v in section.items() if v is not None}}


@pytest.mark.parametrize("variant,changes", [
    ("EXP-3", {}),
    ("EXP-3b", dict(use_cls_only=True, token_layers=[8, 9, 10, 11], lambda_cka=1.0)),
    ("gram", dict(use_cka_loss=False, lambda_cka=0.0, use_gram_loss=True, lambda_gram=0.5)),
])
def test_yaml_import_of_the_structural_presets(variant, changes):
    doc = yaml.safe_load(yaml.safe_dump(_exp3(**changes)))
    cfg, conv = yaml_to_config(doc, where=variant)
    ss = cfg.ss_distillation
    assert ss.enabled and cfg.data.augmentation.teacher_view == "clean"  # use_dual_augment
    for key, value in {**_exp3()["ss_distillation"], **changes}.items():
        if key not in ("use_dual_augment", "teacher_embed_dim"):
            assert ss[key] == value, key
    assert any("teacher_embed_dim = 384 is not imported" in h for h in conv.header)
    assert any("structural_teacher_projector=trainable" in h for h in conv.header)
    off, _ = yaml_to_config(_exp3(use_dual_augment=False), where="x")
    assert off.data.augmentation.teacher_view == "student"


def test_yaml_teacher_width_must_match_the_named_teacher():
    with pytest.raises(ConfigError, match="teacher_embed_dim = 768 .*dinov2_vits14 has 384-wide tokens"):
        yaml_to_config(_exp3(teacher_embed_dim=768), where="x")
    cfg, _ = yaml_to_config(_exp3(teacher_model_name="dinov2_vitb14", teacher_embed_dim=768), where="x")
    assert cfg.ss_distillation.teacher_model_name == "dinov2_vitb14"
