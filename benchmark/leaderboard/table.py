"""Result records -> comparison tables (pandas + tabulate), as markdown.

Reads every ``result.json`` below a folder. Runs on the synthetic data set are labelled as such in
every row, so a synthetic number can never pass for a CIFAR one.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd


COLUMNS = ["method", "arch", "dataset", "budget", "params", "GFLOPs", "top1", "top5", "status", "time_s"]


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
