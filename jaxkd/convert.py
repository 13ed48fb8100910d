"""`python -m jaxkd.convert`: checkpoints and configs between the original PyTorch project and jaxkd.

    python -m jaxkd.convert from-torch --config configs/mnist_cnn.py --torch best_model.pth --out workdirs/peer_cnn
    python -m jaxkd.convert from-torch --config configs/mnist_cnn.py --torch checkpoints/checkpoint_epoch_10.pth \
        --out workdirs/peer_cnn --resume      # then: python -m jaxkd.train --config ... --workdir workdirs/peer_cnn
    python -m jaxkd.convert from-yaml cnn_mnist.yaml --out configs/peer_cnn_mnist.py [--devices 2]
    python -m jaxkd.convert to-torch --workdir workdirs/mnist_cnn --out mnist_cnn.pth   # or .safetensors
    python -m jaxkd.convert to-torch --workdir workdirs/mnist_cnn --out checkpoint_epoch_20.pth --optimizer

from-torch: reads the original project's ``best_model.pth`` (a state dict, or a dict holding it under
'model_state_dict' beside pickled objects of that project's classes, which are neither needed nor ever run: see
:mod:`jaxkd.interop.torch_pickle`), checks it against the model of a jaxkd preset (plus ``--config.a.b=value``
overrides) and writes a jaxkd workdir — config.json, data.json, model/ — that ``jaxkd.evaluate``,
``jaxkd.predict`` and distillation (as the teacher) accept. A state dict that does not fit the preset is a one-line
error naming the mismatching keys and shapes; the output directory is then left as it was. The later teachers
import the same way: ``resnet18_cifar`` (the original's keys) and ``convnext_v2_tiny`` (timm's keys, or the
original's best_model.pth, whose keys carry its wrapper's ``model.`` prefix); to-torch writes them in those layouts
(ConvNeXt in timm's). ``--resume`` and ``--original`` know the seed's models (AdaptiveCNN, DeiT) only.

from-torch --resume: continues an original run. The original's training checkpoint (``checkpoint_epoch_N.pth`` or
``best_model.pth``: model, optimiser (AdamW, Adam, SGD, RMSprop), scheduler, SWA average, epoch, best accuracy,
metrics history) becomes a jaxkd workdir holding the trainer's checkpoint at the end of that epoch, so that
``python -m jaxkd.train`` with the same config resumes at epoch N + 1 with the optimiser's moments and step count,
the learning-rate schedule's position and the SWA average carried over (:mod:`jaxkd.train.continuation`). The
optimiser must be the config's, with its hyperparameters; each mismatch is a one-line error naming the override.

from-yaml: the original project's YAML config -> a jaxkd preset file (:mod:`jaxkd.interop.yaml_import` has the mapping).

to-torch: a jaxkd workdir's exported model -> a state dict in the original / torch_ref layout, as ``.pth``
(torch.save of {key: tensor}; ``load_state_dict(strict=True)`` accepts it) or ``.safetensors``. With ``--original``
a ``.pth`` in the original's checkpoint format instead (its ``load_checkpoint`` reads it): model_state_dict (the
newest checkpoint's weights), epoch, best_val_acc, metrics_history; ``--optimizer`` adds optimizer_state_dict
(torch's optimizer.state_dict() of the config's optimiser, parameters in the original's order) and, with SWA,
swa_model_state_dict. No scheduler_state_dict: the original keeps its own scheduler's state.

Existing outputs are never overwritten without ``--force``. Errors exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxkd import config as config_lib
from jaxkd import paths
from jaxkd.errors import JaxkdError
from jaxkd.interop import torch_pickle as tc
from jaxkd.interop.fit import expected_shapes, fit_problems, jaxkd_keys, load_torch_checkpoint  # noqa: F401

__all__ = ["ConvertError", "from_torch", "from_yaml", "to_torch", "load_torch_checkpoint", "data_meta",
           "expected_shapes", "main"]

MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_KNOWN_CLASSES = {"mnist": MNIST_CLASSES, "cifar": CIFAR10_CLASSES}
class ConvertError(JaxkdError, ValueError):
    """A conversion that cannot run (output exists, checkpoint does not fit the preset, ...): one line, with fix."""


# ----------------------------------------------------------------------------------------------------------------
# from-torch

def data_meta(cfg) -> dict:
    """data.json of a workdir: class_names, image_shape [H, W, C], per-channel normalisation mean / std.

    For data.dataset 'mnist' / 'cifar' with 10 classes these follow from the config alone (SPEC §5 statistics, or
    data.normalization when given); any other dataset is loaded (as training would) to read them.
    """
    from jaxkd.data.pipeline import normalization_stats

    shape = config_lib.image_shape(cfg)
    names = _KNOWN_CLASSES.get(cfg.data.dataset)
    norm = cfg.data.normalization
    if names and shape and cfg.model.num_classes == len(names):
        mean, std = normalization_stats(cfg.data.dataset, np.zeros((0, *shape), np.uint8), list(norm.mean),
                                        list(norm.std))
        class_names, image_shape = list(names), list(shape)
    else:
        from jaxkd import data as data_lib

        data = data_lib.DataPipeline.from_config(cfg)
        class_names, image_shape, mean, std = (list(data.class_names), list(data.image_shape), data.mean, data.std)
    return {"class_names": class_names, "image_shape": [int(v) for v in image_shape],
            "mean": [float(v) for v in np.ravel(mean)], "std": [float(v) for v in np.ravel(std)]}


def _check_out_dir(out: Path, force: bool, inputs: Sequence[Path] = ()) -> None:
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out {out} is a file; give a directory for the jaxkd workdir")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConvertError(f"--out {out} exists and is not empty; pass --force to replace it, or choose another "
                               "directory")
        if not (out / "config.json").is_file():
            raise ConvertError(f"--out {out} is not a jaxkd workdir (no config.json); --force only replaces a jaxkd "
                               "workdir: choose another directory")
        root = out.resolve()
        for p in inputs:
            if root in Path(p).resolve().parents:
                raise ConvertError(f"the input {p} lies inside --out {out}, which --force would replace; move it out "
                                   "first")


def _swap_in(tmp: Path, out: Path) -> None:
    """Moves the finished directory ``tmp`` to ``out``, replacing what is there (already vetted)."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _staged(out: Path, cfg, data: dict):
    """A temporary sibling of ``out`` holding config.json and data.json, for the body to write the rest into; when
    the body succeeds it replaces ``out`` (_swap_in), on any error or interruption it is removed."""
    from jaxkd.train import reporting

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        (tmp / "config.json").write_text(config_lib.to_json(cfg) + "\n")
        reporting.write_json_atomic(tmp / "data.json", data)
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _from_torch(cfg, spec: str, torch_path: str | os.PathLike, out_dir: str | os.PathLike, *, force: bool = False,
                log: Callable[[str], None] = print, resume: bool = False) -> Path:
    from flax import nnx

    from jaxkd import interop, models
    from jaxkd.interop.fit import expected_layout
    from jaxkd.train import checkpoint as ckpt_lib
    from jaxkd.train import reporting, steps

    out, src = Path(out_dir), Path(torch_path)
    _check_out_dir(out, force, [src])
    obj = tc.load_torch_file(src)
    sd = jaxkd_keys(cfg.model.model_type, tc.state_dict_arrays(obj, str(src)))  # (ConvNeXt: `model.` prefix off)
    expected, param_keys = expected_layout(cfg)
    problems, hint = fit_problems(expected, sd)
    if problems:
        seen = tc.describe_state_dict(sd)
        raise ConvertError(
            f"{src} does not fit preset '{spec}' ({tc.describe_state_dict(expected) or cfg.model.model_type}): "
            + "; ".join(problems)
            + (f". The checkpoint looks like {seen}" if seen else "")
            + f"{hint or '; choose the preset the checkpoint was trained with (or --config.a.b=value overrides)'}")
    if resume:
        return _resume(cfg, spec, obj, sd, src, out, expected, param_keys, log)
    model = models.build(cfg, nnx.Rngs(0))
    interop.torch_to_jax(model, sd, strict=True)
    meta = data_meta(cfg)
    _, _, params, rest = steps.split_model(model)
    ignored = tc.unloaded_objects(obj)
    with _staged(out, cfg, meta) as tmp:
        reporting.write_json_atomic(tmp / "converted_from.json", {
            "torch_checkpoint": str(src.resolve()), "preset": spec, "tensors": len(sd),
            "ignored_objects": ignored})
        ckpt_lib.export_model(tmp / "model", params, rest)
    log(f"imported {src} ({len(sd)} tensors, {models.count_params(model):,} parameters) with preset '{spec}' "
        f"into {out}")
    if ignored:
        log("ignored pickled objects (not loaded, never run): " + "; ".join(ignored))
    return out


def _resume(cfg, spec: str, obj, sd: dict, src: Path, out: Path, expected: dict, param_keys: set,
            log: Callable[[str], None]) -> Path:
    """from-torch --resume: the original's training checkpoint -> a jaxkd workdir the trainer resumes."""
    from jaxkd import data as data_lib
    from jaxkd import tasks
    from jaxkd.interop.original_run import read_original_run
    from jaxkd.train import checkpoint as ckpt_lib
    from jaxkd.train import continuation, reporting
    from jaxkd.train.loop import data_json, epoch_steps

    cfg, task_notes = tasks.task_class(cfg).prepare_config(cfg)  # as the trainer does: config.json must match
    continuation.check_task(cfg, str(src))
    run = read_original_run(obj, str(src), cfg, expected, param_keys)
    data = data_lib.DataPipeline.from_config(cfg)
    spe = epoch_steps(cfg, data)
    state, host, notes = continuation.resume_state(cfg, run, sd, spe, str(src))
    step = (run.epoch + 1) * spe
    with _staged(out, cfg, data_json(data)) as tmp:
        continuation.write_history(reporting.MetricWriter(tmp / "metrics.jsonl"), run.history, run.epoch + 1, spe)
        reporting.write_json_atomic(tmp / "converted_from.json", {
            "torch_checkpoint": str(src.resolve()), "preset": spec, "resume": True, "epochs_done": run.epoch + 1,
            "step": step, "steps_per_epoch": spe, "optimizer": run.optimizer, "original_optimizer_steps": run.steps,
            "swa_averaged": run.swa[0] if run.swa else 0, "notes": task_notes + notes,
            "ignored_objects": tc.unloaded_objects(obj)})
        ckpts = ckpt_lib.Checkpoints(tmp, keep=cfg.logging.keep_checkpoints)
        try:
            ckpts.save(step, state, host)
            ckpts.wait()
        finally:
            ckpts.close()
    swa = f", SWA average of {run.swa[0]} epoch(s)" if run.swa else ""
    counted = f" after {run.steps} step(s)" if run.steps is not None else ""
    log(f"imported {src} (after epoch {run.epoch + 1}: {len(sd)} tensors, {run.optimizer} state{counted}{swa}) "
        f"with preset '{spec}' into {out}: jaxkd.train resumes it at epoch {run.epoch + 2} of "
        f"{cfg.training.num_epochs} (step {step}, {spe} steps an epoch)")
    for note in task_notes + notes:
        log(f"note: {note}")
    return out


def from_torch(config_spec: str, torch_path: str | os.PathLike, out_dir: str | os.PathLike,
               overrides: Sequence[str] = (), *, force: bool = False,
               log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Imports a PyTorch checkpoint of the original project into a new jaxkd workdir ``out_dir``; returns it.

    ``config_spec``: a preset 'configs/NAME.py[:arg]' (or 'NAME[:arg]'); ``overrides``: '--config.a.b=value'
    items. The workdir holds config.json (the resolved preset), data.json (class names, image shape,
    normalisation) and model/ (the weights, as training exports them), so ``jaxkd.train.checkpoint.load(out_dir)``
    returns the model with the checkpoint's weights. Raises ConvertError (checkpoint does not fit the preset,
    ``out_dir`` not empty without ``force``), TorchCheckpointError (unreadable file), ConfigError.

    ``resume``: ``torch_path`` is the original's training checkpoint (checkpoint_epoch_N.pth / best_model.pth) and
    the workdir continues its run: config.json, data.json, metrics.jsonl (the original's history) and the trainer's
    checkpoint at the end of epoch N (see :mod:`jaxkd.train.continuation`), which ``python -m jaxkd.train`` with the
    same config resumes at epoch N + 1. Raises OriginalRunError for an optimiser state the config cannot continue.
    """
    cfg = config_lib.load(config_spec, overrides)
    return _from_torch(cfg, config_spec, torch_path, out_dir, force=force, log=log, resume=resume)


# ----------------------------------------------------------------------------------------------------------------
# to-torch

def to_torch(workdir: str | os.PathLike, out_path: str | os.PathLike, *, force: bool = False,
             original: bool = False, optimizer: bool = False) -> Path:
    """Writes the exported model of a jaxkd workdir as a torch-layout state dict: ``.pth`` / ``.pt`` (torch.save
    of {key: tensor}, loadable with the torch_ref model's ``load_state_dict(strict=True)``) or ``.safetensors``
    (float32 weights, int64 num_batches_tracked; metadata 'format': 'pt' and 'jaxkd_config': the config JSON).
    ``original`` (``.pth`` only): the original project's checkpoint format instead, from the newest checkpoint
    (:func:`jaxkd.train.continuation.original_checkpoint`); ``optimizer`` (implies ``original``): with the
    optimiser state in torch's layout. Refuses to overwrite an existing file unless ``force``. Returns the path."""
    from jaxkd import interop
    from jaxkd.train import checkpoint as ckpt_lib

    out = Path(out_path)
    original = original or optimizer
    if out.suffix not in (".pth", ".pt", ".safetensors"):
        raise ConvertError(f"--out {out}: give a .pth (or .pt) or a .safetensors file name")
    if original and out.suffix == ".safetensors":
        raise ConvertError(f"--out {out}: the original's checkpoint format is a .pth (torch.save); give a .pth "
                           "file name, or drop --original / --optimizer")
    if out.exists() and not force:
        raise ConvertError(f"--out {out} exists; pass --force to overwrite it")
    if out.is_dir():
        raise ConvertError(f"--out {out} is a directory; give a file name")
    if original:
        from jaxkd.train.continuation import original_checkpoint

        sd = original_checkpoint(workdir, optimizer=optimizer)
        cfg = None
    else:
        model, cfg = ckpt_lib.load(workdir)
        sd = interop.jax_to_torch(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if out.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(sd, str(tmp), metadata={"format": "pt", "jaxkd_config": config_lib.to_json(cfg, indent=None)})
        else:
            try:
                import torch
            except ImportError:
                raise ConvertError(f"--out {out}: writing .pth needs torch (pip install torch); or write "
                                   ".safetensors") from None
            torch.save(_tensors(sd, torch), tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _tensors(x, torch):
    """numpy arrays -> torch tensors, through dicts, lists and tuples (plain values as they are)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x if x.flags.c_contiguous else np.array(x, order="C"))  # (0-d stays 0-d)
    if isinstance(x, dict):
        return {k: _tensors(v, torch) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_tensors(v, torch) for v in x)
    return x


# ----------------------------------------------------------------------------------------------------------------
# from-yaml

def from_yaml(yaml_path: str | os.PathLike, out_py: str | os.PathLike, *, ignore_unsupported: bool = False,
              devices: int = 1, mode: str = "auto", force: bool = False, command: str = "",
              log: Callable[[str], None] | None = None):
    """Writes the jaxkd preset equivalent to the original project's YAML config; returns the loaded config.

    See :mod:`jaxkd.interop.yaml_import` for the field mapping. Unknown fields and values jaxkd cannot reproduce
    raise ConfigError listing them all, unless ``ignore_unsupported`` (then they are written as comments); fields
    of the original's PyTorch machinery give one ``note:`` line each to ``log`` (default: stderr). ``devices``: the
    original's per-device batch_size is multiplied by it (jaxkd's batch is global). ``mode``: auto | supervised |
    distillation | ss. Refuses to overwrite ``out_py`` unless ``force``.
    """
    from jaxkd.interop.yaml_import import import_yaml

    return import_yaml(yaml_path, out_py, ignore_unsupported=ignore_unsupported, devices=devices, mode=mode,
                       force=force, command=command, **({"log": log} if log is not None else {}))


# ----------------------------------------------------------------------------------------------------------------
# CLI

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = config_lib.ArgumentParser(prog="python -m jaxkd.convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("from-torch", help="original project's .pth -> jaxkd workdir")
    p.add_argument("--config", required=True, help="preset of the checkpoint's model, e.g. configs/mnist_cnn.py "
                                                   "(plus --config.a.b=value overrides)")
    p.add_argument("--torch", required=True, help="best_model.pth (or a state dict .pth / .safetensors)")
    p.add_argument("--out", required=True, help="new jaxkd workdir")
    p.add_argument("--force", action="store_true", help="replace an existing jaxkd workdir at --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the original's run: --torch is its checkpoint_epoch_N.pth (or best_model.pth) "
                        "with the optimiser, scheduler and SWA state, and --out a workdir that python -m jaxkd.train "
                        "(same --config and overrides) resumes at epoch N+1 with the optimiser's moments, step "
                        "count, schedule position and SWA average carried over")
    p = sub.add_parser("from-yaml", help="original project's YAML config -> jaxkd preset .py")
    p.add_argument("yaml", help="the original project's YAML config")
    p.add_argument("--out", required=True, help="preset file to write (.py)")
    p.add_argument("--ignore-unsupported", action="store_true",
                   help="write unknown fields and values jaxkd cannot reproduce as comments instead of failing")
    p.add_argument("--devices", type=int, default=1,
                   help="devices the original run used: jaxkd's global batch = batch_size x devices (default 1)")
    p.add_argument("--mode", default="auto", choices=("auto", "supervised", "distillation", "ss"),
                   help="training mode (auto: from the YAML's distillation / ss_distillation sections)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p = sub.add_parser("to-torch", help="jaxkd workdir -> torch-layout state dict (.pth or .safetensors)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True, help="FILE.pth or FILE.safetensors")
    p.add_argument("--original", action="store_true",
                   help="write the original project's checkpoint format (model_state_dict, epoch, best_val_acc, "
                        "metrics_history; .pth) from the newest checkpoint, for its load_checkpoint")
    p.add_argument("--optimizer", action="store_true",
                   help="with --original (implied): add optimizer_state_dict (torch's optimizer.state_dict() of the "
                        "config's optimiser) and, with SWA, swa_model_state_dict, so the original continues the run")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    overrides, rest = config_lib.split_overrides(argv)
    args = parser.parse_args(rest)
    if overrides and args.command != "from-torch":
        parser.error(f"--config.* overrides apply to from-torch only (got {overrides[0]})")
    if args.command == "from-torch":
        paths.output_dir(args.out, "--out")
        from_torch(args.config, args.torch, args.out, overrides, force=args.force, resume=args.resume)
        if args.resume:
            print(f"continue it with: python -m jaxkd.train --config {' '.join([args.config, *overrides])} "
                  f"--workdir {args.out}")
        else:
            print(f"evaluate it with: python -m jaxkd.evaluate --workdir {args.out}")
    elif args.command == "from-yaml":
        paths.output_file(args.out, "--out")
        cfg = from_yaml(args.yaml, args.out, ignore_unsupported=args.ignore_unsupported, devices=args.devices,
                        mode=args.mode, force=args.force,
                        command="python -m jaxkd.convert from-yaml " + " ".join(rest[1:]))
        print(f"wrote {args.out} ({cfg.experiment_name}: {cfg.model.model_type} on {cfg.data.dataset}); train with: "
              f"python -m jaxkd.train --config {args.out} --workdir DIR")
    else:
        paths.output_file(args.out, "--out")
        out = to_torch(args.workdir, args.out, force=args.force, original=args.original, optimizer=args.optimizer)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so that its errors carry the module name 'jaxkd.convert' (not '__main__'),
    # which main_guard uses to recognise jaxkd's own ValueErrors (exit code 2).
    from jaxkd import convert as _convert

    config_lib.main_guard(lambda: _convert.main(sys.argv[1:]))
