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

from .reading import RECORD_CAP, UnreadableFile, read_capped

SCHEMA_VERSION = 2  # of result.json -- 2: run_id; method options only in config.method.options
FINAL = ("completed", "diverged")
STATUSES = ("completed", "diverged", "preempted")
SUPERSEDED = "superseded"  # <run>/superseded/: earlier runs made by other method code (grid.supersede); never read


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
        obj = json.loads(read_capped(path, RECORD_CAP).decode("utf-8"))
    except (OSError, ValueError, UnreadableFile):  # a FIFO, a device, a huge file: never read (reading.py)
        return None
    return obj if isinstance(obj, dict) else None


# -- the fields readers use, below the top level ---------------------------------------------------------
# One table, the reference for every reader (tidy rows, grid states, curves' labels) and checked against the
# writer (``trainer/record.py``; tests/test_records_schema.py validates a real run's record). (dotted path,
# kind, required for a final record). Kinds: "int" (not bool), "count" (int >= 0), "positive" (int >= 1),
# "number" (int or float, not bool; NaN/Infinity allowed: a metric is flagged in its cell, a size is not),
# "size" (a finite number >= 0), "str", "bool", "dict", "list[str]", "list[number]", "list[dict]".
# A key that is absent or null is fine unless required; a present value of the wrong kind is a problem.
FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("arch", "str", True), ("members", "list[str]", False), ("synthetic", "bool", False),
    ("seed", "int", True), ("epochs", "count", False), ("world_size", "positive", False),
    ("created_at", "str", False),
    ("dataset", "dict", True), ("dataset.name", "str", True), ("dataset.num_classes", "positive", False),
    ("budget", "dict", False), ("budget.params", "positive", False), ("budget.mode", "str", False),
    ("params", "dict", True), ("params.total", "count", True), ("params.flops", "dict", False),
    ("params.flops.total", "size", False), ("params.flops.per_member", "list[number]", False),
    ("metrics", "dict", True), ("metrics.top1", "number", False), ("metrics.top5", "number", False),
    ("metrics.members", "list[dict]", False),
    ("timing", "dict", False), ("timing.train_s", "size", False), ("hardware", "dict", False),
    ("hardware.device", "str", False), ("git", "dict", False), ("git.sha", "str", False), ("git.dirty", "bool", False),
    ("selection", "dict", False), ("selection.split", "str", False),
    ("config.method", "dict", False), ("config.method.options", "dict", False), ("config.run", "dict", False),
    ("config.run.name", "str", False), ("config.model", "dict", False), ("config.model.arch", "str", False),
    ("config.optim", "dict", False), ("config.train", "dict", False), ("config.data", "dict", False),
    ("diverged_at", "dict", False),
    ("method_code", "dict", False), ("method_code.digest", "str", False), ("method_code.version", "str", False),
    ("method_code.distribution", "str", False),
)
MEMBER_FIELDS = (("name", "str"), ("top1", "number"), ("top5", "number"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind_ok(v: Any, kind: str) -> bool:
    import math

    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "count":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if kind == "positive":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1
    if kind == "number":
        return _is_number(v)
    if kind == "size":
        return _is_number(v) and math.isfinite(v) and v >= 0
    if kind == "str":
        return isinstance(v, str)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "dict":
        return isinstance(v, dict)
    if kind == "list[str]":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == "list[number]":
        return isinstance(v, list) and all(_is_number(x) for x in v)
    if kind == "list[dict]":
        return isinstance(v, list) and all(isinstance(x, dict) for x in v)
    raise ValueError(kind)


_KIND_TEXT = {"int": "an integer", "count": "an integer >= 0", "positive": "an integer >= 1", "number": "a number",
              "size": "a finite number >= 0", "str": "a string", "bool": "true or false", "dict": "an object",
              "list[str]": "a list of strings", "list[number]": "a list of numbers", "list[dict]": "a list of objects"}


def _lookup(rec: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key; a parent that is not an object counts as not found (its own row says so)."""
    node: Any = rec
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def field_problem(rec: dict[str, Any]) -> str:
    """The first field of a final record that a reader would trip over ('' when none): its dotted name,
    what it should be and what it is."""
    for dotted, kind, required in FIELDS:
        found, value = _lookup(rec, dotted)
        if not found or value is None:
            if required:
                return f"{dotted} is missing"
            continue
        if not _kind_ok(value, kind):
            return f"{dotted} should be {_KIND_TEXT[kind]}, not {_show(value)}"
    for i, member in enumerate(rec["metrics"].get("members") or []):
        for key, kind in MEMBER_FIELDS:
            if member.get(key) is not None and not _kind_ok(member[key], kind):
                return f"metrics.members[{i}].{key} should be {_KIND_TEXT[kind]}, not {_show(member[key])}"
    flops = rec["params"].get("flops") or {}
    members = rec.get("members") or []
    if len(flops.get("per_member") or []) > max(1, len(members)):
        return f"params.flops.per_member lists {len(flops['per_member'])} members, the record {len(members)}"
    return ""


def _show(v: Any) -> str:
    text = json.dumps(v, default=str)
    return (text[:40] + "...") if len(text) > 40 else text


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
        return field_problem(rec)
    return ""


def read_record(path: str | Path) -> tuple[dict[str, Any] | None, RecordProblem | None]:
    """(record, None) for a usable record; (None, problem) otherwise; (None, None) when there is no file."""
    path = Path(path)
    try:
        raw = read_capped(path, RECORD_CAP)
    except FileNotFoundError:
        return None, None
    except UnreadableFile as exc:
        return None, RecordProblem(path, str(exc).split(": ", 1)[-1])
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
