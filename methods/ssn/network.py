"""An SSN member network: the backbone plus the step that generates its weights.

Before each forward every parameter group generates its layers' weights (batched per group) and
hands them to the layers' providers; caching in evaluation is ``GeneratingNet``'s.
"""

from __future__ import annotations

import torch.nn as nn

from npasbench.models.generated import GeneratedWeight, GeneratingNet

from .generator import SSNGroup

__all__ = ["GeneratedWeight", "SSNNet"]


class SSNNet(GeneratingNet):
    def __init__(self, backbone: nn.Module, groups: list[SSNGroup], providers: dict[int, list[GeneratedWeight]]) -> None:
        super().__init__(backbone, [p for g in groups for p in g.parameters()])
        object.__setattr__(self, "_groups", groups)  # registered in the model's `shared`, not here
        object.__setattr__(self, "_providers", providers)  # group id -> providers in plan order

    def produce(self) -> None:
        for g in self._groups:
            for provider, w in zip(self._providers[g.group_id], g.generate()):
                provider.current = w
