"""Per-image augmentation primitives with torchvision's PIL-backend semantics, as pure JAX functions.

Every op takes ONE image ``img`` of shape (H, W, C), C in {1, 3}, dtype float32 holding integer values 0..255
(a uint8 image in float32; C=1 behaves like PIL mode 'L', C=3 like 'RGB') plus explicit parameters, and returns an
image of the same shape and dtype. Batch them with ``jax.vmap``; all shapes are static, so everything jit-compiles.

Rounding follows Pillow's C code (libImaging) so that results are PIL-comparable pixel for pixel:
  * nearest-neighbour affine warps use Pillow's 16.16 fixed-point walk (``affine_fixed`` in Geometry.c);
  * blends (brightness / contrast / colour / sharpness) truncate ``in1 + alpha * (in2 - in1)`` in float32 (Blend.c);
  * the SMOOTH kernel of Sharpness is evaluated in Pillow's float32 summation order with borders copied (Filter.c);
    products are split (:func:`mul_rn`) so that XLA's multiply-add -> FMA fusion cannot change their rounding;
  * ToTensor + Normalize is a lookup in a host float32 table (XLA rewrites x / const as x * (1 / const));
  * RGB<->HSV (hue) uses a table of Pillow's float/double rgb2hsv hue and exact integer hsv2rgb (Convert.c);
  * AutoContrast reproduces Python's float64 ``int(ix * scale + offset)`` via a table of its off-by-one cases.
Host-side helpers (``pil_*``, ``tv_*``) build matrices in float64 with Python's ``math`` exactly as Pillow and
torchvision do, for static magnitudes; the traced variants compute the same in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_F32 = jnp.float32


def check_image(img: Array) -> None:
    """Raise ValueError unless ``img`` is one (H, W, C) image with C in {1, 3}."""
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected one image of shape (H, W, C) with C in (1, 3), got shape {tuple(img.shape)}; "
                         "vmap the op over the batch axis")


# ----------------------------------------------------------------------------------------------- geometry


def hflip(img: Array) -> Array:
    """Mirror left-right. (H, W, C) -> (H, W, C)."""
    return img[:, ::-1, :]


def pad_crop(img: Array, top: Array, left: Array, padding: int) -> Array:
    """torchvision RandomCrop(size=(H, W), padding) given its offsets: zero-pad by ``padding`` on every side, then
    crop the (H, W) window whose top-left corner is (top, left), 0 <= top, left <= 2 * padding. (H,W,C)->(H,W,C)."""
    check_image(img)
    p = int(padding)
    padded = jnp.pad(img, ((p, p), (p, p), (0, 0)))
    return jax.lax.dynamic_slice(padded, (jnp.asarray(top, jnp.int32), jnp.asarray(left, jnp.int32), 0), img.shape)


def pil_fixed_point(matrix: Sequence[float]) -> np.ndarray:
    """Host: Pillow's 16.16 fixed-point coefficients (int32[6]) of an inverse affine ``matrix`` (a..f, output pixel
    (x, y) samples input (a x + b y + c, d x + e y + f)), including its +0.5 pixel-centre offsets."""
    a = [float(v) for v in matrix]

    def fix(v: float) -> int:
        return int(math.floor(v * 65536.0 + 0.5))

    return np.array([fix(a[0]), fix(a[1]), fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
                     fix(a[3]), fix(a[4]), fix(a[5] + a[3] * 0.5 + a[4] * 0.5)], np.int32)


IDENTITY_FIXED = pil_fixed_point([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def affine_nearest_fixed(img: Array, fixed: Array) -> Array:
    """PIL ``Image.transform(AFFINE, NEAREST)`` with fill 0, given Pillow's fixed-point coefficients int32[6].

    Output pixel (y, x) reads input (yy >> 16, xx >> 16) with xx = f2 + y f1 + x f0, yy = f5 + y f4 + x f3 (the
    closed form of Pillow's incremental integer walk), or 0 outside the input. (H, W, C) -> (H, W, C).
    """
    check_image(img)
    h, w, c = img.shape
    f = jnp.asarray(fixed, jnp.int32)
    ys = jnp.arange(h, dtype=jnp.int32)[:, None]
    xs = jnp.arange(w, dtype=jnp.int32)[None, :]
    xin = jnp.right_shift(f[2] + ys * f[1] + xs * f[0], 16)
    yin = jnp.right_shift(f[5] + ys * f[4] + xs * f[3], 16)
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    # outside the input: index h * w, a zero pixel appended to the source, so the result is the gather itself
    # (XLA stores it; a select after it is fused, with the coordinate arithmetic, into every consumer)
    idx = jnp.where(valid, yin * w + xin, h * w)
    src = jnp.concatenate([img.reshape(h * w, c), jnp.zeros((1, c), img.dtype)])
    return src[idx]


def affine_bilinear(img: Array, matrix: Array) -> Array:
    """PIL ``Image.transform(AFFINE, BILINEAR)`` with fill 0 (Pillow's generic transform + bilinear_filter), given
    the inverse matrix float[6]; computed in float32 (Pillow uses double). (H, W, C) -> (H, W, C)."""
    check_image(img)
    h, w, c = img.shape
    a = jnp.asarray(matrix, _F32)
    xs = jnp.arange(w, dtype=_F32)[None, :] + 0.5
    ys = jnp.arange(h, dtype=_F32)[:, None] + 0.5
    xin = a[0] * xs + a[1] * ys + a[2]
    yin = a[3] * xs + a[4] * ys + a[5]
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xf, yf = xin - 0.5, yin - 0.5
    x0, y0 = jnp.floor(xf), jnp.floor(yf)
    dx, dy = (xf - x0)[..., None], (yf - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    xa, xb = jnp.clip(x0, 0, w - 1), jnp.clip(x0 + 1, 0, w - 1)
    ya, yb = jnp.clip(y0, 0, h - 1), jnp.clip(y0 + 1, 0, h - 1)
    v1 = img[ya, xa] + (img[ya, xb] - img[ya, xa]) * dx
    v2 = img[yb, xa] + (img[yb, xb] - img[yb, xa]) * dx
    v2 = jnp.where(((y0 + 1 >= 0) & (y0 + 1 < h))[..., None], v2, v1)
    v = jnp.trunc(v1 + (v2 - v1) * dy)
    return jnp.where(valid[..., None], v, jnp.zeros_like(v))


def pil_rotate_matrix(angle: float, width: int, height: int) -> list[float]:
    """Host: the inverse matrix of PIL ``Image.rotate(angle)`` (counter-clockwise degrees, centre (w/2, h/2),
    no expand), float64 exactly as Pillow computes it."""
    cx, cy = width / 2, height / 2
    t = -math.radians(angle)
    m = [round(math.cos(t), 15), round(math.sin(t), 15), 0.0, round(-math.sin(t), 15), round(math.cos(t), 15), 0.0]
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return m


def rotate_matrix(angle: Array, width: int, height: int) -> Array:
    """Traced float32 version of :func:`pil_rotate_matrix`: scalar angle (degrees) -> float32[6]."""
    cx, cy = width / 2, height / 2
    t = -jnp.asarray(angle, _F32) * _F32(math.pi / 180.0)
    c, s = jnp.cos(t), jnp.sin(t)
    return jnp.stack([c, s, c * -cx + s * -cy + cx, -s, c, -s * -cx + c * -cy + cy])


def rotate_fixed_point(angle: Array, width: int, height: int) -> Array:
    """Traced Pillow fixed-point coefficients int32[6] of ``Image.rotate(angle)``, evaluated in float32 in
    cancellation-free forms: 1 - cos = 2 sin^2(t/2), fix(cos) = 65536 + floor(0.5 - 65536 (1 - cos)),
    c2 = cx (1 - cos) - cy sin + (cos + sin)/2 (``pil_fixed_point(pil_rotate_matrix(...))`` in exact arithmetic;
    over 4000 random angles 2% have one coefficient off by 1/65536 px, which moved no pixel in the tests)."""
    cx, cy = width / 2, height / 2
    t = -jnp.asarray(angle, _F32) * _F32(math.pi / 180.0)
    c, s = jnp.cos(t), jnp.sin(t)
    one_minus_c = 2.0 * jnp.square(jnp.sin(0.5 * t))

    def fix(v):
        return jnp.floor(v * 65536.0 + 0.5).astype(jnp.int32)

    fix_c = 65536 + jnp.floor(0.5 - 65536.0 * one_minus_c).astype(jnp.int32)  # = fix(c), without c's rounding
    return jnp.stack([fix_c, fix(s), fix(cx * one_minus_c - cy * s + 0.5 * (c + s)),
                      fix(-s), fix_c, fix(cx * s + cy * one_minus_c + 0.5 * (c - s))])


def tv_affine_matrix(center: Sequence[float], angle: float, translate: Sequence[float], scale: float,
                     shear: Sequence[float]) -> list[float]:
    """Host: torchvision ``_get_inverse_affine_matrix`` (float64), the matrix its PIL backend hands to
    ``Image.transform``. ``center`` in pixels (torchvision passes (w/2, h/2) unless given), angles in degrees."""
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in [d, -b, 0.0, -c, a, 0.0]]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def rotate(img: Array, angle: Array, interpolation: str = "nearest") -> Array:
    """torchvision ``F.rotate(img, angle, interpolation, expand=False, fill=0)`` on PIL (= ``Image.rotate``) with a
    traced angle in degrees (counter-clockwise). The matrix is computed in float32, so a pixel whose source position
    lies within ~1e-6 of a pixel boundary may pick the neighbour PIL (float64) does not. (H,W,C) -> (H,W,C)."""
    check_image(img)
    h, w, _ = img.shape
    if interpolation == "nearest":
        return affine_nearest_fixed(img, rotate_fixed_point(angle, w, h))
    if interpolation == "bilinear":
        return affine_bilinear(img, rotate_matrix(angle, w, h))
    raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")


def translate(img: Array, tx: Array, ty: Array) -> Array:
    """torchvision ``F.affine(img, angle=0, translate=[tx, ty], scale=1, shear=0, fill=0)``: shift by integer
    pixels (right / down positive), zero fill. Exact. (H, W, C) -> (H, W, C)."""
    one = jnp.int32(65536)
    half = jnp.int32(32768)
    tx, ty = jnp.asarray(tx, jnp.int32), jnp.asarray(ty, jnp.int32)
    fixed = jnp.stack([one, jnp.int32(0), half - tx * one, jnp.int32(0), one, half - ty * one])
    return affine_nearest_fixed(img, fixed)


# ----------------------------------------------------------------------------------------------- colour


def grayscale(img: Array) -> Array:
    """PIL ``convert('L')``: ITU-R 601-2 luma in Pillow's fixed point, (R*19595 + G*38470 + B*7471 + 2^15) >> 16
    for C=3; identity for C=1. (H, W, C) float -> (H, W, 1) int32."""
    x = img.astype(jnp.int32)
    if img.shape[-1] == 1:
        return x
    luma = x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768
    return jnp.right_shift(luma, 16)[..., None]


def split_hi_lo(a):
    """Split float32 ``a`` into hi (low 9 mantissa bits cleared: 15 significant bits) and lo = a - hi (exact), so
    that hi * d and lo * d are exact for integers |d| <= 255. Works on numpy (host) and JAX arrays."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        a32 = np.asarray(a, np.float32)
        hi = (a32.view(np.int32) & np.int32(~0x1FF)).view(np.float32)
        return hi, a32 - hi
    a = jnp.asarray(a, _F32)
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(a, jnp.int32) & jnp.int32(~0x1FF), _F32)
    return hi, a - hi


def mul_rn(a_hi: Array, a_lo: Array, d: Array) -> Array:
    """float32 RN(a * d) for an integer-valued d (|d| <= 255) given ``split_hi_lo(a)``: both partial products are
    exact, so the one rounding is the same whether or not the compiler fuses a multiply-add into an FMA (XLA on
    CPU and GPU does; Pillow's C code does not)."""
    return a_hi * d + a_lo * d


def blend(im1: Array, im2: Array, alpha: Array) -> Array:
    """PIL ``Image.blend(im1, im2, alpha)`` on uint8-valued float32: trunc(im1 + RN(alpha * (im2 - im1))) clipped
    to [0, 255], alpha as float32. im1 broadcasts against im2 (H, W, C); returns (H, W, C) float32."""
    hi, lo = split_hi_lo(jnp.asarray(alpha, _F32))
    v = im1 + mul_rn(hi, lo, im2 - im1)
    return jnp.clip(jnp.trunc(v), 0.0, 255.0)


def adjust_brightness(img: Array, factor: Array) -> Array:
    """ImageEnhance.Brightness: blend(black, img, factor)."""
    return blend(jnp.zeros_like(img), img, factor)


def adjust_saturation(img: Array, factor: Array) -> Array:
    """ImageEnhance.Color (torchvision adjust_saturation): blend(grayscale as RGB, img, factor); identity on C=1."""
    return blend(grayscale(img).astype(_F32), img, factor)


def adjust_contrast(img: Array, factor: Array) -> Array:
    """ImageEnhance.Contrast: blend(mean, img, factor), mean = int(mean of the 'L' image + 0.5) (exact integer)."""
    g = grayscale(img)
    n = g.shape[0] * g.shape[1]
    mean = (2 * jnp.sum(g) + n) // (2 * n)
    return blend(mean.astype(_F32), img, factor)


# ImageFilter.SMOOTH = [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, divided in float32 as Pillow's _filter does
_K1 = split_hi_lo(np.float32(1.0) / np.float32(13.0))
_K5 = split_hi_lo(np.float32(5.0) / np.float32(13.0))


def smooth(img: Array) -> Array:
    """PIL ``img.filter(ImageFilter.SMOOTH)``: 3x3 kernel in float32 with Pillow's rounded products and summation
    order, +0.5 then truncation, one-pixel border copied unchanged. (H, W, C) -> (H, W, C)."""
    h, w, _ = img.shape
    if h < 3 or w < 3:
        return img

    def row(r, kc):
        return (mul_rn(*_K1, r[:, :-2]) + mul_rn(*kc, r[:, 1:-1])) + mul_rn(*_K1, r[:, 2:])

    ss = np.float32(0.5) + row(img[2:], _K1)
    ss = ss + row(img[1:-1], _K5)
    ss = ss + row(img[:-2], _K1)
    inner = jnp.pad(jnp.clip(jnp.trunc(ss), 0.0, 255.0), ((1, 1), (1, 1), (0, 0)))
    border = np.ones((h, w, 1), bool)
    border[1:-1, 1:-1] = False
    return jnp.where(border, img, inner)


def adjust_sharpness(img: Array, factor: Array) -> Array:
    """ImageEnhance.Sharpness: blend(SMOOTH(img), img, factor)."""
    return blend(smooth(img), img, factor)


def posterize(img: Array, bits: Array) -> Array:
    """ImageOps.posterize: keep the top ``bits`` (1..8) bits of every channel."""
    shift = 8 - jnp.asarray(bits, jnp.int32)
    x = img.astype(jnp.int32)
    return jnp.left_shift(jnp.right_shift(x, shift), shift).astype(_F32)


def solarize(img: Array, threshold: Array) -> Array:
    """ImageOps.solarize: v if v < threshold else 255 - v."""
    return jnp.where(img < jnp.asarray(threshold, _F32), img, 255.0 - img)


def invert(img: Array) -> Array:
    """ImageOps.invert: 255 - v."""
    return 255.0 - img


@functools.cache
def _autocontrast_low_table() -> tuple[np.ndarray, np.ndarray, int]:
    """Where Python's float64 ``int(v * scale + offset)`` of ImageOps.autocontrast (scale = 255/(hi-lo),
    offset = -lo*scale) falls one below the exact floor((v-lo)*255/(hi-lo)): for the pair (lo, hi) the values
    ``vals[starts[p]:starts[p+1]]``, p = lo*256 + hi (12094 cases over all pairs, at most ``width`` per pair).
    Returns (starts int32[65537], vals int32 (padded with -1 by ``width``), width)."""
    v = np.arange(256)
    keys = []
    for lo in range(255):
        hi = np.arange(lo + 1, 256)
        scale = 255.0 / (hi - lo).astype(np.float64)
        offset = -lo * scale
        got = np.trunc(v[None, :] * scale[:, None] + offset[:, None])
        exact = ((v[None, :] - lo) * 255) // (hi - lo)[:, None]
        bad = (got != exact) & (v[None, :] >= lo) & (v[None, :] <= hi[:, None])
        if not np.all(got[bad] == exact[bad] - 1):
            raise AssertionError("autocontrast float64 emulation: unexpected rounding case")
        r, col = np.nonzero(bad)
        keys.append((lo * 256 + hi[r]) * 256 + col)
    keys = np.sort(np.concatenate(keys))
    pair, vals = keys >> 8, (keys & 255).astype(np.int32)
    starts = np.searchsorted(pair, np.arange(65537)).astype(np.int32)
    width = int(np.max(np.diff(starts)))
    return starts, np.concatenate([vals, np.full(width, -1, np.int32)]), width


# ----- per-channel lookup tables: every point op (a function of the pixel value and per-image statistics) is a
# table int32 (C, 256) built from 256 levels and applied with ONE gather; cheaper than evaluating it per pixel.

LEVELS = np.arange(256, dtype=np.int32)


def _bcast(arg: Array, batched: bool, n: int) -> Array:
    return arg if batched else jnp.broadcast_to(arg, (n,) + jnp.shape(arg))


def stored(x: Array) -> Array:
    """``x`` as float32 (exact for |x| < 2^24), divided by a traced 1.0 (x == x, not foldable). XLA does not
    duplicate a float division into several consumers, nor fuse it into a gather that reads its elements many
    times, so ``x`` is computed once and stored. Without it XLA:CPU fuses a LUT's construction (integer divisions
    included) into the gather that applies it, rebuilding an entry for every pixel (3x slower), and an affine
    warp's gather into each of its many consumers (gray, SMOOTH's nine taps, histogram, blend, ...)."""
    lf = x.astype(_F32)
    one = (lf[..., :1] == lf[..., :1]).astype(_F32)
    return lf / one


@jax.custom_batching.custom_vmap
def apply_lut(img: Array, lut: Array) -> Array:
    """Map every pixel through its channel's table: out[y, x, c] = lut[c, img[y, x, c]]. ``lut`` (C, 256) or (256,)
    (all channels). (H, W, C) -> (H, W, C) float32. Under ``vmap`` it is one flat gather over the whole batch
    (XLA:CPU runs a batched gather several times slower)."""
    c = img.shape[-1]
    flat = stored(jnp.broadcast_to(jnp.asarray(lut), (c, 256))).reshape(-1)
    return flat[img.astype(jnp.int32) + 256 * jnp.arange(c, dtype=jnp.int32)]


@apply_lut.def_vmap
def _apply_lut_vmap(n, in_batched, img, lut):
    img, lut = _bcast(img, in_batched[0], n), _bcast(lut, in_batched[1], n)
    c = img.shape[-1]
    flat = stored(jnp.broadcast_to(lut.reshape(n, -1, 256), (n, c, 256))).reshape(-1)
    offset = (256 * c * jnp.arange(n, dtype=jnp.int32)).reshape((n,) + (1,) * (img.ndim - 1))
    return flat[img.astype(jnp.int32) + 256 * jnp.arange(c, dtype=jnp.int32) + offset], True


@jax.custom_batching.custom_vmap
def channel_histogram(img: Array) -> Array:
    """256-bin histogram per channel, int32 (C, 256), via one bincount of length 256 C (static shape); under
    ``vmap`` one flat bincount over the whole batch (XLA:CPU's batched scatter is ~4x slower)."""
    c = img.shape[-1]
    x = img.astype(jnp.int32)
    return jnp.bincount((x + 256 * jnp.arange(c, dtype=jnp.int32)).ravel(), length=256 * c).reshape(c, 256)


@channel_histogram.def_vmap
def _channel_histogram_vmap(n, in_batched, img):
    img = _bcast(img, in_batched[0], n)
    c = img.shape[-1]
    offset = (256 * c * jnp.arange(n, dtype=jnp.int32)).reshape((n,) + (1,) * (img.ndim - 1))
    idx = img.astype(jnp.int32) + 256 * jnp.arange(c, dtype=jnp.int32) + offset
    return jnp.bincount(idx.ravel(), length=n * 256 * c).reshape(n, c, 256), True


def autocontrast_lut(img: Array) -> Array:
    """The table int32 (C, 256) of ImageOps.autocontrast (cutoff 0) for this image: per channel, [lo, hi] mapped
    linearly onto [0, 255] with Python's float64 truncation reproduced exactly (the table of its off-by-one cases);
    identity for channels with hi <= lo. Entries outside [lo, hi] are never read."""
    x = img.astype(jnp.int32)
    lo = jnp.min(x, axis=(0, 1))
    hi = jnp.max(x, axis=(0, 1))
    v = jnp.asarray(LEVELS)[None, :]
    exact = ((v - lo[:, None]) * 255) // jnp.maximum(hi - lo, 1)[:, None]
    starts, vals, width = _autocontrast_low_table()
    pair = lo * 256 + hi
    start = jnp.asarray(starts)[pair]
    j = jnp.arange(width)
    low_vals = jnp.where(j < (jnp.asarray(starts)[pair + 1] - start)[:, None],
                         jnp.asarray(vals)[start[:, None] + j], -1)  # (C, width)
    low = jnp.any(v[..., None] == low_vals[:, None, :], axis=-1)  # (C, 256)
    out = jnp.clip(exact - low.astype(jnp.int32), 0, 255)
    return jnp.where((hi > lo)[:, None], out, v)


def autocontrast(img: Array) -> Array:
    """ImageOps.autocontrast (cutoff 0), per channel: map [lo, hi] linearly onto [0, 255] with Python's float64
    truncation reproduced exactly; channels with hi <= lo unchanged."""
    return apply_lut(img, autocontrast_lut(img))


def equalize_lut(img: Array, hist: Array | None = None) -> Array:
    """The table int32 (C, 256) of ImageOps.equalize for this image (``hist``: its :func:`channel_histogram`),
    integer-exact: step = (N - h[last nonzero bin]) // 255; lut[i] = (step // 2 + #pixels below i) // step clipped
    to 255; identity when step == 0."""
    h, w, _ = img.shape
    hist = channel_histogram(img) if hist is None else hist
    last = 255 - jnp.argmax(hist[:, ::-1] > 0, axis=1)
    h_last = jnp.take_along_axis(hist, last[:, None], axis=1)[:, 0]
    step = (h * w - h_last) // 255
    below = jnp.cumsum(hist, axis=1) - hist
    lut = jnp.clip((step[:, None] // 2 + below) // jnp.maximum(step, 1)[:, None], 0, 255)
    return jnp.where((step > 0)[:, None], lut, jnp.asarray(LEVELS)[None, :])


def equalize(img: Array) -> Array:
    """ImageOps.equalize, per channel, integer-exact (see :func:`equalize_lut`)."""
    return apply_lut(img, equalize_lut(img))


@functools.cache
def _hue_table() -> np.ndarray:
    """Pillow rgb2hsv hue byte as a table uint8[3, 2, 256, 256] indexed by (branch, p_is_min, d, cr).

    Pillow: cr = max - min; rc, gc, bc = (max - r)/cr, ... in float32; h = bc - gc (float) if r is max, else
    2.0 + rc - bc or 4.0 + gc - rc (double, stored float); h = fmod(h/6 + 1, 1) (double, stored float);
    hue = int(h * 255). In branch k the formula is c0 + Pc - Qc; one of P, Q is the minimum (its term is
    cr/cr = 1) and d = max - (the other one), so the hue depends only on (branch, which is min, d, cr)."""
    f32 = np.float32
    d = np.arange(256)[:, None]
    cr = np.arange(256)[None, :]
    table = np.zeros((3, 2, 256, 256), np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for branch, c0 in enumerate((0.0, 2.0, 4.0)):
            for p_is_min in (0, 1):
                dp = np.broadcast_to(np.where(p_is_min, cr, d), (256, 256))
                dq = np.broadcast_to(np.where(p_is_min, d, cr), (256, 256))
                pc = dp.astype(f32) / cr.astype(f32)
                qc = dq.astype(f32) / cr.astype(f32)
                hh = (pc - qc) if branch == 0 else (c0 + pc.astype(np.float64) - qc).astype(f32)
                hh = np.fmod(hh.astype(np.float64) / 6.0 + 1.0, 1.0).astype(f32)
                val = np.clip(np.trunc(hh.astype(np.float64) * 255.0), 0, 255)
                table[branch, p_is_min] = np.where((cr > 0) & (d <= cr), val, 0).astype(np.uint8)
    return table


def adjust_hue(img: Array, hue_factor: Array) -> Array:
    """torchvision ``adjust_hue`` on PIL: convert('HSV'), hue byte += uint8(hue_factor * 255) with wrap-around
    (truncation toward zero, as numpy 1.x casts), convert back; identity on C=1 ('L'). Integer-exact."""
    if img.shape[-1] == 1:
        return img
    x = img.astype(jnp.int32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc = jnp.maximum(r, jnp.maximum(g, b))
    minc = jnp.minimum(r, jnp.minimum(g, b))
    cr = maxc - minc
    branch = jnp.where(r == maxc, 0, jnp.where(g == maxc, 1, 2))
    # hue = c0 + Pc - Qc with (P, Q) = (b, g), (r, b), (g, r) for branch 0, 1, 2
    p = jnp.where(branch == 0, b, jnp.where(branch == 1, r, g))  # (jnp.select adds an argmax over conditions)
    q = jnp.where(branch == 0, g, jnp.where(branch == 1, b, r))
    p_is_min = (p == minc).astype(jnp.int32)
    d = maxc - jnp.where(p_is_min == 1, q, p)
    hue = jnp.asarray(_hue_table()).reshape(-1)[((branch * 2 + p_is_min) * 256 + d) * 256 + cr].astype(jnp.int32)
    sat = (255 * cr) // jnp.maximum(maxc, 1)
    shift = jnp.trunc(jnp.asarray(hue_factor, _F32) * 255.0).astype(jnp.int32)
    hue = jnp.where(cr == 0, 0, hue)
    sat = jnp.where(cr == 0, 0, sat)
    hue = jnp.bitwise_and(hue + shift, 255)
    return hsv_to_rgb(hue, sat, maxc)


def hsv_to_rgb(h: Array, s: Array, v: Array) -> Array:
    """Pillow hsv2rgb on uint8 H, S, V planes (int32 (H, W)), integer-exact:
    p = round(v(255-s)/255), q = round(v(255^2 - s m)/255^2), t = round(v(255^2 - s(255-m))/255^2),
    sector i = 6h // 255, m = 6h mod 255. Returns (H, W, 3) float32."""
    i = (6 * h) // 255
    m = (6 * h) % 255
    p = (2 * v * (255 - s) + 255) // 510
    q = (2 * v * (65025 - s * m) + 65025) // 130050
    t = (2 * v * (65025 - s * (255 - m)) + 65025) // 130050
    sector = i % 6
    choose = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = [jnp.select([sector == k for k in range(6)], [c[ch] for c in choose]) for ch in range(3)]
    out = jnp.stack(rgb, axis=-1)
    return jnp.where((s == 0)[..., None], v[..., None], out).astype(_F32)


# ----------------------------------------------------------------------------------------------- tensors


def normalize(img: Array, mean: Sequence[float], std: Sequence[float]) -> Array:
    """torchvision ToTensor + Normalize in float32: (img / 255 - mean) / std per channel, mean/std of length 1 or C.
    Evaluated as a lookup in a host table float32[256, C] computed with IEEE float32 division, so it is bit-exact
    (XLA would turn the divisions by constants into multiplications). (..., H, W, C) 0..255 -> float32."""
    c = img.shape[-1]
    mean_a = np.asarray(mean, np.float32).reshape(-1)
    std_a = np.asarray(std, np.float32).reshape(-1)
    if mean_a.size not in (1, c) or std_a.size not in (1, c):
        raise ValueError(f"mean/std need 1 or {c} values for {c}-channel images, got {mean_a.size}/{std_a.size}; "
                         "set data.normalization.mean/std to match the channels")
    if not np.all(std_a > 0):
        raise ValueError(f"normalization std must be > 0, got {std_a.tolist()}")
    levels = np.arange(256, dtype=np.float32)[:, None]
    table = (levels / np.float32(255.0) - np.broadcast_to(mean_a, (c,))) / np.broadcast_to(std_a, (c,))
    idx = jnp.clip(jnp.asarray(img).astype(jnp.int32), 0, 255) * c + jnp.arange(c, dtype=jnp.int32)
    return jnp.asarray(table.astype(np.float32).reshape(-1))[idx]


def erase_box(x: Array, y1: Array, y2: Array, x1: Array, x2: Array) -> Array:
    """Cutout given its box: ``mask[y1:y2, x1:x2] = 0``; returns ``x * mask`` (the peer multiplies, so negative
    values become -0.0). (H, W, C) float -> (H, W, C)."""
    h, w, _ = x.shape
    ys = jnp.arange(h)[:, None]
    xs = jnp.arange(w)[None, :]
    inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
    return x * jnp.where(inside, 0.0, 1.0).astype(x.dtype)[..., None]
