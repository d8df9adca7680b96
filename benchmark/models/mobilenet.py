"""MobileNetV2 (Sandler et al., CVPR 2018), built as torchvision's ``mobilenet_v2``: equal layout and
counts (3,504,872 parameters at 1000 classes, width 1.0), for ImageNet and a CIFAR variant.

A 3x3 stem conv (32 channels, stride 2) - BN - ReLU6; seven stages of inverted residual blocks (t, c, n, s:
expand t, output c, n blocks, first stride s): (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1)
(6,160,3,2) (6,320,1,1); a block is a 1x1 expansion conv (absent when t = 1) - BN - ReLU6, a 3x3 *depthwise*
conv (groups = channels) - BN - ReLU6, a 1x1 linear projection - BN, with the residual when the shape allows;
a 1x1 conv to 1280 - BN - ReLU6; global average pool; dropout 0.2; linear. Channel counts at a width
multiplier are rounded to multiples of 8 (torchvision's ``_make_divisible``); the last conv keeps 1280
below width 1. Init as torchvision: convs kaiming-normal fan-out, the classifier N(0, 0.01).

``mobilenetv2-cifar`` is the common CIFAR variant (e.g. kuangliu/pytorch-cifar): stride 1 in the stem and
in the second stage, so a 32x32 image is downsampled 8x instead of 32x, and no dropout; the same
parameters as the ImageNet network at the same number of classes.

Weight-layer order is torchvision's module order. Stages are the seven settings (1..7, ``block`` the
block's index in its stage), the last 1x1 conv is stage 8, the classifier stage 9.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .layers import LayerFactory, reset_batchnorms

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: the nearest multiple of ``divisor``, never 10% below ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _conv_bn(f: LayerFactory, name: str, cin: int, cout: int, k: int, stride: int, groups: int, stage: int,
             block: int, act: bool, role: str = "body") -> nn.Sequential:
    conv = f.conv(name, cin, cout, k, stride, (k - 1) // 2, role=role, stage=stage, block=block,  # type: ignore[arg-type]
                  groups=groups, init="kaiming_fan_out")
    mods: list[nn.Module] = [conv, nn.BatchNorm2d(cout)]
    if act:
        mods.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*mods)


class InvertedResidual(nn.Module):
    def __init__(self, f: LayerFactory, prefix: str, cin: int, cout: int, stride: int, expand: int, stage: int,
                 block: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(f, f"{prefix}.expand", cin, hidden, 1, 1, 1, stage, block, True))
        layers.append(_conv_bn(f, f"{prefix}.depthwise", hidden, hidden, 3, stride, hidden, stage, block, True))
        layers.append(_conv_bn(f, f"{prefix}.project", hidden, cout, 1, 1, 1, stage, block, False))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, cifar: bool = False, dropout: float | None = None) -> None:
        super().__init__()
        if not width > 0:
            raise ConfigError(f"model.arch: MobileNetV2 width multiplier must be positive, got {width}")
        self.width, self.cifar, self.num_classes = width, cifar, num_classes
        f = LayerFactory()
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        features: list[nn.Module] = [_conv_bn(f, "stem", 3, cin, 3, 1 if cifar else 2, 1, 0, -1, True, role="stem")]
        for s, (t, c, n, stride) in enumerate(SETTINGS):
            cout = make_divisible(c * width)
            if cifar and s == 1:
                stride = 1
            for b in range(n):
                features.append(InvertedResidual(f, f"stage{s + 1}.{b}", cin, cout, stride if b == 0 else 1, t,
                                                 s + 1, b))
                cin = cout
        features.append(_conv_bn(f, "last", cin, last, 1, 1, 1, len(SETTINGS) + 1, -1, True))
        self.features = nn.Sequential(*features)
        self.dropout = nn.Dropout((0.0 if cifar else 0.2) if dropout is None else dropout)
        self.classifier = f.linear("classifier", last, num_classes, stage=len(SETTINGS) + 2, init="normal_0.01")
        self.layer_specs = tuple(f.specs)
        reset_batchnorms(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(self.dropout(x))
