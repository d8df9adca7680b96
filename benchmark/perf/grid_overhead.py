"""What the grid machinery costs per run, against a bare ``npas train`` of the same run.

    python -m npasbench.perf.grid_overhead [--runs 3] [--repeats 3] [--epochs 3] [--out results/perf/grid_overhead.json]

A benchmark script, not a timed test: it writes its figures (JSON and markdown beside it) and never
fails on speed. Two arms, identical work: ``--runs`` tiny runs (WRN-10-1, synthetic data, seeds
0..runs-1, about 30 s each on a 2-core CPU), one at a time, each with both cores:

* ``bare``: one ``npas train`` process per run, timed from before ``Popen`` to its exit;
* ``grid``: one ``npas grid run -j 1`` of a spec holding the same runs (same configs, so the same
  run ids), timed from before ``Popen`` to its exit: the runner's start-up (imports, expanding the
  spec, building each model once for the budget check, the manifest), its bookkeeping between runs,
  and every task process (its own start-up, manifest read, folder lock, markers).

Also the per-task cost once the runner is up ((grid wall - runner start-up - bare walls) / runs).
Reported, medians over ``--repeats`` (arms alternated, fresh folders each time): per-run overhead =
(grid wall - bare wall summed over the runs) / runs, as ms and as % of the bare run; the runner's
start-up alone (process start to the first task started, from its log); and each record's own
``timing.setup_s`` (run() to the first training step inside the run's process) in both arms. Target:
the per-run overhead is under 10 % of a 30-second run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..atomic import write_json, write_text
from ..run_folder import RESULT, RunFolder
from .timing import loadavg

TRAIN = {"data.name": "synthetic", "data.synthetic_train": 3000, "data.synthetic_test": 500, "train.batch_size": 128,
         "optim.milestones_unit": "fraction", "optim.milestones": [0.5], "optim.gammas": [0.2]}


def _toml_value(v) -> str:
    return json.dumps(v)


def spec_text(results: Path, runs: int, epochs: int) -> str:
    base = "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in {**TRAIN, "train.epochs": epochs}.items())
    seeds = ", ".join(str(s) for s in range(runs))
    return (f'[grid]\nname = "overhead"\nresults = "{results}"\n\n[base]\n{base}\n\n[axes]\narchs = ["wrn-10-1"]\n'
            f'datasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [{seeds}]\n\n[[methods]]\nname = "unshared"\n')


def bare_arm(root: Path, runs: int, epochs: int) -> dict:
    walls, setups = [], []
    for seed in range(runs):
        out = root / f"bare{seed}"
        args = [sys.executable, "-m", "npasbench.cli", "train", "--method", "unshared", "--arch", "wrn-10-1",
                "--out", str(out), "--seed", str(seed), "--epochs", str(epochs), "--no-progress"]
        args += [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in TRAIN.items()]
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        setups.append(json.loads(RunFolder(out).result.read_text())["timing"]["setup_s"])
    return {"wall_s": sum(walls), "per_run_wall_s": walls, "setup_s": setups}


def grid_arm(root: Path, runs: int, epochs: int) -> dict:
    res = root / "grid"
    spec = root / "spec.toml"
    spec.write_text(spec_text(res, runs, epochs))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "npasbench.cli", "grid", "run", str(spec), "-j", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    first_start = None
    for line in p.stdout:  # the runner prints "start  <run>" when it launches a task (stderr, not a tty)
        if line.startswith("start") and first_start is None:
            first_start = time.perf_counter() - t0
    code = p.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"grid arm failed with exit status {code}")
    setups = [json.loads(f.read_text())["timing"]["setup_s"] for f in sorted(res.rglob(RESULT))]
    return {"wall_s": wall, "runner_startup_s": first_start, "setup_s": setups}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="results/perf/grid_overhead.json")
    a = ap.parse_args(argv)
    reps = []
    for r in range(a.repeats):
        with tempfile.TemporaryDirectory(prefix="npas-grid-overhead-") as tmp:
            root = Path(tmp)
            order = ("bare", "grid") if r % 2 == 0 else ("grid", "bare")
            rep = {}
            for arm in order:
                print(f"repeat {r + 1}/{a.repeats}: {arm} arm ...", file=sys.stderr, flush=True)
                rep[arm] = bare_arm(root, a.runs, a.epochs) if arm == "bare" else grid_arm(root, a.runs, a.epochs)
            rep["overhead_per_run_s"] = (rep["grid"]["wall_s"] - rep["bare"]["wall_s"]) / a.runs
            rep["bare_run_s"] = rep["bare"]["wall_s"] / a.runs
            # per task once the runner is up: what each further run of a grid costs
            rep["per_task_s"] = (rep["grid"]["wall_s"] - rep["grid"]["runner_startup_s"] - rep["bare"]["wall_s"]) / a.runs
            rep["load_avg"] = (loadavg() or [None])[0]
            reps.append(rep)
    med = statistics.median
    per_run = med(r["overhead_per_run_s"] for r in reps)
    bare_run = med(r["bare_run_s"] for r in reps)
    summary = {
        "runs": a.runs, "repeats": a.repeats, "epochs": a.epochs, "train": TRAIN, "arch": "wrn-10-1",
        "bare_run_s_median": bare_run, "overhead_per_run_s_median": per_run,
        "overhead_pct_of_bare_run": 100 * per_run / bare_run,
        "overhead_pct_of_30s_run": 100 * per_run / 30.0,
        "runner_startup_s_median": med(r["grid"]["runner_startup_s"] for r in reps),
        "per_task_s_median": med(r["per_task_s"] for r in reps),
        "setup_s_median": {"bare": med(s for r in reps for s in r["bare"]["setup_s"]),
                           "grid": med(s for r in reps for s in r["grid"]["setup_s"])},
        "target": "per-run overhead under 10% of a 30-second run (3 s)",
        "met": per_run < 3.0, "repeats_detail": reps, "cpu_count": os.cpu_count(),
    }
    out = Path(a.out)
    write_json(out, summary)
    md = (f"# Grid overhead per run (local executor, -j 1)\n\n"
          f"Generated by `python -m npasbench.perf.grid_overhead --runs {a.runs} --repeats {a.repeats} --epochs {a.epochs}`. "
          f"{a.runs} WRN-10-1 runs on synthetic data ({TRAIN['data.synthetic_train']} images, {a.epochs} epochs), one at a "
          f"time, {os.cpu_count()} cores; medians of {a.repeats} repeats, arms alternated.\n\n"
          f"| figure | value |\n|---|---|\n"
          f"| bare `npas train`, wall per run | {bare_run:.2f} s |\n"
          f"| grid overhead per run (grid wall - bare walls) / runs | {per_run * 1000:.0f} ms "
          f"({summary['overhead_pct_of_bare_run']:.1f} % of the bare run, {summary['overhead_pct_of_30s_run']:.1f} % of 30 s) |\n"
          f"| runner start-up (process start to first task started), once per grid | {summary['runner_startup_s_median']:.2f} s |\n"
          f"| per task once the runner is up (grid wall - start-up - bare walls) / runs | "
          f"{summary['per_task_s_median'] * 1000:.0f} ms ({100 * summary['per_task_s_median'] / 30:.1f} % of 30 s) |\n"
          f"| in-process setup (run() to first step), bare / grid | {summary['setup_s_median']['bare']:.2f} s / "
          f"{summary['setup_s_median']['grid']:.2f} s |\n\n"
          f"Target: per-run overhead under 10 % of a 30-second run (3 s): **{'met' if summary['met'] else 'not met'}**. "
          "The runner's start-up is paid once per grid and is included (amortised) in the per-run figure.\n")
    write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
