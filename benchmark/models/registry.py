"""Architecture registry: names like ``wrn-28-10``, ``wrn-16-4``, ``resnet50``, ``wrn50-2``, ``resnet50-ssn``,
``wrn50-2-ssn``.

Any ``wrn-D-K`` with D = 6n+4 and a positive (possibly fractional) width K resolves too, so the
reduced-width baselines and SuperWeight ensembles can ask for members such as ``wrn-16-1.5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from ..errors import RegistryError
from ..registry import Registry
from .resnet import BottleneckResNet
from .wrn import WideResNet


@dataclass(frozen=True)
class ArchDef:
    name: str
    family: str  # "wrn" | "resnet"
    domain: str  # "cifar" | "imagenet": the input resolution it was designed for
    builder: Callable[[int], nn.Module]
    hyper: dict = field(default_factory=dict)

    def build(self, num_classes: int) -> nn.Module:
        return self.builder(num_classes)


ARCHITECTURES: Registry[ArchDef] = Registry("architecture")

_WRN_RE = re.compile(r"^wrn-(\d+)-(\d+(?:\.\d+)?)$")


def _wrn_def(name: str, depth: int, width: float) -> ArchDef:
    w: int | float = int(width) if float(width).is_integer() else float(width)
    return ArchDef(name, "wrn", "cifar", lambda nc: WideResNet(depth, w, nc), {"depth": depth, "width": w})


for _d, _k in [(10, 1), (10, 2), (10, 4), (16, 1), (16, 2), (16, 4), (16, 7), (16, 8), (22, 4),
               (28, 3), (28, 4), (28, 7), (28, 10), (40, 4)]:
    ARCHITECTURES.add(f"wrn-{_d}-{_k}", _wrn_def(f"wrn-{_d}-{_k}", _d, _k))

ARCHITECTURES.add("resnet50", ArchDef("resnet50", "resnet", "imagenet",
                                      lambda nc: BottleneckResNet((3, 4, 6, 3), nc, 64), {"depth": 50, "width": 1}))
ARCHITECTURES.add("resnet50-ssn", ArchDef("resnet50-ssn", "resnet", "imagenet",
                                          lambda nc: BottleneckResNet((3, 4, 6, 3), nc, 64, variant="ssn"),
                                          {"depth": 50, "width": 1}))
ARCHITECTURES.add("wrn50-2", ArchDef("wrn50-2", "resnet", "imagenet",
                                     lambda nc: BottleneckResNet((3, 4, 6, 3), nc, 128), {"depth": 50, "width": 2}))
# the SSN code's ImageNet network (models/wrn.py wrn_imagenet) at --wide 2: the bottleneck (mid) channels doubled
ARCHITECTURES.add("wrn50-2-ssn", ArchDef("wrn50-2-ssn", "resnet", "imagenet",
                                         lambda nc: BottleneckResNet((3, 4, 6, 3), nc, 128, variant="ssn"),
                                         {"depth": 50, "width": 2}))


def get_arch(name: str) -> ArchDef:
    if name not in ARCHITECTURES:
        m = _WRN_RE.match(name)
        if m:
            depth, width = int(m.group(1)), float(m.group(2))
            if (depth - 4) % 6 or depth < 10 or width <= 0:
                raise RegistryError(
                    f"unknown architecture {name!r}: WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...) and width > 0."
                )
            return _wrn_def(name, depth, width)
    return ARCHITECTURES.get(name)


def create_backbone(name: str, num_classes: int) -> nn.Module:
    """A network whose weight layers still lack providers (a method attaches them)."""
    return get_arch(name).build(num_classes)
