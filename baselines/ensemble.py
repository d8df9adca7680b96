"""``ensemble``: N independently parameterised networks trained together (full-parameter ensembles).

The baseline of the SuperWeight paper's anytime-prediction experiments (Teterwak et al., WACV 2024,
Sec. 4.3): every member is a plain network with its own weights, nothing is shared. The members
form one ``NPASModel`` (member names = architecture names, repeated names numbered ``#1``,
``#2``...), so the common trainer trains all of them on the same batches (losses summed) and
evaluates each member, the ensemble (mean of softmax) and every member subset ordered by FLOPs
(``metrics.anytime``) in one run.

Members: ``members`` = comma-separated architecture names, e.g. the SuperWeight paper's
``wrn-28-7,wrn-28-4,wrn-16-7,wrn-16-4`` (then the run's ``model.arch`` is not used); empty
(default) = ``copies`` copies of the requested architecture (2). Between 2 and 8 members (anytime
evaluation enumerates all 2^N - 1 subsets).

Budget: the total of all members' parameters (nothing is shared) must fit, else a ``BudgetError``
lists every member's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from npasbench.sdk import (MAX_MEMBERS, BuildRequest, ConfigError, Method, MethodOptions, NPASModel,
                           attach_owned_weights, check_fits, check_one_domain, count_params, create_backbone,
                           member_names, parse_members, plain_params, register_method, weight_layers)

SUPERWEIGHT_MEMBERS = "wrn-28-7,wrn-28-4,wrn-16-7,wrn-16-4"


@dataclass(frozen=True)
class EnsembleOptions(MethodOptions):
    members: str = field(default="", metadata={"help": (
        "comma-separated member architectures, e.g. the SuperWeight paper's " + SUPERWEIGHT_MEMBERS +
        "; empty = `copies` copies of the run's architecture")})
    copies: int = field(default=2, metadata={"help": "members when `members` is empty (2..8)"})

    def __post_init__(self) -> None:
        if not parse_members(self.members, "an ensemble", least=2) and not 2 <= self.copies <= MAX_MEMBERS:
            raise ConfigError(f"method.options.copies: must be between 2 and {MAX_MEMBERS}, got {self.copies}.")

    def arch_list(self) -> list[str]:
        return [a.strip() for a in self.members.split(",") if a.strip()]


@register_method("ensemble")
class Ensemble(Method):
    Options = EnsembleOptions
    summary = "Full-parameter ensemble: independent networks trained together; anytime subsets evaluated."
    reference = "Lakshminarayanan et al., NeurIPS 2017 (deep ensembles); anytime baseline of Teterwak et al., WACV 2024"

    def archs(self, request: BuildRequest) -> list[str]:
        return self.reference_archs(request.arch)

    def reference_archs(self, arch: str) -> list[str]:
        return self.options.arch_list() or [arch] * self.options.copies

    def build(self, request: BuildRequest) -> NPASModel:
        archs = self.archs(request)
        check_one_domain(archs)
        if request.budget is not None:
            sizes = [plain_params(create_backbone(a, request.num_classes)) for a in archs]
            listing = " + ".join(f"{a} {n:,}" for a, n in zip(archs, sizes))
            check_fits(sum(sizes), request.budget, f"the ensemble ({listing}; nothing is shared)",
                       "Raise the budget or use fewer/smaller members (method.options.members / copies).")
        nets = []
        for i, a in enumerate(archs):
            net = create_backbone(a, request.num_classes)
            for layer in weight_layers(net):
                layer.spec = layer.spec.with_member(i)
            attach_owned_weights(net)
            nets.append(net)
        return NPASModel(nets, member_names(archs), built=list(archs))

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        members = [{"name": n, "arch": a, "params": count_params(m)[0]}
                   for n, a, m in zip(model.member_names, model.built(list), model.members)]
        return {"members": members, "total": sum(m["params"] for m in members),
                "source": "members option" if self.options.arch_list() else f"{self.options.copies} copies of model.arch"}
