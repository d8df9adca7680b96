"""TensorBoard event files beside ``metrics.jsonl`` (``run.tensorboard``), so that ``tensorboard --logdir
<results>`` shows the curves of every run of a grid while it trains.

Why a module of its own: TensorBoard is an optional extra (``pip install -e '.[tensorboard]'``) and
``metrics.jsonl`` stays the run's log of record. The event files are a view of it: every line the
trainer appends there (``JsonLines``, which calls ``EventLog.write`` with it) becomes one event in
``<run folder>/tensorboard/`` -- its numbers as scalars tagged ``<kind>/<field>`` (``train/loss``,
``train/lr``, ``eval/top1``, ``final/top5``, ...; an ensemble's members as ``<kind>/<member>/<field>``),
at the line's global training step.

Resume: a resumed run cuts ``metrics.jsonl`` back to its checkpoint's line count (``JsonLines.truncate``,
which calls ``EventLog.reset`` with the lines kept). Events of the lines cut off may already be on disk,
so every attempt opens a new event file that starts, as a ``SummaryWriter(purge_step=P)`` does, with a
``SessionLog.START`` at step ``P``: TensorBoard then drops every earlier event at a step >= ``P``. ``P`` is
the step of the last line kept (0 for a fresh start, which drops the events of a run started over), and
the kept lines at step ``P`` are written again after it, so the event files read back exactly as
``metrics.jsonl``: no step twice, nothing from the lost part. Lines are written at epoch boundaries only,
so each event is appended synchronously (open, write, fsync, close) -- no writer thread to close, and on
disk before the line goes to ``metrics.jsonl``. Only rank 0 writes (``JsonLines.enabled``).
"""

from __future__ import annotations

import importlib
import math
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..run_folder import TENSORBOARD

FOLDER = TENSORBOARD  # the run folder's subfolder (run_folder names it)
INSTALL = "pip install -e '.[tensorboard]'"
SKIPPED = {"kind", "step", "epoch", "examples"}  # bookkeeping, not curves
_NAME = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def _modules() -> tuple[Any, Any, Any]:
    """(event_pb2, summary_pb2, RecordWriter) of the tensorboard package; ImportError when it is missing."""
    importlib.import_module("tensorboard")  # first: a package set to None in sys.modules fails here
    event_pb2 = importlib.import_module("tensorboard.compat.proto.event_pb2")
    summary_pb2 = importlib.import_module("tensorboard.compat.proto.summary_pb2")
    record_writer = importlib.import_module("tensorboard.summary.writer.record_writer")
    return event_pb2, summary_pb2, record_writer.RecordWriter


def event_log(mode: str, run_dir: str | Path, enabled: bool = True) -> EventLog | None:
    """The run's event log for ``run.tensorboard`` = ``mode``, or None (off, the package missing under
    "auto", or not rank 0). "on" without the package is a ConfigError, raised on every rank before the
    run writes anything."""
    if mode == "off":
        return None
    try:
        _modules()
    except Exception as exc:  # noqa: BLE001 - not installed, or a broken install (e.g. a protobuf it cannot use)
        if mode == "on":
            raise ConfigError(f"run.tensorboard: \"on\" needs the tensorboard package, which is not importable "
                              f"({type(exc).__name__}: {exc}); install it with `{INSTALL}` (or `pip install "
                              "tensorboard`), or set run.tensorboard=auto (events when the package is there) or off."
                              ) from None
        return None
    return EventLog(Path(run_dir) / FOLDER) if enabled else None


def scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The (tag, value) pairs of one metrics line: its numbers, and its members' numbers."""
    kind = record.get("kind")
    if not isinstance(kind, str):
        return []
    out = [(f"{kind}/{k}", float(v)) for k, v in record.items() if k not in SKIPPED and _number(v)]
    for i, member in enumerate(record.get("members") or []):
        if isinstance(member, dict):
            name = str(member.get("name", i))
            out += [(f"{kind}/{name}/{k}", float(v)) for k, v in member.items() if k != "name" and _number(v)]
    return out


def _number(v: Any) -> bool:
    """A finite number (metrics.jsonl writes a non-finite one as null: no point there either)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class EventLog:
    """Appends metrics lines to this attempt's event file in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None  # this attempt's file, created by the first reset or write
        self._pb, self._summary, self._records = _modules()

    def reset(self, kept: list[dict[str, Any]]) -> None:
        """The metrics log now holds ``kept``: start a new file that purges every later event."""
        steps = [r["step"] for r in kept if isinstance(r.get("step"), int)]
        purge = steps[-1] if steps else 0
        pb = self._pb
        self.path = None
        self._append([pb.Event(wall_time=time.time(), step=purge, session_log=pb.SessionLog(status=pb.SessionLog.START))],
                     step=purge)
        for rec in kept:
            if rec.get("step") == purge:
                self.write(rec)

    def write(self, record: dict[str, Any]) -> None:
        """One metrics line as one event (a line without a step or numbers adds nothing)."""
        step, values = record.get("step"), scalars(record)
        if not isinstance(step, int) or not values:
            return
        summary = self._summary.Summary(value=[self._summary.Summary.Value(tag=t, simple_value=v) for t, v in values])
        self._append([self._pb.Event(wall_time=time.time(), step=step, summary=summary)], step=step)

    def _append(self, events: list[Any], step: int) -> None:
        path = self.path
        if path is None:  # a new file starts with its format version, as every event file does
            path = self._new_file()
            events = [self._pb.Event(wall_time=time.time(), step=step, file_version="brain.Event:2"), *events]
        try:
            with open(path, "ab") as fh:
                writer = self._records(fh)
                for event in events:
                    writer.write(event.SerializeToString())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            from ..storage import storage_error

            raise storage_error(exc, "append to", path) from None
        self.path = path

    def _new_file(self) -> Path:
        """The next file name: a sequence number first, so TensorBoard (which reads a folder's files in name
        order) reads the attempts in order whatever the clocks of the machines that wrote them."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            names = [m.group(1) for m in map(_NAME.match, os.listdir(self.folder)) if m]
        except OSError as exc:
            from ..storage import storage_error

            raise storage_error(exc, "create", self.folder) from None
        seq = max((int(n) for n in names), default=0) + 1
        return self.folder / f"events.out.tfevents.{seq:06d}.{socket.gethostname()}.{os.getpid()}"


__all__ = ["EventLog", "FOLDER", "event_log", "scalars"]
