"""``create_model``: method name + architecture + data set + budget -> a checked model.

This is the one place where the suite-wide budget rule is enforced: in ``total`` mode the built
model's unique trainable parameters must not exceed the budget, whatever the method did.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

from .accounting import ParamReport, param_report
from .budget import Budget, is_no_budget, parse_count
from .contract import BuildRequest, Method, MethodOptions, NPASModel
from .data.info import dataset_info
from .errors import BudgetError, ConfigError
from .models.registry import get_arch
from .plugins import create_method


@dataclass
class BuiltModel:
    model: NPASModel
    method: Method
    request: BuildRequest

    def report(self, flops: bool = True) -> ParamReport:
        shape = (3, self.request.image_size, self.request.image_size) if flops else None
        return param_report(self.model, shape, self.request.budget)


def make_request(arch: str, dataset: str, budget: Budget | None = None, artifacts: dict | None = None,
                 num_classes: int | None = None, image_size: int | None = None) -> BuildRequest:
    definition = get_arch(arch)  # unknown architecture -> clear RegistryError before anything else
    info = dataset_info(dataset, num_classes, image_size)
    if definition.image_size is not None and info.image_size != definition.image_size:
        hint = " (data.synthetic_size sets the synthetic images' size)" if dataset == "synthetic" else ""
        raise ConfigError(f"model.arch: {arch} takes {definition.image_size}x{definition.image_size} images (its "
                          f"position embedding has one entry per patch), but {dataset} gives "
                          f"{info.image_size}x{info.image_size}{hint}.")
    return BuildRequest(arch=arch, num_classes=info.num_classes, budget=budget, dataset=dataset,
                        image_size=info.image_size, artifacts=dict(artifacts or {}))


def build_checked(method: Method, request: BuildRequest) -> NPASModel:
    method.check_budget_mode(request.budget)
    try:
        model = method.build(request)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        text = str(exc)
        if not isinstance(exc, MemoryError) and "allocate" not in text and "out of memory" not in text:
            raise
        size = f"the budget of {request.budget}" if request.budget else "its natural size"
        raise BudgetError(f"budget: building {method.name!r} {request.arch} at {size} ran out of memory on this "
                          f"machine ({text.splitlines()[0][:160] if text else type(exc).__name__}). Lower "
                          "model.budget or build on a machine with more memory.") from None
    if not isinstance(model, NPASModel):
        raise TypeError(f"method {method.name!r}.build returned {type(model).__name__}, expected NPASModel")
    for layer in model.weight_layers():
        if layer.provider is None:
            raise RuntimeError(f"method {method.name!r} left layer {layer.spec.name!r} without a weight provider")
    budget = request.budget
    if budget is not None and budget.mode == "total":
        total = param_report(model, None).total
        if total > budget.params:
            raise BudgetError(
                f"budget: method {method.name!r} built {total:,} unique trainable parameters for "
                f"{request.arch}, over the budget of {budget.params:,}. This is a bug in the method: "
                "it must raise BudgetError itself when it cannot fit."
            )
    return model


def create_model(method: str | Method, arch: str, dataset: str = "synthetic", budget: Budget | int | str | None = None,
                 options: Mapping[str, Any] | MethodOptions | None = None, artifacts: dict | None = None,
                 num_classes: int | None = None) -> BuiltModel:
    m = method if isinstance(method, Method) else create_method(method, options)
    if not isinstance(budget, Budget):  # "60%", "1.5M", 500_000, None: as the CLI and grid specs write them
        count = resolve_budget(budget, "total", arch, dataset, num_classes)
        if count is not None:
            check_budget_scale(m, count, arch, dataset, num_classes)
        budget = Budget(count) if count is not None else None
    request = make_request(arch, dataset, budget, artifacts, num_classes)
    return BuiltModel(build_checked(m, request), m, request)


# A budget more than this many times the unshared network(s) it stands for is refused: no NPAS experiment
# needs it (parameter upsampling studies go a few times over), and methods that fill their budget
# (SSN's bank) would try to allocate it -- 1e12 parameters are 4 TB.
MAX_BUDGET_RATIO = 64


@functools.lru_cache(maxsize=64)
def unshared_size(arch: str, dataset: str, num_classes: int | None = None) -> int:
    """Unique trainable parameters of the plain network (the reference of ``"10%"`` budgets)."""
    return create_model("unshared", arch, dataset, None, {}, num_classes=num_classes).report(flops=False).total


def resolve_budget(value: Any, mode: str, arch: str, dataset: str, num_classes: int | None = None) -> int | None:
    """``"100k"`` -> 100000; ``"10%"`` -> 10% of the unshared network's size; None/"none"/"full" -> None."""
    if is_no_budget(value, "model.budget"):
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1]
        try:
            frac = float(text)
        except ValueError:
            raise BudgetError(f"model.budget: {value!r} is not a percentage; write e.g. \"10%\" or \"2.5%\".") from None
        if not frac > 0:
            raise BudgetError(f"model.budget: a percentage budget must be positive, got {value!r}.")
        if mode != "total":
            raise BudgetError(f"model.budget: a percentage ({value!r}) is a share of the unshared network's unique "
                              f"parameters, i.e. budget_mode 'total', not {mode!r}. Give an absolute count instead.")
        return max(1, int(round(unshared_size(arch, dataset, num_classes) * frac / 100.0)))
    return parse_count(value, "model.budget")


def check_budget_scale(method, budget: int, arch: str, dataset: str, num_classes: int | None = None) -> None:
    """Refuse a budget beyond ``MAX_BUDGET_RATIO`` times the unshared size of the networks ``method``
    stands in for (``Method.reference_archs``), before anything is built: a typo (1e12 for 1e6) must be a
    one-line error, not an allocation of terabytes."""
    archs = method.reference_archs(arch)
    reference = sum(unshared_size(a, dataset, num_classes) for a in archs)
    if budget > MAX_BUDGET_RATIO * reference:
        what = archs[0] if len(archs) == 1 else f"networks of its {len(archs)} members ({', '.join(archs)})"
        raise BudgetError(f"model.budget: {budget:,} parameters is {budget / reference:,.0f}x the unshared {what} "
                          f"({reference:,}); budgets above {MAX_BUDGET_RATIO}x are refused. Check the number "
                          "(e.g. 1.5M, 500k, \"10%\") or use \"none\" for the method's natural size.")
