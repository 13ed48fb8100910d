"""jaxkd.data.augment: the train / eval transforms, MixUp / CutMix, the statistics of every random draw.

End-to-end: the jitted transform equals torchvision's PIL pipeline + ToTensor + Normalize + the peer's Cutout,
rebuilt in torch_ref from the same draws, exactly. MixUp / CutMix equal the peer's torch formulas exactly given
the same lambda / box. Random draws are checked against their distributions with fixed seeds (scipy tests).
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from scipy import stats

from jaxkd.config import base_config, validate
from jaxkd.data import augment as A
from jaxkd.data import augment_mix as M
from torch_ref import augment as ref

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]


def aug_config(**enable) -> ml_collections.ConfigDict:
    """config.data.augmentation of base_config() (the documented defaults, everything off), ops in ``enable``
    switched on."""
    c = base_config().data.augmentation
    for name, on in enable.items():
        c[name]["enabled"] = on
    return c


def _validated(aug: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``aug`` in a full base_config(), validated as every run's config is (ConfigError on a bad value)."""
    cfg = base_config()
    cfg.data.augmentation = aug
    return validate(cfg).data.augmentation


def aug_spec(aug: ml_collections.ConfigDict) -> A.AugmentSpec:
    return A.AugmentSpec.from_config(_validated(aug))


def mix_spec(aug: ml_collections.ConfigDict) -> A.MixSpec:
    return A.MixSpec.from_config(_validated(aug))


ALL_OPS = dict(random_crop=True, random_flip=True, random_rotation=True, random_affine=True, color_jitter=True,
               auto_augment=True, randaugment=True, cutout=True)


@pytest.fixture(scope="module")
def real(shared_data_dir) -> dict[str, np.ndarray]:
    """8 CIFAR-10 test images (uint8 (8, 32, 32, 3)) and 8 MNIST test digits (uint8 (8, 28, 28, 1))."""
    import io
    import tarfile

    from PIL import Image

    out = []
    with tarfile.open(shared_data_dir / "cifar10-jpeg.tar.gz") as tf:
        for m in tf:
            if m.isfile() and m.name.startswith("test/"):
                out.append(np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")))
                if len(out) == 8:
                    break
    return {"cifar": np.stack(out), "mnist": np.load(shared_data_dir / "mnist.npz")["x_test"][100:108, :, :, None]}


@pytest.fixture(scope="module")
def all_ops_transforms():
    """The jitted all-ops training transform for RGB and for grayscale (built once: compiling is the cost)."""
    spec = aug_spec(aug_config(**ALL_OPS))
    return {3: A.make_train_transform(spec, mean=CIFAR_MEAN, std=CIFAR_STD),
            1: A.make_train_transform(spec, mean=MNIST_MEAN, std=MNIST_STD)}


def _reference_pipeline(img: np.ndarray, p: dict, spec: A.AugmentSpec, mean, std) -> np.ndarray:
    """torchvision (PIL) + peer Cutout on one uint8 image given the drawn parameters ``p`` (numpy)."""
    pil = ref.to_pil(img)
    if spec.crop is not None:
        pil = ref.random_crop(pil, int(p["crop"][0]), int(p["crop"][1]), spec.crop)
    if spec.flip and p["flip"]:
        pil = ref.hflip(pil)
    if spec.rotation is not None:
        pil = ref.rotate(pil, float(p["angle"]))
    if spec.translate is not None:
        pil = ref.affine(pil, 0.0, [int(p["translate"][0]), int(p["translate"][1])], 1.0, [0.0, 0.0])
    if spec.jitter is not None:
        pil = ref.color_jitter(pil, p["jitter"]["order"], p["jitter"]["factors"])
    if spec.policy is not None:
        a = p["autoaug"]
        pil = ref.autoaugment(pil, int(a["policy_id"]), a["probs"], a["negate"])
    if spec.randaug is not None:
        pil = ref.randaugment(pil, p["randaug"]["op"], p["randaug"]["negate"], spec.randaug[1])
    t = ref.to_tensor_normalize(ref.from_pil(pil), mean, std)
    if spec.cutout is not None:
        t = ref.cutout(t, spec.cutout, int(p["cutout"][0]), int(p["cutout"][1]))
    return t.numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("kind", ["cifar", "mnist"])
def test_train_transform_end_to_end_matches_torchvision(real, all_ops_transforms, kind):
    """All ops on: the jitted transform equals the reference pipeline driven by the same per-sample draws."""
    imgs = real[kind]
    c = imgs.shape[-1]
    mean, std = (CIFAR_MEAN, CIFAR_STD) if c == 3 else (MNIST_MEAN, MNIST_STD)
    key = jax.random.key(11)
    got = np.asarray(all_ops_transforms[c](key, jnp.asarray(imgs)))
    spec = aug_spec(aug_config(**ALL_OPS))
    h, w = imgs.shape[1:3]
    params = jax.tree.map(np.asarray, jax.vmap(lambda k: A.sample_params(spec, k, h, w))(
        jax.random.split(key, len(imgs))))
    want = np.stack([_reference_pipeline(im, jax.tree.map(lambda a, i=i: a[i], params), spec, mean, std)
                     for i, im in enumerate(imgs)])
    np.testing.assert_array_equal(got, want)
    other = np.asarray(all_ops_transforms[c](jax.random.key(12), jnp.asarray(imgs)))
    assert not np.array_equal(other, want)  # control: another key gives other draws


@pytest.mark.parametrize("shape", [(8, 32, 32, 3), (8, 28, 28, 1)])
def test_transforms_jit_vmap_shapes_dtypes(all_ops_transforms, shape):
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    y = all_ops_transforms[shape[-1]](jax.random.key(0), x)
    assert y.shape == shape and y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_array_equal(y, all_ops_transforms[shape[-1]](jax.random.key(0), x))  # same key, same result
    mean, std = (CIFAR_MEAN, CIFAR_STD) if shape[-1] == 3 else (MNIST_MEAN, MNIST_STD)
    ev = A.make_eval_transform(mean=mean, std=std)(x)
    want = np.stack([ref.to_tensor_normalize(im, mean, std).numpy().transpose(1, 2, 0) for im in np.asarray(x)])
    assert ev.dtype == jnp.float32
    np.testing.assert_array_equal(ev, want)
    plain = A.make_train_transform(aug_spec(aug_config()), mean=mean, std=std)(jax.random.key(3), x)
    np.testing.assert_array_equal(plain, want)  # nothing enabled: train transform == eval transform


def test_bad_inputs_raise_clear_errors(all_ops_transforms):
    x = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        all_ops_transforms[3](jax.random.key(0), x.astype(np.float32))
    with pytest.raises(ValueError, match="mean/std"):
        A.make_eval_transform(mean=[0.5, 0.5], std=[0.2, 0.2])(x)
    for section, field, value in [("randaugment", "magnitude", 31), ("auto_augment", "policy", "cifar100"),
                                  ("cutout", "length", 0), ("color_jitter", "hue", 0.7),
                                  ("random_affine", "translate", 1.5)]:
        cfg = aug_config(**{section: True})
        cfg[section][field] = value
        with pytest.raises(ValueError, match=f"data.augmentation.{section}"):
            A.make_train_transform(aug_spec(cfg), mean=CIFAR_MEAN, std=CIFAR_STD)
    with pytest.raises(ValueError, match="peer pipeline"):
        A.apply_peer_pipeline(aug_config(), "svhn")


def test_peer_pipelines_fill_the_section():
    cfg = A.apply_peer_pipeline(aug_config(random_rotation=True, mixup=True), "cifar")
    on = {k for k in A._IMAGE_OPS if cfg[k]["enabled"]}
    assert on == {"random_crop", "random_flip", "color_jitter", "auto_augment", "randaugment", "cutout"}
    assert cfg.cutout.length == 16 and cfg.random_crop.padding == 4 and cfg.color_jitter.brightness == 0.2
    assert cfg.mixup.enabled and cfg.mix_mode == "sample"  # mixing belongs to the preset, left as it was
    cfg = A.apply_peer_pipeline(cfg, "mnist")
    assert {k for k in A._IMAGE_OPS if cfg[k]["enabled"]} == {"random_rotation", "random_affine", "randaugment",
                                                                "cutout"}
    assert cfg.cutout.length == 8 and cfg.random_rotation.degrees == 10.0 and cfg.randaugment.magnitude == 9


def test_importing_augment_never_imports_torch():
    code = ("import sys, jaxkd.data.augment, jaxkd.data.autoaugment, jaxkd.data.image_ops, jaxkd.data.augment_mix;"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ----------------------------------------------------------------------------------------------- statistics


@pytest.fixture(scope="module")
def draws() -> dict:
    """The per-sample draws of the all-ops pipeline for 4000 keys on 32x32 images (numpy)."""
    spec = aug_spec(aug_config(**ALL_OPS))
    keys = jax.random.split(jax.random.key(2024), 4000)
    return jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k: A.sample_params(spec, k, 32, 32)))(keys))


def _chi2_p(values, probs) -> float:
    counts = np.bincount(np.asarray(values).ravel(), minlength=len(probs))
    assert len(counts) == len(probs), "value outside the support"
    return stats.chisquare(counts, np.asarray(probs) * counts.sum()).pvalue


def test_geometric_draws(draws):
    n = len(draws["flip"])
    assert abs(draws["flip"].mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    assert _chi2_p(draws["crop"], np.full(9, 1 / 9)) > 1e-4  # offsets 0..8 uniform (padding 4)
    assert stats.kstest(draws["angle"], stats.uniform(-10, 20).cdf).pvalue > 1e-4
    # RandomAffine translate 0.1 on 32 px: round(U(-3.2, 3.2)), round half to even
    p = np.array([0.7, 1, 1, 1, 1, 1, 0.7]) / 6.4
    assert _chi2_p(draws["translate"] + 3, p) > 1e-4
    # Cutout 16 on 32 px: box height = min(cy + 8, 32) - max(cy - 8, 0), cy uniform
    side = lambda c: np.minimum(c + 8, 32) - np.maximum(c - 8, 0) - 8  # noqa: E731  (8..16 -> 0..8)
    exact = np.bincount(side(np.arange(32)), minlength=9) / 32
    assert _chi2_p(side(draws["cutout"]), exact) > 1e-4
    # box area = height * width of independent sides: exact distribution by enumerating both centres
    area = lambda c: (side(c[..., 0]) + 8) * (side(c[..., 1]) + 8)  # noqa: E731
    grid = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="ij"), -1).reshape(-1, 2)
    values, idx = np.unique(area(grid), return_inverse=True)
    observed = np.searchsorted(values, area(draws["cutout"]))
    assert np.all(values[observed] == area(draws["cutout"]))
    assert _chi2_p(observed, np.bincount(idx) / len(grid)) > 1e-4


def test_colour_and_policy_draws(draws):
    j = draws["jitter"]
    perm_id = np.array([int("".join(map(str, o))) for o in j["order"]])
    _, counts = np.unique(perm_id, return_counts=True)
    assert len(counts) == 24 and stats.chisquare(counts).pvalue > 1e-4  # torch.randperm(4): 24 orders uniform
    for i, (lo, hi) in enumerate([(0.8, 1.2)] * 3 + [(-0.1, 0.1)]):
        assert stats.kstest(j["factors"][:, i], stats.uniform(lo, hi - lo).cdf).pvalue > 1e-4
    a = draws["autoaug"]
    assert _chi2_p(a["policy_id"], np.full(25, 1 / 25)) > 1e-4
    assert stats.kstest(a["probs"].ravel(), "uniform").pvalue > 1e-4
    r = draws["randaug"]
    assert _chi2_p(r["op"], np.full(14, 1 / 14)) > 1e-4  # RandAugment picks among its 14 ops uniformly
    for neg in (a["negate"], r["negate"]):
        assert abs(neg.mean() - 0.5) < 4 * np.sqrt(0.25 / neg.size)


def test_symmetric_beta_distribution():
    alphas = np.repeat(np.float32([0.2, 1.0, 2.0]), 4000)
    lam = np.asarray(jax.jit(M.symmetric_beta)(jax.random.key(9), jnp.asarray(alphas)))
    for a in (0.2, 1.0, 2.0):
        assert stats.kstest(lam[alphas == np.float32(a)], stats.beta(a, a).cdf).pvalue > 1e-4, a
    assert stats.kstest(lam[alphas == 1.0], stats.beta(2.0, 2.0).cdf).pvalue < 1e-6  # control: wrong alpha fails


# ----------------------------------------------------------------------------------------------- MixUp / CutMix


def test_mix_per_sample_exact_vs_peer_formulas():
    """Per sample, both methods, mix_prob 0.8, non-square images: images and targets equal the peer's torch
    formulas given the same partner, lambda and box; CutMix lambda is 1 - box area / area exactly; rates."""
    b, h, w, k = 2048, 16, 12, 10
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, h, w, 3)).astype(np.float32)
    y = rng.integers(0, k, b)
    fn = jax.jit(lambda key, x, y: M.mix_batch(key, x, y, num_classes=k, mixup_alpha=0.8, cutmix_alpha=1.0,
                                               mix_prob=0.8, switch_prob=0.5))
    out, targets, info = jax.tree.map(np.asarray, fn(jax.random.key(4), x, y))
    perm, applied, cut, lam = info["perm"], info["applied"], info["use_cutmix"], info["lam"]
    assert sorted(perm) == list(range(b))
    xt, x2t = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(x[perm]).permute(0, 3, 1, 2)
    boxes = [ref.rand_bbox(h, w, float(info["lam_raw"][i]), *map(int, info["centre"][i])) for i in range(b)]
    np.testing.assert_array_equal(info["box"][cut], np.array(boxes)[cut])
    area_lam = np.array([ref.cutmix_lambda(bx, h, w) for bx in boxes], np.float32)
    np.testing.assert_array_equal(lam[applied & cut], area_lam[applied & cut])
    want = torch.where(torch.from_numpy(applied & cut)[:, None, None, None], ref.cutmix_per_sample(xt, x2t, boxes),
                       torch.where(torch.from_numpy(applied & ~cut)[:, None, None, None],
                                   ref.mixup_per_sample(xt, x2t, lam), xt))
    np.testing.assert_array_equal(out, want.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(targets, ref.mix_targets(torch.from_numpy(y), torch.from_numpy(y[perm]), lam, k))
    assert np.all(lam[~applied] == 1.0) and np.array_equal(out[~applied], x[~applied])
    assert abs(applied.mean() - 0.8) < 4 * np.sqrt(0.16 / b) and abs(cut.mean() - 0.5) < 4 * np.sqrt(0.25 / b)
    assert stats.kstest(info["lam_raw"][~cut], stats.beta(0.8, 0.8).cdf).pvalue > 1e-4
    bad = ref.mixup_per_sample(xt, x2t, np.float32(lam) * np.float32(1 + 1e-6))  # control: lambda 1 ulp-ish off
    assert not np.array_equal(out[applied & ~cut], bad.permute(0, 2, 3, 1).numpy()[applied & ~cut])


def test_cutmix_box_formula_matches_rand_bbox():
    """float32 box vs the peer's float64 rand_bbox on 20000 random lambdas and the exact-square boundaries."""
    rng = np.random.default_rng(1)
    for h, w in [(32, 32), (28, 28)]:
        lam = np.concatenate([rng.random(20000), 1 - (np.arange(w + 1) / w) ** 2, [0.0, 1.0]]).astype(np.float32)
        cy, cx = rng.integers(0, h, lam.size), rng.integers(0, w, lam.size)
        box, lam2 = jax.tree.map(np.asarray, jax.jit(M.cutmix_box, static_argnums=(3, 4))(lam, cy, cx, h, w))
        want = np.array([ref.rand_bbox(h, w, float(a), int(u), int(v)) for a, u, v in zip(lam, cy, cx)])
        np.testing.assert_array_equal(box, want)
        np.testing.assert_array_equal(lam2, np.array([ref.cutmix_lambda(bx, h, w) for bx in want], np.float32))


def test_make_mix_batch_mode_and_disabled():
    assert A.make_mix(mix_spec(aug_config()), 10) is None
    cfg = aug_config(mixup=True)
    cfg.mix_mode, cfg.mixup.alpha = "batch", 0.4
    mix = A.make_mix(mix_spec(cfg), 16, partner="flip")
    x = np.random.default_rng(2).standard_normal((16, 8, 8, 3)).astype(np.float32)
    y = np.arange(16)
    out, targets = map(np.asarray, mix(jax.random.key(1), x, y))
    lam = targets[np.arange(16), y]
    assert np.all(lam == lam[0]) and out.shape == x.shape and targets.shape == (16, 16)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    want = ref.mixup_per_sample(torch.from_numpy(x), torch.from_numpy(x[::-1].copy()), lam).numpy()
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="mix_mode"):
        cfg.mix_mode = "pixel"
        A.make_mix(mix_spec(cfg), 16)
