"""Parsers for the local file formats: MNIST idx, the CIFAR python archive, and image folders (or tars of them).

All parsing is numpy (and Pillow for encoded images); every problem raises :class:`~jaxkd.data.sources.DataError`
naming the file. Used by :func:`jaxkd.data.sources.load_arrays` and by the TFDS builders.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import os
import pickle
import sys
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from jaxkd.data.dataset import DataError, Dataset, validate

__all__ = ["read_idx", "find_mnist_idx", "load_mnist_idx", "read_cifar_batches", "load_cifar_python",
           "load_folder", "IMAGE_EXTENSIONS", "MNIST_IDX_FILES"]

# ----------------------------------------------------------------------------------------------------------------
# MNIST idx

MNIST_IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
                   "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one idx file (plain or gzip): magic ``0 0 0x08 ndim``, ndim big-endian int32 sizes, uint8 data.

    Returns:
      uint8 array with the header's shape (images (N, H, W), labels (N,)).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read idx file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != 0x08:
        raise DataError(f"{path}: idx data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: idx header truncated")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: idx header says shape {shape} ({int(np.prod(shape))} bytes) but the file holds "
                        f"{data.size} bytes (truncated or corrupt download)")
    return data.reshape(shape)


def find_mnist_idx(directory: str | Path) -> dict[str, Path] | None:
    """The four MNIST idx files in ``directory`` (or its ``MNIST/raw`` / ``raw`` subfolder), plain or .gz.

    Returns a dict x_train/y_train/x_test/y_test -> path, or None when any is missing. Accepts the
    ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte`` spellings.
    """
    directory = Path(directory)
    for d in (directory, directory / "MNIST" / "raw", directory / "raw"):
        found = {}
        for key, base in MNIST_IDX_FILES.items():
            for name in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == 4:
            return found
    return None


def load_mnist_idx(directory: str) -> Dataset:
    """MNIST (or Fashion-MNIST) from the original idx files in ``directory``; classes '0'..'9'."""
    where = f"mnist-idx:{directory}"
    if not os.path.isdir(directory):
        raise DataError(f"{where}: directory not found (expected the four MNIST idx files, e.g. "
                        f"{MNIST_IDX_FILES['x_train']}.gz)")
    files = find_mnist_idx(directory)
    if files is None:
        raise DataError(f"{where}: MNIST idx files missing; expected {', '.join(MNIST_IDX_FILES.values())} "
                        f"(plain or .gz) in the folder or its MNIST/raw subfolder")
    arrays = {k: read_idx(p) for k, p in files.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3:
            raise DataError(f"{files[key]}: expected 3-D images (N, H, W), got shape {arrays[key].shape}")
    for key in ("y_train", "y_test"):
        if arrays[key].ndim != 1:
            raise DataError(f"{files[key]}: expected 1-D labels (N,), got shape {arrays[key].shape}")
    out = validate(where, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   num_classes=10)
    return Dataset(*out, name="mnist", source=where)


# ----------------------------------------------------------------------------------------------------------------
# CIFAR python (pickled batches)

# Only what numpy arrays and Python 2 byte strings need: a CIFAR pickle that names anything else is refused.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        d = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DataError(f"{where}: not a CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: not a CIFAR python batch (a {type(d).__name__}, expected a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_batch(d: dict, where: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d or label_key not in d:
        raise DataError(f"{where}: key 'data' or '{label_key}' missing (found {', '.join(map(str, d))})")
    x = np.asarray(d["data"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{where}: 'data' is {x.dtype} {x.shape}; expected uint8 (N, 3072) rows of R, G, B planes")
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = np.asarray(d[label_key])
    if len(y) != len(x):
        raise DataError(f"{where}: {len(y)} labels for {len(x)} images")
    return x, y


_CIFAR_LAYOUTS = {  # name -> (train members, test member, meta member, label key, class-name key)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": (["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


def read_cifar_batches(read: Callable[[str], bytes | None], where: str) -> Dataset:
    """Builds the dataset from CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) pickles.

    ``read(name)`` returns the bytes of a member (by base name) or None when it is absent.
    """
    for name, (train, test, meta, label_key, names_key) in _CIFAR_LAYOUTS.items():
        blobs = {m: read(m) for m in train + [test]}
        if all(b is None for b in blobs.values()):
            continue
        missing = [m for m, b in blobs.items() if b is None]
        if missing:
            raise DataError(f"{where}: {name} batch {', '.join(missing)} missing (expected {', '.join(blobs)})")
        parts = [_cifar_batch(_unpickle(blobs[m], f"{where}/{m}"), f"{where}/{m}", label_key) for m in train]
        x_test, y_test = _cifar_batch(_unpickle(blobs[test], f"{where}/{test}"), f"{where}/{test}", label_key)
        meta_blob = read(meta)
        class_names = None
        if meta_blob is not None:
            names = _unpickle(meta_blob, f"{where}/{meta}").get(names_key)
            if names is not None:
                class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        out = validate(where, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                       x_test, y_test, class_names=class_names, num_classes=0 if class_names else
                       (10 if name == "cifar10" else 100))
        return Dataset(*out, name=name, source=where)
    raise DataError(f"{where}: no CIFAR batches found (expected data_batch_1..5 and test_batch of "
                    f"cifar-10-python.tar.gz, or train and test of cifar-100-python.tar.gz)")


def load_cifar_python(path: str) -> Dataset:
    """CIFAR-10/100 from the python archive (.tar.gz), its extracted folder, or a folder holding either.

    A torchvision ``./data`` download works as is (``./data/cifar-10-batches-py`` or the tar.gz beside it).
    """
    where = f"cifar-python:{path}"
    p = Path(path)
    if p.is_dir():
        for sub in ("cifar-10-batches-py", "cifar-100-python"):
            if (p / sub).is_dir():
                p = p / sub
                break
        else:
            for arch in ("cifar-10-python.tar.gz", "cifar-100-python.tar.gz"):
                if not any(p.glob("data_batch_*")) and (p / arch).is_file():
                    p = p / arch
                    break
    if p.is_dir():
        def read_dir(name):
            f = p / name
            return f.read_bytes() if f.is_file() else None
        return read_cifar_batches(read_dir, where)
    if not p.is_file():
        raise DataError(f"{where}: not found (expected cifar-10-python.tar.gz or its cifar-10-batches-py folder)")
    try:
        with tarfile.open(p, "r:*") as tf:
            members = {Path(m.name).name: m for m in tf.getmembers() if m.isfile()}

            def read_tar(name):
                m = members.get(name)
                return tf.extractfile(m).read() if m is not None else None
            return read_cifar_batches(read_tar, where)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{where}: cannot read the archive ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------------------------
# Image folders: split/class/image, as a directory or a .tar / .tar.gz

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
SPLITS = ("train", "test")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _decode(blob: bytes, name: str, size: int = 0) -> tuple[np.ndarray, bool]:
    """(image, was 16-bit): one image decoded to uint8 (H, W) for grayscale files, (H, W, 3) RGB for everything
    else; ``size`` > 0 resizes it to (size, size) bilinearly. 16-bit grayscale (PIL modes I;16*, and I with values
    < 2**16) is scaled to 8 bits (v / 257, rounded); 32-bit integer and float images are refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:
            im.load()
            if im.mode in _GRAY_MODES:
                if im.mode.startswith("I"):
                    wide = np.asarray(im, dtype=np.int64)
                    if wide.min() < 0 or wide.max() >= 2 ** 16:
                        raise DataError(f"{name}: a 32-bit integer image (values {wide.min()}..{wide.max()}); save "
                                        "8- or 16-bit images")
                    out = Image.fromarray(np.round(wide / 257.0).astype(np.uint8), "L")
                elif im.mode == "F":
                    raise DataError(f"{name}: a floating-point image (PIL mode F); save 8- or 16-bit images")
                else:
                    out = im if im.mode == "L" else im.convert("L")
            else:
                out = im if im.mode == "RGB" else im.convert("RGB")
            if size and out.size != (size, size):
                out = out.resize((size, size), Image.BILINEAR)
            return np.asarray(out), im.mode.startswith("I")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: unreadable image ({type(e).__name__}: {e}); remove or replace the file") from None


def _entries(names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(split, class, name) for every image path laid out ``[prefix/]split/class/file``."""
    out = []
    for name in names:
        parts = Path(name).parts
        if len(parts) < 3 or parts[-1].startswith(".") or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            continue
        if parts[-3] in SPLITS:
            out.append((parts[-3], parts[-2], name))
    return sorted(out, key=lambda e: (SPLITS.index(e[0]), e[1], e[2]))  # train then test; by class, file name


def load_folder(path: str, *, image_size: int = 0, workers: int = 0) -> Dataset:
    """Images laid out ``split/class/image`` (splits ``train`` and ``test``) in a directory or a .tar(.gz).

    Classes are the sorted class folder names of ``train``; images are sorted by (class, file name). Grayscale files
    give C = 1 when every image is grayscale, else everything is converted to RGB. All images must have one size
    (or give ``image_size`` to resize each to (image_size, image_size) as it is decoded). Decoding runs on
    ``workers`` threads (0 = one per CPU core).
    """
    where = f"folder:{path}"
    p = Path(path)
    if p.is_dir():
        files = [str(f.relative_to(p)) for f in p.rglob("*") if f.is_file()]
        entries = _entries(files)
        dirs = _class_dirs(str(d.relative_to(p)) for d in p.rglob("*") if d.is_dir())

        def blobs():
            for _, _, name in entries:
                try:
                    yield (p / name).read_bytes()
                except OSError as e:
                    raise DataError(f"{p / name}: cannot read ({e})") from None
        label = lambda name: str(p / name)  # noqa: E731
        return _build(where, entries, blobs(), label, workers, image_size, dirs)
    if not p.is_file():
        raise DataError(f"{where}: not found (expected a folder or .tar/.tar.gz laid out train/CLASS/IMAGE and "
                        f"test/CLASS/IMAGE)")
    try:
        with tarfile.open(p, "r:*") as tf:
            every = tf.getmembers()
            members = {m.name: m for m in every if m.isfile()}
            entries = _entries(members)
            dirs = _class_dirs(m.name for m in every if m.isdir())
            order = sorted(entries, key=lambda e: members[e[2]].offset)  # read the archive front to back
            data: dict[str, bytes] = {}
            for _, _, name in order:
                data[name] = tf.extractfile(members[name]).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{where}: cannot read the archive ({type(e).__name__}: {e})") from None
    label = lambda name: f"{p}:{name}"  # noqa: E731
    return _build(where, entries, (data.pop(name) for _, _, name in entries), label, workers, image_size, dirs)


def _class_dirs(names: Iterable[str]) -> set[tuple[str, str]]:
    """(split, class) of every folder laid out ``[prefix/]split/class``."""
    return {(Path(n).parts[-2], Path(n).parts[-1]) for n in names
            if len(Path(n).parts) >= 2 and Path(n).parts[-2] in SPLITS}


def _build(where, entries, blobs, label, workers, size, dirs=frozenset()) -> Dataset:
    by_split = {s: [e for e in entries if e[0] == s] for s in SPLITS}
    missing = [s for s in SPLITS if not by_split[s]]
    if missing:
        raise DataError(f"{where}: no images under {' or '.join(s + '/' for s in missing)} (expected "
                        f"train/CLASS/IMAGE and test/CLASS/IMAGE, images {', '.join(IMAGE_EXTENSIONS[:3])}, ...)")
    class_names = sorted({c for _, c, _ in by_split["train"]})
    filled = {(s, c) for s, c, _ in entries}
    empty = sorted(f"{s}/{c}" for s, c in set(dirs) - filled)
    if empty:  # a class silently dropped (train) or never tested (test) changes the experiment
        raise DataError(f"{where}: class folder(s) {', '.join(empty[:5])} hold no images (of "
                        f"{', '.join(IMAGE_EXTENSIONS[:3])}, ...); add the images or remove the folder(s)")
    extra = sorted({c for _, c, _ in by_split["test"]} - set(class_names))
    if extra:
        raise DataError(f"{where}: test class folder(s) {', '.join(extra)} have no train/ folder; every test class "
                        f"must also be a train class")
    index = {c: i for i, c in enumerate(class_names)}
    workers = workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(lambda item: _decode(item[1], label(item[0][2]), size), zip(entries, blobs),
                               chunksize=256) if workers > 1 else
                      (_decode(b, label(e[2]), size) for e, b in zip(entries, blobs)))
    wide = sum(w for _, w in images)
    images = [im for im, _ in images]
    shapes = {}
    for e, im in zip(entries, images):
        shapes.setdefault(im.shape[:2], e[2])
    if len(shapes) > 1:
        (s1, f1), (s2, f2) = list(shapes.items())[:2]
        raise DataError(f"{where}: images have different sizes ({s1[0]}x{s1[1]} in {f1}, {s2[0]}x{s2[1]} in {f2}); "
                        f"set --config.data.image_size=N to resize them all")
    gray = all(im.ndim == 2 for im in images)
    if wide:
        print(f"note: {where}: {wide} 16-bit grayscale image(s) scaled to 8 bits (v / 257)", file=sys.stderr)
    if not gray:
        n_gray = sum(im.ndim == 2 for im in images)
        if n_gray:
            print(f"note: {where}: {n_gray} grayscale image(s) among {len(images) - n_gray} colour ones converted to "
                  "RGB (3 equal channels)", file=sys.stderr)
        images = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im for im in images]
    arrays = {}
    start = 0
    for s in SPLITS:
        n = len(by_split[s])
        arrays["x_" + s] = np.stack(images[start:start + n])
        arrays["y_" + s] = np.array([index[c] for _, c, _ in entries[start:start + n]], np.int32)
        start += n
    out = validate(where, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   class_names=class_names)
    return Dataset(*out, name=Path(where.split(":", 1)[1]).name.split(".")[0], source=where)
