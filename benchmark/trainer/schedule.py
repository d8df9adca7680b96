"""Learning-rate schedules as pure functions of training progress.

The learning rate at a step depends only on (epoch, step within epoch), never on hidden scheduler
state, so a resumed run sets exactly the rate an uninterrupted run would have used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import OptimConfig


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float
    epochs: int
    steps_per_epoch: int
    kind: str = "step"
    milestones: tuple[float, ...] = ()
    gammas: tuple[float, ...] = ()
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1

    @classmethod
    def from_config(cls, cfg: OptimConfig, epochs: int, steps_per_epoch: int) -> "LRSchedule":
        milestones = tuple(cfg.milestones)
        if cfg.milestones_unit == "fraction":
            milestones = tuple(m * epochs for m in milestones)
        return cls(cfg.lr, epochs, max(1, steps_per_epoch), cfg.schedule, milestones, tuple(cfg.gammas),
                   cfg.warmup_epochs, cfg.warmup_start_factor)

    def factor(self, epoch: int, step_in_epoch: int) -> float:
        t = epoch + step_in_epoch / self.steps_per_epoch  # progress in epochs
        if self.kind == "step":
            f = 1.0
            for m, g in zip(self.milestones, self.gammas):
                if epoch >= m:  # changes at epoch boundaries, as MultiStepLR and the reference code
                    f *= g
        elif self.kind == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(1.0, t / max(self.epochs, 1e-9))))
        elif self.kind == "exponential":
            f = self.gammas[0] ** epoch  # at epoch boundaries, as StepLR(step_size=1) stepped once per epoch
        else:
            f = 1.0
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            w = self.warmup_start_factor + (1 - self.warmup_start_factor) * (t / self.warmup_epochs)
            f *= w
        return f

    def lr(self, epoch: int, step_in_epoch: int) -> float:
        return self.base_lr * self.factor(epoch, step_in_epoch)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "base_lr": self.base_lr, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "milestones": list(self.milestones),
                "gammas": list(self.gammas), "warmup_epochs": self.warmup_epochs}
