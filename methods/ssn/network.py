"""An SSN member network: the backbone plus the step that generates its weights.

``SSNNet.forward`` first asks every parameter group for its layers' weights (batched per group),
hands them to the layers' providers, then runs the backbone. With autograd off (evaluation,
inference) the generated weights are cached and reused until a parameter they depend on changes:
the cache key holds every group parameter's storage pointer and version counter, which optimizer
steps, ``load_state_dict`` and ``.to()`` all change. ``train()``/``eval()`` also drop the cache.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .generator import SSNGroup


class GeneratedWeight(nn.Module):
    """Weight provider of a shared layer: returns the weight its group generated this forward."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.layer_name = name
        self.current: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        if self.current is None:
            raise RuntimeError(f"SSN layer {self.layer_name!r} has no generated weight: run the network through SSNNet")
        return self.current


class SSNNet(nn.Module):
    def __init__(self, backbone: nn.Module, groups: list[SSNGroup], providers: dict[int, list[GeneratedWeight]]) -> None:
        super().__init__()
        self.net = backbone
        object.__setattr__(self, "_groups", groups)  # registered in the model's `shared`, not here
        object.__setattr__(self, "_providers", providers)  # group id -> providers in plan order
        # the parameters generation reads (fixed after build; .to() keeps the objects, changes data_ptr)
        object.__setattr__(self, "_sources", [p for g in groups for p in g.parameters()])
        self._cache_key: tuple | None = None

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def _key(self) -> tuple:
        return tuple((p.data_ptr(), p._version, p.device.type) for p in self._sources)

    def generate(self) -> None:
        cacheable = not torch.is_grad_enabled()
        if cacheable:
            key = self._key()
            if key == self._cache_key:
                return
        for g in self._groups:
            for provider, w in zip(self._providers[g.group_id], g.generate()):
                provider.current = w
        self._cache_key = self._key() if cacheable else None

    def invalidate(self) -> None:
        self._cache_key = None

    def train(self, mode: bool = True) -> "SSNNet":
        self.invalidate()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self.invalidate()
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.generate()
        return self.net(x)
