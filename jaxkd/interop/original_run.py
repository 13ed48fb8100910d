"""The original PyTorch project's training checkpoints, read and checked for continuing the run in jaxkd, and the
same format written back (torch's ``optimizer.state_dict()`` layout).

The original's ``Trainer.save_checkpoint`` writes ``checkpoints/best_model.pth`` and ``checkpoint_epoch_{e+1}.pth``
as ``torch.save`` of ``{'epoch': e`` (the 0-based index of the epoch just finished), ``'model_state_dict'``,
``'optimizer_state_dict'`` (torch's ``optimizer.state_dict()``: ``'state'`` by parameter index, ``exp_avg`` /
``exp_avg_sq`` / ``step`` for Adam(W), ``momentum_buffer`` for SGD, ``square_avg`` for RMSprop, and
``'param_groups'``), ``'scheduler_state_dict'``, ``'swa_model_state_dict'`` (``torch.optim.swa_utils.AveragedModel``:
the model's state dict under ``module.`` plus ``n_averaged``), ``'scaler_state_dict'`` (fp16), ``'best_val_acc'``
(percent), ``'metrics_history'`` (``{'train_loss': [...], 'val_acc': [...], ...}``, one entry per epoch), its pickled
``'config'`` dataclasses, ``'metrics'`` and ``'rng_state'}``. The file is read with
:func:`jaxkd.interop.torch_pickle.load_torch_file` (never ``torch.load(weights_only=False)``): the pickled config
arrives as inert placeholders whose recorded fields :func:`original_config` reads; nothing of it runs.

Parameter order. The optimiser's per-parameter state is keyed by the parameter's index in ``model.parameters()``,
the order of ``named_parameters()``: a pre-order walk of the modules, each module's own parameters first.
``state_dict()`` walks the modules in the same pre-order (own parameters, own buffers, then the children), so the
order is the checkpoint's own ``model_state_dict`` key order with the buffers (BatchNorm running statistics and
counters) left out (:func:`parameter_order`; ``tests/test_original_run.py`` checks it against torch_ref's modules).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxkd.errors import JaxkdError
from jaxkd.interop.torch_pickle import Unloaded, as_array

__all__ = ["OriginalRunError", "OriginalRun", "MOMENTS", "parameter_order", "original_key_order", "original_config",
           "read_original_run", "torch_optimizer_state_dict", "torch_class_name"]

#: per-parameter state jaxkd carries, per optimiser (SGD / RMSprop keep momentum_buffer only with momentum > 0)
MOMENTS = {"adamw": ("exp_avg", "exp_avg_sq"), "adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",),
           "rmsprop": ("square_avg", "momentum_buffer")}
_TORCH_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}
# jaxkd.train.optim's fixed hyperparameters; a group with other values cannot be continued exactly
_FIXED = {"adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False},
          "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False},
          "sgd": {"dampening": 0.0}, "rmsprop": {"alpha": 0.99, "eps": 1e-8, "centered": False}}
_SHOW = 4
# The original's modules register their submodules and tensors in this order (siblings only ever compare among
# themselves): DeiT (tokens, channel_expand, patch_embed = stem, proj; blocks = norm1, attn = qkv, proj, norm2,
# mlp = fc1, fc2; norm, head, head_dist) and AdaptiveCNN (features: conv1, bn1, conv2, bn2, se = fc, shortcut;
# classifier); tensors weight, bias, then BatchNorm's buffers. PEER_CHECKPOINTS.md lists its state dicts so.
_REGISTRATION = ("cls_token", "dist_token", "pos_embed", "channel_expand", "patch_embed", "stem", "blocks", "norm1",
                 "attn", "qkv", "proj", "norm2", "mlp", "fc1", "fc2", "norm", "head", "head_dist", "features",
                 "conv1", "bn1", "conv2", "bn2", "se", "fc", "shortcut", "classifier", "weight", "bias",
                 "running_mean", "running_var", "num_batches_tracked")


class OriginalRunError(JaxkdError, ValueError):
    """An original checkpoint that cannot be continued as asked (its optimiser, shapes or epochs do not fit the
    config): one line naming the file, the problem and the fix."""


@dataclasses.dataclass
class OriginalRun:
    """What an original training checkpoint holds for continuing it (arrays in torch layout, keyed by torch key).

    epoch: the original's 'epoch', the 0-based index of the last finished epoch (the next run starts epoch + 1).
    optimizer: 'adamw' | 'adam' | 'sgd' | 'rmsprop'; lr: the parameter group's learning rate when saved.
    steps: optimiser steps taken (Adam / RMSprop 'step'; None for SGD, which keeps no count).
    moments: {'exp_avg': {param key: array}, ...} (the names of MOMENTS the config's optimiser keeps).
    swa: (n_averaged, {param key: averaged array}) or None; plateau: ReduceLROnPlateau's {'best', 'bad_epochs'}
    or None; scaler: the fp16 GradScaler's {'scale', 'growth_tracker'} or None; best_val_acc: percent or None;
    history: metrics_history (lists of floats); notes: what was not carried over, one line each.
    """

    epoch: int
    optimizer: str
    lr: float
    steps: int | None
    moments: dict[str, dict[str, np.ndarray]]
    swa: tuple[int, dict[str, np.ndarray]] | None = None
    plateau: dict | None = None
    scaler: dict | None = None
    best_val_acc: float | None = None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def torch_class_name(optimizer: str) -> str:
    return _TORCH_NAMES[optimizer]


def parameter_order(model_state_dict: Mapping[str, Any], param_keys: set[str]) -> list[str]:
    """The keys of ``model.parameters()`` in order: the state dict's key order without its buffers."""
    return [k for k in model_state_dict if k in param_keys]


def original_key_order(keys) -> list[str]:
    """The state-dict keys of an original-project model (e.g. jaxkd's, which come sorted) in the order the
    original's ``state_dict()`` lists them; without buffers, that is its ``model.parameters()`` order. Raises
    OriginalRunError for a key with a name the original's modules do not have."""
    rank = {name: i for i, name in enumerate(_REGISTRATION)}

    def sort_key(key: str):
        parts = key.split(".")
        unknown = [p for p in parts if not p.isdigit() and p not in rank]
        if unknown:
            raise OriginalRunError(f"{key}: not a key of the original project's models (AdaptiveCNN, DeiT), so its "
                                   "parameter order is unknown; write the weights alone (without --optimizer)")
        return tuple((0, int(p)) if p.isdigit() else (1, rank[p]) for p in parts)

    return sorted(keys, key=sort_key)


def original_config(obj: Any) -> dict[str, dict]:
    """The sections of the checkpoint's pickled 'config' as plain dicts ({'training': {'optimizer': 'adamw', ...}}),
    from what the restricted unpickler recorded of its dataclasses; {} where there is none or it is unreadable."""
    cfg = obj.get("config") if isinstance(obj, Mapping) else None

    def fields(x: Any) -> dict | None:
        state = x.state if isinstance(x, Unloaded) else x
        return dict(state) if isinstance(state, Mapping) else None

    top = fields(cfg) or {}
    return {k: f for k, v in top.items() if (f := fields(v)) is not None}


def _listing(items: list) -> str:
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(map(str, items[:_SHOW])) + more


def _optimizer_kind(groups: list[Mapping], state: Mapping, named: str | None) -> str | None:
    """Which torch optimiser wrote the state: from its parameter groups' keys (the state's names for the rest)."""
    g = groups[0]
    if "betas" in g:
        if "decoupled_weight_decay" in g:  # torch >= 2.6 records it; earlier Adam and AdamW groups look alike
            return "adamw" if g["decoupled_weight_decay"] else "adam"
        return named if named in ("adam", "adamw") else "adam(w)"
    if "nesterov" in g:
        return "sgd"
    if "centered" in g or "alpha" in g:
        return "rmsprop"
    names = {n for s in state.values() if isinstance(s, Mapping) for n in s}
    return "adam(w)" if "exp_avg" in names else "rmsprop" if "square_avg" in names else (
        "sgd" if "momentum_buffer" in names else None)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _check_groups(where: str, kind: str, groups: list[Mapping], t) -> None:
    """The parameter groups' hyperparameters against the config's (training section `t`) and jaxkd's fixed ones."""
    fix = {"weight_decay": ("weight_decay", t.weight_decay)}
    if kind in ("sgd", "rmsprop"):
        fix["momentum"] = ("momentum", t.momentum)
    if kind == "sgd":
        fix["nesterov"] = ("nesterov", t.nesterov)
    for i, g in enumerate(groups):
        for key, (field, want) in fix.items():
            if key in g and not _close(g[key], want):
                value = str(g[key]).lower() if isinstance(g[key], bool) else f"{float(g[key]):g}"
                raise OriginalRunError(f"{where}: the optimiser's {key} is {value} (parameter group {i}) but the "
                                       f"config has training.{field} = {want}: set --config.training.{field}={value}")
        if "initial_lr" in g and not _close(g["initial_lr"], t.learning_rate):
            raise OriginalRunError(f"{where}: the optimiser's base learning rate (initial_lr) is {g['initial_lr']:g} "
                                   f"but the config has training.learning_rate = {t.learning_rate:g}: set "
                                   f"--config.training.learning_rate={g['initial_lr']:g}")
        for key, want in {**_FIXED[kind], "maximize": False}.items():
            if key in g and not _close(g[key], want):
                raise OriginalRunError(f"{where}: the optimiser's {key} is {g[key]}, but jaxkd's {kind} has {key} "
                                       f"{want}, so this run cannot be continued exactly; import the weights alone "
                                       "(without --resume) and train them afresh")
    if t.weight_decay_mask != "all" and t.weight_decay > 0:
        raise OriginalRunError(f"{where}: the original decayed every parameter, but the config has "
                               f"training.weight_decay_mask = '{t.weight_decay_mask}': set "
                               "--config.training.weight_decay_mask=all")


def _moments(where: str, kind: str, state: Mapping, order: list[str], shapes: Mapping[str, tuple],
             momentum: float) -> tuple[dict[str, dict[str, np.ndarray]], int | None, list[str]]:
    names = [n for n in MOMENTS[kind] if n != "momentum_buffer" or momentum > 0]
    missing = [f"{i} ({k})" for i, k in enumerate(order)
               if not isinstance(state.get(i), Mapping) or any(state[i].get(n) is None for n in names)]
    if missing and names:
        raise OriginalRunError(
            f"{where}: optimizer_state_dict holds {', '.join(names)} for {len(order) - len(missing)} of the model's "
            f"{len(order)} parameters (missing: {_listing(missing)}): the state dict is truncated or not this "
            "model's; use a complete checkpoint, or import the weights alone without --resume")
    extra = [i for i in state if not (isinstance(i, int) and 0 <= i < len(order))]
    if extra:
        raise OriginalRunError(f"{where}: optimizer_state_dict has state for parameter index(es) {_listing(extra)}, "
                               f"but the model has {len(order)} parameters: the optimiser is not this model's; use "
                               "the checkpoint it was saved with")
    moments: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for i, key in enumerate(order):
        for n in names:
            arr = as_array(state[i][n])
            if arr is None or tuple(arr.shape) != tuple(shapes[key]):
                got = "not a tensor" if arr is None else f"shape {tuple(arr.shape)}"
                raise OriginalRunError(
                    f"{where}: optimiser state {i} '{n}' has {got}, but parameter {i} of model.parameters(), {key}, "
                    f"has shape {tuple(shapes[key])}: the optimiser state is not this model's (or not in its "
                    "parameter order); use the checkpoint it was saved with")
            moments[n][key] = arr
    notes = []
    steps = None
    if kind != "sgd":
        counts = sorted({int(np.asarray(as_array(state[i].get("step", 0)))) for i in range(len(order))})
        steps = counts[-1]
        if len(counts) > 1:
            notes.append(f"the parameters' optimiser step counts differ ({_listing(counts)}); jaxkd keeps one "
                         f"count: {steps}")
    return moments, steps, notes


def _swa(where: str, obj: Mapping, order: list[str], shapes: Mapping[str, tuple], epoch: int, cfg) -> tuple:
    t = cfg.training
    swa_from = int(math.floor(t.swa_start_epoch * t.num_epochs)) if t.use_swa else None
    sd = obj.get("swa_model_state_dict")
    n = int(np.asarray(as_array(sd.get("n_averaged", 0)))) if isinstance(sd, Mapping) else 0
    if swa_from is None:
        return None, ([f"swa_model_state_dict (an average of {n} epochs): not carried over, the config has "
                       "training.use_swa = false"] if n else [])
    if epoch < swa_from:
        return None, []
    if not n:
        raise OriginalRunError(f"{where}: no SWA average (swa_model_state_dict), but the config averages from epoch "
                               f"{swa_from + 1} (training.use_swa, swa_start_epoch) and the run finished epoch "
                               f"{epoch + 1}: set --config.training.use_swa=false, or use the checkpoint with its "
                               "average")
    avg = {k: as_array(sd.get(f"module.{k}")) for k in order}
    bad = [k for k, a in avg.items() if a is None or tuple(a.shape) != tuple(shapes[k])]
    if bad:
        raise OriginalRunError(f"{where}: swa_model_state_dict does not match the model (missing or mis-shaped: "
                               f"{_listing([f'module.{k}' for k in bad])}): use the checkpoint it was saved with")
    notes = []
    if n != epoch - swa_from + 1:
        notes.append(f"the SWA average holds {n} epochs; the config's swa_start_epoch would have averaged "
                     f"{epoch - swa_from + 1} by epoch {epoch + 1}")
    return (n, avg), notes


def read_original_run(obj: Any, where: str, cfg, shapes: Mapping[str, tuple], param_keys: set[str]) -> OriginalRun:
    """Checks a loaded original checkpoint (``obj``, whose model_state_dict already fits ``shapes``) against the
    config ``cfg`` it is to continue under, and returns what it holds. Raises :class:`OriginalRunError` for an
    optimiser other than the config's (or with other hyperparameters), a truncated optimiser state, moments of
    the wrong shapes, a finished epoch beyond training.num_epochs, a missing SWA average the config needs."""
    t = cfg.training
    keys = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    opt = obj.get("optimizer_state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(opt, Mapping) or not isinstance(opt.get("param_groups"), list) or not opt["param_groups"]:
        raise OriginalRunError(f"{where}: no optimizer_state_dict (top-level keys: {keys}): --resume needs a "
                               "checkpoint of the original's training loop (checkpoints/checkpoint_epoch_N.pth or "
                               "best_model.pth); import the weights alone without --resume")
    epoch = obj.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise OriginalRunError(f"{where}: 'epoch' is {epoch!r}, not the index of a finished epoch: use a checkpoint "
                               "the original's training loop saved")
    epoch = int(epoch)
    planned = original_config(obj).get("training", {})
    if epoch + 1 > t.num_epochs:
        orig = planned.get("num_epochs")
        also = f" (the original planned {orig})" if isinstance(orig, int) else ""
        raise OriginalRunError(f"{where}: the original run finished epoch {epoch + 1} ('epoch' {epoch}) but the "
                               f"config trains training.num_epochs = {t.num_epochs}{also}: set "
                               f"--config.training.num_epochs={max(epoch + 1, orig if isinstance(orig, int) else 0)} "
                               "or more")
    groups, state = opt["param_groups"], opt.get("state") or {}
    named = str(planned.get("optimizer", "")).lower() or None
    kind = _optimizer_kind(groups, state, named)
    if kind == "adam(w)" and t.optimizer in ("adam", "adamw"):
        kind = t.optimizer  # older torch: Adam and AdamW state dicts are alike, and no pickled config names it
    if kind != t.optimizer or (named in MOMENTS and named != t.optimizer):
        seen = f"torch {_TORCH_NAMES.get(kind, 'Adam / AdamW' if kind == 'adam(w)' else 'unknown')}'s"
        said = f"; its pickled config says '{named}'" if named in MOMENTS and named != kind else ""
        if "betas" in groups[0] and "decoupled_weight_decay" not in groups[0] and named in ("adam", "adamw"):
            said = " (as its pickled config says: this torch did not record decoupled_weight_decay)"
        want = named if named in MOMENTS else kind if kind in MOMENTS else None
        fix = (f"set --config.training.optimizer={want} (or use the preset the run was trained with)" if want
               else "use the preset the run was trained with")
        raise OriginalRunError(f"{where}: the optimiser state is {seen}{said}, but the config trains with "
                               f"training.optimizer = '{t.optimizer}': {fix}")
    order = parameter_order(obj["model_state_dict"], param_keys)
    indices = sorted(i for g in groups for i in g.get("params", []))
    if indices != list(range(len(order))):
        raise OriginalRunError(f"{where}: optimizer_state_dict's param_groups list {len(indices)} parameter(s) but "
                               f"the model has {len(order)}: the optimiser is not this model's (or was built on part "
                               "of it); use the checkpoint it was saved with")
    _check_groups(where, kind, groups, t)
    moments, steps, notes = _moments(where, kind, state, order, shapes, float(groups[0].get("momentum", 0.0)))
    swa, swa_notes = _swa(where, obj, order, shapes, epoch, cfg)
    sched = obj.get("scheduler_state_dict")
    plateau = None
    if t.scheduler == "plateau" and isinstance(sched, Mapping) and "num_bad_epochs" in sched:
        plateau = {"best": float(sched.get("best", math.inf)), "bad_epochs": int(sched["num_bad_epochs"])}
    scaler = obj.get("scaler_state_dict")
    scaler = ({"scale": float(scaler["scale"]), "growth_tracker": int(scaler.get("_growth_tracker", 0))}
              if isinstance(scaler, Mapping) and "scale" in scaler else None)
    best = obj.get("best_val_acc")
    history = obj.get("metrics_history")
    history = {str(k): [float(x) for x in v] for k, v in history.items()
               if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v)
               } if isinstance(history, Mapping) else {}
    return OriginalRun(epoch=epoch, optimizer=kind, lr=float(groups[0]["lr"]), steps=steps, moments=moments,
                       swa=swa, plateau=plateau, scaler=scaler,
                       best_val_acc=float(best) if isinstance(best, (int, float)) else None,
                       history=history, notes=notes + swa_notes)


def torch_optimizer_state_dict(optimizer: str, t, order: list[str], moments: Mapping[str, Mapping[str, np.ndarray]],
                               steps: int | None, lr: float) -> dict:
    """torch's ``optimizer.state_dict()`` of the config's optimiser (training section ``t``) over the parameters
    ``order`` (model.parameters() order): one parameter group with the hyperparameter keys the installed torch
    writes (taken from a real optimiser of that class), 'lr' the learning rate of the next step and 'initial_lr'
    the base rate (as torch's schedulers record it), and per parameter the ``moments`` as tensors (``step`` as
    torch's float32 scalar tensor). ``torch.optim.<Class>(model.parameters(), ...).load_state_dict`` accepts it."""
    import torch

    dummy = [torch.nn.Parameter(torch.zeros(1))]
    if optimizer in ("adam", "adamw"):
        template = getattr(torch.optim, _TORCH_NAMES[optimizer])(dummy, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                                                 weight_decay=t.weight_decay)
    elif optimizer == "sgd":
        template = torch.optim.SGD(dummy, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                   nesterov=t.nesterov and t.momentum > 0)
    else:
        template = torch.optim.RMSprop(dummy, lr=lr, alpha=0.99, eps=1e-8, weight_decay=t.weight_decay,
                                       momentum=t.momentum)
    group = dict(template.state_dict()["param_groups"][0], lr=float(lr), initial_lr=float(t.learning_rate),
                 params=list(range(len(order))))
    state = {}
    for i, key in enumerate(order):
        entry = {} if steps is None else {"step": torch.tensor(float(steps), dtype=torch.float32)}
        for name, by_key in moments.items():
            entry[name] = torch.from_numpy(np.array(by_key[key], np.float32, order="C", copy=True))
        if entry:
            state[i] = entry
    return {"state": state, "param_groups": [group]}
