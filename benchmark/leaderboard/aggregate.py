"""The tidy table -> one cell per (data set, architecture, method, variant, budget, entity, epochs).

A cell aggregates its seeds (``stats.summarize``): top-1 and top-5 over the completed runs, the
diverged ones counted (never averaged), the paired differences to the unshared network (same data set,
architecture, epochs, recipe and seeds) and to reduced width at the same budget (the baseline every NPAS
method must beat at its parameter count), and the flags a reader needs before trusting a number --
among them a model that uses less than ``UNDER_BUDGET_PCT`` of its budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .stats import Summary, summarize

KEY = ["dataset", "arch", "members", "method", "variant", "budget", "budget_mode", "entity", "epochs", "recipe"]
REFERENCE_METHOD = "unshared"
SAME_BUDGET_BASELINE = "reduced"  # the paired "Δ reduced" column: reduced width (defaults) at the same budget
# a model whose unique parameters are below this share of its budget is flagged: a comparison at one budget is fair
# only between models that use it alike (soft sharing's uniform allocation built 90.5% of a 50% budget)
UNDER_BUDGET_PCT = 95.0


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
    label: str = ""  # the grid spec's name for the variant ("" = none: the options name it)
    budget_used_pct: float | None = None  # params / budget, % (budgeted runs in total mode)
    delta_reduced: Summary | None = None  # paired top-1 difference to reduced width at the same budget
    paths: list[str] = field(default_factory=list)  # result.json of each completed run, by seed (training curves)

    @property
    def name(self) -> str:
        """The row's name: method [label], else method [options], else the method."""
        tag = self.label or self.key["variant"]
        return f"{self.key['method']} [{tag}]" if tag else self.key["method"]

    @property
    def regime(self) -> str:
        if self.key["budget"] is None:
            return "natural size (no budget)"
        if self.budget_pct is None:
            return f"budget in the method's own knob ({self.key['budget_mode']})"
        return "low budget (< 100% of the unshared network)" if self.budget_pct < 100 else \
            "high budget (>= 100% of the unshared network)"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def aggregate(rows: list[dict[str, Any]] | pd.DataFrame, bootstrap: int = 0,
              expected_seeds: int | None = None) -> list[Cell]:
    """Cells in a fixed order (the tidy rows'). Plain Python over the rows (``tidy.tidy_rows``): a grid
    has thousands of small cells, where per-group pandas calls would cost more than the arithmetic."""
    if isinstance(rows, pd.DataFrame):
        rows = [{k: _clean(v) for k, v in r.items()} for r in rows.to_dict("records")]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in KEY), []).append(row)
    reference: dict[tuple, dict[int, float]] = {}
    reduced: dict[tuple, dict[int, float]] = {}
    for k, g in groups.items():
        key = dict(zip(KEY, k))
        if is_reference(key):
            reference[_recipe_key(key)] = _by_seed(g)
        if key["method"] == SAME_BUDGET_BASELINE and key["variant"] == "" and key["budget"] is not None:
            reduced[_budget_key(key)] = _by_seed(g)
    cells = []
    for k, g in groups.items():
        key = dict(zip(KEY, k))
        done = [r for r in g if r["status"] == "completed"]
        top1 = summarize([r["top1"] for r in done], bootstrap)
        top5 = summarize([r["top5"] for r in done], bootstrap)
        scored = key["entity"] in ("model", "ensemble")  # members are not compared on their own
        mine = _by_seed(g)
        ref = reference.get(_recipe_key(key)) if scored and key["method"] != REFERENCE_METHOD else None
        delta = _paired(mine, ref, bootstrap)
        base = reduced.get(_budget_key(key)) if scored and key["method"] != SAME_BUDGET_BASELINE else None
        delta_reduced = _paired(mine, base, bootstrap)
        flags = []
        used = g[0].get("budget_used_pct")
        if used is not None and used < UNDER_BUDGET_PCT and key["entity"] in ("model", "ensemble"):
            flags.append(f"uses {used:.1f}% of its budget")
        if any(r["synthetic"] for r in g):
            flags.append("synthetic data")
        if top1.n == 1:
            flags.append("1 seed")
        if expected_seeds and top1.n < expected_seeds:
            flags.append(f"{top1.n} of {expected_seeds} seeds")
        shas = {r["git_sha"] for r in g}
        if len(shas) > 1:
            flags.append(f"mixed code ({len(shas)} git shas)")
        codes = sorted({r["method_code"] for r in g})
        if len(codes) > 1:  # runs of one cell made by different code of the method (`npas grid run` reruns stale runs)
            flags.append(f"mixed method code ({', '.join(c or 'unrecorded' for c in codes)})")
        if any(r["dirty"] for r in g):
            flags.append("dirty tree")
        if any(r["selection"] == "test" for r in g):
            flags.append("selected on test")
        diverged = sum(1 for r in g if r["status"] == "diverged")
        if diverged:
            flags.append(f"{diverged} of {len(g)} diverged")
        unscored = sum(1 for r in done if not _finite(r["top1"]))
        if unscored:  # a completed run whose top-1 is missing, NaN or infinite: named, never averaged in
            flags.append(f"{unscored} of {len(done)} completed without a finite top-1 (left out of the mean)")
        if len({r["params"] for r in g}) > 1:
            flags.append("params differ between runs")
        first = g[0]
        cells.append(Cell(key=key, top1=top1, top5=top5, delta=delta, params=int(first["params"]),
                          gflops=first["gflops"], budget_pct=first["budget_pct"],
                          train_hours=sum(r["train_s"] or 0.0 for r in g) / 3600.0, device=str(first["device"]),
                          runs=len(g), diverged=diverged, seeds=sorted(int(r["seed"]) for r in g), flags=flags,
                          label=next((str(r["label"]) for r in g if r.get("label")), ""), budget_used_pct=used,
                          delta_reduced=delta_reduced,
                          paths=[str(r["path"]) for r in sorted(done, key=lambda r: (int(r["seed"]), str(r["path"])))]))
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


def is_reference(key: dict[str, Any]) -> bool:
    """The cell every "Δ unshared" is paired with (and the plots' reference line): unshared, defaults, no budget."""
    return key["method"] == REFERENCE_METHOD and key["variant"] == "" and key["budget"] is None


def _recipe_key(key: dict[str, Any]) -> tuple:
    return (key["dataset"], key["arch"], key["epochs"], key["recipe"])


def _budget_key(key: dict[str, Any]) -> tuple:
    return _recipe_key(key) + (key["budget"], key["budget_mode"])


def _paired(mine: dict[int, float], other: dict[int, float] | None, bootstrap: int) -> Summary | None:
    """The paired top-1 difference ``mine - other`` over the seeds both have (None without ``other``)."""
    if other is None:
        return None
    return summarize([t - other[s] for s, t in sorted(mine.items()) if s in other], bootstrap)


def _by_seed(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Completed top-1 per seed (the mean where a seed occurs twice, e.g. a repeated run)."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        if r["status"] == "completed" and r["top1"] is not None:
            acc.setdefault(int(r["seed"]), []).append(float(r["top1"]))
    return {s: sum(v) / len(v) for s, v in acc.items()}


def cells_frame(cells: list[Cell]) -> pd.DataFrame:
    """The aggregated cells as a flat table (the cells CSV)."""
    rows = []
    for c in cells:
        rows.append({**c.key, "label": c.label, "regime": c.regime, "params": c.params, "gflops": c.gflops, "budget_pct": c.budget_pct,
                     "n": c.top1.n, "top1_mean": c.top1.mean, "top1_sd": c.top1.sd, "top1_ci95": c.top1.half_width,
                     "top5_mean": c.top5.mean, "delta_unshared_mean": c.delta.mean if c.delta else None,
                     "delta_unshared_ci95": c.delta.half_width if c.delta else None,
                     "delta_n": c.delta.n if c.delta else None,
                     "delta_reduced_mean": c.delta_reduced.mean if c.delta_reduced else None,
                     "delta_reduced_ci95": c.delta_reduced.half_width if c.delta_reduced else None,
                     "budget_used_pct": c.budget_used_pct, "runs": c.runs, "diverged": c.diverged,
                     "seeds": " ".join(map(str, c.seeds)), "train_hours": c.train_hours, "device": c.device,
                     "flags": "; ".join(c.flags)})
    return pd.DataFrame(rows)
