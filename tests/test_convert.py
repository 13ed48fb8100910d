"""python -m jaxkd.convert: from-torch, to-torch and the restricted .pth reader (from-yaml: test_convert_yaml.py).

Tolerances: logits of the torch_ref model vs the jaxkd model restored from the converted workdir, fp32 CPU, eval
mode, <= 1e-5 abs (random batch of 4); torch -> jaxkd -> torch round trips must be bit-exact (same keys, shapes,
dtypes, values). Models: the MNIST AdaptiveCNN (709,034 parameters) and a 2-block DeiT (vit_mnist:smoke with the
dist token), BatchNorm statistics randomised so that their conversion is exercised.
"""

from __future__ import annotations

import builtins
import copy
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxkd import config as config_lib
from jaxkd.convert import ConvertError, data_meta, from_torch, main, to_torch
from jaxkd.interop.torch_pickle import TorchCheckpointError, Unloaded, load_torch_file, state_dict_arrays
from jaxkd.train import checkpoint as ckpt_lib
from torch_ref import cnn as tcnn
from torch_ref import vit as tvit

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
CLASS_SRC = '''
import dataclasses

@dataclasses.dataclass
class TrainingConfig:
    learning_rate: float = 0.08
    use_compile: bool = True

@dataclasses.dataclass
class Config:
    experiment_name: str = "cnn_mnist"
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
'''


_fwd = nnx.jit(lambda m, x: m(x))  # one XLA compile per model instead of one per eager op


def _quiet(*_a, **_k):
    pass


def _logits_jax(model, x_nhwc: np.ndarray) -> np.ndarray:
    return np.asarray(_fwd(model, jnp.asarray(x_nhwc)))


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturbs every parameter and gives BatchNorm non-trivial running statistics (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model.eval()


def _vanished_config(root: Path):
    """An instance of `<pkg>.config.Config` (a dataclass of the 'original project') and a function that removes
    the package from sys.modules and from disk."""
    name = f"peer_src_{uuid.uuid4().hex[:8]}"
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(CLASS_SRC)
    sys.path.insert(0, str(root))
    try:
        obj = importlib.import_module(f"{name}.config").Config()
    finally:
        sys.path.remove(str(root))

    def forget():
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]
        shutil.rmtree(pkg)
        importlib.invalidate_caches()

    return obj, f"{name}.config.Config", forget


class _Payload:
    """Pickles as a call of `fn(*args)`: what a malicious checkpoint does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _payloads(marker: Path) -> dict:
    return {"os.system": _Payload(os.system, f"touch {marker}"),
            "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")}


def _logits_torch(model, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, *shape)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# fixtures: the original project's checkpoints, imported once per module

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def peer_cnn(work):
    """(torch model, best_model.pth path, vanished class name, marker path): the state dict under
    'model_state_dict' beside a pickled Config whose class no longer exists and a malicious payload."""
    torch.manual_seed(0)
    model = _randomize(tcnn.AdaptiveCNN("mnist", 1, 10), 1)
    cfg_obj, class_name, forget = _vanished_config(work)
    marker = work / "pwned_by_import"
    path = work / "best_model.pth"
    torch.save({"model_state_dict": model.state_dict(), "config": cfg_obj, "epoch": 7, "best_val_acc": 99.1,
                "scheduler_state_dict": _payloads(marker)["os.system"]}, path)
    forget()
    return model, path, class_name, marker


@pytest.fixture(scope="module")
def imported_cnn(peer_cnn, work):
    _, path, _, _ = peer_cnn
    return from_torch("mnist_cnn:smoke", path, work / "cnn", log=_quiet)


# ----------------------------------------------------------------------------------------------------------------
# the restricted reader

def test_peer_checkpoint_loads_without_its_classes(peer_cnn):
    model, path, class_name, marker = peer_cnn
    # negative controls: torch's own loaders cannot read it
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    obj = load_torch_file(path)
    assert isinstance(obj["config"], Unloaded) and obj["config"].global_name == class_name
    assert obj["config"].state["experiment_name"] == "cnn_mnist"
    assert obj["config"].state["training"].global_name == class_name.replace(".Config", ".TrainingConfig")
    assert obj["scheduler_state_dict"].global_name in ("posix.system", "os.system")
    assert obj["epoch"] == 7 and not marker.exists()
    sd = state_dict_arrays(obj)
    ref = model.state_dict()
    assert list(sd) == list(ref)
    for k, v in ref.items():
        assert sd[k].dtype == v.numpy().dtype and sd[k].shape == tuple(v.shape) and np.array_equal(sd[k], v.numpy())


def test_vanished_class_needs_its_module_with_plain_torch_load(tmp_path):
    """Negative control for the above: unrestricted loading imports the class and fails without it."""
    obj, _, forget = _vanished_config(tmp_path)
    torch.save({"config": obj}, tmp_path / "c.pth")
    forget()
    with pytest.raises(ModuleNotFoundError):
        torch.load(tmp_path / "c.pth", weights_only=False)


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_malicious_pickle_does_not_run(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[kind]
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "extra": payload}, path)
    torch.load(path, weights_only=False)  # negative control: the payload is live under unrestricted loading
    assert marker.exists()
    marker.unlink()
    obj = load_torch_file(path)
    assert not marker.exists()
    assert isinstance(obj["extra"], Unloaded) and obj["extra"].global_name.endswith(kind.split(".")[1])
    assert state_dict_arrays(obj)["w"].tolist() == [1.0, 1.0]
    # inside the state dict itself: refused with a clear error, still not run
    torch.save({"model_state_dict": {"w": torch.ones(2), "x": payload}}, path)
    with pytest.raises(TorchCheckpointError, match=r"entry 'x' is a .*, not a tensor"):
        state_dict_arrays(load_torch_file(path), str(path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_every_protocol(tmp_path, protocol):
    import io

    from jaxkd.interop.torch_pickle import RestrictedUnpickler

    marker = tmp_path / "pwned"
    data = pickle.dumps({"evil": _payloads(marker)["os.system"], "b": b"\x00\xff", "s": {1, 2}}, protocol=protocol)
    obj = RestrictedUnpickler(io.BytesIO(data)).load()
    assert isinstance(obj["evil"], Unloaded) and obj["b"] == b"\x00\xff" and obj["s"] == {1, 2}
    assert not marker.exists()
    # bytes are rebuilt with _codecs.encode(text, 'latin1') in protocol 2; no other codec is accepted
    crafted = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    assert pickle.loads(crafted) == "nop"  # what an unrestricted unpickler does with it
    with pytest.raises(pickle.UnpicklingError, match="rot13"):
        RestrictedUnpickler(io.BytesIO(crafted)).load()


def test_unreadable_files(tmp_path):
    with pytest.raises(TorchCheckpointError, match="no such file"):
        load_torch_file(tmp_path / "missing.pth")
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(TorchCheckpointError, match="not a PyTorch zip checkpoint"):
        load_torch_file(tmp_path / "legacy.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a whole pickled module, not a state dict
    with pytest.raises(TorchCheckpointError, match="not a state dict"):
        state_dict_arrays(load_torch_file(tmp_path / "module.pth"))


# ----------------------------------------------------------------------------------------------------------------
# from-torch

def test_from_torch_cnn_matches_torch(peer_cnn, imported_cnn):
    model, _, class_name, marker = peer_cnn
    out = imported_cnn
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "converted_from.json", "data.json", "model"]
    jmodel, cfg = ckpt_lib.load(out)
    assert config_lib.flatten(cfg) == config_lib.flatten(config_lib.load("mnist_cnn:smoke"))
    x = _images((28, 28, 1))
    diff = np.abs(_logits_jax(jmodel, x) - _logits_torch(model, x)).max()
    print(f"CNN logits torch vs imported jaxkd: max abs diff {diff:.2e}")
    assert diff <= TOL
    # negative control: a BatchNorm running mean off by 0.05 in the reference is detected (stats are compared)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.features[0][1].running_mean.add_(0.05)
    control = np.abs(_logits_jax(jmodel, x) - _logits_torch(other, x)).max()
    print(f"negative control (running_mean + 0.05): max abs diff {control:.2e}")
    assert control > 100 * TOL
    meta = json.loads((out / "data.json").read_text())
    assert meta == {"class_names": [str(i) for i in range(10)], "image_shape": [28, 28, 1], "mean": [0.1307],
                    "std": [0.3081]}
    ignored = json.loads((out / "converted_from.json").read_text())["ignored_objects"]
    assert f"config: {class_name}" in ignored and any(s.startswith("scheduler_state_dict: ") for s in ignored)
    assert not marker.exists()


def test_evaluate_runs_on_imported_workdir(imported_cnn, shared_data_dir):
    from jaxkd import evaluate

    assert evaluate.main(["--workdir", str(imported_cnn)]) == 0
    report = json.loads((imported_cnn / "eval_test.json").read_text())
    assert report["count"] == 64  # mnist_cnn:smoke caps the test split at 64 images


def test_predict_runs_on_imported_workdir(peer_cnn, imported_cnn, tmp_path):
    """predict reads data.json (class names, image shape, normalisation): its probabilities equal torch's on the
    image normalised with the SPEC MNIST statistics."""
    from PIL import Image

    from jaxkd import predict

    pixels = np.random.default_rng(7).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    (res,) = predict.predict(imported_cnn, [str(tmp_path / "digit.png")])
    x = ((pixels.astype(np.float32) / 255.0 - 0.1307) / 0.3081)[None, :, :, None]
    probs = torch.softmax(torch.from_numpy(_logits_torch(peer_cnn[0], x)), -1).numpy()[0]
    assert [name for name, _ in res["top5"]] == [str(i) for i in np.argsort(-probs)[:5]]
    np.testing.assert_allclose([p for _, p in res["top5"]], np.sort(probs)[::-1][:5], atol=TOL)


@pytest.mark.parametrize("kind", ["workdir", "pth"])
def test_distillation_accepts_it_as_teacher(peer_cnn, imported_cnn, kind):
    """The imported workdir (and the original .pth itself, through load_torch_checkpoint) is a KD teacher."""
    from jaxkd.tasks import kd as distill

    model, path, _, marker = peer_cnn
    teacher_path = imported_cnn if kind == "workdir" else path
    cfg = config_lib.load("deit_mnist:smoke", [f"--config.distillation.teacher_checkpoint={teacher_path}"])
    teacher = distill.load_kd_teacher(cfg, 10, (28, 28, 1))
    x = _images((28, 28, 1), seed=5)
    diff = np.abs(_logits_jax(teacher.model(), x) - _logits_torch(model, x)).max()
    print(f"KD teacher ({kind}) logits vs torch: max abs diff {diff:.2e}")
    assert diff <= TOL and not marker.exists()


def test_from_torch_vit_with_overrides(tmp_path):
    torch.manual_seed(3)
    model = _randomize(tvit.DeiT(img_size=28, patch_size=2, in_channels=1, num_classes=10, embed_dim=192, depth=2,
                                 num_heads=3, mlp_ratio=2.0, distillation=True, convert_grayscale=True,
                                 use_conv_stem=True, inference_mode="avg"), 4)
    torch.save(model.state_dict(), tmp_path / "deit.pth")  # a bare state dict
    overrides = ["--config.vit.distillation=true", "--config.vit.inference_mode=avg"]
    out = from_torch("vit_mnist:smoke", tmp_path / "deit.pth", tmp_path / "deit", overrides, log=_quiet)
    jmodel, cfg = ckpt_lib.load(out)
    assert cfg.vit.distillation and cfg.vit.inference_mode == "avg"
    x = _images((28, 28, 1), seed=1)
    diff = np.abs(_logits_jax(jmodel, x) - _logits_torch(model, x)).max()
    print(f"DeiT logits torch vs imported jaxkd: max abs diff {diff:.2e}")
    assert diff <= TOL
    # and back: to-torch loads strictly into the torch_ref model, bit-exact, same logits
    to_torch(out, tmp_path / "deit_back.pth")
    back = torch.load(tmp_path / "deit_back.pth", weights_only=True)
    fresh = tvit.DeiT(img_size=28, patch_size=2, in_channels=1, num_classes=10, embed_dim=192, depth=2, num_heads=3,
                      mlp_ratio=2.0, distillation=True, convert_grayscale=True, use_conv_stem=True).eval()
    fresh.load_state_dict(back, strict=True)
    for k, v in model.state_dict().items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert np.abs(_logits_torch(fresh, x) - _logits_jax(jmodel, x)).max() <= TOL


def _bad_head_checkpoint(peer_cnn, path: Path) -> Path:
    sd = dict(peer_cnn[0].state_dict())
    sd["classifier.3.weight"], sd["classifier.3.bias"] = torch.zeros(100, 64), torch.zeros(100)
    torch.save({"model_state_dict": sd}, path)
    return path


def test_mismatching_checkpoint_is_one_line_and_leaves_out_alone(peer_cnn, tmp_path):
    bad = _bad_head_checkpoint(peer_cnn, tmp_path / "c100.pth")
    with pytest.raises(ConvertError) as e:
        from_torch("mnist_cnn:smoke", bad, tmp_path / "new", log=_quiet)
    msg = str(e.value)
    assert "\n" not in msg and "mnist_cnn:smoke" in msg and "classifier.3.weight (100, 64) vs (10, 64)" in msg
    assert "--config.model.num_classes=100" in msg
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))
    # wrong architecture, into an existing jaxkd workdir with --force: still refused, workdir untouched
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.json").write_text("{}")
    with pytest.raises(ConvertError) as e:
        from_torch("vit_mnist:smoke", peer_cnn[1], existing, force=True, log=_quiet)
    msg = str(e.value)
    assert "\n" not in msg and " missing: " in msg and "(+" in msg and "unexpected: features.0.0.weight" in msg
    assert "looks like adaptive_cnn (mnist variant, 1 input channel, 10 classes)" in msg
    assert [p.name for p in existing.iterdir()] == ["config.json"] and (existing / "config.json").read_text() == "{}"


def test_out_dir_rules(peer_cnn, tmp_path):
    path = peer_cnn[1]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(ConvertError, match="not empty|not a jaxkd workdir"):
            from_torch("mnist_cnn:smoke", path, other, force=force, log=_quiet)
    assert (other / "todo.txt").read_text() == "keep me"
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.json").write_text("{}")
    (wd / "stale.txt").write_text("old run")
    with pytest.raises(ConvertError, match="pass --force"):
        from_torch("mnist_cnn:smoke", path, wd, log=_quiet)
    from_torch("mnist_cnn:smoke", path, wd, force=True, log=_quiet)
    assert not (wd / "stale.txt").exists() and json.loads((wd / "config.json").read_text())["seed"] == 42
    assert ckpt_lib.load(wd)[1].experiment_name == "mnist_cnn"


def test_cli_mismatch_exits_2(peer_cnn, tmp_path):
    bad = _bad_head_checkpoint(peer_cnn, tmp_path / "c100.pth")
    r = subprocess.run([sys.executable, "-m", "jaxkd.convert", "from-torch", "--config", "mnist_cnn:smoke",
                        "--torch", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "classifier.3.weight" in lines[0]
    assert not (tmp_path / "o").exists()


def test_data_meta_without_and_with_loading():
    # mnist / cifar: from the config alone (the source does not exist, so nothing was loaded)
    cfg = config_lib.load("cifar_cnn:smoke", ["--config.data.source=npz:/nonexistent/x.npz"])
    meta = data_meta(cfg)
    assert meta["class_names"][0] == "airplane" and meta["image_shape"] == [32, 32, 3]
    assert meta["mean"] == [0.4914, 0.4822, 0.4465] and meta["std"] == [0.2470, 0.2435, 0.2616]
    # any other dataset: loaded, statistics of its training split (as training writes them)
    from jaxkd import data as data_lib

    cfg = config_lib.load("quickstart:smoke")
    meta = data_meta(cfg)
    pipe = data_lib.DataPipeline.from_config(cfg)
    x_train = pipe.splits["train"][0].astype(np.float64) / 255.0
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["image_shape"] == [8, 8, 1]
    np.testing.assert_allclose(meta["mean"], [x_train.mean()], rtol=1e-9)
    np.testing.assert_allclose(meta["std"], [x_train.std()], rtol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# to-torch

def test_to_torch_pth_round_trip(peer_cnn, imported_cnn, tmp_path):
    model = peer_cnn[0]
    out = to_torch(imported_cnn, tmp_path / "cnn.pth")
    sd = torch.load(out, weights_only=True)  # plain tensors: torch's safe loader accepts it
    for k, v in model.state_dict().items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape and torch.equal(sd[k], v), k
    fresh = tcnn.AdaptiveCNN("mnist", 1, 10).eval()
    fresh.load_state_dict(sd, strict=True)
    jmodel, _ = ckpt_lib.load(imported_cnn)
    x = _images((28, 28, 1), seed=2)
    diff = np.abs(_logits_torch(fresh, x) - _logits_jax(jmodel, x)).max()
    print(f"CNN logits exported .pth vs jaxkd: max abs diff {diff:.2e}")
    assert diff <= TOL
    with pytest.raises(ConvertError, match="exists; pass --force"):
        to_torch(imported_cnn, out)
    to_torch(imported_cnn, out, force=True)
    with pytest.raises(ConvertError, match=r"\.pth .*\.safetensors"):
        to_torch(imported_cnn, tmp_path / "cnn.npz")


def test_to_torch_safetensors_and_back(peer_cnn, imported_cnn, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    out = to_torch(imported_cnn, tmp_path / "cnn.safetensors")
    loaded = load_file(str(out))
    ref = {k: v.numpy() for k, v in peer_cnn[0].state_dict().items()}
    assert sorted(loaded) == sorted(ref)
    for k, v in ref.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape and np.array_equal(loaded[k], v), k
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and json.loads(meta["jaxkd_config"])["experiment_name"] == "mnist_cnn"
    with pytest.raises(ConvertError, match="exists"):
        to_torch(imported_cnn, out)
    # a .safetensors state dict imports as well
    wd = from_torch("mnist_cnn:smoke", out, tmp_path / "again", log=_quiet)
    a, _ = ckpt_lib.load(wd)
    b, _ = ckpt_lib.load(imported_cnn)
    x = _images((28, 28, 1), seed=3)
    assert np.array_equal(_logits_jax(a, x), _logits_jax(b, x))


def test_main_rejects_overrides_outside_from_torch(tmp_path):
    with pytest.raises(SystemExit):
        main(["to-torch", "--workdir", str(tmp_path), "--out", str(tmp_path / "x.pth"), "--config.seed=1"])
