"""``hard-sharing``: body layers of identical shape within a stage use one weight.

The recurrent view of a residual stage (Liao & Poggio, 2016, "Bridging the Gaps Between Residual
Learning, Recurrent Neural Networks and Visual Cortex"): in every stage, all body convs with the same
weight shape read ONE shared tensor (role ``bank``: storage used by several layers), so the
repeated blocks of a stage share their conv weights. Each layer keeps its own batch norms. The
stem, a stage's first conv when its shape differs, shortcuts and the classifier keep their own
weights. This is soft sharing with one template and a fixed coefficient of 1.

On a transformer (one stage of identical blocks) this is ALBERT's cross-layer sharing (Lan et al., ICLR
2020): every block uses the first block's qkv, proj, fc1 and fc2 weights; its LayerNorms and biases stay
per block. ``share = "attention"`` or ``"mlp"`` shares only that part (ALBERT's shared-attention and
shared-FFN variants).

The size is fixed by the architecture: with a budget the model must fit, else a ``BudgetError``
says by how much (use soft-sharing, hashed or reduced to meet an arbitrary budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from npasbench.sdk import (BuildRequest, ConfigError, Method, MethodOptions, NPASModel, OwnedWeight, SharedRef,
                           SharedWeight, backbone_fixed_params, check_fits, create_backbone, init_weight_,
                           register_method, share_groups, weight_layers)


# the parts of a transformer block each `share` value shares (LayerSpec.op); None: every body layer
SHARED_PARTS: dict[str, frozenset[str] | None] = {
    "all": None, "attention": frozenset({"qkv", "proj"}), "mlp": frozenset({"fc1", "fc2"})}


@dataclass(frozen=True)
class HardSharingOptions(MethodOptions):
    first_block: Literal["shared", "own"] = field(default="shared", metadata={"help": (
        "shared: every body conv of a stage's repeated shape uses the stage's one weight; own: a stage's "
        "first block keeps its own weights (as the soft-sharing reference does)")})
    share: Literal["all", "attention", "mlp"] = field(default="all", metadata={"help": (
        "transformers: all = one block's weights for every block (ALBERT's all-shared); attention = only the "
        "attention weights (qkv, proj) are shared, mlp = only the MLP's (fc1, fc2), ALBERT's two partial "
        "variants; convnets: all")})


@register_method("hard-sharing")
class HardSharing(Method):
    Options = HardSharingOptions
    summary = "Hard sharing: repeated blocks of a stage share the same conv weights (fixed size)."
    reference = "Liao & Poggio, arXiv:1604.03640, 2016 (blocks of a stage share weights: a recurrent stage)"

    def build(self, request: BuildRequest) -> NPASModel:
        net = create_backbone(request.arch, request.num_classes)
        parts = SHARED_PARTS[self.options.share]
        if parts is not None and not any(l.spec.op in parts for l in weight_layers(net)):
            raise ConfigError(f"method.options.share: {self.options.share!r} selects part of a transformer block, "
                              f"and {request.arch} has no attention or MLP layers; use share=all.")
        groups = share_groups(net, skip_first_block=self.options.first_block == "own", ops=parts)
        if not groups:
            raise ConfigError(
                f"model.arch: {request.arch} has no two body layers of one shape within a stage, so hard-sharing "
                "has nothing to share; use a deeper network (WRN depth >= 16, ViT depth >= 2)"
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
            spec = g.layers[0].spec
            storage = SharedWeight(g.shape, lambda w, spec=spec: init_weight_(w, spec))  # as the layers' own init
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
        return {"shared_weights": plan["groups"], "first_block": self.options.first_block, "share": self.options.share,
                "total": plan["total"], "plain_network": plan["plain"],
                "compression": plan["plain"] / plan["total"]}
