"""CIFAR pre-activation Wide ResNet (WRN-d-k), built as the official SSN code builds it.

3x3 stem with 16 channels; three stages of (d-4)/6 blocks BN-ReLU-conv3x3-BN-ReLU-conv3x3; a 1x1
shortcut conv applied to the *pre-activated* input when the block changes shape; no dropout;
BN-ReLU-avgpool-linear head. Weight-layer order: stem, per block conv1, conv2, shortcut, classifier.
Plain WRN-28-10 has 36,536,884 parameters with 100 classes and 36,479,194 with 10.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .layers import LayerFactory, reset_batchnorms


class PreActBlock(nn.Module):
    def __init__(self, f: LayerFactory, prefix: str, cin: int, cout: int, stride: int, stage: int, block: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = f.conv(f"{prefix}.conv1", cin, cout, 3, stride, stage=stage, block=block)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = f.conv(f"{prefix}.conv2", cout, cout, 3, 1, stage=stage, block=block)
        self.relu = nn.ReLU(inplace=True)
        self.equal_in_out = cin == cout and stride == 1
        self.shortcut = None
        if not self.equal_in_out:
            self.shortcut = f.conv(f"{prefix}.shortcut", cin, cout, 1, stride, 0, role="shortcut", stage=stage, block=block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.relu(self.bn2(self.conv1(out))))
        return out + residual


class WideResNet(nn.Module):
    stage_1: nn.Sequential  # set with setattr in __init__ (their names are the weight layers' name prefixes)
    stage_2: nn.Sequential
    stage_3: nn.Sequential

    def __init__(self, depth: int, width: int | float, num_classes: int) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"model.arch: WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40...), got {depth}")
        channels = [16] + [max(1, int(round(c * width))) for c in (16, 32, 64)]
        if width <= 0:
            raise ConfigError(f"model.arch: WRN width must be positive, got {width}")
        n = (depth - 4) // 6
        self.depth, self.width, self.num_classes = depth, width, num_classes
        f = LayerFactory()
        self.conv_3x3 = f.conv("conv_3x3", 3, channels[0], 3, 1, role="stem", stage=0)
        cin = channels[0]
        for s in range(3):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(PreActBlock(f, f"stage_{s + 1}.{b}", cin, channels[s + 1], stride, s + 1, b))
                cin = channels[s + 1]
            setattr(self, f"stage_{s + 1}", nn.Sequential(*blocks))
        self.lastact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear("classifier", cin, num_classes, stage=4)
        self.layer_specs = tuple(f.specs)
        reset_batchnorms(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_3x3(x)
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        x = self.avgpool(self.lastact(x)).flatten(1)
        return self.classifier(x)
