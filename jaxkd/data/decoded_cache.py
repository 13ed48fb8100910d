"""Decoded image folders kept on disk, so that a folder of JPEGs is decoded once, not at every run.

`folder:PATH` sources (a directory or a .tar / .tar.gz of ``split/class/image``) are decoded image by image, which
costs seconds to minutes (CIFAR-10 as 60,000 JPEGs: about 8 s on 2 CPU cores). The decoded arrays of a folder of at
least MIN_IMAGES images are saved as .npy files under the cache folder and read back by later runs (a plain read,
not a memory map, so the data placement is what it would be after a decode).

The key is the source's absolute path, its size and modification time (for a directory: every file's relative
path, size and modification time), the resize asked for and FORMAT: an edited, replaced or touched source is
decoded anew. Where: ``$JAXKD_DATA_CACHE`` (``0``, ``off`` or empty: off), else ``$XDG_CACHE_HOME/jaxkd/data``
(default ``~/.cache/jaxkd/data``). An entry is written to a temporary folder and renamed into place, so concurrent
runs (several processes of one run, parallel tests) never read half an entry. A cache that cannot be written is
skipped with one note: a run never fails because of its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jaxkd.data.dataset import Dataset

__all__ = ["cache_root", "cached", "MIN_IMAGES"]

MIN_IMAGES = 1000  # smaller folders decode in well under a second: not worth a cache entry
FORMAT = 1  # bump when the decoding changes (what a cached entry holds would no longer be what a decode gives)
_OFF = ("", "0", "off", "false", "no", "none")
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_root() -> Path | None:
    v = os.environ.get("JAXKD_DATA_CACHE")
    if v is not None:
        return None if v.strip().lower() in _OFF else Path(v).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxkd" / "data"


def _key(path: Path, image_size: int) -> str:
    h = hashlib.sha256(f"{FORMAT}|{path.absolute()}|{image_size}".encode())
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"|{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        st = path.stat()
        h.update(f"|{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def cached(path: str, image_size: int, decode: Callable[[], Dataset]) -> Dataset:
    """The Dataset of `path`, from the cache when an entry for it exists, else ``decode()`` (saved when large)."""
    from jaxkd.data.dataset import Dataset

    root = cache_root()
    if root is None or not os.path.exists(path):
        return decode()  # (a missing source: decode() raises the loader's own error)
    entry = root / _key(Path(path), image_size)
    meta_file = entry / "meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
            arrays = [np.load(entry / f"{k}.npy", allow_pickle=False) for k in _ARRAYS]
            return Dataset(*arrays, tuple(meta["class_names"]), name=meta["name"], source=meta["source"])
        except (OSError, ValueError, KeyError):  # a damaged entry: decode again and replace it
            shutil.rmtree(entry, ignore_errors=True)
    ds = decode()
    if len(ds.y_train) + len(ds.y_test) >= MIN_IMAGES:
        _save(entry, ds, path)
    return ds


def _save(entry: Path, ds, path: str) -> None:
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
        for k in _ARRAYS:
            np.save(tmp / f"{k}.npy", np.asarray(getattr(ds, k)), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"class_names": list(ds.class_names), "name": ds.name,
                                                   "source": ds.source, "path": str(Path(path).absolute())}))
        try:
            os.rename(tmp, entry)
        except OSError:  # another process saved the same entry first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
            return
        mb = sum(f.stat().st_size for f in entry.iterdir()) / 1e6
        print(f"note: decoded {path} once into {entry} ({mb:.0f} MB): later runs read it from there "
              "(JAXKD_DATA_CACHE=0 turns this off)", file=sys.stderr)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"note: decoded-data cache off for this run: cannot write {entry.parent} ({e.strerror or e})",
              file=sys.stderr)
