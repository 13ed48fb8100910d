"""What a run shows and leaves behind: JSON-lines metrics, a progress bar, the evaluation report, and pictures
(training curves, confusion matrix). Host-side only; only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricWriter", "Progress", "classification_report", "format_report", "plot_training_curves",
           "plot_confusion_matrix", "write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON through a temporary file and a rename, so a killed run never leaves half a file."""
    _replace_atomic(Path(path), json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _replace_atomic(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:  # (a full disk): no stray temporary file, and the error names the file meant
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # (a read-only disk)
            pass
        raise OSError(e.errno, e.strerror, str(path)) from e


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


class MetricWriter:
    """Appends one JSON object per line to workdir/metrics.jsonl: {"kind": "train"|"val"|..., "step", "epoch", ...},
    and hands the same row to each of ``sinks`` (``sink.scalars(kind, step, values)``: TensorBoard,
    jaxkd.train.writers)."""

    def __init__(self, path: str | os.PathLike | None, sinks: Sequence[Any] = ()):
        self.path = Path(path) if path else None
        self.sinks = list(sinks)

    def write(self, kind: str, step: int, epoch: float, **values: Any) -> None:
        if self.path is None:
            return
        row = {"kind": kind, "step": int(step), "epoch": float(epoch)}
        for k, v in values.items():
            v = np.asarray(v)
            row[k] = v.item() if v.ndim == 0 else v.tolist()
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
        for sink in self.sinks:
            sink.scalars(kind, step, {k: v for k, v in row.items() if k not in ("kind", "step")})

    def truncate_after(self, step: int) -> int:
        """Drops the rows logged after `step` (a resumed run logs them again) and any row that is not whole JSON
        (the last line of a run killed while it wrote); returns how many such damaged rows were dropped."""
        if self.path is None or not self.path.exists():
            return 0
        rows = [(line, _row(line)) for line in self.path.read_text(errors="replace").splitlines() if line.strip()]
        keep = [line for line, row in rows if row is not None and row["step"] <= step]
        _replace_atomic(self.path, "".join(line + "\n" for line in keep))
        return sum(row is None for _, row in rows)

    def read(self) -> list[dict]:
        if self.path is None or not self.path.exists():
            return []
        rows = (_row(line) for line in self.path.read_text(errors="replace").splitlines() if line.strip())
        return [r for r in rows if r is not None]


def _row(line: str) -> dict | None:
    """A metrics row, or None for a line that is not one (cut short by a kill, or damaged)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


class Progress:
    """A tqdm bar over the steps of an epoch, with loss, accuracy, lr, images/s and ETA (tqdm's own)."""

    def __init__(self, enabled: bool, total_steps: int, initial: int = 0, desc: str = "train"):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            mininterval=1.0, smoothing=0.1)

    def update(self, steps: int, **postfix: Any) -> None:
        if self.bar is None:
            return
        fmt = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}
        self.bar.set_postfix(fmt, refresh=False)
        self.bar.update(steps)

    def set_description(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_description(desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def classification_report(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support from a K×K confusion matrix (rows true, columns predicted), and
    their macro averages; accuracy = trace / total. Classes never predicted get precision 0 (as scikit-learn)."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "per_class": per_class,
            "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}}


def format_report(report: dict, title: str) -> str:
    lines = [title, f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, r in report["per_class"].items():
        lines.append(f"{name:<16}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}{r['support']:>10d}")
    m = report["macro"]
    lines.append(f"{'macro avg':<16}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}")
    extra = "  ".join(f"{k} {report[k]:.4f}" for k in ("top1", "top3", "top5", "loss") if k in report)
    lines.append(f"accuracy {report['accuracy']:.4f}" + (f"  {extra}" if extra else ""))
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Loss, accuracy and learning rate against epochs, train (per log interval) and validation (per epoch)."""
    rows = list(rows)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if train:
            ax.plot([r["epoch"] for r in train], [r.get(key, math.nan) for r in train], label=f"train {label}",
                    alpha=0.8)
        if val:
            ax.plot([r["epoch"] for r in val], [r.get(key, math.nan) for r in val], "o-", label=f"val {label}")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if train:
        axes[2].plot([r["epoch"] for r in train], [r.get("lr", math.nan) for r in train])
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "confusion matrix") -> None:
    """Row-normalised confusion matrix (rows true class), with the counts written in the cells."""
    cm = np.asarray(confusion, np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    plt = _plt()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * k + 2), max(4, 0.6 * k + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Timer:
    """Images per second between two marks (wall clock, after blocking on the device results that were fetched)."""

    def __init__(self):
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


class Status:
    """`WORKDIR/status.json`: what a run is doing now — {"phase", "step", "pid", "since"} — rewritten atomically at
    each change of phase (setup, train, evaluate, checkpoint, swa_bn, final_evaluate, export, report, done; a few
    writes an epoch). For people (`cat status.json`) and for the fault campaign (`python -m jaxkd.faults`), which
    aims its kills at phases. Process 0 writes it."""

    PHASES = ("setup", "train", "evaluate", "checkpoint", "swa_bn", "final_evaluate", "export", "report", "done")

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.path = Path(workdir) / "status.json"
        self.enabled = enabled
        self.phase = None

    def set(self, phase: str, step: int) -> None:
        import time

        assert phase in self.PHASES, phase
        if self.enabled and phase != self.phase and self.path.parent.is_dir():
            try:
                write_json_atomic(self.path, {"phase": phase, "step": int(step), "pid": os.getpid(),
                                              "since": round(time.time(), 3)})
            except OSError:  # advisory: a full or read-only disk is reported by the run's own writes
                pass
        self.phase = phase
