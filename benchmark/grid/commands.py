"""``npas grid ...``: one function per subcommand, and the parser that names them.

The functions print; what they print is computed in the grid modules (``runner`` for plans, runs and the status
table joined with the SLURM queue, ``submit`` for SLURM arrays, ``leaderboard`` for ``collect``). ``cmd_grid``
dispatches by the subcommand's name, with ``--max-runs`` in force for that one command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable


def add_grid_parser(sub) -> None:
    """``npas grid`` and its subcommands, on the ``npas`` parser's subparsers."""
    g = sub.add_parser("grid", help="benchmark grids: plan, run and inspect a grid spec (slurm/*.toml)")
    gsub = g.add_subparsers(dest="grid_command", required=True)
    for name, text in (("plan", "the table of runs (ids, options, budgets -> unique params, FLOPs, state); runs and "
                                "writes nothing (--save writes the manifest, <results>/grid.json)"),
                       ("run", "run every unfinished run (shared phases first), at most N at a time; resumable"),
                       ("status", "one state per run: its folder joined with every SLURM job that holds it "
                                  "(never blocks; --watch refreshes until nothing is queued or running)"),
                       ("collect", "the grid's leaderboard from whatever runs exist (<results>/LEADERBOARD.md)"),
                       ("submit", "submit the unfinished runs to SLURM as job arrays (submitit) and exit"),
                       ("cancel", "scancel the jobs that still hold the grid's runs (all, or --runs); run folders "
                                  "are kept"),
                       ("resubmit", "submit every unfinished run that no SLURM job holds (failed, blocked, interrupted, "
                                    "never started); flags narrow it")):
        p = gsub.add_parser(name, help=text, description=text)
        p.add_argument("spec", help="grid spec TOML file")
        p.add_argument("--results", default=None, help="results folder (default: the spec's grid.results)")
        p.add_argument("--max-runs", type=int, default=None, metavar="N",
                       help="allow up to N runs for this command (default: the spec's grid.max_runs, else 10000)")
        p.add_argument("--json", action="store_true", help="print the table as JSON")
        if name == "cancel":
            p.add_argument("--runs", nargs="+", default=None, help="run ids (or prefixes) to cancel; default: all")
        if name == "resubmit":
            for state in ("failed", "blocked", "interrupted", "not-started", "stale"):
                p.add_argument(f"--{state}", action="store_true",
                               help=f"only the {state.replace('-', ' ')} runs (flags add up; none: every unfinished run)")
            p.add_argument("--runs", nargs="+", default=None, help="only these run ids (or prefixes)")
            p.add_argument("--threads", type=int, default=0, help="train.threads of every task (default: the job's CPUs)")
        if name == "submit":
            p.add_argument("--dry-run", action="store_true",
                           help="print the arrays and their parameters; submit and write nothing (no cluster needed)")
            p.add_argument("--force", action="store_true",
                           help="submit runs that live jobs still hold (by default that is refused, naming the jobs)")
            p.add_argument("--threads", type=int, default=0, help="train.threads of every task (default: the job's CPUs)")
        if name == "plan":
            p.add_argument("--save", action="store_true", help="write the manifest (<results>/grid.json)")
        if name == "status":
            p.add_argument("--watch", type=float, nargs="?", const=30.0, default=None, metavar="SECONDS",
                           help="print the table again every SECONDS (default 30, at least 2) until no run is queued "
                                "or running; one squeue call per refresh")
        if name == "collect":
            p.add_argument("--references", default=None,
                           help="TOML of [[reference]] rows shown beside ours (npasbench.leaderboard.references), e.g. "
                                "the official-code row python -m npasbench.parity.reference writes")
        if name in ("run", "submit"):
            p.add_argument("--keep-stale", action="store_true",
                           help="keep finished runs whose method code has changed since (state `stale`; by default "
                                "they run again, the old run moved to <run>/superseded/)")
        if name == "run":
            p.add_argument("--executor", default="local",
                           help="local (processes, default) | debug (in-process) | slurm (one SLURM job per task, "
                                "this runner attached; `npas grid submit` for detached job arrays)")
            p.add_argument("-j", "--parallel", type=int, default=0,
                           help="runs at once (default: resources.max_parallel, else one per core / GPU; slurm: "
                                "jobs in the queue at once, else 256)")
            p.add_argument("--no-progress", action="store_true",
                           help="no bar and no periodic lines; one line per start and end is still printed")


def table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True) if rows else "(no runs)"


def cost_line(cost) -> str:
    from .compute import format_hours

    shared = f" + shared phases {format_hours(sum(cost.shared_phases.values()))}" if cost.shared_phases else ""
    unknown = f"; {cost.unknown} run(s) without a FLOP count (size known after a phase) not included" if cost.unknown else ""
    return (f"estimated compute: {format_hours(cost.total)} GPU-hours in all (runs "
            f"{format_hours(cost.total - sum(cost.shared_phases.values()))}{shared}){unknown}; FLOP arithmetic "
            f"(3 x forward FLOPs per training image, 1 x per evaluated image) at {cost.tflops:g} sustained TFLOP/s "
            "per GPU (resources.gpu_tflops: an assumption, not measured here; calibrate from one finished run)")


def plan_warnings(plan) -> list[str]:
    """One line per distinct model (seeds share it) whose budget its phase may not fit (``Preview.warning``)."""
    seen: dict[str, list[int]] = {}
    where: dict[str, str] = {}
    for r in plan.runs:
        w = plan.previews.get(r).warning if plan.previews is not None else ""
        if w:
            key = f"{r.method if r.variant == 'default' else f'{r.method} [{r.variant}]'}, {r.arch}, {r.dataset}, " \
                  f"budget {r.budget}"
            seen.setdefault(key, []).append(r.seed)
            where[key] = w
    from .expand import star_left_out

    return ([f"warning: {key} (seeds {', '.join(map(str, seeds))}): {where[key]}" for key, seeds in seen.items()]
            + star_left_out(plan.spec))


def cmd_grid(args: argparse.Namespace) -> int:
    """``npas grid ...``, with ``--max-runs`` in force for this command only."""
    from ..errors import ConfigError
    from .spec import MAX_RUNS_OVERRIDE

    limit = getattr(args, "max_runs", None)
    if limit is not None and limit < 1:
        raise ConfigError(f"--max-runs: expected a whole number >= 1, got {limit}.")
    token = MAX_RUNS_OVERRIDE.set(limit)
    try:
        return SUBCOMMANDS[args.grid_command](args)
    finally:
        MAX_RUNS_OVERRIDE.reset(token)


def grid_plan(args: argparse.Namespace) -> int:
    """``npas grid plan``: the table of runs, their estimated compute and the budget warnings; writes nothing
    unless ``--save``."""
    from .runner import plan_cost, plan_grid, plan_rows

    plan = plan_grid(args.spec, args.results, write=args.save)
    previews = plan.previews  # the models the budget check built: each distinct one once, for all three
    cost = plan_cost(plan, previews)
    rows = plan_rows(plan, previews, cost)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(table(rows))
    phases = plan.manifest.phases
    saved = f"manifest written to {plan.results / 'grid.json'}" if args.save else "nothing written (--save writes grid.json)"
    print(f"\n{len(rows)} runs, {len(phases)} shared phase job(s); {saved}")
    print(cost_line(cost))
    for line in plan_warnings(plan):
        print(line)
    return 0


def grid_cancel(args: argparse.Namespace) -> int:
    """``npas grid cancel``: scancel the jobs that still hold the grid's runs; the run folders stay."""
    from .submit import cancel_grid

    jobs = cancel_grid(args.spec, args.results, args.runs)
    print(f"cancelled {len(jobs)} job(s) that still held runs" + (f": {' '.join(jobs)}" if jobs else "")
          + "; run folders kept (`npas grid resubmit` resumes the interrupted runs from their checkpoints)")
    return 0


def grid_submit(args: argparse.Namespace) -> int:
    """``npas grid submit``: the unfinished runs as SLURM job arrays (``--dry-run``: printed, nothing submitted)."""
    from .submit import submit_grid

    plan, arrays = submit_grid(args.spec, args.results, dry_run=args.dry_run, threads=args.threads,
                               force=args.force, keep_stale=args.keep_stale)
    for rid, live in plan.held.items():
        print(f"{'refused without --force' if args.dry_run else 'submitted again (--force)'}: {rid[:10]} is "
              f"still held by {', '.join(live)}")
    return _report_arrays(plan, arrays, "unfinished", dry_run=args.dry_run)


def grid_resubmit(args: argparse.Namespace) -> int:
    """``npas grid resubmit``: every unfinished run no job holds (the state flags narrow it)."""
    from .submit import RESUBMIT_FLAG_STATES, resubmit_grid, resubmit_states

    states = resubmit_states({flag: getattr(args, flag) for flag in RESUBMIT_FLAG_STATES})
    plan, arrays, held = resubmit_grid(args.spec, args.results, threads=args.threads, states=states, runs=args.runs)
    for rid, holder in sorted(held.items()):
        print(f"not resubmitted: {rid[:10]}, still held by {holder}")
    return _report_arrays(plan, arrays, " ".join(states), dry_run=False)


def _report_arrays(plan: Any, arrays: list[Any], which: str, dry_run: bool) -> int:
    """What ``submit``/``resubmit`` did: one line per array (and, dry, its sbatch header and tasks)."""
    from .expand import star_left_out
    from .queue import SLURM_STATE
    from .submit import sbatch_header

    for line in star_left_out(plan.spec):
        print(line)
    if not arrays:
        print(f"nothing to submit: no {which} runs that no job holds among the {len(plan.runs)} of {plan.spec.name}")
        return 0
    folders = {r.run_id: r.folder for r in plan.runs}
    for a in arrays:
        dep = f", after {'+'.join(a.depends_on)} arrays (afterany)" if a.depends_on else ""
        job = f"job {a.job_id}: " if a.job_id else ""
        print(f"{job}{a.kind} array of {len(a.task_ids)} task(s){dep}; parameters {json.dumps(a.parameters)}")
        if dry_run:
            dep_line = ["#SBATCH --dependency=afterany:<the phase arrays' job ids>"] if a.depends_on else []
            for line in sbatch_header(a, plan.results.resolve() / "submitit") + dep_line:
                print(f"  {line}")
            for i, task in enumerate(a.task_ids):
                print(f"  [{i}] {task}  {folders.get(task, '')}")
    if dry_run:
        print(f"timeouts requeued at most {plan.spec.resources.max_timeouts} time(s) per run; arrays cut under "
              f"{plan.max_array_source}; the jobs would run a snapshot of this code (taken at submission)")
        print("(dry run: nothing submitted)")
    else:
        print(f"submitted; the arrays are recorded in {plan.results / SLURM_STATE}; watch with `npas grid status`")
    return 0


def grid_collect(args: argparse.Namespace) -> int:
    """``npas grid collect``: the grid's leaderboard from whatever runs exist."""
    from ..leaderboard import board_summary, build_leaderboard
    from .spec import load_spec

    spec = load_spec(args.spec, args.results)
    command = f"npas grid collect {args.spec}" + (f" --references {args.references}" if args.references else "")
    board = build_leaderboard([spec.results], spec.results / "LEADERBOARD.md", command,
                              expected_seeds=len(spec.seeds), references=args.references, notes=spec.notes)
    for line in board_summary(board):
        print(line)
    return 0


def grid_run(args: argparse.Namespace) -> int:
    """``npas grid run``: every unfinished run, at most N at a time; 130 when interrupted (run again to resume)."""
    from .runner import run_grid, summary_line

    out = run_grid(args.spec, args.executor, args.parallel, args.results, progress=not args.no_progress,
                   keep_stale=args.keep_stale)
    print(summary_line(out.counts, out.total) + ("  (interrupted: run again to resume)" if out.interrupted else ""))
    return 130 if out.interrupted else (0 if out.ok else 1)


def grid_status(args: argparse.Namespace) -> int:
    """``npas grid status``: the table joined with the SLURM queue (``runner.grid_status``) once, or (``--watch``)
    again every N seconds until settled."""
    import time

    from .runner import grid_status as read_status, summary_line

    every = None if args.watch is None else max(2.0, float(args.watch))
    while True:
        status = read_status(args.spec, args.results, scheduler=True)
        if args.json:
            print(json.dumps({"runs": status.rows, "counts": dict(status.counts), "note": status.note}, indent=2))
        else:
            if every is not None and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")  # a terminal: redraw in place
            print(table([{k: v for k, v in r.items() if k != "slurm jobs"} for r in status.rows]))
            print("\n" + summary_line(status.counts, len(status.rows)))
            if status.note:
                print(status.note)
        if every is None or not status.unsettled:
            return 0
        print(f"(refreshing every {every:g} s while {status.unsettled} run(s) are queued or running; Ctrl-C stops "
              "watching, not the runs)", flush=True)
        time.sleep(every)


SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": grid_plan, "run": grid_run, "status": grid_status, "collect": grid_collect, "submit": grid_submit,
    "resubmit": grid_resubmit, "cancel": grid_cancel}
