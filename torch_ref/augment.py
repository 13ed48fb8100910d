"""Reference augmentations: torchvision's PIL backend rebuilt on Pillow, and the peer's torch/numpy formulas.

Mirrors ``jaxkd.data.augment`` (and its helpers ``image_ops`` / ``autoaugment`` / ``augment_mix``). torchvision is not
installed here, so its PIL code paths are written out with Pillow calls and Python floats exactly as torchvision
calls them (``_apply_op``, ``_augmentation_space``, ``_get_inverse_affine_matrix``, ``F_pil.*``); magnitude bins use
``torch.linspace``. Cutout / MixUp / CutMix are the peer's per-sample formulas (SPEC §5) on NCHW torch tensors,
given the random draws (centre, lambda, box) so that they can be compared exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

# ----------------------------------------------------------------------------------------------- torchvision (PIL)


def to_pil(img: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) with C in {1, 3} -> PIL 'L' / 'RGB'."""
    img = np.asarray(img, np.uint8)
    return Image.fromarray(img[..., 0], "L") if img.shape[-1] == 1 else Image.fromarray(img, "RGB")


def from_pil(img: Image.Image) -> np.ndarray:
    """PIL 'L' / 'RGB' -> uint8 (H, W, C)."""
    a = np.asarray(img, np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _fill(img: Image.Image) -> dict:
    # torchvision _parse_fill(None): fill 0 for every band
    return {"fillcolor": 0 if len(img.getbands()) == 1 else (0,) * len(img.getbands())}


def get_inverse_affine_matrix(center, angle, translate, scale, shear) -> list[float]:
    """torchvision ``_get_inverse_affine_matrix`` (float64)."""
    rot = math.radians(angle)
    sx, sy = [math.radians(s) for s in shear]
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    matrix = [d, -b, 0.0, -c, a, 0.0]
    matrix = [x / scale for x in matrix]
    matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
    matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
    matrix[2] += cx
    matrix[5] += cy
    return matrix


def affine(img: Image.Image, angle: float, translate, scale: float, shear, center=None,
           resample=Image.NEAREST) -> Image.Image:
    """torchvision ``F.affine`` on PIL: centre (w/2, h/2) unless given, fill 0."""
    w, h = img.size
    if center is None:
        center = [w * 0.5, h * 0.5]
    matrix = get_inverse_affine_matrix(center, angle, translate, scale, shear)
    return img.transform(img.size, Image.AFFINE, matrix, resample, **_fill(img))


def rotate(img: Image.Image, angle: float, resample=Image.NEAREST) -> Image.Image:
    """torchvision ``F.rotate`` on PIL (expand False, centre None, fill 0)."""
    return img.rotate(angle, resample, False, None, **_fill(img))


def random_crop(img: Image.Image, top: int, left: int, padding: int) -> Image.Image:
    """torchvision RandomCrop(size, padding) given its offsets: ``F.pad`` (ImageOps.expand, fill 0) then crop."""
    w, h = img.size
    padded = ImageOps.expand(img, border=padding, fill=0)
    return padded.crop((left, top, left + w, top + h))


def hflip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def adjust_brightness(img, f):
    return ImageEnhance.Brightness(img).enhance(f)


def adjust_contrast(img, f):
    return ImageEnhance.Contrast(img).enhance(f)


def adjust_saturation(img, f):
    return ImageEnhance.Color(img).enhance(f)


def adjust_sharpness(img, f):
    return ImageEnhance.Sharpness(img).enhance(f)


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision ``F_pil.adjust_hue``; ``np.uint8(hue_factor * 255)`` written as numpy 1.x evaluated it
    (truncate toward zero, wrap modulo 256), since numpy 2 refuses negative values."""
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor ({hue_factor}) is not in [-0.5, 0.5].")
    if img.mode in {"L", "1", "I", "F"}:
        return img
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.uint8(int(hue_factor * 255) % 256)
    h = Image.fromarray(np_h, "L")
    return Image.merge("HSV", (h, s, v)).convert(img.mode)


def color_jitter(img: Image.Image, order, factors, enabled=(True, True, True, True)) -> Image.Image:
    """torchvision ColorJitter.forward given fn_idx = ``order`` and the 4 drawn factors (b, c, s, h)."""
    fns = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    for i in order:
        if enabled[int(i)]:
            img = fns[int(i)](img, float(factors[int(i)]))
    return img


def augmentation_space(num_bins: int, image_size, randaugment: bool) -> dict:
    """torchvision ``_augmentation_space(num_bins, image_size=(height, width))`` (Identity only for RandAugment,
    Invert only for AutoAugment)."""
    height, width = image_size
    space = {
        "ShearX": (torch.linspace(0.0, 0.3, num_bins), True),
        "ShearY": (torch.linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (torch.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (torch.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (torch.linspace(0.0, 30.0, num_bins), True),
        "Brightness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Color": (torch.linspace(0.0, 0.9, num_bins), True),
        "Contrast": (torch.linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int(), False),
        "Solarize": (torch.linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (torch.tensor(0.0), False),
        "Equalize": (torch.tensor(0.0), False),
    }
    if randaugment:
        return {"Identity": (torch.tensor(0.0), False), **space}
    return {**space, "Invert": (torch.tensor(0.0), False)}


def apply_op(img: Image.Image, op_name: str, magnitude: float) -> Image.Image:
    """torchvision ``_apply_op`` (PIL, NEAREST, fill None -> 0)."""
    if op_name == "ShearX":
        return affine(img, 0.0, [0, 0], 1.0, [math.degrees(math.atan(magnitude)), 0.0], center=[0, 0])
    if op_name == "ShearY":
        return affine(img, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(magnitude))], center=[0, 0])
    if op_name == "TranslateX":
        return affine(img, 0.0, [int(magnitude), 0], 1.0, [0.0, 0.0])
    if op_name == "TranslateY":
        return affine(img, 0.0, [0, int(magnitude)], 1.0, [0.0, 0.0])
    if op_name == "Rotate":
        return rotate(img, magnitude)
    if op_name == "Brightness":
        return adjust_brightness(img, 1.0 + magnitude)
    if op_name == "Color":
        return adjust_saturation(img, 1.0 + magnitude)
    if op_name == "Contrast":
        return adjust_contrast(img, 1.0 + magnitude)
    if op_name == "Sharpness":
        return adjust_sharpness(img, 1.0 + magnitude)
    if op_name == "Posterize":
        return ImageOps.posterize(img, int(magnitude))
    if op_name == "Solarize":
        return ImageOps.solarize(img, magnitude)
    if op_name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op_name == "Equalize":
        return ImageOps.equalize(img)
    if op_name == "Invert":
        return ImageOps.invert(img)
    if op_name == "Identity":
        return img
    raise ValueError(f"The provided operator {op_name} is not recognized.")


def op_magnitude(op_name: str, bin_index: int | None, negate: bool, num_bins: int, image_size,
                 randaugment: bool) -> float:
    """The magnitude torchvision passes to ``_apply_op``: bin value (0.0 if magnitude-free), negated if signed."""
    mags, signed = augmentation_space(num_bins, image_size, randaugment)[op_name]
    m = float(mags[bin_index].item()) if (mags.ndim > 0 and bin_index is not None) else 0.0
    return -m if (signed and negate) else m


def randaugment(img: Image.Image, ops, negates, magnitude: int = 9, num_bins: int = 31) -> Image.Image:
    """torchvision RandAugment.forward given the drawn op indices and signs."""
    names = list(augmentation_space(num_bins, (img.size[1], img.size[0]), True))
    for op, neg in zip(ops, negates):
        name = names[int(op)]
        img = apply_op(img, name, op_magnitude(name, magnitude, bool(neg), num_bins, (img.size[1], img.size[0]), True))
    return img


CIFAR10_POLICY = [
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
]


def autoaugment(img: Image.Image, policy_id: int, probs, negates, policy=CIFAR10_POLICY) -> Image.Image:
    """torchvision AutoAugment.forward given ``get_params`` draws (sign 'negate' = torchvision's signs[i] == 0)."""
    size = (img.size[1], img.size[0])
    for i, (name, p, mag_id) in enumerate(policy[int(policy_id)]):
        if torch.tensor(float(probs[i]), dtype=torch.float32) <= p:
            img = apply_op(img, name, op_magnitude(name, mag_id, bool(negates[i]), 10, size, False))
    return img


def to_tensor_normalize(img: np.ndarray, mean, std) -> torch.Tensor:
    """torchvision ToTensor + Normalize on uint8 (H, W, C): float32 (C, H, W) = (x / 255 - mean) / std."""
    t = torch.from_numpy(np.array(np.asarray(img, np.uint8).transpose(2, 0, 1))).to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return t.sub(m).div(s)


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
