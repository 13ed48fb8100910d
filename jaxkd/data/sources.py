"""Dataset sources: every supported ``data.source`` string becomes the same in-memory :class:`Dataset`.

``data.source`` is one string (see :func:`load_arrays`):

=====================  ====================================================================================
``tfds:NAME``          a TensorFlow-Datasets dataset, read without TensorFlow (:mod:`jaxkd.data.tfds_builders`)
``npz:PATH``           an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (+ optional ``class_names``)
``npy:DIR``            a folder of ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy`` (+ optional
                       ``class_names.json``); the images are memory-mapped, never read whole (data larger than RAM
                       or the device; write one from any source with ``python -m jaxkd.data export``)
``mnist-idx:DIR``      the original MNIST idx files (plain or ``.gz``; a torchvision ``MNIST/raw`` folder works)
``cifar-python:PATH``  the CIFAR-10/100 python archive (``.tar.gz``) or its extracted ``cifar-*-py*`` folder
``folder:PATH``        images laid out ``split/class/image`` (``train`` and ``test``), a directory or .tar(.gz)
``digits``             scikit-learn's bundled 8×8 handwritten digits (1,797 real images; no download)
=====================  ====================================================================================

Every loader returns uint8 NHWC images (grayscale has C = 1) and int32 labels, checked by :func:`validate`; bad
data raises :class:`DataError` with one line naming the file or field and the fix. Nothing here touches the
network except the TFDS route when it must download (and it first checks, in seconds, that it can).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["DataError", "Dataset", "load_arrays", "validate", "resize_images", "load_npz", "load_digits",
           "SOURCE_KINDS", "LOCAL_ALTERNATIVES", "load_npy_dir", "save_npy_dir"]

SOURCE_KINDS = ("tfds:", "npz:", "npy:", "mnist-idx:", "cifar-python:", "folder:", "digits")

#: Shown whenever a download cannot happen: the sources that need no network.
LOCAL_ALTERNATIVES = ("use a local source instead: --config.data.source=npz:PATH (x_train, y_train, x_test, y_test), "
                      "npy:DIR (the same as .npy files, memory-mapped), "
                      "mnist-idx:DIR (MNIST idx files), cifar-python:PATH (cifar-10-python.tar.gz or "
                      "cifar-10-batches-py/), folder:PATH (split/class/image dir or .tar.gz), or digits (bundled, "
                      "no download)")


class DataError(ValueError):
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


# ----------------------------------------------------------------------------------------------------------------
# npz and digits (the other formats live in jaxkd.data.formats, TFDS in jaxkd.data.tfds_builders)

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str) -> Dataset:
    """Reads an ``.npz`` with x_train / y_train / x_test / y_test (and optional class_names); no pickles."""
    where = f"npz:{path}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: file not found (expected an .npz with {', '.join(NPZ_KEYS)})")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, OSError, ValueError: not an npz
        raise DataError(f"{where}: cannot read as .npz ({type(e).__name__}: {e}); save it with np.savez") from None
    with z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise DataError(f"{where}: key {', '.join(repr(k) for k in missing)} missing (expected "
                            f"{', '.join(NPZ_KEYS)}; found {', '.join(z.files) or 'none'})")
        try:
            arrays = [z[k] for k in NPZ_KEYS]
            names = z["class_names"].tolist() if "class_names" in z.files else None
        except ValueError as e:  # object arrays need pickle
            raise DataError(f"{where}: {e} (store plain numeric arrays and class_names as a str array)") from None
    x_train, y_train, x_test, y_test, names = validate(where, *arrays, class_names=names)
    return Dataset(x_train, y_train, x_test, y_test, names, name=Path(path).stem, source=where)


def load_npy_dir(path: str) -> Dataset:
    """Reads a folder of x_train.npy, y_train.npy, x_test.npy, y_test.npy (+ optional class_names.json, a list of
    str). The image files are memory-mapped (``np.load(mmap_mode='r')``): pages are read when a batch needs them."""
    import json

    where = f"npy:{path}"
    if not os.path.isdir(path):
        raise DataError(f"{where}: folder not found (expected {', '.join(k + '.npy' for k in NPZ_KEYS)}; write one "
                        f"with python -m jaxkd.data export --config PRESET --out {path})")
    arrays = []
    for key in NPZ_KEYS:
        f = os.path.join(path, key + ".npy")
        if not os.path.isfile(f):
            raise DataError(f"{where}: {key}.npy missing (expected {', '.join(k + '.npy' for k in NPZ_KEYS)})")
        try:
            arrays.append(np.load(f, mmap_mode="r" if key.startswith("x") else None, allow_pickle=False))
        except Exception as e:  # ValueError (pickled / bad header), OSError
            raise DataError(f"{where}: cannot read {key}.npy ({type(e).__name__}: {e}); save it with np.save") from None
    names = None
    names_file = os.path.join(path, "class_names.json")
    if os.path.isfile(names_file):
        try:
            names = json.loads(Path(names_file).read_text())
            assert isinstance(names, list) and all(isinstance(n, str) for n in names)
        except (ValueError, AssertionError, UnicodeDecodeError):
            raise DataError(f"{where}: class_names.json must be a JSON list of strings, one per class") from None
    x_train, y_train, x_test, y_test, names = validate(where, *arrays, class_names=names)
    return Dataset(x_train, y_train, x_test, y_test, names, name=Path(path).name, source=where)


def save_npy_dir(ds: Dataset, out: str | os.PathLike) -> Path:
    """Writes ``ds`` as an ``npy:`` folder (the four arrays as .npy, class_names.json), each file atomically."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"x_train.npy": ds.x_train, "y_train.npy": ds.y_train, "x_test.npy": ds.x_test, "y_test.npy": ds.y_test}
    for name, a in files.items():
        tmp = out / (name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(a), allow_pickle=False)
        os.replace(tmp, out / name)
    (out / "class_names.json").write_text(json.dumps(list(ds.class_names)) + "\n")
    return out


DIGITS_TEST = 360  # the last 360 of sklearn's 1,797 digits (about 20 %, written by other people) are the test split


def load_digits() -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits as uint8 (N, 8, 8, 1).

    Pixels 0..16 are scaled to 0..255 by ``round(v * 255 / 16)``. Split: the first 1,437 images train, the last 360
    test (fixed, no randomness; the data set is ordered by writer, so the test digits come from other writers).
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int32)
    n = len(x) - DIGITS_TEST
    arrays = validate("digits", x[:n], y[:n], x[n:], y[n:], class_names=[str(i) for i in range(10)])
    return Dataset(*arrays[:4], arrays[4], name="digits", source="digits")


# ----------------------------------------------------------------------------------------------------------------

def load_arrays(source: str, *, data_dir: str = "", image_size: int = 0, num_classes: int = 0) -> Dataset:
    """Loads the dataset named by a ``data.source`` string.

    Args:
      source: ``tfds:NAME`` | ``npz:PATH`` | ``npy:DIR`` | ``mnist-idx:DIR`` | ``cifar-python:PATH`` | ``folder:PATH``
        | ``digits``.
      data_dir: TFDS data_dir ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets); also where jaxkd's own TFDS builders
        look for archives (``data_dir``, ``data_dir/downloads/manual``) before downloading.
      image_size: 0 keeps the native size; > 0 resizes every image to (image_size, image_size) bilinearly.
      num_classes: 0 = from the data; > 0 additionally checks that every label is < num_classes.
    Returns:
      Dataset with uint8 NHWC images and int32 labels.
    Raises:
      DataError: unknown source kind, missing file, bad shapes / dtypes / labels, unreadable images, no network.
    """
    kind, _, arg = source.partition(":")
    kind = kind.strip()
    if kind == "digits" and not arg:
        ds = load_digits()
    elif not arg and kind != "digits":
        raise DataError(f"data.source {source!r}: expected one of tfds:NAME, npz:PATH, npy:DIR, mnist-idx:DIR, "
                        f"cifar-python:PATH, folder:PATH or digits")
    elif kind == "npz":
        ds = load_npz(os.path.expanduser(arg))
    elif kind == "npy":
        ds = load_npy_dir(os.path.expanduser(arg))
    elif kind == "mnist-idx":
        from jaxkd.data.formats import load_mnist_idx
        ds = load_mnist_idx(os.path.expanduser(arg))
    elif kind == "cifar-python":
        from jaxkd.data.formats import load_cifar_python
        ds = load_cifar_python(os.path.expanduser(arg))
    elif kind == "folder":
        from jaxkd.data.decoded_cache import cached
        from jaxkd.data.formats import load_folder
        path = os.path.expanduser(arg)
        ds = cached(path, image_size, lambda: load_folder(path, image_size=image_size))
    elif kind == "tfds":
        from jaxkd.data.tfds_builders import load_tfds
        ds = load_tfds(arg, data_dir=os.path.expanduser(data_dir))
    else:
        raise DataError(f"data.source {source!r}: unknown kind {kind!r}; expected one of tfds:NAME, npz:PATH, "
                        f"npy:DIR, mnist-idx:DIR, cifar-python:PATH, folder:PATH or digits")
    if num_classes:
        top = max(int(ds.y_train.max()), int(ds.y_test.max()))
        if top >= num_classes:
            raise DataError(f"{source}: label {top} is out of range for num_classes = {num_classes} "
                            f"(the data has {ds.num_classes} classes: set --config.model.num_classes="
                            f"{ds.num_classes})")
    if image_size and ds.image_shape[:2] != (image_size, image_size):
        ds = dataclasses.replace(ds, x_train=resize_images(ds.x_train, image_size),
                                 x_test=resize_images(ds.x_test, image_size))
    return dataclasses.replace(ds, source=source)
