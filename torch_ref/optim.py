"""Twin of jaxkd.train.optim (and of the jaxkd training step): the original project's training loop in plain PyTorch.

torch.optim.AdamW / Adam / SGD(nesterov) with LambdaLR stepped per epoch, clip_grad_norm_, F.cross_entropy with
label smoothing, gradient accumulation by `loss / k` and an optimiser step every k micro-batches, and SWA through
torch.optim.swa_utils (AveragedModel + update_bn). `save_checkpoint` / `load_checkpoint`: the original project's
training checkpoints (its Trainer.save_checkpoint's dict, and what its Trainer.load_checkpoint restores from one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = ["epoch_lr", "make_optimizer", "train_steps", "swa_average", "update_bn", "save_checkpoint",
           "load_checkpoint"]


def epoch_lr(epoch: int, *, lr: float, warmup_epochs: int, num_epochs: int, eta_min: float = 0.0,
             scheduler: str = "cosine", step_size: int = 30, gamma: float = 0.1) -> float:
    """SPEC §4: warm-up η_max·(e+1)/W, then cosine η_min + (η_max − η_min)(1 + cos(π·t/T))/2 with t = e − W,
    T = E − W (or step / exponential decay)."""
    if epoch < warmup_epochs:
        return lr * (epoch + 1) / warmup_epochs
    t = epoch - warmup_epochs
    if scheduler == "cosine":
        T = max(num_epochs - warmup_epochs, 1)
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * min(t, T) / T)) / 2
    if scheduler == "step":
        return lr * gamma ** (t // step_size)
    if scheduler == "exponential":
        return lr * gamma ** t
    return lr


def make_optimizer(model: torch.nn.Module, *, optimizer: str, lr: float, weight_decay: float, momentum: float = 0.9,
                   nesterov: bool = True,
                   **schedule) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and its per-epoch LambdaLR (call scheduler.step() at the end of each epoch)."""
    params = model.parameters()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: epoch_lr(e, lr=lr, **schedule) / lr)
    return opt, sched


def train_steps(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                opt: torch.optim.Optimizer, sched, steps_per_epoch: int, accumulation: int = 1,
                clip: float = 1.0, label_smoothing: float = 0.0) -> list[float]:
    """Trains on `batches` (NCHW images, int64 labels), one micro-batch each; returns the micro-batch losses.

    `steps_per_epoch` counts micro-batches; the scheduler steps at each epoch end. A DeiT with a distillation head
    trains both heads on the labels ((CE(cls) + CE(dist)) / 2), as jaxkd.tasks.Supervised."""
    model.train()
    losses = []
    opt.zero_grad()
    for i, (x, y) in enumerate(batches):
        out = model.forward_heads(x) if hasattr(model, "forward_heads") else {"cls": model(x), "dist": None}
        loss = F.cross_entropy(out["cls"], y, label_smoothing=label_smoothing)
        if out.get("dist") is not None:
            loss = (loss + F.cross_entropy(out["dist"], y, label_smoothing=label_smoothing)) / 2
        (loss / accumulation).backward()
        losses.append(float(loss.detach()))
        if (i + 1) % accumulation == 0:
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            opt.zero_grad()
        if (i + 1) % steps_per_epoch == 0:
            sched.step()
    return losses


def swa_average(model: torch.nn.Module, snapshots: Iterable[dict]) -> torch.optim.swa_utils.AveragedModel:
    """torch.optim.swa_utils.AveragedModel fed with the given state-dict snapshots, in order."""
    avg = torch.optim.swa_utils.AveragedModel(model)
    for sd in snapshots:
        model.load_state_dict(sd)
        avg.update_parameters(model)
    return avg


def update_bn(images: Iterable[torch.Tensor], model: torch.nn.Module) -> None:
    """torch.optim.swa_utils.update_bn over the given NCHW image batches."""
    torch.optim.swa_utils.update_bn(((x,) for x in images), model)


def save_checkpoint(path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched=None, *, epoch: int,
                    swa_model: torch.optim.swa_utils.AveragedModel | None = None, best_val_acc: float = 0.0,
                    metrics_history: dict | None = None, config=None, metrics: dict | None = None) -> None:
    """torch.save of the original's checkpoint dict: 'epoch' (0-based index of the epoch just finished; the
    original names the file checkpoint_epoch_{epoch + 1}.pth), model / optimizer / scheduler / SWA state dicts,
    'metrics', its pickled 'config', 'best_val_acc' (percent), 'metrics_history' and 'rng_state'."""
    ckpt = {"epoch": epoch, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "metrics": metrics or {}, "config": config, "best_val_acc": best_val_acc,
            "metrics_history": dict(metrics_history or {}), "rng_state": {"torch": torch.get_rng_state()}}
    if sched is not None:
        ckpt["scheduler_state_dict"] = sched.state_dict()
    if swa_model is not None:
        ckpt["swa_model_state_dict"] = swa_model.state_dict()
    torch.save(ckpt, path)


def load_checkpoint(path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched=None,
                    swa_model: torch.optim.swa_utils.AveragedModel | None = None, safe_globals=()) -> dict:
    """What the original's Trainer.load_checkpoint does: torch.load (weights_only, with its config classes as safe
    globals), then model.load_state_dict (strict), optimizer.load_state_dict, the scheduler's and the SWA model's
    when present. Returns {'epoch', 'best_val_acc', 'metrics_history'} as it keeps them."""
    with torch.serialization.safe_globals(list(safe_globals)):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model_state_dict"])
    opt.load_state_dict(ckpt["optimizer_state_dict"])
    if sched is not None and "scheduler_state_dict" in ckpt:
        sched.load_state_dict(ckpt["scheduler_state_dict"])
    if swa_model is not None and "swa_model_state_dict" in ckpt:
        swa_model.load_state_dict(ckpt["swa_model_state_dict"])
    return {"epoch": ckpt["epoch"], "best_val_acc": ckpt.get("best_val_acc", 0),
            "metrics_history": ckpt.get("metrics_history", {})}
