"""The scheduler's side of a grid: which SLURM jobs were submitted for each run, which of them the queue
still holds, and one state per run that joins the run folder's state with those jobs.

Why: the folder alone says "not started" for a run whose task waits in the queue, and a grid submitted
twice has two jobs for the same run. ``<results>/slurm.json`` lists every array ever submitted;
``QueueView`` asks ``squeue`` once (bounded by a timeout, never a hang) about all of them and keeps, per
task id, every job in submission order. Jobs that left the queue are absent from squeue; without SLURM
accounting their end is unknown to the scheduler and the run folder is the truth.

``merge`` gives the joined state: a finished folder stays done (a job still holding it is named); a job
RUNNING makes the run ``running`` (job, node, time); a job waiting (PENDING with its reason, or any other
state the queue holds) makes it ``queued``; otherwise the folder's own state stands.
"""

from __future__ import annotations

import datetime as _dt
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import NPASError
from ..provenance import git_info
from ..records import read_json_object

SLURM_STATE = "slurm.json"
JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")  # "123" or "123_4": anything else never reaches a scheduler command
# states in which a job no longer holds its run (squeue shows them for MinJobAge seconds after the end)
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                   "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
ACTIVE = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"})


def record_submission(results: Path, job_id: str, kind: str, tasks: list[str], task_jobs: list[str],
                      parameters: dict[str, Any], code: Path | str, max_timeouts: int, **extra: Any) -> None:
    """Add one submission (an array, or one job of ``npas grid run --executor slurm``) to ``slurm.json``, written at
    once: a crash between submissions loses none of those made. ``task_jobs``: each task's own job id."""
    state = read_json_object(results / SLURM_STATE) or {"arrays": []}
    state["arrays"].append({"job_id": job_id, "kind": kind, "tasks": tasks, "task_jobs": task_jobs,
                            "parameters": parameters, "git": git_info(), "code": str(code),
                            "max_timeouts": max_timeouts, **extra,
                            "submitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    write_json(results / SLURM_STATE, state)


@dataclass(frozen=True)
class SlurmJob:
    """One submission of one task, as the queue sees it now (``state`` "" once it has left the queue)."""

    job: str  # "<array job>_<index>" (or a plain job id for a one-task array)
    state: str = ""
    reason: str = ""
    node: str = ""
    elapsed: str = ""
    restarts: str = ""

    @property
    def holds(self) -> bool:
        """The job still holds its run: it runs, or waits to run (again)."""
        return bool(self.state) and self.state not in ENDED

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        if self.active:
            return f"{self.job} {self.state} on {self.node or '?'}" + (f" for {self.elapsed}" if self.elapsed else "")
        if self.state:
            return f"{self.job} {self.state}" + (f" ({self.reason})" if self.reason else "")
        return f"{self.job} (left the queue)"

    def to_dict(self) -> dict[str, str]:
        return {"job": self.job, "state": self.state, "reason": self.reason, "node": self.node,
                "elapsed": self.elapsed, "restarts": self.restarts}


def submitted_tasks(results: str | Path) -> dict[str, list[str]]:
    """task id (run id or phase:<key>) -> every SLURM id it was submitted as, oldest first. An id that is not
    a SLURM job id (a damaged or planted slurm.json) is left out, never passed to a scheduler command."""
    state = read_json_object(Path(results) / SLURM_STATE) or {}
    out: dict[str, list[str]] = {}
    arrays = state.get("arrays")
    for array in arrays if isinstance(arrays, list) else []:
        if not isinstance(array, dict) or not isinstance(array.get("tasks"), list):
            continue
        base = str(array.get("job_id", ""))
        jobs = array.get("task_jobs") or [f"{base}_{i}" for i in range(len(array["tasks"]))]
        for task, job in zip(array["tasks"], jobs):
            if isinstance(task, str) and isinstance(job, str) and JOB_ID.match(job):
                out.setdefault(task, []).append(job)
    return out


@dataclass
class QueueView:
    """Every submission of every task of a grid, with the queue's current view of each."""

    jobs: dict[str, list[SlurmJob]] = field(default_factory=dict)
    note: str = ""  # why the view is partial (no squeue, no accounting), shown under the status table

    def holding(self, task_id: str) -> list[SlurmJob]:
        """The jobs that still hold ``task_id`` (a run id or phase:<key>)."""
        return [j for j in self.jobs.get(task_id, []) if j.holds]

    @property
    def submitted(self) -> bool:
        return bool(self.jobs)


def queue_view(results: str | Path, timeout_s: float = 15.0, accounting_note: bool = True) -> QueueView:
    """One ``squeue`` call (``-r``: one line per array task) for every array the grid submitted."""
    tasks = submitted_tasks(results)
    if not tasks:
        return QueueView()
    arrays = sorted({j.split("_")[0] for jobs in tasks.values() for j in jobs})
    empty = {task: [SlurmJob(j) for j in jobs] for task, jobs in tasks.items()}
    try:
        r = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-O",
                            "JobArrayID:|,State:|,Reason:|,NodeList:|,TimeUsed:|,RestartCnt:|"],
                           capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return QueueView(empty, f"squeue unavailable ({type(exc).__name__}): states from the run folders only")
    if r.returncode != 0 and "Invalid job id" not in r.stderr:
        return QueueView(empty, f"squeue failed ({r.stderr.strip()[:120]}): states from the run folders only")
    queue: dict[str, SlurmJob] = {}
    for line in r.stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 6:
            queue[parts[0]] = SlurmJob(parts[0], parts[1], "" if parts[2] == "None" else parts[2], parts[3],
                                       parts[4], parts[5])
    view = QueueView({task: [queue.get(j, SlurmJob(j)) for j in jobs] for task, jobs in tasks.items()})
    if accounting_note:
        from .slurm_cluster import query_cluster

        try:
            if not query_cluster(timeout_s).accounting:
                view.note = ("no SLURM accounting here: jobs that left the queue show no scheduler state; the run "
                             "folders are the truth for them")
        except NPASError:
            view.note = "no SLURM controller reachable: states from the run folders only"
    return view


def merge(folder_state: str, detail: str, jobs: list[SlurmJob]) -> tuple[str, str]:
    """(state, detail) of a run from its folder's (state, detail) and every job submitted for it."""
    holding = [j for j in jobs if j.holds]
    if not holding:
        return folder_state, detail
    named = "; ".join(j.describe() for j in holding)
    if folder_state in ("done", "diverged"):
        return folder_state, f"{detail}; still held by {named} (it ends at once: the run is finished)".lstrip("; ")
    running = [j for j in holding if j.active]
    if running:
        others = [j for j in holding if not j.active]
        return "running", "; ".join(x for x in (f"SLURM {running[0].describe()}", _progress(folder_state, detail),
                                                 ("also " + "; ".join(j.describe() for j in others)) if others else "",
                                                 ("also " + "; ".join(j.describe() for j in running[1:]))
                                                 if len(running) > 1 else "") if x)
    return "queued", "; ".join(x for x in (f"SLURM {named}", _progress(folder_state, detail)) if x)


def _progress(folder_state: str, detail: str) -> str:
    """What the folder adds to a queued/running state: the epoch reached, where it resumes, or a failure."""
    if folder_state in ("running", "interrupted"):
        return detail
    if folder_state in ("failed", "blocked", "bad record"):
        return f"previous attempt {folder_state}: {detail}" if detail else f"previous attempt {folder_state}"
    return ""


def jobs_json(jobs: list[SlurmJob]) -> list[dict[str, Any]]:
    return [j.to_dict() for j in jobs]
