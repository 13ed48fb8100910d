"""AutoAugment (torchvision's policies) and RandAugment (torchvision's op set and magnitude bins) per image in JAX.

Ops and magnitudes follow ``torchvision.transforms.autoaugment`` with its PIL backend and default arguments
(interpolation NEAREST, fill 0): magnitude bins are ``torch.linspace`` values in float32, geometric ops are
``F.affine`` / ``F.rotate``, colour ops ``ImageEnhance`` / ``ImageOps`` (see :mod:`jaxkd.data.image_ops`). Because
every magnitude is one of a few static bins, the geometric matrices are built on the host in float64 (as
torchvision + Pillow do) and turned into Pillow's fixed-point coefficients: results match PIL pixel for pixel.

Images: one (H, W, C) float32 image with values 0..255 (C = 1 behaves as PIL 'L'). Randomness is split into
``*_params(key)`` (the draws, as torchvision makes them) and ``apply_*(img, params)`` (pure); vmap both.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.data import image_ops as ops

Array = jax.Array

OP_NAMES = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
            "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
RANDAUGMENT_OPS = OP_NAMES[:14]  # torchvision RandAugment's augmentation space, in its order (no Invert)
SIGNED_OPS = frozenset(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
                        "Sharpness"))
_COLOUR_BRANCH = {"Brightness": 1, "Color": 2, "Contrast": 3, "Sharpness": 4, "Posterize": 5, "Solarize": 6,
                  "AutoContrast": 7, "Equalize": 8, "Invert": 9}  # everything else: branch 0 (no colour change)

# torchvision AutoAugmentPolicy tables: ((op, probability, magnitude bin or None), (op, probability, bin)).
POLICIES = {
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)), (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)), (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)), (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)), (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)), (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)), (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)), (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)), (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)), (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)), (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)), (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)), (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)), (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)), (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)), (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
}
AUTOAUGMENT_BINS = 10  # torchvision AutoAugment uses 10 magnitude bins
RANDAUGMENT_BINS = 31  # torchvision RandAugment default num_magnitude_bins


def torch_linspace32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` in float32 as torch's CPU kernel computes it on FMA hardware:
    step = (end - start) / (steps - 1) in float32, element i = fma(step, i, start) for i < steps // 2, else
    fma(-step, steps - 1 - i, end), each rounded once (the tests compare with torch.linspace)."""
    s, e = np.float32(start), np.float32(end)
    step = np.float64((e - s) / np.float32(steps - 1))
    vals = [np.float64(s) + step * i if i < steps // 2 else np.float64(e) - step * (steps - 1 - i)
            for i in range(steps)]
    return np.array(vals, np.float64).astype(np.float32)


def magnitude_bins(op: str, num_bins: int, height: int, width: int) -> np.ndarray:
    """torchvision ``_augmentation_space(num_bins, (height, width))[op][0]``: float32 bins (int32 for Posterize);
    a (1,)-array of zeros for magnitude-free ops."""
    lin = {"ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3), "TranslateX": (0.0, 150.0 / 331.0 * width),
           "TranslateY": (0.0, 150.0 / 331.0 * height), "Rotate": (0.0, 30.0), "Brightness": (0.0, 0.9),
           "Color": (0.0, 0.9), "Contrast": (0.0, 0.9), "Sharpness": (0.0, 0.9), "Solarize": (255.0, 0.0)}
    if op in lin:
        return torch_linspace32(*lin[op], num_bins)
    if op == "Posterize":
        return (8 - np.round(np.arange(num_bins, dtype=np.float32) / np.float32((num_bins - 1) / 4))).astype(np.int32)
    if op in OP_NAMES:
        return np.zeros((1,), np.float32)
    raise ValueError(f"unknown augmentation op {op!r}; choose from {OP_NAMES}")


def _geometry_matrix(op: str, magnitude: float, height: int, width: int) -> list[float] | None:
    """Host float64 inverse matrix torchvision's ``_apply_op`` hands to PIL for a signed magnitude (None: no warp)."""
    if op in ("ShearX", "ShearY"):
        deg = math.degrees(math.atan(magnitude))
        shear = [deg, 0.0] if op == "ShearX" else [0.0, deg]
        return ops.tv_affine_matrix([0, 0], 0.0, [0, 0], 1.0, shear)
    if op in ("TranslateX", "TranslateY"):
        t = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return ops.tv_affine_matrix([width * 0.5, height * 0.5], 0.0, t, 1.0, [0.0, 0.0])
    if op == "Rotate":
        return ops.pil_rotate_matrix(magnitude, width, height)
    return None


class OpTables(NamedTuple):
    """Per (op, bin, negate) parameters of every op, numpy: fixed int32[n_ops, n_bins, 2, 6] (identity for
    non-geometric ops), factor float32[n_ops, n_bins, 2] (1 +/- magnitude, as PIL's float alpha), bits
    int32[n_bins] (Posterize), threshold float32[n_bins] (Solarize), branch int32[n_ops] (colour branch)."""

    fixed: np.ndarray
    factor: np.ndarray
    bits: np.ndarray
    threshold: np.ndarray
    branch: np.ndarray


@functools.cache
def op_tables(num_bins: int, height: int, width: int) -> OpTables:
    """Build :class:`OpTables` for images of (height, width) and ``num_bins`` magnitude bins (host, cached)."""
    n = len(OP_NAMES)
    fixed = np.broadcast_to(ops.IDENTITY_FIXED, (n, num_bins, 2, 6)).copy()
    factor = np.ones((n, num_bins, 2), np.float32)
    for k, op in enumerate(OP_NAMES):
        if op not in SIGNED_OPS:
            continue
        mags = magnitude_bins(op, num_bins, height, width)
        for b in range(num_bins):
            for neg in (0, 1):
                m = -float(mags[b]) if neg else float(mags[b])
                mat = _geometry_matrix(op, m, height, width)
                if mat is not None:
                    fixed[k, b, neg] = ops.pil_fixed_point(mat)
                else:
                    factor[k, b, neg] = np.float32(1.0 + m)
    bits = magnitude_bins("Posterize", num_bins, height, width)
    threshold = magnitude_bins("Solarize", num_bins, height, width)
    branch = np.array([_COLOUR_BRANCH.get(op, 0) for op in OP_NAMES], np.int32)
    return OpTables(fixed, factor, bits, threshold, branch)


@functools.cache
def stacked_tables(bin_sets: tuple[int, ...], height: int, width: int) -> OpTables:
    """:class:`OpTables` of several bin counts stacked on a leading 'set' axis (bins zero-padded to the largest),
    so that AutoAugment (10 bins) and RandAugment (31 bins) stages run in one loop with one compiled body."""
    tabs = [op_tables(n, height, width) for n in bin_sets]
    nb = max(bin_sets)

    def pad(a, axis):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, nb - a.shape[axis])
        return np.pad(a, widths, mode="edge")

    return OpTables(np.stack([pad(t.fixed, 1) for t in tabs]), np.stack([pad(t.factor, 1) for t in tabs]),
                    np.stack([pad(t.bits, 0) for t in tabs]), np.stack([pad(t.threshold, 0) for t in tabs]),
                    tabs[0].branch)


def colour_op(img: Array, branch: Array, factor: Array, bits: Array, threshold: Array) -> Array:
    """The colour op of a stage (``branch`` as in ``_COLOUR_BRANCH``, 0 = none), without a per-sample switch: under
    ``vmap`` a ``lax.switch`` becomes a select that evaluates every branch for every sample. Here the ten ops are two
    kinds, each evaluated once: a blend ``blend(base, img, factor)`` whose base is 0 (Brightness), the grey image
    (Color), its mean (Contrast) or SMOOTH(img) (Sharpness); and a point op, one table (C, 256) per image applied
    with one gather: identity, Posterize, Solarize, AutoContrast, Equalize or Invert (the tables are built on 256
    levels with the very functions of :mod:`jaxkd.data.image_ops`, so the result is the same bit for bit).
    (H, W, C) -> (H, W, C)."""
    h, w, c = img.shape
    gray_i = ops.grayscale(img)
    n = h * w
    mean = ((2 * jnp.sum(gray_i) + n) // (2 * n)).astype(jnp.float32)
    base = jnp.where(branch == 1, jnp.float32(0.0),
                     jnp.where(branch == 2, gray_i.astype(jnp.float32),
                               jnp.where(branch == 3, mean, ops.smooth(img))))
    blended = ops.blend(base, img, factor)
    levels = jnp.asarray(ops.LEVELS)
    lf = levels.astype(jnp.float32)
    point = jnp.stack([jnp.broadcast_to(t.astype(jnp.int32), (c, 256)) for t in (
        levels, ops.posterize(lf, bits), ops.solarize(lf, threshold), ops.autocontrast_lut(img),
        ops.equalize_lut(img), ops.invert(lf))])  # (6, C, 256) for branches 0, 5, 6, 7, 8, 9
    slot = jnp.where(branch >= 5, branch - 4, 0)
    mapped = ops.apply_lut(img, point[slot])
    return jnp.where((branch >= 1) & (branch <= 4), blended, mapped)


def _apply_stage(img: Array, t: OpTables, table_set: Array, op: Array, b: Array, neg: Array) -> Array:
    """One op from the stacked tables ``t`` (numpy) at (table_set, op, bin, negate); all indices may be traced.
    Geometric ops are the affine warp (identity coefficients for the others), colour ops :func:`colour_op`."""
    neg = jnp.asarray(neg, jnp.int32)
    img = ops.affine_nearest_fixed(img, jnp.asarray(t.fixed)[table_set, op, b, neg])
    factor = jnp.asarray(t.factor)[table_set, op, b, neg]
    bits = jnp.asarray(t.bits)[table_set, b]
    threshold = jnp.asarray(t.threshold)[table_set, b]
    return colour_op(img, jnp.asarray(t.branch)[op], factor, bits, threshold)


def apply_stages(img: Array, stages: dict[str, Array], bin_sets: tuple[int, ...]) -> Array:
    """Run a program of S op stages in order with one ``fori_loop`` (one compiled body): ``stages`` holds int32[S]
    arrays ``set`` (index into ``bin_sets``), ``op`` (index into :data:`OP_NAMES`), ``bin`` and bool ``negate``."""
    ops.check_image(img)
    h, w, _ = img.shape
    t = stacked_tables(tuple(bin_sets), h, w)
    n = stages["op"].shape[0]
    if n == 0:
        return img

    def body(i, im):
        return _apply_stage(im, t, stages["set"][i], stages["op"][i], stages["bin"][i], stages["negate"][i])

    return jax.lax.fori_loop(0, n, body, img)


def apply_op(img: Array, op: Array, magnitude_bin: Array, negate: Array, num_bins: int) -> Array:
    """Apply op ``OP_NAMES[op]`` at ``magnitude_bin`` (negated when ``negate`` and the op is signed), exactly as
    torchvision's ``_apply_op`` on a PIL image. All arguments may be traced. (H, W, C) -> (H, W, C)."""
    ops.check_image(img)
    h, w, _ = img.shape
    return _apply_stage(img, stacked_tables((num_bins,), h, w), 0, jnp.asarray(op, jnp.int32),
                        jnp.asarray(magnitude_bin, jnp.int32), negate)


def op_index(name: str) -> int:
    """Index of an op name in :data:`OP_NAMES`."""
    if name not in OP_NAMES:
        raise ValueError(f"unknown augmentation op {name!r}; choose from {OP_NAMES}")
    return OP_NAMES.index(name)


def uniform_index(u: Array, n: int) -> Array:
    """Uniform integer in {0..n-1} from u ~ U[0, 1) (int32, same shape)."""
    return jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------- RandAugment


def randaugment_num_uniforms(num_ops: int) -> int:
    return 2 * num_ops


def randaugment_from_uniform(u: Array, num_ops: int) -> dict[str, Array]:
    """RandAugment draws from ``2 * num_ops`` uniforms: ``op`` int32[num_ops] uniform over the 14 ops of
    :data:`RANDAUGMENT_OPS` (torch.randint(14)) and ``negate`` bool[num_ops] with probability 1/2."""
    return {"op": uniform_index(u[:num_ops], len(RANDAUGMENT_OPS)), "negate": u[num_ops:2 * num_ops] < 0.5}


def randaugment_params(key: Array, num_ops: int) -> dict[str, Array]:
    """RandAugment draws from a key (see :func:`randaugment_from_uniform`)."""
    return randaugment_from_uniform(jax.random.uniform(key, (randaugment_num_uniforms(num_ops),)), num_ops)


def randaugment_stages(params: dict[str, Array], magnitude: int, table_set: int = 0) -> dict[str, Array]:
    """The op stages of RandAugment at magnitude bin ``magnitude``."""
    n = params["op"].shape[0]
    return {"set": jnp.full((n,), table_set, jnp.int32), "op": params["op"].astype(jnp.int32),
            "bin": jnp.full((n,), magnitude, jnp.int32), "negate": params["negate"]}


def apply_randaugment(img: Array, params: dict[str, Array], magnitude: int,
                      num_bins: int = RANDAUGMENT_BINS) -> Array:
    """torchvision ``RandAugment(num_ops, magnitude, num_bins)`` given its draws: the ops applied in sequence, each
    at magnitude bin ``magnitude``. (H, W, C) -> (H, W, C)."""
    if not 0 <= int(magnitude) < num_bins:
        raise ValueError(f"randaugment magnitude must be in [0, {num_bins - 1}], got {magnitude}")
    return apply_stages(img, randaugment_stages(params, int(magnitude)), (num_bins,))


# ----------------------------------------------------------------------------------------------- AutoAugment


def _policy_arrays(policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if policy not in POLICIES:
        raise ValueError(f"unknown auto_augment policy {policy!r}; choose from {sorted(POLICIES)}")
    table = POLICIES[policy]
    op = np.array([[op_index(s[0]) for s in sub] for sub in table], np.int32)
    prob = np.array([[s[1] for s in sub] for sub in table], np.float32)
    mag = np.array([[s[2] or 0 for s in sub] for sub in table], np.int32)
    return op, prob, mag


AUTOAUGMENT_NUM_UNIFORMS = 5


def autoaugment_from_uniform(u: Array, policy: str = "cifar10") -> dict[str, Array]:
    """AutoAugment draws (torchvision ``get_params``) from 5 uniforms: ``policy_id`` uniform over the
    sub-policies, ``probs`` float32[2] uniform [0, 1) and ``negate`` bool[2] with probability 1/2."""
    n = len(_policy_arrays(policy)[0])
    return {"policy_id": uniform_index(u[0], n), "probs": u[1:3].astype(jnp.float32), "negate": u[3:5] < 0.5}


def autoaugment_params(key: Array, policy: str = "cifar10") -> dict[str, Array]:
    """AutoAugment draws from a key (see :func:`autoaugment_from_uniform`)."""
    return autoaugment_from_uniform(jax.random.uniform(key, (AUTOAUGMENT_NUM_UNIFORMS,)), policy)


def autoaugment_stages(params: dict[str, Array], policy: str = "cifar10", table_set: int = 0) -> dict[str, Array]:
    """The two op stages of the drawn sub-policy; op i becomes Identity unless ``probs[i] <= p_i`` (float32)."""
    op_t, prob_t, mag_t = (jnp.asarray(a) for a in _policy_arrays(policy))
    pid = params["policy_id"]
    op = jnp.where(params["probs"] <= prob_t[pid], op_t[pid], 0)
    return {"set": jnp.full((2,), table_set, jnp.int32), "op": op, "bin": mag_t[pid], "negate": params["negate"]}


def apply_autoaugment(img: Array, params: dict[str, Array], policy: str = "cifar10") -> Array:
    """torchvision ``AutoAugment(policy)`` given its draws: sub-policy ``policy_id``; its i-th op is applied when
    ``probs[i] <= p_i``, at its magnitude bin of 10. (H, W, C) -> (H, W, C)."""
    return apply_stages(img, autoaugment_stages(params, policy), (AUTOAUGMENT_BINS,))
