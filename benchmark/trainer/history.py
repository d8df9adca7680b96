"""A run's history (``<run folder>/history.jsonl``): every start, stop, resume, requeue and end, in order.

Why: a result that took a week of preemptions should say how it came to be. The record holds only the
end (``resumed_from`` is the last checkpoint it resumed from; SLURM's restart count restarts at 0 with
every new job), so each process that works on a run appends one line per event here, and the record
copies the whole list (``record["history"]``). Events (``kind``):

- ``start``: a process claimed the run folder (host, pid, and under SLURM job id, node, restart count);
- ``lost``: written at a start when the previous process's last event was a ``start`` or ``resume``: it
  ended without a word (``kill -9``, a node failure, the OOM killer); what it was is in ``previous``;
- ``resume``: training continues from a checkpoint (its file, epoch in progress, batch, global step);
- ``stop``: a signal stopped the run (signals, where: training with the checkpoint written, or a stage
  before training); ``requeue``: the scheduler takes the run up again (by submitit or by slurmctld);
- ``failed``: the grid task recorded an error (its last line); ``end``: the record was written (status);
- ``superseded``: the run's earlier, finished run was made by other method code and was moved aside
  (``moved_to``, below the run folder) to run again (``grid.supersede``).

Every line is one ``write`` of a short JSON object to a file opened with ``O_APPEND`` (lines of different
processes never interleave); a reader skips a torn or foreign line instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from ..run_folder import HISTORY  # the file's name, beside the run folder's others

OPEN_KINDS = ("start", "resume")  # a process that last said one of these is still working (or was lost)


def scheduler_context() -> dict[str, Any]:
    """Where this process runs: host and pid, and under SLURM the job, its node and restart count."""
    out: dict[str, Any] = {"host": platform.node(), "pid": os.getpid()}
    env = os.environ
    if "SLURM_JOB_ID" in env:
        array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        out["slurm"] = {"job": f"{array}_{task}" if array and task else env["SLURM_JOB_ID"],
                        "job_id": env["SLURM_JOB_ID"], "node": env.get("SLURMD_NODENAME", ""),
                        "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0)}
    return out


def append_event(run_dir: str | Path, kind: str, **fields: Any) -> dict[str, Any]:
    """Append one event (with the time and ``scheduler_context``) and return it. Never raises for a folder
    that cannot take it (the history is a report; the run's own writes say when a disk is unusable)."""
    event = {"kind": kind, "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             **scheduler_context(), **fields}
    line = (json.dumps(event, default=str) + "\n").encode("utf-8")
    try:
        fd = os.open(Path(run_dir) / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass
    return event


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable event, oldest first (a missing file is an empty history)."""
    from ..reading import LOG_CAP, UnreadableFile, read_capped

    try:
        text = read_capped(Path(run_dir) / HISTORY, LOG_CAP).decode("utf-8", errors="replace")
    except (OSError, UnreadableFile):
        return []
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("kind"), str):
            events.append(event)
    return events


def note_start(run_dir: str | Path) -> dict[str, Any]:
    """The ``start`` event, preceded by a ``lost`` one when the previous process never said how it ended."""
    events = read_history(run_dir)
    if events and events[-1]["kind"] in OPEN_KINDS:
        last = events[-1]
        append_event(run_dir, "lost", previous={k: last.get(k) for k in ("kind", "at", "host", "pid", "slurm")
                                                if k in last})
    return append_event(run_dir, "start")


def last_checkpoint(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest event that names a checkpoint (a ``stop`` in training, or a ``resume``)."""
    for event in reversed(events):
        if event.get("checkpoint"):
            return event
    return None


def describe_checkpoint(event: dict[str, Any] | None) -> str:
    """"epoch 3 step 114/390" for a mid-epoch checkpoint, "after epoch 2" at an epoch's end."""
    if not event:
        return ""
    epoch, batch, per_epoch = event.get("epoch"), event.get("batch"), event.get("steps_per_epoch")
    if not isinstance(epoch, int) or not isinstance(batch, int):
        return ""
    if batch == 0:
        return f"after epoch {epoch}"
    return f"epoch {epoch + 1} step {batch}" + (f"/{per_epoch}" if isinstance(per_epoch, int) else "")


def slurm_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the whole history: every SLURM job that started the run, and how often the run was started
    again under SLURM (a requeue, a preemption, a resubmission after a cancel or a crash all count)."""
    jobs: list[str] = []
    starts = 0
    for event in events:
        slurm = event.get("slurm")
        if event["kind"] == "start" and isinstance(slurm, dict):
            starts += 1
            if slurm.get("job") not in jobs:
                jobs.append(str(slurm.get("job")))
    return {"jobs": jobs, "restarts": max(0, starts - 1)}
