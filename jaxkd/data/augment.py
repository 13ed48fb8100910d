"""Training / evaluation image transforms of SPEC §5 as jitted, vmapped JAX functions (one PRNG key per batch).

Per-sample pipeline, in the order torchvision applies the peer's transforms (each step only when enabled):
  random_crop (zero pad + crop) -> random_flip -> random_rotation (nearest, fill 0) -> random_affine (integer
  translation) -> color_jitter (torchvision's random order of brightness/contrast/saturation/hue) -> auto_augment ->
  randaugment -> ToTensor + Normalize -> cutout (on the normalised image, as the peer).
The uint8 ops run on uint8-valued float32 with Pillow's rounding (see :mod:`jaxkd.data.image_ops`), so they match
torchvision's PIL backend pixel for pixel (a random-angle rotation builds its matrix in float32: a source position
within ~1e-6 px of a pixel boundary may round the other way). MixUp / CutMix act on the normalised batch:
:func:`make_mix` (from :mod:`jaxkd.data.augment_mix`).

Randomness: ``sample_params(spec, key, H, W)`` makes all draws of one sample (as torchvision draws them) from one
``jax.random.uniform`` call; ``apply_augment(spec, params, img)`` is pure. The transform splits the batch key into
one key per sample and vmaps both.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxkd.config import schema as _schema
from jaxkd.config.schema import PEER_PIPELINES, apply_peer_pipeline  # noqa: F401  (re-export)
from jaxkd.data import autoaugment as aa
from jaxkd.data import image_ops as ops
from jaxkd.data.augment_mix import cutout_box, make_mix, mix_batch  # noqa: F401  (re-export)
from jaxkd.data.spec import AugmentSpec, MixSpec  # noqa: F401  (re-export)

Array = jax.Array
_IMAGE_OPS = _schema._IMAGE_OPS  # the per-image ops apply_peer_pipeline switches (tests read them here)

__all__ = [
    "make_train_transform", "make_eval_transform", "make_mix", "mix_batch", "PEER_PIPELINES", "apply_peer_pipeline",
    "AugmentSpec", "MixSpec", "sample_params", "apply_augment", "apply_color_jitter",
    "crop_from_uniform", "flip_from_uniform", "rotation_from_uniform", "translate_from_uniform",
    "color_jitter_from_uniform",
]

# ----------------------------------------------------------------------------------------------- draws
# Parameter draws as torchvision makes them, per sample. Each is a pure function of uniforms u ~ U[0, 1) (so a
# whole sample needs a single jax.random.uniform call: one threefry to compile).


def crop_from_uniform(u: Array, padding: int) -> Array:
    """RandomCrop(size=(H, W), padding) offsets int32[2] = (top, left), each uniform in {0, ..., 2 * padding}."""
    return aa.uniform_index(u[:2], 2 * int(padding) + 1)


def flip_from_uniform(u: Array, p: float = 0.5) -> Array:
    """RandomHorizontalFlip(p): flip (bool) when torch.rand(1) < p."""
    return u[0] < p


def rotation_from_uniform(u: Array, degrees: float) -> Array:
    """RandomRotation(degrees): angle float32 uniform in [-degrees, degrees]."""
    return jnp.float32(-degrees) + jnp.float32(2 * degrees) * u[0]


def translate_from_uniform(u: Array, translate: float, height: int, width: int) -> Array:
    """RandomAffine(degrees=0, translate=(t, t)) shift int32[2] = (tx, ty): round(uniform(-t W, t W)),
    round(uniform(-t H, t H)) (round half to even, as Python's round)."""
    span = jnp.array([translate * width, translate * height], jnp.float32)
    return jnp.round(-span + 2 * span * u[:2]).astype(jnp.int32)


def color_jitter_from_uniform(u: Array, brightness: float, contrast: float, saturation: float,
                              hue: float) -> dict[str, Array]:
    """ColorJitter draws from 8 uniforms: ``order`` a uniformly random permutation of the 4 ops (torch.randperm(4);
    here the argsort of 4 uniforms) and ``factors`` float32[4]: brightness / contrast / saturation uniform in
    [max(0, 1 - v), 1 + v], hue uniform in [-hue, hue]."""
    lo = jnp.array([max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation), -hue], jnp.float32)
    hi = jnp.array([1 + brightness, 1 + contrast, 1 + saturation, hue], jnp.float32)
    return {"order": jnp.argsort(u[:4]).astype(jnp.int32), "factors": lo + (hi - lo) * u[4:8]}


def _jitter_blend(img: Array, op: Array, factor: Array) -> Array:
    """Brightness (op 0), Contrast (1) or Saturation (2) of ColorJitter as ONE blend whose base is selected:
    0, the mean of the grey image, or the grey image (the three ops are ``blend(base, img, factor)``)."""
    h, w, _ = img.shape
    gray_i = ops.grayscale(img)
    n = h * w
    mean = ((2 * jnp.sum(gray_i) + n) // (2 * n)).astype(jnp.float32)
    base = jnp.where(op == 0, jnp.float32(0.0), jnp.where(op == 1, mean, gray_i.astype(jnp.float32)))
    return ops.blend(base, img, factor)


def apply_color_jitter(img: Array, params: dict[str, Array], enabled: tuple[bool, ...] = (True,) * 4) -> Array:
    """torchvision ColorJitter given its draws: ops (0 brightness, 1 contrast, 2 saturation, 3 hue) applied in
    ``params['order']``; an op with ``enabled[i]`` False (its jitter set to 0) is skipped, as torchvision does.

    Without a per-sample switch (under ``vmap`` it evaluates all four ops at each of the four positions): the
    three blend ops are one blend with a selected base, and hue, the costly one, runs once: blend slots at the
    positions before hue's, hue, then blend slots at the positions after it (3 + 3 cheap blends, one hue)."""
    f = params["factors"]
    order = params["order"]
    on = jnp.asarray(enabled[:3] + (False,), bool)  # blend ops that run (hue handled apart)
    pos_hue = jnp.argmax(order == 3)

    def slot(im, i, active):
        op = order[i]
        run = active & on[op]
        return jnp.where(run, _jitter_blend(im, op, f[op]), im)

    # fori_loop bodies keep each slot's image materialised: unrolled, XLA's fusion recomputes the chain of
    # selects inside every consumer (the mean's reduction and the blend), multiplying the cost.
    any_blend = any(enabled[:3])
    if any_blend:
        img = jax.lax.fori_loop(0, 3, lambda i, im: slot(im, i, i < pos_hue), img)
    if enabled[3]:
        img = ops.adjust_hue(img, f[3])
    if any_blend:
        img = jax.lax.fori_loop(1, 4, lambda i, im: slot(im, i, i > pos_hue), img)
    return img


# ----------------------------------------------------------------------------------------------- transforms


def sample_params(spec: AugmentSpec, key: Array, height: int, width: int) -> dict[str, Any]:
    """All random draws of one sample's pipeline (only for enabled ops), from one ``jax.random.uniform`` call:
    crop (top, left), flip, angle, translate (tx, ty), jitter, autoaug, randaug, cutout (cy, cx). vmap over keys."""
    sizes = {"crop": 2 if spec.crop is not None else 0, "flip": int(spec.flip),
             "angle": 1 if spec.rotation is not None else 0, "translate": 2 if spec.translate is not None else 0,
             "jitter": 8 if spec.jitter is not None else 0,
             "autoaug": aa.AUTOAUGMENT_NUM_UNIFORMS if spec.policy is not None else 0,
             "randaug": aa.randaugment_num_uniforms(spec.randaug[0]) if spec.randaug is not None else 0,
             "cutout": 2 if spec.cutout is not None else 0}
    u_all = jax.random.uniform(key, (max(1, sum(sizes.values())),))
    u, start = {}, 0
    for name, n in sizes.items():
        u[name], start = u_all[start:start + n], start + n
    p: dict[str, Any] = {}
    if spec.crop is not None:
        p["crop"] = crop_from_uniform(u["crop"], spec.crop)
    if spec.flip:
        p["flip"] = flip_from_uniform(u["flip"])
    if spec.rotation is not None:
        p["angle"] = rotation_from_uniform(u["angle"], spec.rotation)
    if spec.translate is not None:
        p["translate"] = translate_from_uniform(u["translate"], spec.translate, height, width)
    if spec.jitter is not None:
        p["jitter"] = color_jitter_from_uniform(u["jitter"], *spec.jitter)
    if spec.policy is not None:
        p["autoaug"] = aa.autoaugment_from_uniform(u["autoaug"], spec.policy)
    if spec.randaug is not None:
        p["randaug"] = aa.randaugment_from_uniform(u["randaug"], spec.randaug[0])
    if spec.cutout is not None:
        p["cutout"] = jnp.stack([aa.uniform_index(u["cutout"][0], height), aa.uniform_index(u["cutout"][1], width)])
    return p


def apply_augment(spec: AugmentSpec, params: dict[str, Any], img: Array) -> Array:
    """The uint8-domain part of the pipeline (everything before Normalize) on one uint8-valued float32 image.
    AutoAugment's and RandAugment's op stages run in one loop (one compiled op bank)."""
    if spec.crop is not None:
        img = ops.pad_crop(img, params["crop"][0], params["crop"][1], spec.crop)
    if spec.flip:
        img = jnp.where(params["flip"], ops.hflip(img), img)
    if spec.rotation is not None:
        img = ops.rotate(img, params["angle"])
    if spec.translate is not None:
        img = ops.translate(img, params["translate"][0], params["translate"][1])
    if spec.jitter is not None:
        img = apply_color_jitter(img, params["jitter"], tuple(v > 0 for v in spec.jitter))
    stages, bin_sets = [], []
    if spec.policy is not None:
        stages.append(aa.autoaugment_stages(params["autoaug"], spec.policy, table_set=len(bin_sets)))
        bin_sets.append(aa.AUTOAUGMENT_BINS)
    if spec.randaug is not None and spec.randaug[0] > 0:
        stages.append(aa.randaugment_stages(params["randaug"], spec.randaug[1], table_set=len(bin_sets)))
        bin_sets.append(aa.RANDAUGMENT_BINS)
    if stages:
        program = {k: jnp.concatenate([st[k] for st in stages]) for k in stages[0]}
        img = aa.apply_stages(img, program, tuple(bin_sets))
    return img


def _check_batch(images: Array) -> None:
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images (B, H, W, C) with C in (1, 3), got shape {tuple(images.shape)}")
    if images.dtype != jnp.uint8:
        raise ValueError(f"expected uint8 images (0..255), got {images.dtype}; pass the raw uint8 pixels")


def _check_norm(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) not in (1, 3) or len(std) not in (1, 3) or min(std, default=0.0) <= 0:
        raise ValueError(f"normalization needs 1 or 3 means and stds (std > 0), got mean={mean}, std={std}; "
                         "set data.normalization.mean/std")
    return mean, std


def make_train_transform(spec: AugmentSpec, *, mean, std):
    """Build the jitted training transform of ``spec`` (``AugmentSpec.from_config(config.data.augmentation)``).

    Returns ``f(key, images uint8 (B, H, W, C)) -> float32 (B, H, W, C)``: per sample (one key each, split from
    ``key``) the enabled uint8 ops, then (x / 255 - mean) / std (mean/std of length 1 or C), then Cutout.
    """
    mean, std = _check_norm(mean, std)

    def one(key: Array, img: Array) -> Array:
        h, w, _ = img.shape
        params = sample_params(spec, key, h, w)
        x = ops.normalize(apply_augment(spec, params, img.astype(jnp.float32)), mean, std)
        if spec.cutout is not None:
            y1, y2, x1, x2 = cutout_box(params["cutout"], h, w, spec.cutout)
            x = ops.erase_box(x, y1, y2, x1, x2)
        return x

    @jax.jit
    def transform(key: Array, images: Array) -> Array:
        _check_batch(images)
        return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)

    return transform


def make_eval_transform(*, mean, std):
    """Jitted ``f(images uint8 (B, H, W, C)) -> float32 (B, H, W, C)``: ToTensor + Normalize only."""
    mean, std = _check_norm(mean, std)

    @jax.jit
    def transform(images: Array) -> Array:
        _check_batch(images)
        return ops.normalize(images, mean, std)

    return transform
