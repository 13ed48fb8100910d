"""``python -m jaxkd.bench`` (models benchmark): a tiny run end to end, its JSON, and its bad-input errors.

The run is the real benchmark in its smallest form (batch 4, one timed step, a 1-block DeiT), in a fresh process
so that ``--host-devices 2`` can split the CPU before jax starts; it checks the figures' keys, not their values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(*argv, timeout=240):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "jaxkd.bench", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_models_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _bench("--quick", "--models", "mnist_cnn,deit_kd", "--batch-size", "4", "--steps", "1", "--repeats", "1",
                  "--warmup", "0", "--host-devices", "2", "--config.vit.depth=1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time_ratio" in proc.stdout and "MNIST CNN" in proc.stdout
    res = json.loads(out.read_text())
    meta = res["meta"]
    assert meta["devices"] == 2 and meta["host_devices"] == 2 and meta["precision"] == "float32"
    assert meta["torch_threads"] >= 1 and "xla_force_host_platform_device_count=2" in meta["xla_flags"]
    assert set(res["models"]) == {"mnist_cnn", "deit_kd"}
    for r in res["models"].values():
        assert r["batch"] == 4
        for key in ("jaxkd_images_per_s", "torch_images_per_s", "time_ratio", "jaxkd_step_ms", "torch_step_ms"):
            assert r[key] > 0 and math.isfinite(r[key]), (key, r[key])
        assert r["time_ratio"] == pytest.approx(r["torch_images_per_s"] / r["jaxkd_images_per_s"])
        assert r["flops_per_step"] > 0 and r["params"] > 0
    assert res["models"]["deit_kd"]["flops_per_step"] > res["models"]["mnist_cnn"]["flops_per_step"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "gpu", "--models", "mnist_cnn"], "no GPU"),
    (["--models", "resnet"], "unknown model"),
    (["--host-devices", "zero"], "--host-devices"),
    (["--before", "nope"], "--before"),
])
def test_models_bad_input(argv, message):
    env_has_gpu = False
    if argv[:2] == ["--device", "gpu"]:
        import jax

        env_has_gpu = jax.default_backend() == "gpu"
    if env_has_gpu:
        pytest.skip("a GPU is present")
    proc = _bench(*argv, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_profile_summary_groups_by_kind():
    from jaxkd.bench.profile import op_kind, summarize_trace

    assert op_kind("transpose_copy_fusion.69") == "transpose_copy_fusion"
    assert op_kind("convolution-base-dilated.5") == "convolution-base-dilated"
    assert op_kind("ynn_fusion") == "ynn_fusion"
    events = [
        {"ph": "X", "name": "add_fusion.1", "dur": 3000}, {"ph": "X", "name": "add_fusion.2", "dur": 1000},
        {"ph": "X", "name": "dot.7", "dur": 6000}, {"ph": "X", "name": "add_fusion.1", "dur": 2000},
        {"ph": "X", "name": "$api.py:10 block_until_ready", "dur": 99000},  # Python frame: not an XLA op
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 99000},  # runtime span: not an XLA op
        {"ph": "i", "name": "marker"},
    ]
    s = summarize_trace(events, n_steps=2)
    assert [k["kind"] for k in s["kinds"]] == ["add_fusion", "dot"]
    assert s["kinds"][0]["ms_per_step"] == pytest.approx(3.0) and s["kinds"][0]["ops"] == 2
    assert s["ops"][0] == {"op": "dot.7", "ms_per_step": pytest.approx(3.0)}
    assert s["traced_ms_per_step"] == pytest.approx(6.0)


def test_profile_tiny_run(tmp_path):
    out = tmp_path / "profile.json"
    proc = _bench("profile", "--models", "mnist_cnn", "--batch-size", "4", "--steps", "1", "--warmup", "0",
                  "--top", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "--xla_cpu_enable_xprof_traceme=true" in res["meta"]["xla_flags"]
    r = res["models"]["mnist_cnn"]
    assert r["batch"] == 4 and r["step_ms"] > 0 and r["kinds"] and r["ops"]
    assert 0 < r["traced_ms_per_step"] and sum(k["ms_per_step"] for k in r["kinds"]) == pytest.approx(
        r["traced_ms_per_step"])
    assert "MNIST CNN (batch 4)" in proc.stdout and "ms/step" in proc.stdout


def test_profile_bad_model():
    proc = _bench("profile", "--models", "resnet", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unknown model" in lines[0], proc.stderr
