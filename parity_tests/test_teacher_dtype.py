"""Teacher precision (issue 21 item 5): a frozen teacher in bfloat16 (``ss_distillation.teacher_dtype``,
``distillation.teacher_dtype``) against the same teacher in float32, loaded through the trainer's own teacher
loaders and run through the tasks' own teacher paths, on real images.

- Token teacher: a DINOv2 ViT-S/14 (384 wide, 12 blocks, 6 heads: the architecture of ``dinov2_vits14``) written
  by torch_ref's DinoVisionTransformer with seeded random weights (the official weights are not on this machine;
  LayerScale at 1.0, so every block adds its full share of rounding), on real CIFAR-10 test images. Measured: the
  relative Frobenius error ``||t_bf16 - t_fp32|| / ||t_fp32||`` of the patch tokens of each layer the task takes
  (``token_layers`` and the last) and the smallest cosine similarity of any token.
- Classifier teacher: torch_ref's MNIST AdaptiveCNN (709 K parameters, seeded) as a .pth, on real MNIST test
  images: the relative error of its logits and the top-1 agreement with the float32 teacher.

Each test is two-sided: the error stays under the stated tolerance (bf16 carries 8 significant bits, so one
rounding is 2^-9 = 0.2 % relative), and it is above FLOOR = 1e-4: the float32 teacher run twice differs by exactly
0, so a ``teacher_dtype`` that did not take effect fails (the negative control; the teacher's floating state is
also checked to be all bfloat16 or all float32).

Measured (``python -m pytest -s parity_tests/test_teacher_dtype.py``, CPU): tokens of layers 0, 1, 11 at 56 px:
relative error 4.1e-3, 4.4e-3, 5.9e-3, min cosine 0.99997; CNN logits: 1.6e-3, top-1 agreement 1.0 (256 images).

``python parity_tests/test_teacher_dtype.py`` prints the figures at the real teacher input size (224 px,
256 patches) as well as at the tests' 56 px.
"""

from __future__ import annotations

import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import config as config_lib

TOKEN_TOL = 2e-2  # relative Frobenius error of bf16 tokens, per layer (measured 4e-3..6e-3)
TOKEN_COS_MIN = 0.9995  # the smallest cosine similarity of any bf16 token with its float32 twin (measured 0.99997)
LOGIT_TOL = 1e-2  # relative error of bf16 logits (measured 1.6e-3)
FLOOR = 1e-4  # a bf16 teacher differs from the float32 one by more than this; float32 from float32 by less


def _dinov2_file(directory: Path) -> Path:
    """A ViT-S/14-shaped DINOv2 state dict (torch_ref, seeded) as a .pth."""
    import torch

    from torch_ref.dinov2 import DinoVisionTransformer

    path = directory / "dinov2_vits14_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        net = DinoVisionTransformer(img_size=224, patch_size=14, embed_dim=384, depth=12, num_heads=6)
        torch.save(net.state_dict(), path)
    return path


def _cifar_images(data_dir: Path, n: int) -> tuple[np.ndarray, tuple, tuple]:
    """n real CIFAR-10 test images of the JPEG tar (the first of each class in turn, read directly, not the whole
    set), normalised with their own statistics: (images (n,32,32,3), mean, std)."""
    import io
    import tarfile

    from PIL import Image

    x, per_class, taken = [], -(-n // 10), {}
    with tarfile.open(data_dir / "cifar10-jpeg.tar.gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) == 3 and parts[0] == "test"):
                if x and parts[0] != "test":
                    break
                continue
            if taken.get(parts[1], 0) < per_class and len(x) < n:
                taken[parts[1]] = taken.get(parts[1], 0) + 1
                x.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
    x = np.stack(x).astype(np.float32) / 255.0
    mean, std = x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
    return (x - mean) / std, tuple(mean.tolist()), tuple(std.tolist())


def token_errors(weights: Path, data_dir: Path, img_size: int, n: int = 8) -> dict:
    """{layer: (relative error, min cosine)} of the bf16 teacher's tokens against the float32 teacher's."""
    from jaxkd.tasks import tokens

    images, mean, std = _cifar_images(data_dir, n)
    got = []
    for dt in ("float32", "bfloat16"):
        cfg = config_lib.load("configs/deit_ss_cifar.py:smoke", [
            f"--config.ss_distillation.teacher_checkpoint={weights}",
            f"--config.ss_distillation.teacher_img_size={img_size}", "--config.ss_distillation.token_layers=[0,1]",
            f"--config.ss_distillation.teacher_dtype={dt}"])
        teacher = tokens.load_ss_teacher(cfg, types.SimpleNamespace(mean=mean, std=std))
        kinds = {leaf.dtype for leaf in jax.tree.leaves(teacher.state) if jnp.issubdtype(leaf.dtype, jnp.floating)}
        assert kinds == {jnp.dtype(dt)}, (dt, kinds)
        task = tokens.SelfSupervisedDistillation.build(cfg, teacher).bind_data(mean, std)
        by_layer, _, _ = jax.jit(task.teacher_tokens)({"image": jnp.asarray(images)}, teacher.state)
        got.append({k: np.asarray(v, np.float64) for k, v in by_layer.items()})
    ref, low = got
    res = {}
    for layer in ref:
        a, b = ref[layer], low[layer]
        cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        res[layer] = (float(np.linalg.norm(b - a) / np.linalg.norm(a)), float(cos.min()))
    return res


def logit_errors(pth: Path, mnist: Path, n: int = 256) -> dict:
    """The bf16 CNN teacher's logits against the float32 teacher's: relative error and top-1 agreement (and the
    float32-vs-float32 control's error)."""
    from jaxkd.tasks import kd

    x = np.load(mnist)["x_test"][:n].astype(np.float32)[..., None] / 255.0
    x = (x - 0.1307) / 0.3081
    logits = {}
    for dt in ("float32", "bfloat16"):
        cfg = config_lib.load("configs/quickstart_kd.py:smoke", [
            f"--config.distillation.teacher_checkpoint={pth}", f"--config.distillation.teacher_dtype={dt}"])
        teacher = kd.load_kd_teacher(cfg, 10, (28, 28, 1))
        model = teacher.model()
        logits[dt] = np.asarray(jax.jit(lambda im, m=model: m(im).astype(jnp.float32))(jnp.asarray(x)), np.float64)
    a, b = logits["float32"], logits["bfloat16"]
    return {"rel": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
            "agree": float(np.mean(a.argmax(-1) == b.argmax(-1)))}


@pytest.fixture(scope="module")
def dinov2_weights(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return _dinov2_file(tmp_path_factory.mktemp("teacher_dtype"))


def test_bf16_token_teacher_within_tolerance(dinov2_weights, shared_data_dir):
    """DINOv2 ViT-S/14 at 56 px (16 patches), layers 0, 1 and 11: bf16 tokens within TOKEN_TOL of float32."""
    res = token_errors(dinov2_weights, shared_data_dir, img_size=56)
    for layer, (rel, cos) in res.items():
        print(f"layer {layer}: relative error {rel:.3e}, min cosine {cos:.6f}")
        assert FLOOR < rel < TOKEN_TOL and cos > TOKEN_COS_MIN, (layer, rel, cos)


def test_bf16_classifier_teacher_within_tolerance(tmp_path, shared_data_dir):
    """torch_ref's MNIST CNN as a .pth teacher: bf16 logits within LOGIT_TOL of float32."""
    torch = pytest.importorskip("torch")
    from torch_ref import cnn as tcnn

    torch.manual_seed(0)
    torch.save(tcnn.AdaptiveCNN("mnist", 1, 10).state_dict(), tmp_path / "cnn.pth")
    res = logit_errors(tmp_path / "cnn.pth", shared_data_dir / "mnist.npz")
    print(f"CNN logits: relative error {res['rel']:.3e}, top-1 agreement {res['agree']:.4f}")
    assert FLOOR < res["rel"] < LOGIT_TOL, res


if __name__ == "__main__":  # the figures at the real teacher input size: python parity_tests/test_teacher_dtype.py
    import sys
    import tempfile

    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
    with tempfile.TemporaryDirectory() as d:
        w = _dinov2_file(Path(d))
        for size in (56, 224):
            for layer, (rel, cos) in token_errors(w, data, size).items():
                print(f"DINOv2 ViT-S/14 at {size} px, layer {layer}: relative error {rel:.3e}, min cosine {cos:.6f}")
        import torch

        from torch_ref import cnn as tcnn

        torch.manual_seed(0)
        torch.save(tcnn.AdaptiveCNN("mnist", 1, 10).state_dict(), Path(d) / "cnn.pth")
        print("MNIST CNN logits:", logit_errors(Path(d) / "cnn.pth", data / "mnist.npz"))
