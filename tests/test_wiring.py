"""Task wiring: each task's loss equals the loss functions applied to the RIGHT tensors, computed independently.

The loss functions themselves are checked against torch_ref in parity_tests/; here the question is which tensors
reach them (SPEC §2-3): CE on ``head`` (class token) and the KD term on ``head_dist`` (distillation token); which
view of the image (student batch or clean ``teacher_image``), in which normalisation and at which size reaches
each teacher; which blocks of teacher and student produce the distilled tokens (``token_layers``); α at a given
epoch; which head gets gradient; which logits each inference mode returns.

Every check has a negative control: the same loss computed with the mutated wiring (other head, other view, other
normalisation, other layer, other epoch) must differ from the task's loss by more than MARGIN, so a single-line
wiring bug cannot pass. Tolerances: the task's loss equals the manual computation within TOL = 1e-5 (the same
fp32 formulas, different op order / compilation); an image a teacher receives equals the expected one within
IMG_TOL = 1e-5 (independent route: resize then normalise, jax.image.resize instead of jaxkd.models.resize).

The token-distillation checks are in tests/test_wiring_tokens.py (they share this file's set-up).
Models are tiny (student DeiT 8×8, patch 2, D 16, depth 2; DINOv2 D 32, depth 3, patch 14; jaxkd-ViT teacher
16×16, D 24, depth 3) and each task is compiled once, loss and gradient together (module-scoped fixtures).
Block output projections are re-drawn larger (_spread_blocks, LayerScale 2-4 in the DINOv2) so that the tokens of
neighbouring blocks differ enough for a layer mix-up to move the loss by > MARGIN (measured 1e-2 or more), and
λ_tok = 10 for the same reason.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd import config as config_lib
from jaxkd import models, tasks
from jaxkd.tasks import kd as distill
from jaxkd.tasks import tokens as distill_ss

TOL = 1e-5
IMG_TOL = 1e-5
MARGIN = 1e-3  # every negative control must move the loss (or the image) by more than this (100 x TOL)

B, K, HW = 8, 5, 8
MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)  # the student's dataset statistics (not ImageNet's)
IMAGENET = (distill_ss.IMAGENET_MEAN, distill_ss.IMAGENET_STD)


# ----------------------------------------------------------------------------------------------------------- setup
def _cfg(**sections):
    cfg = config_lib.base_config()
    cfg.model.update(model_type="deit", in_channels=3, num_classes=K)
    cfg.vit.update(variant="custom", img_size=HW, patch_size=2, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
                   drop_path_rate=0.0, attention="plain", distillation=True, inference_mode="avg")
    cfg.training.update(label_smoothing=0.1, num_epochs=10)
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


SEEN: list = []  # images the recording teachers received (host copies, via jax.debug.callback)


def _record(x):
    jax.debug.callback(lambda v: SEEN.append(np.asarray(v)), x)


def _spread_blocks(model, rng, scale: float = 2.0):
    """Re-draw every block's output projections N(0, scale²/fan_in), so that each block changes the residual
    stream clearly and the tokens of different blocks are told apart (at the peer's init, std 0.02, block i and
    block i + 1 give nearly the same tokens and a layer mix-up would move the loss by < 1e-3)."""
    for blk in model.blocks:
        for lin in (blk.attn.proj, blk.mlp.fc2):
            fan_in, out = lin.kernel[...].shape
            lin.kernel[...] = jnp.asarray(rng.normal(size=(fan_in, out)) * scale / math.sqrt(fan_in), jnp.float32)


_STUDENTS: dict = {}


def _student(cfg, seed: int = 0) -> nnx.Module:
    """The student DeiT (built once per architecture and seed) with O(1) logits: both heads re-drawn
    N(0, 9/D) with random biases, so that the class and distillation heads disagree clearly (at the peer's init
    both give ~uniform logits), and spread blocks (see _spread_blocks)."""
    key = (cfg.vit.distillation, seed)
    if key not in _STUDENTS:
        m = models.build(cfg, nnx.Rngs(seed))
        rng = np.random.default_rng(100 + seed)
        for head in (m.head, m.head_dist) if m.head_dist is not None else (m.head,):
            d, k = head.kernel[...].shape
            head.kernel[...] = jnp.asarray(rng.normal(size=(d, k)) * 3 / math.sqrt(d), jnp.float32)
            head.bias[...] = jnp.asarray(rng.normal(size=k), jnp.float32)
        _spread_blocks(m, rng)
        _STUDENTS[key] = m
    return _STUDENTS[key]


def _batch(seed: int = 0, teacher_image: bool = True, soft: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    b = {"image": jnp.asarray(rng.normal(size=(B, HW, HW, 3)), jnp.float32),
         "label": jnp.asarray(rng.integers(0, K, B), jnp.int32)}
    if teacher_image:
        b["teacher_image"] = jnp.asarray(rng.normal(size=(B, HW, HW, 3)), jnp.float32)
    if soft:
        t = rng.random((B, K)) ** 3
        b["target"] = jnp.asarray(t / t.sum(-1, keepdims=True), jnp.float32)
    return b


class LinearTeacher(nnx.Module):
    """A classifier teacher whose logits are a fixed linear map of the image it is given; records that image."""

    def __init__(self, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.w = nnx.Param(jnp.asarray(rng.normal(size=(HW * HW * 3, K)) / 8, jnp.float32))

    def __call__(self, x):
        _record(x)
        return x.reshape(x.shape[0], -1) @ self.w[...]


def _linear_teacher() -> tasks.Teacher:
    gd, state = nnx.split(LinearTeacher())
    return tasks.Teacher(gd, state, "classifier", "linear test teacher")


@functools.partial(nnx.jit, static_argnums=(0,))
def _run(task, model, batch, epoch, aux):
    """The task's loss, metrics and gradient w.r.t. the trained parameters (as jaxkd.train.steps differentiates it)."""
    (loss, metrics), grads = nnx.value_and_grad(lambda m: task(m, batch, epoch, aux), has_aux=True)(model)
    return loss, metrics, grads


def _head_norms(grads) -> dict[str, float]:
    """L2 norm of the gradient of each classifier head ('head', 'head_dist') of the (inner) DeiT."""
    sq: dict[str, float] = {}
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        for head in ("head", "head_dist"):
            if head in names:
                sq[head] = sq.get(head, 0.0) + float(np.sum(np.asarray(g, np.float64) ** 2))
    return {k: math.sqrt(v) for k, v in sq.items()}


def _call(task, model, batch, epoch, aux):
    """(loss, metrics, the images teachers received in this call, gradient norms of the heads)."""
    SEEN.clear()
    loss, metrics, grads = _run(task, model, batch, jnp.asarray(epoch, jnp.int32), aux)
    jax.block_until_ready(loss)
    jax.effects_barrier()
    return float(loss), {k: float(v) for k, v in metrics.items()}, list(SEEN), _head_norms(grads)


@functools.partial(nnx.jit, static_argnames=("token_layers",))
def _heads(model, image, token_layers=()):
    return model.forward_heads(image, token_layers=token_layers)


_infer = nnx.jit(tasks.inference_logits)


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _ce(logits, targets, eps=0.1):
    """SPEC §3 CE in numpy: integer labels with label smoothing ε, or soft targets as given."""
    lp = _log_softmax(logits)
    t = np.asarray(targets)
    if t.ndim == 1:
        return float(np.mean(-(1 - eps) * lp[np.arange(len(t)), t] - eps * lp.mean(-1)))
    return float(np.mean(-(t * lp).sum(-1)))


def _kd(kind, student_logits, t_logits, tau=2.0):
    """Hard: CE(student, argmax teacher); soft: τ²·Σ KL(p_t ‖ p_s) / B, p = softmax(·/τ) (numpy)."""
    if kind == "hard":
        return _ce(student_logits, np.argmax(np.asarray(t_logits), -1), 0.0)
    ls, lt = _log_softmax(np.asarray(student_logits) / tau), _log_softmax(np.asarray(t_logits) / tau)
    return float((np.exp(lt) * (lt - ls)).sum() * tau * tau / ls.shape[0])


def _far(value, wrong, what):
    assert abs(value - wrong) > MARGIN, f"negative control '{what}' is not distinguishable: {value} vs {wrong}"


# ------------------------------------------------------------------------------------------------ supervised
@pytest.fixture(scope="module")
def supervised():
    cfg = _cfg()
    return cfg, tasks.make_task(cfg), _student(cfg)


def test_supervised_trains_both_heads_on_the_labels(supervised):
    """(CE(cls) + CE(dist)) / 2 on the soft targets (MixUp/CutMix) when the batch has them (labels with label
    smoothing 0.1 otherwise: test_supervised_without_dist_token...); both heads get gradient."""
    soft = True
    cfg, task, model = supervised
    assert isinstance(task, tasks.Supervised)
    batch = _batch(1, teacher_image=False, soft=soft)
    loss, metrics, _, g = _call(task, model, batch, 0, None)
    out = _heads(model, batch["image"])
    targets = batch["target"] if soft else batch["label"]
    ce = _ce
    want = (ce(out["cls"], targets) + ce(out["dist"], targets)) / 2
    assert abs(loss - want) < TOL
    acc = float(np.mean(np.argmax(out["cls"], -1) == np.asarray(batch["label"])))
    assert metrics["accuracy"] == pytest.approx(acc)
    print(f"supervised: |grad head| {g['head']:.3e}, |grad head_dist| {g['head_dist']:.3e}")
    assert g["head"] > 1e-3 and g["head_dist"] > 1e-3
    # negative controls: the class head alone, the dist head alone, labels instead of the soft targets
    _far(loss, ce(out["cls"], targets), "CE on the class head only")
    _far(loss, ce(out["dist"], targets), "CE on the dist head only")
    if soft:
        _far(loss, (ce(out["cls"], batch["label"]) + ce(out["dist"], batch["label"])) / 2, "labels, not targets")


def test_supervised_without_dist_token_uses_the_class_head():
    cfg = _cfg(vit=dict(distillation=False, inference_mode="cls"))
    task, model = tasks.make_task(cfg), _student(cfg)
    batch = _batch(2, teacher_image=False)
    loss, _, _, g = _call(task, model, batch, 0, None)
    out = _heads(model, batch["image"])
    assert out["dist"] is None and "head_dist" not in g and g["head"] > 1e-3
    assert abs(loss - _ce(out["cls"], batch["label"])) < TOL
    _far(loss, _ce(out["cls"], batch["label"], 0.0), "no label smoothing")


# ------------------------------------------------------------------------------------------------ CNN -> DeiT KD
def _kd_cfg(kind: str, **kw):
    d = dict(enabled=True, teacher_checkpoint="unused", distillation_type=kind, alpha=0.3, tau=2.0,
             alpha_schedule="constant")
    d.update(kw)
    return _cfg(distillation=d)


# hard: constant α 0.3; soft: cosine α 0.1 -> 0.7 after W = 2 KD warm-up epochs of E = 10 (both τ = 2)
W, E = 2, 10
KD_CFGS = {"hard": dict(), "soft": dict(alpha_schedule="cosine", alpha_start=0.1, alpha_end=0.7,
                                        distillation_warmup_epochs=W)}


def _alpha(kind, epoch):
    """SPEC §3's α(e), written out."""
    if kind == "hard":
        return 0.3
    return 0.0 if epoch < W else 0.1 + 0.6 * (1 - math.cos(math.pi * min(epoch - W, E - W) / (E - W))) / 2


@functools.cache
def _kd_setup(kind: str):
    """(kind, task, teacher, student): one task (one compilation) per kind, shared by the KD tests."""
    cfg = _kd_cfg(kind, **KD_CFGS[kind])
    teacher = _linear_teacher()
    return kind, tasks.make_task(cfg, teacher), teacher, _student(cfg)


def _teacher_logits(teacher, image):
    return np.asarray(image, np.float64).reshape(B, -1) @ np.asarray(teacher.state["w"][...], np.float64)


@pytest.mark.parametrize("kind,view", [("hard", "clean"), ("soft", "clean"), ("hard", "student")])
def test_kd_loss_is_ce_on_cls_plus_kd_on_dist_with_the_right_teacher_view(kind, view):
    """(1 − α)·CE(head, labels) + α·KD(head_dist, teacher(view)) at epoch 5; the teacher receives exactly the
    clean view when the batch has one, else the student's batch; both heads get gradient."""
    kind, task, teacher, model = _kd_setup(kind)
    assert isinstance(task, distill.KnowledgeDistillation)
    batch = _batch(3, teacher_image=view == "clean")
    loss, metrics, seen, g = _call(task, model, batch, 5, teacher.state)
    want_img = np.asarray(batch["teacher_image" if view == "clean" else "image"])
    assert len(seen) == 1 and np.array_equal(seen[0], want_img)
    other = batch["image"] if view == "clean" else -batch["image"]  # (no second view: any other image)
    assert np.max(np.abs(seen[0] - np.asarray(other))) > 0.1
    t_logits, t_wrong = _teacher_logits(teacher, want_img), _teacher_logits(teacher, other)
    out = _heads(model, batch["image"])
    ce_cls, ce_dist = _ce(out["cls"], batch["label"]), _ce(out["dist"], batch["label"])
    kd_dist, kd_cls = _kd(kind, out["dist"], t_logits), _kd(kind, out["cls"], t_logits)
    a = _alpha(kind, 5)
    want = (1 - a) * ce_cls + a * kd_dist
    print(f"{kind}/{view}: loss {loss:.6f} want {want:.6f}; KD on head {(1 - a) * ce_cls + a * kd_cls:.6f}; "
          f"|grad head| {g['head']:.3e}, |grad head_dist| {g['head_dist']:.3e}")
    assert abs(loss - want) < TOL
    assert abs(metrics["ce"] - ce_cls) < TOL and abs(metrics["kd"] - kd_dist) < TOL
    assert metrics["alpha"] == pytest.approx(a, abs=1e-6)
    assert metrics["agreement"] == pytest.approx(float(np.mean(np.argmax(out["dist"], -1) ==
                                                               np.argmax(t_logits, -1))))
    assert g["head"] > 1e-3 and g["head_dist"] > 1e-3
    # negative controls
    _far(loss, (1 - a) * ce_cls + a * kd_cls, "KD on the class head")
    _far(loss, (1 - a) * ce_dist + a * kd_dist, "CE on the dist head")
    _far(loss, (1 - a) * ce_dist + a * kd_cls, "heads swapped")
    _far(loss, a * ce_cls + (1 - a) * kd_dist, "alpha and 1 - alpha swapped")
    _far(loss, (1 - a) * ce_cls + a * _kd(kind, out["dist"], t_wrong), "teacher sees the other view")
    if kind == "soft":
        _far(loss, (1 - a) * ce_cls + a * _kd(kind, out["dist"], t_logits, tau=1.0), "tau 1")


@pytest.mark.parametrize("kind,epoch", [("hard", 9)] + [("soft", e) for e in (0, 1, 2, 5, 9)])
def test_kd_alpha_schedule_at_epoch(kind, epoch):
    """α(e) of the configured schedule reaches the loss; in the KD warm-up (e < W) the loss is CE(head) alone
    and head_dist gets no gradient -- what a KD term wired to the class head would leave at every epoch (the
    control of the gradient check of the test above)."""
    kind, task, teacher, model = _kd_setup(kind)
    batch = _batch(4)
    loss, metrics, _, g = _call(task, model, batch, epoch, teacher.state)
    a = _alpha(kind, epoch)
    assert metrics["alpha"] == pytest.approx(a, abs=1e-6)
    out = _heads(model, batch["image"])
    ce = _ce(out["cls"], batch["label"])
    kd_ = _kd(kind, out["dist"], _teacher_logits(teacher, batch["teacher_image"]))
    assert abs(loss - ((1 - a) * ce + a * kd_)) < TOL
    if a == 0.0:
        assert abs(loss - ce) < TOL and g["head_dist"] == 0.0 and g["head"] > 1e-3
    else:
        assert g["head_dist"] > 1e-3
    if kind == "hard":
        return
    # negative controls: α of the next epoch, the linear schedule, no warm-up offset
    lin = 0.0 if epoch < W else 0.1 + 0.6 * (epoch - W) / (E - W)
    no_w = 0.1 + 0.6 * (1 - math.cos(math.pi * epoch / E)) / 2
    controls = {"next epoch": _alpha(kind, epoch + 1), "linear": lin, "no warm-up": no_w}
    for name, wrong in controls.items():
        if abs(wrong - a) > 1e-2:  # (where two schedules coincide that control says nothing)
            _far(loss, (1 - wrong) * ce + wrong * kd_, f"alpha of {name}")
    if epoch == 5:  # mid-schedule every control is informative
        assert all(abs(w - a) > 1e-2 for w in controls.values())


# ------------------------------------------------------------------------------------------------ inference modes
def test_inference_modes_pick_the_right_logits(supervised):
    cfg, _, model = supervised
    x = _batch(6)["image"]
    out = _heads(model, x)
    cls, dist = np.asarray(out["cls"]), np.asarray(out["dist"])
    want = {"cls": cls, "dist": dist, "avg": (cls + dist) / 2}
    m = nnx.clone(model)
    for mode in ("cls", "dist", "avg"):
        m.inference_mode = mode
        got = np.asarray(_infer(m, x))
        assert np.max(np.abs(got - want[mode])) < TOL, mode
        for other in set(want) - {mode}:  # control: the other two modes' logits are far from it
            assert np.max(np.abs(got - want[other])) > MARGIN, (mode, other)
