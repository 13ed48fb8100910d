"""python -m jaxkd.convert from-yaml: the original project's YAML configs -> jaxkd presets.

Representative YAMLs of the original presets (SPEC §6: CNN MNIST, CNN CIFAR, ViT CIFAR, DeiT CIFAR, SS-distill) are
converted, the written preset is loaded with jaxkd.config.load, and the fields that differ from base_config() must be
exactly the ones each YAML implies (the mapping table is in jaxkd/interop/yaml_import.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from jaxkd import config as config_lib
from jaxkd.convert import from_yaml

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------------------------
# from-yaml: representative YAMLs of the original presets (SPEC §6), and the fields each must produce

YAMLS = {
    "cnn_mnist": ("""
        experiment_name: cnn_mnist
        seed: 42
        output_dir: ./outputs
        data:
          dataset: mnist
          batch_size: 4096
          data_path: ./data
          augmentation:
            random_rotation: 10
            random_affine: {translate: [0.1, 0.1]}
            randaugment: {num_ops: 2, magnitude: 9}
            cutout: {length: 8}
        model: {model_type: adaptive_cnn, num_classes: 10, use_se: true, dropout: 0.5}
        training:
          num_epochs: 20
          learning_rate: 0.08
          optimizer: adamw
          weight_decay: 5e-4
          scheduler: cosine
          warmup_epochs: 2
          use_amp: true
          use_bf16: true
          early_stopping: true
          patience: 15
          min_delta: 0.0005
          lr_scheduler_params: {T_max: 20, eta_min: 1e-6}
        logging: {log_dir: ./logs, save_frequency: 5}
        """, {
        "experiment_name": "cnn_mnist", "data.dataset": "mnist", "data.source": "tfds:mnist",
        "data.data_dir": "./data", "data.batch_size": 4096,
        "data.augmentation.random_rotation.enabled": True, "data.augmentation.random_affine.enabled": True,
        "data.augmentation.randaugment.enabled": True, "data.augmentation.cutout.enabled": True,
        "data.augmentation.cutout.length": 8, "model.in_channels": 1, "training.num_epochs": 20,
        "training.learning_rate": 0.08, "training.warmup_epochs": 2, "training.use_amp": True,
        "training.early_stopping.patience": 15, "training.early_stopping.min_delta": 0.0005,
        "training.lr_scheduler_params.T_max": 20, "training.lr_scheduler_params.eta_min": 1e-6,
        "logging.log_dir": "./logs", "training.use_tf32": True}),
    "cnn_cifar": ("""
        experiment_name: cnn_cifar
        data:
          dataset: cifar
          batch_size: 2048
          augmentation:
            random_crop: {padding: 4}
            random_flip: true
            color_jitter: 0.2
            auto_augment: true
            randaugment: {num_ops: 2, magnitude: 9}
            cutout: {length: 16}
            cutmix: {alpha: 1.0}
        model: {model_type: adaptive_cnn, in_channels: 3, num_classes: 10}
        training:
          num_epochs: 40
          learning_rate: 0.8
          optimizer: sgd
          scheduler: step
          lr_scheduler_params: {step_size: 10, gamma: 0.5}
          label_smoothing: 0.1
          use_swa: false
          early_stopping: {enabled: false}
        """, {
        "experiment_name": "cnn_cifar", "data.batch_size": 2048,
        "data.augmentation.random_crop.enabled": True, "data.augmentation.random_flip.enabled": True,
        "data.augmentation.color_jitter.enabled": True, "data.augmentation.auto_augment.enabled": True,
        "data.augmentation.randaugment.enabled": True, "data.augmentation.cutout.enabled": True,
        "data.augmentation.cutmix.enabled": True, "training.num_epochs": 40, "training.learning_rate": 0.8,
        "training.optimizer": "sgd", "training.scheduler": "step", "training.lr_scheduler_params.step_size": 10,
        "training.lr_scheduler_params.gamma": 0.5, "training.use_swa": False,
        "training.early_stopping.enabled": False, "training.use_amp": True, "training.use_tf32": True}),
    "vit_cifar": ("""
        experiment_name: vit_cifar
        data:
          dataset: cifar
          batch_size: 1024
          augmentation: {random_crop: true, random_flip: true, mixup: {alpha: 0.8, prob: 1.0}}
        model: {model_type: deit}
        training: {num_epochs: 100, learning_rate: 2e-3, weight_decay: 0.05, optimizer: adamw, use_amp: false}
        vit:
          variant: tiny
          patch_size: 4
          mlp_ratio: 2.0
          use_conv_stem: true
          distillation: false
          inference_mode: cls
        """, {
        "experiment_name": "vit_cifar", "data.batch_size": 1024, "data.augmentation.random_crop.enabled": True,
        "data.augmentation.random_flip.enabled": True, "data.augmentation.mixup.enabled": True,
        "data.augmentation.mixup.alpha": 0.8, "model.model_type": "deit", "training.num_epochs": 100,
        "training.learning_rate": 2e-3, "training.weight_decay": 0.05, "vit.mlp_ratio": 2.0,
        "vit.use_conv_stem": True, "vit.distillation": False, "vit.inference_mode": "cls", "training.use_tf32": True}),
    "deit_cifar": ("""
        experiment_name: deit_cifar
        data: {dataset: cifar, batch_size: 1024, augmentation: {mixup: 0.8}}
        model: {model_type: deit}
        training: {num_epochs: 100, learning_rate: 2.0e-3, weight_decay: 0.05}
        vit: {variant: tiny, img_size: 32, patch_size: 4, mlp_ratio: 2.0, use_conv_stem: true, distillation: true}
        distillation:
          teacher_checkpoint: outputs/cnn_cifar/best_model.pth
          teacher_model_type: adaptive_cnn
          distillation_type: hard
          tau: 3.0
          alpha_schedule: cosine
          alpha_start: 0.0
          alpha_end: 0.6
          distillation_warmup_epochs: 5
        """, {
        "experiment_name": "deit_cifar", "data.batch_size": 1024, "data.augmentation.mixup.enabled": True,
        "data.augmentation.mixup.alpha": 0.8, "model.model_type": "deit", "training.num_epochs": 100,
        "training.learning_rate": 2e-3, "training.weight_decay": 0.05, "training.use_amp": True,
        "vit.mlp_ratio": 2.0, "vit.use_conv_stem": True, "distillation.enabled": True,
        "distillation.teacher_checkpoint": "outputs/cnn_cifar/best_model.pth",
        "distillation.alpha_schedule": "cosine", "distillation.alpha_end": 0.6,
        "distillation.distillation_warmup_epochs": 5, "training.use_tf32": True}),
    "ss_distill": ("""
        experiment_name: deit_ss_cifar
        data: {dataset: cifar, batch_size: 256}
        model: {model_type: deit}
        training: {num_epochs: 100, learning_rate: 1e-3, optimizer: adamw}
        vit: {variant: small, mlp_ratio: 2.0, use_conv_stem: true}
        ss_distillation:
          teacher_type: dinov2
          teacher_model_name: dinov2_vits14
          token_layers: [6, 11]
          projection_dim: 256
          lambda_tok: 1.0
          token_loss_type: mse
          lambda_rel: 0.1
          correlation_temperature: 0.1
          correlation_loss_type: kl
          use_pooled_correlation: true
          rel_warmup_epochs: 10
        """, {
        "experiment_name": "deit_ss_cifar", "data.batch_size": 256, "model.model_type": "deit",
        "training.num_epochs": 100, "training.use_amp": True, "vit.variant": "small", "vit.embed_dim": 384,
        "vit.num_heads": 6, "vit.mlp_ratio": 2.0, "vit.use_conv_stem": True, "ss_distillation.enabled": True,
        "ss_distillation.token_loss_type": "mse", "training.use_tf32": True}),
}


def _write_yaml(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize("name", sorted(YAMLS))
def test_from_yaml_round_trip(tmp_path, name):
    text, expected = YAMLS[name]
    src = _write_yaml(tmp_path, text, f"{name}.yaml")
    out = tmp_path / f"{name}.py"
    returned = from_yaml(src, out)
    cfg = config_lib.load(str(out))
    flat, base = config_lib.flatten(cfg), config_lib.flatten(config_lib.base_config())
    assert config_lib.flatten(returned) == flat
    changed = {k: v for k, v in flat.items() if v != base[k]}
    assert changed == expected  # exactly the YAML's fields (and what the original derived from them)
    text_py = out.read_text()
    assert f"{name}.yaml" in text_py.split('"""')[1]  # the docstring names the source
    assert "PER DEVICE" in text_py and "GLOBAL" in text_py  # the batch-size comment
    # every YAML leaf value appears in the config it maps to (spot check of the one-to-one sections)
    doc = yaml.safe_load(src.read_text())
    for section in ("vit", "distillation", "ss_distillation"):
        for k, v in (doc.get(section) or {}).items():
            assert flat[f"{section}.{k}"] == (float(v) if isinstance(flat[f"{section}.{k}"], float) else v)


def test_from_yaml_peer_pipelines_match_jaxkd(tmp_path):
    """The original's augmentation lists import to exactly jaxkd's definition of its pipelines (SPEC §5)."""
    for name, pipeline in (("cnn_mnist", "mnist"), ("cnn_cifar", "cifar")):
        cfg = from_yaml(_write_yaml(tmp_path, YAMLS[name][0], f"{name}.yaml"), tmp_path / f"{name}.py")
        want = config_lib.apply_peer_augmentation(config_lib.base_config(), pipeline).data.augmentation
        got = cfg.data.augmentation.to_dict()
        got.pop("cutmix")
        want = want.to_dict()
        want.pop("cutmix")
        assert got == want, name


def test_from_yaml_devices_and_string_floats(tmp_path):
    src = _write_yaml(tmp_path, "data: {dataset: mnist, batch_size: 4096}\ntraining: {learning_rate: 1e-3}\n")
    cfg = from_yaml(src, tmp_path / "a.py", devices=2)
    assert cfg.data.batch_size == 8192 and cfg.training.learning_rate == 1e-3
    assert "4096 x 2 device(s)" in (tmp_path / "a.py").read_text()
    with pytest.raises(config_lib.ConfigError, match="exists; pass --force"):
        from_yaml(src, tmp_path / "a.py")


def test_from_yaml_unsupported_fields(tmp_path):
    """PyTorch machinery fields are one note each (after the preset is written), never an error; unknown keys
    (with did-you-mean) and values jaxkd cannot reproduce are one error listing them all, or comments with
    --ignore-unsupported."""
    src = _write_yaml(tmp_path, """
        device: cuda
        data: {dataset: cifar, num_workers: 8, pin_memory: true, persistent_workers: true, prefetch_factor: 2}
        training: {use_compile: true, compile_mode: max-autotune, use_fused_optimizer: true, amp_backend: native}
        """)
    notes: list[str] = []
    cfg = from_yaml(src, tmp_path / "t.py", log=notes.append)
    assert [n.split(" = ")[0] for n in notes] == [
        "note: device", "note: data.num_workers", "note: data.pin_memory", "note: data.persistent_workers",
        "note: data.prefetch_factor", "note: training.use_compile", "note: training.compile_mode",
        "note: training.use_fused_optimizer", "note: training.amp_backend"]
    assert "torch.compile; every jaxkd step is compiled by XLA" in notes[5] and cfg.data.dataset == "cifar"
    assert "#   training.use_compile: True -- torch.compile" in (tmp_path / "t.py").read_text()

    src = _write_yaml(tmp_path, """
        data: {dataset: cifar, num_workers: 8, augmentation: {random_affine: {translate: [0.1, 0.2]},
               randaugment_N: 3}}
        training: {scheduler: cyclic, lr_scheduler_params: {max_lr: 0.1}}
        logging: {use_wandb: true}
        """)
    out = tmp_path / "u.py"
    notes.clear()
    with pytest.raises(config_lib.ConfigError) as e:
        from_yaml(src, out, log=notes.append)
    msg = str(e.value)
    assert "\n" not in msg and "--ignore-unsupported" in msg and not notes and not out.exists()
    assert ("3 unknown field(s)" in msg and "logging.use_wandb (did you mean 'logging.wandb'?)" in msg
            and "data.augmentation.randaugment_N (did you mean 'data.augmentation.randaugment_n'?)" in msg
            and "training.lr_scheduler_params.max_lr" in msg)
    assert ("2 value(s) jaxkd cannot reproduce" in msg and "training.scheduler = 'cyclic'" in msg
            and "data.augmentation.random_affine.translate = [0.1, 0.2]" in msg)
    cfg = from_yaml(src, out, ignore_unsupported=True, log=notes.append)
    text = out.read_text()
    assert "#   logging.use_wandb: True -- unknown field (did you mean 'logging.wandb'?)" in text
    assert "#   training.scheduler: 'cyclic' -- jaxkd has no cyclic schedule" in text
    assert cfg.training.scheduler == "cosine" and cfg.data.augmentation.random_affine.enabled
    assert notes == [n for n in notes if n.startswith("note: data.num_workers")] and len(notes) == 1


def test_from_yaml_the_originals_own_keys(tmp_path):
    """The original's flat keys (SPEC §7): randaugment_n / _m, mixup_alpha / cutmix_alpha (MixUp first when both
    are on), bool toggles with the original's per-dataset settings, early_stopping_*, lr_scheduler_params, logging."""
    src = _write_yaml(tmp_path, """
        data:
          dataset: mnist
          augmentation: {random_rotation: true, random_affine: true, randaugment: true, randaugment_n: 3,
                         randaugment_m: 7, cutout: true, mixup: true, mixup_alpha: 0.8, cutmix: true,
                         cutmix_alpha: 0.5}
        model: {architecture: [], classifier_layers: []}
        training: {early_stopping: true, early_stopping_patience: 20, early_stopping_min_delta: 0.01,
                   scheduler: plateau, lr_scheduler_params: {factor: 0.5, patience: 2}, use_tf32: false}
        logging: {log_level: warning, log_dir: ./logs, wandb: true, wandb_project: kd, wandb_entity: null,
                  save_frequency: 2, track_grad_norm: false}
        """)
    cfg = from_yaml(src, tmp_path / "a.py")
    a, t, log = cfg.data.augmentation, cfg.training, cfg.logging
    assert (a.randaugment.num_ops, a.randaugment.magnitude) == (3, 7)
    assert a.cutout.length == 8 and a.random_rotation.degrees == 10 and a.random_affine.translate == 0.1
    assert a.mixup.enabled and a.mixup.alpha == 0.8 and not a.cutmix.enabled and a.cutmix.alpha == 0.5
    assert "MixUp alone" in (tmp_path / "a.py").read_text()
    assert (t.early_stopping.patience, t.early_stopping.min_delta) == (20, 0.01) and not t.use_tf32
    assert (t.lr_scheduler_params.factor, t.lr_scheduler_params.patience) == (0.5, 2)
    assert (log.log_level, log.wandb, log.wandb_project, log.wandb_entity) == ("WARNING", True, "kd", "")
    assert (log.save_frequency, log.track_grad_norm, log.log_dir) == (2, False, "./logs")
    # CIFAR keeps Cutout 16; switch_prob given (jaxkd's own key) keeps both mixes
    src = _write_yaml(tmp_path, "data: {dataset: cifar, augmentation: {cutout: true, mixup: true, cutmix: true, "
                                "switch_prob: 0.5}}\n")
    a = from_yaml(src, tmp_path / "b.py").data.augmentation
    assert a.cutout.length == 16 and a.mixup.enabled and a.cutmix.enabled
    for bad, match in (("model: {architecture: [{type: conv, out_channels: 32}]}",
                        r"model.architecture is not empty: jaxkd does not build the original's custom-dataset CNN"),
                       ("model: {classifier_layers: [512, 256]}", r"model.classifier_layers is not empty"),
                       ("logging: {log_level: LOUD}",
                        r"'logging.log_level' = 'LOUD' must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR' "
                        r"\(from the YAML's 'logging.log_level'\)"),
                       ("logging: {wandb: 'yes'}", r"'logging.wandb' = 'yes'.*expected bool")):
        with pytest.raises(config_lib.ConfigError, match=match):
            from_yaml(_write_yaml(tmp_path, bad + "\n"), tmp_path / "c.py")
        assert not (tmp_path / "c.py").exists()


def test_from_yaml_invalid_values_and_modes(tmp_path):
    src = _write_yaml(tmp_path, "training: {optimizer: lamb}\n")
    with pytest.raises(config_lib.ConfigError, match=r"training\.optimizer.*'adam'.*from the YAML's 'training.opt"):
        from_yaml(src, tmp_path / "a.py")
    src = _write_yaml(tmp_path, "vit: {variant: small, embed_dim: 192}\nmodel: {model_type: deit}\n")
    with pytest.raises(config_lib.ConfigError, match="vit.variant 'small'"):
        from_yaml(src, tmp_path / "b.py")
    both = """
        model: {model_type: deit}
        distillation: {teacher_checkpoint: t.pth}
        ss_distillation: {lambda_rel: 0.2}
        """
    with pytest.raises(config_lib.ConfigError, match="both"):
        from_yaml(_write_yaml(tmp_path, both), tmp_path / "c.py")
    cfg = from_yaml(_write_yaml(tmp_path, both), tmp_path / "c.py", mode="ss")
    assert cfg.ss_distillation.enabled and not cfg.distillation.enabled and cfg.ss_distillation.lambda_rel == 0.2


def test_from_yaml_cli_without_torch(tmp_path):
    """The CLI's from-yaml works where torch cannot be imported (a stub that raises on import); a PyTorch machinery
    field is one note on stderr."""
    stub = tmp_path / "stub" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('torch must not be imported by from-yaml')\n")
    src = _write_yaml(tmp_path, YAMLS["deit_cifar"][0].rstrip() + "\n        device: cuda\n", "deit.yaml")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub.parent), str(ROOT)]))
    run = lambda *a: subprocess.run([sys.executable, "-m", "jaxkd.convert", "from-yaml", str(src), *a],  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=120)
    r = run("--out", str(tmp_path / "deit.py"), "--devices", "2")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("note: device = 'cuda' is PyTorch machinery, not imported: the original's torch "
                               "device; jaxkd runs on JAX's default backend") and r.stderr.count("\n") == 1
    assert config_lib.load(str(tmp_path / "deit.py")).data.batch_size == 2048
    r = run("--out", str(tmp_path / "deit.py"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "--force" in r.stderr


def test_from_yaml_custom_dataset(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="'custom' needs data.data_path"):
        from_yaml(_write_yaml(tmp_path, "data: {dataset: custom}\n"), tmp_path / "a.py")
    src = _write_yaml(tmp_path, "data: {dataset: custom, data_path: /data/flowers, batch_size: 32}\n"
                                "model: {num_classes: 5}\n")
    cfg = from_yaml(src, tmp_path / "b.py")
    assert cfg.data.source == "folder:/data/flowers" and cfg.data.image_size == 224  # the original's default
    assert cfg.model.num_classes == 5 and cfg.model.in_channels == 3 and cfg.data.batch_size == 32
