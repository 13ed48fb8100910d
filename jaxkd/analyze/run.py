"""One analysis: each workdir's model (and its teacher) on a seeded sample of a split -> the metrics of
``jaxkd.analyze`` as one JSON-ready dict per workdir, then ``OUT/analysis.json`` and the figures."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxkd.errors import JaxkdError

__all__ = ["METRICS", "SPLITS", "AnalyzeError", "Settings", "check_workdir", "teacher_source", "analyze_workdir",
           "cka_summary", "run", "summary_lines"]

METRICS = ("attention", "heads", "cka", "hessian")
#: what --split accepts -> the pipeline's split name
SPLITS = {"validation": "val", "val": "val", "test": "test"}


class AnalyzeError(JaxkdError, ValueError):
    """Bad input to ``python -m jaxkd.analyze`` (a workdir, a teacher, a split, a setting)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    metrics: tuple[str, ...] = METRICS
    split: str = "validation"
    num_samples: int = 256
    seed: int = 0
    chunk_size: int = 128
    kernels: tuple[str, ...] = ("linear", "rbf")
    estimators: tuple[str, ...] = ("unbiased", "biased")
    rbf_sigma_frac: float = 1.0
    top_k: int = 5
    min_probes: int = 10
    max_probes: int = 100
    trace_rtol: float = 0.05
    eig_tol: float = 1e-4
    progress: bool = True


def check_workdir(workdir: Path, what: str = "workdir") -> dict:
    """The config.json of a finished run (cheap: before JAX is imported), or an AnalyzeError naming the fix."""
    cfg_file = workdir / "config.json"
    if not cfg_file.is_file():
        raise AnalyzeError(f"{what} {workdir}: no config.json; give a jaxkd workdir written by python -m jaxkd.train")
    if not (workdir / "model").is_dir():
        raise AnalyzeError(f"{what} {workdir}: no exported model in {workdir / 'model'}; the run has not finished "
                           "(run the same train command again to resume it)")
    try:
        return json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise AnalyzeError(f"{what} {workdir}: config.json cannot be read ({e}); give a jaxkd workdir") from None


def teacher_source(cfg: dict) -> str | None:
    """The teacher file or folder a distilled run's config names (None for a run without a teacher)."""
    if cfg.get("distillation", {}).get("enabled"):
        return cfg["distillation"].get("teacher_checkpoint") or None
    if cfg.get("ss_distillation", {}).get("enabled"):
        return cfg["ss_distillation"].get("teacher_checkpoint") or None
    return None


class _Bar:
    """A tqdm bar on stderr (off when stderr is not a terminal, or when disabled)."""

    def __init__(self, enabled: bool, total: int | None, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=None if enabled else True,
                        dynamic_ncols=True, mininterval=0.5, leave=False)

    def step(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _load_teacher(cfg, data, teacher_dir: Path | None):
    """(Teacher, view) of the run: `teacher_dir` (any jaxkd workdir) through the CNN -> DeiT loader, or the run's own
    teacher through its task (jaxkd.tasks: the same loaders and checks as training), in float32; None without one.
    ``view`` maps the student's normalised images to the teacher's input."""
    from jaxkd import tasks
    from jaxkd.config import ConfigDict

    cfg = ConfigDict(cfg.to_dict())
    cfg.distillation.teacher_dtype = "float32"
    cfg.ss_distillation.teacher_dtype = "float32"
    if teacher_dir is not None:
        from jaxkd.tasks.kd import load_kd_teacher

        cfg.distillation.teacher_checkpoint = str(teacher_dir)
        cfg.distillation.teacher_model_type = check_workdir(teacher_dir, "--teacher")["model"]["model_type"]
        return load_kd_teacher(cfg, data.num_classes, data.image_shape), None
    if tasks.task_class(cfg) is tasks.Supervised:
        return None, None
    task = tasks.from_config(cfg, data)
    return task.teacher, getattr(task, "teacher_input", None)


def _cka_block(xs, ys, settings: Settings) -> dict[str, list]:
    from jaxkd.analyze.cka import cka_matrix

    return {f"{kern}/{est}": cka_matrix(xs, ys, kernel_name=kern, estimator=est,
                                        sigma_frac=settings.rbf_sigma_frac).tolist()
            for kern in settings.kernels for est in settings.estimators}


def cka_summary(matrix, square: bool) -> dict:
    """Figures of one CKA matrix: for self-CKA the mean off the diagonal, the layer diversity (1 − that), first vs
    last layer and middle vs last; for student × teacher the mean, and each student layer's best teacher layer."""
    m = np.asarray(matrix, np.float64)
    if square:
        n = m.shape[0]
        off = m[~np.eye(n, dtype=bool)] if n > 1 else np.array([math.nan])
        return {"diagonal_mean": float(np.mean(np.diag(m))), "off_diagonal_mean": float(np.mean(off)),
                "layer_diversity": float(1 - np.mean(off)), "first_last": float(m[0, -1]),
                "middle_last": float(m[(n - 1) // 2, -1])}
    return {"mean": float(np.mean(m)), "best_per_student_layer": np.max(m, axis=1).tolist(),
            "best_teacher_layer": np.argmax(m, axis=1).tolist()}


def analyze_workdir(workdir: Path, name: str, settings: Settings, teacher_dir: Path | None = None) -> dict:
    """The metrics of one workdir (see the package docstring); each with its settings and wall time."""
    from jaxkd.analyze import features
    from jaxkd.analyze.attention import summarize_heads
    from jaxkd.data import DataPipeline
    from jaxkd.models import compute_dtype, count_params
    from jaxkd.models.layers import cast_module
    from jaxkd.train import checkpoint

    t_start = time.perf_counter()
    model, cfg = checkpoint.load(workdir)
    notes = []
    if np.dtype(compute_dtype(cfg)) != np.float32:
        cast_module(model, np.float32)
        notes.append(f"the model computes in {np.dtype(compute_dtype(cfg)).name}; analysed in float32")
    data = DataPipeline.from_config(cfg)
    split = SPLITS[settings.split]
    if data.num_examples(split) == 0:
        raise AnalyzeError(f"{workdir}: its {settings.split} split is empty (data.val_size = {cfg.data.val_size}); "
                           "use --split test, or train with a validation split")
    images, labels, rows = features.sample_split(data, split, settings.num_samples, settings.seed)
    n = len(labels)
    res: dict[str, Any] = {"workdir": str(workdir), "name": name, "experiment_name": cfg.experiment_name,
                           "model_type": cfg.model.model_type, "num_params": count_params(model),
                           "split": settings.split, "num_samples": n, "split_size": data.num_examples(split),
                           "seed": settings.seed, "sample_rows": rows.tolist(), "skipped": {},
                           "notes": notes}
    chunks = features.num_chunks(n, settings.chunk_size)
    vit = features.is_vit(model)
    want = set(settings.metrics)
    if want & {"attention", "heads"}:
        if not vit:
            for m in sorted(want & {"attention", "heads"}):
                res["skipped"][m] = f"a {cfg.model.model_type} has no attention"
        else:
            t0, bar = time.perf_counter(), _Bar(settings.progress, chunks, f"{name}: attention")
            stats = features.attention_statistics(model, images, settings.chunk_size, on_chunk=bar.step)
            bar.close()
            summary = summarize_heads(stats)
            wall = time.perf_counter() - t0
            common = {"grid": list(model.grid_size), "num_prefix_tokens": int(model.num_prefix_tokens),
                      "patch_size": int(model.patch_size), "units": "patches", "wall_s": wall}
            if "attention" in want:
                res["attention"] = dict(common, layer_distances=summary["layer_distances"],
                                        mean_distance=summary["mean_distance"],
                                        head_distances=stats["mean_distance"].tolist())
            if "heads" in want:
                res["heads"] = dict(common, per_head={k: v.tolist() for k, v in stats.items()}, **summary)
    if "cka" in want:
        t0 = time.perf_counter()
        teacher, view = _load_teacher(cfg, data, teacher_dir)
        tmodel = features.unwrap_teacher(teacher.model()) if teacher is not None else None
        total = chunks * (2 if teacher is not None else 1)
        bar = _Bar(settings.progress, total, f"{name}: cka features")
        xs = features.layer_representations(model, images, settings.chunk_size, on_chunk=bar.step)
        ys = (features.layer_representations(tmodel, images, settings.chunk_size, view=view, on_chunk=bar.step)
              if tmodel is not None else None)
        bar.close()
        cka: dict[str, Any] = {"layers": features.layer_names(model), "kernels": list(settings.kernels),
                               "estimators": list(settings.estimators), "rbf_sigma_frac": settings.rbf_sigma_frac,
                               "features": "per layer: patch tokens (ViT) or the stage map (CNN), mean-pooled",
                               "dtype": "float64", "self": _cka_block(xs, None, settings)}
        cka["self_summary"] = {k: cka_summary(v, True) for k, v in cka["self"].items()}
        if ys is not None:
            cka["teacher"] = {"description": teacher.description, "model_type": type(tmodel).__name__,
                              "layers": features.layer_names(tmodel), "matrices": _cka_block(xs, ys, settings)}
            cka["teacher_summary"] = {k: cka_summary(v, False) for k, v in cka["teacher"]["matrices"].items()}
        else:
            res["skipped"]["cka_teacher"] = "no teacher (the run distilled from none; --teacher gives one)"
        cka["wall_s"] = time.perf_counter() - t0
        res["cka"] = cka
    if "hessian" in want:
        res["hessian"] = _hessian(model, images, labels, settings, name)
    res["wall_s"] = time.perf_counter() - t_start
    return res


def _hessian(model, images, labels, settings: Settings, name: str) -> dict:
    from jaxkd.analyze import hessian

    t0 = time.perf_counter()
    problem = hessian.HessianProblem.from_model(model, images, labels, chunk_size=settings.chunk_size)
    loss = float(problem.value())
    bar = _Bar(settings.progress, settings.max_probes, f"{name}: Hessian trace (probes)")
    trace = hessian.hutchinson_trace(problem.hvp, problem.dim, dtype=problem.dtype, seed=settings.seed,
                                     min_probes=settings.min_probes, max_probes=settings.max_probes,
                                     rtol=settings.trace_rtol, callback=lambda m, mean, se: bar.step(
                                         trace=mean, stderr=se))
    bar.close()
    out = {"loss": hessian.LOSS_DESCRIPTION, "loss_value": loss, "num_params": problem.dim,
           "num_samples": problem.num_samples, "chunk_size": problem.chunk_size, "trace": trace,
           "hvp": "forward-over-reverse jax.jvp(jax.grad(loss)), jitted, summed over chunks"}
    if settings.top_k > 0:
        bar = _Bar(settings.progress, None, f"{name}: Hessian top-{settings.top_k} (Lanczos HVPs)")
        eig = hessian.top_eigenvalues(problem.hvp, problem.dim, min(settings.top_k, problem.dim - 1),
                                      dtype=problem.dtype, seed=settings.seed, tol=settings.eig_tol,
                                      callback=lambda i: bar.step())
        bar.close()
        eig["method"] = "scipy.sparse.linalg.eigsh (ARPACK implicitly restarted Lanczos), which='LA'"
        out["top_eigenvalues"] = eig
        vals = eig["eigenvalues"]
        out["eigenvalue_ratio"] = float(vals[0] / vals[-1]) if vals and vals[-1] != 0 else math.nan
    out["hvp_calls"] = problem.hvp_calls
    out["wall_s"] = time.perf_counter() - t0
    return out


def finite(x):
    """NaN / inf as None, so that analysis.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def run(workdirs: list[Path], names: list[str], out: Path, settings: Settings,
        teacher_dir: Path | None = None) -> dict:
    """Analyses every workdir, writes OUT/analysis.json and the figures; returns the JSON dict."""
    import jax

    from jaxkd.analyze import plots
    from jaxkd.train.reporting import write_json_atomic

    t0 = time.perf_counter()
    runs = {}
    with jax.default_matmul_precision("float32"):  # (true float32 on GPUs too, as the trainer sets it)
        for workdir, name in zip(workdirs, names):
            runs[name] = analyze_workdir(workdir, name, settings, teacher_dir)
    result = {"settings": dict(dataclasses.asdict(settings), teacher=None if teacher_dir is None else str(teacher_dir),
                               backend=jax.default_backend(), device=str(jax.devices()[0].device_kind)),
              "runs": runs, "wall_s": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    result["figures"] = plots.write_all(runs, out)
    write_json_atomic(out / "analysis.json", finite(result))
    return result


def summary_lines(result: dict) -> list[str]:
    """A few lines per run for the terminal: the headline figures of each metric."""
    lines = []
    for name, r in result["runs"].items():
        lines.append(f"{name} ({r['model_type']}, {r['num_params']:,} parameters; {r['split']} split, "
                     f"n = {r['num_samples']}):")
        if "attention" in r:
            a = r["attention"]
            lines.append(f"  attention distance (patches): mean {a['mean_distance']:.3f}; per layer "
                         + " ".join(f"{v:.2f}" for v in a["layer_distances"]))
        if "heads" in r:
            h = r["heads"]
            lines.append(f"  heads: {h['collapsed_heads']}/{h['num_heads_total']} collapsed (MAD < "
                         f"{h['collapse_threshold']}), CLS collapse {h.get('cls_collapsed_heads', 0)}/"
                         f"{h['num_heads_total']}")
        if "cka" in r:
            c = r["cka"]
            key = f"{c['kernels'][0]}/{c['estimators'][0]}"
            s = c["self_summary"][key]
            text = f"  CKA ({key}): self off-diagonal mean {s['off_diagonal_mean']:.3f}"
            if "teacher_summary" in c:
                text += f"; x teacher mean {c['teacher_summary'][key]['mean']:.3f}"
            lines.append(text)
        if "hessian" in r:
            h = r["hessian"]
            t = h["trace"]
            text = (f"  Hessian: trace {t['trace']:.4g} ± {t['stderr']:.2g} (s.e., {t['probes']} probes"
                    f"{'' if t['converged'] else ', tolerance not reached'})")
            if "top_eigenvalues" in h:
                text += "; top eigenvalues " + ", ".join(f"{v:.4g}" for v in h["top_eigenvalues"]["eigenvalues"])
            lines.append(text + f"; {h['wall_s']:.0f} s")
        for m, why in r["skipped"].items():
            lines.append(f"  ({m} skipped: {why})")
    return lines
