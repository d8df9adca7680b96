"""Static facts about data sets (classes, input size), known without reading any file.

``npas params`` and the budget solver need the number of classes and the input resolution, but must
not load data. The loaders in this package agree with these numbers (a test checks it).
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


DATASET_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 32, "cifar"),
    "cifar100": DatasetInfo("cifar100", 100, 32, "cifar"),
    "synthetic": DatasetInfo("synthetic", 10, 32, "cifar", synthetic=True),
    "imagenet": DatasetInfo("imagenet", 1000, 224, "imagenet"),
}


def dataset_info(name: str, num_classes: int | None = None, image_size: int | None = None) -> DatasetInfo:
    try:
        info = DATASET_INFO[name]
    except KeyError:
        raise RegistryError(
            f"unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASET_INFO))}."
        ) from None
    if num_classes is not None or image_size is not None:
        info = DatasetInfo(info.name, num_classes or info.num_classes, image_size or info.image_size,
                           info.domain, info.synthetic)
    return info
