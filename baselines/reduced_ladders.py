"""What ``reduced`` may shrink in the families named by a registry grammar (ViT/DeiT, DenseNet-BC, MobileNetV2).

Each function returns *ladders*: lists of architecture names that the registry resolves, ordered so that
parameters grow along a ladder and ending at the requested network's size. ``width`` and ``depth`` give one
ladder; ``both`` gives one ladder of widths per depth (``reduced`` takes the most parameters over them).

- ViT / DeiT: width = the embed width at the requested number of heads (multiples of the head count, so
  every candidate splits into its heads; MLP ratio 4 and patch unchanged); depth = the number of blocks.
- DenseNet-BC: width = the growth rate K' <= K (the bottleneck is 4K', the stem 2K'); depth = 6n+4 <= D.
- MobileNetV2: width = the width multiplier in steps of 0.01 (channels rounded to multiples of 8, as
  torchvision); depth is not defined for this family (its stage depths are the paper's table).
"""

from __future__ import annotations

from npasbench.models.registry import ArchDef
from npasbench.sdk import ConfigError


def _vit_name(arch: ArchDef, depth: int, dim: int) -> str:
    heads, patch = arch.hyper["heads"], arch.hyper["patch"]
    if arch.image_size == 32:
        return f"vit-{depth}-{dim}-h{heads}-p{patch}"
    if patch != 16:  # pragma: no cover - every registered 224 ViT has patch 16
        raise ConfigError(f"model.arch: reduced knows DeiT names with patch 16 only, not patch {patch}.")
    return f"deit-{depth}-{dim}-h{heads}"


def vit_ladders(arch: ArchDef, dimension: str) -> list[list[str]]:
    depth, dim, heads = arch.hyper["depth"], arch.hyper["embed"], arch.hyper["heads"]
    widths = range(heads, dim + 1, heads)
    if dimension == "width":
        return [[_vit_name(arch, depth, e) for e in widths]]
    if dimension == "depth":
        return [[_vit_name(arch, d, dim) for d in range(1, depth + 1)]]
    return [[_vit_name(arch, d, e) for e in widths] for d in range(1, depth + 1)]


def densenet_ladders(arch: ArchDef, dimension: str) -> list[list[str]]:
    depth, growth = arch.hyper["depth"], arch.hyper["growth"]
    depths = range(10, depth + 1, 6)
    if dimension == "width":
        return [[f"densenet-bc-{depth}-{k}" for k in range(1, growth + 1)]]
    if dimension == "depth":
        return [[f"densenet-bc-{d}-{growth}" for d in depths]]
    return [[f"densenet-bc-{d}-{k}" for k in range(1, growth + 1)] for d in depths]


def mobilenet_ladders(arch: ArchDef, dimension: str) -> list[list[str]]:
    if dimension != "width":
        raise ConfigError(f"method.options.dimension: {dimension!r} reduction is not defined for MobileNetV2 (its "
                          "stage depths are the paper's table); use dimension=width (the width multiplier).")
    width = float(arch.hyper["width"])
    prefix = "mobilenetv2-cifar" if arch.domain == "cifar" else "mobilenetv2"
    steps = [j / 100 for j in range(1, int(round(width * 100)))]
    return [[f"{prefix}-{w:g}" for w in steps if w < width] + [f"{prefix}-{width:g}"]]


LADDERS = {"vit": vit_ladders, "densenet-bc": densenet_ladders, "mobilenetv2": mobilenet_ladders}
