"""The torch_ref side of ``python -m jaxkd.bench models``: the same training step in plain PyTorch.

One step = ``zero_grad`` -> forward (train mode) -> the task's loss -> ``backward`` -> ``clip_grad_norm_`` ->
``AdamW.step``, with the torch_ref models (NCHW, as the reference is written), the torch_ref losses and the
torch_ref optimiser factory (torch's default AdamW implementation), exactly the update rule of the jaxkd step:

* supervised CNN: ``cross_entropy(logits, targets, label_smoothing)`` (soft targets when the preset mixes);
* supervised DeiT (dist token, no teacher): ``(CE(cls) + CE(dist)) / 2`` (as jaxkd.tasks.Supervised);
* DeiT KD: the frozen CIFAR CNN teacher in eval mode under ``torch.no_grad``, then
  ``torch_ref.losses.distillation_loss`` (hard, α at epoch 0 of the preset's schedule).

Never imported by jaxkd itself (jaxkd never imports torch); the benchmark imports it only when it runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np


class TorchCase:
    """A torch_ref model + AdamW on a fixed batch; ``steps(k)`` runs k training steps and returns the last loss.

    Args:
      cfg: the (resolved) jaxkd config of the case (model, vit, training, distillation sections are read).
      images: (B, H, W, C) float32 NHWC numpy images (transposed to NCHW here).
      labels: (B,) int labels; targets: (B, K) soft targets or None.
      teacher_cfg: the teacher's config for the KD case, else None.
      device: 'cpu' or 'cuda'; bf16: autocast to bfloat16 (GPU runs).
    """

    def __init__(self, cfg, images: np.ndarray, labels: np.ndarray, targets: np.ndarray | None, *,
                 teacher_cfg=None, device: str = "cpu", bf16: bool = False, seed: int = 0):
        import torch

        from torch_ref import losses as tl
        from torch_ref import optim as topt

        torch.manual_seed(seed)
        self.torch, self.tl = torch, tl
        self.device = torch.device(device)
        self.bf16 = bf16
        self.model = build_torch_model(cfg).to(self.device).train()
        self.teacher = None
        if teacher_cfg is not None:
            self.teacher = build_torch_model(teacher_cfg).to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        t = cfg.training
        self.opt, _ = topt.make_optimizer(self.model, optimizer="adamw", lr=t.learning_rate,
                                          weight_decay=t.weight_decay, warmup_epochs=t.warmup_epochs,
                                          num_epochs=t.num_epochs)
        self.clip = float(t.gradient_clip_val)
        self.ls = float(t.label_smoothing)
        self.x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(self.device)
        self.y = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        self.targets = torch.from_numpy(targets).to(self.device) if targets is not None else self.y
        self.kd = None
        if teacher_cfg is not None:
            d = cfg.distillation
            alpha = tl.alpha_at(0, t.num_epochs, d.alpha_schedule, d.alpha, d.alpha_start, d.alpha_end,
                                d.distillation_warmup_epochs)
            self.kd = dict(alpha=alpha, kind=d.distillation_type, tau=d.tau, label_smoothing=self.ls,
                           normalize=d.kd_normalize)

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16)

    def _loss(self):
        tl, m = self.tl, self.model
        with self._autocast():
            out = m.forward_heads(self.x) if hasattr(m, "forward_heads") else {"cls": m(self.x), "dist": None}
            if self.teacher is not None:
                with self.torch.no_grad():
                    t_logits = self.teacher(self.x).float()
        cls = out["cls"].float()
        dist = out["dist"].float() if out.get("dist") is not None else None
        if self.kd is not None:
            return tl.distillation_loss(cls, dist, self.targets, t_logits, **self.kd)[0]
        loss = tl.cross_entropy(cls, self.targets, self.ls)
        if dist is not None:
            loss = (loss + tl.cross_entropy(dist, self.targets, self.ls)) / 2
        return loss

    def steps(self, k: int) -> float:
        """k training steps; returns the last loss (a host float, so the work is done when this returns)."""
        torch = self.torch
        loss = None
        for _ in range(k):
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss()
            loss.backward()
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())


def build_torch_model(cfg) -> Any:
    """The torch_ref twin of ``jaxkd.models.build(cfg)``: AdaptiveCNN or DeiT with the same hyper-parameters."""
    m = cfg.model
    if m.model_type == "adaptive_cnn":
        from jaxkd.models import cnn_variant
        from torch_ref.cnn import AdaptiveCNN

        return AdaptiveCNN(cnn_variant(cfg), m.in_channels, m.num_classes, m.head_dropout, m.use_se)
    from torch_ref.vit import DeiT

    v = cfg.vit
    return DeiT(img_size=v.img_size, patch_size=v.patch_size, in_channels=m.in_channels, num_classes=m.num_classes,
                embed_dim=v.embed_dim, depth=v.depth, num_heads=v.num_heads, mlp_ratio=v.mlp_ratio,
                qkv_bias=v.qkv_bias, drop_rate=v.drop_rate, attn_drop_rate=v.attn_drop_rate,
                drop_path_rate=v.drop_path_rate, distillation=v.distillation,
                convert_grayscale=v.convert_grayscale, use_conv_stem=v.use_conv_stem, ln_eps=v.ln_eps,
                inference_mode=v.inference_mode)


def set_threads(n: int) -> None:
    """torch intra-op threads = n (the cores XLA uses); inter-op threads 1 (a training step has no inter-op work)."""
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)


def versions() -> dict:
    import torch

    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_cuda": bool(torch.cuda.is_available())}
