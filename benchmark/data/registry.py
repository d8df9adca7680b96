"""Data-set registry: name -> loader function, so new data sets plug in without touching `load_data`.

A loader takes the validated `DataConfig` and returns a `SourceData` (official train/test splits
plus normalisation constants); splitting into train/val and subsetting is done once, generically,
by `load_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import RegistryError
from .config import DataConfig
from .splits import ImageSplit


@dataclass
class SourceData:
    """What a data-set loader returns: the official splits, before any val split or subsetting."""

    train: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    synthetic: bool
    source: str


DatasetLoader = Callable[[DataConfig], SourceData]

DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: ``@register_dataset("cifar100") def load(cfg) -> SourceData``."""

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        if name in DATASETS and DATASETS[name] is not fn:
            raise RegistryError(f"data set {name!r} is already registered ({DATASETS[name].__module__})")
        DATASETS[name] = fn
        return fn

    return decorator


def get_dataset(name: str) -> DatasetLoader:
    """The loader for ``name``; RegistryError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        hint = ""
        if name == "imagenet":
            hint = (" (ImageNet is known to `npas params` for parameter and FLOP reports, but its training "
                    "pipeline comes with the FFCV data issue)")
        raise RegistryError(f"data.name: unknown data set {name!r}{hint}; known data sets: {known}") from None
