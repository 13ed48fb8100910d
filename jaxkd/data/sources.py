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

import numpy as np

from jaxkd.config.schema import SOURCE_KINDS
from jaxkd.data import decoded_cache, formats, tfds_builders
from jaxkd.data.dataset import LOCAL_ALTERNATIVES, DataError, Dataset, resize_images, validate

__all__ = ["DataError", "Dataset", "load_arrays", "validate", "resize_images", "load_npz", "load_digits",
           "SOURCE_KINDS", "LOCAL_ALTERNATIVES", "load_npy_dir", "save_npy_dir"]

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

    The file is read from scikit-learn's package data (``sklearn/datasets/data/digits.csv.gz``, 1,797 rows of 64
    pixels and the label) without importing scikit-learn: its import costs about 3.7 s of every run's start on this
    data, the read 0.03 s. tests/test_data_sources.py checks the arrays against ``sklearn.datasets.load_digits``.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(next(iter(spec.submodule_search_locations or ())), "datasets", "data", "digits.csv.gz") \
        if spec else None
    if path is None or not path.is_file():
        raise DataError("data.source=digits reads scikit-learn's bundled digits, which are not installed: "
                        "pip install scikit-learn (a dependency of jaxkd), or give another data.source")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    x = np.round(table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    y = table[:, -1].astype(np.int32)
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
        ds = formats.load_mnist_idx(os.path.expanduser(arg))
    elif kind == "cifar-python":
        ds = formats.load_cifar_python(os.path.expanduser(arg))
    elif kind == "folder":
        path = os.path.expanduser(arg)
        ds = decoded_cache.cached(path, image_size, lambda: formats.load_folder(path, image_size=image_size))
    elif kind == "tfds":
        ds = tfds_builders.load_tfds(arg, data_dir=os.path.expanduser(data_dir))
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
