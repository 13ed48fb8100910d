"""The original project's YAML configs -> jaxkd preset files (``python -m jaxkd.convert from-yaml``).

The YAML's sections (SPEC.md §7: top level, data, model, training, logging, vit, distillation, ss_distillation)
keep their names in jaxkd, so most fields map one to one onto :func:`jaxkd.config.base_config`. The rest:

=========================================  =====================================================================
YAML (original project)                    jaxkd
=========================================  =====================================================================
data.dataset: mnist | cifar | custom       data.dataset, and data.source = tfds:mnist | tfds:cifar10 |
                                           folder:<data_path>; model.in_channels from the dataset when not given
data.data_path                             data.data_dir (mnist / cifar); data.source folder:PATH (custom)
data.batch_size (per device)               data.batch_size = batch_size x --devices (jaxkd's batch is global)
data.normalization: {mean, std}            data.normalization.mean / std (lists; a number becomes [number])
data.image_size, augmentation.image_size   data.image_size (custom only; the original ignored it otherwise)
data.augmentation.<op>: true | false       <op>.enabled; cutout: true on MNIST -> cutout.length 8 (SPEC §5)
data.augmentation.randaugment_n / _m       randaugment.num_ops / randaugment.magnitude
data.augmentation.mixup_alpha              mixup.alpha (cutmix_alpha: cutmix.alpha)
mixup: true and cutmix: true               mixup only (the original's precedence), unless switch_prob is given
data.augmentation.<op>: NUMBER             <op>.enabled and its main field: random_rotation.degrees,
                                           random_affine.translate, cutout.length, random_crop.padding,
                                           mixup.alpha, cutmix.alpha, color_jitter.brightness = contrast =
                                           saturation (hue stays 0.1, the original's pipeline); 0 = disabled
data.augmentation.<op>: {field: v, ...}    <op>.enabled and <op>.field (randaugment num_ops / magnitude,
                                           random_affine translate [a, a], auto_augment policy, ...)
data.augmentation.auto_augment: POLICY     auto_augment.enabled, auto_augment.policy
mixup / cutmix {prob: p}                   data.augmentation.mix_prob
model.architecture, classifier_layers      not built: [] is accepted, a non-empty list is an error (the
                                           original's custom-dataset CNN builder; jaxkd builds AdaptiveCNN)
training.early_stopping: BOOL | {...}      training.early_stopping.enabled (/ patience / min_delta)
training.early_stopping_patience / ...     training.early_stopping.patience / min_delta (also patience,
_min_delta                                 min_delta)
training.lr_scheduler_params: {...}        training.lr_scheduler_params.T_max / eta_min / step_size / gamma /
                                           factor / patience
training.use_amp absent                    training.use_amp = true (the original's default; jaxkd's is false)
training.use_tf32 absent                   training.use_tf32 = true (likewise; TF32 matters on GPUs only)
logging.log_level: debug | info | ...      logging.log_level, upper case (DEBUG, INFO, WARNING, ERROR)
logging.wandb / wandb_project / _entity    the same fields (wandb_entity null -> '')
data.image_size absent (custom)            data.image_size = 224 (the original's default)
vit.variant without embed_dim / num_heads  vit.embed_dim / vit.num_heads of the variant
model_type deit, no vit.img_size           vit.img_size from the dataset's image size
distillation with a teacher_checkpoint     distillation.enabled (model_type deit; --mode to choose)
an ss_distillation section                 ss_distillation.enabled (model_type deit; --mode to choose)
ss_distillation.use_dual_augment           data.augmentation.teacher_view = clean (true) | student (false)
ss_distillation.teacher_embed_dim          not a field: jaxkd reads the width from the teacher's weights; it must
                                           be the width of teacher_model_name (dinov2_vits14: 384, ...)
=========================================  =====================================================================

Fields that only configure PyTorch machinery (:data:`NO_EQUIVALENT`: DataLoader workers, pinning, prefetching,
``device``, ``amp_backend``, ``use_compile``, ``compile_mode``, ``use_fused_optimizer``) are not imported: each
gives one ``note:`` line saying what jaxkd does instead, and a comment in the preset. A key that neither the original
(:data:`ORIGINAL_KEYS`) nor jaxkd's config knows is an error with a did-you-mean suggestion, and so is a value jaxkd
cannot reproduce (a cyclic schedule, an affine rotation, ...); ``ignore_unsupported`` writes both into the preset
as comments instead. YAML strings such as ``1e-3`` (PyYAML reads them as text) are accepted for float fields.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from jaxkd import config as config_lib
from jaxkd.config import ConfigError
from jaxkd.config import _coerce as _coerce_field
from jaxkd.interop.yaml_fields import (  # noqa: F401  (NO_EQUIVALENT, ORIGINAL_KEYS: re-exported)
    AUG_OPS,
    AUG_PARAMS,
    DATASET_SOURCES,
    DINOV2_WIDTHS,
    EARLY_STOP_ALIASES,
    LR_PARAMS,
    MODES,
    NATIVE_CUTOUT,
    NO_EQUIVALENT,
    ORIGINAL_KEYS,
    SECTIONS,
    TOP_LEVEL,
    did_you_mean,
)
from jaxkd.interop.yaml_preset import render_preset

__all__ = ["NO_EQUIVALENT", "ORIGINAL_KEYS", "yaml_to_config", "render_preset", "import_yaml"]


class _Converter:
    """One YAML document mapped onto base_config(); collects comments and unsupported fields."""

    def __init__(self, doc: dict, where: str, devices: int, mode: str):
        self.where, self.devices, self.mode = where, devices, mode
        self.doc = doc
        self.cfg = config_lib.base_config()
        self.base = config_lib.flatten(self.cfg)
        self.origin: dict[str, str] = {}  # jaxkd path -> YAML field it came from
        self.notes: dict[str, list[str]] = {}  # jaxkd path -> comment lines written above its assignment
        self.forced: set[str] = set()  # paths written even when equal to the default
        self.header: list[str] = []  # notes for the preset's docstring
        self.unsupported: list[tuple[str, Any, str]] = []  # (YAML field, value, why jaxkd cannot reproduce it)
        self.unknown: list[tuple[str, Any, str]] = []  # (YAML field neither project knows, value, did-you-mean)
        self.torch_only: list[tuple[str, Any, str]] = []  # (PyTorch machinery field, value, what jaxkd does)
        self.teacher_embed_dim: Any = None  # the YAML's ss_distillation.teacher_embed_dim (checked in derive)

    # -- helpers ----------------------------------------------------------------------------------------------
    def set(self, path: str, value: Any, yaml_key: str, note: str | None = None) -> None:
        if value is None:  # YAML null: keep jaxkd's default
            return
        default = self.base[path]
        if isinstance(default, float) and isinstance(value, str):
            try:
                value = float(value)  # PyYAML reads '1e-3' as a string
            except ValueError:
                pass
        if isinstance(default, list) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        try:
            value = _coerce_field(path, value, default)
        except ConfigError as e:
            raise ConfigError(f"{self.where}: YAML field '{yaml_key}' = {value!r} does not fit jaxkd's '{path}' "
                              f"({str(e).split('; ', 1)[-1]})") from None
        node = self.cfg
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        self.origin[path] = yaml_key
        if note:
            self.notes.setdefault(path, []).append(note)

    def given(self, path: str) -> bool:
        return path in self.origin

    def unsupported_field(self, yaml_key: str, value: Any, why: str) -> None:
        """A field both projects know, with a value jaxkd cannot reproduce."""
        self.unsupported.append((yaml_key, value, why))

    def unknown_field(self, yaml_key: str, value: Any) -> None:
        self.unknown.append((yaml_key, value, did_you_mean(yaml_key)))

    def direct(self, prefix: str, key: str, value: Any, yaml_key: str) -> None:
        """Same name in jaxkd: a leaf is set, a mapping onto a jaxkd sub-section recurses; PyTorch machinery is
        noted; anything else is unknown."""
        path = f"{prefix}.{key}" if prefix else key
        if yaml_key in NO_EQUIVALENT:
            self.torch_only.append((yaml_key, value, NO_EQUIVALENT[yaml_key]))
        elif path in self.base:
            self.set(path, value, yaml_key)
        elif isinstance(value, dict) and any(k.startswith(path + ".") for k in self.base):
            for k, v in value.items():
                self.direct(path, str(k), v, f"{yaml_key}.{k}")
        else:
            self.unknown_field(yaml_key, value)

    # -- sections ---------------------------------------------------------------------------------------------
    def run(self) -> ConfigDict:
        for key, value in self.doc.items():
            key = str(key)
            if key in SECTIONS:
                if value is not None and not isinstance(value, dict):
                    raise ConfigError(f"{self.where}: section '{key}' must be a mapping, got {value!r}")
            elif key in TOP_LEVEL:
                self.set(key, value, key)
            else:
                self.direct("", key, value, key)
        self.data(self.doc.get("data") or {})
        for section in ("model", "training", "logging", "vit", "distillation", "ss_distillation"):
            body = self.doc.get(section) or {}
            if section == "training":
                self.training(body)
                continue
            for k, v in body.items():
                k, yk = str(k), f"{section}.{k}"
                if section == "model" and k in ("architecture", "classifier_layers"):
                    if v:  # the original's layer lists for its custom-dataset CNN builder ([] = not used)
                        raise ConfigError(
                            f"{self.where}: {yk} is not empty: jaxkd does not build the original's custom-dataset "
                            "CNN layer lists (architecture / classifier_layers); remove both to train jaxkd's "
                            "AdaptiveCNN (model.cnn_variant mnist or cifar) or a DeiT (model_type: deit)")
                elif section == "logging" and k == "log_level" and isinstance(v, str):
                    self.set("logging.log_level", v.upper(), yk)
                elif section == "ss_distillation" and k == "use_dual_augment":
                    self.set("data.augmentation.teacher_view", "clean" if v else "student", yk,
                             "the original's use_dual_augment: the teacher sees the clean view (not augmented, not "
                             "mixed)" if v else None)
                elif section == "ss_distillation" and k == "teacher_embed_dim":
                    self.teacher_embed_dim = v
                else:
                    self.direct(section, k, v, yk)
        self.derive()
        return self.cfg

    def data(self, d: dict) -> None:
        dataset = d.get("dataset")
        if dataset is not None:
            self.set("data.dataset", dataset, "data.dataset")
        dataset = self.cfg.data.dataset
        if dataset in DATASET_SOURCES and "source" not in d:
            self.set("data.source", DATASET_SOURCES[dataset], "data.dataset",
                     "from data.dataset; TFDS downloads it on first use (offline: an npz:, mnist-idx:, "
                     "cifar-python: or folder: source, see jaxkd.data.sources)")
        for key, value in d.items():
            key, yk = str(key), f"data.{key}"
            if key == "dataset":
                continue
            if key == "batch_size":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{self.where}: YAML field 'data.batch_size' = {value!r} must be an integer")
                self.set("data.batch_size", value * self.devices, yk,
                         f"the YAML's batch_size {value} was PER DEVICE (the original ran one process per GPU); "
                         f"jaxkd's data.batch_size is the GLOBAL batch: {value} x {self.devices} device(s) "
                         f"(--devices). Scale it with the number of accelerators to reproduce a multi-GPU run.")
                self.forced.add("data.batch_size")
            elif key == "data_path":
                if value is None:
                    continue
                if dataset == "custom":
                    if "source" not in d:
                        self.set("data.source", f"folder:{value}", yk,
                                 "from data_path: jaxkd reads split/class/image folders (train/, test/)")
                else:
                    self.set("data.data_dir", str(value), yk,
                             "the original's data_path (its torchvision download folder); a local copy can also be "
                             "read directly with data.source = "
                             + ("mnist-idx:<data_path>/MNIST/raw" if dataset == "mnist"
                                else "cifar-python:<data_path>/cifar-10-batches-py"))
            elif key == "normalization":
                for k, v in (value or {}).items():
                    if k in ("mean", "std"):
                        self.set(f"data.normalization.{k}", v, f"{yk}.{k}")
                    else:
                        self.unknown_field(f"{yk}.{k}", v)
            elif key == "image_size":
                self.image_size(value, yk)
            elif key == "augmentation":
                if value is not None and not isinstance(value, dict):
                    raise ConfigError(f"{self.where}: YAML field 'data.augmentation' must be a mapping of "
                                      f"augmentations, got {value!r}")
                for op, v in (value or {}).items():
                    self.augmentation(str(op), v)
            else:
                self.direct("data", key, value, yk)
        if dataset == "custom" and not self.given("data.source"):
            raise ConfigError(f"{self.where}: data.dataset 'custom' needs data.data_path (a folder of "
                              "train/CLASS/IMAGE and test/CLASS/IMAGE) or a jaxkd data.source")

    def image_size(self, value: Any, yk: str) -> None:
        dataset = self.cfg.data.dataset
        if dataset == "custom" or value is None:
            self.set("data.image_size", value, yk)
        else:
            self.header.append(f"{yk} = {value} is not imported: the original used it for custom datasets only "
                               f"({dataset} keeps its native size).")

    def augmentation(self, op: str, value: Any) -> None:
        yk, base = f"data.augmentation.{op}", f"data.augmentation.{op}"
        if op in AUG_PARAMS:  # the original's flat keys: randaugment_n / _m, mixup_alpha, cutmix_alpha
            if value is not None:
                self.aug_field(*AUG_PARAMS[op], value, yk)
            return
        if op == "image_size":
            self.image_size(value, yk)
            return
        if op not in AUG_OPS:
            self.direct("data.augmentation", op, value, yk)
            return
        scalar_field, fields = AUG_OPS[op]
        if value is None or value is False:
            self.set(f"{base}.enabled", False, yk)
            return
        if value is True:
            self.set(f"{base}.enabled", True, yk)
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if scalar_field is None:
                raise ConfigError(f"{self.where}: YAML field '{yk}' = {value!r}: give true/false or a mapping of "
                                  f"{', '.join(fields)}")
            self.set(f"{base}.enabled", value != 0, yk)
            if value != 0:
                self.aug_field(op, scalar_field, value, yk)
                if op == "color_jitter":
                    self.aug_field(op, "contrast", value, yk)
                    self.aug_field(op, "saturation", value, yk)
            return
        if isinstance(value, str) and op == "auto_augment":
            self.set(f"{base}.enabled", True, yk)
            self.set(f"{base}.policy", value.lower(), yk)
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{self.where}: YAML field '{yk}' = {value!r}: give true/false, a number or a mapping")
        self.set(f"{base}.enabled", value.get("enabled", True), f"{yk}.enabled")
        for k, v in value.items():
            k = str(k)
            if k == "enabled":
                continue
            if k not in fields:
                self.unknown_field(f"{yk}.{k}", v)
            else:
                self.aug_field(op, k, v, f"{yk}.{k}")

    def aug_field(self, op: str, field: str, v: Any, yk: str) -> None:
        base = f"data.augmentation.{op}"
        native = config_lib.DATASET_SHAPES.get(self.cfg.data.dataset, (None,))[0]
        if field == "translate" and isinstance(v, (list, tuple)):
            if len(v) != 2 or v[0] != v[1]:
                self.unsupported_field(yk, v, "jaxkd translates by one fraction on both axes (give [a, a])")
                return
            v = v[0]
        if (field in ("degrees", "shear") and op == "random_affine") or field == "scale":
            if v not in (None, 0, 0.0):
                self.unsupported_field(yk, v, "jaxkd's random_affine only translates (use random_rotation to rotate)")
        elif field == "n_holes":
            if v != 1:
                self.unsupported_field(yk, v, "jaxkd's cutout cuts one square")
        elif field == "size":
            size = v if isinstance(v, int) else (v[0] if isinstance(v, (list, tuple)) and len(set(v)) == 1 else None)
            if size is None or size != native:
                self.unsupported_field(yk, v, "jaxkd's random_crop keeps the image size (give padding only)")
        elif field == "p":
            if v != 0.5:
                self.unsupported_field(yk, v, "jaxkd's random_flip flips with probability 0.5")
        elif field == "prob":
            if self.given("data.augmentation.mix_prob") and self.cfg.data.augmentation.mix_prob != v:
                self.unsupported_field(yk, v, "jaxkd has one mix_prob for mixup and cutmix")
            else:
                self.set("data.augmentation.mix_prob", v, yk)
        elif field == "policy":
            self.set(f"{base}.policy", str(v).lower(), yk)
        else:
            self.set(f"{base}.{field}", v, yk)

    def training(self, t: dict) -> None:
        for key, value in t.items():
            key, yk = str(key), f"training.{key}"
            if key == "early_stopping":
                if isinstance(value, dict):
                    for k, v in value.items():
                        if k in ("enabled", "patience", "min_delta"):
                            self.set(f"training.early_stopping.{k}", v, f"{yk}.{k}")
                        else:
                            self.unknown_field(f"{yk}.{k}", v)
                else:
                    self.set("training.early_stopping.enabled", value, yk)
            elif key in EARLY_STOP_ALIASES:
                self.set(f"training.early_stopping.{EARLY_STOP_ALIASES[key]}", value, yk)
            elif key == "lr_scheduler_params":
                for k, v in (value or {}).items():
                    if k in LR_PARAMS:
                        self.set(f"training.lr_scheduler_params.{k}", v, f"{yk}.{k}")
                    else:
                        self.unknown_field(f"{yk}.{k}", v)
            elif key == "scheduler" and value == "cyclic":
                self.unsupported_field(yk, value, "jaxkd has no cyclic schedule (cosine, step, exponential, plateau "
                                                  "or constant)")
            else:
                self.direct("training", key, value, yk)

    # -- fields the original derived from others ------------------------------------------------------------
    def derive(self) -> None:
        c = self.cfg
        if not self.given("training.use_amp"):
            self.set("training.use_amp", True, "training.use_amp",
                     "the original's default (jaxkd's is false); with use_bf16 true this is bf16 compute")
        if not self.given("training.use_tf32"):
            self.set("training.use_tf32", True, "training.use_tf32",
                     "the original's default (jaxkd's is false): float32 matmuls in TF32 on GPUs (CPUs ignore it)")
        aug = c.data.augmentation
        length = NATIVE_CUTOUT.get(c.data.dataset)
        if aug.cutout.enabled and length and not self.given("data.augmentation.cutout.length"):
            self.set("data.augmentation.cutout.length", length, "data.augmentation.cutout",
                     f"the original's Cutout on {c.data.dataset} (SPEC §5)")
        if aug.mixup.enabled and aug.cutmix.enabled and not self.given("data.augmentation.switch_prob"):
            self.set("data.augmentation.cutmix.enabled", False, "data.augmentation.cutmix")
            self.header.append("mixup and cutmix are both true: the original applies MixUp alone (its precedence), "
                               "so cutmix is off (set data.augmentation.switch_prob to alternate them in jaxkd).")
        if c.data.dataset == "custom" and not self.given("data.image_size"):
            self.set("data.image_size", 224, "data.image_size", "the original's default for custom datasets")
        shape = config_lib.DATASET_SHAPES.get(c.data.dataset)
        if shape and not self.given("model.in_channels"):
            self.set("model.in_channels", shape[2], "data.dataset", "from data.dataset")
        if c.model.model_type == "deit" and not self.given("vit.img_size"):
            size = c.data.image_size or (shape[0] if shape else 0)
            if size:
                self.set("vit.img_size", size, "data.dataset", "the dataset's image size")
        v = c.vit.variant
        if v in config_lib.VIT_VARIANTS:
            dims = config_lib.VIT_VARIANTS[v]
            got = (c.vit.embed_dim, c.vit.num_heads)
            if not (self.given("vit.embed_dim") or self.given("vit.num_heads")):
                self.set("vit.embed_dim", dims[0], "vit.variant", f"width of vit.variant '{v}'")
                self.set("vit.num_heads", dims[1], "vit.variant")
            elif got != dims:
                raise ConfigError(f"{self.where}: vit.variant '{v}' means embed_dim / num_heads {dims[0]} / "
                                  f"{dims[1]} but the YAML gives {got[0]} / {got[1]}: drop one of them, or set "
                                  "variant: custom")
        self.check_teacher_width()
        if c.ss_distillation.use_cka_loss or c.ss_distillation.use_gram_loss:
            self.header.append(
                "The structural losses run with jaxkd's defaults, which correct the original's (LATER.md §7.6-7.9: "
                "teacher side without a trainable projector, lambda_gram its own weight, RBF bandwidth without the "
                "diagonal, squared Gram norm); the original's own: --config.ss_distillation."
                "structural_teacher_projector=trainable, structural_weights=coupled, cka_rbf_bandwidth=median_all, "
                "gram_norm=frobenius.")
        self.modes()

    def check_teacher_width(self) -> None:
        """The original stated the DINOv2 teacher's width (teacher_embed_dim); jaxkd reads it from the weights, so
        the value is only checked against the named model (a dinov2_custom or jaxkd teacher: not checkable)."""
        dim, ss = self.teacher_embed_dim, self.cfg.ss_distillation
        if dim is None:
            return
        name = ss.teacher_model_name
        size = name[len("dinov2_vit")] if ss.teacher_type == "dinov2" and name != "dinov2_custom" else None
        if size is not None and dim != DINOV2_WIDTHS[size]:
            self.unsupported_field("ss_distillation.teacher_embed_dim", dim,
                                   f"{name} has {DINOV2_WIDTHS[size]}-wide tokens; jaxkd reads the width from the "
                                   "teacher's weights")
        else:
            self.header.append(f"ss_distillation.teacher_embed_dim = {dim} is not imported: jaxkd reads the "
                               "teacher's width from its weights.")

    def modes(self) -> None:
        c, doc = self.cfg, self.doc
        deit = c.model.model_type == "deit"
        kd_auto = deit and bool((doc.get("distillation") or {}).get("teacher_checkpoint"))
        ss_auto = deit and bool(doc.get("ss_distillation"))
        explicit = {s: self.given(f"{s}.enabled") for s in ("distillation", "ss_distillation")}
        if self.mode != "auto":
            want = {"distillation": self.mode == "distillation", "ss_distillation": self.mode == "ss"}
            for s, on in want.items():
                self.set(f"{s}.enabled", on, f"--mode {self.mode}")
            self.header.append(f"Training mode from --mode {self.mode}.")
            return
        kd = c.distillation.enabled if explicit["distillation"] else kd_auto
        ss = c.ss_distillation.enabled if explicit["ss_distillation"] else ss_auto
        if kd and ss:
            raise ConfigError(f"{self.where}: the YAML sets up both CNN -> DeiT distillation (distillation."
                              "teacher_checkpoint) and token distillation (ss_distillation): add 'enabled: false' to "
                              "the one the run did not use, or pass --mode distillation|ss|supervised")
        if not explicit["distillation"] and kd:
            self.set("distillation.enabled", True, "distillation.teacher_checkpoint",
                     "the YAML names a teacher_checkpoint: CNN -> DeiT distillation (--mode to change)")
        if c.distillation.enabled and self.given("distillation.teacher_checkpoint"):
            self.notes.setdefault("distillation.teacher_checkpoint", []).append(
                "the original's teacher; a .pth of the original project becomes a jaxkd workdir with "
                "python -m jaxkd.convert from-torch --config PRESET --torch FILE.pth --out DIR")
        if not explicit["ss_distillation"] and ss:
            self.set("ss_distillation.enabled", True, "ss_distillation",
                     "the YAML has an ss_distillation section: token distillation (--mode to change)")


def yaml_to_config(doc: dict, *, where: str = "YAML", devices: int = 1, mode: str = "auto",
                   ignore_unsupported: bool = False) -> tuple[ConfigDict, _Converter]:
    """Maps a parsed YAML document onto base_config(); returns (validated config, converter with its notes).

    Raises ConfigError listing every unknown field (with did-you-mean) and every value jaxkd cannot reproduce
    (unless ``ignore_unsupported``), naming the YAML field behind the first invalid value, or a non-empty
    model.architecture / classifier_layers. PyTorch machinery fields are collected in ``converter.torch_only``.
    """
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: the YAML must be a mapping of sections, got {type(doc).__name__}")
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices = {devices!r} must be an integer >= 1")
    conv = _Converter(doc, where, devices, mode)
    cfg = conv.run()
    if (conv.unknown or conv.unsupported) and not ignore_unsupported:
        problems = []
        if conv.unknown:
            problems.append(f"{len(conv.unknown)} unknown field(s), in neither the original project's config nor "
                            "jaxkd's: " + ", ".join(k + hint for k, _, hint in conv.unknown))
        if conv.unsupported:
            problems.append(f"{len(conv.unsupported)} value(s) jaxkd cannot reproduce: "
                            + ", ".join(f"{k} = {v!r} ({why})" for k, v, why in conv.unsupported))
        raise ConfigError(f"{where}: {'; '.join(problems)}. Correct or remove them, or pass --ignore-unsupported "
                          "to keep them as comments in the preset")
    try:
        config_lib.validate(cfg)
    except ConfigError as e:
        text = str(e)
        fields = [p for p in conv.origin if f"'{p}'" in text]
        origin = f" (from the YAML's '{conv.origin[fields[0]]}')" if fields else ""
        raise ConfigError(f"{where}: {text}{origin}") from None
    return cfg, conv


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def import_yaml(yaml_path: str | os.PathLike, out_py: str | os.PathLike, *, ignore_unsupported: bool = False,
                devices: int = 1, mode: str = "auto", force: bool = False, command: str = "",
                log: Callable[[str], None] = _note) -> ConfigDict:
    """Reads the original project's YAML config, writes the equivalent jaxkd preset to ``out_py`` and returns the
    config that preset loads to (checked by loading the written file with :func:`jaxkd.config.load`).

    ``log`` gets one ``note: ...`` line per PyTorch machinery field (stderr by default), after the preset is
    written: an import that fails prints only its error."""
    import yaml

    src, out = Path(yaml_path), Path(out_py)
    if out.suffix != ".py":
        raise ConfigError(f"--out {out}: a preset file must end in .py")
    if out.exists() and not force:
        raise ConfigError(f"--out {out} exists; pass --force to overwrite it")
    try:
        doc = yaml.safe_load(src.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{src}: no such YAML file; give the original project's YAML config "
                          "(e.g. configs/cnn_mnist.yaml)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: not valid YAML ({' '.join(str(e).split())})") from None
    cfg, conv = yaml_to_config(doc, where=str(src), devices=devices, mode=mode,
                               ignore_unsupported=ignore_unsupported)
    command = command or f"python -m jaxkd.convert from-yaml {src} --out {out}"
    text = render_preset(cfg, conv, str(src.resolve()), command)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, out)
    loaded = config_lib.load(str(out))
    if config_lib.flatten(loaded) != config_lib.flatten(cfg):
        diff = [k for k, v in config_lib.flatten(cfg).items() if config_lib.flatten(loaded).get(k) != v]
        raise RuntimeError(f"internal error: {out} loads to a different config (fields {diff})")
    for key, value, why in conv.torch_only:
        log(f"note: {key} = {value!r} is PyTorch machinery, not imported: {why}")
    return loaded
