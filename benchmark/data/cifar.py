"""CIFAR-10 / CIFAR-100 from torchvision's "python version" pickles, read directly.

We do not use torchvision's dataset classes for reading: they check the md5 of the official
tarball files and so refuse byte-different but pixel-exact copies (such as the shared offline
CIFAR-100, see shared/data/README.md); they also decode to PIL images one by one. Reading the
pickles gives the N x 3072 uint8 array in one go. torchvision is used only to *download* (when
``data.download`` is true and no copy is found).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .config import DataConfig
from .registry import SourceData, register_dataset
from .splits import ImageSplit


@dataclass(frozen=True)
class CifarSpec:
    """Layout and constants of one CIFAR variant."""

    name: str
    folder: str  # the folder torchvision extracts
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    # Normalisation constants of the official SSN code (pixel units / 255).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretty: str

    @property
    def expected_files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        mean=tuple(v / 255.0 for v in (125.3, 123.0, 113.9)),
        std=tuple(v / 255.0 for v in (63.0, 62.1, 66.7)),
        pretty="CIFAR-10",
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        mean=tuple(v / 255.0 for v in (129.3, 124.1, 112.4)),
        std=tuple(v / 255.0 for v in (68.2, 65.4, 70.4)),
        pretty="CIFAR-100",
    ),
}


def _spec(name: str) -> CifarSpec:
    try:
        return CIFAR_SPECS[name]
    except KeyError:
        raise ConfigError(f"data.name: {name!r} is not a CIFAR variant (known: {', '.join(CIFAR_SPECS)})") from None


def _fix_hint(spec: CifarSpec) -> str:
    return (
        f"point data.root to the folder holding {spec.folder}/ (or to {spec.folder}/ itself), "
        "or set data.download=true (--download) to fetch it"
    )


def find_cifar_root(name: str, root: str | None) -> Path:
    """Resolve the folder that directly holds the pickles of ``name`` ("cifar10" / "cifar100").

    ``root`` may be the parent of ``cifar-100-python/`` (torchvision's convention) or that folder
    itself. Raises DataError naming ``data.root``, listing the expected files and the fix.
    """
    spec = _spec(name)
    expected = ", ".join(spec.expected_files)
    if root is None or str(root).strip() == "":
        raise DataError(f"data.root is not set, so {spec.pretty} cannot be found; {_fix_hint(spec)}")
    base = Path(root).expanduser().resolve()
    candidates = [base / spec.folder, base]
    for folder in candidates:
        if all((folder / f).is_file() for f in spec.expected_files):
            return folder
    if not base.exists():
        problem = f"data.root={str(root)!r} does not exist"
    else:
        # Report what is missing in the most plausible candidate folder.
        folder = candidates[0] if candidates[0].is_dir() or base.name != spec.folder else base
        if not folder.is_dir():
            problem = f"data.root={str(root)!r} has no {spec.folder}/ folder"
        else:
            missing = [f for f in spec.expected_files if not (folder / f).is_file()]
            problem = f"data.root={str(root)!r}: {folder} lacks {', '.join(missing)}"
    raise DataError(
        f"{problem}; expected the {spec.pretty} pickles ({expected}) in <data.root>/{spec.folder}/ "
        f"or in <data.root> itself; {_fix_hint(spec)}"
    )


def _numpy_reconstruct():
    try:  # numpy >= 2 moved the module; the files name the old path
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR files hold: dicts, lists, strings, numbers and numpy arrays.

    A pickle can name any importable callable and have it called (``os.system`` included), so a
    crafted file dropped in a data folder would run code under plain ``pickle.load``. CIFAR's files
    (Python 2 pickles) name exactly three globals, those below; ``_codecs.encode`` is how Python 3
    writes bytes in the same protocol (a re-pickled copy). Anything else is refused by name."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        # protocol 5 (a copy re-pickled by numpy >= 1.16): arrays come from a raw buffer
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: CIFAR files hold only numpy arrays, "
                                         "lists and strings (a tampered or foreign file)")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if name == "_frombuffer":
            try:
                from numpy._core.numeric import _frombuffer
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.numeric import _frombuffer
            return _frombuffer
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)


def load_cifar_pickle(fh) -> object:
    """``pickle.load`` restricted to what CIFAR files contain (``CifarUnpickler``)."""
    return CifarUnpickler(fh, encoding="latin1").load()


def _read_pickle_file(path: Path, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """One pickle -> (N x 3072 uint8 array, N int64 labels), with structural checks."""
    where = f"data.root: {spec.pretty} file {path}"
    try:
        with open(path, "rb") as fh:
            entry = load_cifar_pickle(fh)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{where} cannot be read ({type(exc).__name__}: {exc}); the copy looks corrupt - "
            f"expected the torchvision pickles ({', '.join(spec.expected_files)}); {_fix_hint(spec)}"
        ) from exc
    if not isinstance(entry, dict) or "data" not in entry or spec.label_key not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(
            f"{where} is not a {spec.pretty} pickle: expected keys 'data' and {spec.label_key!r}, "
            f"found {keys}; {_fix_hint(spec)}"
        )
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[spec.label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: 'data' should be N x 3072 uint8, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {data.shape[0]} images but {labels.shape} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{where}: labels outside [0, {spec.num_classes}) (min {labels.min()}, max {labels.max()})"
        )
    return data, labels


def _read_split(folder: Path, files: tuple[str, ...], spec: CifarSpec) -> ImageSplit:
    parts = [_read_pickle_file(folder / f, spec) for f in files]
    data = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
    # R plane, G plane, B plane, each 32x32 row-major -> N x 3 x 32 x 32 is a pure reshape.
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return ImageSplit(images, torch.from_numpy(labels))


def download_cifar(name: str, root: str | None) -> None:
    """Fetch ``name`` into ``root`` with torchvision's downloader (needs network)."""
    spec = _spec(name)
    if root is None or str(root).strip() == "":
        raise DataError(f"data.root is not set: data.download needs a folder to download {spec.pretty} into")
    from torchvision import datasets  # imported lazily: only the downloader is needed

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    target = Path(root).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
        cls(str(target), train=True, download=True)
    except Exception as exc:  # network / disk / md5 errors all surface as one clear DataError
        raise DataError(
            f"data.download: downloading {spec.pretty} into data.root={str(root)!r} failed "
            f"({type(exc).__name__}: {exc}); download it elsewhere and point data.root to the "
            f"folder holding {spec.folder}/"
        ) from exc


def load_cifar(name: str, cfg: DataConfig) -> SourceData:
    """Read the official train/test splits of ``name``; download first only if asked and absent."""
    spec = _spec(name)
    if cfg.download:
        try:
            folder = find_cifar_root(name, cfg.root)
        except DataError:
            download_cifar(name, cfg.root)
            folder = find_cifar_root(name, cfg.root)
    else:
        folder = find_cifar_root(name, cfg.root)
    train = _read_split(folder, spec.train_files, spec)
    test = _read_split(folder, spec.test_files, spec)
    return SourceData(
        train=train,
        test=test,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        synthetic=False,
        source=str(folder),
    )


@register_dataset("cifar10")
def _load_cifar10(cfg: DataConfig) -> SourceData:
    return load_cifar("cifar10", cfg)


@register_dataset("cifar100")
def _load_cifar100(cfg: DataConfig) -> SourceData:
    return load_cifar("cifar100", cfg)
