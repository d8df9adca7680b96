"""Reading result records (``result.json``) that may be damaged, foreign or half-written by old code.

Every reader of records -- the grid's states, ``npas demo``'s table, the leaderboards -- goes through
``read_record``: a record that is not valid UTF-8 JSON, not an object, of another schema, or lacks
what a table needs is *reported* (``RecordProblem``: the path and what is wrong) and skipped, never
a traceback and never a row of guesses. A grid treats such a run as unfinished and reruns it (the
rerun resumes from its checkpoints and writes a good record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # of result.json -- 2: run_id; method options only in config.method.options
FINAL = ("completed", "diverged")
STATUSES = ("completed", "diverged", "preempted")


@dataclass(frozen=True)
class RecordProblem:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is missing, unreadable, not JSON or not an object
    (the markers beside a run: config.json, running.json, failed.json...)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _shape_problem(rec: Any) -> str:
    """What makes ``rec`` unusable as a record ('' when it is fine)."""
    if not isinstance(rec, dict):
        return f"not a JSON object but a {type(rec).__name__}"
    if rec.get("schema_version") != SCHEMA_VERSION:
        return f"record schema {rec.get('schema_version')!r}, this suite reads {SCHEMA_VERSION} (rerun the run)"
    if rec.get("status") not in STATUSES:
        return f"unknown status {rec.get('status')!r}"
    if not isinstance(rec.get("run_id"), str):
        return "no run_id"
    if not isinstance(rec.get("method"), dict) or not isinstance(rec["method"].get("name"), str):
        return "no method.name"
    if not isinstance(rec.get("config"), dict):
        return "no config"
    if rec["status"] in FINAL:
        for key, kind in (("params", dict), ("metrics", dict), ("dataset", dict), ("arch", str)):
            if not isinstance(rec.get(key), kind):
                return f"a {rec['status']} record without {key}"
        if not isinstance(rec["params"].get("total"), int):
            return "no params.total"
    return ""


def read_record(path: str | Path) -> tuple[dict[str, Any] | None, RecordProblem | None]:
    """(record, None) for a usable record; (None, problem) otherwise; (None, None) when there is no file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, RecordProblem(path, f"cannot be read ({exc.strerror or exc})")
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, RecordProblem(path, "not UTF-8 text")
    except ValueError as exc:
        return None, RecordProblem(path, f"not valid JSON ({exc}; truncated?)")
    problem = _shape_problem(rec)
    if problem:
        return None, RecordProblem(path, problem)
    return rec, None
