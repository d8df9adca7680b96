"""The common trainer: one loop for every method, fast on GPU and correct on CPU."""

from .loop import EXIT_DIVERGED, EXIT_PREEMPTED, RunResult, Trainer, train

__all__ = ["EXIT_DIVERGED", "EXIT_PREEMPTED", "RunResult", "Trainer", "train"]
