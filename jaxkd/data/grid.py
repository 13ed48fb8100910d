"""Image grids: a batch of images as one picture (``python -m jaxkd.data preview``, the trainer's TensorBoard
image of its first augmented batch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["make_grid"]


def make_grid(images: np.ndarray, captions: Sequence[str] | None = None, *, min_tile: int = 112):
    """A PIL image tiling float images in [0, 1] (N, H, W, C), upscaled (nearest) to at least ``min_tile`` px."""
    from PIL import Image, ImageDraw

    n, h, w, c = images.shape
    scale = max(1, math.ceil(min_tile / max(h, w)))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cap_h = 12 if captions else 0
    pad = 2
    th, tw = h * scale + cap_h, w * scale
    grid = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    pixels = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    for i in range(n):
        tile = pixels[i][..., 0] if c == 1 else pixels[i]
        im = Image.fromarray(tile).convert("RGB").resize((tw, h * scale), Image.NEAREST)
        x0, y0 = pad + (i % cols) * (tw + pad), pad + (i // cols) * (th + pad)
        grid.paste(im, (x0, y0))
        if captions:
            draw.text((x0 + 1, y0 + h * scale), captions[i][: max(4, tw // 6)], fill=(0, 0, 0))
    return grid
