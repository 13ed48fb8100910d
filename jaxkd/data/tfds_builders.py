"""``tfds:NAME`` without TensorFlow: read prepared ArrayRecord data, or build MNIST / CIFAR-10 ourselves.

tensorflow-datasets 4.9 reads prepared ArrayRecord datasets without TensorFlow (``tfds.data_source``), but its
stock MNIST / CIFAR-10 builders, ``tfds.load`` and PNG-encoded ``Image`` features need TensorFlow, and offline
every download path retries for minutes before failing. So :func:`load_tfds` does, in order:

1. a dataset prepared in ``data_dir`` (ArrayRecord) under NAME: read it with ``tfds`` (any image classification
   dataset with an image and a label feature; the ``test`` split, else ``validation``, is the test split);
2. for ``mnist`` and ``cifar10``: jaxkd's own builder (``jaxkd_mnist`` / ``jaxkd_cifar10`` in ``data_dir``) reads
   its prepared data, else builds it from the standard archives found in ``data_dir/downloads/manual`` or
   ``data_dir`` (MNIST idx ``.gz`` files, ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/``), parsed with
   numpy, written as ArrayRecord with ``Tensor(uint8)`` features (no TensorFlow);
3. only when no archive is there: download them, after checking in at most ~2 s that the host is reachable;
   offline (or ``JAXKD_OFFLINE=1``) it fails at once with a message naming the local alternatives.

Needs ``tensorflow-datasets``, ``array_record`` and ``importlib_resources``; imported only on this route.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from jaxkd.data.dataset import LOCAL_ALTERNATIVES, DataError, Dataset, validate
from jaxkd.errors import describe

__all__ = ["load_tfds", "default_data_dir", "network_available", "build_jaxkd_dataset", "OWN_BUILDERS"]

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # CVDF mirror of LeCun's files (TFDS's source)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

#: tfds name -> (jaxkd builder name, files to download, what to put in the manual dir)
OWN_BUILDERS = {
    "mnist": ("jaxkd_mnist", [MNIST_URL + f + ".gz" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")],
              "the four MNIST idx .gz files (train-images-idx3-ubyte.gz, ...)"),
    "cifar10": ("jaxkd_cifar10", [CIFAR10_URL], "cifar-10-python.tar.gz (or its cifar-10-batches-py folder)"),
}


def default_data_dir() -> str:
    """TFDS's default data_dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def network_available(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds. False when JAXKD_OFFLINE=1."""
    if os.environ.get("JAXKD_OFFLINE", "") not in ("", "0"):
        return False
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:  # DNS failure, refused, unreachable, timeout
        return False


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"tfds: sources need the tensorflow-datasets package ({e}); pip install tensorflow-datasets "
                        f"array_record importlib_resources, or {LOCAL_ALTERNATIVES}") from None
    return tfds


# ----------------------------------------------------------------------------------------------------------------
# Reading a prepared dataset

def _read_split(source, image_key: str, label_key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    images, labels = [], []
    for start in range(0, n, 4096):
        idx = list(range(start, min(n, start + 4096)))
        records = source.__getitems__(idx) if hasattr(source, "__getitems__") else [source[i] for i in idx]
        for r in records:
            if image_key not in r or label_key not in r:
                raise DataError(f"{where}: record has features {', '.join(r)}; expected '{image_key}' and "
                                f"'{label_key}' (an image classification dataset)")
            images.append(np.asarray(r[image_key]))
            labels.append(int(r[label_key]))
    try:
        x = np.stack(images)
    except ValueError:
        raise DataError(f"{where}: images have different shapes; jaxkd needs one image size") from None
    return x, np.asarray(labels, np.int64)


def _read_prepared(builder, where: str) -> Dataset:
    """Reads the train and test (else validation) splits of a prepared TFDS builder into a Dataset."""
    info = builder.info
    image_key, label_key = info.supervised_keys if info.supervised_keys else ("image", "label")
    splits = list(info.splits.keys())
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    if "train" not in splits or test_split is None:
        raise DataError(f"{where}: splits {', '.join(splits)}; jaxkd needs 'train' and 'test' (or 'validation')")
    try:
        sources = {s: builder.as_data_source(split=s) for s in ("train", test_split)}
    except Exception as e:  # e.g. prepared as tfrecord, which needs TensorFlow to read
        raise DataError(f"{where}: cannot read the prepared data without TensorFlow ({describe(e)}); "
                        "prepare it as ArrayRecord "
                        f"(tfds build --file_format=array_record) or {LOCAL_ALTERNATIVES}") from None
    x_train, y_train = _read_split(sources["train"], image_key, label_key, where)
    x_test, y_test = _read_split(sources[test_split], image_key, label_key, where)
    names = getattr(info.features[label_key], "names", None)
    out = validate(where, x_train, y_train, x_test, y_test, class_names=names)
    return Dataset(*out, name=builder.name.removeprefix("jaxkd_"), source=where)


# ----------------------------------------------------------------------------------------------------------------
# jaxkd's own builders: standard archives -> numpy -> ArrayRecord

def _builder_class(tfds, name: str, ds: Dataset):
    """A GeneratorBasedBuilder named ``name`` whose examples are ``ds``'s arrays (Tensor(uint8) images)."""

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "jaxkd: parsed with numpy from the standard archive, original order."}

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, description=f"{ds.name} written by jaxkd from {ds.source}",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=ds.image_shape, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(ds.class_names))}),
                supervised_keys=("image", "label"), disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(ds.x_train, ds.y_train),
                    "test": self._generate_examples(ds.x_test, ds.y_test)}

        def _generate_examples(self, x, y):
            for i in range(len(x)):
                yield i, {"image": x[i], "label": int(y[i])}

    _Builder.name = name
    _Builder.__name__ = "".join(p.title() for p in name.split("_"))
    return _Builder


def build_jaxkd_dataset(ds: Dataset, name: str, data_dir: str) -> None:
    """Writes ``ds`` as the ArrayRecord TFDS dataset ``name`` (version 1.0.0) under ``data_dir``."""
    tfds = _tfds()
    builder = _builder_class(tfds, name, ds)(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _find_archive(base: str, dirs: list[Path]) -> Dataset | None:
    from jaxkd.data.formats import find_mnist_idx, load_cifar_python, load_mnist_idx

    for d in dirs:
        if base == "mnist" and find_mnist_idx(d) is not None:
            return load_mnist_idx(str(d))
        if base == "cifar10":
            for p in (d / "cifar-10-python.tar.gz", d / "cifar-10-batches-py"):
                if p.exists():
                    return load_cifar_python(str(p))
    return None


def _download(urls: list[str], dest: Path, where: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for url in urls:
        target = dest / url.rsplit("/", 1)[1]
        if target.exists():
            continue
        print(f"jaxkd: downloading {url} -> {target}", flush=True)
        tmp = tempfile.NamedTemporaryFile(dir=dest, prefix=".part-", delete=False)
        try:
            with tmp, urllib.request.urlopen(url, timeout=60) as r:
                shutil.copyfileobj(r, tmp)
            os.replace(tmp.name, target)
        except OSError as e:
            Path(tmp.name).unlink(missing_ok=True)
            raise DataError(f"{where}: download of {url} failed ({e}); put the file in {dest} by hand, or "
                            f"{LOCAL_ALTERNATIVES}") from None


def load_tfds(name: str, *, data_dir: str = "") -> Dataset:
    """Loads ``tfds:NAME`` (see the module docstring for the order of attempts)."""
    where = f"tfds:{name}"
    data_dir = data_dir or default_data_dir()
    tfds = _tfds()
    base = name.split(":")[0].split("/")[0]
    builder = None
    if (Path(data_dir) / base).is_dir():  # anything prepared under NAME lives in data_dir/NAME/[config/]version
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception:  # not registered and nothing prepared under that name
            builder = None
    if builder is not None and builder.is_prepared():
        try:
            return _read_prepared(builder, where)
        except DataError:
            if base not in OWN_BUILDERS:  # e.g. prepared as tfrecord; mnist / cifar10 we can still build ourselves
                raise
    if base not in OWN_BUILDERS:
        raise DataError(f"{where}: no prepared ArrayRecord data in {data_dir} and jaxkd can build only "
                        f"{' and '.join(OWN_BUILDERS)} without TensorFlow; prepare it with `tfds build {name} "
                        f"--data_dir={data_dir} --file_format=array_record` (needs TensorFlow), or "
                        f"{LOCAL_ALTERNATIVES}")
    own, urls, what = OWN_BUILDERS[base]
    prepared = Path(data_dir) / own / "1.0.0"
    if (prepared / "dataset_info.json").is_file():
        return _read_prepared(tfds.builder_from_directory(str(prepared)), where)
    manual = Path(data_dir) / "downloads" / "manual"
    ds = _find_archive(base, [manual, Path(data_dir), Path(data_dir) / "downloads"])
    if ds is None:
        if not network_available(urls[0]):
            host = urllib.parse.urlsplit(urls[0]).hostname
            raise DataError(f"{where}: not prepared in {data_dir}, no archive in {manual}, and no network "
                            f"({host} unreachable); put {what} in {manual}, or {LOCAL_ALTERNATIVES}")
        _download(urls, manual, where)
        ds = _find_archive(base, [manual])
        if ds is None:
            raise DataError(f"{where}: downloaded files in {manual} are incomplete; delete them and retry")
    build_jaxkd_dataset(ds, own, data_dir)
    return _read_prepared(tfds.builder_from_directory(str(prepared)), where)
