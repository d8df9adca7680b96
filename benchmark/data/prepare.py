"""`npas data prepare`: write FFCV betons for CIFAR-10/100 (from torchvision's pickles) and ImageNet
(from an ImageFolder tree).

    npas data prepare cifar100 --root ../shared/data --out data/betons
    npas data prepare imagenet --root /data/imagenet --out data/betons --max-res 256 --jpeg-quality 90

CIFAR: raw 32x32 pixels in pickle order (the in-memory pipeline's order, so val splits and subsets
select the same images). ImageNet: ffcv-imagenet's recipe -- longest side resized to ``--max-res``,
a JPEG/raw mix (``--write-mode proportion`` JPEG-compresses ``--compress-probability`` of the images at
``--jpeg-quality``; ``smart`` compresses the large ones), from ``<root>/train`` and ``<root>/val``
(written as the ``test`` split). Every file is written atomically (see `beton_writer.write_beton`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from . import beton_writer, betons
from .cifar import CIFAR_SPECS, _read_split, download_cifar, find_cifar_root
from .imagefolder import SPLIT_FOLDERS, load_rgb, scan_tree, verify_images

PREPARABLE = ("cifar10", "cifar100", "imagenet")


def _check_out(out: str | None) -> Path:
    if out is None or str(out).strip() == "":
        raise ConfigError("--out is required: the folder to write the .beton files into (later data.beton_dir)")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out={str(out)!r} exists and is not a folder")
    return path


def _check_splits(splits: Sequence[str]) -> list[str]:
    splits = [s.strip() for s in splits if s.strip()]
    bad = [s for s in splits if s not in betons.SPLITS]
    if bad or not splits:
        raise ConfigError(f"--splits must be a comma-separated subset of {', '.join(betons.SPLITS)}, got {splits!r}")
    return splits


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"--limit must be an integer >= 0 (0 writes every image), got {limit!r}")
    return limit


def _as_cli_error(exc: DataError) -> DataError:
    """The CIFAR reader names config fields; on the command line they are flags."""
    text = str(exc).replace("data.root", "--root").replace("data.download=true (--download)", "--download")
    return DataError(text)


def prepare_cifar(name: str, root: str | None, out: str, *, splits: Sequence[str] = betons.SPLITS, limit: int = 0,
                  workers: int = -1, download: bool = False, progress: bool = True) -> list[Path]:
    """``<out>/<name>_{train,test}.beton`` from the pickles under ``root``; returns the written paths."""
    spec = CIFAR_SPECS[name]
    out_dir = _check_out(out)
    splits = _check_splits(splits)
    limit = _check_limit(limit)
    try:
        try:
            folder = find_cifar_root(name, root)
        except DataError:
            if not download:
                raise
            download_cifar(name, root)
            folder = find_cifar_root(name, root)
        parts = {s: _read_split(folder, spec.train_files if s == "train" else spec.test_files, spec) for s in splits}
    except DataError as exc:
        raise _as_cli_error(exc) from None
    fields = beton_writer.fields_for(name)
    written = []
    for split, data in parts.items():
        n = len(data) if not limit else min(limit, len(data))
        images = data.images[:n].permute(0, 2, 3, 1).contiguous().numpy()  # N x 32 x 32 x 3, pickle order
        labels = data.labels[:n].numpy().astype(np.int64)

        def get_item(i: int, images=images, labels=labels) -> tuple:
            return images[i], int(labels[i])

        meta = {"name": name, "split": split, "source": str(folder), "limit": limit, "write_mode": "raw",
                "num_classes": spec.num_classes, "image_size": [32, 32]}
        written.append(beton_writer.write_beton(betons.beton_path(out_dir, name, split), fields, get_item, n,
                                          labels=labels, meta=meta, workers=workers, progress=progress,
                                          describe=lambda i, s=split: f"{spec.pretty} {s} image {i}"))
    return written


def prepare_imagenet(root: str | None, out: str, *, max_res: int = 256, jpeg_quality: int = 90,
                     write_mode: str = "proportion", compress_probability: float = 0.5,
                     smart_threshold: int | None = None, splits: Sequence[str] = betons.SPLITS, limit: int = 0,
                     workers: int = -1, verify: bool = True, progress: bool = True) -> list[Path]:
    """``<out>/imagenet_{train,test}.beton`` from ``<root>/train`` and ``<root>/val`` (ImageFolder)."""
    out_dir = _check_out(out)
    splits = _check_splits(splits)
    limit = _check_limit(limit)
    smart_threshold = beton_writer.check_image_options(write_mode, max_res, jpeg_quality, compress_probability,
                                                 smart_threshold)
    sources = scan_tree(root, field="--root", splits=splits)  # validated before anything is written
    fields = beton_writer.fields_for("imagenet", write_mode=write_mode, max_res=max_res, jpeg_quality=jpeg_quality,
                               compress_probability=compress_probability, smart_threshold=smart_threshold)
    if verify:
        for src in sources.values():
            verify_images(src if not limit else type(src)(src.folder, src.classes, src.samples[:limit]),
                          field="--root", progress=progress)
    written = []
    for split, src in sources.items():
        samples = src.samples if not limit else src.samples[:limit]
        labels = np.array([lab for _, lab in samples], dtype=np.int64)

        def get_item(i: int, samples=samples) -> tuple:
            path, label = samples[i]
            return np.asarray(load_rgb(path)), int(label)

        meta = {"name": "imagenet", "split": split, "source": src.folder, "folder": SPLIT_FOLDERS[split],
                "limit": limit, "write_mode": write_mode, "max_res": max_res, "jpeg_quality": jpeg_quality,
                "compress_probability": compress_probability, "num_classes": len(src.classes),
                "classes": list(src.classes)}
        written.append(beton_writer.write_beton(betons.beton_path(out_dir, "imagenet", split), fields, get_item,
                                          len(samples), labels=labels, meta=meta, workers=workers,
                                          progress=progress, describe=lambda i, s=samples: s[i][0]))
    return written


def prepare(name: str, root: str | None, out: str, **kwargs) -> list[Path]:
    """Dispatch on the data set name (``npas data prepare NAME``)."""
    if name in ("cifar10", "cifar100"):
        extra = [k for k in ("max_res", "jpeg_quality", "write_mode", "compress_probability", "smart_threshold")
                 if kwargs.get(k) is not None]
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise ConfigError(f"{flags}: only for imagenet (CIFAR betons hold the raw 32x32 pixels)")
        kwargs.pop("verify", None)
        for k in ("max_res", "jpeg_quality", "write_mode", "compress_probability", "smart_threshold"):
            kwargs.pop(k, None)
        return prepare_cifar(name, root, out, **kwargs)
    if name == "imagenet":
        if kwargs.pop("download", False):
            raise ConfigError("--download: ImageNet cannot be downloaded automatically; point --root to an ImageFolder tree")
        defaults = {"max_res": 256, "jpeg_quality": 90, "write_mode": "proportion", "compress_probability": 0.5}
        for k, v in defaults.items():
            if kwargs.get(k) is None:
                kwargs[k] = v
        return prepare_imagenet(root, out, **kwargs)
    raise ConfigError(f"npas data prepare: unknown data set {name!r}; one of {', '.join(PREPARABLE)}")
