"""``python -m jaxkd.bench`` (models benchmark, GPU report): tiny runs end to end, their JSON / Markdown, and their
bad-input errors.

The run is the real benchmark in its smallest form (batch 4, one timed step, a 1-block DeiT), in a fresh process
so that ``--host-devices 2`` can split the CPU before jax starts; it checks the figures' keys, not their values.
``gpu-report --smoke`` runs every part of the GPU report on the CPU with tiny settings and checks the report's
sections.
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
    # (the MNIST CNN's row is test_gpu_report_smoke's: one model here keeps CI inside its budget)
    proc = _bench("--quick", "--models", "deit_kd", "--batch-size", "4", "--steps", "1", "--repeats", "1",
                  "--warmup", "0", "--host-devices", "2", "--config.vit.depth=1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time_ratio" in proc.stdout and "DeiT" in proc.stdout
    res = json.loads(out.read_text())
    meta = res["meta"]
    assert meta["devices"] == 2 and meta["host_devices"] == 2 and meta["precision"] == "float32"
    assert meta["torch_threads"] >= 1 and "xla_force_host_platform_device_count=2" in meta["xla_flags"]
    assert set(res["models"]) == {"deit_kd"}
    for r in res["models"].values():
        assert r["batch"] == 4
        for key in ("jaxkd_images_per_s", "torch_images_per_s", "time_ratio", "jaxkd_step_ms", "torch_step_ms"):
            assert r[key] > 0 and math.isfinite(r[key]), (key, r[key])
        assert r["time_ratio"] == pytest.approx(r["torch_images_per_s"] / r["jaxkd_images_per_s"])
        assert r["flops_per_step"] > 0 and r["params"] > 0
        # every torch variant is listed; the ratio is against the best of them
        assert set(r["torch_variants"]) == {"eager", "channels_last"}
        timed = {m: v["step_ms"] for m, v in r["torch_variants"].items() if "step_ms" in v}
        assert r["torch_best"] == min(timed, key=timed.get)
        assert r["torch_step_ms"] == pytest.approx(timed[r["torch_best"]])
        assert r["jaxkd_compile_s"] > 0 and all(v["first_step_s"] > 0 for v in r["torch_variants"].values())
    assert meta["torch_modes"] == ["eager", "channels_last"] and meta["torch_optim"] == "foreach"
    assert "channels_last ms" in proc.stdout and "best torch" in proc.stdout


@pytest.mark.parametrize("argv, message", [
    (["--device", "gpu", "--models", "mnist_cnn"], "no GPU"),
    (["--models", "resnet"], "unknown model"),
    (["--host-devices", "zero"], "--host-devices"),
    (["--before", "nope"], "--before"),
    (["--torch-modes", "eager,jit"], "--torch-modes"),
    (["--torch-optim", "fast"], "--torch-optim"),
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


def test_torch_variant_unavailable_or_failing_is_reported_not_fatal():
    import numpy as np

    from jaxkd import config as config_lib
    from jaxkd.bench._torch_side import TorchCase, VariantUnavailable, build_variants

    cfg = config_lib.load("deit_cifar", ["--config.distillation.enabled=False", "--config.vit.depth=1"])
    host = {"image": np.zeros((2, 32, 32, 3), np.float32), "label": np.zeros(2, np.int32)}
    with pytest.raises(VariantUnavailable):  # no CNN: channels_last would be eager again
        TorchCase(cfg, host["image"], host["label"], None, mode="channels_last")
    out = build_variants("deit_tiny", cfg, None, host, device="cpu", bf16=False, modes=["channels_last", "compile"],
                         compile_unavailable="no C++ compiler")
    assert "skipped" in out["channels_last"] and "case" not in out["channels_last"]
    assert out["compile"]["error"] == "torch.compile unavailable: no C++ compiler"


def test_models_table_lists_every_variant_and_failures():
    from jaxkd.bench.models import format_table

    meta = {"torch_modes": ["eager", "compile"], "device": "gpu", "host_devices": 1, "precision": "bfloat16",
            "torch_optim": "fused", "assumed_peak_flops": 990e12, "assumed_peak_source": "H200 datasheet"}
    row = {"model": "CIFAR CNN", "batch": 2048, "jaxkd_step_ms": 20.0, "time_ratio": 0.5, "torch_best": "eager",
           "jaxkd_tflops_per_s": 100.0, "mfu": 0.101,
           "torch_variants": {"eager": {"step_ms": 40.0}, "compile": {"error": "BackendCompilerFailed: no cc"}}}
    text = format_table({"cifar_cnn": row, "deit_kd": {"model": "DeiT KD", "skipped": "--max-total-s 10 reached"}},
                        meta)
    assert "40.0" in text and "failed" in text and "BackendCompilerFailed" in text and "10.1%" in text
    assert "ASSUMED peak of 990 TFLOP/s" in text and "skipped: --max-total-s" in text


def test_gpu_report_parses_pytest_output():
    from jaxkd.bench.gpu_report import _parse_pytest

    done = ("..F.s\nFAILED parity_tests/test_a.py::test_x[1] - AssertionError: big\n"
            "1 failed, 3 passed, 1 skipped in 9.1s")
    p = _parse_pytest(done)
    assert (p["passed"], p["failed"], p["skipped"], p["complete"]) == (3, 1, 1, True)
    assert p["failures"] == ["parity_tests/test_a.py::test_x[1]"]
    killed = _parse_pytest("bringing up nodes...\n..Fs.s.F.FF..FF")  # stopped by its time limit
    assert (killed["passed"], killed["failed"], killed["skipped"], killed["complete"]) == (7, 6, 2, False)


def test_gpu_report_smoke(tmp_path):
    out = tmp_path / "BENCH_GPU.md"
    proc = _bench("gpu-report", "--smoke", "--out", str(out), "--json", str(tmp_path / "r.json"), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    text = out.read_text()
    for heading in ("# jaxkd GPU report", "## Device and versions", "## Summary", "## 1. Parity suite on the device",
                    "## 2. Training step: jaxkd vs the best PyTorch setting", "## 3. Trainer vs its bare step",
                    "## 4. A short real training run", "## Parts"):
        assert heading in text, heading
    assert "Smoke run" in text and "| jax |" in text and "| torch |" in text
    for cmd in ("python -m pytest -q parity_tests/", "python -m jaxkd.bench models", "python -m jaxkd.train"):
        assert cmd in text, cmd
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["figures"]["parity"]["passed"] > 0 and res["figures"]["parity"]["failed"] == 0
    assert res["figures"]["models"]["models"]["mnist_cnn"]["time_ratio"] > 0
    assert res["figures"]["train"]["test_accuracy"] is not None
    for part in ("parity", "models", "train"):
        assert res["parts"][part]["rc"] == 0, (part, res["parts"][part])


def test_before_variants_change_one_model_instance_not_the_production_classes():
    """``--before`` re-classes the modules of the benchmark's own model; the production classes stay as they are and
    the earlier implementations compute the same function."""
    import jax
    import numpy as np
    from flax import nnx

    from jaxkd import config as config_lib
    from jaxkd import models
    from jaxkd.bench._jax_side import BEFORE, apply_before
    from jaxkd.models import attention, cnn, layers, vit

    originals = {c: c.__call__ for c in (layers.MaxPool2d, layers.Activation, cnn.ResidualBlock, vit.PatchEmbed,
                                         attention.Linear)}
    relu = cnn.relu
    changed = dict.fromkeys(BEFORE, 0)
    for preset, over, shape in (("mnist_cnn", [], (2, 28, 28, 1)),
                                ("deit_cifar", ["--config.vit.depth=1"], (2, 32, 32, 3))):
        cfg = config_lib.load(preset, over)
        plain = models.build(cfg, nnx.Rngs(0))
        plain.eval()
        assert apply_before(plain, ()) == 0
        x = jax.random.normal(jax.random.key(1), shape)
        want = np.asarray(plain(x))
        for name in BEFORE:  # one at a time: two of them replace the same module (PatchEmbed)
            before = models.build(cfg, nnx.Rngs(0))
            before.eval()
            changed[name] += apply_before(before, (name,))
            np.testing.assert_allclose(np.asarray(before(x)), want, rtol=1e-4, atol=1e-5, err_msg=name)
        assert all(type(n).__module__ != "jaxkd.bench._jax_side" for _, n in nnx.iter_graph(plain))
    assert all(changed.values()), changed
    assert {c: c.__call__ for c in originals} == originals and cnn.relu is relu


def test_report_renders_bench_md_from_json(tmp_path):
    """BENCH.md is rendered from the benchmarks' --json files (and bench_results/quoted.json), not kept in
    docstrings."""
    import argparse

    from jaxkd.bench import report

    meta = {"device": "cpu", "device_kind": "cpu", "cores": 2, "host_devices": 1, "precision": "float32",
            "torch_modes": ["eager"], "torch_optim": "foreach", "xla_flags": ""}
    row = {"model": "MNIST CNN", "batch": 16, "jaxkd_step_ms": 12.5, "time_ratio": 1.1, "torch_best": "eager",
           "torch_variants": {"eager": {"step_ms": 11.4}}}
    (tmp_path / "models_cpu.json").write_text(json.dumps({"meta": meta, "models": {"mnist_cnn": row}}))
    (tmp_path / "trainer.json").write_text(json.dumps({"setting": "quick", "presets": [
        {"preset": "cifar_cnn", "ratio": 0.93, "rounds": [1, 2]}]}))
    out = tmp_path / "BENCH.md"
    report.run(argparse.Namespace(inputs=[str(tmp_path / "models_cpu.json"), str(tmp_path / "trainer.json")],
                                  out=str(out)))
    text = out.read_text()
    assert "## models_cpu" in text and "MNIST CNN" in text and "12.5" in text and "1.10" in text
    assert "## trainer" in text and "| preset | ratio |" in text and "| cifar_cnn | 0.93 |" in text
    assert "## Earlier figures" in text  # bench_results/quoted.json


def test_no_benchmark_figures_in_docstrings():
    """Figures and commit hashes go stale in docstrings: they belong in BENCH.md (python -m jaxkd.bench report).
    (The presets in jaxkd/configs/ are not code: their docstrings state the run's measured time and accuracy.)"""
    import re

    pattern = re.compile(r"\b\d+(\.\d+)? ?-> ?\d+(\.\d+)?\b|\b\d+(\.\d+)? ?(ms|img/s|images/s)\b|"
                         r"\bbefore [0-9a-f]{7,40}\b|\b\d+ ?% (of the|faster|slower)")
    bad = []
    for path in sorted(p for p in (ROOT / "jaxkd").rglob("*.py") if "configs" not in p.relative_to(ROOT).parts):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if (text.startswith(("#", '"""')) or not re.match(r"^[\w(\[{]", text) or "``" in text) \
                    and pattern.search(text) and "{" not in text:
                bad.append(f"{path.relative_to(ROOT)}:{i}: {text}")
    assert not bad, "\n".join(bad)


def test_writers_bench_reports_each_writer(tmp_path, capsys):
    """`python -m jaxkd.bench writers` (in-process: no JAX step involved): metrics.jsonl alone, with TensorBoard and
    with W&B (offline) timed in one run, ratios consistent."""
    from jaxkd.bench.__main__ import main

    out = tmp_path / "w.json"
    assert main(["writers", "--rows", "5", "--gap-ms", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert res["jsonl_us_per_row"] > 0
    for name in ("tensorboard", "wandb"):
        assert res[f"{name}_ratio"] == pytest.approx(res[f"with_{name}_us_per_row"] / res["jsonl_us_per_row"])
        assert f"+ {name} " in text
