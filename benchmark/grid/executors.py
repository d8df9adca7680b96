"""Executors: how the grid's tasks are started. The runner (runner.py) decides *what* runs *when*.

- ``LocalExecutor``: each task in its own process (``python -m npasbench.grid.task``), at most
  ``parallel`` at a time, each with an equal share of the cores (``train.threads``) or one GPU
  (``CUDA_VISIBLE_DEVICES``). A task's output goes to ``<its folder>/task.log``. If the runner
  dies (even by ``kill -9``), the kernel sends its tasks SIGTERM (``PR_SET_PDEATHSIG``): they
  checkpoint and stop, and the next ``npas grid run`` resumes them.
- ``DebugExecutor``: in-process, one task at a time, exceptions surface with their traceback.
- ``SlurmExecutor`` (slurm_executor.py): each task one SLURM job, submitted when the runner starts it and
  polled until it ends; the runner stays attached (``npas grid run SPEC --executor slurm``).

``npas grid submit`` (submit.py) is SLURM without a runner: the same task function as job arrays, detached.
``executor_factory.make_executor`` picks one by its ``--executor`` name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

PR_SET_PDEATHSIG = 1


@dataclass
class Task:
    task_id: str  # run id or "phase:<key>"
    label: str  # readable name for progress lines
    log: Path  # where its output goes


@dataclass
class Running:
    task: Task
    started: float
    slot: int
    proc: subprocess.Popen | None = None
    code: int | None = None
    log_fh: object | None = field(default=None, repr=False)
    job: Any = field(default=None, repr=False)  # the SLURM executor's submitit job


class Executor(Protocol):
    name: str
    parallel: int

    def start(self, task: Task, slot: int) -> Running: ...

    def poll(self, running: Running) -> int | None: ...

    def stop(self, running: list[Running], grace_s: float = 120.0) -> None: ...


def default_parallel() -> int:
    """One run per GPU on a GPU machine, else one per available core."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # pragma: no cover - not glibc: orphans finish their run instead
        pass


class LocalExecutor:
    name = "local"

    def __init__(self, results: Path, parallel: int = 0, gpus: int | None = None) -> None:
        self.results = Path(results)
        self.parallel = parallel or default_parallel()
        self.gpus = torch.cuda.device_count() if gpus is None else gpus
        cores = default_parallel() if not torch.cuda.is_available() else (os.cpu_count() or 1)
        self.threads = max(1, cores // self.parallel)

    def command(self, task: Task) -> list[str]:
        return [sys.executable, "-m", "npasbench.grid.task", str(self.results), task.task_id,
                "--threads", str(self.threads)]

    def start(self, task: Task, slot: int) -> Running:
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        env.setdefault("PYTHONUNBUFFERED", "1")
        task.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(task.log, "ab")
        proc = subprocess.Popen(self.command(task), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                                # own session: a terminal's Ctrl-C reaches only the runner, which then sends
                                # SIGTERM so that every task checkpoints at its next step instead of dying
                                start_new_session=True)
        return Running(task, time.monotonic(), slot, proc=proc, log_fh=fh)

    def poll(self, running: Running) -> int | None:
        assert running.proc is not None
        code = running.proc.poll()
        if code is not None and running.log_fh is not None:
            running.log_fh.close()  # type: ignore[attr-defined]
            running.log_fh = None
        if code is not None and code < 0:
            code = 128 - code  # killed by a signal: the shell's convention
        return code

    def stop(self, running: list[Running], grace_s: float = 120.0) -> None:
        """SIGTERM every task (they checkpoint at the next step and exit 75), then wait for them."""
        for r in running:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for r in running:
            if r.proc is None:
                continue
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
            self.poll(r)


class DebugExecutor:
    """In-process and sequential: ``start`` runs the task to its end (for debugging a grid)."""

    name = "debug"
    parallel = 1

    def __init__(self, results: Path) -> None:
        self.results = Path(results)

    def start(self, task: Task, slot: int) -> Running:
        from .task import run_task

        r = Running(task, time.monotonic(), slot)
        r.code = run_task(self.results, task.task_id)
        return r

    def poll(self, running: Running) -> int | None:
        return running.code

    def stop(self, running: list[Running], grace_s: float = 0.0) -> None:
        return None
