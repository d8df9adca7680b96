"""``npas train`` against a bare training loop: same initial weights, same batches, same steps.

The trainer adds checkpoints, evaluation, schedules as pure functions of progress, weight-decay
exemptions by role, members... A bare loop has none of it: ``torch.optim.SGD`` with the official
parameter split, a per-step cosine rate computed in the loop, ``cross_entropy``, ``backward``,
``step``. ``compare_with_bare_loop`` runs a short real ``npas train`` (a ``Trainer`` that records the
batches it was given and its initial weights), replays the recorded batches through the bare loop
from the same weights, and compares the learning rates and the final weights. Equal means every
difference between ``npas train`` and a minimal loop lies in the *data* (the augmentation draws and
order), not in the training step.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config
from ..factory import build_checked
from ..trainer.loop import Trainer
from ..trainer.setup import BuiltModel, RunData, Runtime
from .steps import official_optimizer


class RecordingTrainer(Trainer):
    """A real ``Trainer`` that keeps its initial weights and every (batch, learning rate) it trains on."""

    def setup_model(self, runtime: Runtime, data: RunData) -> BuiltModel:
        built = super().setup_model(runtime, data)
        self.initial_state = copy.deepcopy(built.model.state_dict())
        self.recorded: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        return built

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.recorded.append((x.clone(), y.clone(), float(self.optimizer.param_groups[0]["lr"])))
        return super().train_step(x, y)


def bare_loop(model, batches, base_lr: float, epochs: int, steps_per_epoch: int, momentum: float,
              weight_decay: float) -> list[float]:
    """The minimal loop: official optimizer split, cosine rate per step, mean cross-entropy."""
    opt = official_optimizer(model, base_lr, momentum, weight_decay)
    model.train()
    lrs = []
    for k, (x, y) in enumerate(batches):
        epoch, b = divmod(k, steps_per_epoch)  # the trainer's float operations, so the rates agree exactly
        lr = base_lr * (0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch + b / steps_per_epoch) / epochs))))
        for g in opt.param_groups:
            g["lr"] = lr
        lrs.append(lr)
        loss = F.cross_entropy(model(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lrs


def compare_with_bare_loop(cfg: Config) -> dict[str, Any]:
    """Run ``cfg`` (a cosine-schedule, one-member run) with ``npas train``'s trainer, replay it bare."""
    if cfg.optim.schedule != "cosine" or cfg.optim.warmup_epochs:
        raise ValueError("compare_with_bare_loop: a cosine schedule without warm-up (what the bare loop computes)")
    trainer = RecordingTrainer(cfg)
    result = trainer.run()
    twin = build_checked(trainer.method, trainer.request)
    twin.load_state_dict(trainer.initial_state)
    batches = [(x, y) for x, y, _ in trainer.recorded]
    lrs = bare_loop(twin, batches, cfg.optim.lr, cfg.train.epochs, trainer.steps_per_epoch, cfg.optim.momentum,
                    cfg.optim.weight_decay)
    ours = trainer.model.state_dict()
    diffs = {k: float((ours[k].double() - v.double()).abs().max()) for k, v in twin.state_dict().items()
             if v.is_floating_point()}
    return {"status": result.status, "steps": len(batches),
            "lr_max_abs_diff": max(abs(a - b[2]) for a, b in zip(lrs, trainer.recorded)),
            "weights_max_abs_diff": max(diffs.values()), "worst_tensor": max(diffs, key=diffs.get)}
