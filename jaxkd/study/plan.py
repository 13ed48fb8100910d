"""From a suite to jobs: one (run, seed) each, with its preset, overrides, workdir, teacher and state on disk.

Every job's config is loaded and validated here, in the study process, before any run starts (a bad preset or
--set is one `error:` line, exit 2); the same resolved config is what the trainer writes to config.json, so a job
whose workdir holds summary.json and that config is finished, and one that holds the config without a summary is
resumed by the trainer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxkd import config as config_lib
from jaxkd.config import ConfigError
from jaxkd.study.suites import Run, StudyError, Suite

__all__ = ["Job", "plan", "override_text", "resolve_preset", "REPO"]

REPO = Path(__file__).resolve().parents[2]
# Fields the study sets per job: --set may not change them.
RESERVED = ("seed", "distillation.teacher_checkpoint", "ss_distillation.teacher_checkpoint")


@dataclasses.dataclass
class Job:
    run: Run
    seed: int
    workdir: Path
    spec: str                        # the preset actually trained (smoke variant with --smoke)
    overrides: list[str]             # 'key=value': the suite's, then --set, then the study's (seed, teacher)
    teacher: tuple[str, int] | None  # (run name, seed) of the teacher
    config_json: str | None          # the resolved config the trainer will write (None: the preset did not load)
    status: str                      # new | resume | finished | conflict | invalid
    selected: bool = True
    problem: str = ""

    @property
    def key(self) -> str:
        return f"{self.run.name}/seed{self.seed}"

    def command(self, python: str, force: bool = False) -> list[str]:
        return [python, "-m", "jaxkd.train", "--config", self.spec, "--workdir", str(self.workdir),
                *(f"--config.{o}" for o in self.overrides), *(["--force"] if force else [])]

    def summary(self) -> dict | None:
        f = self.workdir / "summary.json"
        try:
            return json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def refresh(self) -> str:
        self.status = _status(self.workdir, self.config_json) if self.config_json is not None else "invalid"
        return self.status


def override_text(key: str, value: Any) -> str:
    """'key=value' in the syntax of --config overrides."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = repr(list(value))
    elif isinstance(value, str):
        text = value
    else:
        text = repr(value)
    return f"{key}={text}"


def resolve_preset(spec: str) -> str:
    """A preset path relative to the working directory, else to the repository (configs/...)."""
    path_text, sep, arg = spec.partition(":")
    path = Path(path_text)
    if not path.is_file() and not path.is_absolute() and (REPO / path).is_file():
        path = REPO / path
    return f"{path}{sep}{arg}"


def _load(spec: str, overrides: Sequence[str]):
    cfg = config_lib.load(spec, [f"--config.{o}" for o in overrides])
    if cfg.ss_distillation.enabled and cfg.vit.inference_mode != "cls":
        # as jaxkd.train does: token distillation predicts with the class head, and config.json records it
        cfg = config_lib.ConfigDict(cfg.to_dict())
        cfg.vit.inference_mode = "cls"
    return cfg


def _same_config(old_text: str, new_text: str) -> bool:
    old, new = config_lib.flatten(json.loads(old_text)), config_lib.flatten(json.loads(new_text))
    if old == new:
        return True
    from jaxkd.train.checkpoint import _COSMETIC  # the trainer's own rule (imports orbax: only when needed)

    return all(old.get(k) == new.get(k) for k in set(old) | set(new) if k not in _COSMETIC)


def _status(workdir: Path, config_json: str) -> str:
    cfg_file = workdir / "config.json"
    if not cfg_file.is_file():
        return "new"
    try:
        same = _same_config(cfg_file.read_text(), config_json)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        same = False
    if not same:
        return "conflict"
    return "finished" if (workdir / "summary.json").is_file() else "resume"


def _seeds_of(run: Run, suite: Suite, seeds: int, teacher_seeds: int | None) -> range:
    if run.role == "teacher" and teacher_seeds:
        return range(min(teacher_seeds, seeds))
    return range(seeds)


def plan(suite: Suite, workdir: str | Path, *, seeds: int, smoke: bool = False, only: Sequence[str] | None = None,
         sets: Sequence[str] = (), teacher_seeds: int | None = None) -> list[Job]:
    """Every job of the suite, seed-major in dependency order; `selected` marks those this invocation trains
    (--only and the teachers they need). `teacher_seeds` None: the suite's setting."""
    if seeds < 1:
        raise StudyError(f"--seeds {seeds}: give at least 1")
    if teacher_seeds is None:
        teacher_seeds = suite.teacher_seeds
    elif teacher_seeds < 1:
        raise StudyError(f"--teacher-seeds {teacher_seeds}: give at least 1")
    sets = [s[2:] if s.startswith("--") else s for s in sets]
    sets = [s[len("config."):] if s.startswith("config.") else s for s in sets]
    for s in sets:
        key = s.split("=", 1)[0].strip()
        if "=" not in s or not key:
            raise StudyError(f"--set {s!r}: give KEY=VALUE, e.g. --set training.num_epochs=1")
        if key in RESERVED:
            raise StudyError(f"--set {key}: the study sets it per job (use --seeds; teachers come from the suite)")
    wanted = set(suite.names())
    if only:
        wanted = set()
        for name in only:
            if name not in suite.names():
                raise StudyError(f"--only: unknown run '{name}' in suite '{suite.name}' "
                                 f"(runs: {', '.join(suite.names())})")
            r = suite.run(name)
            while r is not None and r.name not in wanted:
                wanted.add(r.name)
                r = suite.run(r.teacher) if r.teacher else None
    root = Path(workdir)
    jobs: list[Job] = []
    for seed in range(seeds):
        for run in suite.runs:
            if seed not in _seeds_of(run, suite, seeds, teacher_seeds):
                continue
            selected = run.name in wanted
            spec = resolve_preset(run.smoke_spec() if smoke else run.preset)
            base = ([override_text(k, v) for k, v in run.overrides.items()] + list(sets)
                    + [f"seed={seed}", "logging.progress_bar=false"])  # (cosmetic: not part of the config match)
            teacher = None
            if run.teacher:
                t_run = suite.run(run.teacher)
                t_seeds = _seeds_of(t_run, suite, seeds, teacher_seeds)
                teacher = (run.teacher, seed % len(t_seeds))
            wd = root / run.name / f"seed{seed}"
            job = Job(run, seed, wd, spec, base, teacher, None, "invalid", selected)
            try:
                if teacher:
                    t_dir = str(root / teacher[0] / f"seed{teacher[1]}")
                    probe = _load(spec, base + [f"distillation.teacher_checkpoint={t_dir}",
                                                f"ss_distillation.teacher_checkpoint={t_dir}"])
                    if probe.ss_distillation.enabled:
                        job.overrides = base + [f"ss_distillation.teacher_checkpoint={t_dir}"]
                    elif probe.distillation.enabled:
                        job.overrides = base + [f"distillation.teacher_checkpoint={t_dir}"]
                    else:
                        raise StudyError(f"suite '{suite.name}', run '{run.name}': role 'distilled' but its preset "
                                         f"{spec} enables neither distillation nor ss_distillation")
                job.config_json = config_lib.to_json(_load(spec, job.overrides))
            except ConfigError as e:  # StudyError too
                if selected:
                    raise StudyError(f"run '{job.key}' ({spec}): {e}") from None
                job.problem = str(e)
            job.refresh()
            jobs.append(job)
    return jobs
