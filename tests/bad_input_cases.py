"""The bad-input table of tests/test_bad_input.py: one row per case (CLI, arguments, what the error line must
say, and what the row prepares in its tmp_path). The test, its shared assets and its watchdog are in
tests/test_bad_input.py."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# The shared finished run: a tiny ViT on the embedded digits (1 epoch, 2 steps); workdir rows rerun these args.
VIT_ARGS = ["--config", "configs/quickstart.py", "--config.model.model_type=deit", "--config.vit.variant=custom",
            "--config.vit.img_size=8", "--config.vit.patch_size=2", "--config.vit.embed_dim=16",
            "--config.vit.depth=1", "--config.vit.num_heads=2", "--config.vit.distillation=false",
            "--config.vit.inference_mode=cls", "--config.data.batch_size=16", "--config.training.num_epochs=1",
            "--config.training.max_steps_per_epoch=2", "--config.training.warmup_epochs=0",
            "--config.logging.progress_bar=false"]
QS = ["--config", "configs/quickstart.py:smoke", "--workdir", "{work}", "--config.logging.progress_bar=false"]
KD = ["--config", "configs/quickstart_kd.py:smoke", "--workdir", "{work}", "--config.logging.progress_bar=false"]
SS = KD + ["--config.distillation.enabled=false", "--config.ss_distillation.enabled=true",
           "--config.vit.inference_mode=cls", "--config.ss_distillation.token_layers=[0,1]"]
NPZ = ["--config.data.source=npz:{tmp}/d.npz"]
FIVE = NPZ + ["--config.model.num_classes=5", "--config.data.val_size=20", "--config.data.batch_size=16"]
FOLDER = ["--config.data.source=folder:{tmp}/imgs"]

# ----------------------------------------------------------------------------------------------------------------
# Inputs a row prepares in its tmp_path `t`


def _npz(t: Path, classes: int = 10, **replace) -> None:
    """t/d.npz: 8x8 grayscale uint8 images, int64 labels 0..classes-1; `replace` swaps arrays (None drops one)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (300, 8, 8), dtype=np.uint8), "y_train": np.arange(300) % classes,
              "x_test": rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), "y_test": np.arange(60) % classes}
    arrays.update(replace)
    np.savez(t / "d.npz", **{k: v for k, v in arrays.items() if v is not None})


def _png(path: Path, size=(8, 8), seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)).save(path)


def _truncated_jpeg(path: Path) -> None:
    """A real JPEG cut in half (an interrupted copy): the header parses, the image data ends early."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _folder(t: Path, corrupt: bool = False, sizes: bool = False, no_test: bool = False) -> None:
    """t/imgs/split/class/image with 8x8 PNGs; optionally a truncated JPEG, a 9x9 image, or no test/ split."""
    for split in ("train",) + (() if no_test else ("test",)):
        for c in ("a", "b"):
            for i in range(3):
                _png(t / "imgs" / split / c / f"{i}.png", seed=i)
    if corrupt:
        _truncated_jpeg(t / "imgs" / "train" / "b" / "broken.jpg")
    if sizes:
        _png(t / "imgs" / "train" / "a" / "big.png", size=(9, 9))


def _no_wandb(t: Path) -> None:
    """A `wandb` package that fails to import as a missing one does (found first on the row's PYTHONPATH)."""
    (t / "shadow" / "wandb").mkdir(parents=True)
    (t / "shadow" / "wandb" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'wandb'\", name='wandb')\n")


def _garbage(path: Path, data: bytes = b"\x00 not what the name says \xff" * 10) -> None:
    path.write_bytes(data)


def _corrupt_tree(d: Path) -> None:
    for f in d.rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0garbage")


def _pth_wrong_keys(t: Path) -> None:
    import torch

    torch.save({"model_state_dict": {"conv.weight": torch.zeros(4, 1, 3, 3), "fc.bias": torch.zeros(10)}},
               t / "teacher.pth")


def _safetensors(path: Path, shapes: dict) -> None:
    """A .safetensors file of zeros with these keys and shapes (what a hub file of that model holds)."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(s, np.float32) for k, s in shapes.items()}, str(path))


# timm's resnet50 and vit_small_patch16_224 (no DINOv2 LayerScale / mask token): their first keys, as timm writes them
TIMM_RESNET = {"conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "layer1.0.conv1.weight": (64, 64, 1, 1),
               "fc.weight": (1000, 2048)}
TIMM_VIT = {"cls_token": (1, 1, 384), "pos_embed": (1, 197, 384), "blocks.0.attn.qkv.weight": (1152, 384)}


def _hf_snapshot(t: Path, model_type: str = "dinov2", d: int = 8) -> None:
    """t/models--org--TYPE with refs/main -> snapshots/r: config.json (2 heads) + model.safetensors of a 1-block
    Dinov2Model of width d, or ViTModel keys (google/vit-*) for model_type 'vit'."""
    snap = t / f"models--org--{model_type}" / "snapshots" / "r"
    blocks = (["layernorm_before", "intermediate.dense"] if model_type == "vit" else
              ["norm1", "norm2", "attention.output.dense", "mlp.fc2", "layer_scale1", "layer_scale2"]
              + [f"attention.attention.{n}" for n in ("query", "key", "value")])
    shapes = {f"encoder.layer.0.{n}.{'lambda1' if 'scale' in n else 'weight'}": (d,) if "norm" in n or "scale" in n
              else (d, d) for n in blocks}
    shapes.update({"encoder.layer.0.mlp.fc1.weight": (4 * d, d), "embeddings.cls_token": (1, 1, d),
                   "embeddings.position_embeddings": (1, 17, d), "embeddings.patch_embeddings.projection.weight":
                   (d, 3, 14, 14), **{k.replace(".weight", ".bias"): (d,) for k in shapes if "norm" in k}})
    _safetensors(snap / "model.safetensors", shapes)
    (snap / "config.json").write_text(json.dumps({"model_type": model_type, "num_attention_heads": 2}))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("r")


def _mnist_idx_truncated(t: Path) -> None:
    """The four MNIST idx .gz files, the training images cut short (an interrupted download)."""
    (t / "idx").mkdir()
    for name, ndim, shape in (("train-images-idx3-ubyte", 3, (100, 28, 28)), ("train-labels-idx1-ubyte", 1, (100,)),
                              ("t10k-images-idx3-ubyte", 3, (20, 28, 28)), ("t10k-labels-idx1-ubyte", 1, (20,))):
        body = bytes(int(np.prod(shape)) // (2 if name.startswith("train-images") else 1))
        raw = bytes([0, 0, 8, ndim]) + b"".join(int(s).to_bytes(4, "big") for s in shape) + body
        (t / "idx" / f"{name}.gz").write_bytes(gzip.compress(raw))


def _original_run(t: Path, optimizer: str = "adamw", epoch: int = 1, change=None) -> None:
    """t/checkpoint_epoch_{epoch + 1}.pth in the original's training-checkpoint format, of torch_ref's MNIST-variant
    AdaptiveCNN (configs/quickstart.py's model) after one optimiser step (AdamW with the preset's learning rate and
    weight decay, or SGD); `change(ckpt)` spoils it first."""
    import torch

    from torch_ref import cnn as tcnn

    torch.manual_seed(0)
    model = tcnn.AdaptiveCNN("mnist", 1, 10)
    opt = (torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4) if optimizer == "adamw" else
           torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    ckpt = {"epoch": epoch, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "best_val_acc": 50.0, "metrics_history": {"val_loss": [2.0] * (epoch + 1)}}
    if change is not None:
        change(ckpt)
    torch.save(ckpt, t / f"checkpoint_epoch_{epoch + 1}.pth")


def _drop_optimizer_state(ckpt: dict, keep: int = 20) -> None:
    """Keeps the optimiser state of the first `keep` parameters only (a file cut short when it was written)."""
    state = ckpt["optimizer_state_dict"]["state"]
    for i in [i for i in state if i >= keep]:
        del state[i]


def _drop_model_keys(ckpt: dict) -> None:
    sd = ckpt["model_state_dict"]
    for k in list(sd)[len(sd) // 2:]:
        del sd[k]


def _transpose_moment(ckpt: dict) -> None:
    """exp_avg of the first parameter (the stem conv, OIHW (32, 1, 3, 3)) saved in another layout (HWIO)."""
    entry = ckpt["optimizer_state_dict"]["state"][0]
    entry["exp_avg"] = entry["exp_avg"].permute(2, 3, 1, 0).contiguous()


RESUME = ["from-torch", "--config", "configs/quickstart.py", "--out", "{out}", "--resume", "--torch"]

PEER_YAML = """experiment_name: cnn_mnist
data: {dataset: mnist, batch_size: 64, num_workers: 8}
model: {model_type: adaptive_cnn, num_classes: 10}
training: {num_epochs: 2, learning_rate: 0.001, optimizer: adamw, use_compile: true}
"""


def _yaml(t: Path, text: str = PEER_YAML) -> None:
    (t / "peer.yaml").write_text(text)


def _preset(t: Path, line3: str, first: str = "x = 1") -> None:
    """t/p.py: a user's config file, `first` on line 1, get_config on line 2, `line3` its body."""
    (t / "p.py").write_text(f"{first}\ndef get_config(arg=None):\n{line3}\n")


# ----------------------------------------------------------------------------------------------------------------
# The table


@dataclasses.dataclass(frozen=True)
class Case:
    cli: str  # module after 'jaxkd.'
    args: tuple[str, ...]  # formatted with {tmp}, {work}, {out} and the asset copies {vit}, {cnn}, {pth10}, ...
    expect: tuple[str, ...]  # substrings of the error line (formatted likewise): the problem and the fix
    prep: Callable[[Path], None] | None = None
    env: tuple[tuple[str, str], ...] = ()
    subprocess: str = ""  # non-empty: run as `python -m jaxkd.<cli>` in a fresh interpreter, for this reason


def C(id_: str, cli: str, args, expect, prep=None, env=None, subprocess=""):
    """A row; `subprocess` (a one-line reason) runs it in a fresh interpreter instead of in the pytest worker."""
    case = Case(cli, tuple(args), tuple(expect), prep, tuple((env or {}).items()), subprocess)
    return pytest.param(case, id=id_)


NO_MODEL = ["no exported model in {vit}/model", "run the same train command again"]

CASES = [
    # --- config: names, types, values ---------------------------------------------------------------------------
    C("config-unknown-field", "train", QS + ["--config.training.frobnicate=1"],
      ["unknown config field 'training.frobnicate'", "did you mean"],
      subprocess="train's precheck, before JAX is imported: nothing that importing prints gets in"),
    C("config-typo-suggestion", "train", QS + ["--config.training.learning_rat=0.1"],
      ["'training.learning_rat'", "did you mean 'training.learning_rate'"]),
    C("config-unknown-section", "train", QS + ["--config.optimizer.lr=0.1"],
      ["unknown config field 'optimizer.lr'", "did you mean 'training.optimizer'"]),
    C("config-float-for-int", "train", QS + ["--config.training.num_epochs=1.5"],
      ["'training.num_epochs' = 1.5 has type float", "expected int"]),
    C("config-not-a-literal", "train", QS + ["--config.training.learning_rate=fast"],
      ["'training.learning_rate' = 'fast'", "not a valid float literal"]),
    C("config-bad-bool", "train", QS + ["--config.training.use_swa=maybe"],
      ["'training.use_swa' = 'maybe'", "expected a bool (true / false)"]),
    C("config-bad-list", "train", QS + ["--config.data.normalization.mean=[0.5,"],
      ["'data.normalization.mean' = '[0.5,'", "not a valid list[float] literal"]),
    C("config-override-without-value", "train", QS + ["--config.training.learning_rate"],
      ["--config.training.learning_rate", "needs the form --config.section.field=value"]),
    C("config-log-dir-is-a-file", "train", QS + ["--config.logging.log_dir={tmp}/f"],
      ["config field 'logging.log_dir' {tmp}/f is a file", "give a folder"], prep=lambda t: _garbage(t / "f")),
    C("config-profile-steps-outside-the-run", "train", QS + ["--config.logging.profile_steps=[5,9]"],
      ["'logging.profile_steps' = [5, 9] traces steps 5..8", "the run has 2 training steps", "e.g. [2, 3]"]),
    C("config-profile-steps-reversed", "train", QS + ["--config.logging.profile_steps=[4,2]"],
      ["'logging.profile_steps' = [4.0, 2.0]", "[start, stop] with 1 <= start < stop"]),
    C("config-wandb-not-installed", "train", QS + ["--config.logging.wandb=true"],
      ["config field 'logging.wandb' is true but the wandb package is not installed",
       "pip install -e '.[wandb]'", "--config.logging.wandb=false"], prep=_no_wandb,
      env={"PYTHONPATH": "{tmp}/shadow" + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONDONTWRITEBYTECODE": "1"},
      subprocess="wandb is hidden by a package on PYTHONPATH that fails to import, read at interpreter start"),
    C("config-negative-lr", "train", QS + ["--config.training.learning_rate=-0.1"],
      ["'training.learning_rate' = -0.1", "must be in (0, inf]"]),
    C("config-drop-rate-1", "train", QS + ["--config.vit.drop_rate=1.0"],
      ["'vit.drop_rate' = 1.0", "must be in [0, 1)"]),
    C("config-warmup-ge-epochs", "train", QS + ["--config.training.warmup_epochs=1"],
      ["'training.warmup_epochs' = 1", "must be in [0, training.num_epochs = 1)"]),
    C("config-patch-size", "train", KD + ["--config.vit.patch_size=3"],
      ["'vit.patch_size' = 3", "must divide vit.img_size = 8 (allowed: 1, 2, 4, 8)"]),
    C("config-heads", "train", KD + ["--config.vit.num_heads=3"],
      ["'vit.num_heads' = 3", "must divide vit.embed_dim = 64 (allowed: 1, 2, 4, 8, 16, 32, 64)"]),
    C("config-unknown-choice", "train", QS + ["--config.data.dataset=imagenet"],
      ["'data.dataset' = 'imagenet'", "must be one of 'mnist', 'cifar', 'digits', 'custom'"]),
    C("config-unknown-vit-variant", "train", QS + ["--config.vit.variant=huge"],
      ["'vit.variant' = 'huge'", "must be one of 'tiny', 'small', 'base', 'custom'"]),
    C("config-variant-contradiction", "train", QS + ["--config.vit.embed_dim=96"],
      ["'vit.embed_dim' / 'vit.num_heads' = 96 / 3 contradict vit.variant 'tiny'", "use vit.variant=custom"]),
    C("config-channels-vs-dataset", "train", QS + ["--config.model.in_channels=3"],
      ["'model.in_channels' = 3 does not match data.dataset 'digits'", "set --config.model.in_channels=1"]),
    C("config-bad-source-kind", "train", QS + ["--config.data.source=s3:bucket/digits"],
      ["'data.source' = 's3:bucket/digits'", "must be 'digits' or one of 'tfds:...', 'npz:...'"]),
    C("config-norm-length", "train", QS + ["--config.data.normalization.mean=[0.5,0.5]",
                                           "--config.data.normalization.std=[0.5]"],
      ["'data.normalization.mean' = [0.5, 0.5]", "must have as many entries as data.normalization.std"]),
    C("config-dist-inference-without-dist-token", "train", QS + ["--config.vit.distillation=false"],
      ["'vit.inference_mode' = 'avg' needs vit.distillation = true", "use 'cls'"]),
    C("config-both-distillation-modes", "train", SS + ["--config.distillation.enabled=true",
                                                      "--config.ss_distillation.teacher_checkpoint=t.pth"],
      ["'distillation.enabled' and 'ss_distillation.enabled' are both true", "choose one mode"]),
    C("config-kd-cnn-student", "train", KD + ["--config.model.model_type=adaptive_cnn"],
      ["distillation trains a DeiT student", "set --config.model.model_type=deit"]),
    C("config-ss-token-layers-vs-depth", "train", SS + ["--config.ss_distillation.teacher_checkpoint=t.pth",
                                                        "--config.ss_distillation.token_layers=[2,9]"],
      ["'ss_distillation.token_layers' = [2, 9]", "block indices in [0, vit.depth = 4)"]),
    C("config-ss-img-size-not-14", "train", SS + ["--config.ss_distillation.teacher_checkpoint=t.pth",
                                                  "--config.ss_distillation.teacher_img_size=100"],
      ["'ss_distillation.teacher_img_size' = 100", "multiple of the DINOv2 patch size 14 (e.g. 224)"]),
    C("config-ss-negative-lambda-cka", "train", SS + ["--config.ss_distillation.teacher_checkpoint=t.pth",
                                                      "--config.ss_distillation.use_cka_loss=true",
                                                      "--config.ss_distillation.lambda_cka=-0.5"],
      ["'ss_distillation.lambda_cka' = -0.5", "must be in [0, inf]"]),
    C("config-ss-unknown-cka-kernel", "train", SS + ["--config.ss_distillation.teacher_checkpoint=t.pth",
                                                     "--config.ss_distillation.cka_kernel_type=poly"],
      ["'ss_distillation.cka_kernel_type' = 'poly'", "must be one of 'linear', 'rbf'"]),
    C("config-ss-unknown-structural-option", "train", SS + ["--config.ss_distillation.teacher_checkpoint=t.pth",
                                                            "--config.ss_distillation.gram_norm=l1"],
      ["'ss_distillation.gram_norm' = 'l1'", "must be one of 'squared', 'frobenius'"]),
    C("config-ss-cls-only-with-token-cka", "train", SS + ["--config.ss_distillation.teacher_checkpoint=t.pth",
                                                          "--config.ss_distillation.use_cls_only=true",
                                                          "--config.ss_distillation.token_loss_type=cka_linear"],
      ["'ss_distillation.token_loss_type' = 'cka_linear'", "use_cls_only gives one (class) token per image",
       "--config.ss_distillation.token_loss_type=cosine"]),
    C("config-ss-cls-only-unpooled-correlation", "train", SS + [
        "--config.ss_distillation.teacher_checkpoint=t.pth", "--config.ss_distillation.use_cls_only=true",
        "--config.ss_distillation.use_pooled_correlation=false"],
      ["'ss_distillation.use_pooled_correlation' = false", "--config.ss_distillation.use_pooled_correlation=true"]),
    C("config-unknown-preset-variant", "train", ["--config", "configs/quickstart.py:bogus", "--workdir", "{work}"],
      ["config file 'configs/quickstart.py' failed in get_config('bogus')",
       "ValueError: unknown variant 'bogus' (known: smoke)"]),
    C("config-file-name-error", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["config file '{tmp}/p.py' failed in get_config(None) ({tmp}/p.py, line 3)",
       "NameError: name 'base' is not defined", "fix the file"], prep=lambda t: _preset(t, "    return base()")),
    C("config-file-syntax-error", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["config file '{tmp}/p.py' failed on import ({tmp}/p.py, line 3)", "SyntaxError"],
      prep=lambda t: _preset(t, "    return (")),
    C("config-file-missing-module", "train", ["--config", "{tmp}/p.py:smoke", "--workdir", "{work}"],
      ["config file '{tmp}/p.py' failed on import ({tmp}/p.py, line 1)",
       "ModuleNotFoundError: No module named 'no_such_module'"],
      prep=lambda t: _preset(t, "    return None", first="import no_such_module")),
    C("config-file-not-a-configdict", "summary", ["--config", "{tmp}/p.py"],
      ["config file '{tmp}/p.py': get_config must return an ml_collections.ConfigDict"],
      prep=lambda t: _preset(t, "    return {}")),
    C("data-folder-empty-class", "train", QS + FOLDER + ["--config.model.num_classes=3"],
      ["folder:{tmp}/imgs: class folder(s) train/c hold no images", "add the images or remove the folder(s)"],
      prep=lambda t: (_folder(t), (t / "imgs" / "train" / "c").mkdir())),
    C("config-file-zero-division", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["({tmp}/p.py, line 3): ZeroDivisionError: division by zero"], prep=lambda t: _preset(t, "    return 1 / 0")),
    C("config-file-without-get-config", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["config file '{tmp}/p.py' has no get_config(arg=None) function"],
      prep=lambda t: (t / "p.py").write_text("x = 1\n")),
    C("config-file-typo-inside", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["unknown config field 'training.learnin_rate'", "did you mean 'training.learning_rate'"],
      prep=lambda t: _preset(t, "    c = base_config()\n    c.training.learnin_rate = 0.1\n    return c",
                             first="from jaxkd.config import base_config")),
    C("summary-config-file-syntax-error", "summary", ["--config", "{tmp}/p.py"],
      ["config file '{tmp}/p.py' failed on import", "SyntaxError"], prep=lambda t: _preset(t, "    return (")),
    C("config-nan-learning-rate", "train", QS + ["--config.training.learning_rate=nan"],
      ["'training.learning_rate' = 'nan': not a valid float literal"]),
    C("config-inf-epochs", "train", QS + ["--config.training.num_epochs=inf"], ["'training.num_epochs'"]),
    C("config-list-for-float", "train", QS + ["--config.training.learning_rate=[0.1]"],
      ["'training.learning_rate'", "float"]),
    C("config-empty-choice", "train", QS + ["--config.training.optimizer="], ["'training.optimizer'", "adamw"]),
    C("config-negative-batch", "train", QS + ["--config.data.batch_size=-8"], ["'data.batch_size' = -8"]),
    C("config-zero-epochs", "train", QS + ["--config.training.num_epochs=0"], ["'training.num_epochs' = 0"]),
    C("config-negative-skip-nonfinite", "train", QS + ["--config.training.skip_nonfinite_updates=-1"],
      ["'training.skip_nonfinite_updates' = -1"]),
    C("config-bad-log-level", "train", QS + ["--config.logging.log_level=LOUD"],
      ["'logging.log_level' = 'LOUD'", "must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"]),
    C("config-section-typo", "train", QS + ["--config.trainig.learning_rate=0.1"],
      ["unknown config field 'trainig.learning_rate'", "did you mean 'training.learning_rate'"]),
    C("workdir-empty", "train", ["--config", "configs/quickstart.py:smoke", "--workdir", ""],
      ["--workdir is empty", "give a folder"]),
    C("workdir-blank", "train", ["--config", "configs/quickstart.py:smoke", "--workdir", "  "],
      ["--workdir is empty", "give a folder"]),
    C("train-without-config-flag", "train", ["--workdir", "{work}"],
      ["python -m jaxkd.train: the following arguments are required: --config", "--help"]),
    C("train-unknown-flag", "train", QS + ["--epochs", "3"], ["unrecognized arguments: --epochs 3", "--help"]),
    C("summary-without-config-flag", "summary", [], ["the following arguments are required: --config"],
      subprocess="summary from a fresh interpreter: past the precheck, Flax and the models imported"),
    C("evaluate-bad-split", "evaluate", ["--workdir", "{tmp}/w", "--split", "dev"], ["invalid choice: 'dev'"]),
    C("convert-without-command", "convert", [], ["python -m jaxkd.convert", "required"]),
    C("evaluate-out-is-a-file", "evaluate", ["--workdir", "{tmp}/w", "--out", "{tmp}/f"],
      ["--out {tmp}/f is a file; give a folder"], prep=lambda t: _garbage(t / "f")),
    C("predict-explain-is-a-file", "predict", ["--workdir", "{tmp}/w", "{tmp}/x.png", "--explain", "{tmp}/f"],
      ["--explain {tmp}/f is a file; give a folder"], prep=lambda t: _garbage(t / "f")),
    C("convert-from-yaml-out-is-a-folder", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}"],
      ["--out {tmp} is a folder; give a file name"], prep=_yaml),
    C("convert-to-torch-out-empty", "convert", ["to-torch", "--workdir", "{tmp}/w", "--out", ""],
      ["--out is empty: give a file name"]),
    C("config-file-recursion", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["({tmp}/p.py, line 3): RecursionError"], prep=lambda t: _preset(t, "    return get_config(arg)")),
    C("config-file-key-error", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["({tmp}/p.py, line 3): KeyError: 'model'"], prep=lambda t: _preset(t, "    return {}['model']")),
    C("config-file-assertion", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["({tmp}/p.py, line 3): AssertionError: use :big"],
      prep=lambda t: _preset(t, "    assert arg == 'big', 'use :big'")),
    C("config-file-returns-none", "train", ["--config", "{tmp}/p.py", "--workdir", "{work}"],
      ["get_config must return an ml_collections.ConfigDict"], prep=lambda t: _preset(t, "    return None")),
    C("config-bool-for-int", "train", QS + ["--config.training.num_epochs=true"],
      ["'training.num_epochs' = 'true': not a valid int literal"]),
    C("config-number-for-choice", "train", QS + ["--config.training.scheduler=1"],
      ["'training.scheduler' = '1' must be one of 'cosine'"]),
    C("config-overflowing-float", "train", QS + ["--config.training.learning_rate=1e309"],
      ["'training.learning_rate' = inf must be finite"]),
    C("config-label-smoothing-above-1", "train", QS + ["--config.training.label_smoothing=1.5"],
      ["'training.label_smoothing' = 1.5 must be in [0, 1)"]),
    C("config-negative-val-size", "train", QS + ["--config.data.val_size=-5"], ["'data.val_size' = -5"]),
    C("config-log-every-0", "train", QS + ["--config.training.log_every_steps=0"],
      ["'training.log_every_steps' = 0 must be in [1, inf]"]),
    C("config-keep-no-checkpoints", "train", QS + ["--config.logging.keep_checkpoints=0"],
      ["'logging.keep_checkpoints' = 0"]),
    C("config-ema-decay-above-1", "train", QS + ["--config.training.ema.decay=2"],
      ["'training.ema.decay' = 2.0 must be in (0, 1)"]),
    C("config-negative-mixup-alpha", "train", QS + ["--config.data.augmentation.mixup.alpha=-1"],
      ["'data.augmentation.mixup.alpha' = -1.0"]),
    C("config-momentum-1", "train", QS + ["--config.training.momentum=1"],
      ["'training.momentum' = 1.0 must be in [0, 1)"]),
    C("config-one-class", "train", QS + ["--config.model.num_classes=1"],
      ["'model.num_classes' = 1 must be in [2, inf]"]),
    C("config-missing-preset", "train", ["--config", "configs/no_such_preset.py", "--workdir", "{work}"],
      ["configs/no_such_preset.py' not found", "give a preset such as configs/deit_cifar.py"]),
    C("summary-typo-override", "summary", ["--config", "configs/quickstart.py", "--config.model.num_clases=3"],
      ["unknown config field 'model.num_clases'", "did you mean 'model.num_classes'"]),
    C("summary-heads", "summary", ["--config", "configs/quickstart_kd.py", "--config.vit.num_heads=5"],
      ["'vit.num_heads' = 5", "must divide vit.embed_dim = 64 (allowed: 1, 2, 4, 8, 16, 32, 64)"]),
    # --- config values that only the data or the devices can refute ---------------------------------------------
    C("config-num-classes-vs-data", "train", QS + ["--config.model.num_classes=12"],
      ["'model.num_classes' = 12", "set --config.model.num_classes=10"]),
    C("config-val-size-too-big", "train", QS + ["--config.data.val_size=5000"],
      ["data.val_size = 5000 must be in [0, 1437)", "set --config.data.val_size=N"]),
    C("config-batch-larger-than-data", "train", QS + ["--config.data.batch_size=4096"],
      ["data.batch_size = 4096 is larger than the 1257 training examples", "lower --config.data.batch_size"]),
    C("config-accumulation-exceeds-epoch", "train", QS + ["--config.training.gradient_accumulation_steps=100"],
      ["'training.gradient_accumulation_steps' = 100 exceeds the 2 steps", "lower it or the batch size"]),
    C("batch-not-divisible-by-8-devices", "train", QS + ["--config.data.batch_size=12"],
      ["'data.batch_size' = 12 is not divisible by the 8 devices", "use a multiple of 8"],
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
      subprocess="XLA_FLAGS acts only when JAX starts its CPU backend (the worker has 1 device)"),
    # --- data sources -------------------------------------------------------------------------------------------
    C("data-npz-missing", "train", QS + NPZ, ["npz:{tmp}/d.npz: file not found", "expected an .npz with x_train"]),
    C("data-info-cli-npz-missing", "data", ["info", "--config", "configs/quickstart.py", *NPZ],
      ["npz:{tmp}/d.npz: file not found", "expected an .npz with x_train"],
      subprocess="the data CLI (a package's __main__, its own error handling) from a fresh interpreter"),
    C("data-npz-not-an-npz", "train", QS + NPZ, ["npz:{tmp}/d.npz: cannot read as .npz", "save it with np.savez"],
      prep=lambda t: _garbage(t / "d.npz")),
    C("data-npz-missing-key", "train", QS + NPZ, ["key 'y_test' missing", "expected x_train, y_train, x_test"],
      prep=lambda t: _npz(t, y_test=None)),
    C("data-npz-float-images", "train", QS + NPZ, ["x_train has dtype float32", "np.round(x * 255).astype"],
      prep=lambda t: _npz(t, x_train=np.random.default_rng(0).random((300, 8, 8), np.float32))),
    C("data-npz-channels-first", "train", QS + NPZ, ["x_train has shape (300, 1, 8, 8)", "x.transpose(0, 2, 3, 1)"],
      prep=lambda t: _npz(t, x_train=np.zeros((300, 1, 8, 8), np.uint8), x_test=np.zeros((60, 1, 8, 8), np.uint8))),
    C("data-npz-label-out-of-range", "train", QS + NPZ, ["y_test has label 7, out of range for 3 classes",
                                                        "add a class_names list naming every class"],
      prep=lambda t: _npz(t, class_names=np.array(["a", "b", "c"]), y_train=np.arange(300) % 3,
                          y_test=np.arange(60) % 8)),
    C("data-npz-negative-label", "train", QS + NPZ, ["y_train has label -1", "labels must be class indices >= 0"],
      prep=lambda t: _npz(t, y_train=np.arange(300) % 10 - 1)),
    C("data-npz-float-labels", "train", QS + NPZ, ["y_train has dtype float64", "expected integer class indices"],
      prep=lambda t: _npz(t, y_train=(np.arange(300) % 10).astype(np.float64))),
    C("data-npz-train-test-shapes", "train", QS + NPZ, ["train images are 8x8x1 but test images are 9x9x1",
                                                       "--config.data.image_size=N"],
      prep=lambda t: _npz(t, x_test=np.zeros((60, 9, 9), np.uint8))),
    C("data-npz-object-array", "train", QS + NPZ, ["npz:{tmp}/d.npz: Object arrays", "store plain numeric arrays"],
      prep=lambda t: _npz(t, class_names=np.array([str(i) for i in range(10)], dtype=object))),
    C("data-folder-corrupt-jpeg", "train", QS + FOLDER, ["imgs/train/b/broken.jpg: unreadable image",
                                                         "remove or replace"],
      prep=lambda t: _folder(t, corrupt=True)),
    C("data-folder-mixed-sizes", "train", QS + FOLDER, ["images have different sizes (8x8 in train/a/0.png, 9x9",
                                                        "set --config.data.image_size=N"],
      prep=lambda t: _folder(t, sizes=True)),
    C("data-folder-no-test-split", "train", QS + FOLDER, ["no images under test/", "expected train/CLASS/IMAGE and"],
      prep=lambda t: _folder(t, no_test=True)),
    C("data-folder-missing", "train", QS + ["--config.data.source=folder:{tmp}/nowhere"],
      ["folder:{tmp}/nowhere: not found", "laid out train/CLASS/IMAGE"]),
    C("data-mnist-idx-truncated", "train", QS + ["--config.data.source=mnist-idx:{tmp}/idx"],
      ["train-images-idx3-ubyte.gz: idx header says shape (100, 28, 28)", "truncated or corrupt download"],
      prep=_mnist_idx_truncated),
    C("data-cifar-python-missing", "train", QS + ["--config.data.source=cifar-python:{tmp}/cifar-10-python.tar.gz"],
      ["cifar-10-python.tar.gz: not found", "expected cifar-10-python.tar.gz or its cifar-10-batches-py folder"]),
    C("data-tfds-offline", "train", ["--config", "configs/mnist_cnn.py", "--workdir", "{work}",
                                     "--config.data.data_dir={tmp}/tfds"],
      ["tfds:mnist: not prepared in {tmp}/tfds", "no network", "put the four MNIST idx .gz files",
       "--config.data.source=npz:PATH"], prep=lambda t: (t / "tfds").mkdir(), env={"TFDS_DATA_DIR": "{tmp}/tfds"},
      subprocess="first import of tensorflow_datasets: what it prints on import shows once per process"),
    # --- teachers -----------------------------------------------------------------------------------------------
    C("teacher-missing", "train", KD + ["--config.distillation.teacher_checkpoint={tmp}/no_teacher"],
      ["teacher checkpoint '{tmp}/no_teacher' not found", "train the teacher first"]),
    C("teacher-empty", "train", KD + ["--config.distillation.teacher_checkpoint="],
      ["'distillation.teacher_checkpoint' is empty", "give a jaxkd workdir, checkpoint or .pth file"]),
    C("teacher-unknown-file-kind", "train", KD + ["--config.distillation.teacher_checkpoint={tmp}/teacher.ckpt"],
      ["teacher checkpoint '{tmp}/teacher.ckpt'", "give a jaxkd workdir (folder) or a .pth / .safetensors file"],
      prep=lambda t: _garbage(t / "teacher.ckpt")),
    C("teacher-workdir-wrong-class-count", "train", KD + FIVE + ["--config.distillation.teacher_checkpoint={cnn}"],
      ["teacher checkpoint '{cnn}' predicts 10 classes but the student's data has 5",
       "use a teacher trained on the same dataset"], prep=lambda t: _npz(t, classes=5)),
    C("teacher-workdir-unfinished", "train", KD + ["--config.distillation.teacher_checkpoint={vit}"],
      ["{vit}: no exported model", "run the same train command again"],
      prep=lambda t: shutil.rmtree(t / "vit" / "model")),
    C("teacher-vit-workdir-where-cnn-expected", "train", KD + ["--config.distillation.teacher_checkpoint={vit}"],
      ["'{vit}'", "distillation.teacher_model_type"]),
    C("teacher-pth-wrong-class-count", "train", KD + FIVE + ["--config.distillation.teacher_checkpoint={pth10}"],
      ["'{pth10}' does not fit a adaptive_cnn", "classifier.3.weight", "same dataset"],
      prep=lambda t: _npz(t, classes=5)),
    C("teacher-cifar-cnn-pth-for-digits-student", "train",
      KD + ["--config.distillation.teacher_checkpoint={pth_cifar}"],
      ["'{pth_cifar}' does not fit a adaptive_cnn", "features.0.0.weight", "same dataset"]),
    C("teacher-resnet18-given-an-adaptive-cnn-pth", "train",
      KD + ["--config.distillation.teacher_model_type=resnet18_cifar",
            "--config.distillation.teacher_checkpoint={pth10}"],
      ["'{pth10}' does not fit a resnet18_cifar", "(it holds adaptive_cnn (mnist variant",
       "--config.distillation.teacher_model_type"]),
    C("pretrained-path-for-a-model-without-imagenet-weights", "train",
      QS + ["--config.model.pretrained_path={tmp}/convnextv2_tiny.safetensors"],
      ["'model.pretrained_path'", "is for model.model_type convnext_v2_tiny", "not 'adaptive_cnn'"]),
    C("pretrained-path-holds-another-architecture", "train",
      ["--config", "configs/cifar_convnextv2.py:smoke", "--workdir", "{work}", "--config.logging.progress_bar=false",
       "--config.data.source=npz:{tmp}/d.npz", "--config.model.pretrained_path={tmp}/resnet50.a1_in1k.safetensors"],
      ["'model.pretrained_path' = '{tmp}/resnet50.a1_in1k.safetensors' is not timm's convnextv2_tiny weights",
       "it holds a ResNet other than resnet18_cifar (7x7 stem"],
      prep=lambda t: (_npz(t, x_train=np.zeros((48, 32, 32, 3), np.uint8), y_train=np.arange(48) % 10,
                           x_test=np.zeros((20, 32, 32, 3), np.uint8), y_test=np.arange(20) % 10),
                      _safetensors(t / "resnet50.a1_in1k.safetensors", TIMM_RESNET))),
    C("teacher-pth-corrupt", "train", KD + ["--config.distillation.teacher_checkpoint={tmp}/teacher.pth"],
      ["{tmp}/teacher.pth: not a PyTorch zip checkpoint", "export it as .safetensors"],
      prep=lambda t: _garbage(t / "teacher.pth")),
    C("teacher-dinov2-weights-missing", "train",
      SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/dinov2_vits14_pretrain.pth"],
      ["DINOv2 weight file not found: '{tmp}/dinov2_vits14_pretrain.pth'",
       "fetch https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"]),
    C("teacher-dinov2-weights-corrupt", "train",
      SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/dinov2_vits14_pretrain.pth"],
      ["{tmp}/dinov2_vits14_pretrain.pth", "not a PyTorch"], prep=lambda t: _garbage(t / "dinov2_vits14_pretrain.pth")),
    C("teacher-dinov2-safetensors-corrupt", "train",
      SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/dinov2_vits14.safetensors"],
      ["{tmp}/dinov2_vits14.safetensors", "safetensors"], prep=lambda t: _garbage(t / "dinov2_vits14.safetensors")),
    C("teacher-dinov2-npz-corrupt", "train", SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/dinov2.npz"],
      ["{tmp}/dinov2.npz", ".npz"], prep=lambda t: _garbage(t / "dinov2.npz")),
    C("teacher-dinov2-custom-not-dinov2", "train",
      SS + ["--config.ss_distillation.teacher_model_name=dinov2_custom", "--config.ss_distillation.teacher_num_heads=2",
            "--config.ss_distillation.teacher_checkpoint={tmp}/tiny.npz"],
      ["not a DINOv2 state dict", "cls_token"], prep=lambda t: np.savez(t / "tiny.npz", foo=np.zeros(3))),
    C("teacher-dinov2-hub-timm-resnet", "train",
      SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/resnet50.a1_in1k.safetensors"],
      ["{tmp}/resnet50.a1_in1k.safetensors: not a DINOv2 state dict: found a ResNet",
       "expected a DINOv2 backbone in one of the layouts", "timm's vit_*_patch14_dinov2"],
      prep=lambda t: _safetensors(t / "resnet50.a1_in1k.safetensors", TIMM_RESNET)),
    C("teacher-dinov2-hub-timm-vit-without-dinov2-keys", "train",
      SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/vit_small_patch16_224.safetensors"],
      ["not a DINOv2 state dict: found a ViT without DINOv2's LayerScale and mask token",
       "the official one (cls_token, mask_token"],
      prep=lambda t: _safetensors(t / "vit_small_patch16_224.safetensors", TIMM_VIT)),
    C("teacher-dinov2-hub-hf-vit-snapshot", "train",
      SS + ["--config.ss_distillation.teacher_checkpoint={tmp}/models--org--vit"],
      ["{tmp}/models--org--vit: not a DINOv2 state dict: found a Hugging Face ViT (ViTModel",
       "Hugging Face Dinov2Model (embeddings.cls_token"], prep=lambda t: _hf_snapshot(t, "vit")),
    C("teacher-dinov2-hub-hf-heads-disagree", "train",
      SS + ["--config.ss_distillation.teacher_model_name=dinov2_custom", "--config.ss_distillation.teacher_num_heads=4",
            "--config.ss_distillation.teacher_checkpoint={tmp}/models--org--dinov2"],
      ["{tmp}/models--org--dinov2/snapshots/r/config.json (num_attention_heads) says 2 attention heads",
       "num_heads (ss_distillation.teacher_num_heads) is 4: set 2"], prep=lambda t: _hf_snapshot(t)),
    C("teacher-ss-jaxkd-too-shallow", "train",
      SS + ["--config.ss_distillation.teacher_type=jaxkd", "--config.ss_distillation.teacher_checkpoint={vit}"],
      ["'ss_distillation.token_layers' = [0, 1]: the teacher has only 1 blocks",
       "--config.ss_distillation.token_layers="]),
    C("teacher-ss-jaxkd-cnn-workdir", "train",
      SS + ["--config.ss_distillation.teacher_type=jaxkd", "--config.ss_distillation.teacher_checkpoint={cnn}"],
      ["'{cnn}'", "adaptive_cnn"]),
    # --- workdirs and checkpoints -------------------------------------------------------------------------------
    C("workdir-holds-different-run", "train", VIT_ARGS + ["--workdir", "{vit}", "--config.training.learning_rate=0.5"],
      ["workdir {vit} holds a run with a different config: training.learning_rate (0.002 -> 0.5)",
       "use another --workdir, or --force"]),
    C("workdir-all-checkpoints-corrupt", "train", VIT_ARGS + ["--workdir", "{vit}"],
      ["no usable checkpoint in {vit}/checkpoints", "move the folder away"],
      prep=lambda t: _corrupt_tree(t / "vit" / "checkpoints"),
      subprocess="a failed Orbax restore: what Orbax / TensorStore print at interpreter exit must be nothing"),
    C("workdir-config-json-corrupt", "train", VIT_ARGS + ["--workdir", "{vit}"], ["{vit}/config.json", "--force"],
      prep=lambda t: _garbage(t / "vit" / "config.json", b"{not json")),
    C("workdir-is-a-file", "train", QS, ["--workdir {work} is a file", "give a folder"],
      prep=lambda t: _garbage(t / "work")),
    # --- evaluate / predict -------------------------------------------------------------------------------------
    C("evaluate-not-a-workdir", "evaluate", ["--workdir", "{tmp}/nowhere"],
      ["{tmp}/nowhere: no config.json", "give a jaxkd workdir written by python -m jaxkd.train"]),
    C("evaluate-without-model", "evaluate", ["--workdir", "{vit}"], NO_MODEL,
      prep=lambda t: shutil.rmtree(t / "vit" / "model")),
    C("evaluate-corrupt-model", "evaluate", ["--workdir", "{vit}"], ["{vit}/model", "corrupt"],
      prep=lambda t: _corrupt_tree(t / "vit" / "model"),
      subprocess="evaluate from a fresh interpreter; a failed model restore, up to interpreter exit"),
    C("predict-corrupt-jpeg", "predict", ["--workdir", "{vit}", "{tmp}/photo.jpg"],
      ["cannot read image '{tmp}/photo.jpg': image file is truncated", "give a PNG or JPEG file"],
      prep=lambda t: _truncated_jpeg(t / "photo.jpg"),
      subprocess="predict from a fresh interpreter: model load, then PIL on a truncated file"),
    C("predict-not-an-image", "predict", ["--workdir", "{vit}", "{tmp}/notes.png"],
      ["cannot read image '{tmp}/notes.png'", "give a PNG or JPEG file"], prep=lambda t: _garbage(t / "notes.png")),
    C("predict-missing-image", "predict", ["--workdir", "{vit}", "{tmp}/missing.png"],
      ["cannot read image '{tmp}/missing.png'", "give a PNG or JPEG file"]),
    C("predict-without-model", "predict", ["--workdir", "{vit}", "{tmp}/x.png"], NO_MODEL,
      prep=lambda t: (_png(t / "x.png"), shutil.rmtree(t / "vit" / "model"))),
    C("predict-without-data-json", "predict", ["--workdir", "{vit}", "{tmp}/x.png"], ["{vit}", "data.json"],
      prep=lambda t: (_png(t / "x.png"), (t / "vit" / "data.json").unlink())),
    # --- analyze ------------------------------------------------------------------------------------------------
    C("analyze-not-a-workdir", "analyze", ["{tmp}/nowhere"],
      ["workdir {tmp}/nowhere: no config.json", "give a jaxkd workdir written by python -m jaxkd.train"]),
    C("analyze-unknown-metric", "analyze", ["{vit}", "--metrics", "attention,curvature"],
      ["argument --metrics: unknown metric 'curvature'", "attention, heads, cka, hessian", "--help"]),
    C("analyze-zero-samples", "analyze", ["{vit}", "--num-samples", "0"],
      ["argument --num-samples: 0 must be at least 1", "--help"]),
    C("analyze-without-model", "analyze", ["{vit}"], NO_MODEL, prep=lambda t: shutil.rmtree(t / "vit" / "model")),
    C("analyze-several-without-out", "analyze", ["{vit}", "{vit}", "--names", "a", "b"],
      ["several workdirs", "--out DIR"]),
    C("analyze-names-count", "analyze", ["{vit}", "--names", "a", "b", "--out", "{out}"],
      ["--names gives 2 names for 1 workdirs", "one per workdir"]),
    C("analyze-out-is-a-file", "analyze", ["{vit}", "--out", "{tmp}/f"], ["--out {tmp}/f is a file; give a folder"],
      prep=lambda t: _garbage(t / "f")),
    C("analyze-teacher-not-a-workdir", "analyze", ["{vit}", "--teacher", "{tmp}/nowhere"],
      ["--teacher {tmp}/nowhere: no config.json", "give a jaxkd workdir"]),
    # --- convert ------------------------------------------------------------------------------------------------
    C("convert-from-torch-wrong-class-count", "convert", ["from-torch", "--config", "configs/quickstart.py",
                                                         "--config.model.num_classes=5", "--torch", "{pth10}",
                                                         "--out", "{out}"],
      ["{pth10} does not fit preset 'configs/quickstart.py'", "classifier.3.weight (10, 64) vs (5, 64)",
       "try --config.model.num_classes=10"],
      subprocess="convert from a fresh interpreter, and torch's first import: what it prints on import shows once"),
    C("convert-from-torch-wrong-keys", "convert",
      ["from-torch", "--config", "configs/quickstart.py", "--torch", "{tmp}/teacher.pth", "--out", "{out}"],
      ["{tmp}/teacher.pth does not fit preset", "choose the preset the checkpoint was trained with"],
      prep=_pth_wrong_keys),
    C("convert-from-torch-missing-file", "convert",
      ["from-torch", "--config", "configs/quickstart.py", "--torch", "{tmp}/best_model.pth", "--out", "{out}"],
      ["{tmp}/best_model.pth: no such file", "give the original project's best_model.pth"]),
    C("convert-from-torch-corrupt-file", "convert",
      ["from-torch", "--config", "configs/quickstart.py", "--torch", "{tmp}/best_model.pth", "--out", "{out}"],
      ["{tmp}/best_model.pth: not a PyTorch zip checkpoint", "re-save it with a recent torch"],
      prep=lambda t: _garbage(t / "best_model.pth")),
    C("convert-from-torch-out-not-empty", "convert",
      ["from-torch", "--config", "configs/quickstart.py", "--torch", "{pth10}", "--out", "{cnn}"],
      ["--out {cnn} exists and is not empty", "pass --force to replace it"]),
    C("convert-resume-optimizer-mismatch", "convert", RESUME + ["{tmp}/checkpoint_epoch_2.pth"],
      ["{tmp}/checkpoint_epoch_2.pth: the optimiser state is torch SGD's",
       "the config trains with training.optimizer = 'adamw'", "set --config.training.optimizer=sgd"],
      prep=lambda t: _original_run(t, "sgd")),
    C("convert-resume-truncated-optimizer-state", "convert", RESUME + ["{tmp}/checkpoint_epoch_2.pth"],
      ["optimizer_state_dict holds exp_avg, exp_avg_sq for 20 of the model's 61 parameters",
       "missing: 20 (features.3.bn1.weight)", "use a complete checkpoint"],
      prep=lambda t: _original_run(t, change=_drop_optimizer_state)),
    C("convert-resume-truncated-model-state", "convert", RESUME + ["{tmp}/checkpoint_epoch_2.pth"],
      ["{tmp}/checkpoint_epoch_2.pth does not fit preset 'configs/quickstart.py'", "53 missing: classifier.0.bias"],
      prep=lambda t: _original_run(t, change=_drop_model_keys)),
    C("convert-resume-moment-wrong-shape", "convert", RESUME + ["{tmp}/checkpoint_epoch_2.pth"],
      ["optimiser state 0 'exp_avg' has shape (3, 3, 1, 32)", "features.0.0.weight, has shape (32, 1, 3, 3)",
       "use the checkpoint it was saved with"], prep=lambda t: _original_run(t, change=_transpose_moment)),
    C("convert-resume-epoch-beyond-num-epochs", "convert", RESUME + ["{tmp}/checkpoint_epoch_21.pth"],
      ["the original run finished epoch 21 ('epoch' 20)", "training.num_epochs = 15",
       "set --config.training.num_epochs=21 or more"], prep=lambda t: _original_run(t, epoch=20)),
    C("convert-to-torch-exists", "convert", ["to-torch", "--workdir", "{vit}", "--out", "{tmp}/model.pth"],
      ["--out {tmp}/model.pth exists", "pass --force to overwrite it"], prep=lambda t: _garbage(t / "model.pth")),
    C("convert-to-torch-bad-suffix", "convert", ["to-torch", "--workdir", "{vit}", "--out", "{tmp}/model.txt"],
      ["--out {tmp}/model.txt", "give a .pth (or .pt) or a .safetensors file name"]),
    C("convert-to-torch-unfinished-run", "convert", ["to-torch", "--workdir", "{vit}", "--out", "{tmp}/m.pth"],
      NO_MODEL, prep=lambda t: shutil.rmtree(t / "vit" / "model")),
    C("convert-from-yaml-unknown-key", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["{tmp}/peer.yaml: 1 unknown field(s)", "logging.use_wandb (did you mean 'logging.wandb'?)",
       "Correct or remove them, or pass --ignore-unsupported"],
      prep=lambda t: _yaml(t, PEER_YAML + "logging: {use_wandb: true}\n")),
    C("convert-from-yaml-unsupported-value", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["1 value(s) jaxkd cannot reproduce: training.scheduler = 'cyclic'", "jaxkd has no cyclic schedule",
       "--ignore-unsupported"], prep=lambda t: _yaml(t, PEER_YAML.replace("use_compile: true", "scheduler: cyclic"))),
    C("convert-from-yaml-architecture", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["{tmp}/peer.yaml: model.architecture is not empty", "does not build the original's custom-dataset CNN layer "
       "lists", "remove both to train jaxkd's AdaptiveCNN"],
      prep=lambda t: _yaml(t, PEER_YAML.replace("num_classes: 10}", "num_classes: 10, architecture: "
                                                "[{type: conv, out_channels: 32}], classifier_layers: [128]}"))),
    C("convert-from-yaml-bad-log-level", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["'logging.log_level' = 'VERBOSE' must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'",
       "from the YAML's 'logging.log_level'"], prep=lambda t: _yaml(t, PEER_YAML + "logging: {log_level: verbose}\n")),
    C("convert-from-yaml-invalid-yaml", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["{tmp}/peer.yaml: not valid YAML", "line 2, column 4"], prep=lambda t: _yaml(t, "data: [unclosed\n  x: {")),
    C("convert-from-yaml-missing", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["{tmp}/peer.yaml: no such YAML file", "the original project's"]),
    C("convert-from-yaml-out-exists", "convert", ["from-yaml", "{tmp}/peer.yaml", "--out", "{tmp}/peer.py"],
      ["--out {tmp}/peer.py exists", "pass --force to overwrite it"],
      prep=lambda t: (_yaml(t), (t / "peer.py").write_text("# mine\n"))),
]
