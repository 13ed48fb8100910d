"""AdaptiveCNN (SE-ResNet teacher) in plain PyTorch, NCHW, with the original project's module names.

Mirror of ``jaxkd.models.cnn`` by name, written from SPEC.md §1 rather than from jaxkd: the layout is the spec's own
description (stem width, then stages of width x blocks, "the first block of each new stage stride 2", the head's
hidden width as the spec states it), expanded into blocks here, not jaxkd's (in, out, stride) table.
``state_dict()`` keys/shapes equal PEER_CHECKPOINTS.md (mnist: 106 entries / 709,034 parameters, cifar: 182 /
17,629,514, the counts SPEC §1 states). PyTorch default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

# SPEC.md §1 as written there. mnist: "stem conv3x3 1→32 + BN + ReLU + MaxPool 2; RB32, RB32, RB(32→64, s2), RB64,
# RB(64→128, s2), RB128; GAP; Linear 128→64, ReLU, Dropout 0.3, Linear 64→10". cifar: "stem conv3x3 3→64 + BN + ReLU
# (no pool); stages 64×2, 128×3, 256×3, 512×3, the first block of each new stage stride 2; GAP; Linear 512→256, ...".
ARCHITECTURES = {
    "mnist": {"stem": 32, "pool": True, "stages": [(32, 2), (64, 2), (128, 2)], "hidden": 64},
    "cifar": {"stem": 64, "pool": False, "stages": [(64, 2), (128, 3), (256, 3), (512, 3)], "hidden": 256},
}


def residual_blocks(stem: int, stages, use_se: bool = True) -> list:
    """The residual blocks of ``stages`` [(width, blocks), ...] after a stem of width ``stem``: each block reads the
    previous one's width; the first block of every stage after the first has stride 2."""
    blocks, width = [], stem
    for s, (out, count) in enumerate(stages):
        for k in range(count):
            blocks.append(ResidualBlock(width, out, 2 if (s > 0 and k == 0) else 1, use_se))
            width = out
    return blocks


class SEBlock(nn.Module):
    """x * sigmoid(W2 ReLU(W1 GAP(x))), no biases, reduction 16."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        w = self.fc(self.squeeze(x).view(b, c)).view(b, c, 1, 1)
        return x * w


class ResidualBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN-SE + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, use_se: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SEBlock(out_channels) if use_se else nn.Identity()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class AdaptiveCNN(nn.Module):
    """variant 'mnist' (stem 32 + MaxPool2d(2), 6 blocks) or 'cifar' (stem 64, 11 blocks); x (B,C,H,W)."""

    def __init__(self, variant: str = "mnist", in_channels: int = 1, num_classes: int = 10,
                 head_dropout: float = 0.3, use_se: bool = True):
        super().__init__()
        arch = self.arch = ARCHITECTURES[variant]
        c0 = arch["stem"]
        stem = [nn.Conv2d(in_channels, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()]
        if arch["pool"]:
            stem.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(nn.Sequential(*stem), *residual_blocks(c0, arch["stages"], use_se))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(arch["stages"][-1][0], arch["hidden"]),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(arch["hidden"], num_classes),
        )

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def feature_maps(self, x: torch.Tensor) -> list:
        """[stem output, then the output of each of SPEC §1's stages] (B,C,h,w): after the stem, every `count`
        blocks of ``ARCHITECTURES[variant]["stages"]``."""
        h = self.features[0](x)
        maps, i = [h], 1
        for _, count in self.arch["stages"]:
            for _ in range(count):
                h = self.features[i](h)
                i += 1
            maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.global_pool(self.features(x)), 1))
