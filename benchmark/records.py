"""Reading result records (``result.json``) that may be damaged, foreign, half-written, or written by old code.

Every reader of records -- the grid's states, ``npas demo``'s table, the leaderboards -- goes through
``read_record`` and gets a ``Record``: a typed, frozen value. A record that is not valid UTF-8 JSON, not
an object, of a schema newer than this suite knows, or lacks what a table needs is *reported*
(``RecordProblem``: the path and what is wrong) and skipped, never a traceback and never a row of guesses. A
grid treats such a run as unfinished and reruns it (the rerun resumes from its checkpoints and writes a good
record).

A record of an *earlier* schema is migrated in the reader (``migrate``), never refused: for a user such
records are GPU-days, and every change between the schemas so far is a renaming or a move:

- 1 -> 2: the id ``config_hash`` is also stored as ``run_id``; the method's resolved options move from
  ``method.options`` to ``config.method.options`` (schema 1 kept only the user's overrides there).
- 2 -> 3: ``config_hash`` is dropped (one name for the id: ``run_id``).
"""

from __future__ import annotations

import copy
import json
from types import MappingProxyType
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .reading import RECORD_CAP, UnreadableFile, read_capped

SCHEMA_VERSION = 3  # of result.json -- 2: run_id; method options only in config.method.options. 3: no config_hash
FINAL = ("completed", "diverged")
STATUSES = ("completed", "diverged", "preempted")


@dataclass(frozen=True)
class RecordProblem:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


# -- migrations: schema n -> n + 1, each a pure function of the record (see the module docstring) ----------
def _from_1(rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(rec, schema_version=2)
    if "run_id" not in out and isinstance(rec.get(OLD_ID), str):
        out["run_id"] = rec[OLD_ID]
    method = dict(rec.get("method") or {}) if isinstance(rec.get("method"), dict) else rec.get("method")
    if isinstance(method, dict) and isinstance(rec.get("config"), dict):
        options = method.pop("options", None)
        config = dict(rec["config"])
        section = dict(config.get("method") or {}) if isinstance(config.get("method"), dict) else {}
        if isinstance(options, dict):  # the resolved options (schema 1's config held the overrides only)
            section["options"] = {**(section.get("options") or {}), **options}
        config["method"] = section
        out["config"], out["method"] = config, method
    return out


def _from_2(rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(with_run_id(rec), schema_version=3)
    out.pop(OLD_ID, None)
    return out


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_1, 2: _from_2}


def migrate(rec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(``rec`` in the current schema, '') or (``rec``, why it cannot be read): an earlier schema is migrated
    step by step; a newer one is refused by name (upgrade the suite); no schema at all is refused."""
    version = rec.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return rec, f"record schema {version!r} is not one this suite knows (it reads 1 to {SCHEMA_VERSION})"
    if version > SCHEMA_VERSION:
        return rec, (f"record schema {version} is newer than this suite reads ({SCHEMA_VERSION}); upgrade npasbench "
                     "to read it")
    while rec["schema_version"] < SCHEMA_VERSION:
        rec = MIGRATIONS[rec["schema_version"]](rec)
    return rec, ""


@dataclass(frozen=True)
class MemberScore:
    """One ensemble member's test scores."""

    name: str
    top1: float | None
    top5: float | None


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _frozen(v: Any) -> Any:
    """``v`` read-only all the way down: objects as mapping proxies, lists as tuples."""
    if isinstance(v, dict):
        return MappingProxyType({k: _frozen(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    return v


@dataclass(frozen=True)
class Record(Mapping):
    """One run's record, checked (``read_record``) and in the current schema: what every reader reads.

    The fields readers use are typed attributes; the whole record stays available read-only by key
    (``rec["params"]``, ``rec.get("timing")``: a copy, so nothing a reader does changes the record), and
    ``to_dict()`` gives the JSON object back. ``path`` is where it was read from ('' for one built in memory).
    """

    run_id: str
    status: str
    method: str
    arch: str
    seed: int | None
    created_at: str
    dataset: str
    num_classes: int | None
    synthetic: bool
    members: tuple[str, ...]
    requested_arch: str | None  # config.model.arch: the network a budget is a share of (``reduced`` trains another)
    run_name: str               # config.run.name: the grid's label of the variant
    budget_params: int | None
    budget_mode: str | None
    params_total: int | None
    flops_total: float | None
    flops_per_member: tuple[float, ...]
    top1: float | None
    top5: float | None
    member_scores: tuple[MemberScore, ...]
    epochs: int | None
    world_size: int
    train_s: float | None
    wall_s: float | None
    device: str
    git_sha: str
    git_dirty: bool
    selection_split: str
    stopped_stage: str | None
    # config.method.options and method_code, read-only views (no copy: a leaderboard reads them for every record)
    method_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    method_code: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    path: str = ""
    migrated_from: int | None = None  # the schema it was written in, when older than this suite's
    _data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, rec: Mapping[str, Any], path: str | Path = "", migrated_from: int | None = None,
           owned: bool = False) -> "Record":
        """The typed value of a current-schema record object (``read_record`` checks one read from a file).
        ``owned``: nobody else holds ``rec`` (it was just parsed), so it is kept without a copy."""
        if isinstance(rec, Record):
            return rec.at(path) if path else rec
        data = dict(rec) if owned else copy.deepcopy(dict(rec))
        ds, budget, params, metrics = (_obj(data.get(k)) for k in ("dataset", "budget", "params", "metrics"))
        flops = _obj(params.get("flops"))
        config = _obj(data.get("config"))
        timing, git = _obj(data.get("timing")), _obj(data.get("git"))
        members = tuple(m for m in data.get("members") or [] if isinstance(m, str))
        return cls(
            run_id=str(data.get("run_id", "")), status=str(data.get("status", "")),
            method=str(_obj(data.get("method")).get("name", "")), arch=str(data.get("arch") or ""),
            seed=data.get("seed") if isinstance(data.get("seed"), int) else None,
            created_at=str(data.get("created_at") or ""), dataset=str(ds.get("name", "?")),
            num_classes=ds.get("num_classes") if isinstance(ds.get("num_classes"), int) else None,
            synthetic=bool(data.get("synthetic")), members=members,
            requested_arch=_obj(config.get("model")).get("arch"), run_name=str(_obj(config.get("run")).get("name") or ""),
            budget_params=budget.get("params") if data.get("budget") else None,
            budget_mode=budget.get("mode") if data.get("budget") else None,
            params_total=params.get("total") if isinstance(params.get("total"), int) else None,
            flops_total=_num(flops.get("total")) if flops else None,
            flops_per_member=tuple(x for x in flops.get("per_member") or [] if _num(x) is not None),
            top1=_num(metrics.get("top1")), top5=_num(metrics.get("top5")),
            member_scores=tuple(MemberScore(str(m.get("name", i)), _num(m.get("top1")), _num(m.get("top5")))
                                for i, m in enumerate(metrics.get("members") or []) if isinstance(m, dict)),
            epochs=data.get("epochs") if isinstance(data.get("epochs"), int) else None,
            world_size=data.get("world_size") or 1, train_s=_num(timing.get("train_s")), wall_s=_num(timing.get("wall_s")),
            device=str(_obj(data.get("hardware")).get("device", "cpu")), git_sha=str(git.get("sha") or ""),
            git_dirty=bool(git.get("dirty")), selection_split=str(_obj(data.get("selection")).get("split", "none")),
            stopped_stage=_obj(data.get("stopped")).get("stage"),
            method_options=_frozen(_obj(_obj(config.get("method")).get("options"))),
            method_code=_frozen(data["method_code"]) if isinstance(data.get("method_code"), dict) else None,
            path=str(path), migrated_from=migrated_from, _data=data)

    def at(self, path: str | Path) -> "Record":
        """The same record, read from ``path``."""
        return replace(self, path=str(path))

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object it is (a copy)."""
        return copy.deepcopy(self._data)

    # read-only access by key: a copy of containers, so a reader cannot change the record
    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return copy.deepcopy(value) if isinstance(value, (dict, list)) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def as_record(rec: Mapping[str, Any]) -> Record:
    """``rec`` as a ``Record`` (a record object built in memory, e.g. by a test or a benchmark, is taken as is)."""
    return rec if isinstance(rec, Record) else Record.of(rec, path=str(rec.get("_path", "")))


OLD_ID = "config_hash"  # the id's name before schema 3, in records, checkpoints and phase artifacts


def with_run_id(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` (a checkpoint payload, a phase artifact) with its id under ``run_id``: one written before the
    id had one name (schema 3) carries it as ``config_hash`` only, and must still resume."""
    if "run_id" not in obj and OLD_ID in obj:
        obj = dict(obj)
        obj["run_id"] = obj.pop(OLD_ID)
    return obj


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


def field_problem(rec: Mapping[str, Any]) -> str:
    """The first field of a final record that a reader would trip over ('' when none): its dotted name,
    what it should be and what it is."""
    if isinstance(rec, Record):
        rec = rec._data  # read, never changed (a copy of 10,000 records would cost the leaderboard a third)
    assert isinstance(rec, dict)
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


def _shape_problem(rec: dict[str, Any]) -> str:
    """What makes ``rec`` (in the current schema) unusable as a record ('' when it is fine)."""
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


def read_record(path: str | Path) -> tuple[Record | None, RecordProblem | None]:
    """(record, None) for a usable record, migrated to the current schema; (None, problem) otherwise; (None, None)
    when there is no file."""
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
    if not isinstance(rec, dict):
        return None, RecordProblem(path, f"not a JSON object but a {type(rec).__name__}")
    written_in = rec.get("schema_version")
    rec, problem = migrate(rec)
    problem = problem or _shape_problem(rec)
    if problem:
        return None, RecordProblem(path, problem)
    return Record.of(rec, path, migrated_from=written_in if written_in != SCHEMA_VERSION else None, owned=True), None
