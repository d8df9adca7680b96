"""Timing helpers every benchmark uses: one of each.

- ``loadavg``: the 1/5/15-minute load averages (None where the OS has none), recorded beside every figure;
- ``time_infer``: per-call seconds of an inference function (torch.utils.benchmark's blocked_autorange);
- ``median_pct`` / ``fastest_pct`` / ``paired_pct``: one arm against another by medians, by fastest repeats,
  and repeat by repeat (what pass/fail is judged on);
- ``interleaved``: paired repeats -- every arm once per repeat, the order rotated, so a slow minute of a
  shared machine hits every arm alike; per arm the median/min over repeats of the per-repeat median;
- ``Guard``: a load guard that measures the CPU other processes used during each measurement and re-takes
  contended ones (with 2 threads on 2 cores any other busy process makes a step several times slower).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Callable

import torch
from tqdm.auto import tqdm


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@torch.no_grad()
def time_infer(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, min_run_time: float) -> list[float]:
    """Per-call seconds from torch.utils.benchmark's blocked_autorange (many calls per block). ``fn`` is
    called once first (warm-up; for generated weights, the one-off generation). Put a model in eval mode first."""
    from torch.utils.benchmark import Timer

    fn(x)
    m = Timer("fn(x)", globals={"fn": fn, "x": x}).blocked_autorange(min_run_time=min_run_time)
    return list(m.times)


def interleaved(arms: dict[str, Callable[[], list[float]]], repeats: int, desc: str,
                measure: Callable[[Callable[[], list[float]]], tuple[list[float], float | None]] | None = None,
                ) -> dict[str, dict]:
    """Run every arm once per repeat, order rotated; per arm the median/min over repeats of the
    per-repeat median. ``measure`` wraps each call (e.g. a contention guard returning the other
    processes' CPU use alongside the times)."""
    per: dict[str, list[float]] = {k: [] for k in arms}
    others: dict[str, list[float | None]] = {k: [] for k in arms}
    names = list(arms)
    bar = tqdm(total=repeats * len(names), desc=desc, leave=False)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()
            times, o = measure(arms[name]) if measure is not None else (arms[name](), None)
            per[name].append(statistics.median(times))
            others[name].append(None if o is None else round(o, 3))
            bar.update(1)
    bar.close()
    return {k: {"median_ms": 1000 * statistics.median(v), "min_ms": 1000 * min(v),
                "spread_pct": 100 * (max(v) / min(v) - 1), "per_repeat_ms": [1000 * t for t in v],
                "other_cores": others[k]} for k, v in per.items()}


def median_pct(table: dict, a: str, b: str) -> float:
    """Arm ``a`` vs arm ``b`` of an ``interleaved`` table, in percent, by their medians over repeats."""
    return 100 * (table[a]["median_ms"] / table[b]["median_ms"] - 1)


def fastest_pct(table: dict, a: str, b: str) -> float:
    """Arm ``a`` vs arm ``b`` of an ``interleaved`` table, in percent, by their fastest repeats."""
    return 100 * (table[a]["min_ms"] / table[b]["min_ms"] - 1)


def paired_pct(table: dict, a: str, b: str) -> float:
    """Arm ``a`` vs arm ``b`` of an ``interleaved`` table, in percent: the median over repeats of the
    ratio within a repeat (the arms ran seconds apart, so the machine's slow drifts cancel)."""
    pairs = zip(table[a]["per_repeat_ms"], table[b]["per_repeat_ms"])
    return 100 * (statistics.median(x / y for x, y in pairs) - 1)


# ------------------------------------------------------------------------ contention guard
def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(busy jiffies of the whole machine, jiffies of this process, wall seconds), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime + stime, every thread of this process
    except (OSError, ValueError, IndexError):
        return None
    busy = sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
    return float(busy), float(own), time.perf_counter()


def _others(a, b) -> float | None:
    """Cores other processes kept busy between two snapshots."""
    if a is None or b is None or b[2] <= a[2]:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / hz / (b[2] - a[2]))


def add_guard_args(ap) -> None:
    """The contention guard's two command-line options (``Guard.from_args`` reads them)."""
    ap.add_argument("--max-other-cores", type=float, default=0.25, help=(
        "a measurement during which other processes kept more than this many cores busy is re-taken "
        "(after waiting for quiet), up to twice"))
    ap.add_argument("--quiet-wait", type=float, default=300.0, help=(
        "most seconds spent in all waiting for other processes to quieten; 0 = never wait nor re-take "
        "(the contention is still measured and reported)"))


class Guard:
    """Measures the CPU other processes use during every measurement (from /proc/stat, minus this
    process); a measurement taken while they used more than ``max_others`` cores is re-taken, after
    waiting for the machine to quieten, up to ``retries`` times, as long as the waiting budget lasts.
    With 2 threads on 2 cores, any other busy process makes a step several times slower."""

    def __init__(self, max_others: float, wait_budget: float, retries: int = 2) -> None:
        self.max_others = max_others
        self.wait_budget = wait_budget
        self.retries = retries if wait_budget > 0 else 0
        self.waited = 0.0
        self.retaken = 0
        self.contended = 0
        self.measurements = 0
        self.samples: list[float] = []

    @classmethod
    def from_args(cls, args) -> "Guard":
        return cls(args.max_other_cores, args.quiet_wait)

    def wait_quiet(self) -> float | None:
        """Sleep in 2 s windows until other processes use at most ``max_others`` cores (or the budget is spent)."""
        o = None
        while self.waited < self.wait_budget:
            a = _cpu_snapshot()
            time.sleep(2.0)
            o = _others(a, _cpu_snapshot())
            self.waited += 2.0
            if o is None or o <= self.max_others:
                break
        return o

    def measure(self, fn: Callable[[], list[float]]) -> tuple[list[float], float | None]:
        for attempt in range(self.retries + 1):
            a = _cpu_snapshot()
            out = fn()
            o = _others(a, _cpu_snapshot())
            if o is None or o <= self.max_others or attempt == self.retries or self.waited >= self.wait_budget:
                break
            self.retaken += 1
            self.wait_quiet()
        self.measurements += 1
        if o is not None:
            self.samples.append(o)
            self.contended += o > self.max_others
        return out, o

    def summary(self) -> dict:
        return {"max_other_cores": self.max_others, "measurements": self.measurements, "retaken": self.retaken,
                "still_contended": self.contended, "waited_s": round(self.waited, 1),
                "other_cores_median": round(statistics.median(self.samples), 3) if self.samples else None,
                "other_cores_max": round(max(self.samples), 3) if self.samples else None}
