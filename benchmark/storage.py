"""The run folder as the operating system sees it: one writer at a time, writable, room to save.

- ``folder_lock``: an exclusive ``flock`` on ``<folder>/.lock``. Held by a run (``npas train``) or a
  grid task for as long as it works in the folder; the kernel drops it on any exit, a crash or
  ``kill -9`` included, so a stale lock never blocks a rerun. A second process refuses
  (``FolderBusy``, exit 5) instead of interleaving its metrics and checkpoints with the first.
  ``flock`` works on local file systems and NFSv4 (Linux emulates it with POSIX locks there).
- ``probe_writable`` / ``check_free_space``: a read-only folder, a missing permission or a disk too
  full for one checkpoint is reported before the first step, not after an epoch of training.
- ``storage_error``: an ``OSError`` from a write turned into one line -- what, where, what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .errors import FolderBusy, StorageError

LOCK = ".lock"  # the file whose flock ``folder_lock`` holds (a run folder's, a phase's work folder's)

_HINTS = {
    errno.ENOSPC: "the file system is full: free space there (or move run.out), then run again -- a run resumes "
                  "from its newest checkpoint, which is left intact",
    errno.EDQUOT: "the disk quota is exhausted: free space in your quota (or move run.out), then run again -- a run "
                  "resumes from its newest checkpoint, which is left intact",
    errno.EROFS: "the file system is mounted read-only: choose a writable folder",
    errno.EACCES: "permission denied: fix the folder's permissions or choose another folder",
    errno.EPERM: "operation not permitted: fix the folder's permissions or choose another folder",
}


def storage_error(exc: OSError, what: str, path: str | os.PathLike) -> StorageError:
    """One clear line for an OS-level write failure: ``what`` failed at ``path``, why, and the fix."""
    reason = exc.strerror or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0, "check the folder and the disk, then run again")
    return StorageError(f"could not {what} {path}: {reason}; {hint}.")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait_s: float = 0.0, field: str = "run.out",
                bookkeeping: tuple[str, ...] = ()) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if needed) while inside.

    Waits up to ``wait_s`` for a holder to finish (a grid's requeued task may start while the previous
    one is still writing its checkpoint), then raises ``FolderBusy``. A folder this call created that holds
    nothing but the lock and ``bookkeeping`` files (e.g. the history's ``start`` line of a run refused at
    its budget check) is removed on the way out: a refused run leaves no folder behind."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise storage_error(exc, f"create the {field} folder", folder) from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(folder)
                    raise FolderBusy(f"{field}: {folder} is in use by another process{holder}; one folder has one "
                                     "writer. Wait for it to finish, or give this run another folder.") from None
                time.sleep(0.2)
        with contextlib.suppress(OSError):  # who holds it, for the next one's message (advisory only)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        if created:  # a run refused before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                names = {p.name for p in folder.iterdir()}
                if LOCK in names and names <= {LOCK, *bookkeeping}:
                    for name in names:
                        (folder / name).unlink()
                    folder.rmdir()
        os.close(fd)


def _holder(folder: Path) -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid, host = (folder / LOCK).read_text().split()[:2]
        return f" (pid {int(pid)} on {host})"
    return ""


def probe_writable(folder: str | os.PathLike, field: str) -> None:
    """Create, write, fsync and delete a small file in ``folder`` (created if needed), or raise a
    ``StorageError`` naming ``field``: the same operations a checkpoint needs, tried up front."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe.", dir=folder)
        try:
            os.write(fd, b"npasbench write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        raise storage_error(exc, f"write to {field}", folder) from None


def check_free_space(folder: str | os.PathLike, needed: int, field: str, what: str) -> None:
    """Refuse when ``folder``'s file system has less than ``needed`` bytes free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no figure: the writes themselves will say
    if free < needed:
        raise StorageError(f"{field}: {free / 2**20:,.1f} MiB free at {folder}, but {what} needs about "
                           f"{needed / 2**20:,.1f} MiB; free space or choose another folder.")
