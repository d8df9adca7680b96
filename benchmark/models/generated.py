"""Networks whose weights are generated from other parameters before each forward.

Sharing methods (SSN, SuperWeights, HashedNets, ...) compute every layer's weight from shared
storage. ``GeneratingNet`` wraps a backbone: ``forward`` first runs the method's ``produce()``,
which hands each layer's ``GeneratedWeight`` provider its tensor, then runs the backbone. With
autograd off (evaluation, inference, FLOP counting) the generated weights are cached and reused
until a source parameter changes: the cache key holds every source's storage pointer, version
counter and device, which optimizer steps, ``load_state_dict`` and ``.to()`` all change;
``train()``/``eval()`` also drop it. So inference costs what the plain network costs.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


def cache_key(tensors: Iterable[torch.Tensor]) -> tuple:
    """Identifies the current values of ``tensors``: changes on any in-place update or move."""
    return tuple((t.data_ptr(), t._version, t.device.type) for t in tensors)


class WeightCache:
    """The one reuse rule for generated weights (a whole network's in ``GeneratingNet``, one layer's in
    ``providers.CachedProvider``): with autograd off, what was generated stays valid while every source
    tensor keeps its storage, version and device; with autograd on nothing is reused (the graph is needed)."""

    def __init__(self) -> None:
        self.key: tuple | None = None

    def valid(self, sources: Iterable[torch.Tensor]) -> bool:
        """True when the weights generated last are still those of ``sources`` (and autograd is off)."""
        return not torch.is_grad_enabled() and self.key is not None and cache_key(sources) == self.key

    def generated(self, sources: Iterable[torch.Tensor]) -> None:
        """Weights were just generated from ``sources``: keep their key (reusable only with autograd off)."""
        self.key = cache_key(sources) if not torch.is_grad_enabled() else None

    def clear(self) -> None:
        self.key = None


class GeneratedWeight(nn.Module):
    """Provider of a generated layer: returns the weight its network produced this forward."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.layer_name = name
        self.current: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        if self.current is None:
            raise RuntimeError(f"layer {self.layer_name!r} has no generated weight: run it through its network's "
                               "forward (GeneratingNet), which generates the weights first")
        return self.current


class GeneratingNet(nn.Module):
    """A backbone plus the step that generates its weights (subclasses implement ``produce``)."""

    def __init__(self, backbone: nn.Module, sources: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.net = backbone
        # the parameters generation reads (registered in the model's `shared`, not here)
        object.__setattr__(self, "_sources", list(sources))
        self._cache = WeightCache()

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net, "num_classes"))

    @property
    def sources(self) -> list[torch.Tensor]:
        """The parameters generation reads."""
        return self.__dict__["_sources"]

    def produce(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def generate(self) -> None:
        if self._cache.valid(self.sources):
            return
        self.produce()
        self._cache.generated(self.sources)

    def set_sources(self, sources: Iterable[torch.Tensor]) -> None:
        """Replace the parameters generation reads (the cache key follows them)."""
        object.__setattr__(self, "_sources", list(sources))
        self.invalidate()

    def invalidate(self) -> None:
        self._cache.clear()

    def train(self, mode: bool = True) -> "GeneratingNet":
        self.invalidate()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self.invalidate()
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.generate()
        return self.net(x)
