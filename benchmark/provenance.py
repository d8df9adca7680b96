"""Provenance for result records: git sha + dirty flag, package versions, hardware."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("npasbench", "torch", "torchvision", "numpy", "pandas", "submitit", "ffcv", "numba")


def git_info(start: Path | None = None) -> dict[str, Any]:
    """sha and dirty flag of the repository holding this package (or ``start``), if any.

    Inside a SLURM job's code snapshot (``grid.code_snapshot``) the package is a copy, not a checkout:
    the git state recorded when the snapshot was taken is returned, with the snapshot's digest."""
    if start is None:
        marker = Path(__file__).resolve().parent.parent / "code.json"
        if marker.is_file():
            try:
                snap = json.loads(marker.read_text(encoding="utf-8"))
                return {**snap.get("git", {}), "snapshot": snap.get("digest")}
            except (OSError, ValueError):
                return {"sha": None, "dirty": None, "note": f"unreadable code snapshot marker {marker}"}
    where = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"sha": None, "dirty": None, "note": "not a git checkout"}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=10)
        return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None, "note": "git unavailable"}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device | str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
