"""`BatchLoader`: deterministic, resumable, DDP-sharded batches from an in-memory `ImageSplit`.

Why not torch's DataLoader: CIFAR is in RAM, so worker processes and per-sample PIL transforms
only add overhead (and non-determinism on resume). Here a batch is one index_select of uint8
pixels, moved to the target device, then augmented and normalised there as whole-batch tensor ops.

Determinism contract (the trainer's exact resume depends on it):
  * the order of epoch ``e`` is ``randperm(N)`` from a generator seeded with ``mix_seed(seed, e)``
    (= ``seed * 1_000_003 + e``), identical on every rank;
  * the augmentation of batch ``b`` uses a generator seeded with ``mix_seed(seed, e, b, rank)``,
  so ``epoch(e, start_batch=k)`` yields exactly batches ``k..`` of ``epoch(e)``.
"""

from __future__ import annotations

import math
from typing import Iterator, Protocol, Sequence, runtime_checkable

import torch

from ..errors import ConfigError
from .augment import CROP_PADDING, Normalizer, apply_cutout, draw_cutout, draw_flip_crop, flip_crop
from .mixing import ExtraAugment
from .partition import generator
from .splits import ImageSplit


@runtime_checkable
class Loader(Protocol):
    """The interface every loader offers (``BatchLoader``, ``FFCVLoader``, ``TorchvisionLoader``): what the
    trainer, the phases and the benchmarks use, whichever ``data.pipeline`` served the batches."""

    pipeline: str  # "memory" | "ffcv" | "torchvision": the name result records use
    batch_size: int
    rank: int
    world_size: int

    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch (after padding or dropping)."""
        ...

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        ...

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from ``start_batch`` on: (images, labels) on the loader's device."""
        ...


def check_sharding(batch_size, rank, world_size, cutout) -> None:
    """The checks every loader makes on its batch/rank/cutout arguments."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(world_size, int) or world_size < 1 or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
        raise ConfigError(f"data.cutout must be an integer >= 0, got {cutout!r}")


def train_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """The training order of every pipeline: a seeded permutation of ``n``, padded by repeating from
    the start (wrapping if needed, as DistributedSampler) to a multiple of ``world_size``, this
    rank's strided share."""
    perm = torch.randperm(n, generator=generator(seed, epoch))
    total = math.ceil(n / world_size) * world_size
    if total > n:
        perm = perm.repeat(math.ceil(total / n))[:total]
    return perm[rank::world_size]


class ShardSizes:
    """Per-rank sizes shared by every loader (needs ``split``, ``train``, ``rank``, ``world_size``,
    ``batch_size``, ``drop_last``)."""

    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch (train: padded share; eval: its disjoint share);
        with ``drop_last`` only the examples in full batches."""
        n = self._rank_share()
        if self.drop_last:
            n = (n // self.batch_size) * self.batch_size
        return n

    def _rank_share(self) -> int:
        n = len(self.split)
        if self.train:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        n = self._rank_share()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class BatchLoader(ShardSizes):
    """In-memory, deterministic, batched loader; augmentation done on whole batches with tensor ops.

    ``train=True``: seeded shuffle per epoch, padded (repeating from the start, like
    DistributedSampler) to a multiple of ``world_size``, this rank takes ``perm[rank::world_size]``;
    flip + pad-crop if ``augment``, cutout if ``cutout > 0``.
    ``train=False``: sequential, unpadded ``indices[rank::world_size]``, no augmentation (the
    trainer all-reduces correct/total counts, so no example is counted twice).
    ``cpu_threads``: torch threads used while building a batch on a CPU device (default 1; None
    leaves torch's setting alone); the previous setting is restored before each batch is yielded.
    """

    pipeline = "memory"  # the name result records use (the ffcv / torchvision loaders say theirs)

    def __init__(
        self,
        split: ImageSplit,
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
    ) -> None:
        check_sharding(batch_size, rank, world_size, cutout)
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
        if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1):
            raise ConfigError(f"cpu_threads must be a positive integer or None, got {cpu_threads!r}")
        self.cpu_threads = cpu_threads
        self.normalize = Normalizer(mean, std)
        # automatic policy and mixup / cutmix (data/mixing.py): training only
        self.extra = extra if (extra is not None and extra.active and self.train) else None
        self._cuda = self.device.type == "cuda"
        self._pin = self._cuda and torch.cuda.is_available()

    # ----------------------------------------------------------------- order
    def indices(self, epoch: int) -> torch.Tensor:
        """The example indices this rank visits in ``epoch``, in order (before batching)."""
        n = len(self.split)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size]
        return train_order(n, self.seed, epoch, self.rank, self.world_size)

    # ----------------------------------------------------------------- batches
    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` for batches ``start_batch..len(self)-1`` of ``epoch``.

        x: float32 normalised N x C x H x W on ``device`` (channels_last if asked); y: int64 N.
        """
        if start_batch < 0:
            raise ConfigError(f"start_batch must be >= 0, got {start_batch}")
        idx = self.indices(epoch)
        n_batches = len(self)
        for b in range(start_batch, n_batches):
            batch_idx = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield self._make_batch(batch_idx, epoch, b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch 0 (convenience for eval loaders; trainers should call ``epoch(e)``)."""
        return self.epoch(0)

    def _make_batch(self, batch_idx: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Batch ops are small (~0.4 M elements): on CPU, intra-op threads gain little and stall badly
        # when the cores are shared (OpenMP barriers wait for descheduled threads), so build the batch
        # with ``cpu_threads`` threads and restore torch's setting before the model step runs.
        previous = torch.get_num_threads()
        if self.cpu_threads is None or self.device.type != "cpu" or previous == self.cpu_threads:
            return self._build_batch(batch_idx, epoch, b)
        torch.set_num_threads(self.cpu_threads)
        try:
            return self._build_batch(batch_idx, epoch, b)
        finally:
            torch.set_num_threads(previous)

    def _build_batch(self, batch_idx: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.split.images.index_select(0, batch_idx)
        labels = self.split.labels.index_select(0, batch_idx)
        if self._cuda:
            if self._pin:
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        elif images.device != self.device:
            images, labels = images.to(self.device), labels.to(self.device)
        gen = None
        if self.augment or self.cutout or self.extra is not None:
            gen = generator(self.seed, epoch, b, self.rank)
        if self.augment:
            images = flip_crop(images, draw_flip_crop(images.shape[0], gen), CROP_PADDING)
        if self.extra is not None:
            images = self.extra.policy(images, gen)
        x = self.normalize(images, channels_last=self.channels_last)
        if self.cutout:
            cy, cx = draw_cutout(x.shape[0], x.shape[2], x.shape[3], gen)
            apply_cutout(x, self.cutout, cy, cx)
        if self.extra is not None and self.extra.mixes:
            return self.extra.mix(x, labels, gen)
        return x, labels

    def __repr__(self) -> str:
        return (
            f"BatchLoader(n={len(self.split)}, batch_size={self.batch_size}, train={self.train}, "
            f"augment={self.augment}, cutout={self.cutout}, rank={self.rank}/{self.world_size}, "
            f"batches={len(self)}, device={self.device})"
        )
