"""FFCV ``.beton`` files: the guarded ``ffcv`` import, file naming, reading labels (the writer is
``beton_writer.py``: an atomic, fail-safe ``write_beton``).

FFCV (1.0.x) is an optional extra (``pip install -e '.[ffcv]'`` after ``apt-get install -y
libopencv-dev libturbojpeg0-dev pkg-config``). Facts this module works around (measured, see the
docs/training.md, "Data"):

* ``import ffcv`` sets torch's intra-op thread count to 1, and every ``Loader`` sets it to its
  ``num_workers``: `import_ffcv` and the loaders restore the caller's setting.
* ``DatasetWriter`` hangs forever when one of its worker processes dies (its progress loop waits for
  a sample count that is never reached), and leaves its shared memory and a half-written file behind
  on an error or Ctrl-C. `write_beton` validates inputs first, then runs the same worker function
  under a supervisor that notices a dead worker, reports which sample failed and why, terminates the
  rest, frees the shared memory and deletes the temporary file; the beton appears (``os.replace``)
  only after it was read back and checked.

File layout written by `npas data prepare`: ``<out>/<name>_<split>.beton`` with fields ``image``
(``RGBImageField``) and ``label`` (``IntField``), samples in the source's order (CIFAR: pickle
order; ImageFolder: torchvision's order), and a sidecar ``<name>_<split>.beton.json`` describing it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

IMAGE_FIELD = "image"
LABEL_FIELD = "label"
SPLITS = ("train", "test")
FFCV_INSTALL_HINT = ("install the FFCV extra: apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config, "
                     "then pip install -e '.[ffcv]'")

_FFCV_STATE: dict[str, Any] = {}


# ----------------------------------------------------------------------------- the optional import
def import_ffcv():
    """``import ffcv`` (cached), keeping torch's thread count; DataError with the install hint if absent."""
    if "module" in _FFCV_STATE:
        return _FFCV_STATE["module"]
    if "error" in _FFCV_STATE:
        raise DataError(f"FFCV is not importable ({_FFCV_STATE['error']}); {FFCV_INSTALL_HINT}")
    threads = torch.get_num_threads()
    try:
        import ffcv  # noqa: F401  (sets torch threads to 1 at import: restored below)
        import ffcv.fields  # noqa: F401
        import ffcv.loader  # noqa: F401
        import ffcv.transforms  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native build (OSError, AttributeError ...)
        _FFCV_STATE["error"] = f"{type(exc).__name__}: {exc}"
        raise DataError(f"FFCV is not importable ({_FFCV_STATE['error']}); {FFCV_INSTALL_HINT}") from exc
    finally:
        torch.set_num_threads(threads)
    _FFCV_STATE["module"] = ffcv
    return ffcv


def ffcv_available() -> tuple[bool, str]:
    """(importable, reason if not)."""
    try:
        import_ffcv()
        return True, ""
    except DataError:
        return False, _FFCV_STATE.get("error", "unknown error")


@contextlib.contextmanager
def keep_torch_threads():
    """Restore torch's intra-op thread count after FFCV calls that set it (Loader, iter, Compiler)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def clamp_workers(requested: int, minimum: int = 0) -> int:
    """``-1`` -> one per available core; anything above the available cores is clamped to them."""
    cores = available_cores()
    n = cores if requested is None or requested < 0 else min(int(requested), cores)
    return max(minimum, n)


# ----------------------------------------------------------------------------- names and reading
def field_column(reader, field: str) -> np.ndarray:
    """The metadata column of a named field (ffcv stores the columns unnamed: f0, f1, ... in field order)."""
    return reader.metadata[f"f{reader.field_names.index(field)}"]


def beton_path(folder: str | os.PathLike, name: str, split: str) -> Path:
    return Path(folder).expanduser() / f"{name}_{split}.beton"


def sidecar_path(beton: Path) -> Path:
    return beton.with_name(beton.name + ".json")


def prepare_command(name: str) -> str:
    root = "IMAGEFOLDER" if name == "imagenet" else "DIR"
    return f"npas data prepare {name} --root {root} --out <data.beton_dir>"


@dataclass(frozen=True)
class BetonFile:
    """A beton written by `npas data prepare` (checked by `read_beton`)."""

    path: str
    num_samples: int
    max_height: int
    max_width: int
    fixed_size: bool  # every image has the same height and width (CIFAR: decode at stored size)
    meta: dict  # the sidecar, if any

    def __len__(self) -> int:
        return self.num_samples


def read_beton(path: Path, name: str, split: str, field: str = "data.beton_dir") -> tuple[BetonFile, np.ndarray]:
    """Open ``path`` with ffcv's Reader: (BetonFile, int64 labels); DataError naming ``field`` otherwise."""
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.reader import Reader

    if not path.is_file():
        raise DataError(
            f"{field}: {path} does not exist; write the {name} betons with `{prepare_command(name)}`"
        )
    try:
        reader = Reader(str(path))
    except Exception as exc:  # a truncated / foreign file: numpy, assertion or value errors
        raise DataError(f"{field}: {path} is not a readable .beton file ({type(exc).__name__}: {exc}); "
                        f"rewrite it with `{prepare_command(name)}`") from exc
    kinds = {k: type(v).__name__ for k, v in reader.handlers.items()}
    if not (isinstance(reader.handlers.get(IMAGE_FIELD), RGBImageField)
            and isinstance(reader.handlers.get(LABEL_FIELD), IntField)):
        raise DataError(f"{field}: {path} has fields {kinds}; expected {IMAGE_FIELD!r} (RGBImageField) and "
                        f"{LABEL_FIELD!r} (IntField) as written by `{prepare_command(name)}`")
    meta: dict = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            meta = {}
    if meta and (meta.get("name") != name or meta.get("split") != split):
        raise DataError(f"{field}: {path} was written for {meta.get('name')}/{meta.get('split')} "
                        f"(see {side.name}), not {name}/{split}")
    labels = np.array(field_column(reader, LABEL_FIELD), dtype=np.int64).reshape(-1)  # a writable copy
    image_md = field_column(reader, IMAGE_FIELD)
    heights = np.asarray(image_md["height"], dtype=np.int64)
    widths = np.asarray(image_md["width"], dtype=np.int64)
    n = int(reader.num_samples)
    if n == 0:
        raise DataError(f"{field}: {path} holds no samples; rewrite it with `{prepare_command(name)}`")
    fixed = bool((heights == heights[0]).all() and (widths == widths[0]).all())
    info = BetonFile(str(path), n, int(heights.max()), int(widths.max()), fixed, meta)
    return info, labels


# ----------------------------------------------------------------------------- writing
