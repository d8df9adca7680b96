"""Data layer: CIFAR-10/100 (read from torchvision's pickles) and a synthetic set, split and
subset reproducibly, served by a deterministic, resumable, DDP-aware in-memory batch loader.

    bundle = load_data(DataConfig(name="cifar100", root="shared/data", val_fraction=0.1))
    loader = BatchLoader(bundle.train, 128, train=True, mean=bundle.mean, std=bundle.std, seed=0)
    for x, y in loader.epoch(epoch, start_batch=k): ...

``data.pipeline`` (pipelines.py) swaps the loader: "ffcv" (betons from `npas data prepare`, FFCVLoader),
"torchvision" (a DataLoader, TorchvisionLoader), "auto"; ImageNet loads only through those two.
"""

from .cifar import CIFAR_SPECS, find_cifar_root
from .config import DataConfig
from .load import load_data, make_loader
from .loader import BatchLoader, Loader
from .pipeline_base import FileSplit
from .pipelines import make_pipeline_loader, resolve_pipeline
from .registry import DATASETS, SourceData, get_dataset, register_dataset
from .splits import DataBundle, ImageSplit, channel_stats
from .synthetic import make_synthetic

__all__ = [
    "BatchLoader",
    "CIFAR_SPECS",
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "FileSplit",
    "ImageSplit",
    "Loader",
    "SourceData",
    "channel_stats",
    "find_cifar_root",
    "get_dataset",
    "load_data",
    "make_loader",
    "make_pipeline_loader",
    "make_synthetic",
    "register_dataset",
    "resolve_pipeline",
]
