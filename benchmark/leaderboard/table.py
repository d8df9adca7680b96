"""Result records -> comparison tables (pandas + tabulate), as markdown.

Reads every ``result.json`` below a folder. Runs on the synthetic data set are labelled as such in
every row, so a synthetic number can never pass for a CIFAR one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..records import scan_records

COLUMNS = ["method", "arch", "dataset", "budget", "params", "GFLOPs", "top1", "top5", "status", "time_s"]


def load_records(folder: str | Path, problems: list | None = None) -> list[dict[str, Any]]:
    """Every usable record below ``folder``; damaged or foreign ones are skipped, each reported with a
    warning (and appended to ``problems`` when given)."""
    records = []
    for rec, problem in scan_records(folder):
        if problem is not None:
            warnings.warn(f"skipping record {problem}", stacklevel=2)
            if problems is not None:
                problems.append(problem)
            continue
        if rec is not None:
            records.append(rec)
    return records


def row(rec: dict[str, Any]) -> dict[str, Any]:
    ds = rec.get("dataset", {})
    name = ds.get("name", "?")
    if rec.get("synthetic") and "synthetic" not in name:
        name += " (synthetic)"
    budget = rec.get("budget")
    flops = rec.get("params", {}).get("flops", {})
    metrics = rec.get("metrics") or {}
    return {
        "method": rec["method"]["name"],
        "arch": rec.get("arch"),
        "dataset": name,
        "budget": f"{budget['params']:,}" if budget else "none",
        "params": rec["params"]["total"],
        "GFLOPs": (flops.get("total", 0) / 1e9) if flops else None,
        "top1": metrics.get("top1"),
        "top5": metrics.get("top5"),
        "status": rec.get("status"),
        "time_s": rec.get("timing", {}).get("wall_s"),
    }


def frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([row(r) for r in records], columns=COLUMNS)


def to_markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".2f", intfmt=",")
