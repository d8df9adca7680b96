"""Architecture registry: names like ``wrn-28-10``, ``wrn-16-4``, ``resnet50``, ``wrn50-2``, ``resnet50-ssn``,
``wrn50-2-ssn``, ``vit-tiny-p4``, ``deit-small``, ``densenet-bc-100-12``, ``mobilenetv2``, ``mobilenetv2-cifar``.

Names of a family grammar resolve without being listed, so the reduced baselines and SuperWeight ensembles
can ask for members such as ``wrn-16-1.5``:

- ``wrn-D-K``: D = 6n+4, K > 0 (possibly fractional);
- ``vit-D-E[-hH]-pP``: a CIFAR (32x32) ViT of depth D, embed width E, H heads (default E/64, at least 1) and
  patch P; ``deit-D-E[-hH]`` the same at 224x224 with patch 16;
- ``densenet-bc-D-K``: D = 6n+4, growth rate K (an integer);
- ``mobilenetv2-W`` / ``mobilenetv2-cifar-W``: width multiplier W.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from ..errors import RegistryError
from ..registry import Registry
from .densenet import DenseNetBC
from .mobilenet import MobileNetV2
from .resnet import BottleneckResNet
from .vit import VisionTransformer
from .wrn import WideResNet


@dataclass(frozen=True)
class ArchDef:
    name: str
    family: str  # "wrn" | "resnet" | "vit" | "densenet-bc" | "mobilenetv2"
    domain: str  # "cifar" | "imagenet": the input resolution it was designed for
    builder: Callable[[int], nn.Module]
    hyper: dict = field(default_factory=dict)
    # the one input size the network takes (a ViT's position embedding has one entry per patch); None: any size
    image_size: int | None = None

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


_VIT_RE = re.compile(r"^(vit|deit)-(\d+)-(\d+)(?:-h(\d+))?(?:-p(\d+))?$")
_DENSENET_RE = re.compile(r"^densenet-bc-(\d+)-(\d+)$")
_MOBILENET_RE = re.compile(r"^mobilenetv2(-cifar)?(?:-(\d+(?:\.\d+)?))?$")


def _vit_def(name: str, depth: int, dim: int, heads: int, patch: int, image_size: int) -> ArchDef:
    domain = "cifar" if image_size == 32 else "imagenet"
    return ArchDef(name, "vit", domain, lambda nc: VisionTransformer(image_size, patch, dim, depth, heads, nc),
                   {"depth": depth, "embed": dim, "heads": heads, "patch": patch}, image_size=image_size)


def _densenet_def(name: str, depth: int, growth: int) -> ArchDef:
    return ArchDef(name, "densenet-bc", "cifar", lambda nc: DenseNetBC(depth, growth, nc),
                   {"depth": depth, "growth": growth})


def _mobilenet_def(name: str, width: float, cifar: bool) -> ArchDef:
    w: int | float = int(width) if float(width).is_integer() else float(width)
    return ArchDef(name, "mobilenetv2", "cifar" if cifar else "imagenet", lambda nc: MobileNetV2(nc, w, cifar),
                   {"width": w})


# ViT-Ti / ViT-S (DeiT-Ti / DeiT-S) at 224x224 with patch 16, and the same widths on CIFAR with patch 4
for _size, _dim, _heads in (("tiny", 192, 3), ("small", 384, 6)):
    ARCHITECTURES.add(f"vit-{_size}-p4", _vit_def(f"vit-{_size}-p4", 12, _dim, _heads, 4, 32))
    ARCHITECTURES.add(f"deit-{_size}", _vit_def(f"deit-{_size}", 12, _dim, _heads, 16, 224))
for _d, _k in ((40, 12), (100, 12), (250, 24), (190, 40)):  # the paper's DenseNet-BC rows (and a small one)
    ARCHITECTURES.add(f"densenet-bc-{_d}-{_k}", _densenet_def(f"densenet-bc-{_d}-{_k}", _d, _k))
ARCHITECTURES.add("mobilenetv2", _mobilenet_def("mobilenetv2", 1.0, False))
ARCHITECTURES.add("mobilenetv2-cifar", _mobilenet_def("mobilenetv2-cifar", 1.0, True))


def _from_grammar(name: str) -> ArchDef | None:
    """The definition of a family-grammar name, or None when no grammar matches (then the registry says
    which names exist)."""
    m = _WRN_RE.match(name)
    if m:
        depth, width = int(m.group(1)), float(m.group(2))
        if (depth - 4) % 6 or depth < 10 or width <= 0:
            raise RegistryError(
                f"unknown architecture {name!r}: WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...) and width > 0."
            )
        return _wrn_def(name, depth, width)
    m = _VIT_RE.match(name)
    if m:
        family, depth, dim = m.group(1), int(m.group(2)), int(m.group(3))
        heads = int(m.group(4)) if m.group(4) else max(1, dim // 64)
        if family == "deit" and m.group(5):
            raise RegistryError(f"unknown architecture {name!r}: deit-D-E[-hH] has patch 16; for another patch "
                                "write vit-D-E[-hH]-pP (a 32x32 CIFAR ViT)")
        if family == "vit" and not m.group(5):
            raise RegistryError(f"unknown architecture {name!r}: a CIFAR ViT names its patch, e.g. vit-{depth}-{dim}-p4")
        patch = int(m.group(5)) if m.group(5) else 16
        size = 32 if family == "vit" else 224
        if depth < 1 or dim < 1 or heads < 1 or dim % heads or patch < 1 or size % patch:
            raise RegistryError(f"unknown architecture {name!r}: need depth >= 1, an embed width that splits into "
                                f"the heads ({dim} / {heads}) and a patch that divides {size}.")
        return _vit_def(name, depth, dim, heads, patch, size)
    m = _DENSENET_RE.match(name)
    if m:
        depth, growth = int(m.group(1)), int(m.group(2))
        if (depth - 4) % 6 or depth < 10 or growth < 1:
            raise RegistryError(f"unknown architecture {name!r}: DenseNet-BC depth must be 6n+4 (40, 100, 190, "
                                "250, ...) and the growth rate a positive integer.")
        return _densenet_def(name, depth, growth)
    m = _MOBILENET_RE.match(name)
    if m and m.group(2):
        width = float(m.group(2))
        if width <= 0:
            raise RegistryError(f"unknown architecture {name!r}: the MobileNetV2 width multiplier must be > 0.")
        return _mobilenet_def(name, width, bool(m.group(1)))
    return None


def get_arch(name: str) -> ArchDef:
    if name not in ARCHITECTURES:
        found = _from_grammar(name)
        if found is not None:
            return found
    return ARCHITECTURES.get(name)


def create_backbone(name: str, num_classes: int) -> nn.Module:
    """A network whose weight layers still lack providers (a method attaches them)."""
    return get_arch(name).build(num_classes)
