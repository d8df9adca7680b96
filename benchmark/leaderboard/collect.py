"""Collect result records below folders: what counts, and a one-line account of everything that does not.

A leaderboard is only as honest as its inputs. ``collect`` walks the folders for ``result.json`` and
sorts each file into one of:

- **final** records (``completed`` or ``diverged``), the only ones a table uses (a diverged run is
  counted in its cell, never averaged);
- **unfinished** runs: a ``preempted`` record, a run folder with ``running.json`` or checkpoints and
  no record yet, or ``failed.json`` -- each reported in one line;
- **problems**: files ``records.read_record`` cannot use (truncated, not UTF-8, not an object, an
  unknown schema, missing keys), reported with the reason and skipped;
- **duplicates**: the same run id found twice (a copied folder, two result trees). The record kept is
  chosen deterministically -- completed before diverged, then the newest ``created_at``, then the
  smallest path -- and the others are reported.

One bad file never stops the rest, and the order of everything is fixed (sorted paths), so the same
folders always give the same collection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError
from ..records import Record, read_record
from ..run_folder import RESULT, RUN_MARKERS, SUPERSEDED, RunFolder


@dataclass(frozen=True)
class Note:
    """One line about a file or run that is not in the numbers."""

    kind: str  # "problem" | "unfinished" | "failed" | "duplicate"
    path: str
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.text}"


@dataclass
class Collection:
    records: list[Record] = field(default_factory=list)  # final, deduplicated, sorted by path
    notes: list[Note] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for n in self.notes if n.kind == kind)


def display_path(path: str | Path) -> str:
    """``path`` relative to the working folder when below it (stable text for the same tree), else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _rank(rec: Record) -> tuple:
    # completed first, then the newest record, then the smallest path (deterministic)
    return (0 if rec.status == "completed" else 1, _neg(rec.created_at), rec.path)


def _neg(text: str) -> tuple:
    return tuple(-ord(c) for c in text)


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """(result.json files, run folders with a config.json and no result.json) below ``root``: one walk."""
    results, bare = [], []
    for folder, dirs, files in os.walk(root):  # strings, not Path objects: thousands of run folders
        if SUPERSEDED in dirs:  # a stale run's old result, kept aside (grid.supersede): never in a table
            dirs.remove(SUPERSEDED)
        if RESULT in files:
            results.append(os.path.join(folder, RESULT))
        elif any(m in files for m in RUN_MARKERS):  # a grid task can fail before the trainer writes config.json
            bare.append(folder)                     # (e.g. in a phase): still listed
    return results, bare


def _run_folders_without_record(folders: list[str]) -> Iterable[tuple[Path, str, str]]:
    """Run folders (config.json present) that hold no result.json: running, failed or interrupted."""
    for folder in (RunFolder(Path(f)) for f in sorted(folders)):
        if folder.failed.is_file():
            yield folder.root, "failed", _failure(folder)
        elif folder.running.is_file():
            yield folder.root, "unfinished", f"in progress ({folder.running.name})"
        elif folder.has_checkpoints():
            yield folder.root, "unfinished", "interrupted (checkpoints, no record); resumable"
        else:
            yield folder.root, "unfinished", "set up, not trained"


def _failure(folder: RunFolder) -> str:
    """The failure's last line (the exception) from a grid task's failed.json, for the left-out list."""
    last, name = folder.failure_line(), folder.failed.name
    return f"failed: {last} ({name}); rerun it" if last else f"failed (see {name}); rerun it"


def collect(folders: Iterable[str | Path]) -> Collection:
    """Every usable final record below ``folders`` and one note for each thing left out."""
    paths = [Path(f) for f in folders]
    if not paths:
        raise ConfigError("leaderboard: give at least one results folder (e.g. results/).")
    for f in paths:
        if not f.is_dir():
            raise ConfigError(f"leaderboard: {f} is not a folder; give the folder that holds the run folders.")
    out = Collection(folders=[str(f) for f in paths])
    by_id: dict[str, list[Record]] = {}
    found, bare = set(), set()
    for f in paths:
        results, without = _walk(f.resolve())
        found.update(results)
        bare.update(without)
    for path in sorted(found):
        rec, problem = read_record(path)
        if problem is not None:
            out.notes.append(Note("problem", path, problem.problem))
            continue
        if rec is None:
            continue
        if not rec.final:
            stage = rec.stopped_stage
            out.notes.append(Note("unfinished", os.path.dirname(path), f"{rec.status}" + (f" during {stage}" if stage else "")
                                  + "; resumable"))
            continue
        by_id.setdefault(rec.run_id, []).append(rec)
    for rid in sorted(by_id):
        ranked = sorted(by_id[rid], key=_rank)
        out.records.append(ranked[0])
        for other in ranked[1:]:
            out.notes.append(Note("duplicate", other.path, f"run {rid} also at {display_path(ranked[0].path)} (kept: "
                                  f"{ranked[0].status}, {ranked[0].get('created_at')})"))
    for folder, kind, text in _run_folders_without_record(sorted(bare)):
        out.notes.append(Note(kind, str(folder), text))
    out.records.sort(key=lambda r: r.path)
    out.notes.sort(key=lambda n: (n.kind, n.path))
    return out
