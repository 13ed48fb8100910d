"""The on-device batch pipeline: validation split, normalisation, permutations and resume, evaluation coverage,
dual views, and sharding over 8 simulated devices (in a subprocess) giving the same global batches as 1 device.

The augmentations are the other data engineer's; these tests use small stand-ins with the same interface
(per-sample randomness from one key per batch), so they check the pipeline itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxkd.config import base_config
from jaxkd.data import (
    DataError,
    DataPipeline,
    Dataset,
    epoch_permutation,
    load_arrays,
    normalization_stats,
    process_local_rows,
    split_validation,
)
from jaxkd.data.spec import DataSpec

# A generous collective timeout: under heavy load the device threads can take long to meet.
COLLECTIVE_TIMEOUT = "--xla_cpu_collective_call_terminate_timeout_seconds=900"
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# Stand-in transforms with the jaxkd.data.augment interface

def normalise(mean, std):
    """make_eval_transform stand-in: uint8 (B, H, W, C) -> float32 ((x / 255) - mean) / std."""
    m, s = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    return lambda x: (x.astype(jnp.float32) / 255.0 - m) / s


def random_flip_noise(mean, std):
    """make_train_transform stand-in: per-sample random horizontal flip + small Gaussian noise, then normalise."""
    norm = normalise(mean, std)

    def transform(key, x):
        keys = jax.random.split(key, x.shape[0])

        def one(k, img):
            img = jnp.where(jax.random.bernoulli(k), img[:, ::-1], img)
            return norm(img) + 0.01 * jax.random.normal(jax.random.fold_in(k, 1), img.shape)
        return jax.vmap(one)(keys, x)
    return transform


def roll_mixup(lam=0.7):
    """make_mix stand-in: x~ = lam x + (1 - lam) roll(x), targets mixed the same way."""
    def mix(key, x, labels):
        y = jax.nn.one_hot(labels, 5, dtype=jnp.float32)
        return lam * x + (1 - lam) * jnp.roll(x, 1, 0), lam * y + (1 - lam) * jnp.roll(y, 1, 0)
    return mix


def random_dataset(n_train=300, n_test=50, shape=(8, 8, 3), classes=5, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                   rng.integers(0, classes, n_train).astype(np.int32),
                   rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                   rng.integers(0, classes, n_test).astype(np.int32), tuple("abcde"[:classes]), "random")


def _set(section: ConfigDict, values: dict) -> None:
    for k, v in values.items():
        if isinstance(v, dict):
            _set(section[k], v)
        else:
            section[k] = v


def data_cfg(**kw) -> DataSpec:
    """The DataSpec of base_config()'s data section (no augmentation) with the tests' small sizes, then ``kw``
    (nested dicts, e.g. ``augmentation=dict(teacher_view="clean")``, set only the fields they name)."""
    data = base_config().data
    _set(data, dict(dataset="custom", batch_size=32, eval_batch_size=16, val_size=20, max_examples=0))
    _set(data, kw)
    return DataSpec.from_config(data)


def pipeline(ds=None, cfg=None, seed=3, mesh=None, mix=None, **kw) -> DataPipeline:
    ds = ds or random_dataset()
    probe = DataPipeline(ds, cfg or data_cfg(**kw), seed=seed, mesh=mesh, train_transform=lambda k, x: x,
                         eval_transform=lambda x: x, mix=None)
    return DataPipeline(ds, cfg or data_cfg(**kw), seed=seed, mesh=mesh,
                        train_transform=random_flip_noise(probe.mean, probe.std),
                        eval_transform=normalise(probe.mean, probe.std), mix=mix)


def host(batches):
    return [jax.tree.map(np.asarray, jax.device_get(b)) for b in batches]


# ----------------------------------------------------------------------------------------------------------------

def test_validation_split_deterministic_and_disjoint():
    x = np.arange(1000)[:, None]
    y = np.arange(1000) % 7
    a = split_validation(x, y, 100, seed=5)
    b = split_validation(x, y, 100, seed=5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    tr, va = a[0][:, 0], a[2][:, 0]
    assert len(tr) == 900 and len(va) == 100 and not set(tr) & set(va) and set(tr) | set(va) == set(range(1000))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # original order kept
    assert not np.array_equal(split_validation(x, y, 100, seed=6)[2], a[2])
    assert len(split_validation(x, y, 0, seed=5)[2]) == 0
    with pytest.raises(DataError, match=r"data.val_size = 1000 must be in \[0, 1000\)"):
        split_validation(x, y, 1000, seed=5)


def test_epoch_permutation():
    p = epoch_permutation(42, 3, 500)
    assert sorted(p.tolist()) == list(range(500))
    np.testing.assert_array_equal(p, epoch_permutation(42, 3, 500))
    assert not np.array_equal(p, epoch_permutation(42, 4, 500))
    assert not np.array_equal(p, epoch_permutation(43, 3, 500))


def test_normalization_stats():
    x = random_dataset().x_train
    assert normalization_stats("cifar", x) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert normalization_stats("mnist", x[..., :1]) == ((0.1307,), (0.3081,))
    m, s = normalization_stats("custom", x)
    np.testing.assert_allclose(m, (x / 255.0).mean((0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(s, (x / 255.0).std((0, 1, 2)), rtol=1e-9)
    assert normalization_stats("cifar", x, [0.5], [0.25]) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(DataError, match=r"data.dataset = 'mnist' has 1-channel normalisation but the images have 3"):
        normalization_stats("mnist", x)
    with pytest.raises(DataError, match=r"must both have 1 or 3 entries"):
        normalization_stats("custom", x, [0.5, 0.5], [0.2, 0.2])


def test_mnist_uses_spec_normalisation_and_val_split(shared_data_dir):
    ds = load_arrays(f"npz:{shared_data_dir / 'mnist.npz'}")
    pipe = pipeline(ds, data_cfg(dataset="mnist", batch_size=1000, val_size=5000))
    assert pipe.mean == (0.1307,) and pipe.std == (0.3081,)
    assert (pipe.num_examples("train"), pipe.num_examples("val"), pipe.num_examples("test")) == (55000, 5000, 10000)
    assert pipe.steps_per_epoch == 55


def test_train_batches_gather_the_permuted_examples():
    ds = random_dataset()
    pipe = DataPipeline(ds, data_cfg(), seed=3, train_transform=lambda k, x: x.astype(jnp.float32),
                        eval_transform=lambda x: x.astype(jnp.float32), mix=None)
    x_tr, y_tr = pipe.splits["train"]
    assert pipe.steps_per_epoch == 280 // 32 == 8
    batches = host(pipe.train_batches(2))
    assert len(batches) == 8
    perm = epoch_permutation(3, 2, 280)
    seen = []
    for step, b in enumerate(batches):
        idx = perm[step * 32:(step + 1) * 32]
        np.testing.assert_array_equal(b.image, x_tr[idx].astype(np.float32))
        np.testing.assert_array_equal(b.label, y_tr[idx])
        np.testing.assert_array_equal(b.target, np.eye(5, dtype=np.float32)[y_tr[idx]])
        assert b.mask.all() and b.teacher_image is None
        seen += idx.tolist()
    assert len(set(seen)) == 256  # no example twice in an epoch; the last partial batch (24) is dropped


def test_resume_mid_epoch_gives_the_same_batches():
    pipe = pipeline()
    full = host(pipe.train_batches(1))
    resumed = host(pipeline().train_batches(1, start_step=5))
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed):
        for u, v in zip(a, b):
            if u is not None:
                np.testing.assert_array_equal(u, v)
    other_epoch = host(pipe.train_batches(2, num_steps=1))[0]
    assert not np.array_equal(other_epoch.image, full[0].image)
    with pytest.raises(DataError, match=r"start_step 9 is outside the epoch's 8 steps"):
        next(pipe.train_batches(1, start_step=9))


def test_eval_covers_every_example_once_with_padding_mask():
    pipe = pipeline(eval_batch_size=16)
    x_val, y_val = pipe.splits["val"]
    batches = host(pipe.eval_batches("val"))
    assert len(batches) == pipe.num_eval_batches("val") == 2  # 20 examples: 16 + 4 (+ 12 padding)
    assert [int(b.mask.sum()) for b in batches] == [16, 4]
    images = np.concatenate([b.image[b.mask] for b in batches])
    labels = np.concatenate([b.label[b.mask] for b in batches])
    norm = (x_val / 255.0 - np.asarray(pipe.mean)) / np.asarray(pipe.std)
    np.testing.assert_allclose(images, norm, atol=1e-6)
    np.testing.assert_array_equal(labels, y_val)
    assert sum(int(b.mask.sum()) for b in host(pipe.eval_batches("test"))) == 50


def test_teacher_clean_view_and_mix():
    cfg = data_cfg(augmentation=dict(teacher_view="clean"))
    pipe = pipeline(cfg=cfg, mix=roll_mixup(0.7))
    b = host(pipe.train_batches(0, num_steps=1))[0]
    x_tr, y_tr = pipe.splits["train"]
    idx = epoch_permutation(3, 0, 280)[:32]
    clean = (x_tr[idx] / 255.0 - np.asarray(pipe.mean)) / np.asarray(pipe.std)
    np.testing.assert_allclose(b.teacher_image, clean, atol=1e-5)  # same images, not augmented, not mixed
    assert np.abs(b.image - clean).max() > 0.5  # the student view is augmented and mixed
    onehot = np.eye(5)[y_tr[idx]]
    np.testing.assert_allclose(b.target, 0.7 * onehot + 0.3 * np.roll(onehot, 1, 0), atol=1e-6)
    np.testing.assert_array_equal(b.label, y_tr[idx])


def test_max_examples_and_batch_size_errors():
    pipe = pipeline(max_examples=40)
    assert [pipe.num_examples(s) for s in ("train", "val", "test")] == [40, 20, 40]
    with pytest.raises(DataError, match=r"data.batch_size = 400 is larger than the 280 training examples"):
        pipeline(batch_size=400)
    with pytest.raises(DataError, match=r"the model has 3 classes but the data has 5: set --config.model.num_"):
        DataPipeline(random_dataset(), data_cfg(), num_classes=3)
    wide = DataPipeline(random_dataset(), data_cfg(), num_classes=7, train_transform=lambda k, x: x * 1.0,
                        eval_transform=lambda x: x * 1.0, mix=None)
    assert next(wide.train_batches(0)).target.shape == (32, 7)  # the model's 7 classes, data uses 5


def test_from_config_with_preset(tmp_path):
    from jaxkd import config as C

    cfg = C.load("configs/quickstart.py", ["--config.data.batch_size=100"])
    pipe = DataPipeline.from_config(cfg, train_transform=lambda k, x: x.astype(jnp.float32),
                                    eval_transform=lambda x: x.astype(jnp.float32), mix=None)
    assert pipe.image_shape == (8, 8, 1) and pipe.num_classes == 10
    assert (pipe.num_examples("train"), pipe.num_examples("val")) == (1437 - cfg.data.val_size, cfg.data.val_size)
    b = next(pipe.train_batches(0))
    assert b.image.shape == (100, 8, 8, 1) and b.target.shape == (100, 10)


def test_process_local_rows_single_process():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxkd.data import make_data_mesh

    assert process_local_rows(NamedSharding(make_data_mesh(), P("data")), 64) == slice(0, 64)


SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from test_pipeline import pipeline, host
    from jaxkd.data import make_data_mesh, DataError
    assert jax.device_count() == 8, jax.devices()
    meshes = {{
        "one": make_data_mesh(jax.devices()[:1]),
        "auto8": make_data_mesh(),
        "explicit8": jax.make_mesh((8,), ("data",)),
        "data4_model2": jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model")),
    }}
    out, shards = {{}}, {{}}
    for name, mesh in meshes.items():
        pipe = pipeline(mesh=mesh)
        b = next(pipe.train_batches(1, start_step=2))
        shards[name] = [len(b.image.addressable_shards), b.image.addressable_shards[0].data.shape[0]]
        out[name] = host(pipe.train_batches(1, num_steps=3)) + host(pipe.eval_batches("val"))
    equal = {{}}
    for name in meshes:
        equal[name] = all(np.array_equal(u, v) for a, b in zip(out["one"], out[name])
                          for u, v in zip(a, b) if u is not None)
    try:
        pipeline(mesh=meshes["auto8"], batch_size=36)
        err = ""
    except DataError as e:
        err = str(e)
    # The real augmentations (the original CIFAR pipeline less AutoAugment and ColorJitter, which compile slowly,
    # plus MixUp, CutMix and the clean teacher view): the same random draws on 8 devices; pixels agree to float
    # rounding (XLA fuses differently when partitioned).
    from jaxkd.config import apply_peer_augmentation, base_config
    from jaxkd.data import DataPipeline
    from test_pipeline import data_cfg, random_dataset
    c = base_config()
    apply_peer_augmentation(c, "cifar")
    c.data.augmentation.mixup.enabled = c.data.augmentation.cutmix.enabled = True
    c.data.augmentation.auto_augment.enabled = c.data.augmentation.color_jitter.enabled = False
    c.data.augmentation.teacher_view = "clean"
    real = {{}}
    for name in ("one", "auto8"):
        pipe = DataPipeline(random_dataset(shape=(16, 16, 3)), data_cfg(augmentation=c.data.augmentation.to_dict(),
                            batch_size=16), seed=1, mesh=meshes[name])
        real[name] = host(pipe.train_batches(0, num_steps=1))[0]
    a, b = real["one"], real["auto8"]
    real_diff = {{f: float(np.abs(getattr(a, f) - getattr(b, f)).max())
                  for f in ("image", "label", "target", "teacher_image")}}
    real_diff["image_std"] = float(a.image.std())
    print(json.dumps(dict(equal=equal, shards=shards, err=err, real=real_diff)))
""")


def test_sharded_over_8_devices_equals_single_device(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {COLLECTIVE_TIMEOUT}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT.format(tests=str(ROOT / "tests")))
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["equal"] == {"one": True, "auto8": True, "explicit8": True, "data4_model2": True}
    # 8 local shards of 32 / 8 = 4 rows; on the 4 x 2 mesh 8 devices hold 4 row blocks of 8 (replicated on 'model').
    assert res["shards"] == {"one": [1, 32], "auto8": [8, 4], "explicit8": [8, 4], "data4_model2": [8, 8]}
    assert "data.batch_size = 36 must be a positive multiple of the 8 devices" in res["err"]
    real = res["real"]
    assert real["label"] == 0 and real["teacher_image"] == 0, real
    # Float arithmetic of the augmentations and the mixed targets may fuse differently when sharded: jax 0.12 differs
    # from one device by one float32 ulp in the targets (5.96e-8), jax 0.10 not at all.
    assert real["image"] < 1e-5 and real["target"] < 1e-6 and real["image_std"] > 0.5, real


MULTIPROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    pid, port, out, placement = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{{port}}", num_processes=2, process_id=pid)
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_pipeline import pipeline
    from jaxkd.data.pipeline import HostImages
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    read = []  # the dataset rows this process reads from host memory (placement 'host')
    get = HostImages.__getitem__
    HostImages.__getitem__ = lambda self, i: (read.extend(np.atleast_1d(self.rows[i]).tolist()), get(self, i))[1]
    pipe = pipeline(placement=placement)  # default mesh: all 8 devices of both processes
    assert pipe.placement == placement
    read.clear()  # (building it read the training split once, for the normalisation statistics of 'custom' data)
    rows = {{}}
    batches = list(pipe.train_batches(1, start_step=1, num_steps=2))
    rows["read_train"] = np.array(read, np.int64)
    batches += list(pipe.eval_batches("val"))
    for i, b in enumerate(batches):
        for field in ("image", "label", "target", "mask"):
            for sh in getattr(b, field).addressable_shards:
                rows[f"{{i}}_{{field}}_{{sh.index[0].start}}"] = np.asarray(sh.data)
    np.savez(out, **rows)
""")


@pytest.mark.parametrize("placement", ["device", "host"])
def test_two_processes_each_hold_only_their_shard(tmp_path, placement):
    """2 processes x 4 CPU devices (loopback coordinator): each process feeds only its half of the indices and
    holds only its half of each batch, and the halves equal the single-process batches. With the data on the host,
    each process reads from host memory only the rows of its half."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {COLLECTIVE_TIMEOUT}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    script = tmp_path / "mp.py"
    script.write_text(MULTIPROCESS_SCRIPT.format(tests=str(ROOT / "tests")))
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(port), str(tmp_path / f"p{i}.npz"),
                               placement],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    pipe = pipeline(placement="host")
    perm = epoch_permutation(3, 1, pipe.num_examples("train"))
    ref = host(list(pipe.train_batches(1, start_step=1, num_steps=2)) + list(pipe.eval_batches("val")))
    for pid in range(2):
        with np.load(tmp_path / f"p{pid}.npz") as z:
            starts = sorted({int(k.rsplit("_", 1)[1]) for k in z.files if k.startswith("0_image_")})
            assert starts == ([0, 4, 8, 12] if pid == 0 else [16, 20, 24, 28])  # only this process's rows
            half = np.concatenate([perm[s * 32:(s + 1) * 32][16 * pid:16 * (pid + 1)] for s in (1, 2)])
            want_read = pipe.splits["train"][0].rows[half] if placement == "host" else np.zeros(0, np.int64)
            np.testing.assert_array_equal(np.sort(z["read_train"]), np.sort(want_read))
            for key in (k for k in z.files if k != "read_train"):
                i, field, start = key.split("_")
                want = getattr(ref[int(i)], field)[int(start):int(start) + len(z[key])]
                np.testing.assert_array_equal(z[key], want, err_msg=f"process {pid} {key}")


def test_preview_cli_writes_grid(tmp_path):
    from PIL import Image

    from jaxkd.data.__main__ import main

    out = tmp_path / "grid.png"
    assert main(["preview", "--config", "configs/quickstart.py", "--out", str(out), "--num-images", "10",
                 "--config.data.augmentation.random_rotation.enabled=true"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[0] > 3 * 112 and grid.shape[1] > 4 * 112  # 4 x 3 tiles, 8 px -> 112 px
    assert grid.std() > 20  # real pictures, not a blank page
    assert main(["preview", "--config", "configs/quickstart.py", "--config.data.source=npz:/nonexistent.npz"]) == 2


def test_bench_data_cli_json(tmp_path, capsys):
    from jaxkd.bench.__main__ import main

    out = tmp_path / "bench.json"
    small = ["--config.vit.variant=custom", "--config.vit.depth=1", "--config.vit.embed_dim=32",
             "--config.vit.num_heads=2", "--config.vit.use_conv_stem=false"]
    cheap = [f"--config.data.augmentation.{op}.enabled=false"  # the augmentations are timed/tested elsewhere
             for op in ("auto_augment", "randaugment", "color_jitter", "random_crop", "cutout", "mixup")]
    assert main(["data", "--config", "configs/vit_cifar.py", "--batch-size", "16", "--steps", "2",
                 "--json", str(out), *small, *cheap]) == 0
    res = json.loads(out.read_text())
    assert res["images_per_s"] > 0 and 0 < res["share_of_step"] < 1 and res["batch_size"] == 16
    assert res["model"] == "DeiT-Custom (depth 1)"
    assert set(res["placements"]) == {"device", "host"}  # both placements, side by side
    assert all(r["images_per_s"] > 0 and 0 < r["share_of_step"] < 1 for r in res["placements"].values())
    assert "augmented images/s" in capsys.readouterr().out
