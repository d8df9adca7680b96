"""Reading files from folders that others may write (a shared results folder, a copied run tree).

Why: a results folder is data, and anyone who can write it can put anything there: a FIFO named
``result.json`` would make a plain ``open().read()`` wait forever (``npas grid status`` promises never to
block), ``/dev/zero`` or a 1 GB file would read until memory runs out. ``read_capped`` opens with
``O_NONBLOCK`` (so a FIFO opens at once), checks with ``fstat`` that what it opened is a regular file, and
reads at most its cap: anything else is ``UnreadableFile`` with one line saying what the file is.

The caps (docs/reliability.md): a record or a marker (result.json, config.json, running.json, failed.json,
slurm.json, a phase artifact) 16 MiB; a line log (metrics.jsonl, history.jsonl) 64 MiB; a TOML file the user
names (--config, a grid spec, grid.base_config, --references) 4 MiB; a grid manifest (grid.json: a 10,000-run
grid's is ~26 MB) 256 MiB.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import NPASError

MiB = 2**20
RECORD_CAP = 16 * MiB
LOG_CAP = 64 * MiB
TOML_CAP = 4 * MiB
MANIFEST_CAP = 256 * MiB


class UnreadableFile(NPASError):
    """Not a regular file, or larger than its cap: never read."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_capped(path: str | os.PathLike, cap: int) -> bytes:
    """The bytes of the regular file at ``path`` (a symlink is followed to one), at most ``cap`` of them.
    FileNotFoundError and other OSErrors pass through; a FIFO, device, socket or folder, or a file above the
    cap, is ``UnreadableFile``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(f"{path}: {_kind(st.st_mode)}, not a regular file; not read")
        if st.st_size > cap:
            raise UnreadableFile(f"{path}: {st.st_size / MiB:.1f} MiB, above the {cap // MiB} MiB a reader takes; not read")
        chunks, left = [], cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:  # it grew while read
            raise UnreadableFile(f"{path}: above the {cap // MiB} MiB a reader takes; not read")
        return data
    finally:
        os.close(fd)


def read_text_capped(path: str | os.PathLike, cap: int, errors: str = "strict") -> str:
    return read_capped(path, cap).decode("utf-8", errors=errors)


def read_toml_text(path: str | os.PathLike, what: str) -> tuple[dict, str]:
    """(tree, text) of a TOML file the user names (``what``: how they wrote it, e.g. "--config", "grid
    spec"). Every way it can be unusable -- missing, a folder or FIFO, above the cap, not UTF-8 (a binary
    file), not TOML, nested too deep for the parser -- is one ``ConfigError`` naming the file and the fix."""
    import tomllib

    from .errors import ConfigError

    p = Path(path)
    try:
        data = read_capped(p, TOML_CAP)
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file {str(p)!r}.") from None
    except UnreadableFile as exc:
        raise ConfigError(f"{what}: {exc}; give a TOML file.") from None
    except OSError as exc:
        raise ConfigError(f"{what}: {p} cannot be read ({exc.strerror or type(exc).__name__}).") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: {p} is not UTF-8 text (byte {exc.start}: a binary file?); give a TOML file.") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what}: {p} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what}: {p} nests tables or arrays too deeply to parse; no setting needs more than "
                          "a few levels.") from None
