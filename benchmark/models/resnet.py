"""ImageNet bottleneck ResNets (v1.5: the stride sits on the 3x3 conv), ResNet-50 and WRN-50-2.

Layout and parameter counts equal torchvision's ``resnet50`` (25,557,032) and ``wide_resnet50_2``
(68,883,240). The last BN of every residual branch starts at zero, as in the SSN reference code's
ImageNet ResNet (``zero_init_residual``). Weight-layer order: stem, then per block conv1, conv2,
conv3, shortcut (torchvision's module order), classifier last.

``variant="ssn"`` (``resnet50-ssn``) is the ImageNet ResNet-50 of the SSN code (``models/wrn.py``
``wrn_imagenet``): the same v1.5 bottleneck stages behind an Inception-style trunk of three 3x3
conv-BN-ReLU layers (32, 32, 64 channels, the first with stride 2) instead of the 7x7 stem, and the
skip connection built (and numbered) before the block's three convolutions; 25,576,264 parameters
at 1000 classes, as the official model. The SSN paper's ImageNet rows use this network.
``wrn50-2-ssn`` is the same network at ``width_per_group=128`` (the official ``--wide 2``: the bottleneck
channels doubled), 68,902,472 parameters as the official model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import LayerFactory, reset_batchnorms


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, f: LayerFactory, prefix: str, cin: int, planes: int, stride: int, width_per_group: int,
                 stage: int, block: int, shortcut_first: bool = False) -> None:
        super().__init__()
        mid = int(planes * (width_per_group / 64.0))
        cout = planes * self.expansion
        self.shortcut: nn.Module | None = None
        if shortcut_first:  # the SSN code's block: the skip connection is built (and numbered) first
            self._make_shortcut(f, prefix, cin, cout, stride, stage, block)
        self.conv1 = f.conv(f"{prefix}.conv1", cin, mid, 1, 1, 0, stage=stage, block=block)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = f.conv(f"{prefix}.conv2", mid, mid, 3, stride, 1, stage=stage, block=block)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = f.conv(f"{prefix}.conv3", mid, cout, 1, 1, 0, stage=stage, block=block)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        if not shortcut_first:
            self._make_shortcut(f, prefix, cin, cout, stride, stage, block)

    def _make_shortcut(self, f: LayerFactory, prefix: str, cin: int, cout: int, stride: int, stage: int,
                       block: int) -> None:
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                f.conv(f"{prefix}.shortcut.0", cin, cout, 1, stride, 0, role="shortcut", stage=stage, block=block),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BottleneckResNet(nn.Module):
    layer1: nn.Sequential  # set with setattr in __init__ (torchvision's names)
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, layers: tuple[int, ...], num_classes: int, width_per_group: int = 64,
                 zero_init_residual: bool = True, variant: str = "torchvision") -> None:
        super().__init__()
        if variant not in ("torchvision", "ssn"):
            raise ValueError(f"BottleneckResNet variant: 'torchvision' or 'ssn', got {variant!r}")
        f = LayerFactory()
        self.num_classes = num_classes
        self.variant = variant
        if variant == "ssn":  # the SSN code's ImageNet trunk: three 3x3 conv-BN-ReLU (32, 32, 64), the first stride 2
            self.stem = nn.Sequential(*[m for i, (cin, cout, s) in enumerate(((3, 32, 2), (32, 32, 1), (32, 64, 1)))
                                        for m in (f.conv(f"stem.{3 * i}", cin, cout, 3, s, 1, role="stem", stage=0),
                                                  nn.BatchNorm2d(cout), nn.ReLU(inplace=True))])
        else:
            self.conv1 = f.conv("conv1", 3, 64, 7, 2, 3, role="stem", stage=0)
            self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for s, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blk = Bottleneck(f, f"layer{s + 1}.{b}", cin, planes, stride, width_per_group, s + 1, b,
                                 shortcut_first=variant == "ssn")
                blocks.append(blk)
                cin = planes * Bottleneck.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = f.linear("fc", cin, num_classes, stage=len(layers) + 1)
        self.layer_specs = tuple(f.specs)
        reset_batchnorms(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x) if self.variant == "ssn" else self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
