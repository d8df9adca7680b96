"""The callable of every SLURM array task: small, importable, checkpointable.

Only a results folder, task ids and a thread count cross the pickle; the task reads its config from
the manifest (``run_task``). Preemption and timeouts go through submitit's own machinery:

1. SLURM (``--signal=USR2@90``, or a preemption with ``preempt_send_user_signal``) sends USR2;
2. inside ``run_task`` the trainer's handler (``signals.PreemptionFlag``) checkpoints at the next step
   boundary and the task returns ``EXIT_PREEMPTED`` -- nothing is lost;
3. back in this callable, with submitit's handler restored, the job sends itself USR2: submitit calls
   ``checkpoint()`` (which resubmits this same task), requeues the job (timeouts: up to the executor's
   ``timeout_countdown``) and exits; the requeued task resumes from the checkpoint.

SIGTERM alone (``scancel``, ``npas grid cancel``) stops the task the same clean way and is not requeued;
a preemption sends SIGTERM and then USR2, which should requeue (see ``__call__``).

Not yet reliable (measured on the localhost cluster): with submitit's ``_interrupt`` (SIGTERM, then USR2)
the task was requeued and resumed in one run and not in others: after the SIGTERM the step is marked
cancelled and the USR2 did not always reach the task. A pure USR2 (``--signal=USR2@90`` before the
time limit) is the case that worked. Until this is solved and tested, preemption under SLURM leaves the
run resumable (its checkpoint); `npas grid submit` again resumes it (the folder lock keeps a duplicate
submission from running it twice).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import submitit

from ..trainer.signals import last_stop_signal
from .task import EXIT_OK, EXIT_PREEMPTED, run_task


PREEMPTION_GRACE_S = 10.0  # well under SLURM's KillWait (30 s by default)


class GridJob(submitit.helpers.Checkpointable):
    def __init__(self, results: str | Path, threads: int = 0) -> None:
        self.results = str(results)
        self.threads = threads

    def __call__(self, task_id: str) -> int:
        code = run_task(self.results, task_id, self.threads)
        # requeue on submitit's preemption/timeout signal only; a cancelled task stays cancelled (its checkpoint
        # waits for `npas grid resubmit`). SIGTERM alone is ambiguous: scancel sends it, and so does a
        # preemption, whose USR2 follows (submitit's own _interrupt does the same). So after a SIGTERM stop
        # wait a moment with submitit's handler back in place: a USR2 then requeues, otherwise it was a cancel.
        if code == EXIT_PREEMPTED and "SLURM_JOB_ID" in os.environ:
            if last_stop_signal() == signal.SIGUSR2:
                os.kill(os.getpid(), signal.SIGUSR2)  # submitit's handler: checkpoint() -> requeue -> exit
            else:
                time.sleep(PREEMPTION_GRACE_S)
        if code not in (EXIT_OK,):
            raise RuntimeError(f"grid task {task_id} ended with exit status {code} (see its run folder)")
        return code

    def checkpoint(self, task_id: str) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same task: its state is in the run folder (the trainer's checkpoint), not here."""
        return submitit.helpers.DelayedSubmission(GridJob(self.results, self.threads), task_id)
