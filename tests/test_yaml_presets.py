"""The original project's presets, imported and trained (issue 20, item 3).

The original's YAML files are not here, so this module writes YAML files shaped like each of them from SPEC.md §7
(every key of every section it uses, with the original's key names, the PyTorch machinery fields included) and §6
(each preset's recipe): the CNN on MNIST and CIFAR-10 with their "improved" and test variants, ViT and DeiT on MNIST
and CIFAR-10, token distillation from DINOv2 and its CE-only ablation. §6 gives no values for the "improved"
variants: theirs are plausible stand-ins that exercise more of the config (plateau and step schedules, CutMix on
MNIST, MixUp with CutMix, gradient accumulation, fp16, W&B, track_grad_norm false). A test variant is its base preset
run briefly on the CPU, quietly (log levels WARNING and debug).

Each YAML is imported with ``jaxkd.convert.from_yaml`` (no --ignore-unsupported), and each imported preset trains
for 2 steps (one epoch, no warm-ups) on tiny random data of its dataset's shape, with a tiny ViT in place of the
ViT-Tiny and the MNIST-variant AdaptiveCNN in place of the 17.6 M-parameter CIFAR one; the imported recipe is
otherwise run as imported. The DeiT presets distil from the CNN preset trained before them in the same test (the
original's workflow: train the CNN, point teacher_checkpoint at it), the token-distillation presets from a tiny
DINOv2-architecture teacher written here. Each of three groups (the MNIST CNNs with their DeiT, the same for
CIFAR-10, the other ViTs) is one test, so that its runs share compiled programs (a test variant, shrunk to the same
tiny size as its base preset, runs the base's programs again) and the groups can run in parallel.

The notes each import prints (one per PyTorch machinery field) are printed as a Markdown table (``pytest -s``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from jaxkd import config as config_lib
from jaxkd.convert import from_yaml

# ----------------------------------------------------------------------------------------------------------------
# The YAMLs

NORMALIZATION = {"mnist": {"mean": [0.1307], "std": [0.3081]},
                 "cifar": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}}
PIPELINES = {  # SPEC §5: the original's training pipelines, as its YAMLs switch them on
    "mnist": {"random_rotation": True, "random_affine": True, "randaugment": True, "randaugment_n": 2,
              "randaugment_m": 9, "cutout": True, "mixup": False, "cutmix": False},
    "cifar": {"random_crop": True, "random_flip": True, "color_jitter": True, "auto_augment": True,
              "randaugment": True, "randaugment_n": 2, "randaugment_m": 9, "cutout": True, "mixup": False,
              "mixup_alpha": 1.0, "cutmix": False, "cutmix_alpha": 1.0},
}
CLS_TOKEN_DROPOUT = 0.1  # the original's DeiT MNIST YAML (SPEC §7)


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def _cnn(name: str, dataset: str, **changes) -> dict:
    """Every section of the original's YAML with every key (SPEC §7 defaults), then the preset's changes."""
    base = {
        "experiment_name": name, "seed": 42, "output_dir": "./outputs", "device": "cuda",
        "data": {"dataset": dataset, "batch_size": 64, "data_path": "./data", "num_workers": 4, "pin_memory": True,
                 "persistent_workers": True, "prefetch_factor": 2, "normalization": NORMALIZATION[dataset],
                 "augmentation": PIPELINES[dataset]},
        "model": {"model_type": "adaptive_cnn", "in_channels": 1 if dataset == "mnist" else 3, "num_classes": 10,
                  "dropout": 0.5, "use_se": True, "architecture": [], "classifier_layers": []},
        "training": {"num_epochs": 10, "learning_rate": 1e-3, "weight_decay": 5e-4, "optimizer": "adamw",
                     "scheduler": "cosine", "warmup_epochs": 5, "gradient_clip_val": 1.0,
                     "gradient_accumulation_steps": 1, "use_amp": True, "amp_backend": "native",
                     "early_stopping": True, "early_stopping_patience": 10, "early_stopping_min_delta": 0.001,
                     "lr_scheduler_params": {}, "label_smoothing": 0.1, "use_swa": True, "swa_start_epoch": 0.75,
                     "swa_lr": 5e-4, "use_bf16": True, "use_compile": True, "compile_mode": "max-autotune",
                     "use_fused_optimizer": True, "use_tf32": True},
        "logging": {"log_level": "INFO", "log_dir": "./logs", "wandb": False, "wandb_project": "adaptive-cnn",
                    "wandb_entity": None, "save_frequency": 5, "track_grad_norm": True},
    }
    return _merge(base, changes)


def _vit(name: str, dataset: str, dist_token: bool, recipe: dict, **changes) -> dict:
    """A ViT / DeiT YAML: the model and vit sections, the dataset's ViT recipe, then the preset's changes."""
    mnist = dataset == "mnist"
    vit = {"model": {"model_type": "deit"},
           "vit": {"variant": "tiny", "img_size": 28 if mnist else 32, "patch_size": 2 if mnist else 4,
                   "embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 2.0, "drop_rate": 0.0,
                   "attn_drop_rate": 0.0, "drop_path_rate": 0.1, "distillation": dist_token,
                   "convert_grayscale": True, "use_conv_stem": True, "cls_token_dropout": 0.0,
                   "inference_mode": "avg" if dist_token else "cls"}}
    return _merge(_merge(_cnn(name, dataset, **vit), recipe), changes)


KD = {"teacher_model_type": "adaptive_cnn", "distillation_type": "hard", "alpha": 0.5, "tau": 3.0,
      "distillation_warmup_epochs": 5, "alpha_schedule": "cosine", "alpha_start": 0.0, "alpha_end": 0.6}
SS = {"teacher_type": "dinov2", "teacher_model_name": "dinov2_vits14", "token_layers": [6, 11], "projection_dim": 256,
      "lambda_tok": 1.0, "token_loss_type": "cosine", "lambda_rel": 0.1, "correlation_temperature": 0.1,
      "correlation_loss_type": "kl", "use_pooled_correlation": True, "rel_warmup_epochs": 10,
      "projector_warmup_epochs": 0}
MNIST_VIT = {"data": {"batch_size": 512}, "training": {"num_epochs": 20, "weight_decay": 0.05}}
CIFAR_VIT = {"data": {"batch_size": 1024, "augmentation": {"mixup": True, "mixup_alpha": 0.8}},
             "training": {"num_epochs": 100, "learning_rate": 2e-3, "weight_decay": 0.05}}

CNN_MNIST = _cnn("cnn_mnist", "mnist", data={"batch_size": 4096}, training={
    "num_epochs": 20, "learning_rate": 0.08, "lr_scheduler_params": {"T_max": 20, "eta_min": 1e-6}})
CNN_CIFAR = _cnn("cnn_cifar", "cifar", data={"batch_size": 2048, "augmentation": {"cutmix": True}}, training={
    "num_epochs": 40, "learning_rate": 0.8, "optimizer": "sgd", "lr_scheduler_params": {"T_max": 40}})
# A test variant: its base preset run briefly on the CPU, quietly (and, once shrunk here, the same programs)
QUICK = {"device": "cpu", "data": {"batch_size": 128, "num_workers": 0, "persistent_workers": False},
         "training": {"num_epochs": 2, "warmup_epochs": 1, "use_compile": False}, "logging": {"save_frequency": 1}}

PRESETS = {  # name -> (the test that trains it, YAML document); a DeiT preset after the CNN it distils from
    "cnn_mnist": ("mnist_cnn", CNN_MNIST),
    "cnn_mnist_improved": ("mnist_cnn", _cnn("cnn_mnist_improved", "mnist", data={
        "batch_size": 2048, "augmentation": {"cutmix": True, "cutmix_alpha": 1.0}}, training={
        "num_epochs": 30, "learning_rate": 2e-3, "scheduler": "plateau", "early_stopping_patience": 15,
        "lr_scheduler_params": {"factor": 0.5, "patience": 3}, "label_smoothing": 0.05, "swa_start_epoch": 0.8},
        logging={"track_grad_norm": False})),
    "cnn_mnist_test": ("mnist_cnn", _merge(CNN_MNIST, {"experiment_name": "cnn_mnist_test", **QUICK,
                                                       "logging": {**QUICK["logging"], "log_level": "WARNING"}})),
    "cnn_cifar": ("cifar_cnn", CNN_CIFAR),
    "cnn_cifar_improved": ("cifar_cnn", _cnn("cnn_cifar_improved", "cifar", data={
        "batch_size": 1024, "augmentation": {"mixup": True, "mixup_alpha": 0.2, "cutmix": True}}, training={
        "num_epochs": 60, "learning_rate": 0.1, "optimizer": "sgd", "scheduler": "step", "use_bf16": False,
        "gradient_accumulation_steps": 2, "lr_scheduler_params": {"step_size": 20, "gamma": 0.2}}, logging={
        "wandb": True, "wandb_entity": "kd-lab"})),
    "cnn_cifar_test": ("cifar_cnn", _merge(CNN_CIFAR, {"experiment_name": "cnn_cifar_test", **QUICK,
                                                       "logging": {**QUICK["logging"], "log_level": "debug"}})),
    "vit_mnist": ("vit", _vit("vit_mnist", "mnist", False, MNIST_VIT)),
    "vit_cifar": ("vit", _vit("vit_cifar", "cifar", False, CIFAR_VIT)),
    "deit_mnist": ("mnist_cnn", _vit("deit_mnist", "mnist", True, MNIST_VIT, vit={
        "cls_token_dropout": CLS_TOKEN_DROPOUT}, distillation={
        "teacher_checkpoint": "./outputs/cnn_mnist/best_model.pth", **KD})),
    "deit_cifar": ("cifar_cnn", _vit("deit_cifar", "cifar", True, CIFAR_VIT, distillation={
        "teacher_checkpoint": "./outputs/cnn_cifar/best_model.pth", **KD})),
    "deit_ss_cifar": ("vit", _vit("deit_ss_cifar", "cifar", True, _merge(CIFAR_VIT, {
        "data": {"batch_size": 256}, "training": {"learning_rate": 1e-3}}), ss_distillation=SS)),
    "deit_ss_cifar_ce_only": ("vit", _vit("deit_ss_cifar_ce_only", "cifar", True, _merge(CIFAR_VIT, {
        "data": {"batch_size": 256}, "training": {"learning_rate": 1e-3}}), ss_distillation={
        **SS, "lambda_tok": 0.0, "lambda_rel": 0.0})),
}
TEACHERS = {"deit_mnist": "cnn_mnist", "deit_cifar": "cnn_cifar"}  # the CNN preset a DeiT preset distils from
# CI trains a fixed sample (the CNN on both datasets, the ViT, both distillation modes with a teacher trained before
# its student, track_grad_norm false, log_level DEBUG): every run compiles its own programs, and all twelve cost
# about 5 CPU-minutes. JAXKD_TEST_ALL_PRESETS=1 trains all twelve (and checks log_level WARNING and the offline W&B
# run too). Every one of the twelve is imported in every run.
CI_SAMPLE = ("cnn_mnist", "cnn_mnist_improved", "deit_mnist", "cnn_cifar_test", "vit_cifar", "deit_ss_cifar")


def trained(group: str) -> list[str]:
    """The presets of `group` this run trains, in order."""
    every = os.environ.get("JAXKD_TEST_ALL_PRESETS") == "1"
    return [n for n, (g, _) in PRESETS.items() if g == group and (every or n in CI_SAMPLE)]


def _torch_fields(doc: dict) -> list[str]:
    """The PyTorch machinery fields a YAML holds (sorted)."""
    from jaxkd.interop.yaml_import import NO_EQUIVALENT

    return sorted(k for k in config_lib.flatten(doc) if k in NO_EQUIVALENT)


@pytest.fixture(scope="module")
def yaml_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("original_yaml")
    for name, (_, doc) in PRESETS.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


def _import(yaml_dir: Path, out_dir: Path, name: str) -> tuple[config_lib.ConfigDict, list[str]]:
    notes: list[str] = []
    cfg = from_yaml(yaml_dir / f"{name}.yaml", out_dir / f"{name}.py", log=notes.append)
    return cfg, notes


def _preset_notes(py: Path) -> list[str]:
    """The "Notes:" bullets of an imported preset's docstring (what the import decided beyond the field mapping)."""
    doc = py.read_text().split('"""')[1]
    body = doc.split("\nNotes:\n", 1)[1] if "\nNotes:\n" in doc else ""
    return [" ".join(b.split()) for b in ("\n" + body).split("\n- ")[1:]]


def test_every_preset_imports_with_one_note_per_torch_field(yaml_dir, tmp_path):
    rows = ["| preset | `note:` lines printed (a PyTorch machinery field each: its value) | the preset's notes |",
            "| --- | --- | --- |"]
    cfgs = {}
    for name, (_, doc) in PRESETS.items():
        cfg, notes = cfgs[name] = _import(yaml_dir, tmp_path, name)
        fields = _torch_fields(doc)
        assert sorted(n.split(" = ", 1)[0].removeprefix("note: ") for n in notes) == fields, name
        assert all(n.startswith("note: ") and "\n" not in n for n in notes)
        printed = ", ".join(f"`{n.removeprefix('note: ').split(' is PyTorch machinery')[0]}`" for n in notes)
        rows.append(f"| {name} | {len(notes)}: {printed} | {' '.join(_preset_notes(tmp_path / f'{name}.py'))} |")
        a, t, log = cfg.data.augmentation, cfg.training, cfg.logging
        assert (a.randaugment.enabled, a.randaugment.num_ops, a.randaugment.magnitude) == (True, 2, 9), name
        assert a.cutout.length == (8 if doc["data"]["dataset"] == "mnist" else 16), name  # SPEC §5
        assert t.early_stopping.patience == doc["training"]["early_stopping_patience"], name
        assert log.log_level == doc["logging"]["log_level"].upper() and log.wandb == doc["logging"]["wandb"], name
        assert log.track_grad_norm == doc["logging"]["track_grad_norm"], name
        assert log.wandb_entity == (doc["logging"]["wandb_entity"] or "") and log.log_dir == "./logs", name
    c = {n: cfg for n, (cfg, _) in cfgs.items()}  # name -> imported config
    assert c["vit_cifar"].data.augmentation.mixup.alpha == 0.8 and c["deit_cifar"].data.augmentation.mixup.alpha == 0.8
    assert c["cnn_cifar_improved"].data.augmentation.mixup.enabled  # MixUp takes precedence over CutMix
    assert not c["cnn_cifar_improved"].data.augmentation.cutmix.enabled
    assert c["cnn_cifar_improved"].training.lr_scheduler_params.step_size == 20
    assert c["cnn_mnist"].training.lr_scheduler_params.eta_min == 1e-6
    assert c["cnn_mnist_improved"].training.lr_scheduler_params.factor == 0.5
    assert c["deit_mnist"].vit.cls_token_dropout == CLS_TOKEN_DROPOUT
    assert c["deit_cifar"].distillation.enabled and c["deit_ss_cifar"].ss_distillation.enabled
    print("\n" + "\n".join(rows))
    if not CLS_TOKEN_DROPOUT:
        print("deit_mnist: vit.cls_token_dropout written as 0 (the original's 0.1 awaits its implementation)")


# ----------------------------------------------------------------------------------------------------------------
# Training the imported presets: one interpreter per group runs its presets one after another (jaxkd.train.loop.train
# in-process, sharing compiled programs). A child interpreter, because XLA reads its flags when its backend starts:
# these runs check that the imported recipes train, not XLA's code quality, so they compile without LLVM's
# optimisations (about half the compile time, which is nearly all of these runs' time).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
DATA_SHAPES = {"mnist": (28, 28, 1), "cifar": (32, 32, 3)}
# Tiny data and model, one epoch of 2 steps (so no warm-ups); the imported recipe otherwise as imported.
TINY = ["--config.logging.log_dir=",  # (the YAMLs say ./logs: TensorBoard files stay in the workdir)
        "--config.data.batch_size=8", "--config.data.val_size=8", "--config.training.num_epochs=1",
        "--config.training.max_steps_per_epoch=2", "--config.training.warmup_epochs=0",
        "--config.logging.progress_bar=false"]
TINY_VIT = ["--config.vit.variant=custom", "--config.vit.embed_dim=16", "--config.vit.depth=1",
            "--config.vit.num_heads=2"]
TINY_SS = ["--config.ss_distillation.teacher_model_name=dinov2_custom", "--config.ss_distillation.teacher_num_heads=2",
           "--config.ss_distillation.teacher_img_size=28", "--config.ss_distillation.token_layers=[0]",
           "--config.ss_distillation.projection_dim=16", "--config.ss_distillation.projection_hidden_dim=16"]


def _tiny_data(path: Path, shape: tuple[int, int, int]) -> Path:
    """24 training images (8 of them held out for validation: 2 batches of 8 remain) and 8 test images."""
    rng = np.random.default_rng(0)
    squeeze = (lambda a: a[..., 0]) if shape[2] == 1 else (lambda a: a)
    np.savez(path, x_train=squeeze(rng.integers(0, 256, (24, *shape), dtype=np.uint8)), y_train=np.arange(24) % 10,
             x_test=squeeze(rng.integers(0, 256, (8, *shape), dtype=np.uint8)), y_test=np.arange(8) % 10)
    return path


def _tiny_dinov2(path: Path) -> Path:
    """A DINOv2-architecture teacher (D 32, depth 2, 2 heads, patch 14, 28 px) in the official weight layout."""
    from flax import nnx

    from jaxkd.interop import jax_to_torch
    from jaxkd.models.dinov2 import DinoVisionTransformer

    np.savez(path, **jax_to_torch(DinoVisionTransformer(embed_dim=32, depth=2, num_heads=2, patch_size=14,
                                                        img_size=28, rngs=nnx.Rngs(0))))
    return path


def _overrides(cfg, name: str, data: Path, workdirs: dict[str, Path], dinov2: Path | None) -> list[str]:
    out = [*TINY, f"--config.data.source=npz:{data}"]
    if cfg.model.model_type == "adaptive_cnn":
        out.append("--config.model.cnn_variant=mnist")  # 709 K parameters instead of the CIFAR variant's 17.6 M
    else:
        out += TINY_VIT
    if cfg.distillation.enabled:
        out += [f"--config.distillation.teacher_checkpoint={workdirs[TEACHERS[name]]}",
                "--config.distillation.distillation_warmup_epochs=0"]
    if cfg.ss_distillation.enabled:
        out += [*TINY_SS, f"--config.ss_distillation.teacher_checkpoint={dinov2}"]
    return out


def run_group(group: str, yaml_dir: Path, work: Path) -> list[dict]:
    """Imports and trains the group's presets in order; one record per preset for the test's assertions."""
    import contextlib
    import io
    import time

    from jaxkd.train import loop as train_lib

    train_lib.reporting.plot_training_curves = lambda *a, **k: None  # (the plots: tests/test_train.py's business)
    train_lib.reporting.plot_confusion_matrix = lambda *a, **k: None
    names = trained(group)
    datasets = {PRESETS[n][1]["data"]["dataset"] for n in names}
    data = {d: _tiny_data(work / f"{d}.npz", DATA_SHAPES[d]) for d in sorted(datasets)}
    ss = any("ss_distillation" in PRESETS[n][1] for n in names)
    dinov2 = _tiny_dinov2(work / "dinov2.npz") if ss else None
    workdirs: dict[str, Path] = {}
    records = []
    for name in names:
        t0 = time.time()
        imported, _ = _import(yaml_dir, work, name)
        cfg = config_lib.load(str(work / f"{name}.py"),
                              _overrides(imported, name, data[imported.data.dataset], workdirs, dinov2))
        workdirs[name] = work / name
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            summary = train_lib.train(cfg, workdirs[name])
        rows = [json.loads(x) for x in (workdirs[name] / "metrics.jsonl").read_text().splitlines()]
        records.append({
            "name": name, "steps": summary["steps"], "test_loss": summary["test_loss"], "stdout": out.getvalue(),
            "stderr": err.getvalue(), "train_rows": [r for r in rows if r["kind"] == "train"],
            "log_level": cfg.logging.log_level, "wandb": cfg.logging.wandb,
            "wandb_runs": len(list((workdirs[name] / "wandb").glob("offline-run-*"))),
            "track_grad_norm": cfg.logging.track_grad_norm, "wall_s": time.time() - t0,
            "what": f"{cfg.model.model_type}, {config_lib.precision(cfg)}, {cfg.training.optimizer}, "
                    f"{cfg.training.scheduler}"})
    return records


@pytest.mark.parametrize("group", ["mnist_cnn", "cifar_cnn", "vit"])
def test_imported_presets_train(group, yaml_dir, tmp_path):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip(),
               JAX_PLATFORMS="cpu")
    out = tmp_path / "records.json"
    r = subprocess.run([sys.executable, __file__, group, str(yaml_dir), str(tmp_path), str(out)], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    records = json.loads(out.read_text())
    # DEBUG: JAX logs each compilation (jax.log_compiles; its log handler writes to the interpreter's own stderr)
    assert ("Finished XLA compilation" in r.stderr) == any(x["log_level"] == "DEBUG" for x in records)
    assert [x["name"] for x in records] == trained(group)
    for x in records:
        name, train_rows = x["name"], x["train_rows"]
        assert x["steps"] == 2 and math.isfinite(x["test_loss"]), name
        assert len(train_rows) == 1 and all(math.isfinite(row["loss"]) for row in train_rows), name
        # logging.track_grad_norm: the gradient norm is logged unless the YAML turned it off
        assert all(("grad_norm" in row) == x["track_grad_norm"] for row in train_rows), name
        # logging.log_level: WARNING keeps the trainer's progress and report lines off; logging.wandb: true logs to
        # an offline W&B run in the workdir
        assert ("test accuracy" in x["stdout"]) == (x["log_level"] in ("DEBUG", "INFO")), name
        assert ("first step done" in x["stderr"]) == (x["log_level"] in ("DEBUG", "INFO")), name
        assert x["wandb_runs"] == int(x["wandb"]), name
        print(f"{name}: {x['steps']} steps, test loss {x['test_loss']:.3f}, {x['wall_s']:.1f} s ({x['what']})")


if __name__ == "__main__":  # the child of test_imported_presets_train: GROUP YAML_DIR WORKDIR OUT_JSON
    from jaxkd.cache import enable_compilation_cache

    config_lib.add_cpu_xla_flags()
    enable_compilation_cache()
    group_, yaml_dir_, work_, out_ = sys.argv[1:5]
    Path(out_).write_text(json.dumps(run_group(group_, Path(yaml_dir_), Path(work_))))
