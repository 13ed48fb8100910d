"""The later CNN teachers (../shared/spec/LATER.md §2) in the one trainer: ResNet-18 trained as a model of its own
(configs/cifar_resnet18.py:smoke, 2 steps) and then the frozen teacher, from that workdir, of a DeiT
(configs/deit_cifar_resnet18.py:smoke, 2 steps), with jaxkd.predict's Grad-CAM of the teacher between the two;
teachers from PyTorch files (torch_ref's ResNet-18 as .safetensors, the original's ConvNeXt best_model.pth with its
`model.` prefix) compute what torch computes.

The trained pairs run in one child interpreter on tiny CIFAR-shaped data (24 random images), compiled without
LLVM's optimisations as tests/test_yaml_presets.py does: they check that the presets train, not XLA's code, and
compilation is nearly all of their time. The ConvNeXt V2 pair (its teacher from a timm-layout ImageNet file through
model.pretrained_path) takes about 100 s (cold, 2 idle cores), so it runs only with JAXKD_TEST_ALL_PRESETS=1 (as
that file's full sweep does) or JAXKD_TEST_ALL=1; ConvNeXt's numerics are parity_tests/test_convnext_parity.py's.
The ResNet pair is one of conftest.py's HEAVY units (a whole-suite run keeps a seeded sample of them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkd import config as config_lib
from jaxkd.tasks import kd as distill

ALL = "1" in (os.environ.get("JAXKD_TEST_ALL_PRESETS"), os.environ.get("JAXKD_TEST_ALL"))
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
PAIRS = {"resnet18": ("cifar_resnet18", "deit_cifar_resnet18"), "convnextv2": ("cifar_convnextv2",
                                                                                "deit_cifar_convnextv2")}
TINY = ["--config.logging.progress_bar=false", "--config.data.val_size=8", "--config.data.max_examples=0"]


def _tiny_cifar(path: Path) -> Path:
    """24 training images (8 held out for validation: 2 batches of 8 remain) and 8 test images, 32×32×3."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), y_train=np.arange(24) % 10,
             x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_test=np.arange(8) % 10)
    return path


def _imagenet_file(path: Path) -> Path:
    """timm's convnextv2_tiny ImageNet layout (4×4 stem, 1000 classes) with torch_ref's random weights."""
    import torch
    from safetensors.torch import save_file

    from torch_ref.convnext import ConvNeXtV2

    torch.manual_seed(0)
    sd = ConvNeXtV2(3, 1000).state_dict()
    sd["stem.0.weight"] = torch.zeros(96, 3, 4, 4)  # (timm's ImageNet stem: replaced, never copied)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def run_pair(pair: str, work: Path) -> dict:
    """Trains the pair's teacher preset (smoke) and then its DeiT from the teacher's workdir; what the test checks."""
    from jaxkd.train import checkpoint
    from jaxkd.train import loop as train_lib

    train_lib.reporting.plot_training_curves = lambda *a, **k: None  # (plots: tests/test_train.py's business)
    train_lib.reporting.plot_confusion_matrix = lambda *a, **k: None
    teacher_preset, student_preset = PAIRS[pair]
    data = [*TINY, f"--config.data.source=npz:{_tiny_cifar(work / 'cifar.npz')}"]
    extra = [f"--config.model.pretrained_path={_imagenet_file(work / 'model.safetensors')}"] if pair == "convnextv2" \
        else []
    teacher = work / teacher_preset

    def digest() -> str:
        model, _ = checkpoint.load(teacher)
        return checkpoint.params_sha256(nnx.state(model, (nnx.Param, nnx.BatchStat)))

    out = {"teacher": train_lib.train(config_lib.load(f"{teacher_preset}:smoke", data + extra), teacher)}
    out["teacher_config"] = json.loads((teacher / "config.json").read_text())
    from PIL import Image

    from jaxkd import predict

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(work / "x.png")
    out["predict"] = predict.predict(teacher, [str(work / "x.png")], explain=work / "explain")  # (Grad-CAM)
    before = digest()
    cfg = config_lib.load(f"{student_preset}:smoke", data + [f"--config.distillation.teacher_checkpoint={teacher}"])
    out["student"] = train_lib.train(cfg, work / student_preset)
    out["teacher_unchanged"] = digest() == before
    rows = [json.loads(x) for x in (work / student_preset / "metrics.jsonl").read_text().splitlines()]
    out["student_train_row"] = [r for r in rows if r["kind"] == "train"][-1]
    out["student_val_row"] = [r for r in rows if r["kind"] == "val"][-1]
    return out


@pytest.mark.parametrize("pair", [
    "resnet18",
    pytest.param("convnextv2", marks=pytest.mark.skipif(
        not ALL, reason="the ConvNeXt V2 pair takes ~100 s: JAXKD_TEST_ALL_PRESETS=1 or "
                        "JAXKD_TEST_ALL=1 runs it"))])
def test_teacher_preset_trains_and_a_deit_distils_from_it(pair, tmp_path):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip(),
               JAX_PLATFORMS="cpu")
    out = tmp_path / "records.json"
    r = subprocess.run([sys.executable, __file__, pair, str(tmp_path), str(out)], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads(out.read_text())
    params = {"resnet18": 11_173_962, "convnextv2": 27_870_730}[pair]
    assert rec["teacher"]["steps"] == 2 and rec["teacher"]["params"] == params
    assert np.isfinite(rec["teacher"]["test_loss"])
    assert rec["teacher_config"]["model"]["model_type"] == {"resnet18": "resnet18_cifar",
                                                            "convnextv2": "convnext_v2_tiny"}[pair]
    (pred,) = rec["predict"]
    assert len(pred["top5"]) == 5 and Path(pred["explanation"]).is_file()  # jaxkd.predict's Grad-CAM of the teacher
    if pair == "convnextv2":
        assert "194 ImageNet tensors copied" in r.stderr  # the run's note: the stem and the head are new
    assert rec["student"]["steps"] == 2 and np.isfinite(rec["student"]["test_loss"])
    assert rec["teacher_unchanged"]  # frozen: weights and BatchNorm statistics as the teacher's run left them
    assert {"teacher_accuracy", "teacher_agreement", "teacher_kl"} <= set(rec["student_val_row"])
    assert rec["student_train_row"]["alpha"] == pytest.approx(0.5)  # soft KD, α 0.5 (no KD warm-up in smoke)


def _teacher_cfg(kind: str, path: Path):
    return config_lib.load("configs/deit_cifar_resnet18.py:smoke", [
        f"--config.distillation.teacher_model_type={kind}", f"--config.distillation.teacher_checkpoint={path}"])


def test_teachers_from_pytorch_files(tmp_path):
    """torch_ref's ResNet-18 written as .safetensors loads as a distillation teacher (eval mode) that gives torch's
    logits (<= 1e-5); torch_ref's ConvNeXt V2 written as the original's best_model.pth ({'model_state_dict':
    {'model.stem.0.weight': ...}}) loads with every tensor as torch's (its logits: test_convnext_parity.py)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from jaxkd.interop import jax_to_torch
    from torch_ref.convnext import ConvNeXtV2
    from torch_ref.resnet import ResNet18CIFAR

    torch.manual_seed(0)
    resnet = ResNet18CIFAR(3, 10).eval()
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(tmp_path / "resnet18.safetensors"))
    teacher = distill.load_kd_teacher(_teacher_cfg("resnet18_cifar", tmp_path / "resnet18.safetensors"), 10,
                                      (32, 32, 3))
    assert teacher.kind == "classifier" and "resnet18.safetensors" in teacher.description
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = resnet(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    got = np.asarray(nnx.jit(lambda m, v: m(v))(teacher.model(), jnp.asarray(x)))
    diff = float(np.max(np.abs(got - want)))
    print(f"resnet18_cifar teacher from .safetensors: logits max|diff| vs torch = {diff:.3e}")
    assert diff <= 1e-5

    convnext = ConvNeXtV2(3, 10)
    torch.save({"epoch": 99, "model_state_dict": {f"model.{k}": v for k, v in convnext.state_dict().items()}},
               tmp_path / "best_model.pth")
    teacher = distill.load_kd_teacher(_teacher_cfg("convnext_v2_tiny", tmp_path / "best_model.pth"), 10, (32, 32, 3))
    held = jax_to_torch(teacher.model())
    assert held.keys() == convnext.state_dict().keys()
    assert all(np.array_equal(held[k], v.numpy()) for k, v in convnext.state_dict().items())


if __name__ == "__main__":  # the child interpreter of test_teacher_preset_trains_and_a_deit_distils_from_it
    pair_, work_, out_ = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    from jaxkd.cache import enable_compilation_cache

    config_lib.add_cpu_xla_flags()
    enable_compilation_cache()
    out_.write_text(json.dumps(run_pair(pair_, work_), default=float))
