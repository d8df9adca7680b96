"""``unshared``: the plain network, every layer with its own weight. The reference point of NPAS.

With a budget (``total`` mode) it only checks that the plain network fits: a budget below the
plain network's size is impossible for this method (use a sharing method or a reduced-width
baseline instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from npasbench.accounting import count_params
from npasbench.contract import BuildRequest, Method, MethodOptions, NPASModel
from npasbench.errors import BudgetError
from npasbench.models.layers import OwnedWeight
from npasbench.models.registry import create_backbone
from npasbench.plugins import register_method


@dataclass(frozen=True)
class UnsharedOptions(MethodOptions):
    no_decay_norm_bias: bool = field(default=False, metadata={
        "help": "exempt normalisation parameters and biases from weight decay (reference code: decayed)"})


def attach_owned_weights(net) -> None:
    """Give every weight layer of ``net`` its own kaiming-initialised weight."""
    for layer in net.modules():
        if hasattr(layer, "set_provider") and hasattr(layer, "spec"):
            layer.set_provider(OwnedWeight(layer.spec, head=layer.spec.role == "head"))


@register_method("unshared")
class Unshared(Method):
    Options = UnsharedOptions
    summary = "Plain network: every layer owns its weight (no sharing)."
    reference = "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016; He et al., ResNet, CVPR 2016"

    def build(self, request: BuildRequest) -> NPASModel:
        net = create_backbone(request.arch, request.num_classes)
        attach_owned_weights(net)
        model = NPASModel([net], [request.arch])
        if request.budget is not None:
            total = count_params(model)[0]
            if total > request.budget.params:
                raise BudgetError(
                    f"budget: the unshared {request.arch} needs {total:,} parameters, above the budget of "
                    f"{request.budget.params:,}. Raise the budget, or use a sharing method or a reduced "
                    "width/depth baseline for this budget."
                )
        return model

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset({"norm_bias"}) if self.options.no_decay_norm_bias else frozenset()
