"""The static data-set facts used without loading data agree with the loaders."""

from __future__ import annotations

import pytest

from conftest import cifar100_root
from npasbench.data import DataConfig, load_data
from npasbench.data.info import DATASET_INFO, dataset_info
from npasbench.errors import RegistryError


def test_synthetic_info_matches_loader():
    info = dataset_info("synthetic")
    bundle = load_data(DataConfig(name="synthetic", synthetic_train=64, synthetic_test=32))
    assert (bundle.num_classes, bundle.input_shape[1]) == (info.num_classes, info.image_size)
    assert bundle.synthetic is info.synthetic is True


def test_cifar100_info_matches_loader():
    root = cifar100_root()
    if root is None:
        pytest.skip("real CIFAR-100 not found (set NPAS_CIFAR100_ROOT or place it in ../shared/data)")
    info = dataset_info("cifar100")
    bundle = load_data(DataConfig(name="cifar100", root=str(root)))
    assert (bundle.num_classes, bundle.input_shape[1]) == (info.num_classes, info.image_size)
    assert (len(bundle.train), len(bundle.test)) == (info.train_size, info.test_size)  # plan's compute estimate


def test_unknown_and_not_yet_loadable():
    with pytest.raises(RegistryError, match="unknown dataset 'mnist'"):
        dataset_info("mnist")
    assert set(DATASET_INFO) == {"cifar10", "cifar100", "synthetic", "imagenet"}
    with pytest.raises(RegistryError, match="FFCV"):
        load_data(DataConfig(name="imagenet"))
