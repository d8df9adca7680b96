"""Graceful preemption: SIGTERM / SIGUSR1 / SIGUSR2 stop a run cleanly and resumably, from its first line on.

SLURM sends SIGTERM (or a configured USR1) before killing a preempted job; submitit's jobs are sent
USR2 (its ``SUBMITIT_PREEMPT_SIGNAL``; its own handler only logs SIGTERM inside a job), so all three
are caught. A run installs the handler before anything else and keeps it until its record is written:

- before the training loop (loading data, building the model, a phase such as SSN's group search,
  restoring a checkpoint) the handler raises ``StopRequested``; the trainer writes a ``preempted``
  record and exits ``EXIT_PREEMPTED``. Nothing half-done survives: every file is written atomically
  and a phase's artifact appears only when the phase has finished (an interrupted phase reruns);
- inside the loop (``arm()``) it only sets a flag; the loop checks it between steps, writes a
  checkpoint and exits ``EXIT_PREEMPTED`` so the launcher can requeue the run;
- after the loop (final evaluation, the record) the flag is noted and the run finishes: a few
  seconds of work, and a finished run is better than a requeued one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


_received: set[int] = set()  # every stop signal received since the last forget_signals()


def note_signal(signum: int) -> None:
    _received.add(signum)


def stop_signals_received() -> frozenset[int]:
    """Every stop signal received since ``forget_signals`` (the order is lost on purpose: a SLURM
    preemption sends SIGTERM then USR2, and both may land inside one checkpoint write)."""
    return frozenset(_received)


def forget_signals() -> None:
    _received.clear()


class StopRequested(BaseException):
    """A stop signal outside the training loop. A ``BaseException``, so that no ``except Exception``
    on the way (a data reader, a phase) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


class PreemptionFlag:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.raising = False
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGUSR1) -> None:
        """Ask for a checkpoint-and-exit from inside the process: honoured at the first step boundary (a
        request made during set-up lets set-up finish, then checkpoints after one step)."""
        self.signum = signum

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        note_signal(signum)
        if self.raising:
            raise StopRequested(signum)

    def install(self, raising: bool = False) -> "PreemptionFlag":
        """Catch ``SIGNALS`` (main thread only). ``raising``: set-up mode, see the module docstring."""
        self.raising = raising
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def arm(self) -> None:
        """From here on a signal only sets the flag (the training loop checkpoints at the next step)."""
        self.raising = False

    def uninstall(self) -> None:
        self.raising = False
        for s, h in self._previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._previous.clear()
