"""In-memory containers: `ImageSplit` (one split) and `DataBundle` (what `load_data` returns).

CIFAR fits in RAM as uint8 (150 MB for CIFAR-100 train), so every split is two tensors. Keeping
uint8 until the batch is on the target device is 4x less memory traffic than float and lets the
loader index, augment and normalise whole batches with tensor ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError


@dataclass
class ImageSplit:
    """``images``: uint8 N x 3 x H x W (made contiguous); ``labels``: int64 N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                "ImageSplit.images must be a uint8 tensor of shape N x C x H x W, got "
                f"{getattr(self.images, 'dtype', type(self.images))} {tuple(getattr(self.images, 'shape', ()))}"
            )
        if not isinstance(self.labels, torch.Tensor) or self.labels.dim() != 1:
            raise DataError("ImageSplit.labels must be a 1-D tensor")
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"ImageSplit has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        self.labels = self.labels.to(torch.int64)
        self.images = self.images.contiguous()
        self.labels = self.labels.contiguous()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor) -> "ImageSplit":
        """A new split holding ``indices`` (copied, so the parent can be freed)."""
        return ImageSplit(self.images.index_select(0, indices), self.labels.index_select(0, indices))


@dataclass
class DataBundle:
    """Everything the trainer needs about the data; ``describe()`` goes into result records."""

    name: str
    train: ImageSplit
    eval: ImageSplit  # used for model selection / reporting during training
    test: ImageSplit  # always the official (full) test split
    eval_split: str  # "val" | "test"
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    synthetic: bool
    source: str
    # Provenance of the split (copied from DataConfig so describe() is self-contained).
    split_seed: int = 0
    val_fraction: float = 0.0
    train_subset: int = 0
    eval_subset: int = 0
    # Which pipeline serves the batches ("memory" | "ffcv" | "torchvision", see pipelines.py) and the
    # DataConfig the bundle was loaded with (the pipeline loaders read their settings from it).
    # With ffcv / torchvision-ImageNet, train/eval/test are `FileSplit`s (labels + positions in a file).
    pipeline: str = "memory"
    config: object = None

    def describe(self) -> dict:
        """JSON-able summary: enough to tell two runs' data apart when comparing results."""
        return {
            "name": self.name,
            "num_classes": int(self.num_classes),
            "input_shape": [int(s) for s in self.input_shape],
            "num_train": len(self.train),
            "num_eval": len(self.eval),
            "num_test": len(self.test),
            "eval_split": self.eval_split,
            "split_seed": int(self.split_seed),
            "val_fraction": float(self.val_fraction),
            "train_subset": int(self.train_subset),
            "eval_subset": int(self.eval_subset),
            "synthetic": bool(self.synthetic),
            "source": self.source,
            "mean": [round(float(m), 6) for m in self.mean],
            "std": [round(float(s), 6) for s in self.std],
            "pipeline": self.pipeline,
        }


def channel_stats(images: torch.Tensor, chunk: int = 2048) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks (no N x ... float copy)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float32)
        total += x.sum(dim=(0, 2, 3)).double()
        total_sq += (x * x).sum(dim=(0, 2, 3)).double()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    return tuple((mean / 255.0).tolist()), tuple((var.sqrt() / 255.0).tolist())
