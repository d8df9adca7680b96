"""Graceful preemption: SIGTERM / SIGUSR1 request a checkpoint at the next step boundary.

SLURM sends SIGTERM (or a configured USR1) before killing a preempted job. The handler only sets a
flag; the training loop checks it between steps, writes a checkpoint and exits with
``EXIT_PREEMPTED`` so the launcher can requeue the run.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class PreemptionFlag:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGUSR1) -> None:
        """Ask for a checkpoint-and-exit from inside the process (the same path as a signal)."""
        self.signum = signum

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def install(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._previous.clear()
