"""Evaluating a model: every member's top-1/top-5 and loss on a loader (anytime subsets for ensembles), and
the check that a finished model is usable."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Callable, ContextManager

import torch
import torch.nn as nn

from .distributed import DistInfo
from .metrics import AnytimeMeter, TopK


@torch.no_grad()
def evaluate(net: Any, model: Any, loader: Any, autocast: Callable[[], ContextManager], dist: DistInfo,
             device: torch.device, flops_per_member: list[int] | None = None) -> tuple[dict[str, Any], float]:
    """(metrics, seconds): ``net`` (the model or its wrapper) in eval mode over ``loader.epoch(0)``, counts
    reduced over ranks. ``flops_per_member`` given: also every member subset, ordered by inference FLOPs."""
    model.eval()
    meter = TopK(model.num_members, device)
    subsets = AnytimeMeter(model.num_members, device) if flops_per_member is not None else None
    t0 = time.perf_counter()
    for x, y in loader.epoch(0):
        with autocast():
            logits = net(x)
        meter.update(logits, y)
        if subsets is not None:
            subsets.update(logits, y)
    elapsed = time.perf_counter() - t0
    model.train()
    out = meter.compute(dist, model.member_names)
    if subsets is not None and flops_per_member is not None:
        out["anytime"] = subsets.compute(dist, model.member_names, flops_per_member)
    return out, elapsed


def non_finite(model: nn.Module, final: dict[str, Any]) -> str:
    """Why the finished model is unusable ('' if it is fine): a non-finite parameter or buffer
    (e.g. a norm's running statistics), or a non-finite test loss or accuracy."""
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"non-finite values in {name}"
    for key in ("loss", "top1", "top5"):
        v = final.get(key)
        if isinstance(v, float) and not math.isfinite(v):
            return f"non-finite test {key}"
    return ""
