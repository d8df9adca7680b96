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

A clean stop (exit 75) is not an error: the task ends quietly with one line in its log saying what
stopped it, where the checkpoint is and how the run resumes; only a failed run raises (its traceback is in
failed.json). On a real preemption slurmctld has requeued the job before submitit's own ``scontrol
requeue`` runs; that requeue then finds the job pending, which is accepted (``_tolerant_requeue``). Each
requeue is an event of the run's history (``trainer/history.py``).

Multi-process runs (``tasks_per_run`` > 1, one per GPU): every task exports submitit's distributed
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and the trainer's DDP reads it
exactly as under ``torchrun``; rank 0 owns the run folder (lock, markers, record).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core import logger as submitit_logger
from submitit.slurm import slurm as submitit_slurm

from ..errors import NPASError
from ..trainer.history import append_event, describe_checkpoint, last_checkpoint, read_history
from ..trainer.signals import forget_signals, stop_signals_received
from .code_snapshot import CodeSnapshot, python_command, take_snapshot
from .manifest import Manifest
from .task import EXIT_BUSY, EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, run_task


PREEMPTION_GRACE_S = 10.0  # well under SLURM's KillWait (30 s by default)


def job_executor(results: Path, max_timeouts: int) -> tuple[Any, CodeSnapshot]:
    """submitit's SLURM executor for a grid's jobs (``npas grid submit`` and ``--executor slurm`` alike): its folder
    ``<results>/submitit``, the jobs running the code snapshot taken now (what they run however the checkout
    changes while they queue), a timeout requeued at most ``max_timeouts`` times; and that snapshot."""
    code = take_snapshot(results / "submitit")
    executor = submitit.AutoExecutor(folder=results / "submitit", cluster="slurm", slurm_python=python_command(code),
                                     slurm_max_num_timeout=max_timeouts)
    return executor, code


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
        if code == EXIT_PREEMPTED and "SLURM_JOB_ID" in os.environ and env.global_rank == 0:
            run_dir = self._run_dir(task_id)
            where = _where(run_dir)
            if signal.SIGUSR2 not in stop_signals_received():
                time.sleep(PREEMPTION_GRACE_S)  # a preemption's USR2 may still follow its SIGTERM: submitit takes it
            if signal.SIGUSR2 in stop_signals_received():
                self._requeue(task_id, run_dir, where)  # returns only if submitit did not exit
            else:
                print(f"grid task {task_id}: stopped by SIGTERM (scancel, `npas grid cancel`, or the node going "
                      f"down){where}; not requeued: `npas grid resubmit SPEC` resumes it", file=sys.stderr, flush=True)
        if code in QUIET_EXITS:
            return code  # a finished, stopped or already-held run: the run folder says everything
        raise RuntimeError(f"grid task {task_id} ended with exit status {code} (see its run folder)")

    def _run_dir(self, task_id: str) -> Path | None:
        if task_id.startswith("phase:"):
            return None
        try:
            return Path(self.results) / Manifest.load(self.results).runs[task_id].folder
        except (NPASError, KeyError):
            return None

    def _requeue(self, task_id: str, run_dir: Path | None, where: str) -> None:
        """USR2 (a preemption, or the time limit near): submitit checkpoints (this same task) and requeues the job
        (a timeout at most ``max_timeouts`` times); a job that slurmctld requeued already is not an error."""
        print(f"grid task {task_id}: preempted or near its time limit (USR2){where}; the job is requeued and the "
              "run resumes from that checkpoint", file=sys.stderr, flush=True)
        if run_dir is not None:
            os.environ["NPAS_RUN_DIR"] = str(run_dir)  # where _tolerant_requeue notes the requeue
        submitit_slurm.SlurmJobEnvironment._requeue = _tolerant_requeue  # type: ignore[method-assign]
        os.kill(os.getpid(), signal.SIGUSR2)  # submitit's handler: checkpoint() -> requeue -> exit

    def checkpoint(self, task_id: str) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same task: its state is in the run folder (the trainer's checkpoint), not here."""
        return submitit.helpers.DelayedSubmission(GridJob(self.results, self.threads), task_id)


QUIET_EXITS = (EXIT_OK, EXIT_DIVERGED, EXIT_PREEMPTED, EXIT_BUSY)
REQUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED")


def _where(run_dir: Path | None) -> str:
    """", checkpointed at epoch 3 step 114/390" from the run's history (empty when it says nothing)."""
    if run_dir is None:
        return ""
    text = describe_checkpoint(last_checkpoint(read_history(run_dir)))
    return f", checkpointed {'at ' if text.startswith('epoch') else ''}{text}" if text else ""


def job_state(job_id: str, timeout_s: float = 30.0) -> str:
    """The job's state as slurmctld has it now ("" when it cannot be asked)."""
    try:
        r = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"\bJobState=(\S+)", r.stdout)
    return m.group(1) if m else ""


def _tolerant_requeue(self: Any, countdown: int) -> None:
    """submitit's ``SlurmJobEnvironment._requeue`` (``scontrol requeue``), except that a job slurmctld has
    requeued already (a real preemption with ``PreemptMode=REQUEUE``: the job is pending again before its
    process has ended) is what was wanted, not a CalledProcessError."""
    jid = self.job_id
    r = subprocess.run(["scontrol", "requeue", jid], capture_output=True, text=True, timeout=60)
    log = submitit_logger.get_logger()
    run = os.environ.get("NPAS_RUN_DIR")
    if r.returncode == 0:
        log.info(f"Requeued job {jid} ({countdown} remaining timeouts)")
        if run:
            append_event(run, "requeue", by="submitit", timeouts_left=countdown)
        return
    state = job_state(jid)
    # a preemption with PreemptMode=REQUEUE: slurmctld has flagged the job for requeue already; while its
    # process still runs the job reads COMPLETING and `scontrol requeue` answers "Job is pending execution"
    if state in REQUEUED_STATES or "pending execution" in (r.stderr or ""):
        log.info(f"Job {jid} was already requeued by slurmctld (state {state}); nothing to do")
        if run:
            append_event(run, "requeue", by="slurmctld", state=state)
        return
    raise subprocess.CalledProcessError(r.returncode, ["scontrol", "requeue", jid], r.stdout, r.stderr)
