"""Sharing groups: the body layers of one stage with one weight shape, the unit hand-crafted schemes share
(hard sharing shares one tensor per group, soft sharing mixes templates per group)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch.nn as nn

from .models.layers import WeightedLayer, weight_layers


@dataclass
class ShareGroup:
    """Body layers of one stage with one weight shape (the layers a hand-crafted scheme shares)."""

    key: str  # a ModuleDict-safe name, e.g. "stage2_128x128x3x3"
    stage: int
    shape: tuple[int, ...]
    layers: list[WeightedLayer]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def describe(self) -> dict:
        return {"key": self.key, "stage": self.stage, "shape": list(self.shape),
                "layers": [l.spec.name for l in self.layers]}


def share_groups(net: nn.Module, skip_first_block: bool = False, ops: frozenset[str] | None = None) -> list[ShareGroup]:
    """Groups of >= 2 body layers with the same (stage, part of the block, weight shape), in layer order.

    Convolutions and a transformer's body linear layers alike: a ViT has one stage, so its groups are the
    qkv, proj, fc1 and fc2 weights of all blocks (ALBERT's cross-layer sharing); the part (``LayerSpec.op``)
    keeps e.g. an attention projection and an MLP layer of one shape apart. Stem, shortcuts and classifier
    never share (role != body). ``skip_first_block`` leaves the first block of every stage out (the reference
    SWRN keeps block 0 of each stage unshared). ``ops``: only layers of these parts (e.g. attention only).
    """
    by_key: "OrderedDict[tuple, list[WeightedLayer]]" = OrderedDict()
    for layer in weight_layers(net):
        s = layer.spec
        if s.role != "body" or (skip_first_block and s.block == 0) or (ops is not None and s.op not in ops):
            continue
        by_key.setdefault((s.stage, s.op, s.shape), []).append(layer)
    groups = []
    for (stage, op, shape), layers in by_key.items():
        if len(layers) >= 2:
            key = f"stage{stage}_" + (f"{op}_" if op else "") + "x".join(map(str, shape))
            groups.append(ShareGroup(key, stage, tuple(shape), layers))
    return groups
