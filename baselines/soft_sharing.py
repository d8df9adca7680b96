"""``soft-sharing``: template banks mixed by per-layer coefficients (Savarese & Maire, ICLR 2019).

"Learning Implicitly Recurrent CNNs Through Parameter Sharing" (author code: lolemacs/soft-sharing):
in every stage, the layers of the stage's repeated shape draw their weights from a small bank of T
templates; layer i's weight is ``sum_t c_i[t] * template_t`` with its own learned coefficient vector
``c_i``. Banks are role ``bank``, coefficient vectors role ``coefficients`` (exempt from weight
decay, as the reference README asks). Every other layer -- the stem, a stage's first conv when its
shape differs, shortcuts, the classifier -- keeps its own weight.

Which layers share (``first_block``): ``shared`` (default) puts every body conv of a stage with the
stage's repeated shape into the bank, including the first block's second conv; ``own`` is the
reference SWRN exactly (the whole first block of a stage keeps its own weights, 2(n-1) banked
layers per stage). Generically a bank serves the body convs of one (stage, shape) with >= 2 layers,
so bottleneck ResNets get one bank per repeated shape of a stage.

Templates per bank (``templates``): 0 (default) = from the budget: the largest T that fits the *same in
every bank* (as the reference's SWRN-L-k-T), each bank capped at its number of layers (more templates
than layers adds parameters and no expressiveness); then (``allocation=fill``, the default) one
template at a time is added to the bank with the largest template that still fits. The reference names
its models by one T and never meets an arbitrary budget; with uniform T alone a budget between two
T's goes partly unused (WRN-16-1 at 50%: 81,854 of 90,458, 90.5%; at 75%: 96.0%), which would handicap
soft sharing against methods that fill their budget exactly, so ``fill`` is the default (98.1% / 99.4%)
and ``allocation=uniform`` is the reference's rule. Without a budget, T = the bank's layer count (the
reference's headline SWRN-28-10-6 has T equal to its 6 banked layers). A fixed ``templates`` > 0 must
fit the budget.

Tolerance (budget - total, guaranteed by construction): ``uniform`` leaves less than one more
template in every bank not yet at its cap (sum of template size + layers); ``fill`` less than one
template of the smallest such bank.

Initialisation: templates kaiming-normal (fan-in, ReLU gain) as the reference. Coefficients: the
reference draws the (layers x T) coefficient matrix of a bank with ``orthogonal_``; its rows have unit
norm only when a bank has at least as many templates as layers, so with fewer templates the initial
weights would be too small by sqrt(T/L). ``coefficient_init=unit`` (default) normalises each row to
unit norm after the orthogonal draw, so every generated weight starts with exactly the kaiming variance
(T = 1 gives coefficients of +-1); ``reference`` keeps the raw orthogonal rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from npasbench.sdk import (BudgetError, BuildRequest, CachedProvider, ConfigError, Method, MethodOptions, NPASModel,
                           LayerSpec, OwnedWeight, ShareGroup, backbone_fixed_params, create_backbone, init_weight_,
                           register_method, share_groups, weight_layers)


class TemplateBank(nn.Module):
    """T templates of one layer shape, stored flat as (T, numel) (2-D: safe under channels_last)."""

    npas_roles = {"templates": "bank"}

    def __init__(self, templates: int, spec: LayerSpec) -> None:
        super().__init__()
        self.shape = tuple(spec.shape)
        self.templates = nn.Parameter(torch.empty(templates, spec.numel))
        for t in range(templates):  # each template as the layers' own init (kaiming; timm's N(0, 0.02) for a ViT)
            init_weight_(self.templates.data[t].view(self.shape), spec)


class SoftWeight(CachedProvider):
    """A banked layer's weight: its coefficient vector times its bank's templates."""

    npas_roles = {"coefficients": "coefficients"}

    def __init__(self, bank: TemplateBank, coefficients: torch.Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "_bank", bank)  # the bank lives in the model's `shared`
        self.coefficients = nn.Parameter(coefficients.clone())

    def sources(self):
        return (self._bank.templates, self.coefficients)

    def generate(self) -> torch.Tensor:
        return (self.coefficients @ self._bank.templates).view(self._bank.shape)


def coefficient_rows(layers: int, templates: int, unit: bool) -> torch.Tensor:
    c = torch.zeros(layers, templates)
    nn.init.orthogonal_(c)
    if unit:
        c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return c


@dataclass(frozen=True)
class SoftSharingOptions(MethodOptions):
    templates: int = field(default=0, metadata={"help": (
        "templates per bank (capped at the bank's layers); 0 = the largest the budget allows "
        "(no budget: one per layer)")})
    allocation: Literal["uniform", "fill"] = field(default="fill", metadata={"help": (
        "fill (default): the largest uniform T, then templates added bank by bank, largest first, while the "
        "budget allows; uniform: the same T in every bank only (the reference's SWRN-L-k-T)")})
    first_block: Literal["shared", "own"] = field(default="shared", metadata={"help": (
        "shared: every body conv of the stage's repeated shape is banked; own: a stage's first block "
        "keeps its own weights (the reference SWRN)")})
    coefficient_init: Literal["unit", "reference"] = field(default="unit", metadata={"help": (
        "orthogonal coefficient rows normalised to unit norm (weights start at the kaiming scale) or "
        "the reference's raw orthogonal rows")})

    def __post_init__(self) -> None:
        if self.templates < 0:
            raise ConfigError("method.options.templates: must be >= 0 (0 = from the budget).")


def _fixed_part(net: nn.Module, groups: list[ShareGroup]) -> int:
    banked = {id(l) for g in groups for l in g.layers}
    own = sum(l.spec.numel for l in weight_layers(net) if id(l) not in banked)
    return backbone_fixed_params(net) + own


def soft_total(fixed: int, groups: list[ShareGroup], templates: list[int]) -> int:
    """Unique parameters: fixed part + per bank T templates + one T-vector per layer."""
    return fixed + sum(t * (g.numel + len(g.layers)) for g, t in zip(groups, templates))


@register_method("soft-sharing")
class SoftSharing(Method):
    Options = SoftSharingOptions
    summary = "Soft sharing: per-stage template banks mixed by learned per-layer coefficients."
    reference = ("Savarese & Maire, Learning Implicitly Recurrent CNNs Through Parameter Sharing, ICLR 2019 "
                 "(lolemacs/soft-sharing)")

    def allocate(self, fixed: int, groups: list[ShareGroup], budget: int | None, arch: str) -> list[int]:
        o = self.options
        caps = [len(g.layers) for g in groups]
        if o.templates > 0:
            ts = [min(o.templates, c) for c in caps]
            total = soft_total(fixed, groups, ts)
            if budget is not None and total > budget:
                raise BudgetError(
                    f"budget: soft-sharing with templates={o.templates} on {arch} has {total:,} parameters, above "
                    f"the budget of {budget:,}. Use templates=0 (the largest count that fits) or raise the budget."
                )
            return ts
        if budget is None:
            return caps
        least = soft_total(fixed, groups, [1] * len(groups))
        if least > budget:
            raise BudgetError(
                f"budget: soft-sharing on {arch} needs at least {least:,} parameters (one template per bank plus "
                f"{fixed:,} in unshared layers and norms), above the budget of {budget:,}. Raise the budget, or use "
                "a method that shares across stages (ssn, hashed) or the reduced baseline."
            )
        t = 1
        while t < max(caps) and soft_total(fixed, groups, [min(t + 1, c) for c in caps]) <= budget:
            t += 1
        ts = [min(t, c) for c in caps]
        if o.allocation == "fill":
            while True:
                room = budget - soft_total(fixed, groups, ts)
                cands = [i for i, g in enumerate(groups) if ts[i] < caps[i] and g.numel + caps[i] <= room]
                if not cands:
                    break
                ts[max(cands, key=lambda i: (groups[i].numel, -i))] += 1
        return ts

    def build(self, request: BuildRequest) -> NPASModel:
        o = self.options
        net = create_backbone(request.arch, request.num_classes)
        groups = share_groups(net, skip_first_block=o.first_block == "own")
        if not groups:
            raise ConfigError(
                f"model.arch: {request.arch} has no two body layers of one shape within a stage"
                + (" outside the first blocks (first_block=own)" if o.first_block == "own" else "")
                + ", so soft-sharing has nothing to share; use a deeper network (WRN depth >= 16, ViT depth >= 2)"
                + (" or first_block=shared." if o.first_block == "own" else ".")
            )
        fixed = _fixed_part(net, groups)
        budget = request.budget.params if request.budget is not None else None
        ts = self.allocate(fixed, groups, budget, request.arch)
        banked = set()
        banks: dict[str, TemplateBank] = {}
        for g, t in zip(groups, ts):
            bank = TemplateBank(t, g.layers[0].spec)
            banks[g.key] = bank
            rows = coefficient_rows(len(g.layers), t, unit=o.coefficient_init == "unit")
            for layer, row in zip(g.layers, rows):
                layer.set_provider(SoftWeight(bank, row))
                banked.add(id(layer))
        for layer in weight_layers(net):
            if id(layer) not in banked:
                layer.set_provider(OwnedWeight(layer.spec, head=layer.spec.role == "head"))
        plan = {"banks": [{**g.describe(), "templates": t, "template_numel": g.numel} for g, t in zip(groups, ts)],
                "fixed": fixed, "total": soft_total(fixed, groups, ts), "budget": budget}
        return NPASModel([net], [request.arch], shared=banks, built=plan)

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset({"coefficients"})  # reference README: no weight decay on the coefficients

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        plan = model.built(dict)
        info = {
            "templates": {b["key"]: b["templates"] for b in plan["banks"]},
            "banks": plan["banks"],
            "allocation": self.options.allocation if self.options.templates == 0 else f"fixed {self.options.templates}",
            "first_block": self.options.first_block,
            "unshared_part": plan["fixed"],
            "total": plan["total"],
        }
        if plan["budget"] is not None:
            info["unused_budget"] = plan["budget"] - plan["total"]
        return info
