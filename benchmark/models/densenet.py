"""CIFAR DenseNet-BC (Huang et al., CVPR 2017: bottleneck layers and compression 0.5), ``densenet-bc-D-K``.

A 3x3 stem of 2K channels; three dense blocks of n = (D - 4) / 6 layers, each BN-ReLU-conv1x1 (4K channels)
-BN-ReLU-conv3x3 (K channels) whose output is concatenated to its input; between blocks a transition
BN-ReLU-conv1x1 (half the channels) - avgpool 2; BN-ReLU-global avgpool-linear. No dropout (the paper's
DenseNet-BC with data augmentation). Layout and counts equal torchvision's ``DenseNet`` (same bottleneck,
transition and head) with its ImageNet stem (7x7 conv, BN, ReLU, max-pool) replaced by the CIFAR 3x3 conv:
``densenet-bc-100-12`` has 769,162 parameters at 10 classes and 800,032 at 100, the paper's "0.8M".

Weight-layer order: stem, per dense layer conv1 then conv2, each transition after its block, classifier.
Stages are the dense blocks (1..3; a transition belongs to the block before it, ``block = -1``). Within a
stage every conv2 has the same shape (K, 4K, 3, 3); the conv1 shapes all differ (their input grows).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .layers import LayerFactory, reset_batchnorms


class DenseLayer(nn.Module):
    def __init__(self, f: LayerFactory, prefix: str, cin: int, growth: int, stage: int, block: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = f.conv(f"{prefix}.conv1", cin, 4 * growth, 1, 1, 0, stage=stage, block=block)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = f.conv(f"{prefix}.conv2", 4 * growth, growth, 3, 1, 1, stage=stage, block=block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, f: LayerFactory, prefix: str, cin: int, cout: int, stage: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = f.conv(f"{prefix}.conv", cin, cout, 1, 1, 0, stage=stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.norm(x))), 2)


class DenseNetBC(nn.Module):
    def __init__(self, depth: int, growth: int, num_classes: int) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"model.arch: DenseNet-BC depth must be 6n+4 with n >= 1 (40, 100, 190, 250...), "
                              f"got {depth}")
        if growth < 1:
            raise ConfigError(f"model.arch: DenseNet-BC growth rate must be a positive integer, got {growth}")
        n = (depth - 4) // 6
        self.depth, self.growth, self.num_classes = depth, growth, num_classes
        f = LayerFactory()
        channels = 2 * growth
        self.stem = f.conv("stem", 3, channels, 3, 1, 1, role="stem", stage=0)
        stages = []
        for s in range(3):
            layers: list[nn.Module] = []
            for b in range(n):
                layers.append(DenseLayer(f, f"block{s + 1}.{b}", channels, growth, s + 1, b))
                channels += growth
            if s < 2:
                layers.append(Transition(f, f"block{s + 1}.transition", channels, channels // 2, s + 1))
                channels //= 2
            stages.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = stages
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = f.linear("classifier", channels, num_classes, stage=4)
        self.layer_specs = tuple(f.specs)
        reset_batchnorms(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        x = F.adaptive_avg_pool2d(F.relu(self.norm(x)), 1).flatten(1)
        return self.classifier(x)
