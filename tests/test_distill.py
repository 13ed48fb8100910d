"""CNN -> DeiT distillation in the one trainer: teachers trained inside the test, loaded frozen, bit-identical
through student training, absent from the student's checkpoints; every KD preset's smoke variant; bad teachers."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxkd import checkpoint
from jaxkd import config as config_lib
from jaxkd import train as train_lib
from jaxkd.config import ConfigError

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


def test_teacher_class_count_mismatch_is_refused(digits_teacher, tmp_path):
    cfg = config_lib.load("configs/quickstart_kd.py:smoke",
                          QUIET + [f"--config.distillation.teacher_checkpoint={digits_teacher}"])
    from jaxkd import distill

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
