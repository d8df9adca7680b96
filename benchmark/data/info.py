"""Every static fact about a data set, in one table: known without reading any file.

Classes, input size and domain (``npas params`` and the budget solver need them, but must not load data),
whether it trains at its native size (no resolution options), whether ``npas data prepare`` writes FFCV
betons for it, whether it is synthetic. The loaders agree with these numbers (a test checks it); the
in-memory loaders register under these names (``registry.register_dataset``), and every other module
reads the facts from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RegistryError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    domain: str  # "cifar" (32x32 architectures) or "imagenet"
    synthetic: bool = False
    betons: bool = False  # `npas data prepare` writes <name>_{train,test}.beton for it (data.pipeline=ffcv)
    train_size: int = 0  # examples in the training split (0: set by the config, the synthetic set)
    test_size: int = 0  # examples in the test split

    @property
    def fixed_size(self) -> bool:
        """Trains at its native resolution: the resolution options (train_res, val_res, min/max_res) do not apply."""
        return self.domain != "imagenet"


DATASET_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 32, "cifar", betons=True, train_size=50_000, test_size=10_000),
    "cifar100": DatasetInfo("cifar100", 100, 32, "cifar", betons=True, train_size=50_000, test_size=10_000),
    "synthetic": DatasetInfo("synthetic", 10, 32, "cifar", synthetic=True),
    "imagenet": DatasetInfo("imagenet", 1000, 224, "imagenet", betons=True, train_size=1_281_167, test_size=50_000),
}
BETON_DATASETS = tuple(n for n, i in DATASET_INFO.items() if i.betons)
FIXED_SIZE_DATASETS = tuple(n for n, i in DATASET_INFO.items() if i.fixed_size)


def dataset_info(name: str, num_classes: int | None = None, image_size: int | None = None) -> DatasetInfo:
    try:
        info = DATASET_INFO[name]
    except KeyError:
        raise RegistryError(
            f"unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASET_INFO))}."
        ) from None
    if num_classes is not None or image_size is not None:
        info = DatasetInfo(info.name, num_classes or info.num_classes, image_size or info.image_size,
                           info.domain, info.synthetic, info.betons, info.train_size, info.test_size)
    return info
