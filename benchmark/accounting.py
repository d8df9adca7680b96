"""Parameter accounting, the currency of NPAS: one function for every method.

``param_report`` counts *unique trainable storage*: a tensor reachable from several layers or
ensemble members counts once (shared banks are not multiplied by their users). Every parameter has
a *role*, declared by the module that owns it -- never guessed from its name:

- ``bank``: storage shared by several layers or members (SSN parameter banks, SuperWeight banks);
- ``coefficients``: per-layer coefficients or embeddings that mix bank templates into a weight;
- ``generators``: learned maps shared by several layers that turn banks into weights (e.g. SSN's
  embedding-to-coefficient projections and its upsamplers);
- ``weights``: a layer's own, unshared weight;
- ``norm_bias``: normalisation parameters and biases;
- ``embedding``: a transformer's learned position embedding and class token (neither a layer's weight nor
  a norm; the ViT recipes exempt them from weight decay, as timm and DeiT do);
- ``head``: classifier weights and biases;
- ``other``: anything a module did not declare.

Modules declare roles with a class or instance attribute ``npas_roles = {"param_name": "role"}``;
normalisation layers and bare ``nn.Conv2d``/``nn.Linear`` biases get their role by module type.
FLOPs are inference FLOPs of one image per member, counted by ``torch.utils.flop_counter`` (a
multiply-add counts as 2 FLOPs; ``macs`` is half of it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

ROLES = ("bank", "coefficients", "generators", "weights", "norm_bias", "embedding", "head", "other")

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _role_of(module: nn.Module, pname: str) -> str:
    declared = getattr(module, "npas_roles", None)
    if declared and pname in declared:
        role = declared[pname]
        if role not in ROLES:
            raise ValueError(f"{type(module).__name__}.npas_roles[{pname!r}] = {role!r} is not one of {ROLES}")
        return role
    if isinstance(module, _NORM_TYPES):
        return "norm_bias"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return "norm_bias" if pname == "bias" else "weights"
    return "other"


def parameter_roles(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, str]]:
    """(qualified name, parameter, role) for every unique parameter, first owner wins."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield (f"{mname}.{pname}" if mname else pname), p, _role_of(module, pname)


def unique_storage_numel(tensors: list[torch.Tensor]) -> int:
    """Elements of distinct storage: views of one storage count once (by storage and extent)."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for t in tensors:
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        start = int(t.storage_offset())
        spans.setdefault(key, []).append((start, start + int(t.numel())))
    total = 0
    for intervals in spans.values():
        intervals.sort()
        cur_s, cur_e = intervals[0]
        for s, e in intervals[1:]:
            if s > cur_e:
                total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        total += cur_e - cur_s
    return total


@dataclass
class ParamReport:
    total: int
    breakdown: dict[str, int]
    trainable_tensors: int
    frozen: int
    budget: dict[str, Any] | None
    flops: dict[str, Any] = field(default_factory=dict)
    members: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "breakdown": dict(self.breakdown),
            "trainable_tensors": self.trainable_tensors,
            "frozen": self.frozen,
            "budget": self.budget,
            "budget_utilisation": (self.total / self.budget["params"]) if self.budget else None,
            "flops": self.flops,
            "members": self.members,
        }


def count_params(model: nn.Module) -> tuple[int, dict[str, int], int, int]:
    breakdown: dict[str, int] = OrderedDict((r, 0) for r in ROLES)
    trainable: list[torch.Tensor] = []
    frozen = 0
    by_role: dict[str, list[torch.Tensor]] = {r: [] for r in ROLES}
    for _, p, role in parameter_roles(model):
        if p.requires_grad:
            trainable.append(p)
            by_role[role].append(p)
        else:
            frozen += p.numel()
    for role in ROLES:
        breakdown[role] = unique_storage_numel(by_role[role]) if by_role[role] else 0
    total = unique_storage_numel(trainable) if trainable else 0
    return total, dict(breakdown), len(trainable), frozen


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Inference FLOPs for one image, per member (eval mode, weights as the forward uses them)."""
    members: Any = getattr(model, "members", None)
    forward_member: Any = getattr(model, "forward_member", None)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.zeros((1, *input_shape), device=device)
        per_member = []
        # one untracked forward first: methods that cache generated weights in eval mode (SSN,
        # SuperWeights) are counted as they run at inference, without the one-off generation.
        (model(x) if members is None else [forward_member(i, x) for i in range(len(members))])
        if members is None:
            per_member.append(_flops_of(lambda: model(x)))
        else:
            for i in range(len(members)):
                per_member.append(_flops_of(lambda i=i: forward_member(i, x)))
    finally:
        model.train(was_training)
    return {"per_member": per_member, "total": sum(per_member), "macs_per_member": [f // 2 for f in per_member],
            "input_shape": list(input_shape), "counter": "torch.utils.flop_counter (2 FLOPs per multiply-add)"}


def _flops_of(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def param_report(model: nn.Module, input_shape: tuple[int, ...] | None = (3, 32, 32), budget: Any = None) -> ParamReport:
    total, breakdown, n_tensors, frozen = count_params(model)
    bdict = budget.to_dict() if budget is not None and hasattr(budget, "to_dict") else budget
    report = ParamReport(total=total, breakdown=breakdown, trainable_tensors=n_tensors, frozen=frozen, budget=bdict)
    if input_shape is not None:
        report.flops = count_flops(model, tuple(input_shape))
        names = getattr(model, "member_names", None) or ["model"]
        report.members = [{"name": n, "flops": f} for n, f in zip(names, report.flops["per_member"])]
    return report
