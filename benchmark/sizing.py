"""Sizes a method needs before it builds anything: what a fresh backbone holds, what its weight layers
need, its inference FLOPs without allocating a weight, and the one budget-overrun check.

Why this is its own module: every method that sizes itself to a budget first asks "how many parameters
are not mine to decide" (norms, biases) and "how many would the plain network have", and every method
with a fixed size must refuse a budget it overruns with the same clear ``BudgetError``. These were once
private to the baselines; they are public (``npasbench.sdk``) so a method from another lab counts the
same way.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .budget import Budget
from .errors import BudgetError
from .models.layers import weight_layers


def backbone_fixed_params(net: nn.Module) -> int:
    """Parameters a *fresh* backbone (``create_backbone``, no provider attached yet) already holds: its norms
    and biases. A method adds what its providers hold to this to get its total."""
    return sum(p.numel() for p in net.parameters())


def weight_numel(net: nn.Module) -> int:
    """Elements of every weight layer's weight (what an unshared network stores in its layers)."""
    return sum(layer.spec.numel for layer in weight_layers(net))


def plain_params(net: nn.Module) -> int:
    """Unique trainable parameters of ``net`` as the unshared network (every layer its own weight)."""
    return backbone_fixed_params(net) + weight_numel(net)


class _MetaWeight(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self) -> torch.Tensor:
        return torch.empty(self.shape, device="meta")


@torch.no_grad()
def backbone_flops(net: nn.Module, image_size: int) -> int:
    """Inference FLOPs of one image through a *fresh* backbone (no providers yet), on the meta device.

    Equals ``accounting.count_flops`` of the plain network (same counter, same ops), without
    allocating a single weight; ``net`` is consumed (moved to meta, given placeholder providers).
    """
    for layer in weight_layers(net):
        layer.set_provider(_MetaWeight(layer.spec.shape))
    net = net.to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return int(counter.get_total_flops())


def check_fits(total: int, budget: Budget | int | None, what: str, remedy: str = "Raise the budget.") -> None:
    """Refuse a model of ``total`` parameters above ``budget`` (None: no budget, nothing to check) with the
    suite's one overrun message: ``budget: <what> needs N parameters, above the budget of B. <remedy>``.

    A method calls this itself, before training, whenever its size is fixed or its search found nothing that
    fits: ``create_model`` also checks every built model, but treats an overrun it finds as a bug in the
    method (the method knew its size and should have said why it cannot fit)."""
    limit = budget.params if isinstance(budget, Budget) else budget
    if limit is not None and total > limit:
        raise BudgetError(f"budget: {what} needs {total:,} parameters, above the budget of {limit:,}. {remedy}")
