"""Orbax checkpoints of the train state, and loading a trained model back for inference.

A workdir holds `checkpoints/<step>/` (an Orbax CheckpointManager: the TrainState pytree under 'state', and the
host-side loop state — epoch, early-stopping and plateau trackers, best accuracy — as JSON under 'meta') and
`config.json`, the resolved config. Saves are asynchronous; `wait()` blocks until the last one is on disk and
re-raises its error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxkd.errors import JaxkdError, RunFailure, describe

__all__ = ["Checkpoints", "CheckpointError", "CheckpointWriteError", "WorkdirLock", "export_model", "load",
           "params_sha256", "check_workdir"]


class CheckpointError(JaxkdError, ValueError):
    """A checkpoint or workdir that cannot be used: the message names the path and what to do."""


class CheckpointWriteError(RunFailure):
    """A checkpoint that could not be written (disk full, no permission, a failed cross-process barrier): the
    message names the directory, the step, the space it needs and what to do. Checkpoints already on disk are
    untouched (Orbax writes a step into a temporary folder and renames it only when complete)."""


class WorkdirLock:
    """One run per workdir: an exclusive ``flock`` on ``WORKDIR/jaxkd.lock``, which names its holder (pid, host,
    start time). The kernel drops the lock when its process dies, however it dies, so a lock file that still names
    a holder but can be locked was left by a killed run: it is taken over, saying so. Released by emptying the
    file (never by deleting it: a run that opened the old file would lock a file nobody else sees).
    Several processes of one run: process 0 alone holds it.
    """

    NAME = "jaxkd.lock"

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / self.NAME
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> str | None:
        """Takes the lock or raises CheckpointError naming the holder; returns the holder a killed run left in the
        file (for the caller to report once the run goes ahead), else None."""
        import datetime
        import fcntl
        import os
        import socket

        if self._fd is not None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(f"cannot write to the workdir {self.path.parent} ({describe(e, 200)}): make it "
                                  "writable or use another --workdir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            holder = holder or "holder unknown"
            raise CheckpointError(f"workdir {self.path.parent} is in use by a running jaxkd.train ({holder}); wait "
                                  "for it to finish, stop it (SIGTERM saves a checkpoint), or use another --workdir"
                                  ) from None
        old = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        me = (f"pid {os.getpid()} on host {socket.gethostname()}, since "
              f"{datetime.datetime.now().isoformat(timespec='seconds')}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (me + "\n").encode(), 0)
        self._fd = fd
        return old or None

    def release(self) -> None:
        import os

        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            if self._created and os.listdir(self.path.parent) == [self.NAME]:
                self.path.unlink()  # a run refused before it wrote anything leaves the workdir as it found it
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _nbytes(tree: Any) -> int:
    return sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(tree))


def _os_errno(chain: list[BaseException]) -> int | None:
    """The OS error behind a failure: an OSError's errno, or the code TensorStore puts in its message."""
    import re

    for c in chain:
        if isinstance(c, OSError) and c.errno:
            return c.errno
    text = " ".join(str(c) for c in chain)
    m = re.search(r"os_error_code='(\d+)'", text)
    if m:
        return int(m.group(1))
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        if os.strerror(code) in text:
            return code
    return None


def write_error(directory: Path, step: int | None, nbytes: int, e: BaseException,
                latest: int | None = None, what: str | None = None) -> CheckpointWriteError:
    """The one-line CheckpointWriteError for a failed save of `step` (about `nbytes`) into `directory`; `latest`:
    the newest checkpoint on disk, which a rerun resumes from; `what`: the thing written, when it is not a
    checkpoint step or the exported model (a run's metrics, its report)."""
    import shutil

    if what is None:
        what = f"checkpoint step {step}" if step is not None else "the exported model"
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 8:
        chain.append(nxt)
    code = _os_errno(chain)
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f", {shutil.disk_usage(probe).free / 2**20:.1f} MiB are free"
    except OSError:
        free = ""
    if latest is not None:
        resume = f"run the same command again to resume from step {latest}, the newest checkpoint on disk (intact)"
    elif step is None:  # the export, after the final checkpoint
        resume = "run the same command again (it resumes from the newest checkpoint on disk)"
    else:
        resume = "run the same command again (no checkpoint was on disk yet: it starts afresh)"
    if code in (errno.ENOSPC, errno.EDQUOT):
        need = f"it needs about {nbytes / 2**20:.1f} MiB{free}" if nbytes else free.lstrip(", ")
        return CheckpointWriteError(f"could not write {what} to {directory}: no space left on device ({need}); "
                                    f"free space there, then {resume}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointWriteError(f"could not write {what} to {directory}: {os.strerror(code).lower()}; make it "
                                    f"writable (or move the workdir), then {resume}")
    cause = f"; cause: {describe(chain[-1], 160)}" if len(chain) > 1 else ""
    return CheckpointWriteError(f"could not write {what} to {directory} ({describe(e, 160)}{cause}); fix the "
                                f"cause, then {resume}")


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def workdir_write_error(e: OSError, workdir: Path, ckpts: Checkpoints | None) -> BaseException:
    """What a run reports when writing one of its own files (metrics.jsonl, report.json, ...) fails for want of
    space or permission: the failure of a checkpoint save still in flight, if there is one (that names the step),
    else the one-line CheckpointWriteError for the file. Waits for the in-flight saves, so that none is left
    half-written by the exit (nor prints TensorStore's tracebacks at interpreter shutdown). Any other error is
    returned as it is."""
    if e.errno not in DISK_ERRNOS:
        return e
    latest = None
    if ckpts is not None:
        try:
            ckpts.wait()
        except CheckpointWriteError as saved:
            return saved
        latest = ckpts._committed()
    path = Path(e.filename) if e.filename else workdir
    return write_error(path.parent, None, 0, e, latest, what=path.name)


class _OrbaxWriteNoise(logging.Filter):
    """Drops the log records a failed asynchronous write leaves behind (asyncio's 'Task exception was never
    retrieved' for each of TensorStore's writes, Orbax's 'Failed to run ... Handler Commit operations'): the
    failure reaches the main thread as one CheckpointWriteError instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        text = record.getMessage() + record.pathname
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        return "orbax" not in text.lower()


_WRITE_NOISE = _OrbaxWriteNoise()


def _quiet_closed_loop_callbacks() -> None:
    """After a failed write Orbax closes its event loop while TensorStore's other writes are still in flight; each
    of their completion callbacks then prints 'RuntimeError: Event loop is closed' through sys.excepthook /
    sys.unraisablehook. Those (and only those) are dropped: the failure itself is reported once."""
    import sys
    import warnings

    # (and, at exit, the never-awaited write of a TensorStore fragment the failure left behind)
    warnings.filterwarnings("ignore", message="coroutine 'async_serialize_from_host", category=RuntimeWarning)

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    if getattr(sys.excepthook, "_jaxkd", False):
        return
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def on_exception(tp, value, tb):
        if not closed_loop(value):
            excepthook(tp, value, tb)

    def on_unraisable(info):
        if not closed_loop(info.exc_value):
            unraisablehook(info)

    on_exception._jaxkd = True
    sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


class Checkpoints:
    """The run's checkpoints: `checkpoints/` (the newest `keep`, periodic and final) and `checkpoints_best/` (the one
    with the best validation accuracy) as two CheckpointManagers, so that "best" never evicts "latest".

    Saves are asynchronous; `wait()` blocks until they are on disk and re-raises a failed save's error. Orbax
    writes each step into a temporary folder and renames it when complete, so a run killed during a save leaves
    the previous checkpoints intact.
    """

    def __init__(self, workdir: str | Path, keep: int = 3, *, read_only: bool = False):
        self.workdir = Path(workdir).resolve()

        def manager(sub: str, max_to_keep: int):
            # Orbax names its cross-process barriers after the step ("async_write_complete.95"): without a prefix
            # of their own, a periodic and a best save of the same step in a multi-process run collide.
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                                   read_only=read_only, enable_async_checkpointing=not read_only,
                                                   cleanup_tmp_directories=not read_only,
                                                   multiprocessing_options=ocp.options.MultiprocessingOptions(
                                                       barrier_sync_key_prefix=sub))
            return ocp.CheckpointManager(self.workdir / sub, options=options, item_names=("state", "meta"))

        self._pending: dict[int, tuple] = {}  # per manager: (directory, step, bytes) of its newest save
        # Half-written steps a killed run left (Orbax's cleanup_tmp_directories removes them below): named once
        self.removed_partial = [] if read_only or jax.process_index() else sorted(
            str(p) for sub in ("checkpoints", "checkpoints_best") if (self.workdir / sub).is_dir()
            for p in (self.workdir / sub).iterdir() if ".orbax-checkpoint-tmp" in p.name)
        if not read_only:
            for name in ("asyncio", "absl"):
                logging.getLogger(name).addFilter(_WRITE_NOISE)
            _quiet_closed_loop_callbacks()
        with _absl_quiet():  # a damaged step's metadata is logged by Orbax here; restore_newest_good reports it
            self.manager = manager("checkpoints", keep)
            self.best = manager("checkpoints_best", 1)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, *, best: bool = False) -> None:
        """Starts an asynchronous save of `step`; an earlier save's failure is raised here (or by `wait`) as a
        CheckpointWriteError."""
        manager = self.best if best else self.manager
        self._wait(manager)  # (Orbax's save waits for the previous one too: this names its step if it failed)
        if step in manager.all_steps():
            # Written by a run that was killed after it and before the checkpoint this run resumed from (a best
            # save is not a resume point): this run recomputed the step, so its save replaces that one.
            manager.delete(step)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._pending[id(manager)] = (manager.directory, step, _nbytes(state))
        try:
            manager.save(step, args=args, force=True)
        except Exception as e:  # noqa: BLE001  (Orbax / TensorStore / the OS raise many types)
            raise write_error(Path(manager.directory), step, _nbytes(state), e, self._committed()) from e

    def _committed(self) -> int | None:
        try:
            self.manager.reload()
            return self.manager.latest_step()
        except Exception:  # noqa: BLE001  (a directory that cannot even be listed: say nothing about it)
            return None

    def _wait(self, manager) -> None:
        try:
            manager.wait_until_finished()
            manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            directory, step, nbytes = self._pending.get(id(manager), (manager.directory, None, 0))
            raise write_error(Path(directory), step, nbytes, e, self._committed()) from e

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores step `step` onto `target` (arrays or jax.ShapeDtypeStruct with shardings: a different device
        count than the save is fine)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def restore_newest_good(self, target: Any, log=print) -> tuple[int | None, Any, dict | None]:
        """The newest checkpoint that restores; a corrupt or partial one is reported and skipped.

        Skipped steps are moved into ``corrupt_checkpoints/`` (out of the way of the resumed run's saves) only once
        an older step has restored; when none restores, nothing is moved and :class:`CheckpointError` is raised.
        """
        failed: list[tuple[int, Exception]] = []
        found = None
        with _absl_quiet():  # Orbax logs its own ERROR lines for a damaged step; the failure is reported below
            for step in reversed(self.all_steps()):
                try:
                    found = (step, *self.restore(step, target))
                    break
                except Exception as e:  # noqa: BLE001  (any failure to read a step makes it unusable)
                    failed.append((step, e))
        if found is None and failed:
            step, e = failed[0]
            raise CheckpointError(f"no usable checkpoint in {self.workdir / 'checkpoints'}: all {len(failed)} steps "
                                  f"failed to restore (newest, {step}: {describe(e, 200)}); move the folder away to "
                                  "start afresh")
        primary = jax.process_index() == 0
        for step, e in failed:
            bad = self.workdir / "checkpoints" / str(step)
            aside = self.workdir / "corrupt_checkpoints" / str(step)
            if not primary:  # several processes share the folder: process 0 alone moves, the others wait below
                continue
            log(f"warning: checkpoint {bad} is corrupt or incomplete ({describe(e, 200)}); moved to {aside}, "
                "resuming from an older one")
            aside.parent.mkdir(exist_ok=True)
            if bad.exists() and not aside.exists():
                bad.rename(aside)  # kept for inspection
        if failed:
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("jaxkd_corrupt_checkpoints_moved")
            self.manager.reload()
        return found if found is not None else (None, None, None)

    def wait(self) -> None:
        """Blocks until every save is on disk; a failed one is raised as a CheckpointWriteError."""
        for m in (self.manager, self.best):
            self._wait(m)

    def close(self) -> None:
        self.manager.close()
        self.best.close()


@contextlib.contextmanager
def _absl_quiet():
    """Silences the absl logger (Orbax's) below CRITICAL for the duration."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def params_sha256(params: Any) -> str:
    """SHA-256 over every parameter's bytes (little-endian, C order), in the sorted order of their paths."""
    import hashlib

    import numpy as np

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    h = hashlib.sha256()
    for path, leaf in sorted(flat, key=lambda kv: jax.tree_util.keystr(kv[0])):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


# Fields that do not change what a run computes: a workdir may be resumed with them changed.
_COSMETIC = ("logging.progress_bar", "training.log_every_steps", "logging.keep_checkpoints", "data.data_dir",
             "data.source", "data.placement", "experiment_name", "output_dir", "logging.log_dir", "logging.log_level",
             "logging.wandb", "logging.wandb_project", "logging.wandb_entity", "logging.track_grad_norm",
             "logging.tensorboard", "logging.profile_steps")


def check_workdir(workdir: Path, config_json: str, force: bool) -> None:
    """Refuses a workdir that holds a run with another config (unless `force`, which moves the old run aside into
    `replaced-<time>/` instead of deleting it)."""
    if workdir.exists() and not workdir.is_dir():
        raise CheckpointError(f"--workdir {workdir} is a file; give a directory")
    old_file = workdir / "config.json"
    if not old_file.is_file():
        return
    from jaxkd.config import base_config, flatten

    try:
        old = flatten(json.loads(old_file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if force:
            old = {"<damaged config.json>": True}  # differs from every config: moved aside below
        else:
            raise CheckpointError(f"{old_file} is damaged ({e}); use another --workdir, or --force to move the old "
                                  "run aside and start afresh") from None
    new = flatten(json.loads(config_json))
    # A field added to jaxkd after the old run was made is its default there (the run behaved that way)
    defaults = flatten(base_config())
    diff = sorted(k for k in set(old) | set(new)
                  if old.get(k, defaults.get(k)) != new.get(k) and k not in _COSMETIC)
    if not diff:
        return
    if not force:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise CheckpointError(f"workdir {workdir} holds a run with a different config: {shown}{more}; use another "
                              "--workdir, or --force to move the old run aside and start afresh")
    import time

    aside = workdir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for item in list(workdir.iterdir()):
        if item != aside and not item.name.startswith("replaced-") and item.name != WorkdirLock.NAME:
            item.rename(aside / item.name)


def export_model(directory: str | Path, params: Any, rest: Any) -> None:
    """Writes the inference weights (parameters and BatchNorm statistics, no optimiser state) to `directory`."""
    directory = Path(directory).resolve()
    tree = {"params": params, "rest": rest}
    try:
        with ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="export")) as ckptr:
            ckptr.save(directory, tree, force=True)
    except Exception as e:  # noqa: BLE001  (Orbax / TensorStore / the OS raise many types)
        raise write_error(directory, None, _nbytes(tree), e) from e


def load(path: str | Path):
    """(model, config) of a trained jaxkd run for inference, from a workdir: its config.json and the exported
    inference weights in `model/` (written at the end of training: the weights summary.json reports as final).
    The model is in eval mode.
    """
    from flax import nnx

    from jaxkd import config as config_lib
    from jaxkd import models
    from jaxkd.interop.state_dict import placeholder_model
    from jaxkd.train import steps

    workdir = Path(path)
    cfg_file = workdir / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{workdir}: no config.json; give a jaxkd workdir written by python -m jaxkd.train")
    cfg = config_lib.ConfigDict(json.loads(cfg_file.read_text()))
    config_lib.validate(cfg)
    model_dir = (workdir / "model").resolve()
    if not model_dir.is_dir():
        raise CheckpointError(f"{workdir}: no exported model in {model_dir}; the run has not finished "
                              "(run the same train command again to resume it)")
    # every variable is restored below: no random initialisation (it compiles each initialiser per shape, ~16 s cold
    # for ResNet-18 on 2 busy cores), placeholders of the right shapes instead
    model = placeholder_model(lambda: models.build(cfg, nnx.Rngs(0)))
    _, _, params, rest = steps.split_model(model)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "rest": rest})
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(model_dir, target)
    except Exception as e:  # noqa: BLE001  (Orbax / TensorStore raise many types for a damaged directory)
        raise CheckpointError(f"{model_dir} is corrupt or incomplete ({describe(e, 200)}); rerun or re-export "
                              "the run") from None
    nnx.update(model, restored["params"], restored["rest"])
    model.eval()
    return model, cfg
