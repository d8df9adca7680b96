"""Result records -> comparison tables (pandas + tabulate), as markdown.

Reads every ``result.json`` below a folder. Runs on the synthetic data set are labelled as such in
every row, so a synthetic number can never pass for a CIFAR one.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from ..records import Record, as_record


COLUMNS = ["method", "arch", "dataset", "budget", "params", "GFLOPs", "top1", "top5", "status", "time_s"]


def row(rec: Record | dict[str, Any]) -> dict[str, Any]:
    rec = as_record(rec)
    name = rec.dataset + (" (synthetic)" if rec.synthetic and "synthetic" not in rec.dataset else "")
    return {
        "method": rec.method,
        "arch": rec.arch or None,
        "dataset": name,
        "budget": f"{rec.budget_params:,}" if rec.budget_params is not None else "none",
        "params": rec.params_total,
        "GFLOPs": (rec.flops_total or 0) / 1e9 if rec.flops_total is not None else None,
        "top1": rec.top1,
        "top5": rec.top5,
        "status": rec.status or None,
        "time_s": rec.wall_s,
    }


def frame(records: Iterable[Record | dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([row(r) for r in records], columns=COLUMNS)


def to_markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".2f", intfmt=",")
