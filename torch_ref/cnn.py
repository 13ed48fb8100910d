"""AdaptiveCNN (SE-ResNet teacher) in plain PyTorch, NCHW, with the original project's module names.

Mirror of ``jaxkd.models.cnn``; ``state_dict()`` keys/shapes equal PEER_CHECKPOINTS.md
(mnist: 106 entries / 709,034 parameters, cifar: 182 / 17,629,514). PyTorch default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

BLOCKS = {
    "mnist": [(32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)],
    "cifar": [
        (64, 64, 1), (64, 64, 1),
        (64, 128, 2), (128, 128, 1), (128, 128, 1),
        (128, 256, 2), (256, 256, 1), (256, 256, 1),
        (256, 512, 2), (512, 512, 1), (512, 512, 1),
    ],
}


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
        blocks = BLOCKS[variant]
        c0 = blocks[0][0]
        stem = [nn.Conv2d(in_channels, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()]
        if variant == "mnist":
            stem.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(
            nn.Sequential(*stem),
            *[ResidualBlock(i, o, s, use_se) for i, o, s in blocks],
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        c = blocks[-1][1]
        self.classifier = nn.Sequential(
            nn.Linear(c, c // 2),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(c // 2, num_classes),
        )

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.global_pool(self.features(x)), 1))
