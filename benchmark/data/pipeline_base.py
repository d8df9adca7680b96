"""What the FFCV and torchvision pipelines share: file-backed splits, the BatchLoader-compatible
loader interface, resolutions, and the per-batch finishing step.

A pipeline loader offers BatchLoader's interface -- ``epoch(epoch, start_batch)``, ``__len__``,
``num_examples``, ``rank``/``world_size`` sharding, ``train``, ``batch_size`` -- so the trainer and the
phases use any of them unchanged; ``pipeline`` names it ("ffcv" | "torchvision"; BatchLoader:
"memory").

Division of work: the pipeline (ffcv's numba threads or the DataLoader's worker processes) decodes,
crops, flips and collates **uint8** images; the finishing step then runs in the consuming process on
the target device: move (pinned, ``non_blocking``), normalise with the in-memory pipeline's own
`Normalizer` (same constants, same arithmetic, channels_last on request) and apply cutout with the
in-memory pipeline's own code, drawn from a generator seeded with (seed, epoch, batch, rank). So the
three pipelines share normalisation and cutout exactly; they differ in how the crop/flip draws are
made. Moving uint8 instead of float32 is 4x less traffic to the GPU or between processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .augment import Normalizer, apply_cutout, draw_cutout
from .mixing import ExtraAugment
from .loader import ShardSizes, check_sharding
from .partition import generator

# torchvision's ImageNet constants (ffcv-imagenet uses the same, times 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_PAD = 4


@dataclass
class FileSplit:
    """A split whose pixels stay in a file: ``positions`` (int64) index samples of ``source`` (a
    `betons.BetonFile` or an `imagefolder.ImageFolderSource`), ``labels`` (int64) are theirs.

    Has ``labels``, ``len`` and ``subset`` like `ImageSplit`, so `load_data`'s val split and subsets
    apply unchanged (the same seeds select the same positions as for the in-memory split).
    """

    source: Any
    positions: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        self.positions = torch.as_tensor(self.positions, dtype=torch.int64).reshape(-1).contiguous()
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1).contiguous()
        if self.positions.shape != self.labels.shape:
            raise DataError(f"FileSplit has {self.positions.numel()} positions but {self.labels.numel()} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor) -> "FileSplit":
        return FileSplit(self.source, self.positions.index_select(0, indices), self.labels.index_select(0, indices))


@dataclass(frozen=True)
class Resolution:
    """Output side of the decoded images. ``fixed``: decode at the stored size (CIFAR); otherwise
    ``train_res`` or the progressive schedule for augmented training, ``val_res`` otherwise."""

    fixed: bool = True
    train_res: int = 224
    val_res: int = 224
    crop_ratio: float = 0.875
    min_res: int = 0
    max_res: int = 0
    start_ramp: int = 0
    end_ramp: int = 0

    @property
    def progressive(self) -> bool:
        return self.max_res > 0

    def train(self, epoch: int) -> int:
        if self.progressive:
            return progressive_res(epoch, self.min_res, self.max_res, self.start_ramp, self.end_ramp)
        return self.train_res


def progressive_res(epoch: int, min_res: int, max_res: int, start_ramp: int, end_ramp: int) -> int:
    """ffcv-imagenet's ``get_resolution``: min_res until ``start_ramp``, max_res from ``end_ramp``, a
    linear ramp between, rounded to the nearest multiple of 32."""
    if min_res > max_res:
        raise ConfigError(f"data.min_res ({min_res}) must be <= data.max_res ({max_res})")
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    return int(np.round(interp[0] / 32)) * 32


class PipelineLoader(ShardSizes):
    """Base of the file/worker-backed loaders; subclasses implement ``_raw_batches``."""

    pipeline = "?"

    def __init__(
        self,
        split,
        batch_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = True,
        cutout: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        cpu_threads: int | None = 1,
        extra: ExtraAugment | None = None,
        num_workers: int = -1,
        resolution: Resolution | None = None,
    ) -> None:
        check_sharding(batch_size, rank, world_size, cutout)
        if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1):
            raise ConfigError(f"cpu_threads must be a positive integer or None, got {cpu_threads!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < -1:
            raise ConfigError(f"data.num_workers must be an integer >= -1, got {num_workers!r}")
        self.split = split
        self.batch_size = batch_size
        self.train = bool(train)
        self.augment = bool(augment) and self.train
        self.cutout = int(cutout) if self.train else 0
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        self.cpu_threads = cpu_threads
        self.resolution = resolution or Resolution()
        self.normalize = Normalizer(mean, std)
        # automatic policy and mixup / cutmix (data/mixing.py): training only
        self.extra = extra if (extra is not None and extra.active and self.train) else None
        self._cuda = self.device.type == "cuda"

    # sizes: ShardSizes (as BatchLoader)

    def res_for_epoch(self, epoch: int) -> int | None:
        """Decoded image side in ``epoch`` (None: the stored size)."""
        r = self.resolution
        if r.fixed:
            return None
        return r.train(epoch) if self.augment else r.val_res

    # ----------------------------------------------------------------- batches
    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` for batches ``start_batch..len(self)-1`` of ``epoch`` (as BatchLoader):
        x float32 normalised N x C x H x W on ``device`` (channels_last if asked), y int64 N."""
        if start_batch < 0:
            raise ConfigError(f"start_batch must be >= 0, got {start_batch}")
        if start_batch >= len(self):
            return
        for b, (images, labels) in enumerate(self._raw_batches(epoch, start_batch), start=start_batch):
            yield self._finish(images, labels, epoch, b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def _raw_batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def _finish(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        previous = torch.get_num_threads()
        swap = self.cpu_threads is not None and self.device.type == "cpu" and previous != self.cpu_threads
        if swap:
            torch.set_num_threads(self.cpu_threads)
        try:
            if images.device != self.device:
                images = images.to(self.device, non_blocking=self._cuda)
            # copy: ffcv hands out views of its ring buffers, which it refills a few batches later
            y = labels.reshape(-1).to(device=self.device, dtype=torch.int64, non_blocking=self._cuda, copy=True)
            gen = generator(self.seed, epoch, b, self.rank) if (self.cutout or self.extra is not None) else None
            if self.extra is not None:
                images = self.extra.policy(images.contiguous(), gen)  # uint8 N x C x H x W, as the normaliser takes
            x = self.normalize(images, channels_last=self.channels_last)
            if self.cutout:
                cy, cx = draw_cutout(x.shape[0], x.shape[2], x.shape[3], gen)
                apply_cutout(x, self.cutout, cy, cx)
            if self.extra is not None and self.extra.mixes:
                return self.extra.mix(x, y, gen)
            return x, y
        finally:
            if swap:
                torch.set_num_threads(previous)

    # ----------------------------------------------------------------- reporting
    def describe(self) -> dict:
        r = self.resolution
        return {
            "pipeline": self.pipeline,
            "train": self.train,
            "augment": self.augment,
            "cutout": self.cutout,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "rank": self.rank,
            "world_size": self.world_size,
            "device": str(self.device),
            "resolution": None if r.fixed else (
                {"min_res": r.min_res, "max_res": r.max_res, "start_ramp": r.start_ramp, "end_ramp": r.end_ramp}
                if r.progressive and self.augment else (r.train_res if self.augment else r.val_res)),
        }

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k not in ("pipeline",))
        return f"{type(self).__name__}(n={len(self.split)}, batches={len(self)}, {extra})"
