"""The method author's toolkit: everything a method from another lab needs, in one import.

    from npasbench import sdk

A method **must**:

- subclass ``sdk.Method``, give it typed options (a frozen ``sdk.MethodOptions`` dataclass whose fields use
  ``sdk.option(default, help)``), and implement ``build(request) -> sdk.NPASModel``;
- attach a weight provider to every weight layer of the backbones it builds (``sdk.create_backbone``,
  ``sdk.weight_layers``; providers: ``sdk.attach_owned_weights``, ``sdk.CachedProvider`` for generated
  weights, ``sdk.SharedWeight`` + ``sdk.SharedRef`` for one tensor read by several layers);
- declare the role of every parameter it creates (``npas_roles = {"param": "role"}`` on the module that owns
  it; roles are ``sdk.ROLES``): what has no declared role is counted under ``other`` in ``npas params``;
- fit the request's budget or raise ``sdk.BudgetError`` saying why (``sdk.check_fits`` writes the suite's
  one message). ``create_model`` checks every built model again and calls an overrun a bug in the method.

A method **may**: size itself with ``sdk.largest_fitting`` (the one budget search) from
``sdk.backbone_fixed_params`` / ``sdk.plain_params``; count candidate models with ``sdk.count_params``;
return facts for the record (``record_info``); exempt roles from weight decay (``no_weight_decay_roles``);
run phases before training (``phases``, ``sdk.Phase``, ``sdk.RunContext``); keep state across checkpoints
(``extra_state``/``load_extra_state``); change the model from epoch hooks. ``docs/writing-a-method.md`` walks
through a complete plugin package (``docs/examples/npas_lowrank``) that CI installs and drives end to end.

Register in-tree with ``@sdk.register_method("name")``; an outside package declares an entry point in the
group ``npasbench.methods`` and needs no change to this repository.
"""

from __future__ import annotations

from .accounting import ROLES, count_params, param_report
from .budget import Budget, largest_fitting
from .contract import (MAX_MEMBERS, BuildRequest, Method, MethodOptions, NPASModel, Phase, RunContext, check_one_domain,
                       member_names, parse_members)
from .errors import BudgetError, ConfigError
from .models.layers import LayerSpec, OwnedWeight, WeightedLayer, init_weight_, kaiming_normal_, weight_layers
from .models.registry import create_backbone
from .options import option
from .plugins import register_method
from .providers import CachedProvider, SharedRef, SharedWeight, attach_owned_weights
from .sharing import ShareGroup, share_groups
from .sizing import backbone_fixed_params, backbone_flops, check_fits, plain_params, weight_numel

__all__ = [
    "MAX_MEMBERS", "check_one_domain", "member_names", "parse_members",
    "Budget", "BudgetError", "BuildRequest", "CachedProvider", "ConfigError", "LayerSpec", "Method",
    "MethodOptions", "NPASModel", "OwnedWeight", "Phase", "ROLES", "RunContext", "ShareGroup", "SharedRef",
    "SharedWeight", "WeightedLayer", "attach_owned_weights", "backbone_fixed_params", "backbone_flops",
    "check_fits", "count_params", "create_backbone", "init_weight_", "kaiming_normal_", "largest_fitting", "option",
    "param_report", "plain_params", "register_method", "share_groups", "weight_layers", "weight_numel",
]
