"""ConvNeXt V2 with the 2×2 stem in plain PyTorch, NCHW -- the twin of ``jaxkd.models.convnext``.

Written from ../shared/spec/LATER.md §2.2 (and the ConvNeXt V2 paper's GRN: ``γ·(x·N(x)) + β + x``, ``G(x)`` the L2
norm over the spatial axes, ``N(x) = G(x) / (mean over channels of G(x) + 1e-6)``): stem Conv 2×2/s2 + a
channels-first LayerNorm (eps 1e-6, biased variance over C), four stages (depths 3, 3, 9, 3; dims 96, 192, 384,
768; stages 1-3 open with LayerNorm2d + Conv 2×2/s2), blocks dwconv 7×7 → LayerNorm → Linear 4× → GELU → GRN →
Linear → drop path → residual, head avg pool → LayerNorm → Linear. Blocks run channels-first except the
LayerNorm / MLP / GRN part, which permutes to channels-last as the reference implementations do.

Module names are timm's ``convnextv2_tiny`` keys (stem.0/1, stages.i.downsample.0/1, stages.i.blocks.j.{conv_dw,
norm, mlp.fc1, mlp.grn, mlp.fc2}, head.norm/fc); 27,870,730 parameters at 10 classes. Initialisation is not
reproduced here (parity loads the same weights on both sides); the parity suite checks timm's own model too.
"""

from __future__ import annotations

import torch
from torch import nn

DEPTHS = (3, 3, 9, 3)
DIMS = (96, 192, 384, 768)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W): per position, mean and biased variance over C."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = (x - mu).square().mean(dim=1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class GRN(nn.Module):
    """Global response normalisation on channels-last (B, H, W, C); parameters weight (γ) and bias (β), (C,)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (x * n) + self.bias + x


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.grn(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Per-sample stochastic depth: x · Bernoulli(1 − p) / (1 − p) in training, identity otherwise."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    def __init__(self, dim: int, drop_path: float = 0.0):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # -> (B, H, W, C)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class Stage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, rates, downsample: bool):
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim), nn.Conv2d(in_dim, dim, kernel_size=2, stride=2))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[Block(dim, r) for r in rates])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean(dim=(2, 3))))


class ConvNeXtV2(nn.Module):
    """x (B, C, H, W) -> logits (B, num_classes); ``depths`` / ``dims`` default to Tiny."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, depths=DEPTHS, dims=DIMS,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], kernel_size=2, stride=2), LayerNorm2d(dims[0]))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, first = [], 0
        for i, depth in enumerate(depths):
            stages.append(Stage(dims[max(i - 1, 0)], dims[i], depth, rates[first:first + depth], downsample=i > 0))
            first += depth
        self.stages = nn.Sequential(*stages)
        self.head = Head(dims[-1], num_classes)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' outputs, NCHW."""
        maps, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
