"""Per-op parity of jaxkd.data.image_ops / autoaugment with torchvision's PIL backend (torchvision itself, through
torch_ref.augment).

Real images: 16 CIFAR-10 test JPEGs (RGB) and 8 MNIST test digits ('L'). Every uint8 op is compared pixel for
pixel; the bound is exact equality for all ops except bilinear rotation (<= 1 level on <= 1e-3 of the values;
measured: max 1 level on ~8e-5 of the values over 100 random angles) and nearest rotation by a traced float32
angle (<= 1e-3 of the pixels; measured 0). Each family has a negative control (a perturbed parameter is detected).
"""

from __future__ import annotations

import io
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from jaxkd.data import autoaugment as aa
from jaxkd.data import image_ops as ops
from torch_ref import augment as ref


@pytest.fixture(scope="module")
def cifar(shared_data_dir) -> np.ndarray:
    """16 CIFAR-10 test images, uint8 (16, 32, 32, 3): the first 2 of each of the first 8 classes."""
    picked: dict[str, list[np.ndarray]] = {}
    with tarfile.open(shared_data_dir / "cifar10-jpeg.tar.gz") as tf:
        for m in tf:
            parts = m.name.split("/")
            if not (m.isfile() and parts[0] == "test" and len(picked.get(parts[1], [])) < 2):
                continue
            picked.setdefault(parts[1], []).append(np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read()))
                                                              .convert("RGB")))
            if len(picked) >= 8 and all(len(v) == 2 for v in picked.values()):
                break
    return np.stack([im for k in sorted(picked)[:8] for im in picked[k]])


@pytest.fixture(scope="module")
def mnist(shared_data_dir) -> np.ndarray:
    """8 MNIST test digits, uint8 (8, 28, 28, 1)."""
    return np.load(shared_data_dir / "mnist.npz")["x_test"][:8, :, :, None]


@pytest.fixture(params=["cifar", "mnist"])
def images(request, cifar, mnist) -> np.ndarray:
    return cifar if request.param == "cifar" else mnist


def _ref(fn, imgs: np.ndarray) -> np.ndarray:
    return np.stack([ref.from_pil(fn(ref.to_pil(im))) for im in imgs]).astype(np.float32)


def _stats(got, want) -> tuple[float, float]:
    d = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    return float(d.max()), float(np.mean(d > 0))


def _batched(fn):
    """jit over a batch of images: fn(image, *args) vmapped over images, args shared and traced (one compile)."""
    return jax.jit(lambda imgs, *args: jax.vmap(lambda im: fn(im, *args))(imgs))


# ----------------------------------------------------------------------------------------------- geometry


def test_flip_and_crop_exact(images):
    f32 = images.astype(np.float32)
    np.testing.assert_array_equal(_batched(ops.hflip)(f32), _ref(ref.hflip, images))
    crop = _batched(lambda im, t, l: ops.pad_crop(im, t, l, 4))
    for top, left in [(0, 0), (8, 8), (3, 6), (8, 0)]:
        np.testing.assert_array_equal(crop(f32, top, left), _ref(lambda p: ref.random_crop(p, top, left, 4), images))
    assert not np.array_equal(crop(f32, 3, 5), _ref(lambda p: ref.random_crop(p, 3, 6, 4), images))  # control


def test_translate_exact(images):
    fn = _batched(ops.translate)
    for tx, ty in [(3, -2), (-4, 4), (0, 0), (13, -13)]:
        want = _ref(lambda p: ref.affine(p, 0.0, [tx, ty], 1.0, [0.0, 0.0]), images)
        np.testing.assert_array_equal(fn(images.astype(np.float32), tx, ty), want)
    assert not np.array_equal(fn(images.astype(np.float32), 3, -1), want)


@pytest.mark.parametrize("angle", [9.0, -7.3, 23.7, -30.0, 0.0])
def test_rotate_nearest(images, angle):
    """Host float64 matrix (policies): exact. Traced float32 angle (RandomRotation): bound 1e-3 of pixels may take
    a neighbouring source pixel (measured: 0 on these images)."""
    want = _ref(lambda p: ref.rotate(p, angle), images)
    h, w = images.shape[1:3]
    fixed = ops.pil_fixed_point(ops.pil_rotate_matrix(angle, w, h))
    np.testing.assert_array_equal(_batched(ops.affine_nearest_fixed)(images.astype(np.float32), fixed), want)
    got = _batched(ops.rotate)(images.astype(np.float32), angle)
    assert np.mean(np.any(np.asarray(got) != want, axis=-1)) <= 1e-3
    if angle != 0.0:  # control: one degree off is visible
        assert _stats(_batched(ops.rotate)(images.astype(np.float32), angle + 1.0), want)[1] > 0.01


def test_rotate_bilinear(images):
    fn = _batched(lambda im, a: ops.rotate(im, a, "bilinear"))
    for angle in [9.0, -7.3, 23.7]:
        want = _ref(lambda p: ref.rotate(p, angle, Image.BILINEAR), images)
        mx, frac = _stats(fn(images.astype(np.float32), angle), want)
        assert mx <= 1 and frac <= 1e-3, (angle, mx, frac)


# ----------------------------------------------------------------------------------------------- colour


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "sharpness"])
def test_enhance_exact(images, name):
    fn = _batched(getattr(ops, f"adjust_{name}"))
    rfn = getattr(ref, f"adjust_{name}")
    for factor in [0.1, 0.73, 0.8, 1.27, 1.9]:
        np.testing.assert_array_equal(fn(images.astype(np.float32), factor), _ref(lambda p: rfn(p, factor), images),
                                      err_msg=f"{name} {factor}")
    if name != "saturation" or images.shape[-1] == 3:  # saturation is the identity on 'L'
        assert _stats(fn(images.astype(np.float32), 1.3), _ref(lambda p: rfn(p, 1.27), images))[1] > 0


def test_hue_exact(images):
    fn = _batched(ops.adjust_hue)
    for hf in [-0.5, -0.37, -0.1, 0.0, 0.05, 0.1, 0.5]:
        np.testing.assert_array_equal(fn(images.astype(np.float32), hf), _ref(lambda p: ref.adjust_hue(p, hf), images))
    if images.shape[-1] == 3:
        shifted = _ref(lambda p: ref.adjust_hue(p, 0.1 + 1 / 255), images)  # control: one hue level more
        assert _stats(fn(images.astype(np.float32), 0.1), shifted)[1] > 0


def test_hue_exact_on_many_colours():
    """2^18 random RGB colours (every branch of Pillow's rgb2hsv / hsv2rgb), several shifts: exact."""
    rgb = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    fn = jax.jit(ops.adjust_hue)
    for hf in [0.0, 0.1, -0.23]:
        np.testing.assert_array_equal(fn(rgb.astype(np.float32), hf), ref.from_pil(ref.adjust_hue(ref.to_pil(rgb), hf)))


def test_lut_ops_exact(images):
    f32 = images.astype(np.float32)
    post, sol = _batched(ops.posterize), _batched(ops.solarize)
    for bits in range(1, 9):
        np.testing.assert_array_equal(post(f32, bits), _ref(lambda p: ImageOps.posterize(p, bits), images))
    for thr in [0.0, 128, 170.0, 178.5, 255.0, 256]:
        np.testing.assert_array_equal(sol(f32, thr), _ref(lambda p: ImageOps.solarize(p, thr), images))
    for fn, rfn in [(ops.autocontrast, ImageOps.autocontrast), (ops.equalize, ImageOps.equalize),
                    (ops.invert, ImageOps.invert)]:
        np.testing.assert_array_equal(_batched(fn)(f32), _ref(rfn, images), err_msg=fn.__name__)
    assert not np.array_equal(sol(f32, 177.5), _ref(lambda p: ImageOps.solarize(p, 178.5), images))


def test_autocontrast_equalize_synthetic():
    """Images with random ranges [lo, hi], a constant image, two-level images, few-level images (equalize's LUT
    past 255 is clipped as Image.point does): exact vs Pillow; control: the plain integer formula is not."""
    rng = np.random.default_rng(1)
    imgs = []
    for _ in range(120):
        lo, hi = sorted(rng.integers(0, 256, 2))
        imgs.append(rng.integers(lo, hi + 1, (16, 16, 3)))
    imgs += [np.full((16, 16, 3), 77), np.where(rng.random((16, 16, 3)) < 0.3, 10, 200),
             rng.choice([0, 3, 250], (16, 16, 3), p=[0.2, 0.7, 0.1])]
    imgs = np.stack(imgs).astype(np.uint8)
    got_ac = np.asarray(jax.jit(jax.vmap(ops.autocontrast))(imgs.astype(np.float32)))
    np.testing.assert_array_equal(got_ac, _ref(ImageOps.autocontrast, imgs))
    np.testing.assert_array_equal(jax.jit(jax.vmap(ops.equalize))(imgs.astype(np.float32)),
                                  _ref(ImageOps.equalize, imgs))
    x = imgs.astype(np.int64)
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    plain = np.where(hi > lo, (x - lo) * 255 // np.maximum(hi - lo, 1), x)
    assert np.sum(plain != got_ac) > 0  # control: the float64 off-by-one cases matter


def test_normalize_exact_vs_torch(images):
    mean, std = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]) if images.shape[-1] == 3 else ([0.1307],
                                                                                                  [0.3081])
    got = np.asarray(jax.jit(lambda x: ops.normalize(x, mean, std))(images))
    want = np.stack([ref.to_tensor_normalize(im, mean, std).numpy().transpose(1, 2, 0) for im in images])
    np.testing.assert_array_equal(got, want)
    wrong = np.asarray(ops.normalize(images, mean, [s * (1 + 1e-6) for s in std]))
    assert not np.array_equal(wrong, want)
    full = np.random.default_rng(0).integers(0, 256, (4, 8, 8, images.shape[-1]), dtype=np.uint8)
    np.testing.assert_array_equal(
        ops.normalize(full, mean, std),
        np.stack([ref.to_tensor_normalize(im, mean, std).numpy().transpose(1, 2, 0) for im in full]))


# ----------------------------------------------------------------------------------------------- policies


def test_magnitude_bins_match_torch():
    """All magnitude bins (10 for AutoAugment, 31 for RandAugment) equal torchvision's torch.linspace / Posterize
    values exactly, for 32x32 and 28x28 images."""
    for h, w in [(32, 32), (28, 28)]:
        for num_bins, idx in [(10, range(10)), (31, range(31))]:
            space = ref.augmentation_space(num_bins, (h, w), randaugment=num_bins == 31)
            for op, (mags, _) in space.items():
                if mags.ndim == 0:
                    continue
                mine = aa.magnitude_bins(op, num_bins, h, w)
                for i in idx:
                    assert mine[i] == np.asarray(mags)[i], (op, num_bins, i, h, w)


@pytest.mark.parametrize("num_bins,bins", [(31, [9, 30]), (10, [2, 5, 9])])
def test_every_policy_op_matches_torchvision(images, num_bins, bins):
    """Each op of OP_NAMES at several magnitude bins and both signs vs torchvision's _apply_op on PIL: exact."""
    fn = jax.jit(jax.vmap(lambda im, op, b, neg: aa.apply_op(im, op, b, neg, num_bins), in_axes=(0, None, None, None)))
    f32 = images.astype(np.float32)
    size = images.shape[1:3]
    for k, name in enumerate(aa.OP_NAMES):
        for b in bins:
            for neg in (0, 1):
                m = ref.op_magnitude(name, b, bool(neg), num_bins, size, randaugment=name != "Invert")
                np.testing.assert_array_equal(fn(f32, k, b, neg), _ref(lambda p: ref.apply_op(p, name, m), images),
                                              err_msg=f"{name} bin {b} neg {neg}")
    m = ref.op_magnitude("ShearX", bins[-1], False, num_bins, size, True)
    assert not np.array_equal(fn(f32, aa.op_index("ShearX"), bins[-1], 1),
                              _ref(lambda p: ref.apply_op(p, "ShearX", m), images))  # control: sign matters


def test_randaugment_draws_applied_like_torchvision(images):
    n = len(images)
    keys = jax.random.split(jax.random.key(3), n)
    params = jax.vmap(lambda k: aa.randaugment_params(k, 2))(keys)
    got = jax.jit(jax.vmap(lambda im, p: aa.apply_randaugment(im, p, 9)))(images.astype(np.float32), params)
    want = np.stack([ref.from_pil(ref.randaugment(ref.to_pil(im), np.asarray(params["op"][i]),
                                                  np.asarray(params["negate"][i]), 9))
                     for i, im in enumerate(images)]).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def _autoaugment_ref(imgs: np.ndarray, p: dict, policy: str) -> np.ndarray:
    return np.stack([ref.from_pil(ref.autoaugment(ref.to_pil(im), int(p["policy_id"][i]), np.asarray(p["probs"][i]),
                                                  np.asarray(p["negate"][i]), policy))
                     for i, im in enumerate(imgs)]).astype(np.float32)


@pytest.mark.parametrize("policy", ["cifar10", "imagenet", "svhn"])
def test_autoaugment_every_subpolicy_like_torchvision(cifar, policy, monkeypatch):
    """Every sub-policy of each table with both ops applied (probs 0) and random signs, then (CIFAR-10, the peer's
    policy) random draws, vs torchvision's own ``AutoAugment(policy).forward`` given the same draws: exact.
    Negative control: jaxkd's table with one magnitude bin moved by one (CIFAR-10 sub-policy 1, Rotate bin 2 -> 3)
    is detected on those images."""
    imgs = np.concatenate([cifar, cifar[:9]])  # 25 images, sub-policy i on image i
    assert len(aa.POLICIES[policy]) == len(ref.POLICIES[policy]) == len(imgs)
    rng = np.random.default_rng(0)
    params = {"policy_id": jnp.arange(25, dtype=jnp.int32), "probs": jnp.zeros((25, 2), jnp.float32),
              "negate": jnp.asarray(rng.random((25, 2)) < 0.5)}
    draws = [params]
    if policy == "cifar10":
        draws.append(jax.vmap(aa.autoaugment_params)(jax.random.split(jax.random.key(5), 25)))
    fn = jax.jit(jax.vmap(lambda im, p: aa.apply_autoaugment(im, p, policy)))
    for p in draws:
        np.testing.assert_array_equal(fn(imgs.astype(np.float32), p), _autoaugment_ref(imgs, p, policy))
    if policy == "cifar10":
        table = list(aa.POLICIES["cifar10"])
        assert table[1] == (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9))
        table[1] = (("Rotate", 0.7, 3), ("TranslateX", 0.3, 9))
        monkeypatch.setitem(aa.POLICIES, "cifar10", tuple(table))
        wrong = jax.jit(jax.vmap(lambda im, p: aa.apply_autoaugment(im, p, "cifar10")))(imgs.astype(np.float32),
                                                                                        params)
        want = _autoaugment_ref(imgs, params, "cifar10")
        assert not np.array_equal(wrong[1], want[1]) and np.array_equal(wrong[2:], want[2:])


def test_policy_tables_are_torchvisions():
    """jaxkd's three tables (op, probability, magnitude bin) equal torchvision's ``AutoAugment(policy).policies``."""
    for name, table in aa.POLICIES.items():
        assert [tuple(sub) for sub in table] == ref.POLICIES[name], name


def test_inverse_affine_matrix_matches_torchvision():
    """``image_ops.tv_affine_matrix`` vs torchvision's ``F._get_inverse_affine_matrix`` on 500 random (centre,
    angle, translate, scale, shear): |diff| <= 1e-12 (float64; measured 0). Negative controls: the shear pair
    swapped, and the centre applied with the wrong sign, miss by > 1e-3."""
    rng = np.random.default_rng(11)
    worst = 0.0
    for _ in range(500):
        center = [float(v) for v in rng.uniform(0, 32, 2)]
        angle = float(rng.uniform(-45, 45))
        translate = [int(v) for v in rng.integers(-10, 11, 2)]
        scale = float(rng.uniform(0.5, 1.5))
        shear = [float(v) for v in rng.uniform(-30, 30, 2)]
        want = np.array(ref.get_inverse_affine_matrix(center, angle, translate, scale, shear))
        got = np.array(ops.tv_affine_matrix(center, angle, translate, scale, shear))
        worst = max(worst, float(np.max(np.abs(got - want))))
    assert worst <= 1e-12, worst
    center, angle, translate, scale, shear = [16.0, 12.0], 10.0, [2, -3], 1.1, [13.0, -7.0]
    want = np.array(ref.get_inverse_affine_matrix(center, angle, translate, scale, shear))
    swapped = np.array(ops.tv_affine_matrix(center, angle, translate, scale, shear[::-1]))
    centre_sign = np.array(ops.tv_affine_matrix([-c for c in center], angle, translate, scale, shear))
    assert np.max(np.abs(swapped - want)) > 1e-3 and np.max(np.abs(centre_sign - want)) > 1e-3


def test_torch_linspace_formula():
    """torch_linspace32 reproduces torch.linspace's float32 values (10 and 31 bins, the magnitude ranges)."""
    for n in (10, 31):
        for end in [0.3, 0.9, 30.0, 150 / 331 * 32, 150 / 331 * 28, 150 / 331 * 224]:
            np.testing.assert_array_equal(aa.torch_linspace32(0.0, end, n), torch.linspace(0.0, end, n).numpy())
        np.testing.assert_array_equal(aa.torch_linspace32(255.0, 0.0, n), torch.linspace(255.0, 0.0, n).numpy())
