"""The in-memory :class:`Dataset` every ``data.source`` becomes, its checks (:func:`validate`), the one error type of
bad data (:class:`DataError`) and the host-side resize. The loaders (jaxkd.data.sources, .formats, .tfds_builders,
.decoded_cache) import this module; it imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxkd.errors import JaxkdError

__all__ = ["DataError", "Dataset", "validate", "resize_images", "LOCAL_ALTERNATIVES"]

#: Shown whenever a download cannot happen: the sources that need no network.
LOCAL_ALTERNATIVES = ("use a local source instead: --config.data.source=npz:PATH (x_train, y_train, x_test, y_test), "
                      "npy:DIR (the same as .npy files, memory-mapped), "
                      "mnist-idx:DIR (MNIST idx files), cifar-python:PATH (cifar-10-python.tar.gz or "
                      "cifar-10-batches-py/), folder:PATH (split/class/image dir or .tar.gz), or digits (bundled, "
                      "no download)")


class DataError(JaxkdError, ValueError):
    """Data that cannot be used: the one-line message names the file or field, the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled image dataset held in host memory.

    Attributes:
      x_train: uint8 (N_train, H, W, C) images, C in {1, 3}.
      y_train: int32 (N_train,) labels in [0, num_classes).
      x_test: uint8 (N_test, H, W, C), same H, W, C as x_train.
      y_test: int32 (N_test,).
      class_names: one name per class; ``num_classes = len(class_names)``.
      name: short dataset name ('mnist', 'cifar10', 'digits', or the file / folder stem).
      source: the ``data.source`` string it was loaded from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# Checks shared by every loader

def _images(where: str, key: str, x) -> np.ndarray:
    """Checks one image array and returns it as uint8 (N, H, W, C); (N, H, W) gets C = 1."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        fix = (" (for floats in [0, 1] convert with np.round(x * 255).astype(np.uint8))"
               if np.issubdtype(x.dtype, np.floating) else " (cast with x.astype(np.uint8) if the values are 0..255)")
        raise DataError(f"{where}: {key} has dtype {x.dtype}; expected uint8 pixels 0..255{fix}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{where}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C = 1 or 3")
    if x.shape[-1] not in (1, 3):
        if x.shape[1] in (1, 3):
            raise DataError(f"{where}: {key} has shape {x.shape}, which looks channels-first (N, C, H, W); "
                            f"transpose it to (N, H, W, C) with x.transpose(0, 2, 3, 1)")
        raise DataError(f"{where}: {key} has shape {x.shape}; expected (N, H, W, C) with C = 1 (grayscale) or "
                        f"3 (RGB)")
    if x.shape[0] == 0:
        raise DataError(f"{where}: {key} is empty (0 images)")
    return np.ascontiguousarray(x)


def _labels(where: str, key: str, y, n: int) -> np.ndarray:
    """Checks one label array (integers, one per image) and returns it as int32 (N,)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: {key} has shape {y.shape}; expected integer class indices of shape ({n},)")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{where}: {key} has dtype {y.dtype}; expected integer class indices (not one-hot or float)")
    if len(y) != n:
        raise DataError(f"{where}: {key} has {len(y)} labels but there are {n} images")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{where}: {key} has label {int(y.min())}; labels must be class indices >= 0")
    return y.astype(np.int32)


def validate(where: str, x_train, y_train, x_test, y_test,
             class_names: Sequence[str] | None = None, num_classes: int = 0) -> tuple:
    """Checks and normalises the four arrays of a dataset.

    Args:
      where: the source (file, folder) named in error messages.
      x_train, x_test: uint8 images (N, H, W) or (N, H, W, C), C in {1, 3}.
      y_train, y_test: integer labels (N,).
      class_names: optional class names; fixes ``num_classes = len(class_names)``.
      num_classes: optional number of classes (0 = from class_names, else max(y_train) + 1).
    Returns:
      (x_train, y_train, x_test, y_test, class_names): uint8 NHWC, int32 labels, tuple of str.
    Raises:
      DataError: wrong dtype or shape, label count mismatch, labels out of range, train/test image shapes differ.
    """
    x_train = _images(where, "x_train", x_train)
    x_test = _images(where, "x_test", x_test)
    y_train = _labels(where, "y_train", y_train, len(x_train))
    y_test = _labels(where, "y_test", y_test, len(x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: train images are {'x'.join(map(str, x_train.shape[1:]))} but test images are "
                        f"{'x'.join(map(str, x_test.shape[1:]))} (H x W x C); both splits must have one shape "
                        f"(resize with --config.data.image_size=N, or fix the data)")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes and num_classes != len(class_names):
            raise DataError(f"{where}: {len(class_names)} class names but num_classes = {num_classes}")
        num_classes = len(class_names)
    if not num_classes:
        num_classes = int(y_train.max()) + 1
        hint = "y_train's classes"
    else:
        hint = f"{num_classes} classes"
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        top = int(y.max())
        if top >= num_classes:
            raise DataError(f"{where}: {key} has label {top}, out of range for {hint} (0..{num_classes - 1}); "
                            f"labels must be class indices (add a class_names list naming every class)")
    if class_names is None:
        class_names = tuple(str(i) for i in range(num_classes))
    return x_train, y_train, x_test, y_test, class_names


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (Pillow, as torchvision's Resize on PIL images) of uint8 (N, H, W, C) to (N, size, size, C)."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    from PIL import Image

    out = np.empty((x.shape[0], size, size, x.shape[3]), np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        out[i] = np.asarray(pil.resize((size, size), Image.BILINEAR)).reshape(size, size, -1)
    return out
