"""The grid's task: the one small, importable callable every executor runs.

``run_task(results, task_id)`` gets only the results folder and an id -- a run id, or ``phase:<key>``
for a shared phase -- and reads the rest from the manifest. The local executor starts it as
``python -m npasbench.grid.task RESULTS ID``, the debug executor calls it in-process, and a SLURM
array task (part 2) will call the same function. Exit codes: 0 completed, 4 diverged, 75 preempted
(resumable), 3 blocked by a failed phase, 5 another process holds the run, 2 bad config, 1 error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Iterator

from ..atomic import write_json
from ..config import build_config
from ..errors import FolderBusy, NPASError
from ..storage import folder_lock
from ..trainer.history import append_event
from ..trainer.signals import PreemptionFlag, note_signal
from ..trainer.signals import StopRequested as Stopped
from ..experiment import resolve
from .manifest import PHASES, Manifest
from ..method_code import code_change
from ..run_folder import RunFolder
from .state import current_record, finished_record, process_start, read_json
from .supersede import supersede

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_BLOCKED, EXIT_DIVERGED, EXIT_BUSY, EXIT_PREEMPTED = 0, 1, 2, 3, 4, 5, 75


TASK_LOCK_WAIT_S = 30.0  # a requeued task may start while the previous one still writes its checkpoint


def _stop(signum: int, frame: object) -> None:
    note_signal(signum)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_handlers() -> Iterator[None]:
    """SIGTERM/SIGUSR1/SIGUSR2 raise ``Stopped`` while inside (outside the trainer, which installs its own);
    the previous handlers come back afterwards."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in PreemptionFlag.SIGNALS:
            previous[s] = signal.signal(s, _stop)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _record_failure(path: Path, exc: BaseException, label: str) -> None:
    """``path`` (failed.json of a run or a phase): the error's last line and traceback; also to stderr."""
    print(f"{label}: {_error_text(exc)}", file=sys.stderr)
    try:
        write_json(path, {"error": _error_text(exc), "traceback": traceback.format_exc(), "at": _now()})
    except NPASError as again:  # e.g. the disk that failed the run is still full: the log line above remains
        print(f"{label}: could not record the failure either: {again}", file=sys.stderr)


def run_task(results: str | Path, task_id: str, threads: int = 0) -> int:
    results = Path(results).resolve()
    manifest = Manifest.load(results)
    if task_id.startswith("phase:"):
        return _phase_task(results, manifest, task_id.split(":", 1)[1], threads)
    return _run(results, manifest, task_id, threads)


def _overrides(results: Path, folder: Path, threads: int) -> dict:
    o = {"run.out": str(folder), "run.phase_dir": str(results / PHASES), "run.progress": False}
    if threads > 0:
        o["train.threads"] = threads
    return o


def _run(results: Path, manifest: Manifest, rid: str, threads: int) -> int:
    from ..trainer import train

    if rid not in manifest.runs:
        print(f"grid task: run {rid} is not in {results / 'grid.json'}", file=sys.stderr)
        return EXIT_CONFIG
    entry = manifest.runs[rid]
    run_dir = results / entry.folder
    folder = RunFolder(run_dir)
    if int(os.environ.get("RANK", "0") or 0) > 0:
        return _follower(results, manifest, rid, threads)
    try:  # the handlers first: a signal while waiting for the lock or writing a marker is a clean stop too
        with stop_handlers(), folder_lock(run_dir, wait_s=TASK_LOCK_WAIT_S):
            done = finished_record(run_dir, rid)
            if done is not None:
                change = code_change(done)
                if change is None:
                    return EXIT_OK  # finished meanwhile (a cache hit)
                moved = supersede(run_dir, done, change)  # stale: the runner chose to run it again
                print(f"grid task {rid}: {change}; the old run moved to {moved}", file=sys.stderr)
            for key in entry.phases:
                job = manifest.phases[key]
                failure = read_json(results / job.failure)
                if failure is not None:
                    folder.mark_blocked({"reason": f"phase {job.method}/{job.phase} {key} failed: "
                                                   f"{failure.get('error', '')}", "at": _now()})
                    return EXIT_BLOCKED
            folder.clear_failure_markers()
            epochs = entry.config.get("train", {}).get("epochs")
            folder.mark_running({"host": platform.node(), "pid": os.getpid(), "pid_start": process_start(),
                                 "started": _now(), "epochs": epochs})
            try:
                experiment = resolve(build_config(entry.config, _overrides(results, run_dir, threads)))
                if experiment.run_id != rid:
                    raise NPASError(f"run {rid}: its config now resolves to {experiment.run_id} (the code or a "
                                    "method's defaults changed since the grid was planned); re-plan the grid.")
                result = train(experiment, lock=False)  # this task holds the folder's lock; resolved once, above
            except Stopped:
                print(f"grid task {rid}: stopped by a signal before or after training; resumable", file=sys.stderr)
                return EXIT_PREEMPTED
            except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then re-raised or coded
                if isinstance(exc, KeyboardInterrupt):
                    raise
                _record_failure(folder.failed, exc, f"grid task {rid}")
                append_event(run_dir, "failed", error=_error_text(exc).splitlines()[-1][:300])
                return EXIT_CONFIG if isinstance(exc, NPASError) else EXIT_ERROR
            finally:
                folder.clear_running()
            return result.exit_code
    except FolderBusy as exc:
        print(f"grid task {rid}: {exc}; not started twice", file=sys.stderr)
        return EXIT_BUSY
    except Stopped:  # outside training: between markers, in the lock wait, or in a clean-up
        folder.clear_running()
        print(f"grid task {rid}: stopped by a signal outside training; resumable", file=sys.stderr)
        return EXIT_PREEMPTED


def _follower(results: Path, manifest: Manifest, rid: str, threads: int) -> int:
    """A DDP rank other than 0 (a multi-task SLURM job): it trains alongside rank 0 and writes nothing of
    its own; rank 0 holds the lock and writes the markers, the record and any failure. Its decisions
    (finished, blocked) read the same files as rank 0's, so both ranks take the same branch."""
    from ..trainer import train

    entry = manifest.runs[rid]
    run_dir = results / entry.folder
    try:
        with stop_handlers():
            if current_record(run_dir, rid) is not None:
                return EXIT_OK
            if any(read_json(results / manifest.phases[k].failure) is not None for k in entry.phases):
                return EXIT_BLOCKED
            cfg = build_config(entry.config, _overrides(results, run_dir, threads))
            return train(cfg, lock=False).exit_code
    except Stopped:
        return EXIT_PREEMPTED
    except NPASError as exc:
        print(f"grid task {rid} (rank {os.environ.get('RANK')}): {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _phase_task(results: Path, manifest: Manifest, key: str, threads: int) -> int:
    from ..trainer.phase import run_shared_phase, shared_work_dir

    if key not in manifest.phases:
        print(f"grid task: phase {key} is not in {results / 'grid.json'}", file=sys.stderr)
        return EXIT_CONFIG
    job = manifest.phases[key]
    phase_dir = results / PHASES
    try:
        with stop_handlers(), folder_lock(shared_work_dir(phase_dir, job.method, job.phase, key),
                                          wait_s=TASK_LOCK_WAIT_S, field="run.phase_dir"):
            (results / job.failure).unlink(missing_ok=True)
            cfg = build_config(job.config, _overrides(results, phase_dir, threads))
            try:
                run_shared_phase(cfg, job.phase, phase_dir)
            except Stopped:
                print(f"grid phase {key}: stopped by a signal; it runs again from its start", file=sys.stderr)
                return EXIT_PREEMPTED
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                _record_failure(results / job.failure, exc, f"grid phase {key}")
                return EXIT_ERROR
            return EXIT_OK
    except FolderBusy as exc:
        print(f"grid phase {key}: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except Stopped:
        print(f"grid phase {key}: stopped by a signal; it runs again from its start", file=sys.stderr)
        return EXIT_PREEMPTED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.grid.task", description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("task_id", help="a run id, or phase:<key>")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    return run_task(a.results, a.task_id, a.threads)


if __name__ == "__main__":
    sys.exit(main())
