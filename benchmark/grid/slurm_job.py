"""The callable of every SLURM array task: small, importable, checkpointable.

Only a results folder, task ids and a thread count cross the pickle; the task reads its config from
the manifest (``run_task``). Preemption and timeouts go through submitit's own machinery (submitit
1.5.4: its signal is USR2, ``SUBMITIT_PREEMPT_SIGNAL``; SIGTERM is only logged by its handler):

1. SLURM sends USR2 -- before the time limit (``--signal=USR2@90``, submitit's default) or at a
   preemption when the cluster sets ``SlurmctldParameters=preempt_send_user_signal``; a preemption
   also sends SIGTERM, often first (submitit's ``job._interrupt()`` does exactly that);
2. inside ``run_task`` the trainer's handler (``signals.PreemptionFlag``) checkpoints at the next step
   boundary and the task returns ``EXIT_PREEMPTED`` -- nothing is lost;
3. back here, with submitit's handler restored, if USR2 was received at any point of the task (not
   only last: TERM and USR2 can land inside one checkpoint write, in either order) the job sends itself
   USR2: submitit calls ``checkpoint()`` (which resubmits this same task), requeues the job -- a timeout
   at most ``[resources] max_timeouts`` times, then the run stays preempted and resumable -- and exits;
   the requeued task resumes from the checkpoint; its record counts the requeues.

SIGTERM alone (``scancel``, ``npas grid cancel``) stops the task the same clean way and is not requeued;
because a preemption's USR2 may follow its SIGTERM, a SIGTERM-only stop waits ``PREEMPTION_GRACE_S``
with submitit's handler in place before it ends the task.

Multi-process runs (``tasks_per_run`` > 1, one per GPU): every task exports submitit's distributed
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and the trainer's DDP reads it
exactly as under ``torchrun``; rank 0 owns the run folder (lock, markers, record).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import submitit

from ..trainer.signals import forget_signals, stop_signals_received
from .task import EXIT_OK, EXIT_PREEMPTED, run_task


PREEMPTION_GRACE_S = 10.0  # well under SLURM's KillWait (30 s by default)


class GridJob(submitit.helpers.Checkpointable):
    def __init__(self, results: str | Path, threads: int = 0) -> None:
        self.results = str(results)
        self.threads = threads

    def __call__(self, task_id: str) -> int:
        forget_signals()
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # a DDP run: one task per process, the trainer reads torchrun's variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        # the CPUs SLURM gave this task, not every core of the node (without a cgroup/affinity plugin torch
        # would start one thread per core in each task: measured 3.5x slower training on the localhost cluster)
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        code = run_task(self.results, task_id, threads)
        # requeue on submitit's preemption/timeout signal only; a cancelled task stays cancelled (its checkpoint
        # waits for `npas grid resubmit`)
        if code == EXIT_PREEMPTED and "SLURM_JOB_ID" in os.environ:
            if signal.SIGUSR2 in stop_signals_received():
                os.kill(os.getpid(), signal.SIGUSR2)  # submitit's handler: checkpoint() -> requeue -> exit
            else:  # a preemption's USR2 may still follow its SIGTERM: submitit's handler takes it meanwhile
                time.sleep(PREEMPTION_GRACE_S)
        if code not in (EXIT_OK,):
            raise RuntimeError(f"grid task {task_id} ended with exit status {code} (see its run folder)")
        return code

    def checkpoint(self, task_id: str) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same task: its state is in the run folder (the trainer's checkpoint), not here."""
        return submitit.helpers.DelayedSubmission(GridJob(self.results, self.threads), task_id)
