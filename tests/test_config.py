"""The config system: presets load and validate, overrides are typed, bad values get one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jaxkd import config as C

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
REQUIRED = ["mnist_cnn", "cifar_cnn", "vit_mnist", "vit_cifar", "deit_mnist", "deit_cifar", "deit_ss_cifar",
            "quickstart"]


def test_required_presets_exist():
    assert set(REQUIRED) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("arg", ["", ":smoke"])
def test_preset_loads_and_is_locked(preset, arg):
    cfg = C.load(f"configs/{preset}.py{arg}")
    assert C.flatten(cfg).keys() == C.flatten(C.base_config()).keys()
    with pytest.raises((AttributeError, KeyError)):
        cfg.training.not_a_field = 1


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_docstring_states_command_and_expectation(preset):
    text = (ROOT / "configs" / f"{preset}.py").read_text()
    doc = text.split('"""')[1]
    assert "python -m jaxkd.train --config configs/" in doc
    assert "Expected:" in doc


def test_bare_name_and_unknown_variant():
    assert C.load("deit_cifar:smoke").vit.depth == 2
    with pytest.raises(C.ConfigError, match="unknown variant 'nope'"):
        C.load("configs/deit_cifar.py:nope")


def test_overrides_are_typed():
    cfg = C.load("configs/deit_cifar.py:smoke", [
        "--config.training.learning_rate=0.01", "--config.training.num_epochs=3", "--config.vit.use_conv_stem=false",
        "--config.data.normalization.mean=[0.5, 0.5, 0.5]", "--config.data.normalization.std=0.2,0.2,0.2",
        "--config.training.weight_decay=1", "--config.data.source='digits'"])
    assert cfg.training.learning_rate == 0.01 and cfg.training.num_epochs == 3
    assert cfg.vit.use_conv_stem is False
    assert cfg.data.normalization.mean == [0.5, 0.5, 0.5] and cfg.data.normalization.std == [0.2, 0.2, 0.2]
    assert isinstance(cfg.training.weight_decay, float) and cfg.data.source == "digits"


def test_variant_override_brings_its_width():
    cfg = C.load("configs/vit_cifar.py", ["--config.vit.variant=small"])
    assert (cfg.vit.embed_dim, cfg.vit.num_heads) == (384, 6)


BAD = [
    (["--config.training.learnig_rate=0.1"], "unknown config field 'training.learnig_rate'.*learning_rate"),
    (["--config.training.num_epochs=1.5"], "'training.num_epochs' = 1.5 has type float; expected int"),
    (["--config.training.num_epochs=0"], "'training.num_epochs' = 0 must be in"),
    (["--config.training.learning_rate=-1"], "'training.learning_rate' = -1.0 must be in \\(0"),
    (["--config.training.learning_rate=abc"], "'training.learning_rate' = 'abc': not a valid float"),
    (["--config.training.optimizer=lamb"], "'training.optimizer' = 'lamb' must be one of 'adam', 'adamw'"),
    (["--config.training.use_swa=maybe"], "'training.use_swa' = 'maybe': expected a bool"),
    (["--config.vit.patch_size=5"], "'vit.patch_size' = 5 must divide vit.img_size = 32 \\(allowed: 1, 2, 4"),
    (["--config.vit.num_heads=5"], "'vit.num_heads' = 5 must divide vit.embed_dim = 192"),
    (["--config.vit.drop_path_rate=1.5"], "'vit.drop_path_rate' = 1.5 must be in \\[0, 1\\)"),
    (["--config.vit.cls_token_dropout=1.0"], "'vit.cls_token_dropout' = 1.0 must be in \\[0, 1\\)"),
    (["--config.vit.img_size=64"], "'vit.img_size' = 64 does not match the cifar images \\(32 px\\)"),
    (["--config.vit.embed_dim=384"], "contradict vit.variant 'tiny'"),
    (["--config.data.batch_size=0"], "'data.batch_size' = 0 must be in \\[1"),
    (["--config.data.source=s3:bucket"], "'data.source' = 's3:bucket' must be 'digits' or one of"),
    (["--config.data.augmentation.mixup.alpha=0"], "mixup.alpha' = 0.0 must be in \\(0"),
    (["--config.data.normalization.std=0.2,0", "--config.data.normalization.mean=0.5,0.5"],
     "'data.normalization.std' = \\[0.2, 0.0\\] must be > 0"),
    (["--config.model.in_channels=1"], "'model.in_channels' = 1 does not match data.dataset 'cifar'"),
    (["--config.distillation.teacher_checkpoint="], "'distillation.teacher_checkpoint' is empty"),
    (["--config.ss_distillation.enabled=true", "--config.ss_distillation.token_layers=0"],
     "both true: choose one mode"),
    (["--config.vit.distillation=false"], "'vit.inference_mode' = 'avg' needs vit.distillation"),
    (["--config.training.warmup_epochs=5"], "'training.warmup_epochs' = 5 must be in \\[0, training.num_epochs = 1\\)"),
    (["training.label_smoothing"], "needs the form --config.section.field=value"),
]


@pytest.mark.parametrize("overrides,pattern", BAD, ids=[b[0][0] for b in BAD])
def test_bad_overrides_raise_one_clear_error(overrides, pattern):
    with pytest.raises(C.ConfigError, match=pattern) as info:
        C.load("configs/deit_cifar.py:smoke", overrides)
    assert "\n" not in str(info.value)


def test_unknown_key_in_a_preset_is_rejected(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text("from jaxkd.config import base_config\n"
                 "def get_config(arg=None):\n    c = base_config()\n    c.training.lr = 0.1\n    return c\n")
    with pytest.raises(C.ConfigError, match="unknown config field 'training.lr'"):
        C.load(str(p))


def test_missing_file_and_cli_exit_code(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(str(tmp_path / "nope.py"))
    r = subprocess.run([sys.executable, "-m", "jaxkd.summary", "--config", "configs/deit_cifar.py",
                        "--config.vit.patch_size=5"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "vit.patch_size" in r.stderr


def test_json_round_trip():
    import json

    cfg = C.load("configs/deit_ss_cifar.py")
    assert json.loads(C.to_json(cfg))["ss_distillation"]["token_layers"] == [6, 11]
