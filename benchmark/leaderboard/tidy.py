"""Final records -> one tidy table: a row per run and per scored entity (the model; for an ensemble, the
ensemble and each member), with the columns every table, plot and CSV is computed from."""

from __future__ import annotations

from functools import lru_cache
from collections.abc import Mapping
from typing import Any, Iterable

import pandas as pd

from ..records import Record, as_record

COLUMNS = ["dataset", "synthetic", "arch", "members", "method", "label", "variant", "recipe", "budget", "budget_mode",
           "budget_pct", "params", "budget_used_pct", "gflops", "entity", "top1", "top5", "status", "seed", "epochs", "train_s", "device",
           "git_sha", "dirty", "method_code", "selection", "run_id", "path"]


def method_code_label(code: Any) -> str:
    """``0.2.0 a1b2c3d4`` for a record's method code (``method_code.describe``); "" where the record has none."""
    from ..method_code import describe

    return describe(code) if isinstance(code, Mapping) and code.get("digest") else ""


@lru_cache(maxsize=256)
def _defaults(method: str) -> dict[str, Any]:
    from ..options import to_dict
    from ..plugins import METHODS

    try:
        return to_dict(METHODS.get(method).Options())
    except Exception:  # noqa: BLE001 - a plugin not installed here: every option is shown
        return {}


def variant_of(method: str, options: Mapping[str, Any]) -> str:
    """The options that differ from the method's defaults, ``k=v`` sorted ("" = the defaults)."""
    defaults = _defaults(method)
    parts = []
    for k in sorted(options):
        v = options[k]
        if k in defaults and _same(defaults[k], v):
            continue
        parts.append(f"{k}={_fmt(v)}")
    return ", ".join(parts)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


@lru_cache(maxsize=256)
def _unshared(arch: str, dataset: str, num_classes: int | None) -> int | None:
    from ..experiment import unshared_size

    try:
        return unshared_size(arch, dataset, num_classes)
    except Exception:  # noqa: BLE001 - an architecture not registered here
        return None


# what a cell must share besides method, variant, budget and seed: the training recipe (optimiser,
# schedule, epochs, batch, augmentation, data subsets), without paths and the per-run seed
_RECIPE_DROP = {"train": ("seed", "threads", "device", "eval_batch_size"),
                "data": ("root", "download", "num_workers", "os_cache", "beton_dir")}


def recipe_of(config: dict[str, Any]) -> str:
    """A short digest of the training recipe: runs that differ in it never share a cell."""
    from ..experiment import digest

    parts = {}
    for section in ("optim", "train", "data"):
        d = dict(config.get(section) or {})
        for k in _RECIPE_DROP.get(section, ()):
            d.pop(k, None)
        parts[section] = d
    return digest(parts, 8)


def _dataset(rec: Record) -> str:
    return rec.dataset + (" (synthetic)" if rec.synthetic and "synthetic" not in rec.dataset else "")


def label_of(rec: Record) -> str:
    """The variant's name as the grid spec labels it (``labels = [...]``; stored as ``run.name`` by the grid),
    "" for a run without one (then the tables show its options)."""
    return "" if rec.run_name == "default" else rec.run_name


def reference_archs(rec: Record) -> list[str]:
    """The unshared network(s) a run's budget is a share of: the members of an ensemble (several networks,
    summed, as the budget check measures them), else the *requested* architecture -- not the network a
    method trained in its place (``reduced`` trains a narrower WRN and lists it as its member)."""
    if len(rec.members) > 1:
        return list(rec.members)
    return [rec.requested_arch or rec.arch]


def rows_of(rec: Record | dict[str, Any]) -> list[dict[str, Any]]:
    rec = as_record(rec)
    cfg = rec.get("config", {})
    classes = rec.num_classes if rec.dataset == "synthetic" else None
    # % of the unshared network(s) the budget stands for (see reference_archs), and how much of its budget a
    # run's model uses (params / budget): a method that leaves a tenth of its budget unused is flagged
    sizes = [_unshared(a, rec.dataset, classes) for a in reference_archs(rec)]
    ref = None if any(x is None for x in sizes) else sum(x for x in sizes if x is not None)
    budgeted = rec.budget_params if rec.budget_mode == "total" else None
    pct = (100.0 * budgeted / ref) if budgeted is not None and ref else None
    used = (100.0 * rec.params_total / budgeted) if budgeted and rec.params_total is not None else None
    base = {
        "dataset": _dataset(rec), "synthetic": rec.synthetic, "arch": rec.arch,
        "members": ",".join(rec.members or (rec.arch,)), "method": rec.method, "label": label_of(rec),
        "variant": variant_of(rec.method, rec.method_options), "recipe": recipe_of(cfg),
        "budget": rec.budget_params, "budget_mode": rec.budget_mode,
        "budget_pct": pct, "params": rec.params_total, "budget_used_pct": used, "status": rec.status, "seed": rec.seed,
        "epochs": rec.epochs, "train_s": (rec.train_s or 0.0) * rec.world_size,
        "device": "gpu" if rec.device.startswith("cuda") else "cpu", "git_sha": rec.git_sha,
        "dirty": rec.git_dirty, "method_code": method_code_label(rec.method_code),
        "selection": rec.selection_split, "run_id": rec.run_id,
        "path": rec.path,
    }
    ok = rec.status == "completed"
    per_member = rec.flops_per_member
    rows = [{**base, "entity": "ensemble" if len(per_member) > 1 else "model",
             "gflops": (rec.flops_total or 0) / 1e9 if rec.flops_total is not None else None,
             "top1": rec.top1 if ok else None, "top5": rec.top5 if ok else None}]
    for i, m in enumerate(rec.member_scores):
        rows.append({**base, "entity": f"member {m.name}",
                     "gflops": per_member[i] / 1e9 if i < len(per_member) else None,
                     "top1": m.top1 if ok else None, "top5": m.top5 if ok else None})
    return rows


def _order(r: dict[str, Any]) -> tuple:
    return (r["dataset"], r["arch"], r["method"], r["variant"], r["recipe"], r["budget"] is not None,
            r["budget"] or 0, r["entity"], r["seed"] if r["seed"] is not None else -1, r["run_id"])


def tidy_rows(records: Iterable[Record | dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per run and entity (keys ``COLUMNS``, missing values None), in a fixed order."""
    return sorted((r for rec in records for r in rows_of(rec)), key=_order)


def tidy(records: list[Record] | None = None, rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """The tidy table as a DataFrame (columns ``COLUMNS``), in ``tidy_rows``' order."""
    return pd.DataFrame(rows if rows is not None else tidy_rows(records or []), columns=COLUMNS)
