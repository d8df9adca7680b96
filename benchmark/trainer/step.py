"""The one training step, shared by the trainer's loop and every phase that trains (``RunContext.fit``).

Forward every member under the run's autocast, cross-entropy (mean over examples, summed over members,
with the run's label smoothing), backward through the grad scaler, the method's ``after_backward``,
optional gradient clipping, the optimizer step. Phases used to train with a second loop that lacked
AMP, clipping and label smoothing; now a search phase trains exactly as the run does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class StepSettings:
    """How a step computes, from the run's config (``from_config``)."""

    autocast: Callable[[], ContextManager]
    label_smoothing: float = 0.0
    grad_clip: float = 0.0

    @classmethod
    def from_config(cls, cfg, device: torch.device) -> "StepSettings":
        return cls(autocast_for(cfg, device), cfg.optim.label_smoothing, cfg.optim.grad_clip)


def autocast_for(cfg, device: torch.device) -> Callable[[], ContextManager]:
    """``train.amp``: autocast to ``train.amp_dtype`` on the run's device; otherwise a no-op context."""
    if not cfg.train.amp:
        return contextlib.nullcontext
    dtype = torch.bfloat16 if cfg.train.amp_dtype == "bfloat16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler_for(cfg, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for float16 AMP (bfloat16 needs none)."""
    return torch.amp.GradScaler(device.type, enabled=cfg.train.amp and cfg.train.amp_dtype != "bfloat16")


def member_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over examples, summed over members (every member is trained on every batch);
    ``logits``: (members, batch, classes)."""
    m = logits.shape[0]
    # y: class indices (B), or probability targets (B x classes) when the batch was mixed (data.mixup_alpha, ...)
    target = y if m == 1 else y.repeat(m, *([1] * (y.dim() - 1)))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target, label_smoothing=label_smoothing) * m


def train_step(net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               settings: StepSettings, x: torch.Tensor, y: torch.Tensor,
               after_backward: Callable[[], None] | None = None) -> torch.Tensor:
    """One step on (x, y); returns the detached loss. ``net``: what runs the forward (the model, or its DDP /
    compiled wrapper); ``model``: whose parameters are clipped."""
    with settings.autocast():
        logits = net(x)
    loss = member_loss(logits, y, settings.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if after_backward is not None:
        after_backward()
    if settings.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
