"""The torchvision pipeline: a ``torch.utils.data.DataLoader`` with torchvision v2 transforms in
worker processes; the fallback when FFCV is not installed or no betons exist.

Sources: an in-memory `ImageSplit` (CIFAR / synthetic, read from the pickles as for the memory
pipeline) or a `FileSplit` of an ImageFolder tree (ImageNet, decoded with PIL).

Augmentations (per sample, on uint8):
  * CIFAR train: ``RandomCrop(32, padding=4, fill=0)`` (black padding, as the memory pipeline) and
    ``RandomHorizontalFlip()``;
  * ImageNet train: ``RandomResizedCrop(res)`` (scale (0.08, 1), ratio (3/4, 4/3), antialiased bilinear)
    and ``RandomHorizontalFlip()``; ``res`` may follow the progressive schedule (a new worker pool
    per epoch picks the epoch's resolution up);
  * ImageNet eval: a centre crop of ``crop_ratio`` x the shorter side, resized to ``val_res`` (ffcv's
    ``CenterCropRGBImageDecoder`` arithmetic: 224/256 = the usual resize-256-crop-224).
Normalisation and cutout follow in the consuming process (`PipelineLoader._finish`).

Determinism: the order of an epoch is BatchLoader's order (same seeded permutation, same DDP
padding and sharding, no process group needed), and each sample's transform draws come from the
default CPU generator seeded with ``mix_seed(seed, epoch, rank, k)`` for its position ``k`` in this
rank's epoch order -- independent of the number of workers. So ``epoch(e, start_batch=k)`` yields
exactly batches ``k..`` of ``epoch(e)``: a resumed run sees the same inputs as an uninterrupted one
(the pixels differ from the memory pipeline's, whose draws are per batch).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..errors import DataError
from .betons import clamp_workers
from .imagefolder import ImageFolderSource, load_rgb
from .partition import generator, mix_seed
from .loader import train_order
from .pipeline_base import CIFAR_PAD, FileSplit, PipelineLoader
from .splits import ImageSplit


class CenterCropRatio:
    """Centre square of side ``int(ratio * shorter side)``, resized to ``size`` x ``size`` (PIL in, PIL out);
    the crop arithmetic of ffcv's ``get_center_crop``."""

    def __init__(self, size: int, ratio: float) -> None:
        self.size = int(size)
        self.ratio = float(ratio)

    def __call__(self, img):
        from PIL import Image

        w, h = img.size
        c = max(1, int(self.ratio * min(h, w)))
        top, left = (h - c) // 2, (w - c) // 2
        return img.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + c, top + c),
                          reducing_gap=None)


def build_transform(kind: str, augment: bool, res: int | None, crop_ratio: float):
    """The per-sample transform (uint8 tensor out). ``kind``: "tensor" (CIFAR/synthetic) or "folder"."""
    from torchvision.transforms import v2

    if kind == "tensor":
        if not augment:
            return None
        return _TensorFlipCrop()
    if augment:
        return v2.Compose([v2.RandomResizedCrop(res, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    return v2.Compose([CenterCropRatio(res, crop_ratio), v2.PILToTensor()])


class _TensorFlipCrop:
    """torchvision's ``RandomCrop(size, padding=4, fill=0)`` + ``RandomHorizontalFlip()`` for any image
    size (the crop size is the input's own H x W)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], object] = {}

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        size = (int(img.shape[-2]), int(img.shape[-1]))
        t = self._cache.get(size)
        if t is None:
            t = self._cache[size] = v2.Compose([v2.RandomCrop(size, padding=CIFAR_PAD, fill=0),
                                                v2.RandomHorizontalFlip()])
        return t(img)


class _SampleSet(Dataset):
    """Items are ``(position in split, seed or None)`` -> (uint8 C x H x W tensor, int label)."""

    def __init__(self, split) -> None:
        self.split = split
        self.transform = None
        if isinstance(split, ImageSplit):
            self.kind = "tensor"
        elif isinstance(split, FileSplit) and isinstance(split.source, ImageFolderSource):
            self.kind = "folder"
            self.samples = split.source.samples
            self.positions = split.positions.tolist()
        else:
            raise DataError(
                f"data.pipeline=torchvision reads in-memory splits or ImageFolder trees, not {type(getattr(split, 'source', split)).__name__}"
            )
        self.labels = split.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def _load(self, pos: int):
        if self.kind == "tensor":
            return self.split.images[pos]
        path, _ = self.samples[self.positions[pos]]
        return load_rgb(path)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        pos, seed = key
        img = self._load(pos)
        t = self.transform
        if t is not None:
            # torchvision's transforms draw from the default CPU generator; seed only that one
            # (torch.manual_seed also seeds the accelerator generators: ~300 us per call here)
            gen = torch.default_generator
            if seed is None:
                img = t(img)
            elif get_worker_info() is not None:  # a worker process: its RNG is its own
                gen.manual_seed(seed)
                img = t(img)
            else:  # in-process loading: keep the caller's RNG stream untouched
                state = gen.get_state()
                try:
                    gen.manual_seed(seed)
                    img = t(img)
                finally:
                    gen.set_state(state)
        if not isinstance(img, torch.Tensor):
            raise DataError(f"internal: the {self.kind} transform returned {type(img).__name__}")
        return img, self.labels[pos]


class _EpochBatches(Sampler):
    """Batches ``start_batch..n_batches-1`` of one epoch: lists of (position, seed)."""

    def __init__(self, order: list[int], batch_size: int, n_batches: int, start_batch: int, seeds: list | None) -> None:
        self.order = order
        self.batch_size = batch_size
        self.n_batches = n_batches
        self.start_batch = start_batch
        self.seeds = seeds

    def __len__(self) -> int:
        return max(0, self.n_batches - self.start_batch)

    def __iter__(self):
        bs = self.batch_size
        for b in range(self.start_batch, self.n_batches):
            lo, hi = b * bs, min((b + 1) * bs, len(self.order))
            yield [(self.order[k], None if self.seeds is None else self.seeds[k]) for k in range(lo, hi)]


class TorchvisionLoader(PipelineLoader):
    """DataLoader-backed loader with BatchLoader's interface (see the module docstring)."""

    pipeline = "torchvision"

    def __init__(self, split, batch_size: int, *, num_workers: int = -1, crop_ratio: float | None = None, **kwargs) -> None:
        super().__init__(split, batch_size, num_workers=num_workers, **kwargs)
        self.num_workers = clamp_workers(num_workers, minimum=0)
        self.dataset = _SampleSet(split)
        if self.dataset.kind == "folder" and self.resolution.fixed:
            raise DataError("internal: an ImageFolder split needs a resolution (data.train_res / data.val_res)")

    def indices(self, epoch: int) -> torch.Tensor:
        """Positions (in the split) this rank visits in ``epoch``, in order -- BatchLoader's order."""
        n = len(self.split)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size]
        return train_order(n, self.seed, epoch, self.rank, self.world_size)

    def _raw_batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices(epoch)[: len(self) * self.batch_size].tolist()
        res = self.res_for_epoch(epoch)
        self.dataset.transform = build_transform(self.dataset.kind, self.augment, res, self.resolution.crop_ratio)
        seeds = None
        if self.augment:
            seeds = [mix_seed(self.seed, epoch, self.rank, k) for k in range(len(order))]
        sampler = _EpochBatches(order, self.batch_size, len(self), start_batch, seeds)
        # its own generator: DataLoader draws a base seed when iterated (even without workers), which
        # would otherwise consume the caller's global RNG stream (and differ between run and resume)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                            pin_memory=self._cuda and torch.cuda.is_available(),
                            prefetch_factor=4 if self.num_workers > 0 else None, persistent_workers=False,
                            generator=generator(self.seed, epoch, self.rank))
        it = iter(loader)
        try:
            yield from it
        finally:
            del it  # shuts the workers down now, also when the consumer stops early

    def describe(self) -> dict:
        return {**super().describe(), "num_workers": self.num_workers,
                "source": "ImageFolder" if self.dataset.kind == "folder" else "in-memory split"}
