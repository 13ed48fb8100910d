"""``python -m jaxkd.bench trainer --quick`` on CPU with a tiny preset: it runs, and its JSON holds the three
throughputs and their ratio per preset (no timing assertions: performance claims come from the benchmark itself)."""

from __future__ import annotations

import json
import math

from jaxkd.bench.__main__ import main

TINY = ["--config.distillation.enabled=False", "--config.vit.depth=1", "--config.vit.embed_dim=16",
        "--config.vit.num_heads=2", "--config.data.augmentation.randaugment.enabled=True",
        "--config.data.augmentation.cutout.enabled=True", "--config.data.augmentation.cutout.length=4",
        "--config.data.augmentation.mixup.enabled=True"]


def test_bench_trainer_quick_json(tmp_path, capsys):
    out = tmp_path / "trainer.json"
    rc = main(["trainer", "--quick", "--device", "cpu", "--presets", "quickstart_kd", "--batch-size", "8",
               "--steps", "1", "--json", str(out), *TINY])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trainer/step" in printed and "quickstart_kd" in printed
    result = json.loads(out.read_text())
    assert result["setting"] == "quick" and result["device"]["backend"] == "cpu"
    r = result["presets"]["quickstart_kd"]
    assert r["batch"] == 8 and r["model"].startswith("deit") and r["teacher"] is None
    assert {"randaugment", "cutout", "mixup"} <= set(r["augmentation"])
    for key in ("step_images_per_s", "pipeline_images_per_s", "trainer_images_per_s", "ratio", "pipeline_share",
                "pipeline_share_cpu"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert math.isclose(r["ratio"], r["trainer_images_per_s"] / r["step_images_per_s"], rel_tol=1e-9)
    assert r["pipeline_share"] < 1


def test_bench_trainer_bad_arguments(capsys):
    assert main(["trainer", "--device", "tpu"]) == 2
    assert "--device" in capsys.readouterr().err
