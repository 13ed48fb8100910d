"""`python -m jaxkd.predict --workdir DIR image.png ... [--explain OUT_DIR]`

Top-5 classes of each image with a trained run's model. `--explain` writes, per image, a picture of what the model
looked at, overlaid on the image: Grad-CAM over the last convolution for the CNN (the original project had
Grad-CAM), attention rollout (Abnar & Zuidema 2020: the product over blocks of 0.5·A + 0.5·I, head-averaged,
read from the class token) for the ViT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import config as config_lib
from jaxkd import paths as paths_lib
from jaxkd.train import checkpoint as ckpt_lib

__all__ = ["load_image", "predict", "grad_cam", "attention_rollout", "main"]


def load_image(path: str | Path, image_shape) -> np.ndarray:
    """An image file as uint8 (H, W, C) at the model's size and channels (PIL bilinear resize)."""
    from PIL import Image, UnidentifiedImageError

    h, w, c = image_shape
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as e:
        raise config_lib.ConfigError(f"cannot read image '{path}': {e}; give a PNG or JPEG file") from None
    img = img.convert("L" if c == 1 else "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, np.uint8)
    return arr[..., None] if c == 1 else arr


def _normalise(images: np.ndarray, meta: dict) -> jax.Array:
    mean = jnp.asarray(meta["mean"], jnp.float32)
    std = jnp.asarray(meta["std"], jnp.float32)
    return (jnp.asarray(images, jnp.float32) / 255.0 - mean) / std


def grad_cam(model, x: jax.Array) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of the top class over the CNN's last feature map: (B, h, w) in [0, 1].

    Weights are the spatial means of d(top logit)/d(feature map); the map is ReLU(Σ_c w_c·A_c), max-normalised."""
    feats = model.features_map(x).astype(jnp.float32)

    def head(f):  # the CNN's own head after the feature map: global average pool, then the classifier
        if hasattr(model, "logits_from_features"):  # ResNet-18, ConvNeXt V2 (pool, [LayerNorm,] Linear)
            return model.logits_from_features(f).astype(jnp.float32)
        return model.classifier(jnp.mean(f, axis=(1, 2))).astype(jnp.float32)

    top = jnp.argmax(head(feats), axis=-1)
    grads = jax.grad(lambda f: jnp.sum(jnp.take_along_axis(head(f), top[:, None], -1)))(feats)
    weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
    cam = jax.nn.relu(jnp.sum(weights * feats, axis=-1))
    cam = cam / jnp.maximum(jnp.max(cam, axis=(1, 2), keepdims=True), 1e-12)
    return np.asarray(cam)


def attention_rollout(model, x: jax.Array) -> np.ndarray:
    """Attention rollout from the class token to the patches: (B, gh, gw) in [0, 1]."""
    maps = model.attention_maps(x)  # per block (B, heads, T, T)
    rollout = None
    for a in maps:
        a = jnp.mean(a.astype(jnp.float32), axis=1)
        a = 0.5 * a + 0.5 * jnp.eye(a.shape[-1])
        a = a / jnp.sum(a, axis=-1, keepdims=True)
        rollout = a if rollout is None else a @ rollout
    prefix = model.num_prefix_tokens
    gh, gw = model.grid_size
    cls = rollout[:, 0, prefix:].reshape(-1, gh, gw)
    cls = cls / jnp.maximum(jnp.max(cls, axis=(1, 2), keepdims=True), 1e-12)
    return np.asarray(cls)


def _overlay(image: np.ndarray, heat: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    h, w = image.shape[:2]
    heat_img = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    shown = image[..., 0] if image.shape[-1] == 1 else image
    axes[0].imshow(shown, cmap="gray" if image.shape[-1] == 1 else None)
    axes[0].set_title("input")
    axes[1].imshow(shown, cmap="gray" if image.shape[-1] == 1 else None)
    axes[1].imshow(heat_img, cmap="jet", alpha=0.5)
    axes[1].set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def predict(workdir: str | Path, paths: list[str], explain: str | Path | None = None) -> list[dict]:
    """[{'image': path, 'top5': [(class, probability), ...]}] for each image."""
    workdir = Path(workdir)
    model, cfg = ckpt_lib.load(workdir)
    meta_file = workdir / "data.json"
    if not meta_file.is_file():
        raise ckpt_lib.CheckpointError(
            f"{workdir}: no data.json; give a jaxkd workdir written by python -m jaxkd.train")
    meta = json.loads(meta_file.read_text())
    images = np.stack([load_image(p, meta["image_shape"]) for p in paths])
    x = _normalise(images, meta)
    probs = np.asarray(jax.nn.softmax(model(x).astype(jnp.float32), axis=-1))
    names = meta["class_names"]
    out = []
    for p, pr in zip(paths, probs):
        order = np.argsort(-pr)[:5]
        out.append({"image": str(p), "top5": [(names[i], float(pr[i])) for i in order]})
    if explain:
        explain = Path(explain)
        explain.mkdir(parents=True, exist_ok=True)
        if hasattr(model, "attention_maps"):
            heat, how = attention_rollout(model, x), "attention rollout"
        else:
            heat, how = grad_cam(model, x), "Grad-CAM"
        for p, img, hm, o in zip(paths, images, heat, out):
            name, prob = o["top5"][0]
            target = explain / f"{Path(p).stem}_explain.png"
            _overlay(img, hm, target, f"{how}: {name} ({prob:.2f})")
            o["explanation"] = str(target)
    return out


def main(argv=None) -> int:
    parser = config_lib.ArgumentParser(prog="python -m jaxkd.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--explain", default=None, help="folder for Grad-CAM / attention-rollout pictures")
    args = parser.parse_args(argv)
    if args.explain is not None:
        paths_lib.output_dir(args.explain, "--explain")
    for r in predict(args.workdir, args.images, args.explain):
        top = ", ".join(f"{n} {p:.3f}" for n, p in r["top5"])
        print(f"{r['image']}: {top}" + (f"  [{r['explanation']}]" if "explanation" in r else ""))
    return 0


if __name__ == "__main__":
    config_lib.main_guard(lambda: main(sys.argv[1:]))
