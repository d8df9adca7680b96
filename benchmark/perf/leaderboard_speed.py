"""Leaderboard speed: N generated records (default 10,000) collected, aggregated and written.

    python -m npasbench.perf.leaderboard_speed [--records 10000] [--out results/perf/leaderboard_speed.json]

Target (issue 12): under 2 s on this machine for 10,000 records. The records are written as files first
(untimed), as a grid leaves them: 8 methods x 2 architectures x 25 budgets (the unshared reference: one) x 30 seeds, schema 2; then
``build_leaderboard`` is timed end to end (reading every file, tidy table, cells, markdown, CSVs; plots
timed separately, since a figure per section costs what matplotlib costs). Median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..atomic import write_json, write_text
from ..provenance import hardware, package_versions
from ..run_folder import RunFolder

METHODS = ("unshared", "ssn", "superweights", "hashed", "soft-sharing", "hard-sharing", "reduced", "ensemble")


def generate(root: Path, n: int) -> int:
    i = 0
    while i < n:
        for arch in ("wrn-16-1", "wrn-10-1"):
            for method in METHODS:
                for b in range(25):
                    for seed in range(30):
                        if i >= n:
                            return i
                        if method == "unshared" and b > 0:
                            continue  # the reference: one natural size
                        budget = None if method == "unshared" else 10_000 * (b + 1)
                        rid = hashlib.sha256(f"{arch}|{method}|{b}|{seed}".encode()).hexdigest()[:16]
                        rec = {"schema_version": 3, "status": "completed", "run_id": rid,
                               "method": {"name": method, "source": "in-tree"}, "arch": arch, "members": [arch],
                               "dataset": {"name": "cifar100", "num_classes": 100}, "synthetic": False,
                               "budget": {"params": budget, "mode": "total"} if budget else None,
                               "params": {"total": budget or 180_916, "flops": {"total": 5e7, "per_member": [5e7]}},
                               "metrics": {"top1": 50 + (seed % 7) * 0.3 + b * 0.1, "top5": 80.0},
                               "selection": {"split": "none"}, "epochs": 3, "seed": seed,
                               "config": {"method": {"name": method, "options": {}}},
                               "git": {"sha": "0" * 40, "dirty": False}, "hardware": {"device": "cpu"},
                               "world_size": 1, "timing": {"train_s": 300.0}, "created_at": "2026-12-01T00:00:00"}
                        folder = root / f"{method}-{arch}-{b}-{seed}"
                        folder.mkdir(parents=True, exist_ok=True)
                        RunFolder(folder).result.write_text(json.dumps(rec))
                        i += 1
    return i


def main(argv: list[str] | None = None) -> int:
    from ..leaderboard import build_leaderboard

    p = argparse.ArgumentParser(prog="python -m npasbench.perf.leaderboard_speed", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="results/perf/leaderboard_speed.json")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        n = generate(root, a.records)
        build_leaderboard([root], Path(tmp) / "warm.md", "warm-up", plots=False)  # imports, caches
        times, plot_times = [], []
        for r in range(a.repeats):
            t0 = time.perf_counter()
            board = build_leaderboard([root], Path(tmp) / f"L{r}.md", "bench", plots=False)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            build_leaderboard([root], Path(tmp) / f"P{r}.md", "bench", plots=True)
            plot_times.append(time.perf_counter() - t0)
        cells = len(board.cells)
    med, pmed = statistics.median(times), statistics.median(plot_times)
    result = {"records": n, "cells": cells, "seconds_median": round(med, 3), "seconds": [round(t, 3) for t in times],
              "with_plots_seconds_median": round(pmed, 3), "target_s": 2.0, "meets_target": med < 2.0,
              "hardware": hardware(None), "packages": package_versions(),
              "command": "python -m npasbench.perf.leaderboard_speed " + " ".join(argv or sys.argv[1:])}
    out = Path(a.out)
    write_json(out, result)
    write_text(out.with_suffix(".md"), f"# Leaderboard speed\n\n{n:,} records -> {cells} cells: collect, tidy, "
               f"aggregate, markdown, CSVs in **{med:.2f} s** (median of {a.repeats}; target < 2 s: "
               f"{'met' if med < 2.0 else 'NOT met'}); with plots {pmed:.2f} s.\n\n`{result['command']}`\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("hardware", "packages")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
