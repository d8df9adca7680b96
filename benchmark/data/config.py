"""`DataConfig`: the one place that says which data a run uses and how it is split.

It is frozen (hashable, safe to share between the trainer and result records) and validated on
construction, so a bad value fails at config-load time with the field name, not hours later
inside the training loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from .info import FIXED_SIZE_DATASETS

# Values of data.pipeline (pipelines.py). "memory" is the exact-resume in-RAM BatchLoader.
PIPELINES = ("memory", "ffcv", "torchvision", "auto")
# Data sets whose images are decoded at their stored size (the resolution fields do not apply).


@dataclass(frozen=True)
class DataConfig:
    """Which data set to load and how to split / subsample / augment it.

    Field names are given to the user as ``data.<field>`` in error messages.
    """

    name: str = "synthetic"  # "synthetic" | "cifar10" | "cifar100" | "imagenet" (ffcv/torchvision pipelines only)
    root: str | None = None  # folder holding `cifar-100-python/` (or that folder); ImageNet: holds train/ and val/
    download: bool = False  # fetch with torchvision's downloader if the pickles are absent
    val_fraction: float = 0.0  # > 0: hold out a seeded fraction of train; eval split = "val"
    split_seed: int = 0  # seeds the val split and the subsets (never the training seed)
    augment: bool = True  # random horizontal flip + 4-pixel zero-pad random crop on train
    cutout: int = 0  # cutout square side (16 is usual); 0 = off
    # per-image automatic augmentation on train (torchvision's): "trivial" (TrivialAugmentWide), "randaugment"
    # (2 ops, magnitude 9: DeiT's rand-m9), "none"; seeded per batch like the flips and crops
    auto_augment: str = "none"
    mixup_alpha: float = 0.0  # mixup's Beta(alpha, alpha) (DeiT: 0.8); 0 = off. Targets become soft
    cutmix_alpha: float = 0.0  # cutmix's Beta(alpha, alpha) (DeiT: 1.0); 0 = off; both on: one of them per batch, 1/2 each
    mix_prob: float = 1.0  # probability that a training batch is mixed (when mixup or cutmix is on)
    train_subset: int = 0  # 0 = all; else keep N training examples (stratified, seeded)
    eval_subset: int = 0  # 0 = all; else keep N examples of the eval split (stratified, seeded)
    synthetic_classes: int = 10  # data.name = synthetic: classes of the built-in synthetic data set
    synthetic_train: int = 5000  # synthetic: training images
    synthetic_test: int = 1000  # synthetic: test images
    synthetic_size: int = 32  # synthetic: image side in pixels (H = W)
    # -- how batches are produced (see pipelines.py) --------------------------------------------
    pipeline: str = "memory"  # "memory" | "ffcv" | "torchvision" | "auto" (ffcv if usable, else torchvision)
    beton_dir: str | None = None  # folder of <name>_train.beton / <name>_test.beton (`npas data prepare`)
    num_workers: int = -1  # ffcv threads / DataLoader workers; -1 = one per available core (always clamped to them)
    os_cache: bool = True  # ffcv: read betons through the OS page cache (False: ffcv's own process cache)
    # -- ImageNet-style resolutions (0 = the data set's default, 224); CIFAR is always 32x32 --------
    train_res: int = 0  # training crop (RandomResizedCrop) side, when no progressive schedule is set
    val_res: int = 0  # evaluation centre-crop side
    crop_ratio: float = 0.875  # evaluation centre crop = crop_ratio x shorter side, resized to val_res (224/256)
    # progressive resolution as in ffcv-imagenet: min_res up to epoch start_ramp, then linear to max_res at
    # end_ramp (rounded to a multiple of 32); on when max_res > 0
    min_res: int = 0  # progressive resolution (ffcv-imagenet): the side it starts at; 0 = off
    max_res: int = 0  # progressive resolution: the side it ends at (both 0 = a fixed data.train_res)
    start_ramp: int = 0  # progressive resolution: the epoch the ramp from min_res starts
    end_ramp: int = 0  # progressive resolution: the epoch max_res is reached

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field (``data.<field>``) and the fix."""
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"data.name must be a non-empty string, got {self.name!r}")
        if self.root is not None and (not isinstance(self.root, str) or not self.root.strip()):
            raise ConfigError(f"data.root must be a path string or null (left out), got {self.root!r}")
        for field in ("download", "augment"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"data.{field} must be true or false, got {getattr(self, field)!r}")
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0.0 <= float(vf) < 1.0):
            raise ConfigError(
                f"data.val_fraction must be a number in [0, 1) (e.g. 0.1 holds out 10% of train), got {vf!r}"
            )
        _int_field(self, "split_seed", minimum=None)
        from .mixing import POLICIES

        if self.auto_augment not in POLICIES:
            raise ConfigError(f"data.auto_augment must be one of {', '.join(repr(p) for p in POLICIES)}, got "
                              f"{self.auto_augment!r}")
        for field in ("mixup_alpha", "cutmix_alpha"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and v < float("inf")):
                raise ConfigError(f"data.{field} must be a number >= 0 (0 turns it off), got {v!r}")
        mp = self.mix_prob
        if isinstance(mp, bool) or not isinstance(mp, (int, float)) or not 0 <= mp <= 1:
            raise ConfigError(f"data.mix_prob must be a probability in [0, 1], got {mp!r}")
        _int_field(self, "cutout", minimum=0, hint="0 turns cutout off; 16 is the usual CIFAR value")
        _int_field(self, "train_subset", minimum=0, hint="0 keeps all training examples")
        _int_field(self, "eval_subset", minimum=0, hint="0 keeps the whole eval split")
        _int_field(self, "synthetic_classes", minimum=2)
        _int_field(self, "synthetic_train", minimum=1)
        _int_field(self, "synthetic_test", minimum=1)
        _int_field(self, "synthetic_size", minimum=8)
        self._validate_pipeline()

    def _validate_pipeline(self) -> None:
        if self.pipeline not in PIPELINES:
            raise ConfigError(
                f"data.pipeline must be one of {', '.join(repr(p) for p in PIPELINES)}, got {self.pipeline!r} "
                "(memory: in-RAM CIFAR/synthetic; ffcv: .beton files; torchvision: a DataLoader; auto: ffcv if "
                "installed and betons exist, else torchvision)"
            )
        if self.beton_dir is not None and (not isinstance(self.beton_dir, str) or not self.beton_dir.strip()):
            raise ConfigError(f"data.beton_dir must be a folder path or null, got {self.beton_dir!r}")
        if not isinstance(self.os_cache, bool):
            raise ConfigError(f"data.os_cache must be true or false, got {self.os_cache!r}")
        _int_field(self, "num_workers", minimum=-1, hint="-1 uses one worker per available core")
        for field in ("train_res", "val_res", "min_res", "max_res"):
            _int_field(self, field, minimum=0, hint="0 uses the data set's default resolution")
            value = getattr(self, field)
            if 0 < value < 16:
                raise ConfigError(f"data.{field} must be 0 (default) or at least 16 pixels, got {value}")
        _int_field(self, "start_ramp", minimum=0)
        _int_field(self, "end_ramp", minimum=0)
        r = self.crop_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 < float(r) <= 1.0):
            raise ConfigError(f"data.crop_ratio must be a number in (0, 1] (224/256 = 0.875 is usual), got {r!r}")
        progressive = self.min_res > 0 or self.max_res > 0
        if progressive:
            if self.min_res == 0 or self.max_res == 0:
                raise ConfigError(
                    f"data.min_res and data.max_res must both be set for progressive resolution "
                    f"(got min_res={self.min_res}, max_res={self.max_res}); set both, or both to 0 for a fixed data.train_res"
                )
            if self.min_res > self.max_res:
                raise ConfigError(f"data.min_res ({self.min_res}) must be <= data.max_res ({self.max_res})")
            if self.end_ramp < self.start_ramp:
                raise ConfigError(f"data.end_ramp ({self.end_ramp}) must be >= data.start_ramp ({self.start_ramp})")
            if self.train_res:
                raise ConfigError(
                    f"data.train_res={self.train_res} conflicts with progressive resolution (data.min_res/max_res); "
                    "set data.train_res=0 or turn progressive resolution off (min_res=max_res=0)"
                )
        if self.name in FIXED_SIZE_DATASETS:
            for field in ("train_res", "val_res", "min_res", "max_res"):
                if getattr(self, field):
                    raise ConfigError(
                        f"data.{field}={getattr(self, field)} does not apply to data.name={self.name!r} "
                        "(fixed-size images, no resizing); leave it 0"
                    )

    def extra_augment(self, num_classes: int):
        """The automatic policy and mixup / cutmix settings (``mixing.ExtraAugment``) every pipeline's loader takes."""
        from .mixing import ExtraAugment

        return ExtraAugment(self.auto_augment, float(self.mixup_alpha), float(self.cutmix_alpha), float(self.mix_prob),
                            int(num_classes))

    def replace(self, **changes) -> "DataConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _int_field(cfg: DataConfig, field: str, *, minimum: int | None, hint: str = "") -> None:
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"data.{field} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"data.{field} must be >= {minimum}, got {value}{extra}")
