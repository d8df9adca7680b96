"""`load_data`: config -> `DataBundle` (official splits, optional val hold-out, optional subsets).

Split and subset logic lives here once, for every registered data set, so CIFAR and the synthetic
set behave identically (same seeds select the same positions).
"""

from __future__ import annotations

from ..errors import ConfigError
from . import cifar as _cifar  # noqa: F401  (registers cifar10 / cifar100)
from . import synthetic as _synthetic  # noqa: F401  (registers synthetic)
from .config import DataConfig
from .loader import BatchLoader, Loader
from .partition import mix_seed, split_train_val, stratified_subset
from .pipelines import load_source, make_pipeline_loader
from .splits import DataBundle, ImageSplit

# Seed streams derived from data.split_seed, one per use, so changing e.g. the val split does not
# silently change which eval examples a subset keeps.
_TRAIN_SUBSET_STREAM = 1
_EVAL_SUBSET_STREAM = 2


def load_data(cfg: DataConfig) -> DataBundle:
    """Load ``cfg.name``, hold out ``val_fraction`` of train as "val" if > 0, apply the subsets."""
    if not isinstance(cfg, DataConfig):
        raise ConfigError(f"load_data expects a DataConfig, got {type(cfg).__name__}")
    cfg.validate()
    pipeline, src = load_source(cfg)  # data.pipeline: memory (default) | ffcv | torchvision | auto

    train, eval_split_name = src.train, "test"
    eval_ = src.test
    if cfg.val_fraction > 0:
        tr_idx, va_idx = split_train_val(len(src.train), cfg.val_fraction, cfg.split_seed)
        if len(va_idx) == 0 or len(tr_idx) == 0:
            raise ConfigError(
                f"data.val_fraction={cfg.val_fraction} leaves {len(tr_idx)} train / {len(va_idx)} val "
                f"examples out of {len(src.train)}; use a fraction that keeps both non-empty"
            )
        train, eval_ = src.train.subset(tr_idx), src.train.subset(va_idx)
        eval_split_name = "val"

    train = _subset(train, cfg.train_subset, "train_subset", "training split", (cfg.split_seed, _TRAIN_SUBSET_STREAM))
    eval_ = _subset(eval_, cfg.eval_subset, "eval_subset", f"{eval_split_name} split", (cfg.split_seed, _EVAL_SUBSET_STREAM))

    return DataBundle(
        name=cfg.name,
        train=train,
        eval=eval_,
        test=src.test,
        eval_split=eval_split_name,
        num_classes=int(src.num_classes),
        input_shape=tuple(int(s) for s in (src.input_shape or src.train.images.shape[1:])),
        mean=tuple(float(m) for m in src.mean),
        std=tuple(float(s) for s in src.std),
        synthetic=bool(src.synthetic),
        source=src.source,
        split_seed=cfg.split_seed,
        val_fraction=float(cfg.val_fraction),
        train_subset=cfg.train_subset,
        eval_subset=cfg.eval_subset,
        pipeline=pipeline,
        config=cfg,
    )


def _subset(split: ImageSplit, k: int, field: str, what: str, seed: tuple[int, int]) -> ImageSplit:
    if k == 0 or k == len(split):
        return split
    if k > len(split):
        raise ConfigError(f"data.{field}={k} exceeds the {len(split)} examples of the {what}; use 0 for all")
    return split.subset(stratified_subset(split.labels, k, mix_seed(*seed)))


def make_loader(
    bundle: DataBundle,
    which: str,
    batch_size: int,
    cfg: DataConfig | None = None,
    **kwargs,
) -> Loader:
    """A `BatchLoader` for ``bundle.<which>`` ("train" | "eval" | "test") with the bundle's
    mean/std and, for train, the augmentation settings of ``cfg``; ``kwargs`` go to BatchLoader
    (seed, rank, world_size, device, channels_last, drop_last ...). For a bundle loaded with
    data.pipeline=ffcv / torchvision, that pipeline's loader (same interface, see pipelines.py)."""
    if which not in ("train", "eval", "test"):
        raise ConfigError(f"make_loader: which must be 'train', 'eval' or 'test', got {which!r}")
    if bundle.pipeline != "memory":  # FFCVLoader / TorchvisionLoader: the same interface as BatchLoader
        return make_pipeline_loader(bundle, which, batch_size, cfg, **kwargs)
    train = which == "train"
    if train and cfg is not None:
        kwargs.setdefault("augment", cfg.augment)
        kwargs.setdefault("cutout", cfg.cutout)
        kwargs.setdefault("extra", cfg.extra_augment(bundle.num_classes))
    return BatchLoader(getattr(bundle, which), batch_size, train=train, mean=bundle.mean, std=bundle.std, **kwargs)
