"""The tidy table -> one cell per (data set, architecture, method, variant, budget, entity, epochs).

A cell aggregates its seeds (``stats.summarize``): top-1 and top-5 over the completed runs, the
diverged ones counted (never averaged), the paired difference to the unshared network at the same
data set, architecture, epochs and seeds, and the flags a reader needs before trusting a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .stats import Summary, summarize

KEY = ["dataset", "arch", "members", "method", "variant", "budget", "budget_mode", "entity", "epochs"]
REFERENCE_METHOD = "unshared"


@dataclass
class Cell:
    key: dict[str, Any]
    top1: Summary
    top5: Summary
    delta: Summary | None  # paired top-1 difference to the unshared network (same seeds)
    params: int
    gflops: float | None
    budget_pct: float | None
    train_hours: float  # summed over the cell's runs
    device: str
    runs: int
    diverged: int
    seeds: list[int]
    flags: list[str] = field(default_factory=list)

    @property
    def regime(self) -> str:
        if self.key["budget"] is None:
            return "natural size (no budget)"
        if self.budget_pct is None:
            return f"budget in the method's own knob ({self.key['budget_mode']})"
        return "low budget (< 100% of the unshared network)" if self.budget_pct < 100 else \
            "high budget (>= 100% of the unshared network)"


def _key(row: pd.Series) -> tuple:
    return tuple(None if pd.isna(row[k]) else row[k] for k in KEY)


def aggregate(df: pd.DataFrame, bootstrap: int = 0, expected_seeds: int | None = None) -> list[Cell]:
    """Cells in a fixed order (the tidy table's)."""
    if df.empty:
        return []
    groups: dict[tuple, pd.DataFrame] = {}
    for k, g in df.groupby(KEY, dropna=False, sort=False):
        groups[tuple(None if (isinstance(v, float) and pd.isna(v)) else v for v in k)] = g
    reference = {}
    for k, g in groups.items():
        key = dict(zip(KEY, k))
        if key["method"] == REFERENCE_METHOD and key["variant"] == "" and key["budget"] is None:
            reference[(key["dataset"], key["arch"], key["epochs"])] = g
    cells = []
    for k, g in groups.items():
        key = dict(zip(KEY, k))
        done = g[g["status"] == "completed"]
        top1 = summarize(done["top1"].tolist(), bootstrap)
        top5 = summarize(done["top5"].tolist(), bootstrap)
        ref = reference.get((key["dataset"], key["arch"], key["epochs"]))
        delta = None
        if ref is not None and key["method"] != REFERENCE_METHOD and key["entity"] in ("model", "ensemble"):
            ref_done = ref[ref["status"] == "completed"].set_index("seed")["top1"]
            pairs = [float(t) - float(ref_done[s]) for s, t in zip(done["seed"], done["top1"]) if s in ref_done.index]
            delta = summarize(pairs, bootstrap)
        flags = []
        if bool(g["synthetic"].any()):
            flags.append("synthetic data")
        if top1.n == 1:
            flags.append("1 seed")
        if expected_seeds and top1.n < expected_seeds:
            flags.append(f"{top1.n} of {expected_seeds} seeds")
        if g["git_sha"].nunique() > 1:
            flags.append(f"mixed code ({g['git_sha'].nunique()} git shas)")
        if bool(g["dirty"].any()):
            flags.append("dirty tree")
        if (g["selection"] == "test").any():
            flags.append("selected on test")
        diverged = int((g["status"] == "diverged").sum())
        if diverged:
            flags.append(f"{diverged} of {len(g)} diverged")
        if g["params"].nunique() > 1:
            flags.append("params differ between runs")
        cells.append(Cell(key=key, top1=top1, top5=top5, delta=delta, params=int(g["params"].iloc[0]),
                          gflops=None if pd.isna(g["gflops"].iloc[0]) else float(g["gflops"].iloc[0]),
                          budget_pct=None if pd.isna(g["budget_pct"].iloc[0]) else float(g["budget_pct"].iloc[0]),
                          train_hours=float(g["train_s"].sum()) / 3600.0, device=str(g["device"].iloc[0]),
                          runs=len(g), diverged=diverged, seeds=sorted(int(s) for s in g["seed"]), flags=flags))
    # a cell with fewer seeds than the other cells of its section
    most: dict[tuple, int] = {}
    for c in cells:
        s = (c.key["dataset"], c.key["arch"])
        most[s] = max(most.get(s, 0), c.top1.n)
    for c in cells:
        m = most[(c.key["dataset"], c.key["arch"])]
        if 1 < c.top1.n < m and not any("seeds" in f for f in c.flags):
            c.flags.append(f"{c.top1.n} seeds (others {m})")
    return cells


def cells_frame(cells: list[Cell]) -> pd.DataFrame:
    """The aggregated cells as a flat table (the cells CSV)."""
    rows = []
    for c in cells:
        rows.append({**c.key, "regime": c.regime, "params": c.params, "gflops": c.gflops, "budget_pct": c.budget_pct,
                     "n": c.top1.n, "top1_mean": c.top1.mean, "top1_sd": c.top1.sd, "top1_ci95": c.top1.half_width,
                     "top5_mean": c.top5.mean, "delta_unshared_mean": c.delta.mean if c.delta else None,
                     "delta_unshared_ci95": c.delta.half_width if c.delta else None,
                     "delta_n": c.delta.n if c.delta else None, "runs": c.runs, "diverged": c.diverged,
                     "seeds": " ".join(map(str, c.seeds)), "train_hours": c.train_hours, "device": c.device,
                     "flags": "; ".join(c.flags)})
    return pd.DataFrame(rows)
