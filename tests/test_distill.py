"""CNN -> DeiT distillation in the one trainer: teachers trained inside the test, loaded frozen, bit-identical
through student training, absent from the student's checkpoints; every KD preset's smoke variant; bad teachers."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxkd import config as config_lib
from jaxkd.config import ConfigError
from jaxkd.train import checkpoint
from jaxkd.train import loop as train_lib

QUIET = ["--config.logging.progress_bar=false"]


def _teacher(tmp_path_factory, preset: str):
    workdir = tmp_path_factory.mktemp(preset.replace(":", "_"))
    train_lib.train(config_lib.load(f"configs/{preset}", QUIET), workdir)
    return workdir


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    return _teacher(tmp_path_factory, "quickstart.py:smoke")


@pytest.fixture(scope="module")
def mnist_teacher(tmp_path_factory, shared_data_dir):
    return _teacher(tmp_path_factory, "mnist_cnn.py:smoke")


def _model_digest(workdir) -> str:
    model, _ = checkpoint.load(workdir)
    from flax import nnx

    return checkpoint.params_sha256(nnx.state(model, (nnx.Param, nnx.BatchStat)))


def test_teacher_frozen_and_not_in_student_checkpoints(digits_teacher, tmp_path):
    before = _model_digest(digits_teacher)
    cfg = config_lib.load("configs/quickstart_kd.py:smoke",
                          QUIET + [f"--config.distillation.teacher_checkpoint={digits_teacher}",
                                   "--config.distillation.distillation_type=soft"])
    summary = train_lib.train(cfg, tmp_path)
    assert _model_digest(digits_teacher) == before  # the teacher's weights and statistics did not move
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert {"ce", "kd", "alpha", "agreement"} <= set(train_rows[-1])
    assert {"cls_accuracy", "dist_accuracy", "teacher_accuracy", "teacher_agreement", "teacher_kl"} <= set(val_rows[-1])
    # The student's checkpoint holds the student only: its parameter count equals the student model's.
    ckpts = checkpoint.Checkpoints(tmp_path, read_only=True)
    import orbax.checkpoint as ocp

    raw = ckpts.manager.restore(ckpts.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                             meta=ocp.args.JsonRestore()))
    n = sum(int(np.size(x)) for x in jax.tree.leaves(raw.state["params"]))
    assert n == summary["params"]


def test_kd_on_mnist_preset_smoke(mnist_teacher, tmp_path):
    cfg = config_lib.load("configs/deit_mnist.py:smoke",
                          QUIET + [f"--config.distillation.teacher_checkpoint={mnist_teacher}"])
    summary = train_lib.train(cfg, tmp_path)
    assert np.isfinite(summary["test_loss"])


@pytest.fixture(scope="module")
def cifar_teacher(tmp_path_factory, shared_data_dir):
    return _teacher(tmp_path_factory, "cifar_cnn.py:smoke")


@pytest.mark.parametrize("preset", ["deit_cifar", "deit_cifar_soft"])
def test_kd_on_cifar_presets_smoke(preset, cifar_teacher, tmp_path):
    cfg = config_lib.load(f"configs/{preset}.py:smoke",
                          QUIET + [f"--config.distillation.teacher_checkpoint={cifar_teacher}"])
    summary = train_lib.train(cfg, tmp_path)
    assert np.isfinite(summary["test_loss"]) and summary["steps"] == 2


def test_teacher_class_count_mismatch_is_refused(digits_teacher, tmp_path):
    cfg = config_lib.load("configs/quickstart_kd.py:smoke",
                          QUIET + [f"--config.distillation.teacher_checkpoint={digits_teacher}"])
    from jaxkd.tasks import kd as distill

    with pytest.raises(ConfigError, match="predicts 10 classes but the student's data has 7"):
        distill.load_kd_teacher(cfg, 7, (8, 8, 1))
    with pytest.raises(ConfigError, match="takes 1-channel images but the data has 3"):
        distill.load_kd_teacher(cfg, 10, (8, 8, 3))


def test_missing_teacher_is_a_clear_error(tmp_path):
    cfg = config_lib.load("configs/quickstart_kd.py:smoke",
                          QUIET + [f"--config.distillation.teacher_checkpoint={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="teacher checkpoint '.*nope' not found: train the teacher first"):
        train_lib.train(cfg, tmp_path / "w")
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------------------------------------------
# Self-supervised token distillation with a tiny DINOv2-architecture teacher converted from a PyTorch state dict

@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch_ref.dinov2 import DinoVisionTransformer

    torch.manual_seed(0)
    net = DinoVisionTransformer(img_size=56, patch_size=14, embed_dim=32, depth=3, num_heads=2)
    path = tmp_path_factory.mktemp("dinov2") / "tiny_dinov2.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("preset", ["deit_ss_cifar", "deit_ss_cifar_ce_only"])
def test_ss_preset_smoke_runs(preset, tiny_dinov2, tmp_path, shared_data_dir):
    cfg = config_lib.load(f"configs/{preset}.py:smoke",
                          QUIET + [f"--config.ss_distillation.teacher_checkpoint={tiny_dinov2}"])
    summary = train_lib.train(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["kind"] == "train"][-1]
    assert {"ce", "tok", "rel", "lambda_rel"} <= set(last)
    assert last["lambda_rel"] == pytest.approx(cfg.ss_distillation.lambda_rel)
    assert np.isfinite(summary["test_loss"])
    model, _ = checkpoint.load(tmp_path)  # the exported model is the student DeiT alone (no projectors)
    assert type(model).__name__ == "DeiT"


@pytest.mark.parametrize("teacher_projector", ["trainable", "frozen"])
def test_projectors_learn_on_a_fixed_batch(tiny_dinov2, teacher_projector):
    """L_tok falls over a few steps on one fixed batch (the projectors, and the student, align to the teacher)."""
    import jax.numpy as jnp
    from flax import nnx

    from jaxkd import models, tasks
    from jaxkd.train import optim, steps

    cfg = config_lib.load("configs/deit_ss_cifar.py:smoke", QUIET + [
        f"--config.ss_distillation.teacher_checkpoint={tiny_dinov2}", "--config.data.source=digits",
        "--config.data.dataset=digits", "--config.model.in_channels=1", "--config.vit.img_size=8",
        "--config.vit.patch_size=2", "--config.vit.use_conv_stem=false", "--config.ss_distillation.lambda_rel=0",
        f"--config.ss_distillation.teacher_projector={teacher_projector}", "--config.training.learning_rate=3e-3",
        "--config.training.warmup_epochs=0", "--config.training.label_smoothing=0"])

    class _Data:
        mean, std, num_classes, image_shape = (0.5,), (0.25,), 10, (8, 8, 1)

    teacher = tasks.task_class(cfg).load_teacher(cfg, _Data)
    task = tasks.make_task(cfg, teacher).bind_data(_Data.mean, _Data.std)
    student = task.trainable(models.build(cfg, nnx.Rngs(0)), nnx.Rngs(1))
    gd, _, params, rest = steps.split_model(student)
    tx = optim.make_optimizer(cfg, 100, params)
    state = steps.init_state(params, rest, tx, 0, swa=False, ema=False, fp16=False)
    step = steps.make_train_step(gd, task, tx, steps_per_epoch=100, schedule=optim.make_schedule(cfg, 100))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(8, 8, 8, 1)).astype(np.float32)),
             "label": jnp.asarray(rng.integers(0, 10, 8).astype(np.int32))}
    toks = []
    for _ in range(12):
        state, m = step(state, batch, teacher.state)
        toks.append(float(m["tok"]))
    print(f"{teacher_projector}: L_tok {toks[0]:.4f} -> {toks[-1]:.4f}")
    assert toks[-1] < 0.5 * toks[0]
