"""The grid manifest (``<results>/grid.json``): what a grid holds and what was launched where.

Written by ``npas grid plan/run`` (atomically, by one runner at a time), read by every later command
and by the tasks themselves: a task receives only a run id and finds its config here, which is what
lets the same callable run under the local executor, in-process, or as a SLURM array task. Folders
are stored relative to the results folder, so the results can be moved as a whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import ConfigError

MANIFEST = "grid.json"
MANIFEST_VERSION = 1
PHASES = "phases"  # <results>/phases: shared phase artifacts (run.phase_dir of every run of the grid)


@dataclass
class PhaseJob:
    """A shared phase: computed once, read by every run listed in ``runs``."""

    key: str
    method: str
    phase: str
    config: dict[str, Any]  # the resolved config of the first run that needs it
    runs: list[str] = field(default_factory=list)

    @property
    def artifact(self) -> str:
        """Relative to the results folder; the name is the trainer's (``shared_artifact_path``)."""
        from ..trainer.phase import shared_artifact_path

        return str(shared_artifact_path(PHASES, self.method, self.phase, self.key))

    @property
    def failure(self) -> str:
        return f"{PHASES}/{self.method}-{self.phase}-{self.key}.failed.json"


@dataclass
class RunEntry:
    run_id: str
    folder: str
    config: dict[str, Any]
    label: dict[str, Any]  # method, variant, arch, dataset, budget, seed
    phases: list[str] = field(default_factory=list)  # keys of the PhaseJobs it waits for


def _one_name(v: Any) -> bool:
    """A single path component inside the results folder: no separator, not "." or "..", no NUL."""
    return isinstance(v, str) and bool(v) and "/" not in v and "\\" not in v and "\0" not in v and v not in (".", "..")


def manifest_problem(d: dict[str, Any]) -> str:
    """What makes a loaded grid.json unusable ('' when nothing): every field the runner and the tasks read,
    and every name that becomes a path -- a run folder or a phase's file must lie inside the results folder,
    so a planted ``"folder": "/home/you"`` or ``"../x"`` never has a task write there."""
    for key, kind in (("name", str), ("spec", str), ("spec_digest", str), ("runs", dict), ("phases", dict)):
        if not isinstance(d.get(key), kind):
            return f"{key} should be a {'string' if kind is str else 'JSON object'}"
    for rid, e in d["runs"].items():
        if not isinstance(e, dict) or set(e) - {"run_id", "folder", "config", "label", "phases"}:
            return f"runs.{rid} is not a run entry"
        if e.get("run_id") != rid:
            return f"runs.{rid}.run_id is {e.get('run_id')!r}, not its key"
        if not _one_name(e.get("folder")):
            return f"runs.{rid}.folder {e.get('folder')!r} is not a folder name inside the results folder"
        if not isinstance(e.get("config"), dict) or not isinstance(e.get("label"), dict):
            return f"runs.{rid}: config and label should be objects"
        if not isinstance(e.get("phases", []), list) or any(k not in d["phases"] for k in e.get("phases", [])):
            return f"runs.{rid}.phases names a phase the manifest does not hold"
    for key, p in d["phases"].items():
        if not isinstance(p, dict) or set(p) - {"key", "method", "phase", "config", "runs"}:
            return f"phases.{key} is not a phase entry"
        if p.get("key") != key or not all(_one_name(p.get(k)) for k in ("key", "method", "phase")):
            return f"phases.{key}: key, method and phase should be names (they name its files)"
        if not isinstance(p.get("config"), dict) or not isinstance(p.get("runs", []), list):
            return f"phases.{key}: config should be an object and runs a list"
    if not isinstance(d.get("launches") or [], list):
        return "launches should be a list"
    return ""


@dataclass
class Manifest:
    name: str
    spec: str
    spec_digest: str
    runs: dict[str, RunEntry]
    phases: dict[str, PhaseJob]
    launches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION, "name": self.name, "spec": self.spec, "spec_digest": self.spec_digest,
            "runs": {k: vars(v) for k, v in self.runs.items()},
            "phases": {k: vars(v) for k, v in self.phases.items()},
            "launches": self.launches,
        }

    def save(self, results: Path) -> Path:
        from ..storage import probe_writable, storage_error

        path = Path(results) / MANIFEST
        probe_writable(path.parent, "grid.results")
        from ..records import read_json_object

        other = read_json_object(path)
        if other and other.get("name") not in (None, self.name):
            raise ConfigError(f"grid.results {path.parent} holds the grid {other.get('name')!r} (spec "
                              f"{other.get('spec')}), not {self.name!r}: give this grid its own results folder "
                              "(grid.results or --results); replacing its manifest would orphan its runs.")
        try:
            write_json(path, self.to_dict())
        except OSError as exc:
            raise storage_error(exc, "write the grid manifest", path) from None
        return path

    def note_launch(self, executor: str, parallel: int, run_ids: list[str]) -> None:
        self.launches.append({"executor": executor, "host": platform.node(), "pid": os.getpid(),
                              "parallel": parallel, "runs": len(run_ids),
                              "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})

    @classmethod
    def load(cls, results: str | Path) -> "Manifest":
        path = Path(results) / MANIFEST
        if not path.is_file():
            raise ConfigError(f"{path}: no grid manifest; run `npas grid plan SPEC` or `npas grid run SPEC` first.")
        from ..reading import MANIFEST_CAP, UnreadableFile, read_capped

        try:
            d = json.loads(read_capped(path, MANIFEST_CAP).decode("utf-8"))
            if not isinstance(d, dict):
                raise ValueError(f"a JSON {type(d).__name__}, not an object")
        except (UnreadableFile, OSError, ValueError) as exc:
            raise ConfigError(f"{path}: corrupt grid manifest ({exc}); rerun `npas grid plan SPEC` to rewrite it.") from None
        if d.get("manifest_version") != MANIFEST_VERSION:
            raise ConfigError(f"{path}: manifest version {d.get('manifest_version')!r}, this code reads "
                              f"{MANIFEST_VERSION}; rerun `npas grid plan SPEC`.")
        problem = manifest_problem(d)
        if problem:
            raise ConfigError(f"{path}: {problem}; a damaged or foreign manifest is never used: rerun `npas grid "
                              "plan SPEC --save` to rewrite it.")
        return cls(name=d["name"], spec=d["spec"], spec_digest=d["spec_digest"],
                   runs={k: RunEntry(**v) for k, v in d["runs"].items()},
                   phases={k: PhaseJob(**v) for k, v in d["phases"].items()},
                   launches=list(d.get("launches") or []))
