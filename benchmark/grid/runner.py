"""Plan, run and inspect a grid on a workstation.

``plan_grid`` expands a spec and writes the manifest (nothing trains); ``run_grid`` starts every run
that is not finished, shared phases first, at most ``parallel`` at a time, and can be stopped and
started again at any point: a finished run is a cache hit, an interrupted one resumes from its
checkpoint (``run.resume=auto``), a failed one is retried. ``grid_status`` reads the folders only.
One runner per results folder at a time (``<results>/.runner.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from ..atomic import write_json
from ..errors import ConfigError
from ..experiment import digest
from ..plugins import create_method
from ..trainer.phase import shared_phase_key
from .compute import GridCost, format_hours, grid_cost
from .executor_factory import make_executor
from .executors import Executor, Running, Task
from .expand import GridRun, Previewer, expand
from .manifest import PHASES, Manifest, PhaseJob, RunEntry
from .queue import QueueView, merge, queue_view
from .spec import GridSpec, load_spec
from .state import STATES, current_record, epochs_done, finished_record, process_start, read_json, run_state, runner_queue
from .task import EXIT_BLOCKED, EXIT_BUSY, EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED


@dataclass
class Plan:
    spec: GridSpec
    runs: list[GridRun]
    manifest: Manifest
    previews: Previewer | None = None  # the models the budget check built (plan's table and cost reuse them)
    held: dict[str, list[str]] = field(default_factory=dict)  # submit: run id -> the live jobs that hold it
    max_array_source: str = ""  # submit: where MaxArraySize came from (the spec, the cluster, SLURM's default)

    @property
    def results(self) -> Path:
        return self.spec.results


def _phase_jobs(runs: list[GridRun]) -> tuple[dict[str, PhaseJob], dict[str, list[str]]]:
    """Shared phases: one job per distinct phase input (method-declared), and each run's keys."""
    from ..experiment import config_request

    jobs: dict[str, PhaseJob] = {}
    needs: dict[str, list[str]] = {}
    for run in runs:
        cfg = run.config
        method = create_method(cfg.method.name, cfg.method.options)
        request = config_request(cfg)
        keys = []
        for phase in method.phases(request)[:1]:  # only a first phase can run on its own
            key = shared_phase_key(method, phase.name, cfg)
            if key is None:
                continue
            job = jobs.setdefault(key, PhaseJob(key, method.name, phase.name, cfg.to_dict()))
            job.runs.append(run.run_id)
            keys.append(key)
        needs[run.run_id] = keys
    return jobs, needs


def plan_grid(spec_path: str | Path, results: str | Path | None = None, write: bool = False) -> Plan:
    """The grid's runs and manifest. ``write``: also save the manifest (``<results>/grid.json``), which
    ``grid run`` and ``grid submit`` do before their tasks start and ``grid plan`` only with ``--save``;
    planning alone leaves no file and no folder behind."""
    spec = load_spec(spec_path, results)
    previews = Previewer()
    runs = expand(spec, previews=previews)
    jobs, needs = _phase_jobs(runs)
    old = None
    if (spec.results / "grid.json").is_file():
        try:
            old = Manifest.load(spec.results)
        except ConfigError:
            old = None
    manifest = Manifest(
        name=spec.name, spec=portable_path(spec.path), spec_digest=digest(spec.text),
        runs={r.run_id: RunEntry(r.run_id, r.folder, r.config.to_dict(),
                                 {"method": r.method, "variant": r.variant, "arch": r.arch, "dataset": r.dataset,
                                  "budget": r.budget, "seed": r.seed}, needs[r.run_id]) for r in runs},
        phases=jobs, launches=list(old.launches) if old else [])
    if write:
        from ..storage import probe_writable

        probe_writable(spec.results, "grid.results")  # one line for a read-only or unwritable folder
        with RunnerLock(spec.results, "npas grid plan --save"):
            manifest.save(spec.results)
    return Plan(spec, runs, manifest, previews)


def portable_path(path: Path) -> str:
    """``path`` relative to the repository that holds it (the nearest parent with ``.git`` or ``pyproject.toml``),
    so a committed grid.json names its spec the same on every checkout; absolute when no repository holds it."""
    path = Path(path).resolve()
    for parent in path.parents:
        if (parent / ".git").exists() or (parent / "pyproject.toml").is_file():
            return path.relative_to(parent).as_posix()
    return str(path)


# -- the table of runs (plan and status) ----------------------------------------------------------
def plan_rows(plan: Plan, previews: Previewer | None = None, cost: GridCost | None = None) -> list[dict[str, Any]]:
    previews = previews or plan.previews or Previewer()
    queued = runner_queue(plan.results)
    cost = cost or plan_cost(plan, previews)
    rows = []
    for r in plan.runs:
        p = previews.get(r)
        state, detail = run_state(plan.results / r.folder, r.run_id, queued)
        rows.append({
            "run id": r.run_id[:10], "method": r.method if r.variant == "default" else f"{r.method} [{r.variant}]",
            "arch": r.arch, "dataset": r.dataset, "budget": r.budget,
            "unique params": (f"{p.params:,}" + (" (stand-in)" if p.note else "")) if p.params is not None else f"({p.note})",
            "GFLOPs": f"{p.gflops:.4f}" if p.gflops is not None else "",
            "seed": r.seed, "epochs": r.config.train.epochs, "est. GPU-h": format_hours(cost.runs[r.run_id]),
            "state": state + (f" ({detail})" if detail else ""),
        })
    return rows


def plan_cost(plan: Plan, previews: Previewer | None = None) -> GridCost:
    """The grid's estimated GPU-hours at its spec's ``resources.gpu_tflops`` (``compute``: FLOP arithmetic)."""
    previews = previews or plan.previews or Previewer()
    return grid_cost(plan.runs, lambda r: previews.get(r).gflops, plan.spec.resources.gpu_tflops)


def status_rows(plan: Plan, view: QueueView | None = None) -> tuple[list[dict[str, Any]], Counter]:
    """One row per run: the folder's state, joined with every SLURM job that holds it when ``view`` is given."""
    return _rows(plan.results, [(r.run_id, r.folder) for r in plan.runs], view)


def _rows(results: Path, runs: list[tuple[str, str]], view: QueueView | None) -> tuple[list[dict[str, Any]], Counter]:
    queued = runner_queue(results)
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for rid, folder in runs:
        state, detail = run_state(results / folder, rid, queued)
        row: dict[str, Any] = {"run id": rid[:10], "run": folder}
        if view is not None and view.submitted:
            jobs = view.jobs.get(rid, [])
            state, detail = merge(state, detail, jobs)
            row["slurm jobs"] = [j.to_dict() for j in jobs]
        counts[state] += 1
        rows.append({**row, "state": state, "detail": detail})
    return rows, counts


@dataclass
class GridStatus:
    """``npas grid status``: one row per run, counts by state (they add up to the runs), and the scheduler
    view's note (why it may be partial). Unpacks as ``rows, counts``."""

    rows: list[dict[str, Any]]
    counts: Counter
    note: str = ""

    def __iter__(self):
        return iter((self.rows, self.counts))

    @property
    def unsettled(self) -> int:
        """Runs that are still queued or running (``--watch`` refreshes until there are none)."""
        return self.counts.get("queued", 0) + self.counts.get("running", 0)


def grid_status(spec_path: str | Path, results: str | Path | None = None, scheduler: bool = False) -> GridStatus:
    """States of every run, from the manifest when it matches the spec (reads files only: no model is
    built, no lock is taken, so it never blocks); otherwise the spec is expanded first. ``scheduler``: join
    every SLURM job submitted for a run (one bounded ``squeue`` call, ``queue.queue_view``)."""
    spec = load_spec(spec_path, results)
    view = queue_view(spec.results) if scheduler else None
    note = view.note if view is not None else ""
    manifest = None
    if (spec.results / "grid.json").is_file():
        try:
            manifest = Manifest.load(spec.results)
        except ConfigError:
            manifest = None
    if manifest is None or manifest.spec_digest != digest(spec.text):
        return GridStatus(*status_rows(plan_grid(spec_path, results, write=False), view), note)
    return GridStatus(*_rows(spec.results, [(rid, e.folder) for rid, e in manifest.runs.items()], view), note)


def summary_line(counts: Counter, total: int) -> str:
    """"12 runs: 2 done, ..., 10 queued, ..." -- every state, so the counts add up to the total."""
    return f"{total} runs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)


# -- running ------------------------------------------------------------------------------------
class RunnerLock:
    """The results folder's one lock: every command that writes the grid's manifest or runs its tasks holds
    it (``grid run`` for its whole run; ``plan --save``, ``submit``, ``resubmit`` while they write), never a
    reader (``status``, ``collect``). Stale after a crash: the kernel drops an flock with its process. The lock
    file names its holder (command, pid, host) for the next one's message."""

    def __init__(self, results: Path, command: str = "npas grid run") -> None:
        self.path = Path(results) / ".runner.lock"
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> "RunnerLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            info = read_json(self.path) or read_json(self.path.parent / "runner.json") or {}
            holder = info.get("command", "npas grid run")
            raise ConfigError(f"grid.results {self.path.parent}: `{holder}` (pid {info.get('pid', '?')} on "
                              f"{info.get('host', '?')}) holds this results folder; `{self.command}` waits for nobody: "
                              "run it again when that one is done, or stop it first.") from None
        with contextlib.suppress(OSError):  # advisory: who holds it
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps({"command": self.command, "pid": os.getpid(),
                                           "host": platform.node()}).encode(), 0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)


@dataclass
class GridOutcome:
    """How a ``run_grid`` call ended: the plan it ran, every run's (state, detail), counts by state."""

    plan: Plan
    rows: list[dict[str, Any]]
    counts: Counter
    total: int
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.counts.get("failed", 0) == 0 and self.counts.get("blocked", 0) == 0


class Progress:
    """Runs done/total with the current runs and their epochs (a bar on a terminal, a line every
    ``LOG_EVERY_S`` otherwise; ``enabled=False`` drops both), and one line per event in every case."""

    LOG_EVERY_S = 30.0

    def __init__(self, total: int, done: int, enabled: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.total = total
        self.done = done
        self.bar = tqdm(total=total, initial=done, desc="grid", unit="run", file=self.stream, dynamic_ncols=True,
                        disable=not self.tty)
        self.last = time.monotonic()

    def event(self, text: str) -> None:
        """One line per start and end, always (``--no-progress`` drops only the bar and the periodic lines)."""
        if self.tty:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self) -> None:
        self.done += 1
        self.bar.update(1)

    def refresh(self, active: list[Running], results: Path, folders: dict[str, str], epochs: dict[str, int]) -> None:
        """Terminal: the bar's postfix every second. Log file: one line every ``LOG_EVERY_S`` seconds."""
        every = 1.0 if self.tty else self.LOG_EVERY_S
        if not self.enabled or time.monotonic() - self.last < every:
            return
        self.last = time.monotonic()
        parts = []
        for r in active:
            folder = folders.get(r.task.task_id)
            parts.append(f"{r.task.label} epoch {epochs_done(results / folder)}/{epochs.get(r.task.task_id, '?')}"
                         if folder else r.task.label)
        text = "; ".join(parts)
        if self.tty:
            self.bar.set_postfix_str(text[:200])
        else:
            print(f"[{self.done}/{self.total} done] running: {text or 'none'}", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


def run_grid(spec_path: str | Path, executor: str = "local", parallel: int = 0, results: str | Path | None = None,
             progress: bool = True, stop_after: Callable[[Counter], bool] | None = None,
             keep_stale: bool = False) -> GridOutcome:
    """Run every unfinished run of the grid, and every stale one (finished by other method code than is installed
    now: ``method_code``) unless ``keep_stale``; returns the final counts by state."""
    plan = plan_grid(spec_path, results, write=False)
    res = plan.results
    ex = make_executor(executor, res.resolve(), parallel or plan.spec.resources.max_parallel,  # checked first
                       plan.spec.resources, plan.spec.name)
    from ..storage import probe_writable

    probe_writable(res, "grid.results")  # a read-only or unwritable folder: one line, before anything
    with RunnerLock(res):
        manifest = plan.manifest
        todo = [r for r in plan.runs if current_record(res / r.folder, r.run_id, keep_stale) is None]
        stale = sum(1 for r in todo if finished_record(res / r.folder, r.run_id) is not None)
        manifest.note_launch(ex.name, ex.parallel, [r.run_id for r in todo])
        manifest.save(res)
        folders = {r.run_id: r.folder for r in plan.runs}
        total = len(plan.runs)
        bar = Progress(total, total - len(todo), progress)
        again = f"({stale} stale: finished by other method code, run again; --keep-stale keeps them) " if stale else ""
        bar.event(f"grid {plan.spec.name}: {total} runs, {total - len(todo)} already finished, {len(todo)} to run "
                  f"{again}({ex.name} executor, {ex.parallel} at a time); results in {res}")
        from .expand import star_left_out

        for line in star_left_out(plan.spec):
            bar.event(line)
        try:
            _schedule(plan, ex, todo, bar, folders, stop_after)
        except KeyboardInterrupt:
            bar.close()
            return GridOutcome(plan, *status_rows(plan), total, interrupted=True)
        finally:
            (res / "runner.json").unlink(missing_ok=True)
        bar.close()
        return GridOutcome(plan, *status_rows(plan), total)


def _schedule(plan: Plan, ex: Executor, todo: list[GridRun], bar: Progress, folders: dict[str, str],
              stop_after: Callable[[Counter], bool] | None) -> Counter:
    res = plan.results
    manifest = plan.manifest
    events: Counter = Counter()
    epochs = {r.run_id: r.config.train.epochs for r in plan.runs}
    # shared phases still missing, for the runs still to do
    wanted = {k for r in todo for k in manifest.runs[r.run_id].phases}
    phase_queue = [k for k in manifest.phases if k in wanted and not (res / manifest.phases[k].artifact).is_file()]
    for k in phase_queue:
        (res / manifest.phases[k].failure).unlink(missing_ok=True)  # a failed phase is retried, never a cache hit
    waiting = list(todo)
    active: list[Running] = []
    pending_phases = set(phase_queue)
    free_slots = list(range(ex.parallel))

    def write_runner_state() -> None:
        write_json(res / "runner.json", {"host": platform.node(), "pid": os.getpid(), "pid_start": process_start(),
                                         "executor": ex.name,
                                         "queued": [r.run_id for r in waiting] + [f"phase:{k}" for k in phase_queue],
                                         "active": [a.task.task_id for a in active]})

    def start(task: Task) -> None:
        slot = free_slots.pop(0)
        bar.event(f"start  {task.label}")
        active.append(ex.start(task, slot))
        write_runner_state()

    write_runner_state()
    try:
        while waiting or phase_queue or active:
            # phases first; a run starts once every phase it needs has its artifact
            while free_slots and phase_queue:
                k = phase_queue.pop(0)
                job = manifest.phases[k]
                start(Task(f"phase:{k}", f"phase {job.method}/{job.phase} {k[:8]}", res / PHASES / f"{k}.log"))
            for r in list(waiting):
                if not free_slots:
                    break
                needs = manifest.runs[r.run_id].phases
                if any(k in pending_phases for k in needs):
                    continue
                waiting.remove(r)
                start(Task(r.run_id, r.folder, res / r.folder / "task.log"))
            for a in list(active):
                code = ex.poll(a)
                if code is None:
                    continue
                active.remove(a)
                free_slots.append(a.slot)
                free_slots.sort()
                _finished(plan, a, code, bar, events, pending_phases)
                write_runner_state()
            if stop_after is not None and stop_after(events):
                raise KeyboardInterrupt
            bar.refresh(active, res, folders, epochs)
            if active:
                time.sleep(0.2)
            elif waiting and not phase_queue and all(any(k in pending_phases for k in manifest.runs[r.run_id].phases)
                                                     for r in waiting):
                break  # pragma: no cover - every waiting run needs a phase that is neither queued nor running
    except KeyboardInterrupt:
        bar.event(f"stopping: {len(active)} running task(s) checkpoint and exit; `npas grid run` again resumes them")
        ex.stop(active)
        raise
    return events


def _finished(plan: Plan, a: Running, code: int, bar: Progress, events: Counter, pending_phases: set[str]) -> None:
    res = plan.results
    tid = a.task.task_id
    secs = time.monotonic() - a.started
    if tid.startswith("phase:"):
        key = tid.split(":", 1)[1]
        pending_phases.discard(key)
        job = plan.manifest.phases[key]
        if code == EXIT_OK:
            events["phase done"] += 1
            bar.event(f"done   {a.task.label} ({secs:.1f} s)")
        elif code == EXIT_PREEMPTED:
            events["preempted"] += 1
            bar.event(f"paused {a.task.label}: stopped by a signal; it runs again on the next `npas grid run`")
        else:
            events["phase failed"] += 1
            err = (read_json(res / job.failure) or {}).get("error", f"exit status {code}")
            bar.event(f"FAILED {a.task.label}: {err} (its {len(job.runs)} run(s) are blocked; see {a.task.log})")
        return
    entry = plan.manifest.runs[tid]
    state, detail = run_state(res / entry.folder, tid)
    if code in (EXIT_OK, EXIT_DIVERGED) and state in ("done", "diverged"):
        events[state] += 1
        bar.advance()
        bar.event(f"{'done  ' if state == 'done' else 'DIVERGED'} {a.task.label} {detail} ({secs:.1f} s)")
    elif code == EXIT_PREEMPTED:
        events["preempted"] += 1
        bar.event(f"paused {a.task.label}: checkpointed, resumes on the next `npas grid run`")
    elif code == EXIT_BLOCKED:
        events["blocked"] += 1
        bar.event(f"BLOCKED {a.task.label}: {detail}")
    elif code == EXIT_BUSY:
        events["busy"] += 1
        bar.event(f"busy   {a.task.label}: another process holds its folder; left alone")
    else:
        events["failed"] += 1
        bar.event(f"FAILED {a.task.label}: {detail or f'exit status {code}'} (log: {a.task.log})")
