"""Helpers shared by the baselines: backbone counts and FLOPs without weights, sharing groups, and a
weight provider that caches generated weights while autograd is off.

Nothing here registers a method.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from npasbench.models.generated import WeightCache
from npasbench.models.layers import WeightedLayer, weight_layers


def fixed_params(net: nn.Module) -> int:
    """Parameters a backbone holds before any provider: norms and the classifier bias."""
    return sum(p.numel() for p in net.parameters())


def weight_numel(net: nn.Module) -> int:
    return sum(l.spec.numel for l in weight_layers(net))


def plain_params(net: nn.Module) -> int:
    """Unique trainable parameters of ``net`` as the unshared network (every layer its own weight)."""
    return fixed_params(net) + weight_numel(net)


class _MetaWeight(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self) -> torch.Tensor:
        return torch.empty(self.shape, device="meta")


@torch.no_grad()
def backbone_flops(net: nn.Module, image_size: int) -> int:
    """Inference FLOPs of one image through a *fresh* backbone (no providers yet), on the meta device.

    Equals ``accounting.count_flops`` of the plain network (same counter, same ops), without
    allocating a single weight; ``net`` is consumed (moved to meta, given placeholder providers).
    """
    for layer in weight_layers(net):
        layer.set_provider(_MetaWeight(layer.spec.shape))
    net = net.to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return int(counter.get_total_flops())


# -- sharing groups ----------------------------------------------------------------------------

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


def share_groups(net: nn.Module, skip_first_block: bool = False) -> list[ShareGroup]:
    """Groups of >= 2 body conv layers with the same (stage, weight shape), in layer order.

    Stem, shortcuts and classifier never share (role != body). ``skip_first_block`` leaves the
    first block of every stage out (the reference SWRN keeps block 0 of each stage unshared).
    """
    by_key: "OrderedDict[tuple, list[WeightedLayer]]" = OrderedDict()
    for layer in weight_layers(net):
        s = layer.spec
        if s.role != "body" or s.kind != "conv" or (skip_first_block and s.block == 0):
            continue
        by_key.setdefault((s.stage, s.shape), []).append(layer)
    groups = []
    for (stage, shape), layers in by_key.items():
        if len(layers) >= 2:
            key = f"stage{stage}_" + "x".join(map(str, shape))
            groups.append(ShareGroup(key, stage, tuple(shape), layers))
    return groups


# -- a provider that caches its weight while autograd is off -------------------------------------

class CachedProvider(nn.Module):
    """Weight provider generating its weight from parameters (its own and shared ones).

    With autograd off (evaluation, inference, FLOP counting) the generated weight is reused until a
    source parameter changes: the key holds every source's storage pointer, version counter and
    device, which optimizer steps, ``load_state_dict`` and ``.to()`` all change. So inference costs
    are those of the plain network with materialised weights, as for SSN.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = WeightCache()
        self._cached: torch.Tensor | None = None

    def sources(self) -> Iterable[torch.Tensor]:  # pragma: no cover - overridden
        raise NotImplementedError

    def generate(self) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: the graph is needed; nothing kept, no key computed per step
            self._cached = None
            self._cache.clear()
            return self.generate()
        sources = list(self.sources())
        if self._cached is None or not self._cache.valid(sources):
            self._cached = self.generate()
            self._cache.generated(sources)
        return self._cached

    def _apply(self, fn, recurse: bool = True):
        self._cached = None
        self._cache.clear()
        return super()._apply(fn, recurse)


class SharedRef(nn.Module):
    """Provider of a hard-shared layer: returns a weight stored in the model's ``shared`` container.

    The storage module is referenced outside the module tree so it is counted (and saved) once.
    """

    def __init__(self, storage: nn.Module, attr: str = "weight") -> None:
        super().__init__()
        object.__setattr__(self, "_storage", storage)
        self.attr = attr

    def forward(self) -> torch.Tensor:
        return getattr(self._storage, self.attr)


class SharedWeight(nn.Module):
    """One weight tensor used by several layers: storage shared by layers, hence role ``bank``."""

    npas_roles = {"weight": "bank"}

    def __init__(self, shape: tuple[int, ...], init: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape))
        init(self.weight.data)



