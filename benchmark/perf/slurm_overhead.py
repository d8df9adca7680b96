"""Submit-to-done on a real SLURM cluster against the local executor, for the same tiny grid.

    python -m npasbench.perf.slurm_overhead [--runs 20] [--epochs 1] [--repeats 1] [--submit-samples 10]
                                            [--out results/perf/slurm_overhead.json]

A benchmark script, not a timed test: it writes its figures (JSON and markdown beside it) and never
fails on speed. Needs a SLURM controller: ``SLURM_CONF`` pointing at one, or root here, in which case the
localhost cluster (``slurm/localhost-cluster.sh``) is started in a temporary folder and stopped after.

Both arms run ``--runs`` tiny runs (WRN-10-1, synthetic data, seeds 0..runs-1), one CPU each, as many
at once as the machine has cores (SLURM: one task per CPU; local: ``-j cores``), in fresh folders:

* ``slurm``: ``npas grid submit`` in-process (timed: the submission itself), then polled until every
  run's record is final (every 0.2 s, from the run folders); wall = submit start to the last record;
* ``local``: ``npas grid run SPEC -j cores`` as a process, wall = start to exit.

Per-run scheduler overhead = (slurm wall - local wall) / runs * cores (the extra seconds each run slot
spent, spread over the runs; both arms run the same work at the same parallelism). Also from the
records: each run's ``timing.setup_s`` and the spread between the first and the last run's start.

``npas grid submit`` as a user types it (a fresh process: imports, plan with its budget check, folder
checks, code snapshot, sbatch), ``--submit-samples`` times on a quiet machine and as many with every core
busy (one spinning process per core: the "machine with other jobs" of a shared login node), interleaved
quiet/loaded so that drift hits both alike; the jobs are submitted held (``SBATCH_HOLD``) and cancelled, so
nothing runs. Median and min of each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..atomic import write_json, write_text

TRAIN = {"data.name": "synthetic", "data.synthetic_train": 512, "data.synthetic_test": 128, "train.batch_size": 128}
SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "localhost-cluster.sh"


def spec_text(results: Path, runs: int, epochs: int) -> str:
    base = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in {**TRAIN, "train.epochs": epochs}.items())
    seeds = ", ".join(str(s) for s in range(runs))
    return (f'[grid]\nname = "slurm-overhead"\nresults = "{results}"\n\n[base]\n{base}\n\n[axes]\n'
            f'archs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [{seeds}]\n\n'
            f'[[methods]]\nname = "unshared"\n\n[resources]\ncpus_per_run = 1\ntime_min = 30\n')


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """An existing controller (SLURM_CONF), or the localhost one started for the benchmark."""
    if os.environ.get("SLURM_CONF"):
        yield f"existing cluster (SLURM_CONF={os.environ['SLURM_CONF']})"
        return
    if os.geteuid() != 0 or not SCRIPT.is_file():
        raise SystemExit("slurm_overhead: no SLURM_CONF and not root: start a cluster (slurm/localhost-cluster.sh "
                         "start) and export SLURM_CONF, or run as root.")
    state = Path(tempfile.mkdtemp(prefix="npas-slurm-bench-"))
    r = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"slurm_overhead: the localhost cluster did not start: {r.stderr[-1000:]}")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield "localhost cluster (slurm/localhost-cluster.sh, single node, 2 CPUs, no accounting)"
    finally:
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)
        os.environ.pop("SLURM_CONF", None)
        shutil.rmtree(state, ignore_errors=True)


def _records(res: Path) -> list[dict]:
    out = []
    for f in res.glob("*/result.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(f.read_text()))
    return out


def _starts(records: list[dict]) -> float:
    """Seconds between the first and the last run's start, from the records' own clocks."""
    import datetime as dt

    starts = [dt.datetime.fromisoformat(r["created_at"]).timestamp() - r["timing"]["wall_s"]
              for r in records if "wall_s" in r.get("timing", {})]
    return max(starts) - min(starts) if starts else float("nan")


def slurm_arm(root: Path, runs: int, epochs: int) -> dict:
    from ..grid.submit import submit_grid

    spec = root / "slurm.toml"
    res = root / "slurm"
    spec.write_text(spec_text(res, runs, epochs))
    t0 = time.perf_counter()
    submit_grid(spec)
    submit_s = time.perf_counter() - t0
    deadline = time.monotonic() + 1800
    done = 0
    while time.monotonic() < deadline:
        recs = [r for r in _records(res) if r.get("status") in ("completed", "diverged")]
        if len(recs) != done:
            done = len(recs)
            print(f"  slurm: {done}/{runs} done after {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        if done == runs:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"slurm arm: only {done}/{runs} runs finished within 30 minutes")
    wall = time.perf_counter() - t0
    recs = _records(res)
    return {"wall_s": wall, "submit_s": submit_s, "setup_s": [r["timing"]["setup_s"] for r in recs],
            "train_s": [r["timing"].get("train_s") for r in recs], "start_spread_s": _starts(recs)}


def _burners(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep one core each busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def submit_samples(root: Path, samples: int, cores: int) -> dict:
    """Wall seconds of the ``npas grid submit`` command (fresh process), quiet and with every core busy."""
    spec = root / "submit.toml"
    out: dict[str, list[float]] = {"quiet": [], "loaded": []}
    env = {**os.environ, "SBATCH_HOLD": "1"}  # held: submitted and cancelled, never run
    for i in range(samples * 2):
        kind = "quiet" if i % 2 == 0 else "loaded"
        res = root / f"submit-{i}"
        spec.write_text(spec_text(res, 4, 1))
        burn = _burners(cores) if kind == "loaded" else []
        try:
            time.sleep(1.0 if burn else 0.0)  # let the spinners take the cores first
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "npasbench.cli", "grid", "submit", str(spec)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            out[kind].append(time.perf_counter() - t0)
        finally:
            for p in burn:
                p.kill()
                p.wait()
        subprocess.run([sys.executable, "-m", "npasbench.cli", "grid", "cancel", str(spec)], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"  submit sample {i // 2 + 1}/{samples} {kind}: {out[kind][-1]:.2f} s", file=sys.stderr, flush=True)
    return out


def local_arm(root: Path, runs: int, epochs: int, jobs: int) -> dict:
    spec = root / "local.toml"
    res = root / "local"
    spec.write_text(spec_text(res, runs, epochs))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "npasbench.cli", "grid", "run", str(spec), "-j", str(jobs), "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    recs = _records(res)
    if len(recs) != runs:
        raise SystemExit(f"local arm: {len(recs)}/{runs} records")
    return {"wall_s": wall, "setup_s": [r["timing"]["setup_s"] for r in recs],
            "train_s": [r["timing"].get("train_s") for r in recs], "start_spread_s": _starts(recs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--submit-samples", type=int, default=10,
                    help="times `npas grid submit` is timed quiet, and as many with every core busy (0: skip)")
    ap.add_argument("--out", default="results/perf/slurm_overhead.json")
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    reps = []
    with cluster() as where:
        for r in range(a.repeats):
            with tempfile.TemporaryDirectory(prefix="npas-slurm-overhead-") as tmp:
                root = Path(tmp)
                rep = {}
                for arm in (("slurm", "local") if r % 2 == 0 else ("local", "slurm")):
                    print(f"repeat {r + 1}/{a.repeats}: {arm} arm, {a.runs} runs ...", file=sys.stderr, flush=True)
                    rep[arm] = slurm_arm(root, a.runs, a.epochs) if arm == "slurm" else local_arm(root, a.runs,
                                                                                              a.epochs, cores)
                rep["overhead_per_run_s"] = (rep["slurm"]["wall_s"] - rep["local"]["wall_s"]) / a.runs * cores
                reps.append(rep)
        submits: dict[str, list[float]] = {"quiet": [], "loaded": []}
        if a.submit_samples > 0:
            print(f"`npas grid submit` x {a.submit_samples}, quiet and with {cores} busy cores ...", file=sys.stderr,
                  flush=True)
            with tempfile.TemporaryDirectory(prefix="npas-slurm-submit-") as tmp:
                submits = submit_samples(Path(tmp), a.submit_samples, cores)
    med = statistics.median
    s = {"runs": a.runs, "epochs": a.epochs, "repeats": a.repeats, "cores": cores, "cluster": where, "train": TRAIN,
         "slurm_wall_s": med(r["slurm"]["wall_s"] for r in reps), "local_wall_s": med(r["local"]["wall_s"] for r in reps),
         "submit_s": med(r["slurm"]["submit_s"] for r in reps),
         "overhead_per_run_s": med(r["overhead_per_run_s"] for r in reps),
         "setup_s": {k: med(x for r in reps for x in r[k]["setup_s"]) for k in ("slurm", "local")},
         "train_s": {k: med(x for r in reps for x in r[k]["train_s"] if x is not None) for k in ("slurm", "local")},
         "start_spread_s": {k: med(r[k]["start_spread_s"] for r in reps) for k in ("slurm", "local")},
         "repeats_detail": reps, "submit_command_s": submits}
    out = Path(a.out)
    write_json(out, s)
    md = (f"# SLURM submit-to-done vs the local executor\n\n"
          f"Generated by `python -m npasbench.perf.slurm_overhead --runs {a.runs} --epochs {a.epochs} --repeats {a.repeats} "
          f"--submit-samples {a.submit_samples}` "
          f"on {where}; {a.runs} WRN-10-1 runs on synthetic data ({TRAIN['data.synthetic_train']} images, {a.epochs} "
          f"epoch(s)), one CPU each, {cores} at once in both arms; medians of {a.repeats} repeat(s).\n\n"
          f"| figure | SLURM (`npas grid submit`) | local (`npas grid run -j {cores}`) |\n|---|---|---|\n"
          f"| wall, start to every run done | {s['slurm_wall_s']:.1f} s | {s['local_wall_s']:.1f} s |\n"
          f"| `npas grid submit` itself (plan, checks, snapshot, sbatch) | {s['submit_s']:.2f} s | - |\n"
          f"| first to last run start | {s['start_spread_s']['slurm']:.1f} s | {s['start_spread_s']['local']:.1f} s |\n"
          f"| in-run setup (run() to the first step), median | {s['setup_s']['slurm']:.2f} s | {s['setup_s']['local']:.2f} s |\n"
          f"| in-run training, median | {s['train_s']['slurm']:.2f} s | {s['train_s']['local']:.2f} s |\n\n"
          f"Per-run scheduler overhead ((SLURM wall - local wall) / runs x {cores} slots): "
          f"**{s['overhead_per_run_s']:.2f} s** per run: sbatch, the scheduler's start of each array task, "
          "srun, submitit's unpickling and the snapshot's fresh imports, against a local runner that is "
          "already up. It is paid per run, so it matters for seconds-long runs like these and not for real ones "
          "(an epoch of WRN-16-1 on CIFAR-100 is ~100 s on this CPU).\n")
    if submits["quiet"]:
        q, ld = submits["quiet"], submits["loaded"]
        md += (f"\n## `npas grid submit` as typed\n\nA fresh process (imports, the plan and its budget check, folder "
               f"checks, code snapshot, sbatch) submitting a 4-run grid, {len(q)} times on the quiet machine and "
               f"{len(ld)} times with all {cores} cores kept busy by spinning processes, interleaved (jobs submitted "
               "held and cancelled).\n\n| machine | median | min | max |\n|---|---|---|---|\n"
               f"| quiet | {med(q):.2f} s | {min(q):.2f} s | {max(q):.2f} s |\n"
               f"| every core busy | {med(ld):.2f} s | {min(ld):.2f} s | {max(ld):.2f} s |\n")
    write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
