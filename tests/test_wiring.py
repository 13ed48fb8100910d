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
IMG_TOL = 1e-5 (independent route: resize then normalise, jax.image.resize instead of jaxkd.resize).

Models are tiny (student DeiT 8×8, patch 2, D 16, depth 2; DINOv2 D 32, depth 3, patch 14; jaxkd-ViT teacher
16×16, D 24, depth 3) and each task is compiled once, loss and gradient together (module-scoped fixtures).
Block output projections are re-drawn larger (_spread_blocks, LayerScale 2-4 in the DINOv2) so that the tokens of
neighbouring blocks differ enough for a layer mix-up to move the loss by > MARGIN (measured 1e-2 or more), and
λ_tok = 10 for the same reason.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd import checkpoint, distill, distill_ss, losses, models, tasks
from jaxkd import config as config_lib
from jaxkd.interop import jax_to_torch
from jaxkd.models.dinov2 import DinoVisionTransformer
from jaxkd.models.vit import DeiT

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


def _student(cfg, seed: int = 0) -> nnx.Module:
    """The student DeiT with O(1) logits: both heads re-drawn N(0, 1/D)·3 with random biases, so that the class
    and distillation heads disagree clearly (at the peer's init both give ~uniform logits)."""
    m = models.build(cfg, nnx.Rngs(seed))
    rng = np.random.default_rng(100 + seed)
    for head in (m.head, m.head_dist) if m.head_dist is not None else (m.head,):
        d, k = head.kernel[...].shape
        head.kernel[...] = jnp.asarray(rng.normal(size=(d, k)) * 3 / math.sqrt(d), jnp.float32)
        head.bias[...] = jnp.asarray(rng.normal(size=k), jnp.float32)
    return m


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


def _linear_teacher() -> distill.Teacher:
    gd, state = nnx.split(LinearTeacher())
    return distill.Teacher(gd, state, "classifier", "linear test teacher")


@functools.partial(nnx.jit, static_argnums=(0,))
def _run(task, model, batch, epoch, aux):
    """The task's loss, metrics and gradient w.r.t. the trained parameters (as jaxkd.steps differentiates it)."""
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


@functools.lru_cache(maxsize=None)
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


# ------------------------------------------------------------------------------------------------ token distillation
TOKEN_LAYERS = (0, 1)


def _ss_cfg(teacher_type: str, path, normalization: str, **kw):
    ss = dict(enabled=True, teacher_type=teacher_type, teacher_checkpoint=str(path),
              teacher_normalization=normalization,
              token_layers=list(TOKEN_LAYERS), projection_dim=8, projection_hidden_dim=16, lambda_tok=10.0,
              lambda_rel=1.0, rel_warmup_epochs=1, teacher_projector="trainable", correlation_temperature=0.1)
    if teacher_type == "dinov2":
        ss.update(teacher_model_name="dinov2_custom", teacher_num_heads=2, teacher_img_size=28)
    ss.update(kw)
    return _cfg(ss_distillation=ss)


class _Data:
    mean, std, num_classes, image_shape = MEAN, STD, K, (HW, HW, 3)


@pytest.fixture(scope="module")
def dinov2_file(tmp_path_factory):
    """A tiny DINOv2 (D 32, depth 3, 2 heads, patch 14, 4×4 pretraining grid) as an official-layout .npz, with
    LayerScale gammas 2-4 (each block moves the tokens clearly) and a non-trivial final-norm affine."""
    m = DinoVisionTransformer(embed_dim=32, depth=3, num_heads=2, patch_size=14, img_size=56, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(3)
    for blk in m.blocks:
        blk.ls1.gamma[...] = jnp.asarray(rng.uniform(2, 4, 32), jnp.float32)
        blk.ls2.gamma[...] = jnp.asarray(rng.uniform(2, 4, 32), jnp.float32)
    m.norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, 32), jnp.float32)
    m.norm.bias[...] = jnp.asarray(rng.normal(size=32) * 0.3, jnp.float32)
    path = tmp_path_factory.mktemp("dinov2") / "tiny_dinov2.npz"
    np.savez(path, **jax_to_torch(m))
    return path


@contextlib.contextmanager
def _recording(cls, method):
    """Record (via jax.debug.callback) the image argument of cls.method, and its other arguments."""
    orig = getattr(cls, method)
    calls = []

    def wrapper(self, x, *args, **kw):
        _record(x)
        calls.append((args, kw))
        return orig(self, x, *args, **kw)

    setattr(cls, method, wrapper)
    try:
        yield calls
    finally:
        setattr(cls, method, orig)


def _teacher_view(image, stats, size, mean=MEAN, std=STD):
    """Independent route to the teacher's input: un-normalise with the dataset statistics, resize (jax.image,
    half-pixel bilinear = F.interpolate(align_corners=False) when upsampling), then normalise with `stats`."""
    raw = np.asarray(image, np.float64) * np.asarray(std) + np.asarray(mean)
    if raw.shape[1] != size:
        raw = np.asarray(jax.image.resize(jnp.asarray(raw, jnp.float32), (raw.shape[0], size, size, 3), "bilinear"))
    return ((raw - np.asarray(stats[0])) / np.asarray(stats[1])).astype(np.float32)


@functools.partial(nnx.jit, static_argnames=("epoch", "lam_tok", "lam_rel", "warm", "tau", "s_grid", "t_grid"))
def _ss_loss(student, cls, label, s_layers, t_layers, s_final, t_final, *, epoch, lam_tok, lam_rel, warm, tau,
             s_grid, t_grid):
    return losses.ss_distillation_loss(
        cls, label, s_layers, t_layers, s_final, t_final, list(student.student_projectors),
        list(student.teacher_projectors), epoch=epoch, lambda_tok=lam_tok, lambda_rel=lam_rel,
        rel_warmup_epochs=warm, label_smoothing=0.1, correlation_tau=tau, student_grid=s_grid, teacher_grid=t_grid)[0]


class _SSManual:
    """ss_distillation_loss on independently gathered tensors: the student's tokens after each configured block
    (before its final LN) and its final-LN tokens, prefix tokens dropped; the teacher's tokens as given."""

    def __init__(self, task, student, batch, epoch, t_grid):
        ss = task.cfg.ss_distillation
        self.student, self.batch = student, batch
        self.kw = dict(epoch=float(epoch), lam_tok=ss.lambda_tok, lam_rel=ss.lambda_rel, warm=ss.rel_warmup_epochs,
                       tau=ss.correlation_temperature, s_grid=tuple(student.model.grid_size), t_grid=tuple(t_grid))
        self.out = _heads(student.model, batch["image"], TOKEN_LAYERS)
        p = student.model.num_prefix_tokens
        self.s_layers = [b[:, p:] for b in self.out["blocks"]]
        self.s_final = self.out["tokens"][:, p:]

    def __call__(self, t_layers, t_final, s_layers=None):
        s = self.s_layers if s_layers is None else s_layers
        return float(_ss_loss(self.student, self.out["cls"], self.batch["label"], list(s), list(t_layers),
                              self.s_final, t_final, **self.kw))


@functools.partial(nnx.jit, static_argnames=("norm",))
def _dino_layers(net, x, norm=True):
    return net.get_intermediate_layers(x, [0, 1, 2], norm=norm)


def _ss_setup(cfg, seed=0):
    teacher = distill.load_teacher(cfg, _Data)
    task = tasks.make_task(cfg, teacher).bind_data(MEAN, STD)
    student = task.trainable(_student(cfg, seed=seed), nnx.Rngs(seed + 10))
    return teacher, task, student


@pytest.fixture(scope="module")
def dinov2_task(dinov2_file):
    cfg = _ss_cfg("dinov2", dinov2_file, "imagenet")
    return (cfg, *_ss_setup(cfg))


def test_dinov2_teacher_input_tokens_and_loss(dinov2_task):
    """DINOv2 sees the clean view un-normalised with the dataset stats, resized 8 -> 28 and normalised with
    ImageNet's; its tokens come from blocks token_layers (+ the last, for L_rel) after its final LN; the
    student's from the same block indices before its final LN; L = CE + λ_tok·L_tok + λ_rel·L_rel (stage B).
    Gradient reaches the class head, not head_dist (nothing trains it in this mode)."""
    cfg, teacher, task, student = dinov2_task
    batch = _batch(7)
    with _recording(DinoVisionTransformer, "get_intermediate_layers") as calls:
        loss, parts, seen, g = _call(task, student, batch, 2, teacher.state)
    x = _teacher_view(batch["teacher_image"], IMAGENET, 28)
    assert len(seen) == 1 and seen[0].shape == (B, 28, 28, 3)
    err = float(np.max(np.abs(seen[0] - x)))
    assert err < IMG_TOL, err
    assert tuple(calls[0][0][0]) == (0, 1, 2)  # the configured layers and the last block (L_rel)
    # controls on the image: dataset normalisation, the student's view, no un-normalisation
    wrong_views = {"dataset stats": _teacher_view(batch["teacher_image"], (MEAN, STD), 28),
                   "student view": _teacher_view(batch["image"], IMAGENET, 28),
                   "not un-normalised": _teacher_view(batch["teacher_image"], IMAGENET, 28, (0, 0, 0), (1, 1, 1))}
    for name, wrong in wrong_views.items():
        assert np.max(np.abs(seen[0] - wrong)) > 0.1, name

    net = nnx.merge(teacher.graphdef, teacher.state).net
    t = _dino_layers(net, jnp.asarray(x))
    t_un = _dino_layers(net, jnp.asarray(x), norm=False)
    manual = _SSManual(task, student, batch, 2, (2, 2))
    want = manual(t[:2], t[2])
    print(f"dinov2: loss {loss:.6f} want {want:.6f} (ce {parts['ce']:.4f} tok {parts['tok']:.4f} "
          f"rel {parts['rel']:.4f}); |grad head| {g['head']:.3e}, |grad head_dist| {g['head_dist']:.3e}")
    assert abs(loss - want) < TOL
    assert parts["lambda_rel"] == pytest.approx(1.0)
    assert g["head"] > 1e-3 and g["head_dist"] == 0.0
    # negative controls: teacher layers swapped / shifted / before the final LN, L_rel on a token layer, the
    # teacher on another image, the student's layers swapped or its final-LN tokens
    wrongs = {"teacher layers swapped": manual([t[1], t[0]], t[2]),
              "teacher layers + 1": manual([t[1], t[2]], t[2]),
              "teacher last layer for all": manual([t[2], t[2]], t[2]),
              "teacher tokens before its final LN": manual(t_un[:2], t_un[2]),
              "L_rel on a token layer": manual(t[:2], t[1]),
              "student layers swapped": manual(t[:2], t[2], s_layers=manual.s_layers[::-1]),
              "student tokens after its final LN": manual(t[:2], t[2], s_layers=[manual.s_final] * 2)}
    for name, img in wrong_views.items():
        tw = _dino_layers(net, jnp.asarray(img))
        wrongs[f"teacher image: {name}"] = manual(tw[:2], tw[2])
    print("  controls: " + ", ".join(f"{k} {abs(v - loss):.2e}" for k, v in wrongs.items()))
    for name, wrong in wrongs.items():
        _far(loss, wrong, name)


def test_dinov2_dataset_normalisation_option(dinov2_file):
    """teacher_normalization=dataset re-normalises with the dataset's statistics (as the original)."""
    cfg = _ss_cfg("dinov2", dinov2_file, "dataset")
    teacher = distill.load_teacher(cfg, _Data)
    task = tasks.make_task(cfg, teacher).bind_data(MEAN, STD)
    img = _batch(8)["image"]
    got = np.asarray(jax.jit(task.teacher_input)(img))
    assert np.max(np.abs(got - _teacher_view(img, (MEAN, STD), 28))) < IMG_TOL
    assert np.max(np.abs(got - _teacher_view(img, IMAGENET, 28))) > 0.1  # control: ImageNet statistics


def test_dinov2_relation_stage_switch(dinov2_task):
    """Stage A (epoch < rel_warmup_epochs): λ_rel = 0 -> L = CE + λ_tok·L_tok; stage B adds λ_rel·L_rel."""
    cfg, teacher, task, student = dinov2_task
    batch = _batch(9)
    la, pa, _, _ = _call(task, student, batch, 0, teacher.state)
    lb, pb, _, _ = _call(task, student, batch, 1, teacher.state)
    assert pa["lambda_rel"] == 0.0 and pb["lambda_rel"] == pytest.approx(1.0)
    lam_tok = cfg.ss_distillation.lambda_tok
    assert abs(la - (pa["ce"] + lam_tok * pa["tok"])) < TOL
    assert abs(lb - (pb["ce"] + lam_tok * pb["tok"] + pb["rel"])) < TOL
    _far(la, lb, "stage A vs stage B")


def test_ss_inference_uses_the_class_head(dinov2_task):
    """Token distillation does not train head_dist, so inference uses the class head even when the DeiT's
    inference_mode is 'avg' (SPEC §3 peer quirk); the control: the DeiT's own 'avg' logits differ."""
    cfg, teacher, task, student = dinov2_task
    x = _batch(10)["image"]
    assert student.model.inference_mode == "avg"
    got = np.asarray(nnx.jit(task.inference_logits)(student, x))
    assert np.max(np.abs(got - np.asarray(_heads(student.model, x)["cls"]))) < TOL
    assert np.max(np.abs(got - np.asarray(_infer(student.model, x)))) > MARGIN


@pytest.fixture
def vit_teacher_dir(tmp_path, monkeypatch):
    """A jaxkd ViT token teacher (16×16 input, patch 4, D 24, depth 3, no dist token) in a workdir holding its
    data.json statistics; checkpoint.load is replaced by the in-memory model (no Orbax round trip: that is
    tested elsewhere, and costs seconds)."""
    tcfg = _cfg()
    tcfg.vit.update(img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=2, distillation=False,
                    inference_mode="cls")
    net = models.build(tcfg, nnx.Rngs(4))
    rng = np.random.default_rng(4)
    _spread_blocks(net, rng)
    net.norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, 24), jnp.float32)
    net.norm.bias[...] = jnp.asarray(rng.normal(size=24) * 0.3, jnp.float32)
    net.eval()
    (tmp_path / "data.json").write_text(json.dumps({"mean": [0.3, 0.4, 0.5], "std": [0.35, 0.3, 0.25]}))

    def load(path):
        assert str(path) == str(tmp_path)
        return net, tcfg

    monkeypatch.setattr(checkpoint, "load", load)
    return tmp_path


def test_jaxkd_vit_teacher_input_tokens_and_loss(vit_teacher_dir):
    """A jaxkd ViT token teacher (with the default teacher_normalization='imagenet', which concerns DINOv2 only):
    it sees the clean view un-normalised with the student's statistics, resized 8 -> 16 and normalised with ITS
    data.json statistics; its tokens are the chosen blocks' patch tokens after its final LN (the prefix token
    dropped)."""
    cfg = _ss_cfg("jaxkd", vit_teacher_dir, "imagenet")
    teacher, task, student = _ss_setup(cfg, seed=3)
    tstats = ((0.3, 0.4, 0.5), (0.35, 0.3, 0.25))
    batch = _batch(11)
    with _recording(DeiT, "forward_heads"):
        loss, parts, seen, _ = _call(task, student, batch, 2, teacher.state)
    x = _teacher_view(batch["teacher_image"], tstats, 16)
    teacher_seen = [s for s in seen if s.shape[1] == 16]
    student_seen = [s for s in seen if s.shape[1] == HW]
    assert len(teacher_seen) == 1 and len(student_seen) == 1  # one teacher and one student forward
    assert np.max(np.abs(teacher_seen[0] - x)) < IMG_TOL
    assert np.array_equal(student_seen[0], np.asarray(batch["image"]))  # the student sees its own view
    for name, stats in (("imagenet", IMAGENET), ("student's stats", (MEAN, STD))):  # controls
        assert np.max(np.abs(teacher_seen[0] - _teacher_view(batch["teacher_image"], stats, 16))) > 0.1, name

    net = nnx.merge(teacher.graphdef, teacher.state).net
    assert net.num_prefix_tokens == 1
    blocks = _heads(net, jnp.asarray(x), (0, 1, 2))["blocks"]
    t = [np.asarray(nnx.jit(lambda n, v: n.norm(v))(net, b))[:, 1:] for b in blocks]
    t_raw = [np.asarray(b)[:, 1:] for b in blocks]
    manual = _SSManual(task, student, batch, 2, (4, 4))
    want = manual(t[:2], t[2])
    print(f"jaxkd ViT teacher: loss {loss:.6f} want {want:.6f}")
    assert abs(loss - want) < TOL
    wrongs = {"teacher layers swapped": manual([t[1], t[0]], t[2]),
              "teacher last layer for all": manual([t[2], t[2]], t[2]),
              "teacher tokens before its final LN": manual(t_raw[:2], t_raw[2])}
    print("  controls: " + ", ".join(f"{k} {abs(v - loss):.2e}" for k, v in wrongs.items()))
    for name, wrong in wrongs.items():
        _far(loss, wrong, name)
