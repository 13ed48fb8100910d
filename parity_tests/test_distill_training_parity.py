"""Training parity of the distillation task: jaxkd's jitted step with distill.KnowledgeDistillation and a frozen
AdaptiveCNN teacher (loaded from a PyTorch .pth through distill.load_kd_teacher) against the same loop written
with torch_ref (losses.distillation_loss, losses.alpha_at, optim.make_optimizer, the same CNN in eval mode), on
the same batches from the same initial weights.

Set-up: the DeiT of test_training_parity (8×8×3, patch 2, D 32, depth 2, conv stem with BatchNorm, dist token),
AdamW lr 2e-3 with warm-up and per-epoch cosine, clipping 1.0, label smoothing 0.1; 8 steps of batch 8 at 2 steps
per epoch; α linear 0.2 -> 0.8 after 1 KD warm-up epoch of 5 (α = 0, 0.2, 0.35, 0.5 over the 4 epochs run, so the
epoch the step hands the task is checked too); τ 2. Hard KD: the teacher sees the student's batch; soft KD: it
sees a separate clean view (batch['teacher_image']).
Tolerance: per-step losses and every parameter after the 8 steps within TOL = 1e-4 (max abs), α per step exact
(1e-6). Negative controls (the jax run reused, torch's side mutated): the KD term on the class head, a constant α
without the warm-up, the soft teacher fed the student's view instead of the clean one: each must exceed TOL.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd import interop, tasks
from jaxkd.tasks import kd as distill
from jaxkd.train import optim, steps
from parity_tests.test_training_parity import _batches, _cfg, _models
from torch_ref import losses as tlosses
from torch_ref import optim as torch_optim
from torch_ref.cnn import AdaptiveCNN as TorchCNN

TOL = 1e-4
N_STEPS, STEPS_PER_EPOCH, K = 8, 2, 5
KD = dict(alpha_schedule="linear", alpha_start=0.2, alpha_end=0.8, distillation_warmup_epochs=1, tau=2.0)


@contextlib.contextmanager
def _no_mkldnn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


@functools.cache
def _teacher_file(tmp_dir: str) -> str:
    """A torch_ref AdaptiveCNN ('mnist' variant, 3 channels, 5 classes) with non-trivial BatchNorm statistics."""
    torch.manual_seed(11)
    t = TorchCNN("mnist", in_channels=3, num_classes=K)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, b in t.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
        t.classifier[-1].weight.mul_(20.0)  # O(1) teacher logits, so that soft KD is not a uniform target
    path = f"{tmp_dir}/teacher_cnn.pth"
    torch.save(t.state_dict(), path)
    return path


def _kd_cfg(kind: str, teacher_path: str):
    cfg = _cfg("adamw", 2e-3, 1)
    cfg.model.update(model_type="deit", in_channels=3, num_classes=K, cnn_variant="mnist")
    cfg.distillation.update(enabled=True, teacher_checkpoint=teacher_path, teacher_model_type="adaptive_cnn",
                            distillation_type=kind, **KD)
    return cfg


def _data(kind: str):
    xs, ys = _batches()
    xs, ys = xs[:N_STEPS], ys[:N_STEPS]
    clean = None
    if kind == "soft":
        clean = np.random.default_rng(9).normal(size=xs.shape).astype(np.float32)
    return xs, ys, clean


@functools.cache
def _jax_run(kind: str, tmp_dir: str):
    """jaxkd: losses, α per step and the final weights (torch layout) -- once per kind, shared by the controls."""
    cfg = _kd_cfg(kind, _teacher_file(tmp_dir))
    teacher = distill.load_kd_teacher(cfg, K, (8, 8, 3))
    _, jm = _models(True)
    gd_train, _, params, rest = steps.split_model(jm)
    tx = optim.make_optimizer(cfg, STEPS_PER_EPOCH, params)
    state = steps.init_state(params, rest, tx, 0, swa=False, ema=False, fp16=False)
    step = steps.make_train_step(gd_train, tasks.make_task(cfg, teacher), tx, steps_per_epoch=STEPS_PER_EPOCH,
                                 schedule=optim.make_schedule(cfg, STEPS_PER_EPOCH))
    xs, ys, clean = _data(kind)
    losses, alphas = [], []
    for i in range(N_STEPS):
        batch = {"image": jnp.asarray(xs[i]), "label": jnp.asarray(ys[i])}
        if clean is not None:
            batch["teacher_image"] = jnp.asarray(clean[i])
        state, m = step(state, batch, teacher.state)
        losses.append(float(m["loss"]))
        alphas.append(float(m["alpha"]))
    nnx.update(jm, state.params, state.rest)  # (jm is test_training_parity's shared model: export it now)
    return losses, alphas, {k: np.asarray(v, np.float64) for k, v in interop.jax_to_torch(jm).items()}


def _param_diff(exported: dict, tm) -> float:
    sd = tm.state_dict()
    return max(float(np.max(np.abs(exported[k] - sd[k].double().numpy()))) for k in sd
               if not k.endswith("num_batches_tracked"))


def _torch_run(kind: str, tmp_dir: str, *, kd_head: str = "dist", alpha_fn=None, teacher_view: str = "clean"):
    """The same loop in torch_ref; the keyword arguments switch on one wiring mistake (negative controls)."""
    cfg = _kd_cfg(kind, _teacher_file(tmp_dir))
    t, d = cfg.training, cfg.distillation
    tm, _ = _models(True)
    teacher = TorchCNN("mnist", in_channels=3, num_classes=K)
    teacher.load_state_dict(torch.load(_teacher_file(tmp_dir), weights_only=True))
    teacher.eval()
    opt, sched = torch_optim.make_optimizer(
        tm, optimizer=t.optimizer, lr=t.learning_rate, weight_decay=t.weight_decay, momentum=t.momentum,
        nesterov=t.nesterov, warmup_epochs=t.warmup_epochs, num_epochs=t.num_epochs,
        eta_min=t.lr_scheduler_params.eta_min)
    alpha_fn = alpha_fn or (lambda e: tlosses.alpha_at(e, t.num_epochs, d.alpha_schedule, d.alpha, d.alpha_start,
                                                       d.alpha_end, d.distillation_warmup_epochs))
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    xs, ys, clean = _data(kind)
    losses, alphas = [], []
    tm.train()
    with _no_mkldnn():
        for i in range(N_STEPS):
            x, y = nchw(xs[i]), torch.from_numpy(ys[i]).long()
            xt = nchw(clean[i]) if clean is not None and teacher_view == "clean" else x
            out = tm.forward_heads(x)
            with torch.no_grad():
                t_logits = teacher(xt)
            a = alpha_fn(i // STEPS_PER_EPOCH)
            kd_logits = out["dist"] if kd_head == "dist" else out["cls"]
            loss, _ = tlosses.distillation_loss(out["cls"], kd_logits, y, t_logits, alpha=a, kind=kind, tau=d.tau,
                                                label_smoothing=t.label_smoothing)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tm.parameters(), t.gradient_clip_val)
            opt.step()
            if (i + 1) % STEPS_PER_EPOCH == 0:
                sched.step()
            losses.append(float(loss.detach()))
            alphas.append(float(a))
    return losses, alphas, tm


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kd_parity"))


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_kd_steps_match_torch(kind, tmp_dir, record_property):
    jl, ja, jm = _jax_run(kind, tmp_dir)
    tl, ta, tm = _torch_run(kind, tmp_dir)
    assert ta == pytest.approx([0, 0, 0.2, 0.2, 0.35, 0.35, 0.5, 0.5])
    assert np.max(np.abs(np.asarray(ja) - np.asarray(ta))) < 1e-6, (ja, ta)
    loss_diff = max(abs(a - b) for a, b in zip(jl, tl))
    param_diff = _param_diff(jm, tm)
    print(f"{kind} KD: loss max diff {loss_diff:.2e}, param max diff {param_diff:.2e}")
    record_property("loss_max_abs_diff", loss_diff)
    record_property("param_max_abs_diff", param_diff)
    assert loss_diff < TOL, loss_diff
    assert param_diff < TOL, param_diff
    # not vacuous: the weights moved far beyond the tolerance, head_dist included (the KD term trains it)
    tm0, _ = _models(True)
    sd, sd0 = tm.state_dict(), tm0.state_dict()
    moved = {k: float((sd[k] - sd0[k]).abs().max()) for k in ("head.weight", "head_dist.weight")}
    assert min(moved.values()) > 50 * TOL, moved


CONTROLS = {
    "kd_on_cls_head": ("hard", dict(kd_head="cls")),
    "constant_alpha": ("hard", dict(alpha_fn=lambda e: 0.5)),
    "teacher_sees_student_view": ("soft", dict(teacher_view="student")),
}


@pytest.mark.parametrize("control", list(CONTROLS))
def test_negative_control_wrong_wiring_fails(control, tmp_dir, record_property):
    kind, kw = CONTROLS[control]
    jl, _, jm = _jax_run(kind, tmp_dir)
    tl, _, tm = _torch_run(kind, tmp_dir, **kw)
    loss_diff = max(abs(a - b) for a, b in zip(jl, tl))
    param_diff = _param_diff(jm, tm)
    print(f"negative control {control}: loss max diff {loss_diff:.2e}, param max diff {param_diff:.2e}")
    record_property("control_param_max_abs_diff", param_diff)
    assert param_diff > TOL and loss_diff > TOL
