"""Weight providers a method attaches to the backbone's weight layers (``layer.set_provider``).

A provider is an ``nn.Module`` whose ``forward()`` returns the layer's weight. Architectures build their
layers without weights, so a method never copies an architecture: it decides where each layer's weight
comes from. Three kinds cover most methods:

- ``attach_owned_weights``: every layer its own weight (the unshared network; ``OwnedWeight``);
- ``SharedWeight`` + ``SharedRef``: several layers read one stored tensor (hard sharing);
- ``CachedProvider``: a weight *generated* from parameters (low rank, templates, hashing). Subclass it and
  implement ``sources()`` and ``generate()``. With autograd off it reuses the generated weight until a
  source changes, so evaluation and the FLOP count cost what the plain network costs. A provider that
  generates without it is charged the generation on every forward (+16.6% FLOPs for a rank-r U@V on
  WRN-16-1), which is not the method's inference cost.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

from .models.generated import WeightCache
from .models.layers import OwnedWeight, weight_layers


def attach_owned_weights(net: nn.Module) -> None:
    """Give every weight layer of ``net`` its own kaiming-initialised weight (the classifier: the head's init)."""
    for layer in weight_layers(net):
        layer.set_provider(OwnedWeight(layer.spec, head=layer.spec.role == "head"))


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
        """Every tensor ``generate`` reads (the cache is valid while none of them changed)."""
        raise NotImplementedError

    def generate(self) -> torch.Tensor:  # pragma: no cover - overridden
        """The layer's weight, of the layer's ``spec.shape``."""
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
