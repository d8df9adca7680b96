"""``npas leaderboard``: collect -> tidy -> aggregate -> markdown + CSVs (+ plots and training curves), written
atomically."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..atomic import write_text
from ..errors import ConfigError
from ..records import Record, as_record
from ..storage import storage_error
from .aggregate import Cell, aggregate, cells_frame
from .collect import Collection, collect
from .references import load_references
from .render import render
from .tidy import tidy, tidy_rows


@dataclass
class Leaderboard:
    collection: Collection
    runs: pd.DataFrame
    cells: list[Cell]
    markdown: str
    written: list[Path]


def _csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.4f", lineterminator="\n")
    return buf.getvalue()


def anytime_frontiers(records: Iterable[Record]) -> dict[tuple, list[list[str]]]:
    """(dataset, arch, method, variant) -> rows of the ensemble's anytime table, top-1 averaged over seeds."""
    from .tidy import _dataset, label_of, variant_of

    acc: dict[tuple, dict[str, list]] = {}
    for rec in map(as_record, records):
        rows = (rec.get("metrics") or {}).get("anytime") if rec.status == "completed" else None
        if not rows:
            continue
        options = ((rec.get("config") or {}).get("method") or {}).get("options", {})
        key = (_dataset(rec), rec.arch, rec.method, label_of(rec) or variant_of(rec.method, options) or "defaults")
        table = acc.setdefault(key, {})
        for r in rows:
            name = "+".join(r.get("members", [])) if isinstance(r.get("members"), list) else str(r.get("subset"))
            entry = table.setdefault(name, [r.get("flops", 0), []])
            if r.get("top1") is not None:
                entry[1].append(r["top1"])
    out = {}
    for key, table in acc.items():
        # the frontier of the seed-averaged accuracies: a subset is on it when no cheaper one is as accurate
        means = sorted(((flops, -(sum(t) / len(t)), name) for name, (flops, t) in table.items() if t))
        rows, best = [], float("-inf")
        for flops, neg, name in means:
            rows.append([name, f"{flops / 1e9:.3f}", f"{-neg:.2f}", "yes" if -neg > best else ""])
            best = max(best, -neg)
        out[key] = rows
    return out


def build_leaderboard(folders: Iterable[str | Path], out: str | Path, command: str, *, bootstrap: int = 0,
                      expected_seeds: int | None = None, plots: bool = True,
                      references: str | Path | None = None, notes: dict[str, str] | None = None) -> Leaderboard:
    """Write ``out`` (markdown) and beside it ``<stem>_runs.csv``, ``<stem>_cells.csv`` and the plots.
    Every input is checked before anything is written."""
    out = Path(out)
    if out.suffix != ".md":
        raise ConfigError(f"--out: {out} should be a markdown file (.md)")
    refs = load_references(references) if references else []
    collection = collect(folders)
    if not collection.records and not collection.notes:
        raise ConfigError(f"leaderboard: no result.json below {', '.join(collection.folders)}; run something first "
                          "(e.g. npas demo, npas grid run) or point at the folder that holds the run folders.")
    rows = tidy_rows(collection.records)
    runs = tidy(rows=rows)
    cells = aggregate(rows, bootstrap=bootstrap, expected_seeds=expected_seeds)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.stem}-staging-", dir=out.parent))
    except OSError as exc:
        raise storage_error(exc, "create the --out folder", out.parent) from None
    try:
        try:
            text = _write_all(stage, out.name, collection, runs, cells, refs, command, notes, plots)
        except OSError as exc:
            raise storage_error(exc, "write the leaderboard", out.parent) from None
        written = _publish(stage, out.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Leaderboard(collection, runs, cells, text, written)


def _write_all(folder: Path, name: str, collection: Collection, runs: pd.DataFrame, cells: list[Cell], refs: list,
               command: str, notes: dict[str, str] | None, plots: bool) -> str:
    """Every output into ``folder`` (the staging folder); returns the markdown."""
    out = folder / name
    figures: dict[tuple[str, str], str] = {}
    if plots and cells:
        from .plots import write_plots

        for key, path in write_plots(cells, out.parent, out.stem).items():
            figures[key] = path.name
    frontiers = anytime_frontiers(collection.records)
    anytime_figures: dict[tuple, str] = {}
    if plots and frontiers:
        from .plots import write_anytime_plots

        for key, path in write_anytime_plots(frontiers, out.parent, out.stem).items():
            anytime_figures[key] = path.name
    curves: dict[tuple[str, str], tuple[str, list[str]]] = {}
    if plots and cells:
        from .curves import training_curves, write_curve_plots

        data = training_curves(cells)
        for key, path in write_curve_plots(data, out.parent, out.stem).items():
            curves[key] = (path.name, data[key].notes)
    text = render(cells, collection, command, frontiers, figures, anytime_figures, refs, curves)
    if notes:  # a grid spec's [notes]: why a method's rows look as they do in this setting
        text += "\n## Notes (from the grid spec)\n\n" + "\n".join(f"- `{m}`: {n}" for m, n in notes.items()) + "\n"
    stem = out.with_suffix("")
    write_text(f"{stem}_runs.csv", _csv(runs.drop(columns=["path"])))
    write_text(f"{stem}_cells.csv", _csv(cells_frame(cells)))
    write_text(out, text)
    return text


def _publish(stage: Path, folder: Path) -> list[Path]:
    """Move every staged file into ``folder``, the markdown last; refused before any move when a target is
    not a plain file (a folder where the markdown should go), so a failure leaves the old outputs whole."""
    from ..errors import StorageError

    files = sorted(stage.iterdir(), key=lambda p: (p.suffix == ".md", p.name))
    for p in files:
        target = folder / p.name
        if target.exists() and not target.is_file():
            raise StorageError(f"could not write {target}: it is {'a folder' if target.is_dir() else 'not a file'}; "
                               "move it away or give another --out. Nothing was written.")
    written = []
    for p in files:
        os.replace(p, folder / p.name)
        written.append(folder / p.name)
    return written


def board_summary(board: Leaderboard) -> list[str]:
    """What ``npas leaderboard`` and ``npas grid collect`` print: the counts, one line per run left out, the files."""
    c = board.collection
    kinds = ", ".join(f"{c.count(k)} {k}" for k in ("problem", "unfinished", "failed", "duplicate") if c.count(k))
    return ([f"{len(c.records)} finished runs in {len(board.cells)} cells; left out: " + (kinds or "nothing")]
            + [f"  {note}" for note in c.notes] + [f"wrote {path}" for path in board.written])
