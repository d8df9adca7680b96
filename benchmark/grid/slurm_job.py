"""The callable of every SLURM array task: small, importable, checkpointable.

Only a results folder, task ids and a thread count cross the pickle; the task reads its config from
the manifest (``run_task``). Preemption and timeouts go through submitit's own machinery:

1. SLURM (``--signal=USR2@90``, or a preemption with ``preempt_send_user_signal``) sends USR2 or TERM;
2. inside ``run_task`` the trainer's handler (``signals.PreemptionFlag``) checkpoints at the next step
   boundary and the task returns ``EXIT_PREEMPTED`` -- nothing is lost;
3. back in this callable, with submitit's handler restored, the job sends itself USR2: submitit calls
   ``checkpoint()`` (which resubmits this same task), requeues the job (timeouts: up to the executor's
   ``timeout_countdown``) and exits; the requeued task resumes from the checkpoint.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import submitit

from .task import EXIT_OK, EXIT_PREEMPTED, run_task


class GridJob(submitit.helpers.Checkpointable):
    def __init__(self, results: str | Path, threads: int = 0) -> None:
        self.results = str(results)
        self.threads = threads

    def __call__(self, task_id: str) -> int:
        code = run_task(self.results, task_id, self.threads)
        if code == EXIT_PREEMPTED and "SLURM_JOB_ID" in os.environ:
            os.kill(os.getpid(), signal.SIGUSR2)  # submitit's handler: checkpoint() -> requeue -> exit
        if code not in (EXIT_OK,):
            raise RuntimeError(f"grid task {task_id} ended with exit status {code} (see its run folder)")
        return code

    def checkpoint(self, task_id: str) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same task: its state is in the run folder (the trainer's checkpoint), not here."""
        return submitit.helpers.DelayedSubmission(GridJob(self.results, self.threads), task_id)
