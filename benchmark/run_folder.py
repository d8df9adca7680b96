"""The run folder: one object names every file of it and owns the marker protocol (cf. submitit's ``JobPaths``).

A run folder holds what one run writes::

    config.json      the resolved config and its run id (written before training: who owns the folder)
    config.toml      the same config, as a file ``npas train --config`` takes
    result.json      the record (``records.Record``): final (completed, diverged) or a stop (preempted)
    history.jsonl    one line per process start, resume, stop, loss (``trainer.history``)
    metrics.jsonl    the per-epoch metrics
    checkpoints/     ckpt-e<epoch>-s<step>.pt
    best.pt          the weights the validation split chose (with data.val_fraction > 0)
    artifacts/       <phase>.json: what a shared phase (e.g. a search) gave this run
    tensorboard/     event files, when TensorBoard is installed
    superseded/      earlier runs made by other method code (``grid.supersede``); never read
    .lock            the flock of the one writer (``storage.folder_lock``)

and the markers a grid task writes around the trainer, each atomically:

    running.json     while the task runs: host, pid, the process's start, epochs
    failed.json      on an error: its text and traceback (cleared when the run starts again)
    blocked.json     when a shared phase this run needs failed (cleared when the run starts again)

Readers (grid states, the leaderboard's collection, the trainer's own checks) and writers go through
``RunFolder``; no other module spells these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_json
from .storage import LOCK
from .records import Record, RecordProblem, read_json_object, read_record, with_run_id

CONFIG = "config.json"
CONFIG_TOML = "config.toml"
RESULT = "result.json"
HISTORY = "history.jsonl"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST = "best.pt"
ARTIFACTS = "artifacts"
TENSORBOARD = "tensorboard"
SUPERSEDED = "superseded"
RUNNING = "running.json"
FAILED = "failed.json"
BLOCKED = "blocked.json"
# a folder's own subfolders, probed for writing before any work (a read-only one is found now, not after an epoch)
SUBFOLDERS = (CHECKPOINTS, ARTIFACTS, TENSORBOARD)
# what marks a folder as a run's, for a walk of a results tree (a grid task can fail before config.json exists)
RUN_MARKERS = (CONFIG, FAILED)


@dataclass(frozen=True)
class RunFolder:
    """The files of the run folder ``root`` (nothing is created by naming them)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- names ------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def config_toml(self) -> Path:
        return self.root / CONFIG_TOML

    @property
    def result(self) -> Path:
        return self.root / RESULT

    @property
    def history(self) -> Path:
        return self.root / HISTORY

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def artifacts(self) -> Path:
        return self.root / ARTIFACTS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def superseded(self) -> Path:
        return self.root / SUPERSEDED

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def running(self) -> Path:
        return self.root / RUNNING

    @property
    def failed(self) -> Path:
        return self.root / FAILED

    @property
    def blocked(self) -> Path:
        return self.root / BLOCKED

    def artifact(self, phase: str) -> Path:
        """What the shared phase ``phase`` gave this run (``artifacts/<phase>.json``)."""
        return self.artifacts / f"{phase}.json"

    def subfolders(self) -> tuple[Path, ...]:
        return tuple(self.root / name for name in SUBFOLDERS)

    # -- reading ----------------------------------------------------------------------------------------
    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def read_record(self) -> tuple[Record | None, RecordProblem | None]:
        """The record, checked and migrated (``records.read_record``)."""
        return read_record(self.result)

    def read_raw_result(self) -> dict[str, Any] | None:
        """result.json as a plain object, unchecked (the trainer's own stop/clean-up decisions)."""
        return read_json_object(self.result)

    def owner(self) -> str | None:
        """The run id config.json names (None: no config.json yet, or one that cannot be read)."""
        run_id = with_run_id(read_json_object(self.config) or {}).get("run_id")  # config.json before schema 3 too
        return run_id if isinstance(run_id, str) else None

    def read_running(self) -> dict[str, Any] | None:
        return read_json_object(self.running)

    def read_failed(self) -> dict[str, Any] | None:
        return read_json_object(self.failed)

    def read_blocked(self) -> dict[str, Any] | None:
        return read_json_object(self.blocked)

    def failure_line(self) -> str:
        """The failure's last line (the exception) from failed.json ('' when none is written)."""
        error = str((self.read_failed() or {}).get("error") or "").strip()
        return error.splitlines()[-1] if error else ""

    # -- the markers ------------------------------------------------------------------------------------
    def mark_running(self, info: dict[str, Any]) -> None:
        write_json(self.running, info)

    def clear_running(self) -> None:
        self.running.unlink(missing_ok=True)

    def mark_blocked(self, info: dict[str, Any]) -> None:
        write_json(self.blocked, info)

    def clear_failure_markers(self) -> None:
        """failed.json and blocked.json go when the run starts again: they described an earlier attempt."""
        for path in (self.failed, self.blocked):
            path.unlink(missing_ok=True)

    def write_result(self, record: Record | dict[str, Any]) -> None:
        write_json(self.result, record.to_dict() if isinstance(record, Record) else record)

    def write_config(self, config: dict[str, Any], run_id: str) -> None:
        """config.json: the resolved config and the run id that owns this folder."""
        write_json(self.config, {"config": config, "run_id": run_id})
