"""The frozen settings the data pipeline and the augmentations run on, each built from a VALIDATED config.

:func:`jaxkd.config.validate` (the schema's RULES) is the only place that knows the config's defaults and allowed
ranges; these specs read each field as it is, with no defaults or checks of their own. Build them once, at the
entry: ``DataSpec.from_config(config.data)`` (it holds the :class:`AugmentSpec` and :class:`MixSpec` of
``config.data.augmentation``). This module imports nothing heavy (no JAX), so ``jaxkd.data`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AugmentSpec", "MixSpec", "DataSpec"]


@dataclass(frozen=True)
class AugmentSpec:
    """The per-sample training pipeline (``config.data.augmentation``'s image ops); None / False = op disabled.

    crop: RandomCrop padding. flip: RandomHorizontalFlip. rotation: RandomRotation degrees. translate: RandomAffine
    translate fraction. jitter: ColorJitter (brightness, contrast, saturation, hue). policy: AutoAugment policy.
    randaug: RandAugment (num_ops, magnitude). cutout: Cutout side length.
    """

    crop: int | None
    flip: bool
    rotation: float | None
    translate: float | None
    jitter: tuple[float, float, float, float] | None
    policy: str | None
    randaug: tuple[int, int] | None
    cutout: int | None

    @classmethod
    def from_config(cls, aug: Any) -> AugmentSpec:
        """From a validated ``config.data.augmentation``."""
        def on(name: str) -> bool:
            return bool(aug[name].enabled)

        jit = aug.color_jitter
        return cls(
            crop=int(aug.random_crop.padding) if on("random_crop") else None,
            flip=on("random_flip"),
            rotation=float(aug.random_rotation.degrees) if on("random_rotation") else None,
            translate=float(aug.random_affine.translate) if on("random_affine") else None,
            jitter=(tuple(float(v) for v in (jit.brightness, jit.contrast, jit.saturation, jit.hue))
                    if on("color_jitter") else None),
            policy=str(aug.auto_augment.policy) if on("auto_augment") else None,
            randaug=((int(aug.randaugment.num_ops), int(aug.randaugment.magnitude)) if on("randaugment") else None),
            cutout=int(aug.cutout.length) if on("cutout") else None,
        )


@dataclass(frozen=True)
class MixSpec:
    """MixUp / CutMix of the normalised batch: an alpha of None disables that method (both None: no mixing).

    mode: 'sample' (a draw per sample) or 'batch'; mix_prob: P(mixing); switch_prob: P(CutMix) when both are on.
    """

    mixup_alpha: float | None
    cutmix_alpha: float | None
    mode: str
    mix_prob: float
    switch_prob: float

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha is not None or self.cutmix_alpha is not None

    @classmethod
    def from_config(cls, aug: Any) -> MixSpec:
        """From a validated ``config.data.augmentation``."""
        return cls(
            mixup_alpha=float(aug.mixup.alpha) if aug.mixup.enabled else None,
            cutmix_alpha=float(aug.cutmix.alpha) if aug.cutmix.enabled else None,
            mode=str(aug.mix_mode), mix_prob=float(aug.mix_prob), switch_prob=float(aug.switch_prob),
        )


@dataclass(frozen=True)
class DataSpec:
    """What :class:`jaxkd.data.DataPipeline` needs from ``config.data``.

    eval_batch_size is resolved (the config's 0 means batch_size); mean / std are the explicit normalisation
    (empty: the dataset's SPEC values or the training split's statistics).
    """

    dataset: str
    batch_size: int
    eval_batch_size: int
    val_size: int
    max_examples: int
    placement: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    teacher_view: str
    augment: AugmentSpec
    mix: MixSpec

    @classmethod
    def from_config(cls, data: Any) -> DataSpec:
        """From a validated ``config.data``."""
        aug = data.augmentation
        return cls(
            dataset=str(data.dataset), batch_size=int(data.batch_size),
            eval_batch_size=int(data.eval_batch_size or data.batch_size), val_size=int(data.val_size),
            max_examples=int(data.max_examples), placement=str(data.placement),
            mean=tuple(float(v) for v in data.normalization.mean), std=tuple(float(v) for v in data.normalization.std),
            teacher_view=str(aug.teacher_view), augment=AugmentSpec.from_config(aug), mix=MixSpec.from_config(aug),
        )
