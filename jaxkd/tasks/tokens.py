"""Self-supervised token distillation (CST-style, SPEC §3): a frozen DINOv2 (or jaxkd ViT) teacher, projection
heads, L = CE + λ_tok·L_tok + λ_rel(epoch)·L_rel, in the one trainer.

- Teacher input: the student's batch (or the clean view), un-normalised, re-normalised with ImageNet statistics
  (DINOv2's own; `teacher_normalization=dataset` keeps the dataset's, as the original), grey -> RGB, resized
  bilinearly to `teacher_img_size`. The teacher runs once per step for every layer it must provide (the original
  ran it twice).
- Tokens: student patch tokens after the chosen blocks (before its final LN) and after its final LN; teacher
  patch tokens of the same block indices after its final LN (the peer's choice), resized to the student's grid.
- Projectors: one ProjectionHead per layer and side; the student's are trained (in the optimiser and the
  checkpoints); the teacher's are trained too ('trainable', as the original), or frozen at their random init
  (they then live with the teacher, outside the optimiser), or absent ('identity').
- Structural losses (LATER §3.1-3.4; `use_cka_loss`, `use_gram_loss`): + λ_cka(e)·L_cka + λ_gram(e)·L_gram on the
  same layers, through their own projectors (student side trained like the others; teacher side per
  `structural_teacher_projector`: none by default, frozen, or trainable as the original). Logged as `cka`, `gram`,
  `lambda_cka`, `lambda_gram`. The student's tokens reach them without the projector warm-up's gate (their own
  warm-up is `cka_warmup_epochs`).
- CLS-only (`use_cls_only`, LATER §3.5): the class token after each chosen block (student: before its final LN;
  teacher: after its final LN) instead of the patch tokens, for L_tok, L_structural (across the batch) and, with the
  final-LN class tokens of the student and of the teacher's last block, L_rel.
- The dist head is not trained in this mode, so inference uses the class head.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxkd import losses, models
from jaxkd.config import ConfigError
from jaxkd.models import resize
from jaxkd.tasks import teachers
from jaxkd.tasks.base import Task, Teacher, TeacherInput, accuracy, teacher_precision
from jaxkd.train import checkpoint

__all__ = ["load_ss_teacher", "SelfSupervisedDistillation", "SSStudent"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _FrozenTeacher(nnx.Module):
    """The teacher network and (in 'frozen' mode) the teacher-side projectors of L_tok and of the structural losses:
    the step's aux state."""

    def __init__(self, net, projectors, structural_projectors=None):
        self.net = net
        self.projectors = projectors
        self.structural_projectors = structural_projectors


class SSStudent(nnx.Module):
    """What token distillation trains: the DeiT and its projectors (and trainable teacher-side projectors), and
    those of the structural losses (None when they are off)."""

    def __init__(self, model, student_projectors, teacher_projectors, structural_student_projectors=None,
                 structural_teacher_projectors=None):
        self.model = model
        self.student_projectors = student_projectors
        self.teacher_projectors = teacher_projectors
        self.structural_student_projectors = structural_student_projectors
        self.structural_teacher_projectors = structural_teacher_projectors


def _structural(ss) -> bool:
    return bool(ss.use_cka_loss or ss.use_gram_loss)


def _custom_arch(path: Path, heads: int):
    sd, _, hub = teachers.read_dinov2_weights(path, arch="vit_small")  # hub: heads stated by a config.json
    return teachers.dinov2_arch_from_state_dict(sd, heads, where=str(path), hub=hub), sd


def load_ss_teacher(cfg, data) -> Teacher:
    """The frozen teacher of token distillation, with its input statistics and frozen projectors."""
    ss = cfg.ss_distillation
    if not ss.teacher_checkpoint:
        raise ConfigError("config field 'ss_distillation.teacher_checkpoint' is empty: give the DINOv2 weight file "
                          "(e.g. dinov2_vits14_pretrain.pth from https://dl.fbaipublicfiles.com/dinov2/) or a jaxkd "
                          "ViT workdir")
    path = Path(ss.teacher_checkpoint)
    dtype = models.compute_dtype(cfg)
    if ss.teacher_type == "dinov2":
        if ss.teacher_model_name == "dinov2_custom":
            if not path.exists():
                raise ConfigError(f"teacher weights '{path}' not found: give the DINOv2-architecture weight file "
                                  "(or a Hugging Face snapshot folder)")
            arch, source = _custom_arch(path, ss.teacher_num_heads)
        else:
            arch, source = ss.teacher_model_name, path
        net = teachers.load_dinov2(source, arch=arch, img_size=ss.teacher_img_size, dtype=dtype)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if ss.teacher_normalization == "imagenet" else (data.mean, data.std)
        size, depth, dim, channels = ss.teacher_img_size, net.depth, net.embed_dim, 3
        desc = f"DINOv2 {ss.teacher_model_name} from {path}"
    else:
        net, tcfg = checkpoint.load(path)
        if tcfg.model.model_type != "deit":
            raise ConfigError(f"ss_distillation.teacher_checkpoint '{path}' holds a {tcfg.model.model_type} model, "
                              f"but a jaxkd token teacher must be a ViT (deit): give a ViT workdir, or set "
                              f"--config.ss_distillation.teacher_type=dinov2 with DINOv2 weights")
        # A jaxkd teacher sees images normalised as it was trained (its data.json), whatever
        # teacher_normalization says: ImageNet statistics would feed it off-distribution inputs.
        meta = json.loads((path / "data.json").read_text())
        mean, std = meta["mean"], meta["std"]
        size, depth, dim = tcfg.vit.img_size, tcfg.vit.depth, tcfg.vit.embed_dim
        channels = int(tcfg.model.in_channels)
        desc = f"jaxkd ViT from {path}"
    bad = [i for i in ss.token_layers if i >= depth]
    if bad:
        raise ConfigError(f"config field 'ss_distillation.token_layers' = {list(ss.token_layers)}: the teacher has "
                          f"only {depth} blocks ({desc}); set --config.ss_distillation.token_layers=[...] with "
                          f"indices < {depth}, or use a deeper teacher")
    projectors = structural = None
    if ss.teacher_projector == "frozen":
        rngs = nnx.Rngs(cfg.seed + 3)
        projectors = nnx.List([losses.ProjectionHead(dim, ss.projection_hidden_dim, ss.projection_dim, rngs=rngs)
                               for _ in ss.token_layers])
    if _structural(ss) and ss.structural_teacher_projector == "frozen":
        rngs = nnx.Rngs(cfg.seed + 4)
        structural = nnx.List([losses.ProjectionHead(dim, ss.projection_hidden_dim, ss.projection_dim, rngs=rngs)
                               for _ in ss.token_layers])
    frozen = _FrozenTeacher(net, projectors, structural)
    frozen.eval()
    teacher_precision(frozen, ss.teacher_dtype)
    if ss.teacher_dtype != "auto":
        desc += f" ({ss.teacher_dtype})"
    graphdef, state = nnx.split(frozen)
    return Teacher(graphdef, state, ss.teacher_type, desc, depth=int(depth), dim=int(dim),
                   input=TeacherInput(tuple(mean), tuple(std), int(size), channels))


class SelfSupervisedDistillation(Task):
    """CE + λ_tok·L_tok + λ_rel(epoch)·L_rel with a frozen teacher (see the module docstring)."""

    @classmethod
    def selected(cls, cfg) -> bool:
        return bool(cfg.ss_distillation.enabled)

    @classmethod
    def prepare_config(cls, cfg):
        """Token distillation never trains head_dist: predict with the class head (the original averaged the
        untrained head in). The resolved config.json records the choice."""
        if cfg.vit.inference_mode == "cls":
            return cfg, []
        cfg = type(cfg)(cfg.to_dict())
        cfg.vit.inference_mode = "cls"
        return cfg, ["token distillation does not train the dist head; inference uses the class head "
                     "(vit.inference_mode = 'cls')"]

    @classmethod
    def load_teacher(cls, cfg, data) -> Teacher:
        return load_ss_teacher(cfg, data)

    @classmethod
    def build(cls, cfg, teacher: Teacher) -> SelfSupervisedDistillation:
        return cls(cfg, teacher)

    def __init__(self, cfg, teacher: Teacher):
        self.cfg, self.teacher = cfg, teacher
        ss = cfg.ss_distillation
        self.layers = tuple(int(i) for i in ss.token_layers)
        self.teacher_layers = tuple(sorted(set(self.layers) | {teacher.depth - 1}))
        self.label_smoothing = cfg.training.label_smoothing
        self.data_stats = None  # set by the trainer through bind_data (dataset mean/std of the student's input)

    def bind_data(self, mean, std):
        self.data_stats = (jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))
        return self

    def trainable(self, model, rngs: nnx.Rngs) -> SSStudent:
        ss = self.cfg.ss_distillation
        d_s, d_t = self.cfg.vit.embed_dim, self.teacher.dim
        head = lambda d: losses.ProjectionHead(d, ss.projection_hidden_dim, ss.projection_dim, rngs=rngs)  # noqa
        s_proj = nnx.List([head(d_s) for _ in self.layers])
        t_proj = nnx.List([head(d_t) for _ in self.layers]) if ss.teacher_projector == "trainable" else None
        if ss.teacher_projector == "identity" and d_s != d_t:
            raise ConfigError(f"config field 'ss_distillation.teacher_projector' = 'identity' needs equal widths, but "
                              f"the student has {d_s} and the teacher {d_t}: use 'trainable' or 'frozen'")
        if ss.teacher_projector == "identity":
            s_proj = None
        struct_s = struct_t = None
        if _structural(ss):  # made after L_tok's heads, so that their initial values do not depend on this
            struct_s = nnx.List([head(d_s) for _ in self.layers])
            if ss.structural_teacher_projector == "trainable":
                struct_t = nnx.List([head(d_t) for _ in self.layers])
        return SSStudent(model, s_proj, t_proj, struct_s, struct_t)

    def teacher_input(self, image):
        """(B,H,W,C) normalised student view -> (B,S,S,C_t) the teacher's input (grey repeated to RGB for a
        3-channel teacher: DINOv2, or a jaxkd ViT trained on RGB)."""
        mean, std = self.data_stats
        raw = image.astype(jnp.float32) * std + mean
        seen = self.teacher.input
        if raw.shape[-1] == 1 and seen.channels == 3:
            raw = jnp.repeat(raw, 3, axis=-1)
        x = (raw - jnp.asarray(seen.mean, jnp.float32)) / jnp.asarray(seen.std, jnp.float32)
        s = seen.size
        return resize.resize_bilinear(x, (s, s)) if x.shape[1:3] != (s, s) else x

    def teacher_tokens(self, batch, aux):
        """({block: tokens}, the frozen teacher, its token grid): patch tokens (B, N_t, D_t) after the teacher's
        final LN, or with use_cls_only its class tokens (B, 1, D_t) (grid None)."""
        frozen = nnx.merge(self.teacher.graphdef, aux)
        x = self.teacher_input(batch.get("teacher_image", batch["image"]))
        cls_only = self.cfg.ss_distillation.use_cls_only
        if self.teacher.kind == "dinov2":
            outs = frozen.net.get_intermediate_layers(x, list(self.teacher_layers), norm=True,
                                                      return_class_token=cls_only)
            outs = [c[:, None] for _, c in outs] if cls_only else outs
            grid = (x.shape[1] // frozen.net.patch_size, x.shape[2] // frozen.net.patch_size)
        else:
            heads = frozen.net.forward_heads(x, token_layers=self.teacher_layers)
            p = frozen.net.num_prefix_tokens
            outs = [frozen.net.norm(b)[:, :1] if cls_only else frozen.net.norm(b)[:, p:] for b in heads["blocks"]]
            grid = frozen.net.grid_size
        by_layer = dict(zip(self.teacher_layers, (jax.lax.stop_gradient(o.astype(jnp.float32)) for o in outs)))
        return by_layer, frozen, None if cls_only else grid

    def __call__(self, student: SSStudent, batch, epoch, aux):
        ss = self.cfg.ss_distillation
        model = student.model
        out = model.forward_heads(batch["image"], token_layers=self.layers)
        p = model.num_prefix_tokens
        tokens = slice(0, 1) if ss.use_cls_only else slice(p, None)  # the class token, or the patch tokens
        raw_layers = [b[:, tokens] for b in out["blocks"]]
        s_layers = raw_layers
        if ss.projector_warmup_epochs > 0:  # projectors align first: no token-loss gradient into the backbone yet
            gate = (epoch >= ss.projector_warmup_epochs).astype(jnp.float32)
            s_layers = [jax.lax.stop_gradient(t) + gate * (t - jax.lax.stop_gradient(t)) for t in s_layers]
        t_by_layer, frozen, t_grid = self.teacher_tokens(batch, aux)
        t_layers = [t_by_layer[i] for i in self.layers]
        s_grid = None if ss.use_cls_only else model.grid_size
        mode = ss.teacher_projector
        t_proj = student.teacher_projectors if mode == "trainable" else frozen.projectors
        loss, parts = losses.ss_distillation_loss(
            out["cls"], batch.get("target", batch["label"]), s_layers, t_layers,
            out["tokens"][:, tokens], t_by_layer[self.teacher.depth - 1],
            None if student.student_projectors is None else list(student.student_projectors),
            None if t_proj is None else list(t_proj), epoch=epoch.astype(jnp.float32),
            lambda_tok=ss.lambda_tok, lambda_rel=ss.lambda_rel, rel_warmup_epochs=ss.rel_warmup_epochs,
            label_smoothing=self.label_smoothing, token_loss_type=ss.token_loss_type,
            teacher_mode="frozen" if mode == "frozen" else mode, correlation_tau=ss.correlation_temperature,
            pooled=ss.use_pooled_correlation, correlation_kind=ss.correlation_loss_type,
            full_reduction=ss.correlation_full_reduction, student_grid=s_grid, teacher_grid=t_grid)
        if _structural(ss):
            if t_grid is not None:  # the teacher's patch tokens on the student's grid (as ss_distillation_loss does)
                t_layers = [losses.resize_tokens(t, s_grid, t_grid) for t in t_layers]
            smode = ss.structural_teacher_projector
            st_proj = {"identity": None, "frozen": frozen.structural_projectors,
                       "trainable": student.structural_teacher_projectors}[smode]
            extra, sparts = losses.structural_distillation_loss(
                raw_layers, t_layers, list(student.structural_student_projectors),
                None if st_proj is None else list(st_proj), epoch=epoch.astype(jnp.float32),
                use_cka=ss.use_cka_loss, use_gram=ss.use_gram_loss, lambda_cka=ss.lambda_cka,
                lambda_gram=ss.lambda_gram, cka_warmup_epochs=ss.cka_warmup_epochs,
                cka_kernel_type=ss.cka_kernel_type, teacher_mode=smode, weighting=ss.structural_weights,
                rbf_bandwidth=ss.cka_rbf_bandwidth, gram_norm=ss.gram_norm)
            loss, parts = loss + extra, {**parts, **sparts}
        return loss, {"accuracy": accuracy(out["cls"], batch["label"]), **parts}

    def student(self, trainable: SSStudent) -> nnx.Module:
        return trainable.model

    def inference_logits(self, trainable: SSStudent, image):
        """The class head (the dist head is untrained in this mode)."""
        return trainable.model.forward_heads(image)["cls"]
