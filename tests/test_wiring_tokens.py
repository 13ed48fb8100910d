"""Token-distillation wiring (issue 15 §5): which image (view, size, normalisation) reaches a DINOv2 or jaxkd ViT
teacher, which of its layers give the tokens, and the loss built from them, each against a computation by hand with
a negative control per mix-up. Shared set-up and tolerances: tests/test_wiring.py."""

from __future__ import annotations

import contextlib
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_wiring import (
    HW,
    IMAGENET,
    IMG_TOL,
    MARGIN,
    MEAN,
    STD,
    TOL,
    B,
    K,
    _batch,
    _call,
    _cfg,
    _far,
    _heads,
    _infer,
    _record,
    _spread_blocks,
    _student,
)

from jaxkd import losses, models, tasks
from jaxkd.interop import jax_to_torch
from jaxkd.models.dinov2 import DinoVisionTransformer
from jaxkd.models.vit import DeiT
from jaxkd.train import checkpoint

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
    teacher = tasks.task_class(cfg).load_teacher(cfg, _Data)
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
    teacher = tasks.task_class(cfg).load_teacher(cfg, _Data)
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
