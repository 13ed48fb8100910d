"""Structural-loss wiring in token distillation (LATER.md §3.3–3.5): which tokens (layers, before / after which LN,
patch or class tokens) and which projectors reach L_cka and L_gram, their epoch weights in the task's loss, the
CLS-only mode, and where the projectors live (the student's parameters, which get gradient after the warm-up, or the
frozen teacher's state). Each check against a computation by hand with negative controls; set-up, tolerances (TOL
1e-5, MARGIN 1e-3) and the tiny DINOv2 from tests/test_wiring.py and tests/test_wiring_tokens.py. The trainer's own
run (the projectors trained, the metrics logged): tests/test_train_structural.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from test_wiring import IMAGENET, MARGIN, TOL, _batch, _call, _far, _heads, _run
from test_wiring_tokens import TOKEN_LAYERS, _Data, _ss_cfg, _ss_setup, _teacher_view
from test_wiring_tokens import dinov2_file as dinov2_file  # noqa: F401  (the module-scoped fixture)

from jaxkd import losses, models, tasks
from jaxkd.train import steps

STRUCT = dict(use_cka_loss=True, use_gram_loss=True, lambda_cka=0.7, lambda_gram=0.3, cka_warmup_epochs=2)


@functools.partial(nnx.jit, static_argnames=("mode", "kernel"))
def _structural(s_proj, t_proj, s_layers, t_layers, *, mode, kernel):
    return losses.layerwise_structural_loss(list(s_layers), list(t_layers), list(s_proj),
                                            None if t_proj is None else list(t_proj), use_gram=True,
                                            cka_kernel_type=kernel, teacher_mode=mode)


@functools.partial(nnx.jit, static_argnames=("return_class_token", "norm"))
def _dino(net, x, return_class_token=False, norm=True):
    return net.get_intermediate_layers(x, [0, 1, 2], return_class_token=return_class_token, norm=norm)


@pytest.fixture(scope="module")
def patch_task(dinov2_file):  # noqa: F811
    cfg = _ss_cfg("dinov2", dinov2_file, "imagenet", cka_kernel_type="rbf", structural_teacher_projector="trainable",
                  **STRUCT)
    return (cfg, *_ss_setup(cfg))


def test_structural_losses_on_the_patch_tokens(patch_task):
    """L_cka and L_gram compare the student's raw block outputs (before its final LN, prefix tokens dropped)
    through the structural projectors (not L_tok's) with the teacher's patch tokens of the same blocks after its
    final LN, resized to the student's grid and through the trainable teacher-side projectors; the task's loss is
    CE + λ_tok·L_tok + λ_rel·L_rel + λ_cka(e)·L_cka + λ_gram(e)·L_gram, with both weights 0 before
    cka_warmup_epochs."""
    cfg, teacher, task, student = patch_task
    batch = _batch(21)
    loss, parts, _, _ = _call(task, student, batch, 2, teacher.state)
    warm_loss, warm, _, _ = _call(task, student, batch, 1, teacher.state)
    ss = cfg.ss_distillation
    assert (parts["lambda_cka"], parts["lambda_gram"], warm["lambda_cka"], warm["lambda_gram"]) == pytest.approx(
        (0.7, 0.3, 0.0, 0.0))
    base = parts["ce"] + ss.lambda_tok * parts["tok"] + ss.lambda_rel * parts["rel"]
    assert abs(loss - (base + 0.7 * parts["cka"] + 0.3 * parts["gram"])) < TOL
    assert abs(warm_loss - base) < TOL and abs(warm["cka"] - parts["cka"]) < TOL  # logged during the warm-up too
    _far(loss, warm_loss, "after vs during the warm-up")

    net = nnx.merge(teacher.graphdef, teacher.state).net
    x = jnp.asarray(_teacher_view(batch["teacher_image"], IMAGENET, 28))
    grid = tuple(student.model.grid_size)
    t = [losses.resize_tokens(z, grid, (2, 2)) for z in _dino(net, x)]
    t_raw = [losses.resize_tokens(z, grid, (2, 2)) for z in _dino(net, x, norm=False)]
    out = _heads(student.model, batch["image"], TOKEN_LAYERS)
    p = student.model.num_prefix_tokens
    s = [b[:, p:] for b in out["blocks"]]
    sp, tp = student.structural_student_projectors, student.structural_teacher_projectors

    def manual(s_layers, t_layers, s_proj=sp, t_proj=tp):
        got = _structural(s_proj, t_proj, s_layers, t_layers, mode="trainable", kernel="rbf")
        return float(got["cka"]), float(got["gram"])

    want = manual(s, t[:2])
    print(f"cka {parts['cka']:.6f} want {want[0]:.6f}; gram {parts['gram']:.6f} want {want[1]:.6f}")
    assert abs(parts["cka"] - want[0]) < TOL and abs(parts["gram"] - want[1]) < TOL
    wrongs = {"teacher layers swapped": manual(s, [t[1], t[0]]),
              "teacher last block for all": manual(s, [t[2], t[2]]),
              "teacher tokens before its final LN": manual(s, t_raw[:2]),
              "student tokens after its final LN": manual([out["tokens"][:, p:]] * 2, t[:2]),
              "L_tok's projectors": manual(s, t[:2], student.student_projectors, student.teacher_projectors)}
    print("  controls: " + ", ".join(f"{k} {abs(v[0] - want[0]):.2e}/{abs(v[1] - want[1]):.2e}"
                                     for k, v in wrongs.items()))
    for name, (cka, gram) in wrongs.items():  # the same tokens feed both: one of them must tell the mix-up apart
        assert max(abs(parts["cka"] - cka), abs(parts["gram"] - gram)) > MARGIN, name

    # the structural projectors get gradient after the warm-up (the teacher-side ones too: 'trainable'), none
    # during it; they are among the parameters the optimiser trains (jaxkd.train.steps.split_model)
    grads = {e: _run(task, student, batch, jnp.asarray(e, jnp.int32), teacher.state)[2] for e in (1, 2)}
    for side in ("structural_student_projectors", "structural_teacher_projectors"):
        norm = {e: max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[e][side])) for e in (1, 2)}
        assert norm[2] > 1e-6 and norm[1] == 0.0, (side, norm)
    assert {"structural_student_projectors", "structural_teacher_projectors"} <= set(steps.split_model(student)[2])


def test_cls_only_uses_the_class_tokens(dinov2_file):  # noqa: F811
    """use_cls_only: the class token after each chosen block (the student's before its final LN, the teacher's
    after its final LN) for L_tok and for CKA in batch mode (linear, the teacher side identity: jaxkd's default);
    L_rel on the student's final-LN class token and the class token of the teacher's last block."""
    cfg = _ss_cfg("dinov2", dinov2_file, "imagenet", use_cls_only=True, use_cka_loss=True, cka_warmup_epochs=0)
    teacher, task, student = _ss_setup(cfg)
    assert student.structural_teacher_projectors is None  # identity by default
    batch = _batch(22)
    loss, parts, _, _ = _call(task, student, batch, 3, teacher.state)
    assert "gram" not in parts
    ss = cfg.ss_distillation
    net = nnx.merge(teacher.graphdef, teacher.state).net
    x = jnp.asarray(_teacher_view(batch["teacher_image"], IMAGENET, 28))
    t_cls = [c[:, None] for _, c in _dino(net, x, return_class_token=True)]
    t_cls_raw = [c[:, None] for _, c in _dino(net, x, return_class_token=True, norm=False)]
    t_patch_mean = [z.mean(1, keepdims=True) for z in _dino(net, x)]
    out = _heads(student.model, batch["image"], TOKEN_LAYERS)
    s_cls = [b[:, :1] for b in out["blocks"]]
    s_final = out["tokens"][:, :1]

    @nnx.jit
    def manual_jit(st, s_layers, t_layers, sf, tf):
        total, _ = losses.ss_distillation_loss(
            out["cls"], batch["label"], list(s_layers), list(t_layers), sf, tf, list(st.student_projectors),
            list(st.teacher_projectors), epoch=3.0, lambda_tok=ss.lambda_tok, lambda_rel=ss.lambda_rel,
            rel_warmup_epochs=ss.rel_warmup_epochs, label_smoothing=0.1,
            correlation_tau=ss.correlation_temperature)
        cka = losses.layerwise_structural_loss(list(s_layers), list(t_layers), list(st.structural_student_projectors))
        return total + ss.lambda_cka * cka["cka"], cka["cka"]

    def manual(s_layers, t_layers, sf=s_final, tf=t_cls[2]):
        total, cka = manual_jit(student, s_layers, t_layers, sf, tf)
        return float(total), float(cka)

    want, want_cka = manual(s_cls, t_cls[:2])
    print(f"cls-only: loss {loss:.6f} want {want:.6f}; cka {parts['cka']:.6f} want {want_cka:.6f}")
    assert abs(loss - want) < TOL and abs(parts["cka"] - want_cka) < TOL
    wrongs = {"teacher class tokens before its final LN": manual(s_cls, t_cls_raw[:2], tf=t_cls_raw[2]),
              "teacher patch-token mean": manual(s_cls, t_patch_mean[:2], tf=t_patch_mean[2]),
              "student dist token": manual([b[:, 1:2] for b in out["blocks"]], t_cls[:2]),
              "student class tokens after its final LN": manual([s_final, s_final], t_cls[:2]),
              "L_rel on the last token layer's class token": manual(s_cls, t_cls[:2], tf=t_cls[1])}
    print("  controls: " + ", ".join(f"{k} {abs(v[0] - want):.2e}" for k, v in wrongs.items()))
    for name, (total, _) in wrongs.items():
        _far(loss, total, name)


def test_frozen_structural_projectors_live_with_the_teacher(dinov2_file):  # noqa: F811
    """structural_teacher_projector=frozen: fixed random heads in the teacher's state (the step's aux input: not
    optimised, not checkpointed with the student), none among the student's parameters; identity: none at all."""
    for mode in ("frozen", "identity"):
        cfg = _ss_cfg("dinov2", dinov2_file, "imagenet", structural_teacher_projector=mode, **STRUCT)
        teacher = tasks.task_class(cfg).load_teacher(cfg, _Data)
        student = tasks.make_task(cfg, teacher).trainable(models.build(cfg, nnx.Rngs(0)), nnx.Rngs(1))
        params = steps.split_model(student)[2]
        assert "structural_student_projectors" in params and "structural_teacher_projectors" not in params
        frozen = nnx.merge(teacher.graphdef, teacher.state).structural_projectors
        assert (frozen is not None and len(frozen) == len(TOKEN_LAYERS)) == (mode == "frozen"), mode
