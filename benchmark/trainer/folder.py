"""The run folder: claimed by one writer, probed before any work, checked for space, and marked when a run
is stopped before its training loop (what ``Trainer`` does with its folder outside training)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch

from ..records import FINAL, with_run_id
from ..run_folder import HISTORY, RunFolder
from ..storage import check_free_space, folder_lock, probe_writable
from .record import stopped_record


def claim_run_folder(run_dir: Path, phase_dir: str | None, held: contextlib.ExitStack | None,
                     on_locked: Callable[[], None] = lambda: None) -> None:
    """Lock ``run_dir`` into ``held`` (one writer; None: the caller holds the lock already), then try a
    write there and in ``phase_dir``, so a busy, read-only or unwritable folder is refused before any work.
    ``on_locked`` runs once the folder is this process's (from then on a stop may say so in the folder)."""
    if held is not None:
        held.enter_context(folder_lock(run_dir, field="run.out", bookkeeping=(HISTORY,)))
    on_locked()
    probe_writable(run_dir, "run.out")
    for sub in RunFolder(run_dir).subfolders():  # a read-only subfolder is found now, not after an epoch
        if sub.is_dir():
            probe_writable(sub, f"run.out (its {sub.name}/ folder)")
    if phase_dir:
        probe_writable(phase_dir, "run.phase_dir")


def check_checkpoint_space(run_dir: Path, model: torch.nn.Module, momentum: bool) -> None:
    """Refuse a disk that cannot take one more checkpoint and best.pt of ``model`` (weights, plus momentum
    buffers when the optimizer keeps them)."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values() if torch.is_tensor(t))
    per_checkpoint = state * (2 if momentum else 1) + 2**20
    check_free_space(run_dir, 2 * per_checkpoint, "run.out", "a checkpoint and best.pt of this model")


def owned_by(run_dir: Path, run_id: str) -> bool:
    """The folder is new or this run's (its config.json names this run id)."""
    return RunFolder(run_dir).owner() in (None, run_id)


def _own_record(folder: RunFolder, run_id: str) -> dict[str, Any] | None:
    """This run's result.json as written (None: none, or another experiment's); old ids read as run_id."""
    previous = folder.read_raw_result()
    previous = with_run_id(previous) if previous else previous
    return previous if previous and previous.get("run_id") == run_id else None


def clear_stale_record(run_dir: Path, run_id: str) -> None:
    """Remove this run's unfinished (``preempted``) result.json: it described an earlier process's stop, which
    ``history.jsonl`` keeps. A finished record, or one of another experiment, stays."""
    folder = RunFolder(run_dir)
    previous = _own_record(folder, run_id)
    if previous and previous.get("status") not in FINAL:
        folder.result.unlink(missing_ok=True)


def record_stop(cfg: Any, run_dir: Path, run_id: str, stage: str, signal_name: str,
                write_config: Callable[[], None]) -> dict[str, Any]:
    """Mark ``run_dir`` as stopped during ``stage`` (``status: preempted``) and return that record. A folder of
    another experiment, or a finished record, is left untouched (returns {})."""
    folder = RunFolder(run_dir)
    previous = _own_record(folder, run_id) or {}
    if not owned_by(run_dir, run_id) or previous.get("status") in FINAL:
        return {}
    record = stopped_record(cfg, run_id, stage, signal_name)
    write_config()
    folder.write_result(record)
    return record
