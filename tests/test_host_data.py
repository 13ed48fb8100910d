"""Data larger than the device: the host placement (``data.placement = 'host'``) and the memory-mapped ``npy:``
source.

The host placement must give bit-identical batches to the device placement (same seed: same permutation, same
augmentation keys; only where the gather happens differs), each process must read only the rows of its own shard of
each global batch, and 'auto' must choose from the data's size and the device's free memory. The end-to-end checks
(a host-placement run killed and resumed ends on the device run's parameters) are in test_resume.py; the two-process
check is in test_pipeline.py.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict
from test_pipeline import host, random_dataset

from jaxkd.config import base_config
from jaxkd.config.schema import apply_peer_augmentation
from jaxkd.data import DataError, DataPipeline, load_arrays
from jaxkd.data.pipeline import HostImages, choose_placement
from jaxkd.data.sources import save_npy_dir
from jaxkd.data.spec import DataSpec


def _cifar_cfg(placement: str) -> ConfigDict:
    """The original's full CIFAR augmentation (crop, flip, ColorJitter, AutoAugment, RandAugment, Cutout) plus
    MixUp/CutMix and the clean teacher view: every random path of the jitted augmentation."""
    cfg = base_config()
    apply_peer_augmentation(cfg, "cifar")
    a = cfg.data.augmentation
    a.cutout.length = 4
    a.mixup.enabled = a.cutmix.enabled = True
    a.teacher_view = "clean"
    cfg.data.update(dataset="custom", batch_size=16, eval_batch_size=12, val_size=20, placement=placement)
    return cfg.data


def _pipe(placement: str, ds=None) -> DataPipeline:
    return DataPipeline(ds or random_dataset(n_train=120, n_test=30, shape=(16, 16, 3)),
                        DataSpec.from_config(_cifar_cfg(placement)), seed=5)


def _batches(pipe: DataPipeline) -> list:
    return host(list(pipe.train_batches(1, start_step=2, num_steps=3)) + list(pipe.eval_batches("val")))


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        for field in u._fields:
            x, y = getattr(u, field), getattr(v, field)
            assert (x is None) == (y is None), (i, field)
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=f"batch {i} {field}")


@pytest.fixture(scope="module")
def device_batches():
    pipe = _pipe("device")
    assert pipe.placement == "device" and isinstance(pipe.splits["train"][0], np.ndarray)
    return _batches(pipe)


def test_host_placement_gives_bit_identical_batches(device_batches):
    pipe = _pipe("host")
    assert pipe.placement == "host" and isinstance(pipe.splits["train"][0], HostImages)
    assert device_batches[0].teacher_image is not None and np.abs(device_batches[0].image).max() > 0
    _assert_same(_batches(pipe), device_batches)


def test_host_placement_reading_the_wrong_rows_is_caught(device_batches):
    """Negative control: the same comparison fails when the host path reads neighbouring rows (an off-by-one)."""
    pipe = _pipe("host")
    x = pipe.splits["train"][0]
    pipe.splits["train"] = (HostImages(x.source, np.roll(x.rows, 1)), pipe.splits["train"][1])
    with pytest.raises(AssertionError, match="image"):
        _assert_same(_batches(pipe), device_batches)


def test_host_images_reads_rows_in_any_order():
    src = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
    rows = np.array([7, 2, 9, 4, 0])
    x = HostImages(src, rows)
    assert x.shape == (5, 2, 2, 1) and len(x) == 5 and x.nbytes == 20
    np.testing.assert_array_equal(x[np.array([3, 0, 3, 1])], src[[4, 7, 4, 2]])
    np.testing.assert_array_equal(x[1:4], src[[2, 9, 4]])


def test_npy_source_is_memory_mapped_and_auto_keeps_it_on_the_host(tmp_path):
    ds = random_dataset(n_train=80, n_test=20, shape=(8, 8, 3))
    save_npy_dir(ds, tmp_path / "npy")
    loaded = load_arrays(f"npy:{tmp_path / 'npy'}")
    assert loaded.class_names == ds.class_names and loaded.source == f"npy:{tmp_path / 'npy'}"
    np.testing.assert_array_equal(loaded.x_train, ds.x_train)
    np.testing.assert_array_equal(loaded.y_test, ds.y_test)
    cfg = _cifar_cfg("auto")
    cfg.val_size = 10
    # CPU devices report no memory statistics: 'auto' keeps memory-mapped data on the host, in-memory data on device
    spec = DataSpec.from_config(cfg)
    assert DataPipeline(loaded, spec).placement == ("host" if jax.devices()[0].memory_stats() is None else "device")
    assert DataPipeline(ds, spec).placement == "device"
    with pytest.raises(DataError, match=r"npy:.*x_test\.npy missing"):
        (tmp_path / "npy" / "x_test.npy").unlink()
        load_arrays(f"npy:{tmp_path / 'npy'}")


class _Device:
    def __init__(self, limit, used):
        self.stats = {"bytes_limit": limit, "bytes_in_use": used} if limit else None

    def memory_stats(self):
        return self.stats


def test_auto_placement_from_the_free_device_memory():
    gib = 2**30
    devices = [_Device(80 * gib, 10 * gib), _Device(80 * gib, 40 * gib)]  # the fuller device decides: 40 GiB free
    assert choose_placement("auto", 9 * gib, devices, memory_mapped=False) == "device"  # < a quarter of 40 GiB
    assert choose_placement("auto", 11 * gib, devices, memory_mapped=False) == "host"
    assert choose_placement("device", 11 * gib, devices, memory_mapped=True) == "device"  # asked for: kept
    assert choose_placement("host", 1, devices, memory_mapped=False) == "host"
    assert choose_placement("auto", 10**12, [_Device(0, 0)], memory_mapped=False) == "device"  # no stats (CPU)
    assert choose_placement("auto", 1, [_Device(0, 0)], memory_mapped=True) == "host"
    with pytest.raises(DataError, match="data.placement = 'disk': choose 'auto', 'device' or 'host'"):
        choose_placement("disk", 1, devices, memory_mapped=False)
