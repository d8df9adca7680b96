"""``data.pipeline``: which loader serves the batches, and where the data come from.

=============  ==========================================================================================
memory         (default) CIFAR / synthetic in RAM, `BatchLoader`: exact-resume deterministic.
ffcv           betons from `npas data prepare` in ``data.beton_dir`` (CIFAR-10/100, ImageNet), `FFCVLoader`.
torchvision    a torch DataLoader with torchvision transforms, `TorchvisionLoader`: CIFAR/synthetic from the
               pickles (in RAM), ImageNet from an ImageFolder tree in ``data.root``.
auto           ffcv if betons for the data set exist in ``data.beton_dir`` and ffcv imports, else torchvision
               (one log line says which and why).
=============  ==========================================================================================

The splitting (``data.val_fraction``, subsets) is `load_data`'s, on labels only, so every pipeline
selects the same examples for the same config (given a beton of the full split).
"""

from __future__ import annotations

import logging

import torch

from ..errors import ConfigError, DataError
from .betons import BetonFile, beton_path, ffcv_available, import_ffcv, prepare_command, read_beton
from .cifar import CIFAR_SPECS
from .config import DataConfig
from .imagefolder import scan_tree
from .info import BETON_DATASETS, DATASET_INFO
from .pipeline_base import IMAGENET_MEAN, IMAGENET_STD, FileSplit, Resolution
from .registry import SourceData, get_dataset

log = logging.getLogger("npasbench.data")

def _fixed_size(name: str) -> bool:
    info = DATASET_INFO.get(name)
    return info is None or info.fixed_size


def resolve_pipeline(cfg: DataConfig) -> str:
    """``cfg.pipeline`` with "auto" decided (logged); "ffcv" checked to be importable."""
    p = cfg.pipeline
    if p in ("memory", "torchvision"):
        return p
    if p == "ffcv":
        ok, why = ffcv_available()
        if not ok:
            raise ConfigError(
                f"data.pipeline=ffcv: FFCV is not importable ({why}); install the extra (apt-get install -y "
                "libopencv-dev libturbojpeg0-dev pkg-config; pip install -e '.[ffcv]') or use data.pipeline=torchvision"
            )
        return "ffcv"
    # auto: look for the betons first (cheap), import ffcv only if they exist (the import takes seconds)
    reason = ""
    if cfg.name not in BETON_DATASETS:
        reason = f"there are no FFCV betons for data.name={cfg.name!r}"
    elif not cfg.beton_dir:
        reason = "data.beton_dir is not set"
    else:
        missing = [str(beton_path(cfg.beton_dir, cfg.name, s)) for s in ("train", "test")
                   if not beton_path(cfg.beton_dir, cfg.name, s).is_file()]
        if missing:
            reason = f"no betons ({', '.join(missing)} missing; `{prepare_command(cfg.name)}` writes them)"
        else:
            ok, why = ffcv_available()
            if ok:
                log.info("data.pipeline=auto: using FFCV betons in %s", cfg.beton_dir)
                return "ffcv"
            reason = f"FFCV is not importable ({why})"
    log.warning("data.pipeline=auto: %s; using the torchvision DataLoader pipeline", reason)
    return "torchvision"


def _imagenet_shape(cfg: DataConfig) -> tuple[int, int, int]:
    res = cfg.val_res or DATASET_INFO["imagenet"].image_size
    return (3, res, res)


def imagefolder_source(cfg: DataConfig) -> SourceData:
    """ImageNet (or any ImageFolder tree under data.name=imagenet) for the torchvision pipeline."""
    trees = scan_tree(cfg.root, field="data.root")
    classes = len(trees["train"].classes)
    num_classes = DATASET_INFO["imagenet"].num_classes
    if classes > num_classes:
        raise DataError(f"data.root={cfg.root!r} has {classes} class folders; ImageNet has {num_classes}")
    splits = {s: FileSplit(src, torch.arange(len(src)), torch.tensor(src.labels, dtype=torch.int64))
              for s, src in trees.items()}
    return SourceData(train=splits["train"], test=splits["test"], num_classes=num_classes, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, synthetic=False, source=str(cfg.root), input_shape=_imagenet_shape(cfg))


def beton_source(cfg: DataConfig) -> SourceData:
    """Labels (and file facts) of ``<beton_dir>/<name>_{train,test}.beton``; pixels stay in the files."""
    name = cfg.name
    if name not in BETON_DATASETS:
        raise ConfigError(f"data.pipeline=ffcv: there are no betons for data.name={name!r} "
                          f"(`npas data prepare` writes {', '.join(BETON_DATASETS)}); use data.pipeline=memory "
                          "or torchvision")
    if not cfg.beton_dir:
        raise DataError(f"data.beton_dir is not set: data.pipeline=ffcv reads {name}_train.beton and "
                        f"{name}_test.beton from it; write them with `{prepare_command(name)}`")
    info = DATASET_INFO[name]
    splits = {}
    for split in ("train", "test"):
        beton, labels = read_beton(beton_path(cfg.beton_dir, name, split), name, split)
        if labels.min() < 0 or labels.max() >= info.num_classes:
            raise DataError(f"data.beton_dir: {beton.path} has labels in [{labels.min()}, {labels.max()}], "
                            f"outside [0, {info.num_classes}) for {name}")
        if _fixed_size(name) and (not beton.fixed_size or (beton.max_height, beton.max_width) != (32, 32)):
            raise DataError(f"data.beton_dir: {beton.path} does not hold 32x32 images, so it is not a {name} beton; "
                            f"rewrite it with `{prepare_command(name)}`")
        splits[split] = FileSplit(beton, torch.arange(beton.num_samples), torch.from_numpy(labels))
    if name in CIFAR_SPECS:
        spec = CIFAR_SPECS[name]
        mean, std, shape = spec.mean, spec.std, (3, 32, 32)
    else:
        mean, std, shape = IMAGENET_MEAN, IMAGENET_STD, _imagenet_shape(cfg)
    return SourceData(train=splits["train"], test=splits["test"], num_classes=info.num_classes, mean=mean, std=std,
                      synthetic=False, source=str(cfg.beton_dir), input_shape=shape)


def load_source(cfg: DataConfig) -> tuple[str, SourceData]:
    """(resolved pipeline, official splits) for `load_data`."""
    pipeline = resolve_pipeline(cfg)
    if pipeline == "ffcv":
        return pipeline, beton_source(cfg)
    if pipeline == "torchvision" and cfg.name == "imagenet":
        return pipeline, imagefolder_source(cfg)
    return pipeline, get_dataset(cfg.name)(cfg)  # memory, or torchvision over the in-memory splits


def resolution_for(name: str, cfg: DataConfig) -> Resolution:
    if _fixed_size(name):
        return Resolution(fixed=True)
    default = DATASET_INFO["imagenet"].image_size
    return Resolution(fixed=False, train_res=cfg.train_res or default, val_res=cfg.val_res or default,
                      crop_ratio=float(cfg.crop_ratio), min_res=cfg.min_res, max_res=cfg.max_res,
                      start_ramp=cfg.start_ramp, end_ramp=cfg.end_ramp)


def make_pipeline_loader(bundle, which: str, batch_size: int, cfg: DataConfig | None = None, **kwargs):
    """A FFCVLoader / TorchvisionLoader for ``bundle.<which>`` (`make_loader` calls this when the bundle's
    pipeline is not "memory"); ``kwargs`` as for BatchLoader (seed, rank, world_size, device, ...)."""
    cfg = cfg or bundle.config or DataConfig(name=bundle.name, pipeline=bundle.pipeline)
    train = which == "train"
    if train:
        kwargs.setdefault("augment", cfg.augment)
        kwargs.setdefault("cutout", cfg.cutout)
        kwargs.setdefault("extra", cfg.extra_augment(bundle.num_classes))
    common = dict(train=train, mean=bundle.mean, std=bundle.std, num_workers=cfg.num_workers,
                  resolution=resolution_for(bundle.name, cfg), **kwargs)
    split = getattr(bundle, which)
    if bundle.pipeline == "ffcv":
        from .ffcv_loader import FFCVLoader

        return FFCVLoader(split, batch_size, os_cache=cfg.os_cache, **common)
    if bundle.pipeline == "torchvision":
        from .torchvision_loader import TorchvisionLoader

        return TorchvisionLoader(split, batch_size, **common)
    raise ConfigError(f"data.pipeline: no pipeline loader for {bundle.pipeline!r}")


__all__ = ["BETON_DATASETS", "BetonFile", "FileSplit", "beton_source", "imagefolder_source", "import_ffcv",
           "load_source", "make_pipeline_loader", "resolution_for", "resolve_pipeline"]
