"""Data-set registry: name -> in-memory loader function, so new data sets plug in without touching `load_data`.

The suite's one ``Registry`` (duplicates are errors, close names suggested); the data set's static facts
(classes, size, domain) are ``info.DATASET_INFO``'s.

A loader takes the validated `DataConfig` and returns a `SourceData` (official train/test splits
plus normalisation constants); splitting into train/val and subsetting is done once, generically,
by `load_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import RegistryError
from ..registry import Registry
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
    input_shape: tuple[int, int, int] | None = None  # None: the shape of train's images (in-memory splits)


DatasetLoader = Callable[[DataConfig], SourceData]

DATASETS: Registry[DatasetLoader] = Registry("data set")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: ``@register_dataset("cifar100") def load(cfg) -> SourceData``."""

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        return DATASETS.add(name, fn, source=fn.__module__)

    return decorator


def get_dataset(name: str) -> DatasetLoader:
    """The loader for ``name``; RegistryError listing the known names otherwise."""
    if name in DATASETS:
        return DATASETS.get(name)
    else:
        known = ", ".join(DATASETS.names())
        if name == "imagenet":
            raise RegistryError(
                "data.name: 'imagenet' cannot be loaded in memory (data.pipeline=memory): it does not fit in RAM. "
                "It trains through the FFCV or torchvision pipelines: set data.pipeline=ffcv (betons written by "
                "`npas data prepare imagenet`, in data.beton_dir), data.pipeline=torchvision (an ImageFolder tree "
                f"with train/ and val/ in data.root) or data.pipeline=auto; in-memory data sets: {known}"
            ) from None
        raise RegistryError(f"data.name: unknown data set {name!r}; known data sets: {known}") from None
