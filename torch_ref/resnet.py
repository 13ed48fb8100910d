"""ResNet-18 with the CIFAR stem in plain PyTorch, NCHW -- the twin of ``jaxkd.models.resnet``.

Written from ../shared/spec/LATER.md §2.1's table (stem conv 3×3 / s1 + BN + ReLU without max-pool; layer1..4 of two
BasicBlocks at 64, 128, 256, 512 channels, the first block of layer2..4 strided with a 1×1 conv + BN shortcut;
AdaptiveAvgPool(1), Linear 512 → C) and its init bullet. The module names are the original project's state-dict
keys (conv1, bn1, layer{i}.{j}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}, fc): 11,173,962 parameters at C = 10.
"""

from __future__ import annotations

import torch
from torch import nn

# LATER.md §2.1: (stage name, out channels, stride of its first block); every stage has two blocks
LAYOUT = [("layer1", 64, 1), ("layer2", 128, 2), ("layer3", 256, 2), ("layer4", 512, 2)]


class BasicBlock(nn.Module):
    """conv3x3(s)-BN-ReLU-conv3x3-BN, + shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        ) if needs_projection else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nn.functional.relu(y + self.shortcut(x))


class ResNet18CIFAR(nn.Module):
    """x (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        width = 64
        for name, channels, stride in LAYOUT:
            self.add_module(name, nn.Sequential(BasicBlock(width, channels, stride), BasicBlock(channels, channels)))
            width = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem, layer1, layer2, layer3, layer4] outputs, NCHW."""
        maps = [nn.functional.relu(self.bn1(self.conv1(x)))]
        for name, _, _ in LAYOUT:
            maps.append(getattr(self, name)(maps[-1]))
        return maps

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features_map(x)), 1))
