"""`DataConfig`: the one place that says which data a run uses and how it is split.

It is frozen (hashable, safe to share between the trainer and result records) and validated on
construction, so a bad value fails at config-load time with the field name, not hours later
inside the training loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Which data set to load and how to split / subsample / augment it.

    Field names are given to the user as ``data.<field>`` in error messages.
    """

    name: str = "synthetic"  # "synthetic" | "cifar10" | "cifar100" (see DATASETS)
    root: str | None = None  # folder holding `cifar-100-python/`, or that folder itself
    download: bool = False  # fetch with torchvision's downloader if the pickles are absent
    val_fraction: float = 0.0  # > 0: hold out a seeded fraction of train; eval split = "val"
    split_seed: int = 0  # seeds the val split and the subsets (never the training seed)
    augment: bool = True  # random horizontal flip + 4-pixel zero-pad random crop on train
    cutout: int = 0  # cutout square side (16 is usual); 0 = off
    train_subset: int = 0  # 0 = all; else keep N training examples (stratified, seeded)
    eval_subset: int = 0  # 0 = all; else keep N examples of the eval split (stratified, seeded)
    synthetic_classes: int = 10
    synthetic_train: int = 5000
    synthetic_test: int = 1000
    synthetic_size: int = 32  # H = W

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field (``data.<field>``) and the fix."""
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"data.name must be a non-empty string, got {self.name!r}")
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"data.root must be a path string or null, got {self.root!r}")
        for field in ("download", "augment"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"data.{field} must be true or false, got {getattr(self, field)!r}")
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0.0 <= float(vf) < 1.0):
            raise ConfigError(
                f"data.val_fraction must be a number in [0, 1) (e.g. 0.1 holds out 10% of train), got {vf!r}"
            )
        _int_field(self, "split_seed", minimum=None)
        _int_field(self, "cutout", minimum=0, hint="0 turns cutout off; 16 is the usual CIFAR value")
        _int_field(self, "train_subset", minimum=0, hint="0 keeps all training examples")
        _int_field(self, "eval_subset", minimum=0, hint="0 keeps the whole eval split")
        _int_field(self, "synthetic_classes", minimum=2)
        _int_field(self, "synthetic_train", minimum=1)
        _int_field(self, "synthetic_test", minimum=1)
        _int_field(self, "synthetic_size", minimum=8)

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
