"""``lowrank``: every layer's weight is a product ``U V`` of one rank r, the largest r that fits the budget.

A layer whose factors would hold more than its plain weight (``r (out + fan_in) >= out fan_in``) keeps its
plain weight instead, so the model never exceeds the unshared network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from npasbench import sdk


class LowRankWeight(sdk.CachedProvider):
    npas_roles = {"u": "weights", "v": "weights"}  # each layer's own factors (sdk.ROLES)

    def __init__(self, spec: sdk.LayerSpec, rank: int) -> None:
        super().__init__()
        self.shape = spec.shape
        out, fan_in = spec.shape[0], spec.fan_in
        self.u = nn.Parameter(torch.randn(out, rank) / rank**0.5)  # var(U V) = 2 / fan_in: kaiming
        self.v = nn.Parameter(torch.randn(rank, fan_in) * (2.0 / fan_in) ** 0.5)

    def sources(self):
        return [self.u, self.v]

    def generate(self) -> torch.Tensor:
        return (self.u @ self.v).view(self.shape)


def factorised(spec: sdk.LayerSpec, rank: int) -> bool:
    return rank * (spec.shape[0] + spec.fan_in) < spec.numel


def layer_params(spec: sdk.LayerSpec, rank: int) -> int:
    return rank * (spec.shape[0] + spec.fan_in) if factorised(spec, rank) else spec.numel


@dataclass(frozen=True)
class LowRankOptions(sdk.MethodOptions):
    rank: int = sdk.option(0, "rank of every layer's U V; 0: the largest rank that fits the budget (none: full)")


class LowRank(sdk.Method):
    Options = LowRankOptions
    summary = "Low-rank weights: every layer U V of one rank, sized from the budget."
    reference = "Denil et al., Predicting Parameters in Deep Learning, NeurIPS 2013"

    def build(self, request: sdk.BuildRequest) -> sdk.NPASModel:
        net = sdk.create_backbone(request.arch, request.num_classes)
        specs = [layer.spec for layer in sdk.weight_layers(net)]
        fixed = sdk.backbone_fixed_params(net)  # norms and biases: not this method's to decide

        def total(rank: int) -> int:
            return fixed + sum(layer_params(s, rank) for s in specs)

        rank, top = self.options.rank, max(min(s.shape[0], s.fan_in) for s in specs)
        if rank < 0:
            raise sdk.ConfigError(f"method.options.rank: must be >= 0, got {rank}")
        if rank == 0:  # the largest rank that fits; without a budget, full rank (the plain network)
            budget = request.budget.params if request.budget else total(top)
            rank = max(1, sdk.largest_fitting(0, top, lambda r: total(r) <= budget))
        sdk.check_fits(total(rank), request.budget, f"lowrank (rank {rank}) on {request.arch}",
                       "Raise the budget or lower method.options.rank.")
        for layer in sdk.weight_layers(net):
            if factorised(layer.spec, rank):
                layer.set_provider(LowRankWeight(layer.spec, rank))
            else:
                layer.set_provider(sdk.OwnedWeight(layer.spec, head=layer.spec.role == "head"))
        return sdk.NPASModel([net], [request.arch], built={"rank": rank, "total": total(rank)})

    def record_info(self, model: sdk.NPASModel) -> dict:
        return model.built(dict)
