"""The torch side of ``python -m jaxkd.bench models``: the same training step in PyTorch, as a PyTorch user runs it.

One step = ``zero_grad`` -> forward (train mode) -> the task's loss -> ``backward`` -> ``clip_grad_norm_`` ->
``AdamW.step``, with the torch_ref models and losses and AdamW with the preset's hyper-parameters, exactly the
update rule of the jaxkd step:

* supervised CNN: ``cross_entropy(logits, targets, label_smoothing)`` (soft targets when the preset mixes);
* supervised DeiT (dist token, no teacher): ``(CE(cls) + CE(dist)) / 2`` (as jaxkd.tasks.Supervised);
* DeiT KD: the frozen CIFAR CNN teacher in eval mode under ``torch.no_grad``, then
  ``torch_ref.losses.distillation_loss`` (hard, α at epoch 0 of the preset's schedule).

How it runs is a *variant* (:data:`MODES`), so that the benchmark compares jaxkd with what a PyTorch user would
really train with, not with one setting:

=============  ==============================================================================================
eager          the model as written (NCHW), eager
channels_last  eager with model, teacher and input in ``torch.channels_last`` (only where there is a CNN)
compile        ``torch.compile`` (default mode) of forward + loss (channels_last where there is a CNN);
               backward through AOTAutograd's compiled graph, the optimiser step eager
compile-max    the same with ``mode="max-autotune"`` (Triton GEMM/conv autotuning and CUDA graphs on GPU;
               minutes of compiling)
=============  ==============================================================================================

Shared by every variant: AdamW ``fused=True`` on CUDA and ``foreach=True`` on CPU (``optim``; ``default`` is
torch's own choice, what torch_ref's factory gets), bf16 autocast when ``bf16`` (GPU runs; optional on CPU), and on
GPU TF32 matmuls/convolutions and ``cudnn.benchmark`` (:func:`set_gpu_flags`).

Never imported by jaxkd itself (jaxkd never imports torch); the benchmark imports it only when it runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

_CNNS = ("adaptive_cnn", "resnet18_cifar", "convnext_v2_tiny")
#: variant name -> (channels_last where a CNN is, torch.compile mode or None)
MODES = {
    "eager": (False, None),
    "channels_last": (True, None),
    "compile": (True, "default"),
    "compile-max": (True, "max-autotune"),
}
OPTIMS = ("auto", "default", "foreach", "fused")


class VariantUnavailable(Exception):
    """The variant does not apply to this model (e.g. channels_last without a CNN): not a failure."""


class TorchCase:
    """A torch_ref model + AdamW on a fixed batch; ``steps(k)`` runs k training steps and returns the last loss.

    Args:
      cfg: the (resolved) jaxkd config of the case (model, vit, training, distillation sections are read).
      images: (B, H, W, C) float32 NHWC numpy images (transposed to NCHW here).
      labels: (B,) int labels; targets: (B, K) soft targets or None.
      teacher_cfg: the teacher's config for the KD case, else None.
      device: 'cpu' or 'cuda'; bf16: autocast to bfloat16.
      mode: a :data:`MODES` name; optim: one of :data:`OPTIMS` (auto: fused on CUDA, foreach on CPU).

    Raises :class:`VariantUnavailable` when the mode does not apply to the model. A torch.compile failure shows at
    the first :meth:`steps` call (compilation is lazy).
    """

    def __init__(self, cfg, images: np.ndarray, labels: np.ndarray, targets: np.ndarray | None, *,
                 teacher_cfg=None, device: str = "cpu", bf16: bool = False, seed: int = 0, mode: str = "eager",
                 optim: str = "auto"):
        import torch

        from torch_ref import losses as tl

        if mode not in MODES:
            raise ValueError(f"unknown torch mode {mode!r}; choose from {', '.join(MODES)}")
        channels_last, compile_mode = MODES[mode]
        has_cnn = cfg.model.model_type in _CNNS or (teacher_cfg is not None and teacher_cfg.model.model_type in _CNNS)
        if mode == "channels_last" and not has_cnn:
            raise VariantUnavailable("no CNN in this model: channels_last is the same as eager")
        channels_last = channels_last and has_cnn
        torch.manual_seed(seed)
        self.torch, self.tl = torch, tl
        self.device = torch.device(device)
        self.bf16 = bf16
        self.mode = mode
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_torch_model(cfg).to(self.device).train()
        if channels_last and cfg.model.model_type in _CNNS:
            self.model = self.model.to(memory_format=fmt)
        self.teacher = None
        if teacher_cfg is not None:
            self.teacher = build_torch_model(teacher_cfg).to(self.device).eval()
            if channels_last:
                self.teacher = self.teacher.to(memory_format=fmt)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        t = cfg.training
        self.optim = _optim_kind(optim, self.device.type)
        kw = {"fused": True} if self.optim == "fused" else ({"foreach": True} if self.optim == "foreach" else {})
        # the hyper-parameters of torch_ref.optim.make_optimizer (the learning-rate schedule does not change the cost)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay,
                                     betas=(0.9, 0.999), eps=1e-8, **kw)
        self.clip = float(t.gradient_clip_val)
        self.ls = float(t.label_smoothing)
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(self.device)
        self.x = x.contiguous(memory_format=fmt)
        self.y = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        self.targets = torch.from_numpy(targets).to(self.device) if targets is not None else self.y
        self.kd = None
        if teacher_cfg is not None:
            d = cfg.distillation
            alpha = tl.alpha_at(0, t.num_epochs, d.alpha_schedule, d.alpha, d.alpha_start, d.alpha_end,
                                d.distillation_warmup_epochs)
            self.kd = dict(alpha=alpha, kind=d.distillation_type, tau=d.tau, label_smoothing=self.ls,
                           normalize=d.kd_normalize)
        self.loss_fn = self._loss
        if compile_mode is not None:
            self.loss_fn = torch.compile(self._loss, mode=compile_mode)
        self.settings = {"channels_last": channels_last, "compile": compile_mode, "optimizer": self.optim,
                         "bf16_autocast": bf16}

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16)

    def _loss(self, x, targets):
        tl, m = self.tl, self.model
        with self._autocast():
            out = m.forward_heads(x) if hasattr(m, "forward_heads") else {"cls": m(x), "dist": None}
            if self.teacher is not None:
                with self.torch.no_grad():
                    t_logits = self.teacher(x).float()
        cls = out["cls"].float()
        dist = out["dist"].float() if out.get("dist") is not None else None
        if self.kd is not None:
            return tl.distillation_loss(cls, dist, targets, t_logits, **self.kd)[0]
        loss = tl.cross_entropy(cls, targets, self.ls)
        if dist is not None:
            loss = (loss + tl.cross_entropy(dist, targets, self.ls)) / 2
        return loss

    def steps(self, k: int) -> float:
        """k training steps; returns the last loss (a host float, so the work is done when this returns)."""
        torch = self.torch
        loss = None
        for _ in range(k):
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.x, self.targets)
            loss.backward()
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())


def _optim_kind(optim: str, device_type: str) -> str:
    if optim not in OPTIMS:
        raise ValueError(f"unknown torch optimizer implementation {optim!r}; choose from {', '.join(OPTIMS)}")
    if optim == "auto":
        return "fused" if device_type == "cuda" else "foreach"
    return optim


def set_gpu_flags() -> dict:
    """What a PyTorch user sets for GPU training: TF32 matmuls and convolutions, cuDNN autotuning."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return {"torch_tf32": True, "torch_cudnn_benchmark": True}


def compiler_note() -> str:
    """Why torch.compile cannot work here (no C++ compiler for inductor's CPU code), or ''."""
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH (inductor needs one for CPU code)"
    return ""


def first_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def build_variants(name: str, cfg, teacher_cfg, host: dict, *, device: str, bf16: bool, modes: list[str],
                   optim: str = "auto", warmup: int = 0, compile_unavailable: str = "") -> dict:
    """Builds every torch variant of `modes` for the host batch `host` (image, label, optional target); each one's
    first step (torch.compile's compilation) is timed apart, then `warmup` untimed steps. Returns mode ->
    {case, first_step_s, settings}, or {error} for a variant that failed (printed; the others go on), or {skipped}
    for one that does not apply. `compile_unavailable`: why torch.compile cannot work here ('' = try it)."""
    import time

    out = {}
    for mode in modes:
        info: dict = {}
        unavailable = compile_unavailable if mode.startswith("compile") else ""
        if unavailable:
            info["error"] = f"torch.compile unavailable: {unavailable}"
        else:
            try:
                case = TorchCase(cfg, host["image"], host["label"], host.get("target"), teacher_cfg=teacher_cfg,
                                 device=device, bf16=bf16, mode=mode, optim=optim)
                info["settings"] = case.settings
                t = time.perf_counter()
                case.steps(1)
                info["first_step_s"] = time.perf_counter() - t
                if warmup:
                    case.steps(warmup)
                info["case"] = case
            except VariantUnavailable as e:
                info["skipped"] = str(e)
            except Exception as e:  # noqa: BLE001 -- a failing variant is reported, the run goes on
                info["error"] = first_line(e)
        if "error" in info:
            print(f"  note: {name}: torch {mode} failed: {info['error']}", flush=True)
        out[mode] = info
    return out


def build_torch_model(cfg) -> Any:
    """The torch_ref twin of ``jaxkd.models.build(cfg)``: AdaptiveCNN, ResNet-18, ConvNeXt V2 or DeiT with the same
    hyper-parameters."""
    m = cfg.model
    if m.model_type == "adaptive_cnn":
        from jaxkd.models import cnn_variant
        from torch_ref.cnn import AdaptiveCNN

        return AdaptiveCNN(cnn_variant(cfg), m.in_channels, m.num_classes, m.head_dropout, m.use_se)
    if m.model_type == "resnet18_cifar":
        from torch_ref.resnet import ResNet18CIFAR

        return ResNet18CIFAR(m.in_channels, m.num_classes)
    if m.model_type == "convnext_v2_tiny":
        from torch_ref.convnext import ConvNeXtV2

        return ConvNeXtV2(m.in_channels, m.num_classes, drop_path_rate=m.drop_path_rate)
    from torch_ref.vit import DeiT

    v = cfg.vit
    return DeiT(img_size=v.img_size, patch_size=v.patch_size, in_channels=m.in_channels, num_classes=m.num_classes,
                embed_dim=v.embed_dim, depth=v.depth, num_heads=v.num_heads, mlp_ratio=v.mlp_ratio,
                qkv_bias=v.qkv_bias, drop_rate=v.drop_rate, attn_drop_rate=v.attn_drop_rate,
                drop_path_rate=v.drop_path_rate, distillation=v.distillation,
                convert_grayscale=v.convert_grayscale, use_conv_stem=v.use_conv_stem, ln_eps=v.ln_eps,
                inference_mode=v.inference_mode, cls_token_dropout=v.cls_token_dropout)


def set_threads(n: int) -> None:
    """torch intra-op threads = n (the cores XLA uses); inter-op threads 1 (a training step has no inter-op work)."""
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)


def versions() -> dict:
    import torch

    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_cuda": bool(torch.cuda.is_available()), "torch_cuda_version": torch.version.cuda}
