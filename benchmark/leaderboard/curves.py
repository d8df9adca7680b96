"""Training curves beside the leaderboard: for each (data set, architecture) one figure, training loss and
evaluation top-1 per epoch, a line per cell (method, variant, budget: the mean over its seeds) and the
seeds' min-max as a band around it.

Why: the tables say where the runs ended; the curves say how they got there -- a method still climbing at
its last epoch, one that stalled early, a seed that fell behind -- which decides whether a longer schedule
would change a comparison.

The data are the ``metrics.jsonl`` beside each completed run's record ("train" lines: the epoch's mean
loss; "eval" lines: top-1, of the whole ensemble for an ensemble). A file that is missing, empty or not
wholly valid (a line that is not a JSON object, an epoch twice, a value that is not a number) leaves that
run out of the curves with a note, listed under the figure; it never stops the leaderboard. A section
with no readable run gets no figure. Same records, same bytes (``plots._save``), written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aggregate import Cell
from .collect import display_path
from .plots import MARKERS, _figure, _save, _slug

CURVES = {"train": "loss", "eval": "top1"}  # the line kind and the value each panel draws


@dataclass
class Series:
    """One cell's curve: at each epoch the mean, min and max over the seeds that logged it, and their count."""

    epochs: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    n: list[int] = field(default_factory=list)


@dataclass
class CellCurves:
    cell: Cell
    label: str  # the legend's name: the row's name, its budget, and how many seeds are drawn
    seeds: int  # runs drawn
    train_loss: Series
    eval_top1: Series


@dataclass
class SectionCurves:
    cells: list[CellCurves] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # runs left out, one line each
    splits: list[str] = field(default_factory=list)  # the evaluation split(s) of the eval lines


def read_curves(folder: Path) -> tuple[dict[str, dict[int, float]], set[str], str | None]:
    """({"train": {epoch: loss}, "eval": {epoch: top1}}, eval splits, None), or ({}, set(), why not)."""
    path = folder / "metrics.jsonl"
    from ..reading import LOG_CAP, UnreadableFile, read_capped

    try:
        text = read_capped(path, LOG_CAP).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return {}, set(), "no metrics.jsonl"
    except UnreadableFile as exc:
        return {}, set(), f"metrics.jsonl {str(exc).split(': ', 1)[-1]}"
    except OSError as exc:
        return {}, set(), f"metrics.jsonl unreadable ({exc.strerror or type(exc).__name__})"
    points: dict[str, dict[int, float]] = {kind: {} for kind in CURVES}
    splits: set[str] = set()
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        return {}, set(), "metrics.jsonl is empty"
    for i, line in lines:
        try:
            rec: Any = json.loads(line)
        except ValueError:
            return {}, set(), f"metrics.jsonl line {i} is not valid JSON"
        if not isinstance(rec, dict):
            return {}, set(), f"metrics.jsonl line {i} is not a JSON object"
        kind = rec.get("kind")
        if kind not in CURVES:
            continue
        epoch, value = rec.get("epoch"), rec.get(CURVES[kind])
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            return {}, set(), f"metrics.jsonl line {i}: no epoch"
        if epoch in points[kind]:
            return {}, set(), f"metrics.jsonl line {i}: epoch {epoch} logged twice"
        if value is None:  # a non-finite number, written as null: no point at this epoch
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return {}, set(), f"metrics.jsonl line {i}: {CURVES[kind]} is not a number"
        points[kind][epoch] = float(value)
        if kind == "eval" and isinstance(rec.get("split"), str):
            splits.add(rec["split"])
    if not any(points.values()):
        return {}, set(), "metrics.jsonl has no train or eval lines"
    return points, splits, None


def _series(runs: list[dict[int, float]]) -> Series:
    out = Series()
    for epoch in sorted({e for r in runs for e in r}):
        vals = [r[epoch] for r in runs if epoch in r]
        out.epochs.append(epoch)
        out.mean.append(math.fsum(vals) / len(vals))
        out.low.append(min(vals))
        out.high.append(max(vals))
        out.n.append(len(vals))
    return out


def training_curves(cells: list[Cell]) -> dict[tuple[str, str], SectionCurves]:
    """(data set, architecture) -> the curves of its model/ensemble cells, for sections with one at least."""
    sections: dict[tuple[str, str], SectionCurves] = {}
    for c in cells:
        if c.key["entity"] not in ("model", "ensemble") or not c.paths:
            continue
        section = sections.setdefault((c.key["dataset"], c.key["arch"]), SectionCurves())
        runs = []
        for path in c.paths:
            points, splits, problem = read_curves(Path(path).parent)
            if problem is not None:
                section.notes.append(f"`{display_path(Path(path).parent)}`: {problem}")
                continue
            runs.append(points)
            section.splits = sorted(set(section.splits) | splits)
        if not runs:
            continue
        budget = "" if c.key["budget"] is None else f" @ {int(c.key['budget']):,}"
        drawn = f"n={len(runs)}" + (f" of {len(c.paths)}" if len(runs) < len(c.paths) else "")
        section.cells.append(CellCurves(c, f"{c.name}{budget} ({drawn})", len(runs),
                                        _series([r["train"] for r in runs]), _series([r["eval"] for r in runs])))
    for section in sections.values():  # a label twice (two recipes of one cell): name the recipe
        labels = [cc.label for cc in section.cells]
        for cc in section.cells:
            if labels.count(cc.label) > 1:
                cc.label += f" [recipe {cc.cell.key['recipe']}]"
    return {k: s for k, s in sorted(sections.items()) if s.cells}


def write_curve_plots(curves: dict[tuple[str, str], SectionCurves], folder: Path, stem: str) -> dict[tuple[str, str], Path]:
    """One PNG per section of ``training_curves``: ``<stem>_curves_<data set>_<arch>.png``."""
    plt = _figure()
    out = {}
    for (dataset, arch), section in sorted(curves.items()):
        n = len(section.cells)
        height = 4.2 + 0.17 * n
        # one epoch axis: with train.eval_every > 1 the eval points are fewer, not elsewhere
        fig, (loss_ax, top1_ax) = plt.subplots(1, 2, figsize=(11, height), dpi=100, sharex=True)
        for i, cc in enumerate(section.cells):
            color = f"C{i % 10}"
            for ax, s in ((loss_ax, cc.train_loss), (top1_ax, cc.eval_top1)):
                if not s.epochs:
                    continue
                ax.fill_between(s.epochs, s.low, s.high, color=color, alpha=0.15, linewidth=0)
                ax.plot(s.epochs, s.mean, color=color, marker=MARKERS[i % len(MARKERS)], markersize=3, linewidth=1.2,
                        label=cc.label if ax is loss_ax or not cc.train_loss.epochs else None)
        split = "/".join(section.splits) or "eval"
        for ax, ylabel in ((loss_ax, "training loss (epoch mean)"), (top1_ax, f"{split} top-1 (%)")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.suptitle(f"{dataset}, {arch}: mean over seeds (band: min-max of the seeds)", fontsize=10)
        bottom = (0.55 + 0.17 * n) / height
        fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.45 / height, bottom=bottom, wspace=0.22)
        handles, labels = [], []
        for ax in (loss_ax, top1_ax):
            h, lab = ax.get_legend_handles_labels()
            handles += h
            labels += lab
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.005), fontsize=7, ncol=1, frameon=False)
        out[(dataset, arch)] = _save(fig, folder / f"{stem}_curves_{_slug(dataset)}_{_slug(arch)}.png")
    return out


__all__ = ["CellCurves", "Series", "SectionCurves", "read_curves", "training_curves", "write_curve_plots"]
