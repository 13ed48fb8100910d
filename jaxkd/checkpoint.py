"""Orbax checkpoints of the train state, and loading a trained model back for inference.

A workdir holds `checkpoints/<step>/` (an Orbax CheckpointManager: the TrainState pytree under 'state', and the
host-side loop state — epoch, early-stopping and plateau trackers, best accuracy — as JSON under 'meta') and
`config.json`, the resolved config. Saves are asynchronous; `wait()` blocks until the last one is on disk and
re-raises its error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpoints", "CheckpointError", "export_model", "load"]


class CheckpointError(ValueError):
    """A checkpoint or workdir that cannot be used: the message names the path and what to do."""


class Checkpoints:
    """The run's CheckpointManager: keeps the newest `keep` checkpoints; async saves, errors surfaced."""

    def __init__(self, directory: str | Path, keep: int = 3, *, read_only: bool = False):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               enable_async_checkpointing=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores step `step` onto `target` (a pytree of arrays or jax.ShapeDtypeStruct with shardings)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def wait(self) -> None:
        self.manager.wait_until_finished()
        if hasattr(self.manager, "check_for_errors"):
            self.manager.check_for_errors()

    def close(self) -> None:
        self.manager.close()


def export_model(directory: str | Path, params: Any, rest: Any) -> None:
    """Writes the inference weights (parameters and BatchNorm statistics, no optimiser state) to `directory`."""
    directory = Path(directory).resolve()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, {"params": params, "rest": rest}, force=True)


def load(path: str | Path):
    """(model, config) of a trained jaxkd run for inference, from a workdir: its config.json and the exported
    inference weights in `model/` (written at the end of training: the weights summary.json reports as final).
    The model is in eval mode.
    """
    from flax import nnx

    from jaxkd import config as config_lib
    from jaxkd import models, steps

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
    model = models.build(cfg, nnx.Rngs(0))
    _, _, params, rest = steps.split_model(model)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "rest": rest})
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(model_dir, target)
    nnx.update(model, restored["params"], restored["rest"])
    model.eval()
    return model, cfg
