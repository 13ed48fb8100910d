"""The trainer end to end: every preset's smoke variant, the files a run writes, evaluate / predict, data
parallelism on 8 simulated devices (several processes: tests/test_multiprocess.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxkd import config as config_lib
from jaxkd.train import loop as train_lib

ROOT = Path(__file__).resolve().parents[1]
# A small ViT on the embedded digits: no BatchNorm, so fp32 reductions are well-conditioned across device counts.
TINY_VIT = ["--config.model.model_type=deit", "--config.vit.variant=custom", "--config.vit.img_size=8",
            "--config.vit.patch_size=2", "--config.vit.embed_dim=32", "--config.vit.depth=2",
            "--config.vit.num_heads=2", "--config.vit.distillation=false", "--config.vit.inference_mode=cls",
            "--config.vit.drop_path_rate=0.0", "--config.data.batch_size=16", "--config.training.num_epochs=2",
            "--config.training.max_steps_per_epoch=3", "--config.training.warmup_epochs=1",
            "--config.logging.progress_bar=false"]

SUPERVISED_PRESETS = ["quickstart", "mnist_cnn", "cifar_cnn", "vit_mnist", "vit_cifar"]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, shared_data_dir):
    workdir = tmp_path_factory.mktemp("quickstart")
    cfg = config_lib.load("configs/quickstart.py:smoke", ["--config.logging.progress_bar=false"])
    summary = train_lib.train(cfg, workdir)
    return workdir, summary


def test_run_writes_everything(quickstart_run):
    workdir, summary = quickstart_run
    for name in ("config.json", "data.json", "metrics.jsonl", "summary.json", "test_report.txt", "report.json",
                 "training_curves.png", "confusion_matrix.png"):
        assert (workdir / name).is_file(), name
    assert (workdir / "model").is_dir() and (workdir / "checkpoints").is_dir()
    on_disk = json.loads((workdir / "summary.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "epochs", "steps", "wall_s"):
        assert key in on_disk
    assert 0.0 <= on_disk["test_accuracy"] <= 1.0 and on_disk["steps"] == 2 and on_disk["epochs"] == 1
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert train_rows and {"loss", "accuracy", "lr", "grad_norm", "images_per_s"} <= set(train_rows[0])
    assert any(r["kind"] == "val" for r in rows)
    assert json.loads((workdir / "config.json").read_text())["experiment_name"] == "quickstart"
    # The report's confusion matrix counts every test image once.
    report = json.loads((workdir / "report.json").read_text())
    assert int(np.sum(report["final"]["test"]["confusion"])) == report["final"]["test"]["count"]


@pytest.mark.parametrize("preset", [p for p in SUPERVISED_PRESETS if p != "quickstart"])
def test_smoke_presets_train_end_to_end(preset, tmp_path, shared_data_dir):
    cfg = config_lib.load(f"configs/{preset}.py:smoke", ["--config.logging.progress_bar=false"])
    summary = train_lib.train(cfg, tmp_path)
    assert summary["steps"] == cfg.training.max_steps_per_epoch * cfg.training.num_epochs
    assert np.isfinite(summary["test_loss"]) and 0.0 <= summary["test_accuracy"] <= 1.0


def test_evaluate_and_predict_cli(quickstart_run, tmp_path):
    workdir, summary = quickstart_run
    from jaxkd import evaluate, predict

    report = evaluate.evaluate(workdir, "test", tta=False)
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-9)
    assert set(report["macro"]) == {"precision", "recall", "f1"} and len(report["per_class"]) == 10
    assert (workdir / "eval_test.png").is_file()
    tta = evaluate.evaluate(workdir, "test", tta=True)
    assert 0.0 <= tta["accuracy"] <= 1.0
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(2):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(p)
        paths.append(str(p))
    out = predict.predict(workdir, paths, explain=tmp_path / "explain")
    assert len(out) == 2 and len(out[0]["top5"]) == 5
    assert abs(sum(p for _, p in out[0]["top5"]) - 1) < 1  # probabilities, sorted
    assert Path(out[0]["explanation"]).is_file()


def _run(args, env_extra=None, timeout=600):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "jaxkd.train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _params(workdir: Path) -> dict:
    from jaxkd import interop
    from jaxkd.train import checkpoint

    model, _ = checkpoint.load(workdir)
    return interop.jax_to_torch(model)


def _max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)


def test_eight_devices_match_one(tmp_path):
    """The same run on 8 simulated CPU devices (batch split 8 ways) and on 1 device: same loss and parameters."""
    one, eight = tmp_path / "one", tmp_path / "eight"
    # A generous collective timeout: under heavy load the 8 device threads can take long to meet.
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
                          "--xla_cpu_collective_call_terminate_timeout_seconds=900"}
    r1 = _run(["--config", "configs/quickstart.py", "--workdir", str(one), *TINY_VIT])
    r8 = _run(["--config", "configs/quickstart.py", "--workdir", str(eight), *TINY_VIT], flags)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r8.returncode == 0, r8.stderr[-2000:]
    s1 = json.loads((one / "summary.json").read_text())
    s8 = json.loads((eight / "summary.json").read_text())
    assert s1["devices"] == 1 and s8["devices"] == 8
    diff = _max_diff(_params(one), _params(eight))
    print(f"8 devices vs 1: max param diff {diff:.2e}, test loss {s1['test_loss']:.6f} vs {s8['test_loss']:.6f}")
    assert diff < 1e-5
    assert abs(s1["test_loss"] - s8["test_loss"]) < 1e-5


def test_batch_not_divisible_by_devices_is_a_config_error(tmp_path):
    r = _run(["--config", "configs/quickstart.py", "--workdir", str(tmp_path / "w"), *TINY_VIT,
              "--config.data.batch_size=12"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert r.returncode == 2
    assert "'data.batch_size' = 12 is not divisible by the 8 devices" in r.stderr
    assert not (tmp_path / "w").exists()
