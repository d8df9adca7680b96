"""The FFCV pipeline: ``ffcv.loader.Loader`` over betons written by `npas data prepare`.

Per batch, in ffcv's numba threads (``data.num_workers``, clamped to the available cores):
  * CIFAR: ``SimpleRGBImageDecoder``; train adds ``RandomHorizontalFlip`` and
    ``RandomTranslate(padding=4, fill=(0, 0, 0))`` (= zero-pad-4 random crop, as the memory pipeline);
  * ImageNet train: ``RandomResizedCropRGBImageDecoder((res, res))`` + ``RandomHorizontalFlip``, ``res``
    from ``data.train_res`` or ffcv-imagenet's progressive schedule (``data.min_res/max_res/start_ramp/
    end_ramp``: the decoder's output size is set before each epoch, as ffcv-imagenet does);
  * ImageNet eval: ``CenterCropRGBImageDecoder((val_res, val_res), ratio=data.crop_ratio)``;
  * then ``ToTensor``, on a GPU ``ToDevice(device, non_blocking=True)``, ``ToTorchImage(channels_last=True)``
    (uint8, no copy); labels ``IntDecoder``, ``ToTensor`` (+ ``ToDevice``).
Normalisation (the memory pipeline's constants and code) and cutout follow on the target device
(`PipelineLoader._finish`). On this project's CPU-only machines the batches end as CPU tensors; the
``ToDevice`` branch is the ffcv-imagenet recipe and has not run here (no GPU): `pipeline_ops` is
tested for it, a real GPU run is not.

Order: ``QUASI_RANDOM`` for training on one process, ``RANDOM`` under DDP (ffcv's ``distributed=True``,
which shards like DistributedSampler through the initialised process group; QUASI_RANDOM cannot shard),
``SEQUENTIAL`` for evaluation (this rank's strided share ``positions[rank::world_size]``, unpadded, as
BatchLoader -- no example is counted twice).

Determinism and resume -- what holds and what does not:
  * the order of epoch ``e`` is a function of (seed, e) (and, for QUASI_RANDOM, of the beton's page
    layout, i.e. of the file): ``epoch(e, start_batch=k)`` re-creates it and starts at batch ``k``
    without decoding the skipped batches, so a resumed epoch visits the same remaining images. (Stock
    ffcv's QUASI_RANDOM order also depends on how many epochs the Loader object produced before --
    it shuffles its page tables in place -- so a resumed process would draw another order; this
    loader restores the tables before each epoch to make the order a function of (seed, epoch).)
  * cutout draws are seeded per (seed, epoch, batch, rank), as in the memory pipeline;
  * flip / translate / random-resized-crop draws come from numba's per-thread generators, which ffcv
    does not seed: they differ from run to run. A resumed FFCV run is therefore statistically
    equivalent to, not bit-identical with, an uninterrupted one (use data.pipeline=memory for CIFAR
    when exact resume matters; the torchvision pipeline also replays exactly).
ffcv compiles its pipeline with numba when the first epoch starts (seconds; cached for the process);
``ffcv.pipeline.compiler.Compiler.set_enabled(False)`` skips compilation (tests).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .betons import IMAGE_FIELD, LABEL_FIELD, BetonFile, clamp_workers, import_ffcv, keep_torch_threads
from .pipeline_base import CIFAR_PAD, FileSplit, PipelineLoader


class FFCVLoader(PipelineLoader):
    """ffcv-backed loader with BatchLoader's interface (see the module docstring)."""

    pipeline = "ffcv"

    def __init__(self, split: FileSplit, batch_size: int, *, num_workers: int = -1, os_cache: bool = True,
                 batches_ahead: int = 3, **kwargs) -> None:
        super().__init__(split, batch_size, num_workers=num_workers, **kwargs)
        if not isinstance(split, FileSplit) or not isinstance(split.source, BetonFile):
            raise DataError("data.pipeline=ffcv needs a split read from a .beton file (data.beton_dir)")
        if self.resolution.fixed and not split.source.fixed_size:
            raise DataError(f"{split.source.path}: images of different sizes; a fixed-size (CIFAR) beton was expected")
        import_ffcv()
        self.num_workers = clamp_workers(num_workers, minimum=1)
        self.os_cache = bool(os_cache)
        self.batches_ahead = int(batches_ahead)
        self.distributed = self.train and self.world_size > 1
        self.order_name = ("random" if self.distributed else "quasi_random") if self.train else "sequential"
        if self.distributed:
            self._check_process_group()
        self._loader = None
        self._decoder = None
        self._pristine_pages = None

    def _check_process_group(self) -> None:
        import torch.distributed as dist

        ok = dist.is_available() and dist.is_initialized()
        if not ok or dist.get_rank() != self.rank or dist.get_world_size() != self.world_size:
            got = f"rank {dist.get_rank()}/{dist.get_world_size()}" if ok else "no process group"
            raise ConfigError(
                f"data.pipeline=ffcv with world_size={self.world_size} shards the training set through "
                f"torch.distributed (ffcv's distributed=True), but found {got} for rank {self.rank}; launch with "
                "torchrun (the trainer initialises the process group before building loaders)"
            )

    # ----------------------------------------------------------------- the ffcv pipeline
    def pipeline_ops(self, res: int | None = None) -> tuple[list, list]:
        """(image ops, label ops) for this loader's settings; no Loader is built (testable for any device)."""
        import_ffcv()
        from ffcv.fields.decoders import (CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder,
                                          SimpleRGBImageDecoder)
        from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor, ToTorchImage

        r = self.resolution
        if r.fixed:
            image: list = [SimpleRGBImageDecoder()]
            if self.augment:
                image += [RandomHorizontalFlip(), RandomTranslate(padding=CIFAR_PAD, fill=(0, 0, 0))]
        else:
            res = res or self.res_for_epoch(0)
            if self.augment:
                image = [RandomResizedCropRGBImageDecoder((res, res)), RandomHorizontalFlip()]
            else:
                image = [CenterCropRGBImageDecoder((res, res), ratio=r.crop_ratio)]
        label: list = [IntDecoder(), ToTensor()]
        image.append(ToTensor())
        if self._cuda:  # GPU machines only (not run in this project's CI): transfer uint8, normalise there
            image.append(ToDevice(self.device, non_blocking=True))
            label.append(ToDevice(self.device, non_blocking=True))
        image.append(ToTorchImage(channels_last=True))
        return image, label

    def _build(self):
        from ffcv.loader import Loader, OrderOption

        order = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
                 "sequential": OrderOption.SEQUENTIAL}[self.order_name]
        positions = self.split.positions.numpy().astype(np.int64)
        if not self.train:
            positions = positions[self.rank :: self.world_size]
        image_ops, label_ops = self.pipeline_ops()
        self._decoder = image_ops[0]
        with keep_torch_threads():
            loader = Loader(self.split.source.path, batch_size=self.batch_size, num_workers=self.num_workers,
                            os_cache=self.os_cache, order=order, distributed=self.distributed,
                            seed=self.seed % (2**31), indices=positions,
                            pipelines={IMAGE_FIELD: image_ops, LABEL_FIELD: label_ops},
                            drop_last=self.drop_last, batches_ahead=self.batches_ahead)
        if len(loader) != len(self):
            raise DataError(f"internal: ffcv plans {len(loader)} batches, this loader {len(self)}")
        traversal = loader.traversal_order
        if hasattr(traversal, "page_to_samples_array"):
            # QuasiRandom shuffles its page tables in place on every sample_order call, so its order for
            # epoch e depends on how many orders this instance drew before -- a resumed process would see
            # another order. Rebuild the tables once and restore them before every draw: the order is
            # then a function of (seed, epoch) and the file alone.
            traversal.prepare_data_structures()
            self._pristine_pages = traversal.page_to_samples_array.copy()
        self._loader = loader
        return loader

    def order(self, epoch: int) -> np.ndarray:
        """The beton sample indices this rank visits in ``epoch`` (before batching and drop_last)."""
        loader = self._loader or self._build()
        traversal = loader.traversal_order
        if getattr(self, "_pristine_pages", None) is not None:
            np.copyto(traversal.page_to_samples_array, self._pristine_pages)
        return np.asarray(traversal.sample_order(epoch))

    def _raw_batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from ffcv.loader.epoch_iterator import EpochIterator
        from ffcv.pipeline.compiler import Compiler

        loader = self._loader or self._build()
        res = self.res_for_epoch(epoch)
        if res is not None and hasattr(self._decoder, "output_size"):
            self._decoder.output_size = (res, res)  # progressive resolution: buffers are sized per epoch
        bs = self.batch_size
        order = self.order(epoch)[: len(self) * bs][start_batch * bs:]
        loader.next_epoch = epoch + 1
        with keep_torch_threads():
            Compiler.set_num_threads(self.num_workers)  # what Loader.__iter__ does (it also sets torch's)
            if loader.code is None:
                loader.generate_code()
            it = EpochIterator(loader, order)
        try:
            for images, labels in it:
                yield images, labels
        finally:
            it.close()

    def describe(self) -> dict:
        return {**super().describe(), "order": self.order_name, "os_cache": self.os_cache,
                "num_workers": self.num_workers, "beton": self.split.source.path}
