"""What the analysis reads from a model: a seeded sample of a split, per-layer attention statistics of a ViT, and
per-layer representations (mean-pooled) of any jaxkd model or teacher, computed in jitted chunks.

Representations, one (n, d) matrix per layer (LATER.md §4.2, §7.18):

* DeiT / ViT: each block's output tokens (the residual stream, before the final LayerNorm), patch tokens only (the
  CLS and DIST tokens dropped), mean-pooled over the tokens;
* DINOv2: the same of ``get_intermediate_layers(norm=False)`` (class and register tokens dropped);
* CNNs (AdaptiveCNN, ResNet-18, ConvNeXt V2): each stage's output map (``feature_maps``), mean-pooled over space.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkd.analyze.attention import head_statistics

__all__ = ["sample_split", "is_vit", "layer_names", "pooled_layer_features", "attention_statistics",
           "layer_representations", "num_chunks", "unwrap_teacher"]


def sample_split(data, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (m, H, W, C) float32 normalised as for evaluation, labels (m,) int32, their row numbers in the split)
    for m = min(n, split size) rows drawn without replacement by ``default_rng(seed)``, in row order."""
    total = data.num_examples(split)
    m = min(int(n), total)
    rows = np.sort(np.random.default_rng(seed).choice(total, m, replace=False)) if m else np.zeros(0, int)
    wanted = np.zeros(total, bool)
    wanted[rows] = True
    images, labels, start = [], [], 0
    for batch in data.eval_batches(split):
        valid = int(np.sum(np.asarray(batch.mask)))
        keep = wanted[start:start + valid]
        if keep.any():
            images.append(np.asarray(batch.image)[:valid][keep])
            labels.append(np.asarray(batch.label)[:valid][keep])
        start += valid
    return (np.concatenate(images).astype(np.float32), np.concatenate(labels).astype(np.int32), rows)


def is_vit(model) -> bool:
    """Whether the model is a jaxkd DeiT / ViT (attention maps, patch grid, special tokens)."""
    return hasattr(model, "attention_maps") and hasattr(model, "grid_size") and hasattr(model, "num_prefix_tokens")


def layer_names(model) -> list[str]:
    """Labels of the layers :func:`pooled_layer_features` returns, in order."""
    from jaxkd.models.cnn import AdaptiveCNN
    from jaxkd.models.convnext import ConvNeXtV2
    from jaxkd.models.resnet import ResNet18CIFAR

    if is_vit(model) or hasattr(model, "get_intermediate_layers"):
        return [f"block{i}" for i in range(len(model.blocks))]
    if isinstance(model, ResNet18CIFAR):
        return ["stem", "layer1", "layer2", "layer3", "layer4"]
    if isinstance(model, ConvNeXtV2):
        return [f"stage{i + 1}" for i in range(len(model.stages))]
    if isinstance(model, AdaptiveCNN):
        widths = [b.conv1.out_features for b in list(model.features.layers)[1:]]
        stages = 1 + sum(1 for a, b in zip(widths, widths[1:]) if a != b)
        return ["stem"] + [f"stage{i + 1}" for i in range(stages)]
    raise ValueError(f"no layer representations for a {type(model).__name__}")


def pooled_layer_features(model, x: jax.Array) -> list[jax.Array]:
    """One (B, d) float32 matrix per layer of `model` for images x (see the module docstring)."""
    f32 = lambda a: a.astype(jnp.promote_types(a.dtype, jnp.float32))  # noqa: E731
    if is_vit(model):
        blocks = model.forward_heads(x, token_layers=tuple(range(len(model.blocks))))["blocks"]
        p = model.num_prefix_tokens
        return [jnp.mean(f32(b[:, p:]), axis=1) for b in blocks]
    if hasattr(model, "get_intermediate_layers"):
        outs = model.get_intermediate_layers(x, list(range(len(model.blocks))), norm=False)
        return [jnp.mean(f32(o), axis=1) for o in outs]
    if hasattr(model, "feature_maps"):
        return [jnp.mean(f32(m), axis=(1, 2)) for m in model.feature_maps(x)]
    raise ValueError(f"no layer representations for a {type(model).__name__}")


def _chunks(images: np.ndarray, size: int):
    """(chunk, number of real images in it) for chunks of at most `size` images, all of one shape (one compilation):
    ceil(n / size) chunks of equal size, the last one padded with copies of its first image."""
    n = len(images)
    size = -(-n // num_chunks(n, size))
    for start in range(0, n, size):
        part = images[start:start + size]
        real = len(part)
        if real < size and n > size:
            part = np.concatenate([part, np.repeat(part[:1], size - real, axis=0)])
        yield part, real


@partial(nnx.jit, static_argnames=("prefix", "grid"))
def _attention_stats(model, x, prefix: int, grid: tuple[int, int]):
    return [head_statistics(a, prefix, grid) for a in model.attention_maps(x)]


@partial(nnx.jit, static_argnames=("view",))
def _pooled(model, x, view):
    return pooled_layer_features(model, view(x) if view is not None else x)


def attention_statistics(model, images: np.ndarray, chunk_size: int,
                         on_chunk: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """Per-layer, per-head means over the images of :func:`jaxkd.analyze.attention.head_statistics` of a ViT:
    dict name -> (L, H) float64, with the grid and prefix taken from the model (``grid_size``,
    ``num_prefix_tokens``)."""
    prefix, grid = int(model.num_prefix_tokens), tuple(int(g) for g in model.grid_size)
    sums: dict[str, np.ndarray] = {}
    for part, real in _chunks(images, chunk_size):
        per_layer = _attention_stats(model, jnp.asarray(part), prefix, grid)
        for key in per_layer[0]:
            block = np.stack([np.asarray(layer[key], np.float64)[:real].sum(axis=0) for layer in per_layer])  # (L, H)
            sums[key] = sums.get(key, 0) + block
        if on_chunk is not None:
            on_chunk()
    return {k: v / len(images) for k, v in sums.items()}


def layer_representations(model, images: np.ndarray, chunk_size: int,
                          view: Callable[[jax.Array], jax.Array] | None = None,
                          on_chunk: Callable[[], None] | None = None) -> list[np.ndarray]:
    """:func:`pooled_layer_features` of every image, as float64 (n, d) host arrays, one per layer; ``view`` maps the
    (student-normalised) images to what this model sees (a teacher's normalisation and size)."""
    parts: list[list[np.ndarray]] = []
    for part, real in _chunks(images, chunk_size):
        parts.append([np.asarray(f, np.float64)[:real] for f in _pooled(model, jnp.asarray(part), view)])
        if on_chunk is not None:
            on_chunk()
    return [np.concatenate(layer) for layer in zip(*parts)]


def num_chunks(n: int, chunk_size: int) -> int:
    return -(-n // chunk_size)


def unwrap_teacher(module) -> nnx.Module:
    """The network inside a frozen teacher (token distillation keeps it as ``.net`` beside its projectors)."""
    return module.net if hasattr(module, "net") and not hasattr(module, "blocks") else module

