"""``unshared``: the plain network, every layer with its own weight. The reference point of NPAS.

With a budget (``total`` mode) it only checks that the plain network fits: a budget below the
plain network's size is impossible for this method (use a sharing method or a reduced-width
baseline instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from npasbench.sdk import (BuildRequest, Method, MethodOptions, NPASModel, attach_owned_weights, check_fits,
                           count_params, create_backbone, option, register_method)


@dataclass(frozen=True)
class UnsharedOptions(MethodOptions):
    no_decay_norm_bias: bool = option(
        False, "exempt normalisation parameters and biases from weight decay (reference code: decayed)")


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
            check_fits(count_params(model)[0], request.budget, f"the unshared {request.arch}",
                       "Raise the budget, or use a sharing method or a reduced width/depth baseline for this budget.")
        return model

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset({"norm_bias"}) if self.options.no_decay_norm_bias else frozenset()
