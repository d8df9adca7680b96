"""Step equivalence: the official model and ours, from identical weights, through identical SGD steps.

The cheap, decisive check behind the learning-parity figures. Both models start from the same
parameters (``*_map.transfer``), see the same fixed batches (seeded synthetic images and labels, so a
trace can be replayed without data files), and take the same SGD steps: the official optimizer set-up
(``group_weight_decay``: no decay on names containing "coefficients") for the official model, *our*
``build_optimizer`` with the method's weight-decay exemptions for ours. After every step the losses and
every layer's generated weight are compared. Equal traces mean equal learning dynamics; a difference
points at the first step, and the layer, where the two codes part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import OptimConfig
from ..trainer.optim import build_optimizer
from .official import cpu_device_lookups


def fixed_batches(steps: int, batch: int = 32, classes: int = 100, size: int = 32, seed: int = 0):
    """``steps`` (images, labels) pairs from a seeded generator: the same on every machine."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(steps)]


def official_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """The official ``main.py``: ``group_weight_decay(net, decay, ['coefficients'])``, Nesterov SGD."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if "coefficients" in name else decay).append(p)
    return torch.optim.SGD([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}],
                           lr=lr, momentum=momentum, nesterov=momentum > 0)


@dataclass
class Trace:
    losses: list[float] = field(default_factory=list)
    weight_sums: list[float] = field(default_factory=list)  # sum |w| over every generated weight, per step


def run_official(model: nn.Module, batches, weights: Callable[[], list[torch.Tensor]], lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4) -> Trace:
    opt = official_optimizer(model, lr, momentum, weight_decay)
    model.train()
    trace = Trace()
    with cpu_device_lookups():
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            trace.losses.append(float(loss.detach()))
            with torch.no_grad():
                trace.weight_sums.append(float(sum(w.abs().sum() for w in weights())))
    return trace


def run_ours(built, batches, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4) -> Trace:
    """Our model through our optimizer construction and the trainer's loss (mean CE x members)."""
    from .ssn_map import our_weights

    model = built.model
    cfg = OptimConfig(lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay, schedule="constant")
    opt = build_optimizer(model, cfg, built.method.no_weight_decay_roles())
    model.train()
    trace = Trace()
    for x, y in batches:
        logits = model(x)
        m = logits.shape[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(m)) * m
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        trace.losses.append(float(loss.detach()))
        with torch.no_grad():
            trace.weight_sums.append(float(sum(w.abs().sum() for w in our_weights(model))))
    return trace


def compare(a: Trace, b: Trace) -> dict[str, float]:
    """Largest relative differences of the two traces' losses and weight sums."""
    def rel(x: list[float], y: list[float]) -> float:
        return max((abs(p - q) / max(abs(p), 1e-12) for p, q in zip(x, y)), default=math.nan)

    return {"loss_rel": rel(a.losses, b.losses), "weights_rel": rel(a.weight_sums, b.weight_sums),
            "steps": min(len(a.losses), len(b.losses))}
