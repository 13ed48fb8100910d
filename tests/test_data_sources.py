"""Dataset sources: every data.source kind loads the real data (or a faithful local copy of its format), and every
kind of bad data gets one clear DataError naming the file or field. No test touches the network."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from jaxkd.data import DataError, load_arrays, tfds_builders

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def mnist(shared_data_dir):
    with np.load(shared_data_dir / "mnist.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def cifar_folder(shared_data_dir):
    """The CIFAR-10 JPEG tar decoded once per module (about 6 s)."""
    return load_arrays(f"folder:{shared_data_dir / 'cifar10-jpeg.tar.gz'}")


# ----------------------------------------------------------------------------------------------------------------
# Writers of the real file formats

def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    raw = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


IDX = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
       "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def write_mnist_idx(d: Path, mnist: dict, gz: bool, n_train: int = 3000, n_test: int = 500) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for key, name in IDX.items():
        n = n_train if "train" in key else n_test
        write_idx(d / (name + (".gz" if gz else "")), mnist[key][:n], gz)


def cifar_arrays(n_per_batch: int = 20, n_test: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (5 * n_per_batch + n_test, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    return x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]


def write_cifar_python(root: Path, arrays, as_tar: bool) -> Path:
    """The real CIFAR-10 python layout: pickles with byte keys, data (N, 3072) = R, G, B planes row-major."""
    x_tr, y_tr, x_te, y_te = arrays
    n = len(x_tr) // 5

    def batch(x, y):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        return pickle.dumps({b"batch_label": b"x", b"labels": [int(v) for v in y], b"data": rows,
                             b"filenames": [b"f.png"] * len(x)}, protocol=2)

    files = {f"data_batch_{i + 1}": batch(x_tr[i * n:(i + 1) * n], y_tr[i * n:(i + 1) * n]) for i in range(5)}
    files["test_batch"] = batch(x_te, y_te)
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CIFAR_CLASSES],
                                          b"num_vis": 3072}, protocol=2)
    if as_tar:
        path = root / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for name, blob in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
        return path
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, blob in files.items():
        (d / name).write_bytes(blob)
    return d


def write_folder(root: Path, images: dict[str, list[tuple[str, np.ndarray]]], fmt: str = "PNG") -> Path:
    from PIL import Image

    for split, items in images.items():
        for i, (cls, img) in enumerate(items):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / split / cls / f"{i:04d}.{fmt.lower()}", fmt)
    return root


def npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def good_arrays(n=20, shape=(8, 8), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=rng.integers(0, classes, n),
                x_test=rng.integers(0, 256, (n // 2, *shape), dtype=np.uint8), y_test=rng.integers(0, classes, n // 2))


# ----------------------------------------------------------------------------------------------------------------
# Real data end to end

def test_npz_mnist_matches_readme(shared_data_dir, mnist):
    ds = load_arrays(f"npz:{shared_data_dir / 'mnist.npz'}")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == MNIST_TEST_COUNTS
    np.testing.assert_array_equal(ds.x_train[..., 0], mnist["x_train"])
    assert ds.num_classes == 10 and ds.name == "mnist"
    assert abs(ds.x_train.mean() / 255 - 0.1307) < 1e-4


def test_folder_cifar_jpeg_tar_matches_readme(cifar_folder):
    ds = cifar_folder
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert ds.class_names == CIFAR_CLASSES
    assert np.bincount(ds.y_train).tolist() == [5000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    mean = ds.x_train.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=1e-4)  # README's decoded-JPEG values


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_from_written_idx_files(tmp_path, mnist, gz):
    write_mnist_idx(tmp_path, mnist, gz)
    ds = load_arrays(f"mnist-idx:{tmp_path}")
    np.testing.assert_array_equal(ds.x_train[..., 0], mnist["x_train"][:3000])
    np.testing.assert_array_equal(ds.y_test, mnist["y_test"][:500])
    assert ds.class_names == tuple("0123456789")


def test_mnist_idx_torchvision_layout(tmp_path, mnist):
    write_mnist_idx(tmp_path / "MNIST" / "raw", mnist, gz=False, n_train=100, n_test=50)
    assert load_arrays(f"mnist-idx:{tmp_path}").x_train.shape == (100, 28, 28, 1)


@pytest.mark.parametrize("layout", ["tar", "folder", "torchvision-parent"])
def test_cifar_python_archive_and_folder(tmp_path, layout):
    arrays = cifar_arrays()
    written = write_cifar_python(tmp_path, arrays, as_tar=layout == "tar")
    path = tmp_path if layout == "torchvision-parent" else written
    ds = load_arrays(f"cifar-python:{path}")
    for got, want in zip((ds.x_train, ds.y_train, ds.x_test, ds.y_test), arrays):
        np.testing.assert_array_equal(got, want)
    assert ds.class_names == CIFAR_CLASSES and ds.name == "cifar10"


def test_digits_embedded_default():
    from sklearn.datasets import load_digits

    ds = load_arrays("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    ref = load_digits()
    want = np.round(ref.images * 255 / 16).astype(np.uint8)  # (read without importing scikit-learn: the same)
    np.testing.assert_array_equal(ds.x_train[..., 0], want[:1437])
    np.testing.assert_array_equal(ds.x_test[..., 0], want[-360:])
    np.testing.assert_array_equal(ds.y_train, ref.target[:1437])
    np.testing.assert_array_equal(ds.y_test, ref.target[-360:])
    assert ds.x_train.max() == 255 and set(np.unique(ds.y_test)) == set(range(10))


def test_folder_grayscale_and_rgb_directory(tmp_path):
    rng = np.random.default_rng(1)
    gray = lambda: rng.integers(0, 256, (6, 5), dtype=np.uint8)  # noqa: E731
    write_folder(tmp_path / "g", {"train": [("b", gray()), ("a", gray()), ("a", gray())], "test": [("b", gray())]})
    ds = load_arrays(f"folder:{tmp_path / 'g'}")
    assert ds.x_train.shape == (3, 6, 5, 1) and ds.class_names == ("a", "b")
    assert ds.y_train.tolist() == [0, 0, 1] and ds.y_test.tolist() == [1]
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    write_folder(tmp_path / "m", {"train": [("a", gray()), ("b", rgb)], "test": [("a", gray())]})
    mixed = load_arrays(f"folder:{tmp_path / 'm'}")
    assert mixed.x_train.shape == (2, 6, 5, 3)
    np.testing.assert_array_equal(mixed.x_train[1], rgb)  # PNG is lossless
    assert (mixed.x_train[0, ..., 0] == mixed.x_train[0, ..., 2]).all()  # gray replicated to RGB


def test_image_size_resizes_bilinear():
    ds = load_arrays("digits", image_size=16)
    assert ds.x_train.shape == (1437, 16, 16, 1) and ds.x_test.shape == (360, 16, 16, 1)


# ----------------------------------------------------------------------------------------------------------------
# Bad data: one clear error naming the file / field

@pytest.mark.parametrize("change, match", [
    (dict(drop="y_test"), r"key 'y_test' missing \(expected x_train, y_train, x_test, y_test"),
    (dict(x_train=np.zeros((20, 8, 8), np.float32)), r"x_train has dtype float32; expected uint8.*np.round"),
    (dict(x_train=np.zeros((20, 3, 8, 8), np.uint8)), r"x_train has shape \(20, 3, 8, 8\), which looks channels-first"),
    (dict(x_test=np.zeros((10, 64), np.uint8)), r"x_test has shape \(10, 64\); expected \(N, H, W\)"),
    (dict(y_train=np.full(20, 1.0)), r"y_train has dtype float64; expected integer class indices"),
    (dict(y_train=np.zeros(19, int)), r"y_train has 19 labels but there are 20 images"),
    (dict(y_test=np.full(10, 7)), r"y_test has label 7, out of range for y_train's classes \(0..2\)"),
    (dict(y_train=np.full(20, -1)), r"y_train has label -1; labels must be class indices >= 0"),
    (dict(x_test=np.zeros((10, 9, 9), np.uint8)), r"train images are 8x8x1 but test images are 9x9x1"),
])
def test_npz_bad_data(tmp_path, change, match):
    arrays = good_arrays()
    drop = change.pop("drop", None)
    arrays.update(change)
    arrays.pop(drop, None)
    source = npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_arrays(source)
    assert str(tmp_path / "d.npz") in str(e.value)


def test_npz_class_names_bound_labels(tmp_path):
    source = npz(tmp_path, **good_arrays(classes=3), class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"label 2, out of range for 2 classes"):
        load_arrays(source)
    assert load_arrays(npz(tmp_path, **good_arrays(classes=2), class_names=np.array(["a", "b"]))).class_names == (
        "a", "b")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"npz:.*nothere.npz: file not found"):
        load_arrays(f"npz:{tmp_path / 'nothere.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk.npz: cannot read as .npz"):
        load_arrays(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(DataError, match=r"MNIST idx files missing; expected train-images-idx3-ubyte"):
        load_arrays(f"mnist-idx:{tmp_path}")
    with pytest.raises(DataError, match=r"cifar-python:.*: not found"):
        load_arrays(f"cifar-python:{tmp_path / 'x.tar.gz'}")
    with pytest.raises(DataError, match=r"folder:.*: not found"):
        load_arrays(f"folder:{tmp_path / 'nothing'}")
    with pytest.raises(DataError, match=r"unknown kind 'csv'"):
        load_arrays("csv:/x")


def test_idx_truncated_and_bad_magic(tmp_path, mnist):
    write_mnist_idx(tmp_path, mnist, gz=False, n_train=50, n_test=20)
    f = tmp_path / IDX["x_test"]
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: idx header says shape \(20, 28, 28\).*truncated"):
        load_arrays(f"mnist-idx:{tmp_path}")
    f.write_bytes(b"\x08\x03\x00\x00" + bytes(100))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: not an idx file"):
        load_arrays(f"mnist-idx:{tmp_path}")


def test_cifar_python_bad_batches(tmp_path):
    path = write_cifar_python(tmp_path, cifar_arrays(), as_tar=False)
    (path / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"cifar10 batch data_batch_3 missing"):
        load_arrays(f"cifar-python:{path}")
    # A pickle that would run code is refused, not executed.
    (path / "data_batch_3").write_bytes(pickle.dumps({b"data": __import__("os").system}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR python batch .*refusing to load global"):
        load_arrays(f"cifar-python:{path}")
    (path / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"data_batch_3: 'data' is uint8 \(4, 100\); expected uint8 \(N, 3072\)"):
        load_arrays(f"cifar-python:{path}")


def test_folder_bad_images(tmp_path):
    rng = np.random.default_rng(2)
    img = lambda s=(6, 6, 3): rng.integers(0, 256, s, dtype=np.uint8)  # noqa: E731
    root = write_folder(tmp_path / "f", {"train": [("a", img()), ("b", img())], "test": [("a", img())]})
    (root / "train" / "b" / "0009.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"train/b/0009.png: unreadable image"):
        load_arrays(f"folder:{root}")
    (root / "train" / "b" / "0009.png").unlink()
    write_folder(root, {"test": [("a", img((7, 6, 3)))] * 3})
    with pytest.raises(DataError, match=r"images have different sizes \(6x6 in .*, 7x6 in .*image_size=N"):
        load_arrays(f"folder:{root}")
    assert load_arrays(f"folder:{root}", image_size=5).x_test.shape == (3, 5, 5, 3)
    write_folder(tmp_path / "t", {"train": [("a", img())]})
    with pytest.raises(DataError, match=r"no images under test/ \(expected train/CLASS/IMAGE"):
        load_arrays(f"folder:{tmp_path / 't'}")
    write_folder(tmp_path / "u", {"train": [("a", img())], "test": [("zebra", img())]})
    with pytest.raises(DataError, match=r"test class folder\(s\) zebra have no train/ folder"):
        load_arrays(f"folder:{tmp_path / 'u'}")


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar"])
def test_folder_empty_class_is_an_error_not_a_dropped_class(tmp_path, archive):
    """An empty class folder used to vanish (a 3-class folder trained as 2 classes); in train/ or in test/ it is
    now named, and a test class whose train/ folder exists but is empty is said to be empty, not missing."""
    rng = np.random.default_rng(4)
    img = lambda: rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)  # noqa: E731
    root = write_folder(tmp_path / "f", {"train": [("a", img()), ("b", img())], "test": [("a", img()), ("c", img())]})
    (root / "train" / "c").mkdir()
    source = root
    if archive:
        source = tmp_path / "f.tar"
        with tarfile.open(source, "w") as tf:
            tf.add(root, arcname="f")
    with pytest.raises(DataError, match=r"class folder\(s\) train/c hold no images .* add the images or remove"):
        load_arrays(f"folder:{source}")


def test_folder_16_bit_and_mixed_channels_are_converted_and_said_once(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(5)
    root = write_folder(tmp_path / "f", {"train": [("a", rng.integers(0, 256, (4, 4), dtype=np.uint8))],
                                         "test": [("a", rng.integers(0, 256, (4, 4), dtype=np.uint8))]})
    wide = np.array([[0, 257, 65535, 32896]] * 4, np.uint16)
    for i in range(2):
        Image.fromarray(wide).save(root / "train" / "a" / f"w{i}.png")  # a 16-bit grayscale PNG
    ds = load_arrays(f"folder:{root}")
    assert ds.x_train.shape == (3, 4, 4, 1)
    np.testing.assert_array_equal(ds.x_train[1, 0, :, 0], [0, 1, 255, 128])  # v / 257, rounded
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(root / "test" / "a" / "rgb.png")
    assert load_arrays(f"folder:{root}").x_train.shape == (3, 4, 4, 3)
    notes = [x for x in capsys.readouterr().err.splitlines() if x.startswith("note:")]
    assert notes == [f"note: folder:{root}: 2 16-bit grayscale image(s) scaled to 8 bits (v / 257)"] * 2 + [
        f"note: folder:{root}: 4 grayscale image(s) among 1 colour ones converted to RGB (3 equal channels)"], notes


def test_folder_tar_with_corrupt_member(tmp_path):
    rng = np.random.default_rng(3)
    root = write_folder(tmp_path / "src", {"train": [("a", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))] * 2,
                                           "test": [("a", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))]})
    (root / "test" / "a" / "0005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    tar = tmp_path / "d.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(root, arcname="data")  # a leading folder is fine: split/class/image is found below it
    with pytest.raises(DataError, match=r"d.tar.gz:data/test/a/0005.jpg: unreadable image"):
        load_arrays(f"folder:{tar}")


def test_num_classes_check(tmp_path):
    with pytest.raises(DataError, match=r"label 9 is out of range for num_classes = 5.*num_classes=10"):
        load_arrays("digits", num_classes=5)


# ----------------------------------------------------------------------------------------------------------------
# TFDS without TensorFlow, and without the network

def test_tfds_offline_fails_fast_with_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXKD_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(DataError) as e:
        load_arrays("tfds:cifar10", data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "no network" in msg and "cifar-10-python.tar.gz" in msg
    for alt in ("npz:", "mnist-idx:", "cifar-python:", "folder:", "digits"):
        assert alt in msg


def test_tfds_unreachable_host_detected_at_once(tmp_path, monkeypatch):
    # The real connectivity probe, pointed at a closed local port: refused at once, no outside traffic.
    monkeypatch.delenv("JAXKD_OFFLINE", raising=False)
    name, _, what = tfds_builders.OWN_BUILDERS["mnist"]
    monkeypatch.setitem(tfds_builders.OWN_BUILDERS, "mnist", (name, ["http://127.0.0.1:9/mnist.gz"], what))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"no network \(127.0.0.1 unreachable\); put the four MNIST idx"):
        load_arrays("tfds:mnist", data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10


def test_tfds_unknown_dataset_names_alternatives(tmp_path):
    with pytest.raises(DataError, match=r"tfds:fashion_mnist: no prepared ArrayRecord data .* can build only mnist"):
        load_arrays("tfds:fashion_mnist", data_dir=str(tmp_path))


def test_tfds_builds_arrayrecord_from_local_idx_and_reads_it_back(tmp_path, mnist, monkeypatch):
    monkeypatch.setenv("JAXKD_OFFLINE", "1")  # must not need the network when the archives are local
    manual = tmp_path / "downloads" / "manual"
    write_mnist_idx(manual, mnist, gz=True, n_train=600, n_test=200)
    ds = load_arrays("tfds:mnist", data_dir=str(tmp_path))
    assert (tmp_path / "jaxkd_mnist" / "1.0.0" / "dataset_info.json").is_file()
    assert list((tmp_path / "jaxkd_mnist" / "1.0.0").glob("*.array_record-*"))
    np.testing.assert_array_equal(ds.x_train[..., 0], mnist["x_train"][:600])  # original order kept
    np.testing.assert_array_equal(ds.y_test, mnist["y_test"][:200])
    assert ds.name == "mnist" and ds.class_names == tuple("0123456789")
    for f in manual.iterdir():  # now it reads the prepared ArrayRecord data
        f.unlink()
    again = load_arrays("tfds:mnist", data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    # The generic route (tfds.builder on a prepared dataset, as for any TFDS image classification dataset).
    generic = load_arrays("tfds:jaxkd_mnist", data_dir=str(tmp_path))
    np.testing.assert_array_equal(generic.x_test, ds.x_test)


def test_decoded_folder_cache_hit_miss_and_off(tmp_path, monkeypatch, capsys):
    """A decoded folder is saved once and read back identical; touching the source, another resize or a damaged
    entry decodes anew; JAXKD_DATA_CACHE=0 never writes."""
    import os

    from jaxkd.data import decoded_cache, formats

    monkeypatch.setattr(decoded_cache, "MIN_IMAGES", 2)
    monkeypatch.setenv("JAXKD_DATA_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(6)
    root = write_folder(tmp_path / "f", {"train": [("a", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))] * 3,
                                         "test": [("a", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))]})
    decodes = []
    real = formats.load_folder
    monkeypatch.setattr(formats, "load_folder", lambda *a, **k: decodes.append(1) or real(*a, **k))
    first = load_arrays(f"folder:{root}")
    again = load_arrays(f"folder:{root}")
    assert len(decodes) == 1 and "note: decoded" in capsys.readouterr().err
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, k), getattr(again, k))
    assert again.class_names == first.class_names and again.source == first.source
    load_arrays(f"folder:{root}", image_size=2)
    assert len(decodes) == 2  # another resize: another entry
    png = next((root / "train" / "a").iterdir())
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))
    load_arrays(f"folder:{root}")
    assert len(decodes) == 3  # a touched file: decoded anew
    for entry in (tmp_path / "cache").iterdir():
        (entry / "x_train.npy").write_bytes(b"damaged")
    np.testing.assert_array_equal(load_arrays(f"folder:{root}").x_train, first.x_train)
    assert len(decodes) == 4  # a damaged entry: decoded anew, replaced
    monkeypatch.setenv("JAXKD_DATA_CACHE", "0")
    shutil_free = tmp_path / "none"
    monkeypatch.setenv("XDG_CACHE_HOME", str(shutil_free))
    load_arrays(f"folder:{root}")
    assert len(decodes) == 5 and not shutil_free.exists()
