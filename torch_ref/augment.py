"""Reference augmentations: torchvision's own transforms (PIL backend), and the peer's torch/numpy formulas.

Mirrors ``jaxkd.data.augment`` (and its helpers ``image_ops`` / ``autoaugment`` / ``augment_mix``) by name. The
torchvision half is torchvision itself (the test extra installs it, see ``_torchvision``): the AutoAugment policy
tables are ``AutoAugment(policy).policies``, magnitudes ``_augmentation_space``, ops ``_apply_op``, the affine matrix
``F._get_inverse_affine_matrix`` inside ``F.affine``, and AutoAugment / RandAugment / ColorJitter / RandomCrop run
their own ``forward`` with their random draws replaced by the given ones (``get_params``, or the ``torch.randint``
calls of ``RandAugment.forward``). The original project called these transforms with their defaults (SPEC.md §5;
interpolation NEAREST, fill 0), so nothing is adapted. Cutout / MixUp / CutMix are the peer's per-sample formulas
(SPEC §5) on NCHW torch tensors, given the random draws (centre, lambda, box) so that they can be compared exactly.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch
from PIL import Image

from torch_ref import _torchvision

_torchvision.load()  # (before torchvision is imported: see torch_ref._torchvision)
from torchvision import transforms as T  # noqa: E402
from torchvision.transforms import autoaugment as tv_autoaugment  # noqa: E402
from torchvision.transforms import functional as TF  # noqa: E402
from torchvision.transforms.functional import InterpolationMode  # noqa: E402

# ----------------------------------------------------------------------------------------------- torchvision (PIL)

_INTERPOLATION = {Image.NEAREST: InterpolationMode.NEAREST, Image.BILINEAR: InterpolationMode.BILINEAR}


def to_pil(img: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) with C in {1, 3} -> PIL 'L' / 'RGB'."""
    img = np.asarray(img, np.uint8)
    return Image.fromarray(img[..., 0], "L") if img.shape[-1] == 1 else Image.fromarray(img, "RGB")


def from_pil(img: Image.Image) -> np.ndarray:
    """PIL 'L' / 'RGB' -> uint8 (H, W, C)."""
    a = np.asarray(img, np.uint8)
    return a[..., None] if a.ndim == 2 else a


get_inverse_affine_matrix = TF._get_inverse_affine_matrix  # torchvision's, used by F.affine below


def affine(img: Image.Image, angle: float, translate, scale: float, shear, center=None,
           resample=Image.NEAREST) -> Image.Image:
    """torchvision ``F.affine`` on PIL (fill None = 0; centre (w/2, h/2) unless given)."""
    return TF.affine(img, angle=angle, translate=list(translate), scale=scale, shear=list(shear),
                     interpolation=_INTERPOLATION[resample], fill=None, center=center)


def rotate(img: Image.Image, angle: float, resample=Image.NEAREST) -> Image.Image:
    """torchvision ``F.rotate`` on PIL (expand False, centre None, fill None = 0)."""
    return TF.rotate(img, angle, interpolation=_INTERPOLATION[resample])


def random_crop(img: Image.Image, top: int, left: int, padding: int) -> Image.Image:
    """torchvision ``RandomCrop(size, padding)`` (fill 0) whose drawn offsets are (top, left)."""
    w, h = img.size
    crop = T.RandomCrop((h, w), padding=padding)
    crop.get_params = lambda _img, size: (int(top), int(left), *size)
    return crop(img)


def hflip(img: Image.Image) -> Image.Image:
    return TF.hflip(img)


def adjust_brightness(img, f):
    return TF.adjust_brightness(img, f)


def adjust_contrast(img, f):
    return TF.adjust_contrast(img, f)


def adjust_saturation(img, f):
    return TF.adjust_saturation(img, f)


def adjust_sharpness(img, f):
    return TF.adjust_sharpness(img, f)


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    return TF.adjust_hue(img, hue_factor)


def color_jitter(img: Image.Image, order, factors, enabled=(True, True, True, True)) -> Image.Image:
    """torchvision ``ColorJitter.forward`` whose draws are fn_idx = ``order`` and the factors (b, c, s, h); an op
    not ``enabled`` has factor None (its jitter 0), as torchvision's ``get_params`` returns it."""
    jitter = T.ColorJitter()
    drawn = [float(f) if on else None for f, on in zip(factors, enabled)]
    jitter.get_params = lambda *_ranges: (torch.tensor(np.array(order, np.int64)), *drawn)
    return jitter(img)


def augmentation_space(num_bins: int, image_size, randaugment: bool) -> dict:
    """torchvision ``RandAugment._augmentation_space`` (with Identity, no Invert) or ``AutoAugment``'s (Invert)."""
    owner = T.RandAugment() if randaugment else T.AutoAugment()
    return owner._augmentation_space(num_bins, tuple(image_size))


def apply_op(img: Image.Image, op_name: str, magnitude: float) -> Image.Image:
    """torchvision ``_apply_op`` on PIL (NEAREST, fill None = 0)."""
    return tv_autoaugment._apply_op(img, op_name, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)


def op_magnitude(op_name: str, bin_index: int | None, negate: bool, num_bins: int, image_size,
                 randaugment: bool) -> float:
    """The magnitude torchvision passes to ``_apply_op``: bin value (0.0 if magnitude-free), negated if signed."""
    mags, signed = augmentation_space(num_bins, image_size, randaugment)[op_name]
    m = float(mags[bin_index].item()) if (mags.ndim > 0 and bin_index is not None) else 0.0
    return -m if (signed and negate) else m


def randaugment(img: Image.Image, ops, negates, magnitude: int = 9, num_bins: int = 31) -> Image.Image:
    """torchvision ``RandAugment(len(ops), magnitude, num_bins).forward`` whose ``torch.randint`` draws are the op
    indices ``ops`` and, for signed ops, the signs (1 = negate, as ``if signed and torch.randint(2, (1,))``)."""
    ra = T.RandAugment(num_ops=len(ops), magnitude=int(magnitude), num_magnitude_bins=num_bins)
    n_ops = len(ra._augmentation_space(num_bins, (img.size[1], img.size[0])))
    ops, negates = [int(o) for o in ops], [int(bool(s)) for s in negates]
    drawn: list[int] = []

    def scripted_randint(high, size, *args, **kwargs):
        if high == n_ops:  # the op of the next round
            drawn.append(ops[len(drawn)])
            return torch.tensor([drawn[-1]])
        assert high == 2 and drawn, ("unexpected torch.randint call in RandAugment.forward", high)
        return torch.tensor([negates[len(drawn) - 1]])

    with mock.patch.object(tv_autoaugment.torch, "randint", scripted_randint):
        out = ra(img)
    assert len(drawn) == len(ops)
    return out


POLICIES = {name: [tuple(sub) for sub in T.AutoAugment(tv_autoaugment.AutoAugmentPolicy(name)).policies]
            for name in ("cifar10", "imagenet", "svhn")}  # torchvision's own tables
CIFAR10_POLICY = POLICIES["cifar10"]


def autoaugment(img: Image.Image, policy_id: int, probs, negates, policy: str = "cifar10") -> Image.Image:
    """torchvision ``AutoAugment(policy).forward`` whose ``get_params`` draws are ``policy_id``, ``probs`` (float32)
    and signs = 1 - negate (torchvision negates a signed magnitude when signs[i] == 0)."""
    aa = T.AutoAugment(tv_autoaugment.AutoAugmentPolicy(policy))
    signs = torch.tensor([0 if bool(n) else 1 for n in negates])
    aa.get_params = lambda n: (int(policy_id), torch.tensor(np.array(probs, np.float32)), signs)
    return aa(img)


def to_tensor_normalize(img: np.ndarray, mean, std) -> torch.Tensor:
    """torchvision ToTensor + Normalize on uint8 (H, W, C): float32 (C, H, W) = (x / 255 - mean) / std."""
    return TF.normalize(TF.to_tensor(to_pil(img)), list(mean), list(std))


# ----------------------------------------------------------------------------------------------- peer formulas


def cutout(img: torch.Tensor, length: int, cy: int, cx: int) -> torch.Tensor:
    """Peer Cutout (DeVries) on one normalised (C, H, W) tensor, given the drawn centre (cy, cx)."""
    h, w = img.shape[1], img.shape[2]
    mask = np.ones((h, w), np.float32)
    y1, y2 = np.clip(cy - length // 2, 0, h), np.clip(cy + length // 2, 0, h)
    x1, x2 = np.clip(cx - length // 2, 0, w), np.clip(cx + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return img * torch.from_numpy(mask).expand_as(img)


def rand_bbox(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """CutMix ``rand_bbox`` given the centre: returns (y1, y2, x1, x2) (numpy float64 as the original)."""
    cut_rat = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * cut_rat), int(height * cut_rat)
    x1, x2 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    y1, y2 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    return int(y1), int(y2), int(x1), int(x2)


def cutmix_lambda(box, height: int, width: int) -> float:
    """lam = 1 - box_area / (H W) (float64)."""
    y1, y2, x1, x2 = box
    return 1.0 - ((x2 - x1) * (y2 - y1) / (width * height))


def mixup_per_sample(x: torch.Tensor, x2: torch.Tensor, lam) -> torch.Tensor:
    """x~_i = lam_i x_i + (1 - lam_i) x2_i on NCHW float32 tensors, lam_i Python floats."""
    return torch.stack([float(l) * a + (1 - float(l)) * b for a, b, l in zip(x, x2, lam)])


def cutmix_per_sample(x: torch.Tensor, partner: torch.Tensor, boxes) -> torch.Tensor:
    """x~_i = x_i with x~_i[:, y1:y2, x1:x2] = partner_i[:, y1:y2, x1:x2] (NCHW)."""
    out = x.clone()
    for i, (y1, y2, x1, x2) in enumerate(boxes):
        out[i, :, y1:y2, x1:x2] = partner[i, :, y1:y2, x1:x2]
    return out


def mix_targets(y: torch.Tensor, y2: torch.Tensor, lam, num_classes: int) -> torch.Tensor:
    """Soft targets lam_i onehot(y_i) + (1 - lam_i) onehot(y2_i), float32 (B, K)."""
    lam = torch.from_numpy(np.array(lam, np.float32))[:, None]
    oh = torch.nn.functional.one_hot(y.long(), num_classes).float()
    oh2 = torch.nn.functional.one_hot(y2.long(), num_classes).float()
    return lam * oh + (1 - lam) * oh2
