"""Checkpoint files: written atomically, loaded with ``weights_only=True``, validated before use.

What a checkpoint holds (everything a bit-exact continuation on CPU needs) is ``state.py``'s; this
module stores it: names, atomic writes, pruning, and the checks a payload passes before use (format,
keys, config id). ``find_latest`` returns the newest checkpoint that loads and belongs to this config;
corrupt files (e.g. from a node dying mid-copy on a foreign file system) are reported and skipped.
``save_best``/``load_best``: ``best.pt`` (the validation-selected weights), with the same writes and checks.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_open
from ..errors import CheckpointError
from ..records import with_run_id
from ..run_folder import RunFolder
from .state import BEST_KEYS, CHECKPOINT_KEYS, FORMAT_VERSION

_NAME = re.compile(r"^ckpt-e(\d{5})-s(\d{9})\.pt$")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt-e{epoch:05d}-s{step:09d}.pt"


def save_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temp file, fsync, ``os.replace``: never a half-written file."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())


def save_checkpoint(folder: Path, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` atomically as the checkpoint for (epoch, step); prune older ones."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, format_version=FORMAT_VERSION)
    path = folder / checkpoint_name(payload["epoch"], payload["step"])
    save_atomic(path, payload)
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files sorted oldest to newest by (epoch, step)."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | os.PathLike, run_id: str | None = None) -> dict[str, Any]:
    """A checkpoint payload, checked: it loads, is ours, has every key a resume reads, and (given
    ``run_id``) belongs to this experiment. Anything else is a ``CheckpointError`` that says what to do."""
    return _load_checked(Path(path), run_id, CHECKPOINT_KEYS, "checkpoint")


def save_best(run_dir: Path, payload: dict[str, Any]) -> Path:
    """Write ``best.pt`` (``state.best_payload``) atomically."""
    path = RunFolder(run_dir).best
    save_atomic(path, dict(payload, format_version=FORMAT_VERSION))
    return path


def load_best(run_dir: Path, run_id: str) -> dict[str, Any]:
    """``best.pt``, checked like a checkpoint (format, keys, config id)."""
    return _load_checked(RunFolder(run_dir).best, run_id, BEST_KEYS, "best weights")


def _load_checked(p: Path, run_id: str | None, required: tuple[str, ...], what: str) -> dict[str, Any]:
    if not p.is_file():
        raise CheckpointError(f"run.resume: {what} {str(p)!r} does not exist.")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(
            f"run.resume: {what} {str(p)!r} is corrupt or not a npasbench checkpoint "
            f"({type(exc).__name__}: {str(exc).split('.')[0][:120]}). Delete it, or resume "
            "from an older one."
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"run.resume: {str(p)!r} is not a npasbench checkpoint (format {FORMAT_VERSION}).")
    payload = with_run_id(payload)  # a checkpoint of a suite before schema 3 names its id config_hash
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"run.resume: {what} {str(p)!r} lacks {', '.join(missing)} (written by other code, "
                              "or damaged). Delete it, or resume from an older one.")
    if run_id is not None and payload.get("run_id") != run_id:
        raise CheckpointError(
            f"run.resume: {what} {str(p)!r} belongs to config {payload.get('run_id')}, this run is "
            f"{run_id}. Use a new run.out folder, or run.resume=never to start over."
        )
    return payload


def choose(mode: str, folder: Path, run_id: str) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``run.resume`` (``mode``) chooses, loaded and checked (config id, entries): "auto" the
    newest usable one in ``folder`` (None when there is none), "never" None, else that file. The trainer asks
    before the data, the model and the phases, so that a folder of another experiment or a set of damaged
    checkpoints is refused in a second, not after a search."""
    if mode == "auto":
        return find_latest(folder, run_id)
    if mode != "never":
        path = Path(mode)
        return path, load_checkpoint(path, run_id)
    return None


def find_latest(folder: Path, run_id: str) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that loads and matches ``run_id``; damaged ones are skipped with a warning.

    None only when the folder holds no checkpoint at all. When it holds some and every one is
    unusable, that is an error (``CheckpointError``): silently starting over would replace the evidence."""
    found = list_checkpoints(folder)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, run_id)
        except CheckpointError as exc:
            if "belongs to config" in str(exc):
                raise
            warnings.warn(f"skipping unusable checkpoint: {exc}", stacklevel=2)
    if found:
        raise CheckpointError(
            f"run.resume: no usable checkpoint in {str(folder)!r}: {', '.join(p.name for p in found)} "
            f"{'is' if len(found) == 1 else 'are all'} corrupt or incomplete. To start this run over deliberately, "
            "use run.resume=never (or move the checkpoints folder away)."
        )
    return None
