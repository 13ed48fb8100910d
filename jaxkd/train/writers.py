"""Where a run's numbers go besides metrics.jsonl: TensorBoard event files (always, unless
``logging.tensorboard=false``), written by tensorboardX, which needs no TensorFlow; and Weights & Biases when
``logging.wandb=true`` (the optional extra ``pip install -e '.[wandb]'``).

The trainer's :class:`jaxkd.train.reporting.MetricWriter` hands every row it appends to metrics.jsonl to the sinks
here, so both hold the same scalars under ``KIND/NAME`` keys (``train/loss``, ``train/lr``, ``val/accuracy``,
``train/kd_loss``, ...) at the same steps. Besides those: the config (TensorBoard: as text, and as hyper-parameters
next to the final test accuracy; W&B: the run's config), a grid of the first augmented training batch (what the
model sees, and the teacher's view when it differs), the final test numbers (``test/...``) and the confusion
matrix.

Every call is queued to the sink's own background thread, which builds the records and writes them, in order; the
training thread only enqueues (``python -m jaxkd.bench writers`` times each sink against metrics.jsonl alone, side
by side). Only process 0 writes.

Resumed runs. TensorBoard hides the events the killed run logged after its checkpoint (``purge_step``), so the
curves do not fold back on themselves. W&B: every attempt of a workdir logs to the same run id (kept in
``WORKDIR/wandb_run_id``, ``resume="allow"``); W&B keeps the first value it received for a step, so the rows a
killed run logged after its checkpoint stay as that run logged them.

W&B's mode is ``offline`` unless the environment sets ``WANDB_MODE`` (``online``: log in first with ``wandb login``
or ``WANDB_API_KEY``); offline runs are written under ``LOG_DIR_OR_WORKDIR/wandb/offline-run-*`` and uploaded later
with ``wandb sync``. W&B's console capture is off (the trainer's output stays as it is).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TensorBoardWriter", "WandbWriter", "open_sinks", "require_wandb", "tensorboard_dir"]

WANDB_EXTRA = "pip install -e '.[wandb]' (or pip install wandb)"


def tensorboard_dir(log_dir: str, workdir: str | os.PathLike) -> Path:
    """The folder of a run's event files: WORKDIR/tensorboard, or LOG_DIR/<workdir's name> when
    ``logging.log_dir`` is set (so that several runs sharing a log_dir are several runs in TensorBoard)."""
    workdir = Path(workdir)
    return Path(log_dir) / workdir.resolve().name if log_dir else workdir / "tensorboard"


def require_wandb() -> None:
    """Raises ConfigError (one line, naming the extra) when ``logging.wandb`` is asked for and wandb cannot be
    imported; the trainer calls it before it touches the workdir."""
    from jaxkd.config import ConfigError

    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"config field 'logging.wandb' is true but the wandb package is not installed ({e}): "
                          f"{WANDB_EXTRA}, or --config.logging.wandb=false") from None


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


def _grid(images: np.ndarray, captions: Sequence[str] | None = None) -> np.ndarray:
    """Float images in [0, 1], (N, H, W, C), as one uint8 grid image (H', W', 3)."""
    from jaxkd.data.grid import make_grid

    return np.asarray(make_grid(np.clip(images, 0.0, 1.0), captions))


def _png(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


TEST_NAMES = {"test_accuracy": "accuracy", "test_loss": "loss", "test_top5": "top5",
              "swa_test_accuracy": "swa_accuracy", "ema_test_accuracy": "ema_accuracy"}
HPARAM_METRICS = ("test_accuracy", "val_accuracy", "best_val_accuracy")


class _QueuedSink:
    """What both sinks share: one background thread that runs their writes in call order, and the parts of a run
    built the same way for both (the first batch's grids, the final numbers). Subclasses write: ``_scalars``,
    ``_image``, ``_final_metrics``, ``_flush``, ``_close``."""

    def __init__(self, name: str):
        from concurrent.futures import ThreadPoolExecutor

        self._queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"jaxkd-{name}")
        self._pending = []

    def _submit(self, fn, *args, **kwargs) -> None:
        """Runs fn on the sink's thread (in call order); an error a queued call raised surfaces here or at
        flush()."""
        for f in [f for f in self._pending if f.done()]:
            f.result()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._queue.submit(fn, *args, **kwargs))

    # -- what MetricWriter forwards ------------------------------------------------------------------------------
    def scalars(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """One metrics.jsonl row: each numeric value as ``kind/name`` at ``step`` (lists and text are skipped)."""
        values = {f"{kind}/{name}": x for name, x in ((n, _scalar(v)) for n, v in values.items()) if x is not None}
        self._submit(self._scalars, values, int(step))

    # -- the rest of a run ---------------------------------------------------------------------------------------
    def images(self, tag: str, images: np.ndarray, step: int, captions: Sequence[str] | None = None) -> None:
        """Float images in [0, 1], (N, H, W, C), as one grid image."""
        self._submit(self._image, tag, _grid(images, captions), int(step))

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
        """The final test numbers (``test/...``), the confusion matrix and the run's results next to its
        hyper-parameters; then waits until everything is written."""
        self.scalars("test", step, {name: summary[k] for k, name in TEST_NAMES.items() if summary.get(k) is not None})
        if Path(confusion_png).is_file():
            self._submit(self._image, "test/confusion_matrix", _png(confusion_png), int(step))
        metrics = {f"hparams/{k}": float(summary[k]) for k in HPARAM_METRICS
                   if summary.get(k) is not None and math.isfinite(float(summary[k]))}
        self._submit(self._final_metrics, dict(flat_config), metrics)
        self.flush()

    def flush(self) -> None:
        """Waits for every queued write, then makes them durable; raises what a queued call raised."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()
        self._flush()

    def close(self, failed: bool = False) -> None:
        """Waits for the queue and closes the sink (``failed``: the run ended with an error)."""
        self._queue.shutdown(wait=True)
        self._close(failed)


class TensorBoardWriter(_QueuedSink):
    """Event files of one run in ``logdir``. ``purge_step``: a resumed run's first step (events of earlier attempts
    at that step and later are hidden)."""

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None, flush_secs: int = 30):
        from tensorboardX import SummaryWriter

        super().__init__("tensorboard")
        self.logdir = Path(logdir)
        self._w = SummaryWriter(logdir=str(self.logdir), purge_step=purge_step, flush_secs=flush_secs)

    def config(self, cfg_json: str) -> None:
        """The resolved config, as a text panel (Markdown code block)."""
        self._submit(self._w.add_text, "config", "```\n" + cfg_json + "\n```", 0)

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, x in values.items():
            self._w.add_scalar(tag, x, step)

    def _image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self._w.add_image(tag, pixels, step, dataformats="HWC")

    def _final_metrics(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The config's scalar and text fields as hyper-parameters, with the run's final numbers as their metrics
        (TensorBoard's HPARAMS tab compares runs by them)."""
        hp = {}
        for k, v in flat_config.items():
            if isinstance(v, (bool, int, float, str)):
                hp[k] = v
            elif isinstance(v, (list, tuple)):
                hp[k] = json.dumps(list(v))
        self._w.add_hparams(hp, dict(metrics), name=".")  # (the run's own folder, not a sub-run)

    def _flush(self) -> None:
        self._w.flush()

    def _close(self, failed: bool) -> None:
        self._w.close()


class WandbWriter(_QueuedSink):
    """One W&B run: ``wandb.init`` in ``root`` (its ``wandb/`` folder goes there) with the flat config, ``project``
    and ``entity`` ('' = W&B's default), ``run_id`` (the same for every attempt of a workdir), mode ``offline``
    unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, root: str | os.PathLike, *, project: str, entity: str, name: str, run_id: str,
                 flat_config: Mapping[str, Any], quiet: bool = True):
        import wandb

        super().__init__("wandb")
        self._wandb = wandb
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        self._run = wandb.init(
            dir=str(root), project=project, entity=entity or None, name=name, id=run_id, resume="allow",
            mode=self.mode, config=dict(flat_config), settings=wandb.Settings(console="off", silent=quiet))
        self.dir = Path(self._run.dir).parent  # WORKDIR/wandb/<offline-run-...>: what `wandb sync` takes

    def config(self, cfg_json: str) -> None:
        """(W&B holds the config from ``wandb.init`` on; nothing more to log.)"""

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        self._run.log(dict(values), step=step)

    def _image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self._run.log({tag: self._wandb.Image(pixels)}, step=step)

    def _final_metrics(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self._run.summary.update(dict(metrics))

    def _flush(self) -> None:
        """(W&B's own service process writes the run's file as records arrive.)"""

    def _close(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


def wandb_run_id(workdir: Path) -> str:
    """The W&B run id of a workdir: made on its first run, kept in WORKDIR/wandb_run_id for every later attempt."""
    path = workdir / "wandb_run_id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)
    path.write_text(run_id + "\n")
    return run_id


def open_sinks(cfg, workdir: Path, start_step: int, *, cfg_json: str, flat_config: Mapping[str, Any],
               say: bool) -> list:
    """The sinks process 0 of a run writes to, per ``cfg.logging``: TensorBoard (unless off), W&B (when on)."""
    import sys

    sinks = []
    log = cfg.logging
    if log.tensorboard:
        try:  # (purge_step: the events a killed run logged after its checkpoint)
            sinks.append(TensorBoardWriter(tensorboard_dir(log.log_dir, workdir),
                                           purge_step=start_step + 1 if start_step else None))
        except ImportError:  # (a machine where only jaxkd's source could be brought: the run goes on without)
            print("note: tensorboardX is not installed: no TensorBoard event files (pip install tensorboardX, or "
                  "--config.logging.tensorboard=false to silence this)", file=sys.stderr)
    if log.wandb:
        name = cfg.experiment_name if cfg.experiment_name not in ("", "default") else workdir.resolve().name
        w = WandbWriter(log.log_dir or workdir, project=log.wandb_project, entity=log.wandb_entity, name=name,
                        run_id=wandb_run_id(workdir), flat_config=flat_config, quiet=log.log_level != "DEBUG")
        if say:
            sync = f" (upload: wandb sync {w.dir})" if w.mode == "offline" else ""
            print(f"W&B run {w.mode}: {w.dir}{sync}", file=sys.stderr, flush=True)
        sinks.append(w)
    if not start_step:
        for s in sinks:
            s.config(cfg_json)
    return sinks
