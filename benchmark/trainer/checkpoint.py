"""Checkpoints: written atomically, loaded with ``weights_only=True``, validated before use.

A checkpoint holds everything needed for a bit-exact continuation on CPU: model, optimizer,
schedule, grad scaler, epoch and step, every RNG state, the method's extra state and the config
hash. ``find_latest`` returns the newest checkpoint that loads and belongs to this config; corrupt
files (e.g. from a node dying mid-copy on a foreign file system) are reported and skipped.
"""

from __future__ import annotations

import io
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_open
from ..errors import CheckpointError

FORMAT_VERSION = 1
# what a resume reads (Trainer._restore); a payload without one of them is refused by name, not a KeyError
REQUIRED_KEYS = ("model", "optimizer", "scaler", "epoch", "batch", "step", "rng", "extra", "config_hash",
                 "metrics_lines", "best", "epoch_acc", "timing")
_NAME = re.compile(r"^ckpt-e(\d{5})-s(\d{9})\.pt$")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt-e{epoch:05d}-s{step:09d}.pt"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4]), "keys": torch.from_numpy(np_state[1].astype(np.int64))},
        "python": _python_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def load_checkpoint(path: str | os.PathLike, config_hash: str | None = None) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"run.resume: checkpoint {str(p)!r} does not exist.")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(
            f"run.resume: checkpoint {str(p)!r} is corrupt or not a npasbench checkpoint "
            f"({type(exc).__name__}: {str(exc).split('.')[0][:120]}). Delete it, or resume "
            "from an older one."
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"run.resume: {str(p)!r} is not a npasbench checkpoint (format {FORMAT_VERSION}).")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"run.resume: checkpoint {str(p)!r} lacks {', '.join(missing)} (written by other code, "
                              "or damaged). Delete it, or resume from an older one.")
    if config_hash is not None and payload.get("config_hash") != config_hash:
        raise CheckpointError(
            f"run.resume: checkpoint {str(p)!r} belongs to config {payload.get('config_hash')}, this run is "
            f"{config_hash}. Use a new run.out folder, or run.resume=never to start over."
        )
    return payload


def find_latest(folder: Path, config_hash: str) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that loads and matches ``config_hash``; damaged ones are skipped with a warning.

    None only when the folder holds no checkpoint at all. When it holds some and every one is
    unusable, that is an error (``CheckpointError``): silently starting over would replace the evidence."""
    found = list_checkpoints(folder)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, config_hash)
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
