"""A grid run's state, read from its folder alone (so ``npas grid status`` never blocks).

Markers, each written atomically: ``result.json`` (the trainer's record), ``running.json`` (the task,
while it runs: host and pid), ``failed.json`` (the task, on an error: its last line and traceback),
``blocked.json`` (the runner, when a phase the run needs failed). A ``result.json`` that cannot be
used (``records.read_record``) is the state ``bad record``, with what is wrong, and the run is rerun. ``<results>/runner.json`` says
which runs a live runner has queued. A finished run is one whose valid ``result.json`` holds the same
run id and record schema and a final status; a failed one is never treated as finished. A finished run whose
record was made by other method code than is installed now (``method_code``) is ``stale``: shown, and run again
unless kept (``--keep-stale``).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

from ..method_code import code_change
from ..records import Record, read_json_object
from ..run_folder import RunFolder
from ..trainer.history import describe_checkpoint, last_checkpoint, read_history
STATES = ("done", "diverged", "stale", "running", "queued", "bad record", "failed", "blocked", "interrupted", "not started")


read_json = read_json_object  # the grid's markers (runner.json, running.json, failed.json, blocked.json)


def finished_record(run_dir: Path, run_id: str) -> Record | None:
    """The run's record if it finished (completed or diverged) as this run id, else None (a damaged record
    included: ``records.read_record`` checks it; one of an earlier schema is migrated)."""
    rec, _ = RunFolder(run_dir).read_record()
    if rec is None or rec.run_id != run_id:
        return None
    return rec if rec.final else None


def current_record(run_dir: Path, run_id: str, keep_stale: bool = False) -> Record | None:
    """The run's finished record if the method code installed now made it (``method_code.code_change``), or
    ``keep_stale``; else None: the grid runs it again (``grid.task`` moves the old run aside first)."""
    rec = finished_record(run_dir, run_id)
    if rec is None or keep_stale or code_change(rec) is None:
        return rec
    return None


def process_start(pid: int | None = None) -> str | None:
    """An identity of a process that a reused pid does not share: this boot's id and the process's start time
    (clock ticks after boot, /proc/<pid>/stat field 22); None where /proc cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def flock_holders(path: Path) -> set[int] | None:
    """The pids holding an ``flock`` on ``path`` (``/proc/locks``: "1: FLOCK  ADVISORY  WRITE <pid>
    <major>:<minor>:<inode> 0 EOF"; waiters, marked "->", are not holders); None where it cannot tell."""
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev and parts[4].isdigit():
            holders.add(int(parts[4]))
    return holders


def pid_alive(host: str | None, pid: Any, start: Any = None, lock: Path | None = None) -> bool:
    """The marker's process is alive: same host, the pid exists, (when the marker names it) the process
    started when the marker says -- an unrelated process that reuses the pid does not count -- and (given
    ``lock``) it holds that lock file's flock, where ``/proc/locks`` can tell."""
    if host != platform.node() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if isinstance(start, str) and process_start(pid) != start:
        return False
    if lock is not None:
        holders = flock_holders(lock)
        return holders is None or pid in holders
    return True


def running_marker(run_dir: Path) -> tuple[dict[str, Any] | None, bool]:
    """(running.json, whether its process is alive and holds the run folder's lock): read and judged once."""
    folder = RunFolder(run_dir)
    running = folder.read_running()
    live = running is not None and pid_alive(running.get("host"), running.get("pid"), running.get("pid_start"),
                                           folder.lock)
    return running, live


def runner_queue(results: Path) -> dict[str, str]:
    """Run ids a live runner holds (empty if no runner is alive): "queued" (waiting for a slot) or "starting"
    (its task is launched and has not yet claimed the run folder: without it a run would read "not started"
    for the seconds its process takes to import)."""
    info = read_json(Path(results) / "runner.json")
    if not info or not pid_alive(info.get("host"), info.get("pid"), info.get("pid_start"),
                                 Path(results) / ".runner.lock"):
        return {}
    return {**{t: "queued" for t in info.get("queued", [])}, **{t: "starting" for t in info.get("active", [])}}


def run_state(run_dir: Path, run_id: str, queued: dict[str, str] | None = None) -> tuple[str, str]:
    """(state, detail) of one run; detail is e.g. the failure's last line or the epoch reached."""
    folder = RunFolder(run_dir)
    rec = finished_record(run_dir, run_id)
    changed = code_change(rec) if rec is not None else None
    if rec is not None and changed is None:
        if rec.status == "diverged":
            at = rec.get("diverged_at") or {}
            return "diverged", f"epoch {at.get('epoch', '?')}, loss {at.get('loss', '?')}"
        return "done", f"top1 {rec.top1:.2f}" if rec.top1 is not None else ""
    running, live = running_marker(run_dir)
    if running and live:
        return "running", f"epoch {epochs_done(run_dir)}/{running.get('epochs', '?')}"
    if queued and run_id in queued:
        return ("running", "starting") if queued[run_id] == "starting" else ("queued", "")
    if changed is not None:  # finished, by other code than is installed now: `grid run` runs it again
        return "stale", f"{changed}; `npas grid run` runs it again (--keep-stale keeps it)"
    _, problem = folder.read_record()
    if problem is not None:  # reported, and rerun (the rerun resumes and writes a good record)
        return "bad record", problem.problem
    if folder.read_failed():
        return "failed", folder.failure_line()
    blocked = folder.read_blocked()
    if blocked:
        return "blocked", str(blocked.get("reason", ""))
    # a marker whose process is gone, or is another process under a reused pid
    stale = f"stale running.json (pid {running.get('pid')} on {running.get('host')} is not its process)" \
        if running else ""
    if folder.has_checkpoints():
        return "interrupted", "; ".join(x for x in (interruption(run_dir), stale) if x)
    return "not started", stale


def interruption(run_dir: Path) -> str:
    """How an interrupted run stands: where its newest checkpoint is (epoch and step) and how the last
    process ended (a stop by a signal, or lost: killed without a word)."""
    events = read_history(run_dir)
    names = [p.name for p in RunFolder(run_dir).checkpoints.glob("ckpt-e*-s*.pt")]
    newest = max(names, default="")
    event = last_checkpoint(events)
    if event is not None and event.get("checkpoint") == newest:
        where = describe_checkpoint(event)
    else:  # an epoch-end checkpoint (the history names only the checkpoints of stops and resumes)
        m = re.match(r"ckpt-e(\d+)-s(\d+)\.pt$", newest)
        where = f"after epoch {int(m.group(1))}" if m else f"epoch {epochs_done(run_dir)}"
    last = events[-1] if events else {}
    how = {"stop": f"stopped by {'+'.join(last.get('signals') or ['a signal'])}", "lost": "its process was lost",
           "start": "its process was lost", "resume": "its process was lost"}.get(last.get("kind", ""), "")
    return f"resumable from {where}" + (f"; {how}" if how else "")


def epochs_done(run_dir: Path) -> int:
    """Training epochs logged in metrics.jsonl (cheap: the file holds a few lines per epoch)."""
    from ..reading import LOG_CAP, UnreadableFile, read_capped

    try:
        return read_capped(RunFolder(run_dir).metrics, LOG_CAP).count(b'"kind": "train"')
    except (OSError, UnreadableFile):
        return 0
