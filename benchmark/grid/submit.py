"""``npas grid submit SPEC [--dry-run]``: a grid's unfinished runs as SLURM job arrays, through submitit.

- Runs already finished are not submitted (a cache hit); only run ids cross the pickle (``GridJob``).
- Shared phase jobs are one array; every training array that needs one of them depends on it with
  ``afterany`` (``afterok`` on a failed phase would leave dependents pending forever), and the task
  itself ends a run as ``blocked`` with the phase's error when the phase failed.
- Arrays are cut under the cluster's MaxArraySize (read from ``scontrol show config``), each indexed
  from 0; ``[resources]`` gives the sbatch parameters (``slurm_cluster.sbatch_parameters``).
- The results and submitit folders must be writable and, on a cluster of more than one node, not
  node-local.
- The code is fixed at submission: the jobs import a snapshot of the package (``code_snapshot``), so
  editing the checkout while they queue changes nothing; their records carry its digest and git sha.
- Submit and exit: ``<results>/slurm.json`` records every array (job id, its run ids, its parameters,
  the code snapshot and its git sha) for status, cancel and resubmit from a new shell.
- Timeouts are requeued at most ``[resources] max_timeouts`` times (submitit's ``max_num_timeout``).
- ``--dry-run`` prints the arrays and their exact parameters and submits nothing.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import NPASError
from ..provenance import git_info
from ..records import read_json_object
from ..storage import probe_writable
from .manifest import PHASES
from .runner import plan_grid
from .code_snapshot import python_command, take_snapshot
from .slurm_cluster import array_chunks, check_shared_folder, query_cluster, sbatch_parameters
from .state import finished_record

SLURM_STATE = "slurm.json"


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


def plan_arrays(spec_path: str | Path, results: str | Path | None = None,
                only: set[str] | None = None) -> tuple[Any, list[ArrayPlan], int]:
    """(grid plan, arrays to submit in order, MaxArraySize): checks the cluster and the folders first.
    ``only``: restrict to these run ids (a resubmission)."""
    plan = plan_grid(spec_path, results)
    cluster = query_cluster()
    res = plan.results.resolve()
    probe_writable(res, "grid.results")
    probe_writable(res / "submitit", "grid.results (submitit's folder)")
    if _node_count() > 1:
        check_shared_folder(res, "grid.results")
    manifest = plan.manifest
    todo = [r for r in plan.runs if finished_record(res / r.folder, r.run_id) is None
            and (only is None or r.run_id in only)]
    wanted = {k for r in todo for k in manifest.runs[r.run_id].phases}
    phases = [k for k in manifest.phases if k in wanted and not (res / manifest.phases[k].artifact).is_file()]
    name = f"npas-{plan.spec.name}"
    arrays: list[ArrayPlan] = []
    for chunk in array_chunks(len(phases), cluster.max_array_size):
        arrays.append(ArrayPlan("phase", [f"phase:{phases[i]}" for i in chunk],
                                sbatch_parameters(plan.spec.resources, f"{name}-phase", single_task=True)))
    for chunk in array_chunks(len(todo), cluster.max_array_size):
        ids = [todo[i].run_id for i in chunk]
        needs = any(manifest.runs[rid].phases for rid in ids) and bool(phases)
        arrays.append(ArrayPlan("train", ids, sbatch_parameters(plan.spec.resources, name),
                                ["phase"] if needs else []))
    return plan, arrays, cluster.max_array_size


def submit_grid(spec_path: str | Path, results: str | Path | None = None, dry_run: bool = False,
                threads: int = 0, only: set[str] | None = None) -> tuple[Any, list[ArrayPlan]]:
    import submitit

    from .slurm_job import GridJob

    plan, arrays, _ = plan_arrays(spec_path, results, only)
    if dry_run or not arrays:
        return plan, arrays
    res = plan.results.resolve()
    (res / PHASES).mkdir(parents=True, exist_ok=True)
    state = read_json_object(res / SLURM_STATE) or {"arrays": []}
    code = take_snapshot(res / "submitit")  # what the jobs run, however the checkout changes while they queue
    executor = submitit.AutoExecutor(folder=res / "submitit", cluster="slurm", slurm_python=python_command(code),
                                     slurm_max_num_timeout=plan.spec.resources.max_timeouts)
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
        state["arrays"].append({"job_id": array.job_id, "kind": array.kind, "tasks": array.task_ids,
                                "task_jobs": [j.job_id for j in jobs],
                                "parameters": params, "git": git_info(), "code": str(code.path),
                                "max_timeouts": plan.spec.resources.max_timeouts,
                                "submitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        write_json(res / SLURM_STATE, state)  # after every array: a crash between arrays loses nothing
    return plan, arrays


def sbatch_header(array: ArrayPlan, folder: str | Path) -> list[str]:
    """The ``#SBATCH`` lines submitit would write for this array (``--dry-run`` shows them): submitit's own
    translation of the parameters (its private ``_make_sbatch_string``, a pure function: nothing is
    written)."""
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**array.parameters)
    params = dict(executor._executor.parameters)
    if len(array.task_ids) > 1:
        params["map_count"] = len(array.task_ids)
    text = _make_sbatch_string(command="python -u -m submitit.core._submit", folder=str(folder), **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


# -- the scheduler's view, cancel, resubmit --------------------------------------------------------
def submitted_tasks(results: str | Path) -> dict[str, str]:
    """run id (or phase:<key>) -> the SLURM id of its newest submission ("<array job>_<index>")."""
    state = read_json_object(Path(results) / SLURM_STATE) or {}
    out = {}
    for array in state.get("arrays", []):
        jobs = array.get("task_jobs") or [f"{array['job_id']}_{i}" for i in range(len(array.get("tasks", [])))]
        for task, job in zip(array.get("tasks", []), jobs):
            out[task] = job
    return out


def scheduler_view(results: str | Path, timeout_s: float = 15.0) -> tuple[dict[str, dict[str, str]], str]:
    """({task id: {state, reason, node, elapsed, requeues, job}}, note). From ``squeue`` (bounded, never a hang):
    jobs that left the queue are absent; without accounting their final scheduler state is unknown and
    the run folders are the truth (the note says so)."""
    tasks = submitted_tasks(results)
    if not tasks:
        return {}, ""
    arrays = sorted({t.split("_")[0] for t in tasks.values()})
    try:
        r = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-O",
                            "JobArrayID:|,State:|,Reason:|,NodeList:|,TimeUsed:|,RestartCnt:|"],
                           capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"squeue unavailable ({type(exc).__name__}): states from the run folders only"
    if r.returncode != 0 and "Invalid job id" not in r.stderr:
        return {}, f"squeue failed ({r.stderr.strip()[:120]}): states from the run folders only"
    queue = {}
    for line in r.stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 6:
            queue[parts[0]] = {"state": parts[1], "reason": "" if parts[2] == "None" else parts[2], "node": parts[3],
                               "elapsed": parts[4], "requeues": parts[5]}
    empty = {"state": "", "reason": "", "node": "", "elapsed": "", "requeues": ""}
    view = {task: {**queue.get(job, empty), "job": job} for task, job in tasks.items()}
    note = ""
    try:
        if not query_cluster(timeout_s).accounting:
            note = ("no SLURM accounting here: jobs that left the queue show no scheduler state; the run folders "
                    "(state column) are the truth")
    except NPASError:
        note = "no SLURM controller reachable: states from the run folders only"
    return view, note


def cancel_grid(spec_path: str | Path, results: str | Path | None = None, runs: list[str] | None = None) -> list[str]:
    """``scancel`` the grid's queued and running tasks (or those of ``runs``: run ids or their prefixes);
    run folders are never touched (a cancelled run resumes from its checkpoint when resubmitted)."""
    from .spec import load_spec

    spec = load_spec(spec_path, results)
    tasks = submitted_tasks(spec.results)
    chosen = [job for task, job in tasks.items() if runs is None or any(task.startswith(p) for p in runs)]
    if chosen:
        r = subprocess.run(["scancel", *chosen], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise NPASError(f"scancel failed: {r.stderr.strip()[:200]}")
    return chosen


def resubmit_failed(spec_path: str | Path, results: str | Path | None = None,
                    threads: int = 0) -> tuple[Any, list[ArrayPlan], dict[str, str]]:
    """Submit again the runs whose state is failed or blocked and that the scheduler no longer holds;
    never a running, queued or finished run, never a deleted folder. Returns (plan, arrays submitted,
    {run id: scheduler state} of the failed runs left alone because the scheduler still holds them,
    e.g. a task still COMPLETING after it wrote its failure)."""
    from .runner import status_rows

    plan = plan_grid(spec_path, results, write=False)  # once: expanding a grid builds its models
    view, _ = scheduler_view(plan.results)
    rows, _ = status_rows(plan)
    by_prefix = {r.run_id[:10]: r.run_id for r in plan.runs}
    failed = {by_prefix[row["run id"]] for row in rows if row["state"] in ("failed", "blocked")}
    gone = ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")
    held = {rid: view[rid]["state"] for rid in failed if view.get(rid, {}).get("state", "") not in gone}
    plan, arrays = submit_grid(spec_path, results, threads=threads, only=failed - set(held))
    return plan, arrays, held
