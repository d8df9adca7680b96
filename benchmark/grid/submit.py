"""``npas grid submit SPEC [--dry-run]``: a grid's unfinished runs as SLURM job arrays, through submitit.

- Runs already finished are not submitted (a cache hit); only run ids cross the pickle (``GridJob``).
- Shared phase jobs are one array; every training array that needs one of them depends on it with
  ``afterany`` (``afterok`` on a failed phase would leave dependents pending forever), and the task
  itself ends a run as ``blocked`` with the phase's error when the phase failed.
- Arrays are cut under the cluster's MaxArraySize (``resources.max_array_size``, else read from ``scontrol
  show config``), each indexed from 0; ``[resources]`` gives the sbatch parameters
  (``slurm_cluster.sbatch_parameters``).
- A run that a live job still holds is not submitted twice: ``submit`` refuses, naming the jobs (``--force``
  submits anyway); ``resubmit`` submits every unfinished run that no job holds.
- The results and submitit folders must be writable and, on a cluster of more than one node, not
  node-local.
- The code is fixed at submission: the jobs import a snapshot of the package (``code_snapshot``), so
  editing the checkout while they queue changes nothing; their records carry its digest and git sha.
- Submit and exit: ``<results>/slurm.json`` records every array (job id, its run ids, its parameters,
  the code snapshot and its git sha) for status, cancel and resubmit from a new shell.
- Timeouts are requeued at most ``[resources] max_timeouts`` times (submitit's ``max_num_timeout``).
- ``--dry-run`` prints the arrays and their exact parameters and submits nothing; it writes nothing and needs
  no cluster (MaxArraySize from the spec, the cluster if one answers, else SLURM's default 1001, said so).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NPASError
from ..storage import probe_writable
from .manifest import PHASES
from .runner import plan_grid
from .slurm_cluster import array_chunks, check_shared_folder, query_cluster, sbatch_parameters
from .queue import QueueView, queue_view, record_submission
from .slurm_cluster import SlurmUnavailable
from .state import current_record

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own default MaxArraySize: what a dry run without a cluster assumes


@dataclass
class ArrayPlan:
    kind: str  # "phase" | "train"
    task_ids: list[str]
    parameters: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)  # kinds of arrays this one waits for
    job_id: str | None = None


def _node_count(timeout_s: float = 15.0) -> int:
    r = subprocess.run(["sinfo", "-h", "-o", "%D"], capture_output=True, text=True, timeout=timeout_s)
    return sum(int(x) for x in r.stdout.split() if x.isdigit()) if r.returncode == 0 else 0


def max_array_size(spec_value: int, dry_run: bool) -> tuple[int, str]:
    """(MaxArraySize, where it came from). A submission asks the controller (unreachable: ``SlurmUnavailable``)
    and takes the spec's ``resources.max_array_size`` where it is set and not above the cluster's. A dry run
    takes the spec's value as it is, else the cluster's if one answers, else SLURM's default, and says so."""
    if spec_value and dry_run:
        return spec_value, "resources.max_array_size"
    try:
        cluster = query_cluster().max_array_size
    except SlurmUnavailable as exc:
        if not dry_run:
            raise
        return DEFAULT_MAX_ARRAY_SIZE, (f"SLURM's default MaxArraySize, {DEFAULT_MAX_ARRAY_SIZE} (no controller here: "
                                        f"{str(exc).split(';')[0]}; set resources.max_array_size to plan for another)")
    if spec_value and spec_value <= cluster:
        return spec_value, "resources.max_array_size"
    if spec_value:
        return cluster, f"the cluster's MaxArraySize, {cluster} (resources.max_array_size = {spec_value} is above it)"
    return cluster, "the cluster's MaxArraySize"


def plan_arrays(spec_path: str | Path, results: str | Path | None = None, only: set[str] | None = None,
                dry_run: bool = False, plan: Any = None, keep_stale: bool = False) -> tuple[Any, list[ArrayPlan], int]:
    """(grid plan, arrays to submit in order, MaxArraySize): checks the cluster and the folders first (a dry
    run checks nothing it would write, and needs no cluster). ``only``: restrict to these run ids. A stale run
    (finished by other method code than is installed now) is submitted again unless ``keep_stale``."""
    plan = plan if plan is not None else plan_grid(spec_path, results)
    size, plan.max_array_source = max_array_size(plan.spec.resources.max_array_size, dry_run)
    res = plan.results.resolve()
    if not dry_run:
        probe_writable(res, "grid.results")
        probe_writable(res / "submitit", "grid.results (submitit's folder)")
        if _node_count() > 1:
            check_shared_folder(res, "grid.results")
    manifest = plan.manifest
    todo = [r for r in plan.runs if current_record(res / r.folder, r.run_id, keep_stale) is None
            and (only is None or r.run_id in only)]
    wanted = {k for r in todo for k in manifest.runs[r.run_id].phases}
    phases = [k for k in manifest.phases if k in wanted and not (res / manifest.phases[k].artifact).is_file()]
    name = f"npas-{plan.spec.name}"
    arrays: list[ArrayPlan] = []
    for chunk in array_chunks(len(phases), size):
        arrays.append(ArrayPlan("phase", [f"phase:{phases[i]}" for i in chunk],
                                sbatch_parameters(plan.spec.resources, f"{name}-phase", single_task=True)))
    for chunk in array_chunks(len(todo), size):
        ids = [todo[i].run_id for i in chunk]
        needs = any(manifest.runs[rid].phases for rid in ids) and bool(phases)
        arrays.append(ArrayPlan("train", ids, sbatch_parameters(plan.spec.resources, name),
                                ["phase"] if needs else []))
    return plan, arrays, size


def submit_grid(spec_path: str | Path, results: str | Path | None = None, dry_run: bool = False,
                threads: int = 0, only: set[str] | None = None, force: bool = False,
                plan: Any = None, keep_stale: bool = False) -> tuple[Any, list[ArrayPlan]]:
    """Submit the unfinished runs (``only``: these run ids). Runs that live jobs still hold are refused, naming
    the jobs (a second array would only burn allocations: the run lock lets one job train a run); ``force``
    submits them anyway. A dry run lists them (``plan.held``) and submits nothing."""
    plan, arrays, _ = plan_arrays(spec_path, results, only, dry_run=dry_run, plan=plan, keep_stale=keep_stale)
    train_ids = [t for a in arrays if a.kind == "train" for t in a.task_ids]
    view = queue_view(plan.results, accounting_note=False) if arrays else QueueView()
    plan.held = held_runs(view, train_ids)
    if plan.held and not force and not dry_run:
        some = "; ".join(f"{rid[:10]}: {', '.join(jobs)}" for rid, jobs in list(plan.held.items())[:5])
        more = f" (and {len(plan.held) - 5} more)" if len(plan.held) > 5 else ""
        raise NPASError(f"npas grid submit: {len(plan.held)} of the {len(train_ids)} unfinished runs are still held "
                        f"by live SLURM jobs ({some}{more}): a second array would wait for them and exit. `npas grid "
                        "resubmit` submits only the runs no job holds; `npas grid submit --force` submits all anyway.")
    if dry_run or not arrays:
        return plan, arrays
    res = plan.results.resolve()
    from .runner import RunnerLock

    with RunnerLock(res, "npas grid submit"):
        return _submit(plan, arrays, res, threads)


def _submit(plan: Any, arrays: list[ArrayPlan], res: Path, threads: int) -> tuple[Any, list[ArrayPlan]]:
    """The submission itself, under the results folder's lock (``submit_grid``)."""
    from .slurm_job import GridJob, job_executor

    plan.manifest.save(res)  # the tasks read their configs from it
    (res / PHASES).mkdir(parents=True, exist_ok=True)
    max_timeouts = plan.spec.resources.max_timeouts
    executor, code = job_executor(res, max_timeouts)
    phase_jobs: list[str] = []
    for array in arrays:
        params = dict(array.parameters)
        if array.depends_on and phase_jobs:
            params["slurm_additional_parameters"] = {"dependency": "afterany:" + ":".join(phase_jobs)}
        executor.update_parameters(**params)
        jobs = executor.map_array(GridJob(res, threads), array.task_ids)
        array.job_id = jobs[0].job_id.split("_")[0]
        if array.kind == "phase":
            phase_jobs.append(array.job_id)
        # submitit submits a one-task "array" as a plain job ("123", not "123_0"): keep each task's real id
        record_submission(res, array.job_id, array.kind, array.task_ids, [j.job_id for j in jobs], params, code.path,
                          max_timeouts)
    return plan, arrays


def sbatch_header(array: ArrayPlan, folder: str | Path) -> list[str]:
    """The ``#SBATCH`` lines submitit would write for this array (``--dry-run`` shows them): submitit's own
    translation of the parameters (its private ``_make_sbatch_string``, a pure function: nothing is
    written)."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    # submitit's SLURM executor refuses to exist where `srun` is not on PATH (its affinity check); a dry run on a
    # laptop only needs its parameter translation, so the check is lifted while it is built, and put back
    check = SlurmExecutor.__dict__["affinity"]
    SlurmExecutor.affinity = classmethod(lambda cls: 2)  # type: ignore[method-assign,assignment]
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    finally:
        SlurmExecutor.affinity = check  # type: ignore[method-assign]
    executor.update_parameters(**array.parameters)
    params = dict(executor._executor.parameters)
    if len(array.task_ids) > 1:
        params["map_count"] = len(array.task_ids)
    text = _make_sbatch_string(command="python -u -m submitit.core._submit", folder=str(folder), **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


# -- cancel, resubmit -----------------------------------------------------------------------------
def cancel_grid(spec_path: str | Path, results: str | Path | None = None, runs: list[str] | None = None) -> list[str]:
    """``scancel`` the jobs that still hold the grid's tasks (or those of ``runs``: run ids or their prefixes)
    and return exactly those; a task that already ended is not reported. Run folders are never touched (a
    cancelled run resumes from its checkpoint with ``npas grid resubmit``)."""
    from .spec import load_spec

    spec = load_spec(spec_path, results)
    view = queue_view(spec.results, accounting_note=False)
    if view.note:
        raise NPASError(f"npas grid cancel: cannot tell which jobs still hold the grid's runs ({view.note})")
    chosen = [j.job for task, jobs in view.jobs.items() if runs is None or any(task.startswith(p) for p in runs)
              for j in jobs if j.holds]
    if chosen:
        r = subprocess.run(["scancel", "--", *chosen], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise NPASError(f"scancel failed: {r.stderr.strip()[:200]}")
    return chosen


RESUBMIT_STATES = ("failed", "blocked", "interrupted", "bad record", "not started", "stale")
# `npas grid resubmit`'s flags (argparse names) -> the states each adds; no flag: every one of RESUBMIT_STATES
RESUBMIT_FLAG_STATES = {"failed": ("failed",), "blocked": ("blocked",), "interrupted": ("interrupted", "bad record"),
                        "not_started": ("not started",), "stale": ("stale",)}


def resubmit_states(flags: dict[str, bool]) -> tuple[str, ...]:
    """The states ``resubmit`` takes for the flags given (they add up; none given: every unfinished state)."""
    return tuple(st for flag, on in flags.items() if on for st in RESUBMIT_FLAG_STATES[flag]) or RESUBMIT_STATES


def resubmit_grid(spec_path: str | Path, results: str | Path | None = None, threads: int = 0,
                  states: tuple[str, ...] = RESUBMIT_STATES,
                  runs: list[str] | None = None) -> tuple[Any, list[ArrayPlan], dict[str, str]]:
    """Submit again every unfinished run that no job holds: failed, blocked, interrupted (cancelled, killed,
    out of requeues), a bad record, never started (e.g. cancelled while pending); ``states`` and ``runs`` (run
    ids or prefixes) narrow it. Never a finished run, nor one a live job or a local runner holds. Returns
    (plan, arrays submitted, {run id: what holds it} of the chosen runs left alone)."""
    unknown = [s for s in states if s not in RESUBMIT_STATES]
    if unknown:
        raise NPASError(f"npas grid resubmit: {', '.join(unknown)} is not a state to resubmit; use "
                        f"{', '.join(RESUBMIT_STATES)}")
    from .runner import status_rows

    plan = plan_grid(spec_path, results)  # once: expanding a grid builds its models
    view = queue_view(plan.results, accounting_note=False)
    if view.note:
        raise NPASError(f"npas grid resubmit: cannot tell which runs live jobs still hold ({view.note})")
    rows, _ = status_rows(plan)  # the folders' own states (a local runner's queue included)
    by_prefix = {r.run_id[:10]: r.run_id for r in plan.runs}
    chosen = {by_prefix[row["run id"]]: row["state"] for row in rows
              if runs is None or any(by_prefix[row["run id"]].startswith(p) for p in runs)}
    candidates = [rid for rid, state in chosen.items() if state in states]  # a running/queued one never is
    held = {rid: "; ".join(j.describe() for j in view.holding(rid)) for rid in candidates if view.holding(rid)}
    todo = {rid for rid in candidates if rid not in held}
    plan, arrays = submit_grid(spec_path, results, threads=threads, only=todo, force=True, plan=plan)
    return plan, arrays, held


def held_runs(view: QueueView, run_ids: list[str]) -> dict[str, list[str]]:
    """run id -> the live jobs that hold it, for the runs a submission would send again."""
    return {rid: [j.describe() for j in view.holding(rid)] for rid in run_ids if view.holding(rid)}
