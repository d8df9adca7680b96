"""The code a SLURM grid's jobs run, fixed at submission.

Jobs may wait in the queue for days; a checkout edited meanwhile (a new branch, a half-done change)
must not change what they run, or one grid would mix two versions of a method. ``take_snapshot`` copies
the package as it was imported by the submitting process (every ``.py`` and package-data ``.toml`` of
``npasbench``, ``npasbench.methods``, ``npasbench.baselines``; editable or regular install alike) into
``<results>/submitit/code/<digest>/npasbench``, and the jobs start Python with that folder first on
``PYTHONPATH`` (``python_command``). The digest is of the files' paths and bytes, so resubmitting the
same code reuses the same snapshot. ``code.json`` beside the package holds the digest and the git sha
and dirty flag of the checkout it was taken from; ``provenance.git_info`` reports those in every record
of a job (a snapshot is not a git checkout, and may lie inside one whose HEAD has moved on).

Third-party plugins (other distributions' entry points) are not copied: they run as installed.

A snapshot found under its digest is reused only when its files are exactly the ones the digest names
(``verify``: the same paths and bytes, nothing added -- no planted module, no ``__pycache__``); otherwise it
is moved aside and written again. The jobs run with ``PYTHONDONTWRITEBYTECODE=1``, so a snapshot never gains
bytecode that a later reuse would have to trust. What this does not guard: someone who can write the
results folder can also change the pickled jobs submitit reads there (docs/reliability.md).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_json
from ..errors import NPASError

CODE_DIR = "code"
MARKER = "code.json"
SUFFIXES = (".py", ".toml")
PACKAGES = ("npasbench", "npasbench.methods", "npasbench.baselines")


@dataclass(frozen=True)
class CodeSnapshot:
    path: Path  # the folder to put first on PYTHONPATH (holds npasbench/ and code.json)
    digest: str
    files: int
    reused: bool


def package_files() -> dict[str, Path]:
    """{path inside the snapshot: source file} for the package as this process imported it."""
    import importlib

    files: dict[str, Path] = {}
    for name in PACKAGES:
        module = importlib.import_module(name)
        prefix = Path(*name.split("."))
        for root in map(Path, module.__path__):
            for src in sorted(root.rglob("*")):
                if src.suffix in SUFFIXES and src.is_file() and "__pycache__" not in src.parts:
                    files.setdefault(str(prefix / src.relative_to(root)), src)
    return files


def _digest(files: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel].read_bytes()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()[:16]


def take_snapshot(submitit_folder: str | Path) -> CodeSnapshot:
    """Copy the imported package under ``<submitit_folder>/code/<digest>`` (reused when it exists).
    Written into a temporary folder and renamed into place: a crash never leaves half a snapshot."""
    from ..provenance import git_info

    files = package_files()
    if "npasbench/grid/task.py" not in files:
        raise NPASError("code snapshot: npasbench.grid.task was not found in the imported package; reinstall "
                        "npasbench (pip install -e .).")
    digest = _digest(files)
    base = Path(submitit_folder) / CODE_DIR
    final = base / digest
    if (final / MARKER).is_file():
        if verify(final, digest):
            return CodeSnapshot(final, digest, len(files), reused=True)
        _set_aside(final)  # altered, or foreign: never imported; a fresh copy takes its place
    tmp = base / f".tmp-{digest}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, src in files.items():
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        write_json(tmp / MARKER, {"digest": digest, "files": len(files), "git": git_info(),
                                  "source": str(Path(files["npasbench/__init__.py"]).parent),
                                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        try:
            tmp.rename(final)
        except OSError:
            if not (final / MARKER).is_file():  # not a concurrent submission that made the same one
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return CodeSnapshot(final, digest, len(files), reused=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        from ..storage import storage_error

        raise storage_error(exc, "write the code snapshot", base) from None
    return CodeSnapshot(final, digest, len(files), reused=False)


def tree_digest(folder: Path) -> str | None:
    """The digest of the files under ``folder`` as ``_digest`` computes it for the package (the marker
    aside); None when it holds anything but regular files and folders (a FIFO, a device)."""
    files: dict[str, Path] = {}
    for src in sorted(folder.rglob("*")):
        if src.is_symlink() or not (src.is_file() or src.is_dir()):
            return None
        if src.is_file() and src != folder / MARKER:
            files[str(src.relative_to(folder))] = src
    return _digest(files)


def verify(folder: Path, digest: str) -> bool:
    """``folder`` holds exactly the files of ``digest`` (paths and bytes), its marker names it, and nothing else
    is there (no folder without files in the digest, e.g. ``__pycache__``)."""
    from ..records import read_json_object

    if (read_json_object(folder / MARKER) or {}).get("digest") != digest:
        return False
    try:
        if any(p.is_dir() and p.name == "__pycache__" for p in folder.rglob("*")):
            return False
        return tree_digest(folder) == digest
    except OSError:
        return False


def _set_aside(folder: Path) -> None:
    """Move an unverified snapshot out of the way (kept for whoever wants to look at it, never used)."""
    import time

    aside = folder.with_name(f".unverified-{folder.name}-{os.getpid()}-{time.time_ns()}")
    try:
        folder.rename(aside)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        raise NPASError(f"code snapshot: {folder} does not match its digest and cannot be moved aside; remove it "
                        "(someone or something changed it after it was written).")


def python_command(snapshot: CodeSnapshot, python: str | None = None) -> str:
    """The interpreter command submitit puts in the job script: this Python, snapshot first on PYTHONPATH
    (before the editable install's finder and site-packages)."""
    paths = [str(snapshot.path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return (f"/usr/bin/env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={shlex.quote(os.pathsep.join(paths))} "
            f"{shlex.quote(python or sys.executable)}")

