"""`python -m jaxkd.analyze` end to end, in-process (`main([...])`), on the tiniest finished runs: a distilled
2-block DeiT (4×4 patch grid, CLS + DIST; configs/quickstart_kd.py:smoke, narrowed) whose config names its CNN
teacher as a torch_ref state dict (the MNIST AdaptiveCNN: its stage outputs are what CKA reads), and a CNN workdir
(configs/quickstart.py:smoke).

The workdirs hold what a finished run leaves for the analysis, as `jaxkd.convert from-torch` writes it (config.json,
data.json, model/), from seeded torch_ref weights placed without a random initialisation
(jaxkd.interop.state_dict.model_from_torch): training them, even for 2 steps, compiles a training step and its
evaluations (76 s cold on 2 busy cores for the student alone), and convert's random initialisation of the CNN costs
~35 s more; the analysis reads nothing else of a run. The analysis of really trained runs is the README's
quickstart-pair command. Settings are cut to the bone (n = 24, 2-4 Hutchinson probes, 2 eigenvalues): this checks
the command, its defaults and its files, not the numbers (tests/test_analyze.py and
parity_tests/test_analyze_parity.py do). Bad input to the command: the `analyze-*` rows of
tests/bad_input_cases.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from jaxkd.analyze.__main__ import main

TINY_KD = ["--config.vit.embed_dim=16", "--config.vit.depth=2", "--config.vit.num_heads=2"]
FAST = ["--num-samples", "24", "--chunk-size", "16", "--min-probes", "2", "--max-probes", "4", "--top-k", "2",
        "--no-progress"]


def _workdir(preset: str, overrides: list[str], state_dict, out: Path) -> Path:
    """A finished run's workdir for `preset` holding `state_dict` (the files jaxkd.convert from-torch writes)."""
    from flax import nnx

    from jaxkd import config as config_lib
    from jaxkd import models
    from jaxkd.convert import data_meta
    from jaxkd.interop.state_dict import model_from_torch
    from jaxkd.train import checkpoint, reporting, steps

    cfg = config_lib.load(preset, overrides)
    model = model_from_torch(lambda: models.build(cfg, nnx.Rngs(0)), state_dict)
    _, _, params, rest = steps.split_model(model)
    out.mkdir(parents=True)
    (out / "config.json").write_text(config_lib.to_json(cfg) + "\n")
    reporting.write_json_atomic(out / "data.json", data_meta(cfg))
    checkpoint.export_model(out / "model", params, rest)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    import torch

    from torch_ref.cnn import AdaptiveCNN
    from torch_ref.vit import DeiT

    root = tmp_path_factory.mktemp("analyze")
    torch.manual_seed(0)
    teacher = AdaptiveCNN("mnist", in_channels=1, num_classes=10).state_dict()
    torch.save(teacher, root / "teacher.pth")
    student = DeiT(img_size=8, patch_size=2, in_channels=1, num_classes=10, embed_dim=16, depth=2, num_heads=2,
                   mlp_ratio=2.0, convert_grayscale=False).state_dict()
    return {"student": _workdir("configs/quickstart_kd.py:smoke", TINY_KD + [
                f"--config.distillation.teacher_checkpoint={root / 'teacher.pth'}"], student, root / "student"),
            "cnn": _workdir("configs/quickstart.py:smoke", [], teacher, root / "cnn")}


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


def test_defaults_all_metrics_on_the_validation_split(runs, capsys):
    assert main([str(runs["student"]), *FAST]) == 0
    out = runs["student"] / "analysis"  # the default --out for one workdir
    res = json.loads((out / "analysis.json").read_text())
    assert set(res) == {"settings", "runs", "wall_s", "figures"}
    assert res["settings"]["split"] == "validation" and res["settings"]["metrics"] == ["attention", "heads", "cka",
                                                                                        "hessian"]
    run = res["runs"]["student"]
    assert run["split"] == "validation" and run["split_size"] == 180  # quickstart's data.val_size: not the test split
    assert run["num_samples"] == 24 and run["model_type"] == "deit" and run["skipped"] == {}
    a = run["attention"]
    assert a["grid"] == [4, 4] and a["num_prefix_tokens"] == 2 and len(a["layer_distances"]) == 2
    assert len(a["head_distances"]) == 2 and len(a["head_distances"][0]) == 2
    h = run["heads"]
    assert set(h["per_head"]) == {"mean_distance", "entropy", "cls_dispersion", "cls_self_attention"}
    assert 0 <= h["collapsed_heads_ratio"] <= 1 and h["num_heads_total"] == 4
    c = run["cka"]
    assert c["layers"] == ["block0", "block1"]
    assert set(c["self"]) == {"linear/unbiased", "linear/biased", "rbf/unbiased", "rbf/biased"}
    assert c["teacher"]["model_type"] == "AdaptiveCNN"
    assert c["teacher"]["layers"] == ["stem", "stage1", "stage2", "stage3"]
    assert all(len(m) == 2 and len(m[0]) == 4 for m in c["teacher"]["matrices"].values())
    assert max(abs(v) for m in c["teacher"]["matrices"].values() for row in m for v in row) > 0.01  # not zeros
    hs = run["hessian"]
    assert "no label smoothing" in hs["loss"] and 2 <= hs["trace"]["probes"] <= 4 and hs["trace"]["stderr"] > 0
    assert len(hs["top_eigenvalues"]["eigenvalues"]) == 2 and hs["num_params"] == run["num_params"]
    assert _finite(run)
    for name in res["figures"]:
        assert (out / name).stat().st_size > 1000
    assert set(res["figures"]) == {"cka_student.png", "attention_distances.png", "locality_spectrum.png",
                                   "hessian.png", "forensics_summary.png"}
    printed = capsys.readouterr().out
    assert "attention distance (patches)" in printed and "Hessian: trace" in printed


def test_test_split_on_request_a_cnn_run_and_an_explicit_teacher(runs, tmp_path):
    out = tmp_path / "cmp"
    assert main([str(runs["student"]), str(runs["cnn"]), "--names", "vit", "cnn", "--metrics", "attention,cka",
                 "--kernels", "linear", "--hsic", "unbiased", "--split", "test", "--teacher", str(runs["cnn"]),
                 "--out", str(out), *FAST]) == 0
    res = json.loads((out / "analysis.json").read_text())
    vit, cnn = res["runs"]["vit"], res["runs"]["cnn"]
    for run in (vit, cnn):
        assert run["split"] == "test" and run["split_size"] == 360 and "hessian" not in run
        assert set(run["cka"]["self"]) == {"linear/unbiased"}
    assert "attention" in vit and "attention" not in cnn and "attention" in cnn["skipped"]
    assert cnn["cka"]["layers"] == ["stem", "stage1", "stage2", "stage3"]
    assert "jaxkd workdir" in vit["cka"]["teacher"]["description"]  # --teacher's, not the config's .pth
    assert cnn["cka"]["teacher"]["model_type"] == "AdaptiveCNN"  # (a CNN against itself: CKA 1 on the diagonal)
    assert all(abs(row[i] - 1) < 1e-6 for i, row in enumerate(cnn["cka"]["teacher"]["matrices"]["linear/unbiased"]))
    assert {"cka_comparison.png", "cka_vit.png", "cka_cnn.png", "attention_distances.png",
            "locality_spectrum.png"} == set(res["figures"])
