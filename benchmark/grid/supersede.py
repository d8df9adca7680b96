"""Moving a stale run aside before it runs again, so the old result is kept and never mixed with the new one.

A finished run whose record was made by other method code than is installed now (``method_code.code_change``)
runs again from scratch: its checkpoints came from the old code too. Everything in the run folder except the
folder lock moves to ``<run>/superseded/<created_at>-<digest>/`` (the old record's time and method digest), then
the new history begins with a ``superseded`` event that names where the old run went and why.

Crash-safe: ``result.json`` moves last, so until it has moved the run still reads as finished-and-stale and the
next task finishes the move into the same folder (its name comes from the old record alone). Leaderboards and grid
states never look below ``superseded/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import NPASError
from ..records import Record
from ..run_folder import LOCK, RESULT, SUPERSEDED, RunFolder
from ..trainer.history import append_event

_STAYS = {LOCK, SUPERSEDED}


def superseded_folder(run_dir: Path, rec: Record | dict[str, Any]) -> Path:
    """Where a stale record's run goes: named by its creation time and method digest (the same on a retry)."""
    when = re.sub(r"[^0-9A-Za-z]", "", str(rec.get("created_at") or "")) or "undated"
    digest = str((rec.get("method_code") or {}).get("digest") or "").split(":", 1)[-1][:8] or "nocode"
    return RunFolder(run_dir).superseded / f"{when}-{digest}"


def supersede(run_dir: Path, rec: Record | dict[str, Any], reason: str) -> Path:
    """Move the finished run in ``run_dir`` (its record ``rec``) aside; returns the folder it went to. The caller
    holds the run folder's lock."""
    target = superseded_folder(run_dir, rec)
    target.mkdir(parents=True, exist_ok=True)
    items = sorted(p for p in run_dir.iterdir() if p.name not in _STAYS and p.name != RESULT)
    try:
        for item in items + [RunFolder(run_dir).result]:  # the record last: until it moves, the run reads finished
            os.replace(item, target / item.name)
    except OSError as exc:
        raise NPASError(f"run {run_dir.name}: could not move its stale run to {target} ({exc}); move or delete it "
                        "by hand, or keep it with --keep-stale") from exc
    append_event(run_dir, "superseded", reason=reason, moved_to=str(target.relative_to(run_dir)))
    return target
