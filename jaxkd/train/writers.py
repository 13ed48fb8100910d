"""Where a run's numbers go besides metrics.jsonl: TensorBoard event files (always, unless
``logging.tensorboard=false``), written by tensorboardX, which needs no TensorFlow.

The trainer's :class:`jaxkd.train.reporting.MetricWriter` hands every row it appends to metrics.jsonl to the sinks
here, so the event files hold the same scalars under ``KIND/NAME`` tags (``train/loss``, ``train/lr``,
``val/accuracy``, ``train/kd_loss``, ...) at the same steps. Besides those: the config (as text and as
hyper-parameters next to the final test accuracy), a grid of the first augmented training batch (what the model
sees, and the teacher's view when it differs), the final test numbers (``test/...``) and the confusion matrix.

Every call is queued to one background thread, which builds the events (tensorboardX: a few hundred microseconds
a scalar on a CPU core) and writes them, in order; the training thread only enqueues (``python -m jaxkd.bench
writers`` times both ways side by side). Only process 0 writes. A resumed run hides the events the killed run
logged after its checkpoint (``purge_step``), so the curves do not fold back on themselves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TensorBoardWriter", "tensorboard_dir"]


def tensorboard_dir(log_dir: str, workdir: str | os.PathLike) -> Path:
    """The folder of a run's event files: WORKDIR/tensorboard, or LOG_DIR/<workdir's name> when
    ``logging.log_dir`` is set (so that several runs sharing a log_dir are several runs in TensorBoard)."""
    workdir = Path(workdir)
    return Path(log_dir) / workdir.resolve().name if log_dir else workdir / "tensorboard"


def _scalar(v: Any) -> float | None:
    """A finite-or-not Python float for a number (0-d array, numpy or Python scalar); None for anything else."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    a = np.asarray(v) if not isinstance(v, (str, bytes, Mapping)) else None
    if a is not None and a.ndim == 0 and a.dtype.kind in "biuf":
        return float(a)
    return None


class TensorBoardWriter:
    """Event files of one run in ``logdir``. ``purge_step``: a resumed run's first step (events of earlier attempts
    at that step and later are hidden)."""

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None, flush_secs: int = 30):
        from concurrent.futures import ThreadPoolExecutor

        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self._w = SummaryWriter(logdir=str(self.logdir), purge_step=purge_step, flush_secs=flush_secs)
        self._queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxkd-tensorboard")
        self._pending = []

    def _submit(self, fn, *args, **kwargs) -> None:
        """Runs fn on the writer's thread (in call order); an error a queued call raised surfaces here or at
        flush()."""
        for f in [f for f in self._pending if f.done()]:
            f.result()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._queue.submit(fn, *args, **kwargs))

    # -- what MetricWriter forwards ------------------------------------------------------------------------------
    def scalars(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """One metrics.jsonl row: each numeric value as ``kind/name`` at ``step`` (lists and text are skipped)."""
        values = {name: x for name, x in ((n, _scalar(v)) for n, v in values.items()) if x is not None}

        def write():
            for name, x in values.items():
                self._w.add_scalar(f"{kind}/{name}", x, int(step))

        self._submit(write)

    # -- the rest of a run ---------------------------------------------------------------------------------------
    def config(self, cfg_json: str) -> None:
        """The resolved config, as a text panel (Markdown code block)."""
        self._submit(self._w.add_text, "config", "```\n" + cfg_json + "\n```", 0)

    def images(self, tag: str, images: np.ndarray, step: int, captions: Sequence[str] | None = None) -> None:
        """Float images in [0, 1], (N, H, W, C), as one grid image."""
        from jaxkd.data.grid import make_grid

        grid = np.asarray(make_grid(np.clip(images, 0.0, 1.0), captions))
        self._submit(self._w.add_image, tag, grid, int(step), dataformats="HWC")

    def picture(self, tag: str, png: str | os.PathLike, step: int) -> None:
        """A PNG the run wrote (the confusion matrix) as an image."""
        from PIL import Image

        with Image.open(png) as im:
            pixels = np.asarray(im.convert("RGB"))
        self._submit(self._w.add_image, tag, pixels, int(step), dataformats="HWC")

    def hparams(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The config's scalar and text fields as hyper-parameters, with the run's final numbers as their metrics
        (TensorBoard's HPARAMS tab compares runs by them)."""
        hp = {}
        for k, v in flat_config.items():
            if isinstance(v, (bool, int, float, str)):
                hp[k] = v
            elif isinstance(v, (list, tuple)):
                hp[k] = json.dumps(list(v))
        clean = {f"hparams/{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self._submit(self._w.add_hparams, hp, clean, name=".")  # (the run's own folder, not a sub-run)

    def first_batch(self, batch, mean, std) -> None:
        """The first training batch (this process's first device's share, at most 64 images), un-normalised with
        the pipeline's ``mean`` / ``std``, and the teacher's clean view when the batch carries one."""
        import jax

        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        views = {"train/augmented_batch": batch.image}
        if batch.teacher_image is not None:
            views["train/teacher_view"] = batch.teacher_image
        for tag, images in views.items():
            x = np.asarray(jax.device_get(images.addressable_data(0)))[:64]
            self.images(tag, x * std + mean, 0)

    def final(self, flat_config: Mapping[str, Any], summary: Mapping[str, Any], step: int,
              confusion_png: str | os.PathLike) -> None:
        """The final test numbers (``test/...``), the confusion matrix and the hyper-parameters with the run's
        results; then waits until everything is written."""
        names = {"test_accuracy": "accuracy", "test_loss": "loss", "test_top5": "top5",
                 "swa_test_accuracy": "swa_accuracy", "ema_test_accuracy": "ema_accuracy"}
        self.scalars("test", step, {name: summary[k] for k, name in names.items() if summary.get(k) is not None})
        if Path(confusion_png).is_file():
            self.picture("test/confusion_matrix", confusion_png, step)
        self.hparams(flat_config, {k: summary.get(k) for k in ("test_accuracy", "val_accuracy", "best_val_accuracy")})
        self.flush()

    def flush(self) -> None:
        """Waits for every queued event, writes them to disk; raises what a queued call raised."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()
        self._w.flush()

    def close(self) -> None:
        self._queue.shutdown(wait=True)
        self._w.close()
