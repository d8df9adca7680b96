"""A throw-away method that exercises every part of the method contract.

``toy-shared``: two member networks whose conv weights are all cut from ONE shared bank (scaled by a
learned per-layer coefficient), a search phase whose artifact feeds ``build``, extra state that
changes the model mid-training (at the end of epoch 1 member 1 gets an extra learned logit offset),
an ``after_backward`` hook, and weight-decay exemption by role.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from npasbench.contract import BuildRequest, Method, MethodOptions, NPASModel, Phase
from npasbench.models.layers import OwnedWeight
from npasbench.models.registry import create_backbone


class Bank(nn.Module):
    npas_roles = {"flat": "bank"}

    def __init__(self, size: int) -> None:
        super().__init__()
        self.flat = nn.Parameter(torch.randn(size) * 0.05)


class BankSlice(nn.Module):
    """Weight = bank[:numel] * coefficient; the bank is referenced outside the module tree."""

    npas_roles = {"coef": "coefficients"}

    def __init__(self, bank: Bank, shape: tuple[int, ...], scale: float) -> None:
        super().__init__()
        object.__setattr__(self, "_bank", bank)
        self.shape = shape
        self.numel = math.prod(shape)
        self.coef = nn.Parameter(torch.tensor(scale * math.sqrt(2.0 / math.prod(shape[1:])) / 0.05))

    def forward(self) -> torch.Tensor:
        return self._bank.flat[: self.numel].view(self.shape) * self.coef


class LogitOffset(nn.Module):
    npas_roles = {"offset": "other"}

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(classes))


class OffsetNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.extra: LogitOffset | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if self.extra is None else out + self.extra.offset


@dataclass(frozen=True)
class ToyOptions(MethodOptions):
    grow_at_epoch: int = 1
    exempt_coefficients: bool = True


class ToyShared(Method):
    Options = ToyOptions
    summary = "test-only method exercising the whole contract"
    budget_modes = ("total", "bank")

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.grad_calls = 0
        self.grown = False

    def phases(self, request: BuildRequest) -> list[Phase]:
        def search(ctx) -> dict:
            # a real (tiny) look at the data: label frequencies decide the coefficient scale
            labels = ctx.data.train.labels
            freq = torch.bincount(labels, minlength=ctx.data.num_classes).float()
            return {"scale": float(1.0 + 0.0 * freq.std().item()), "classes": int(ctx.data.num_classes)}

        return [Phase("search", "derive the coefficient scale from the data", search)]

    def build(self, request: BuildRequest) -> NPASModel:
        scale = request.artifacts.get("search", {}).get("scale", 1.0)
        nets = [create_backbone(request.arch, request.num_classes) for _ in range(2)]
        convs = [l for n in nets for l in n.modules() if hasattr(l, "spec") and l.spec.kind == "conv"]
        size = max(l.spec.numel for l in convs)
        if request.budget is not None and request.budget.mode == "bank":
            size = request.budget.params
        bank = Bank(size)
        for n in nets:
            for l in n.modules():
                if hasattr(l, "spec"):
                    if l.spec.kind == "conv":
                        l.set_provider(BankSlice(bank, l.spec.shape, scale))
                    else:
                        l.set_provider(OwnedWeight(l.spec, head=True))
        return NPASModel([OffsetNet(n) for n in nets], ["a", "b"], shared={"bank": bank})

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset({"coefficients"}) if self.options.exempt_coefficients else frozenset()

    def after_backward(self, model: NPASModel, step: int) -> None:
        assert model.shared["bank"].flat.grad is not None
        self.grad_calls += 1

    def on_epoch_end(self, model: NPASModel, epoch: int, metrics: dict) -> bool:
        if epoch + 1 == self.options.grow_at_epoch and not self.grown:
            self._grow(model)
            return True
        return False

    def _grow(self, model: NPASModel) -> None:
        member = model.members[1]
        member.extra = LogitOffset(member.net.num_classes).to(next(model.parameters()).device)
        self.grown = True

    def extra_state(self, model: NPASModel) -> dict:
        return {"grown": self.grown, "grad_calls": self.grad_calls}

    def load_extra_state(self, model: NPASModel, state: dict) -> None:
        if state.get("grown") and not self.grown:
            self._grow(model)
        self.grad_calls = int(state.get("grad_calls", 0))
