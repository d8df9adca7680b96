"""``hard-sharing``: body convs of identical shape within a stage use one weight.

The recurrent view of a residual stage (Liao & Poggio, 2016, "Bridging the Gaps Between Residual
Learning, Recurrent Neural Networks and Visual Cortex"): in every stage, all body convs with the same
weight shape read ONE shared tensor (role ``bank``: storage used by several layers), so the
repeated blocks of a stage share their conv weights. Each layer keeps its own batch norms. The
stem, a stage's first conv when its shape differs, shortcuts and the classifier keep their own
weights. This is soft sharing with one template and a fixed coefficient of 1.

The size is fixed by the architecture: with a budget the model must fit, else a ``BudgetError``
says by how much (use soft-sharing, hashed or reduced to meet an arbitrary budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from npasbench.sdk import (BuildRequest, ConfigError, Method, MethodOptions, NPASModel, OwnedWeight, SharedRef,
                           SharedWeight, backbone_fixed_params, check_fits, create_backbone, kaiming_normal_,
                           register_method, share_groups, weight_layers)


@dataclass(frozen=True)
class HardSharingOptions(MethodOptions):
    first_block: Literal["shared", "own"] = field(default="shared", metadata={"help": (
        "shared: every body conv of a stage's repeated shape uses the stage's one weight; own: a stage's "
        "first block keeps its own weights (as the soft-sharing reference does)")})


@register_method("hard-sharing")
class HardSharing(Method):
    Options = HardSharingOptions
    summary = "Hard sharing: repeated blocks of a stage share the same conv weights (fixed size)."
    reference = "Liao & Poggio, arXiv:1604.03640, 2016 (blocks of a stage share weights: a recurrent stage)"

    def build(self, request: BuildRequest) -> NPASModel:
        net = create_backbone(request.arch, request.num_classes)
        groups = share_groups(net, skip_first_block=self.options.first_block == "own")
        if not groups:
            raise ConfigError(
                f"model.arch: {request.arch} has no two body convs of one shape within a stage, so hard-sharing "
                "has nothing to share; use a deeper network (WRN depth >= 16)"
                + (" or first_block=shared." if self.options.first_block == "own" else ".")
            )
        fixed = backbone_fixed_params(net)  # norms and classifier bias, before any provider is attached
        banked = {id(l) for g in groups for l in g.layers}
        own = sum(l.spec.numel for l in weight_layers(net) if id(l) not in banked)
        total = fixed + own + sum(g.numel for g in groups)
        plain = total + sum(g.numel * (len(g.layers) - 1) for g in groups)
        check_fits(total, request.budget, f"hard-sharing on {request.arch} (a fixed size; the plain network has "
                   f"{plain:,})", "Raise the budget, or use soft-sharing, hashed or reduced, which fit a given budget.")
        shared: dict[str, SharedWeight] = {}
        for g in groups:
            storage = SharedWeight(g.shape, kaiming_normal_)
            shared[g.key] = storage
            for layer in g.layers:
                layer.set_provider(SharedRef(storage))
        for layer in weight_layers(net):
            if id(layer) not in banked:
                layer.set_provider(OwnedWeight(layer.spec, head=layer.spec.role == "head"))
        plan = {"groups": [g.describe() for g in groups], "total": total, "plain": plain}
        return NPASModel([net], [request.arch], shared=shared, built=plan)

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        plan = model.built(dict)
        return {"shared_weights": plan["groups"], "first_block": self.options.first_block,
                "total": plan["total"], "plain_network": plan["plain"],
                "compression": plan["plain"] / plan["total"]}
