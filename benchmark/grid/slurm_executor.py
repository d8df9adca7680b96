"""``SlurmExecutor``: the grid runner's tasks as SLURM jobs (``npas grid run SPEC --executor slurm``).

The runner (runner.py) decides what runs when, for every executor alike: shared phases first, a run once the
phases it needs have their artifacts, at most ``parallel`` at a time, progress lines, the outcome of each task
read from its run folder. This executor starts a task by submitting it as one SLURM job (through submitit,
with the sbatch parameters ``npas grid submit`` uses: ``slurm_cluster.sbatch_parameters``), polls the job
until it has ended, and stops running jobs with ``scancel`` (SIGTERM: the run checkpoints at its next step
and ends resumable). Every job is recorded in ``<results>/slurm.json`` like a submitted array's, so
``npas grid status`` shows its queue state and ``npas grid cancel`` reaches it.

A job runs ``slurm_job.GridJob``, as a submitted array task does: a preemption or the time limit near (USR2)
requeues it and the runner keeps waiting for it; the code it runs is the snapshot taken when the runner
submitted its first job (``code_snapshot``), whatever the checkout does meanwhile.

``npas grid submit`` is the other way to SLURM: job arrays that run without a process waiting for them
(detached; dependencies between the phase and training arrays are SLURM's). ``--executor slurm`` keeps a
runner attached instead: one job per task, submitted as slots free up, its progress in the terminal; leaving
the runner (Ctrl-C, SIGTERM) cancels its jobs cleanly, and ``npas grid run`` again resumes them.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from .code_snapshot import CodeSnapshot
from .executors import Running, Task
from .queue import ENDED, record_submission
from .slurm_cluster import query_cluster, sbatch_parameters
from .slurm_job import GridJob, job_executor, job_state
from .spec import Resources
from .task import EXIT_PREEMPTED

DEFAULT_JOBS = 256  # jobs in the queue at once when neither --parallel nor resources.max_parallel says
# of the ended states (queue.ENDED), those of a job stopped from outside: its run resumes from its checkpoint
STOPPED_STATES = frozenset({"CANCELLED", "PREEMPTED", "TIMEOUT", "NODE_FAIL", "DEADLINE"})
ASK_EVERY_S = 15.0  # how often a job with no result yet is looked up in slurmctld (a job that ended without one)
FAILED = 1  # a task that raised (its traceback: the run's failed.json and the job's log)


class SlurmExecutor:
    """Each task one SLURM job; ``parallel`` caps the jobs the runner has in the queue at once."""

    name = "slurm"

    def __init__(self, results: Path, parallel: int, resources: Resources, grid_name: str) -> None:
        query_cluster()  # no controller: SlurmUnavailable, one line, before anything is submitted
        self.results = Path(results)
        self.parallel = parallel or DEFAULT_JOBS
        self.resources = resources
        self.grid_name = grid_name
        self._submitit: Any = None  # made at the first start (which takes the code snapshot)
        self._code: CodeSnapshot | None = None
        self._asked: dict[str, float] = {}  # job id -> when slurmctld was last asked about it

    def _executor(self) -> Any:
        if self._submitit is None:
            self._submitit, self._code = job_executor(self.results, self.resources.max_timeouts)
        return self._submitit

    def start(self, task: Task, slot: int) -> Running:
        phase = task.task_id.startswith("phase:")
        name = f"npas-{self.grid_name}" + ("-phase" if phase else "")
        params = sbatch_parameters(self.resources, name, single_task=phase)
        executor = self._executor()
        executor.update_parameters(**params)
        job = executor.submit(GridJob(self.results, 0), task.task_id)
        # in slurm.json like a submitted array (of one task): status and cancel reach it
        record_submission(self.results, job.job_id, "phase" if phase else "train", [task.task_id], [job.job_id], params,
                          self._code.path if self._code else "", self.resources.max_timeouts,
                          via="npas grid run --executor slurm")
        # the job's own log is where its output goes (the runner names it when a task fails)
        running = Running(Task(task.task_id, task.label, Path(job.paths.stderr)), time.monotonic(), slot)
        running.job = job
        return running

    def poll(self, running: Running) -> int | None:
        """The task's exit status once its job has ended, else None (a requeued job has not ended)."""
        if running.code is not None:
            return running.code
        job = running.job
        if job.paths.result_pickle.exists():
            running.code = _exit_code(job)
            return running.code
        now = time.monotonic()
        if now - self._asked.get(job.job_id, 0.0) < ASK_EVERY_S:
            return None
        self._asked[job.job_id] = now
        state = job_state(job.job_id)
        if state not in ENDED | STOPPED_STATES:
            return None  # pending, running, requeued -- or slurmctld cannot say now: asked again later
        time.sleep(1.0)  # its result may be being written
        if job.paths.result_pickle.exists():
            running.code = _exit_code(job)
        else:  # ended without a result (the run folder says the rest)
            running.code = EXIT_PREEMPTED if state in STOPPED_STATES else FAILED
        return running.code

    def stop(self, running: list[Running], grace_s: float = 120.0) -> None:
        """``scancel`` every job (SIGTERM: its run checkpoints at the next step and ends resumable), then wait
        for them to end, at most ``grace_s``."""
        live = [r for r in running if self.poll(r) is None]
        if live:
            subprocess.run(["scancel", "--", *(r.job.job_id for r in live)], capture_output=True, text=True,
                           timeout=30)
        deadline = time.monotonic() + grace_s
        for r in live:
            self._asked.pop(r.job.job_id, None)
        while live and time.monotonic() < deadline:
            live = [r for r in live if self.poll(r) is None]
            if live:
                time.sleep(1.0)


def _exit_code(job: Any) -> int:
    """The task's exit status from the job's result: ``GridJob`` returns the quiet ones and raises for others."""
    try:
        return int(job.result())
    except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError carries the task's own message
        m = re.search(r"ended with exit status (\d+)", str(exc))
        return int(m.group(1)) if m else FAILED
