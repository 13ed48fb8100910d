"""The suites of `python -m jaxkd.study`: each a list of runs with their roles and dependencies.

A run is one `jaxkd.train` run of a preset per seed. Roles:
- "teacher": trained for the students that name it (with `Suite.teacher_seeds` only for that many seeds);
- "baseline": a student without distillation, the twin a distilled run is compared with (same seed);
- "distilled": a student with a teacher (a run of this suite, earlier in the order) and a twin (a baseline).
Any run may serve as another run's teacher (the cifar token distillation learns from the suite's ViT baseline).

`original` is the original project's reported test accuracy in % (SPEC.md §6) for the row that reproduces it, or
None. `smoke_preset` overrides the preset `--smoke` uses (default: the preset's `:smoke` variant, and for a preset
with a variant `configs/x.py:soft` it is `configs/x.py:soft,smoke`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxkd.config import ConfigError

__all__ = ["Run", "Suite", "StudyError", "SUITES", "get_suite", "validate_suite", "ROLES"]

ROLES = ("teacher", "baseline", "distilled")


class StudyError(ConfigError):
    """Bad input to the study runner (suite, --only, --set, workdir): one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    preset: str                       # "configs/NAME.py" or "configs/NAME.py:arg" (relative to cwd or the repo)
    role: str                         # teacher | baseline | distilled
    twin: str | None = None           # the baseline a distilled run is compared with
    teacher: str | None = None        # the run whose workdir is the teacher checkpoint
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # field -> value, e.g. {"vit.depth": 6}
    original: float | None = None     # the original project's number, % (SPEC.md §6)
    smoke_preset: str | None = None   # the preset of --smoke (default: preset's :smoke variant)
    note: str = ""

    def smoke_spec(self) -> str:
        if self.smoke_preset:
            return self.smoke_preset
        path, _, arg = self.preset.partition(":")
        return f"{path}:{arg},smoke" if arg else f"{path}:smoke"


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    runs: tuple[Run, ...]
    seeds: int = 1                    # default of --seeds
    teacher_seeds: int | None = None  # None: a teacher per seed; M: teachers for seeds 0..M-1, student k uses k % M
    analyze: tuple[str, ...] = ()     # runs whose seed-0 models `python -m jaxkd.analyze` compares after the runs

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        raise StudyError(f"unknown run '{name}' in suite '{self.name}' (runs: {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [r.name for r in self.runs]


def validate_suite(suite: Suite) -> Suite:
    """Checks names, roles, twins and teachers; returns the suite with its runs in dependency order."""
    names = suite.names()
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"suite '{suite.name}': run names must be unique ({', '.join(dup)})")
    if suite.teacher_seeds is not None and suite.teacher_seeds < 1:
        raise StudyError(f"suite '{suite.name}': teacher_seeds must be >= 1 or None")
    by_name = {r.name: r for r in suite.runs}
    for r in suite.runs:
        where = f"suite '{suite.name}', run '{r.name}'"
        if not r.name or "/" in r.name or "," in r.name or r.name.startswith("."):
            raise StudyError(f"{where}: a run name must be a plain folder name without ',' or '/'")
        if r.role not in ROLES:
            raise StudyError(f"{where}: role {r.role!r} is not one of {', '.join(ROLES)}")
        if r.role == "distilled":
            if r.teacher not in by_name or r.teacher == r.name:
                raise StudyError(f"{where}: a distilled run needs 'teacher', another run of the suite")
            if r.twin not in by_name or by_name[r.twin].role != "baseline":
                raise StudyError(f"{where}: a distilled run needs 'twin', a run of role 'baseline'")
        elif r.teacher or r.twin:
            raise StudyError(f"{where}: only a distilled run has a teacher and a twin")
    unknown = [a for a in suite.analyze if a not in by_name]
    if unknown:
        raise StudyError(f"suite '{suite.name}': 'analyze' names runs it does not have ({', '.join(unknown)})")
    order, state = [], {}

    def visit(r: Run):
        if state.get(r.name) == "done":
            return
        if state.get(r.name) == "visiting":
            raise StudyError(f"suite '{suite.name}': teachers form a cycle at run '{r.name}'")
        state[r.name] = "visiting"
        if r.teacher:
            visit(by_name[r.teacher])
        state[r.name] = "done"
        order.append(r)

    for r in suite.runs:
        visit(r)
    return dataclasses.replace(suite, runs=tuple(order))


# ----------------------------------------------------------------------------------------------------------------
# The suites

# The same student without the dist token and the teacher (its class head serves inference).
_QS_BASELINE = {"distillation.enabled": False, "vit.distillation": False, "vit.inference_mode": "cls"}

QUICKSTART = Suite(
    "quickstart",
    "The quickstart pair on the embedded 8x8 digits (no data needed): CNN teacher, the small ViT alone, the same "
    "DeiT distilled from the teacher.",
    (
        Run("teacher", "configs/quickstart.py", "teacher"),
        Run("vit", "configs/quickstart_kd.py", "baseline", overrides=_QS_BASELINE),
        Run("deit_kd", "configs/quickstart_kd.py", "distilled", twin="vit", teacher="teacher"),
    ),
    seeds=5,
)

_QS_CONSTANT = {"distillation.alpha_schedule": "constant", "distillation.distillation_warmup_epochs": 0}


def _qs_soft(alpha: float) -> dict:
    return {**_QS_CONSTANT, "distillation.distillation_type": "soft", "distillation.alpha": alpha,
            "distillation.tau": 4.0}


QUICKSTART_VARIANTS = Suite(
    "quickstart_variants",
    "The quickstart suite plus the distillation settings tried on the embedded digits: hard KD with alpha 0.5 from "
    "the first step, soft KD (tau 4) with alpha 0.5, 0.7 and 0.9.",
    QUICKSTART.runs + (
        Run("deit_hard05", "configs/quickstart_kd.py", "distilled", twin="vit", teacher="teacher",
            overrides={**_QS_CONSTANT, "distillation.alpha": 0.5}),
        Run("deit_soft05", "configs/quickstart_kd.py", "distilled", twin="vit", teacher="teacher",
            overrides=_qs_soft(0.5)),
        Run("deit_soft07", "configs/quickstart_kd.py", "distilled", twin="vit", teacher="teacher",
            overrides=_qs_soft(0.7)),
        Run("deit_soft09", "configs/quickstart_kd.py", "distilled", twin="vit", teacher="teacher",
            overrides=_qs_soft(0.9)),
    ),
    seeds=5,
)

MNIST = Suite(
    "mnist",
    "MNIST on a laptop (2 CPU cores, 3 seeds): AdaptiveCNN teacher, ViT alone, the same DeiT with hard and with soft "
    "distillation from the teacher; all students the same size and number of steps.",
    (
        Run("cnn", "configs/mnist_cnn_fast.py", "teacher", original=99.08),
        Run("vit", "configs/vit_mnist_fast.py", "baseline", original=99.64),
        Run("deit_hard", "configs/deit_mnist_fast.py", "distilled", twin="vit", teacher="cnn", original=99.54),
        Run("deit_soft", "configs/deit_mnist_fast.py:soft", "distilled", twin="vit", teacher="cnn"),
    ),
    seeds=3,
    teacher_seeds=1,  # one teacher (seed 0) for every student: the students' seeds are what the comparison pairs
)

# Token distillation from a jaxkd ViT (the suite's ViT baseline): DINOv2 weights cannot be downloaded here. The
# teacher sees the images in the normalisation it was trained with (the dataset's).
_SS_JAXKD = {"ss_distillation.teacher_type": "jaxkd", "ss_distillation.teacher_normalization": "dataset"}
_SS_NOTE = "teacher: the suite's jaxkd ViT (the original used DINOv2 ViT-S/14)"


def _cifar_runs(variant: str, cnn: str, vit: str, deit: str, deit_ss: str) -> tuple[Run, ...]:
    v = variant
    return (
        Run(f"cnn_{v}", cnn, "teacher", original=82.90),
        Run(f"vit_{v}", vit, "baseline", original=86.02),
        Run(f"deit_{v}", deit, "distilled", twin=f"vit_{v}", teacher=f"cnn_{v}", original=84.39),
        Run(f"deit_ss_{v}", deit_ss, "distilled", twin=f"vit_{v}", teacher=f"vit_{v}", overrides=_SS_JAXKD,
            original=89.18, note=_SS_NOTE),
    )


CIFAR = Suite(
    "cifar",
    "The original's CIFAR-10 table on one GPU, twice: the original's presets as-is (_orig) and jaxkd's best recipe "
    "(_best): CNN teacher, ViT alone, DeiT hard-distilled from the CNN, DeiT token-distilled from the ViT.",
    _cifar_runs("orig", "configs/cifar_cnn.py", "configs/vit_cifar.py", "configs/deit_cifar.py",
                "configs/deit_ss_cifar.py")
    + _cifar_runs("best", "configs/cifar_cnn_fast.py", "configs/vit_cifar_fast.py", "configs/deit_cifar_fast.py",
                  "configs/deit_ss_cifar_fast.py"),
    seeds=1,
)

_MNIST_NO_AUG = {f"data.augmentation.{op}.enabled": False
                 for op in ("randaugment", "cutout", "random_rotation", "random_affine")}

# The preset's 20 epochs stated with the 2-epoch warm-up, so that --smoke (1 epoch) keeps a valid warm-up.
_W2 = {"training.num_epochs": 20, "training.warmup_epochs": 2}

MNIST_RECIPE = Suite(
    "mnist_recipe",
    "Why the original's MNIST recipe (configs/mnist_cnn.py: AdamW lr 0.08 at batch 8192, 20 epochs) failed in jaxkd "
    "with a 2-epoch warm-up: the recipe with the original's default 5-epoch warm-up, the 2-epoch version, and one "
    "factor changed at a time (a GPU job: about 45 s a run on one H200).",
    (
        Run("warmup5", "configs/mnist_cnn.py", "baseline", original=99.08),
        Run("warmup2", "configs/mnist_cnn.py", "baseline", overrides=_W2),
        Run("warmup0", "configs/mnist_cnn.py", "baseline", overrides={"training.warmup_epochs": 0}),
        Run("warmup2_lr0.008", "configs/mnist_cnn.py", "baseline",
            overrides={**_W2, "training.learning_rate": 0.008}),
        Run("warmup2_lr0.002", "configs/mnist_cnn.py", "baseline",
            overrides={**_W2, "training.learning_rate": 0.002}),
        Run("warmup2_no_randaugment", "configs/mnist_cnn.py", "baseline",
            overrides={**_W2, "data.augmentation.randaugment.enabled": False}),
        Run("warmup2_no_augmentation", "configs/mnist_cnn.py", "baseline",
            overrides={**_W2, **_MNIST_NO_AUG}),
        Run("warmup2_no_clipping", "configs/mnist_cnn.py", "baseline",
            overrides={**_W2, "training.gradient_clip_val": 0.0}),
        Run("warmup2_no_swa", "configs/mnist_cnn.py", "baseline",
            overrides={**_W2, "training.use_swa": False}),
    ),
    seeds=1,
)

CIFAR_TEACHERS = Suite(
    "cifar_teachers",
    "The original's later CIFAR-10 study (LATER.md §5.2, §6): the ResNet-18 and ConvNeXt V2-Tiny teachers, the "
    "DeiT-Tiny student alone (the same recipe without teacher or dist token: the twin the original lacked, §7.3) and "
    "soft-distilled from each teacher. The ConvNeXt V2 teacher starts from timm's ImageNet weights, the file "
    "weights/convnextv2_tiny.fcmae_ft_in22k_in1k.safetensors where the study runs (configs/cifar_convnextv2.py); "
    "--smoke starts it from random weights. Then `python -m jaxkd.analyze` compares the three students "
    "(attention distance, head statistics, CKA within each and against its teacher, Hessian) in DIR/analysis/.",
    (
        Run("resnet18", "configs/cifar_resnet18.py", "teacher", original=95.10),
        Run("convnextv2", "configs/cifar_convnextv2.py", "teacher", original=93.10),
        Run("deit", "configs/deit_cifar_resnet18.py", "baseline", overrides=_QS_BASELINE,
            note="the original's ViT baseline (86.02 %) had another recipe (§7.3); this twin has the students' one"),
        Run("deit_resnet18", "configs/deit_cifar_resnet18.py", "distilled", twin="deit", teacher="resnet18",
            original=90.05),
        Run("deit_convnextv2", "configs/deit_cifar_convnextv2.py", "distilled", twin="deit", teacher="convnextv2",
            original=90.11),
    ),
    seeds=1,
    analyze=("deit", "deit_resnet18", "deit_convnextv2"),
)

SUITES: dict[str, Suite] = {s.name: s for s in (QUICKSTART, QUICKSTART_VARIANTS, MNIST, CIFAR, MNIST_RECIPE,
                                                 CIFAR_TEACHERS)}


def get_suite(name: str) -> Suite:
    """A suite by name, or from a file: 'path/to/file.py[:NAME]' (the file defines SUITES or a Suite NAME)."""
    path_text, _, attr = name.partition(":")
    if path_text.endswith(".py"):
        path = Path(path_text)
        if not path.is_file():
            raise StudyError(f"suite file '{path}' not found")
        spec = importlib.util.spec_from_file_location(f"jaxkd_suite_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found = dict(getattr(module, "SUITES", {}))
        found.update({k: v for k, v in vars(module).items() if isinstance(v, Suite)})
        if attr:
            suite = found.get(attr) or next((s for s in found.values() if s.name == attr), None)
        else:
            suite = next(iter(found.values()), None) if len(found) == 1 else None
        if not isinstance(suite, Suite):
            raise StudyError(f"suite file '{path}' defines no suite {attr!r} (it has: {', '.join(found) or 'none'})"
                             if attr or not found else
                             f"suite file '{path}' defines several suites: name one as {path}:NAME")
        return validate_suite(suite)
    name = name.replace("-", "_") if name.replace("-", "_") in SUITES else name  # cifar-teachers = cifar_teachers
    if name not in SUITES:
        raise StudyError(f"unknown suite '{name}' (known: {', '.join(SUITES)}; or a file: path/to/suite.py:NAME)")
    return validate_suite(SUITES[name])
