"""The structural losses in the one trainer (LATER.md §3.1–3.4): a tiny token-distillation run (the quickstart DeiT on
the embedded digits, 2 epochs of 2 steps, a tiny DINOv2-architecture teacher written as an official-layout file)
with CKA (RBF kernel) and the Gram loss on, warmed up for one epoch. What reaches which loss is
tests/test_wiring_structural.py's; here: the run trains, the losses and their weights are in metrics.jsonl, the
warm-up switches them on at epoch 1, everything is finite, and the export is the DeiT alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_wiring_tokens import dinov2_file as dinov2_file  # noqa: F401  (the module-scoped fixture)

from jaxkd import config as config_lib
from jaxkd.train import checkpoint
from jaxkd.train import loop as train_lib

SS = ["--config.logging.progress_bar=false", "--config.distillation.enabled=false", "--config.vit.depth=2",
      "--config.vit.embed_dim=32", "--config.vit.num_heads=2", "--config.vit.inference_mode=cls",
      "--config.data.max_examples=96", "--config.data.val_size=32", "--config.data.batch_size=16",
      "--config.training.num_epochs=2", "--config.ss_distillation.enabled=true"]
STRUCT = dict(token_layers="[0,1]", teacher_model_name="dinov2_custom", teacher_num_heads=2, teacher_img_size=28,
              projection_dim=16, projection_hidden_dim=16, rel_warmup_epochs=0, use_cka_loss="true",
              cka_kernel_type="rbf", lambda_cka=0.5, use_gram_loss="true", lambda_gram=0.25, cka_warmup_epochs=1)


def test_training_with_cka_and_gram(dinov2_file, tmp_path):  # noqa: F811
    args = SS + [f"--config.ss_distillation.{k}={v}" for k, v in STRUCT.items()]
    cfg = config_lib.load("configs/quickstart_kd.py:smoke", args + [
        f"--config.ss_distillation.teacher_checkpoint={dinov2_file}"])
    summary = train_lib.train(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["epoch"] for r in train] == [1.0, 2.0], train
    first, last = train
    print(" | ".join(", ".join(f"{k} {r[k]:.4f}" for k in ("loss", "cka", "gram", "lambda_cka", "lambda_gram"))
                     for r in train))
    for r in train:
        assert {"ce", "tok", "rel", "cka", "gram", "lambda_cka", "lambda_gram"} <= set(r)
        assert all(np.isfinite(r[k]) for k in ("loss", "cka", "gram", "grad_norm"))
        assert 0.0 < r["cka"] <= 1.0 and r["gram"] > 0.0
    assert (first["lambda_cka"], first["lambda_gram"]) == (0.0, 0.0)  # epoch 0 < cka_warmup_epochs
    assert (last["lambda_cka"], last["lambda_gram"]) == pytest.approx((0.5, 0.25))
    assert np.isfinite(summary["test_loss"])
    model, _ = checkpoint.load(tmp_path)  # the structural projectors are trained, not exported
    assert type(model).__name__ == "DeiT"
