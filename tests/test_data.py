"""Tests of the data layer (npasbench.data): data sets, splits, and the deterministic batch loader."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npasbench.data import (
    DATASETS,
    BatchLoader,
    DataConfig,
    ImageSplit,
    channel_stats,
    find_cifar_root,
    load_data,
    make_loader,
    register_dataset,
)
from npasbench.data.augment import AugmentDraws, flip_crop
from npasbench.data.partition import split_train_val, stratified_subset
from npasbench.data.registry import SourceData
from npasbench.errors import ConfigError, DataError, RegistryError

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def index_split(n: int, size: int = 4, classes: int = 7) -> ImageSplit:
    """Images whose pixels encode their own index (channel 0: low byte, channel 1: high byte)."""
    idx = torch.arange(n)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 0] = (idx % 256).to(torch.uint8)[:, None, None]
    images[:, 1] = (idx // 256).to(torch.uint8)[:, None, None]
    images[:, 2] = 77
    return ImageSplit(images, idx % classes)


def denormalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((x * s + m) * 255).round().to(torch.int64)


def normalise(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255 - m) / s


def decode_indices(x: torch.Tensor) -> list[int]:
    px = denormalise(x)[:, :, 0, 0]
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def rank_indices(loader: BatchLoader, epoch: int = 0) -> list[int]:
    out: list[int] = []
    for x, y in loader.epoch(epoch):
        ids = decode_indices(x)
        assert y.tolist() == [i % 7 for i in ids]  # labels travel with their images
        out += ids
    return out


def batches_equal(a, b) -> bool:
    # exact: uint8 images and integer labels moved, not computed: equal on every CPU
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


SMALL = dict(synthetic_train=1000, synthetic_test=500)  # keeps the split/subset tests fast


@pytest.fixture(scope="module")
def synthetic():
    return load_data(DataConfig())


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_balanced_and_described(synthetic):
    # exact: uint8 images from a seeded torch generator (CPU generators are bit-identical across CPUs)
    a, b = synthetic, load_data(DataConfig())
    for s in ("train", "eval", "test"):
        assert torch.equal(getattr(a, s).images, getattr(b, s).images)
        assert torch.equal(getattr(a, s).labels, getattr(b, s).labels)
    assert (len(a.train), len(a.test), a.num_classes, a.input_shape) == (5000, 1000, 10, (3, 32, 32))
    assert a.train.images.dtype == torch.uint8 and a.train.labels.dtype == torch.int64
    assert a.train.images.is_contiguous()
    assert torch.bincount(a.train.labels).tolist() == [500] * 10
    assert torch.bincount(a.test.labels).tolist() == [100] * 10
    assert a.synthetic and a.eval_split == "test" and a.source.startswith("synthetic(seed=0, classes=10")
    assert a.mean == pytest.approx(channel_stats(a.train.images)[0])
    assert all(0.1 < s < 0.4 for s in a.std)
    # Not constant / not degenerate: images differ within a class.
    assert not torch.equal(a.train.images[0], a.train.images[1])
    desc = json.loads(json.dumps(a.describe()))
    assert desc["num_train"] == 5000 and desc["num_eval"] == 1000 and desc["synthetic"] is True
    assert desc["eval_split"] == "test" and desc["split_seed"] == 0 and desc["source"] == a.source
    small = load_data(DataConfig(synthetic_classes=4, synthetic_train=40, synthetic_test=8, synthetic_size=16))
    assert small.input_shape == (3, 16, 16) and torch.bincount(small.train.labels).tolist() == [10] * 4


def test_synthetic_is_learnable_but_not_trivial(synthetic):
    b = synthetic
    xtr = b.train.images.flatten(1).float()
    xte = b.test.images.flatten(1).float()
    centroids = torch.stack([xtr[b.train.labels == k].mean(0) for k in range(b.num_classes)])
    acc = (torch.cdist(xte, centroids).argmin(1) == b.test.labels).float().mean().item()
    assert 0.3 < acc < 0.95, acc  # chance is 0.1


# ----------------------------------------------------------------------------- loader: determinism
def test_loader_is_deterministic_and_resumes_mid_epoch():
    # exact: the same seeded draws and the same elementwise (correctly rounded) ops on the same shapes
    split = load_data(DataConfig(synthetic_train=1000, synthetic_test=10)).train
    kw = dict(train=True, mean=MEAN, std=STD, augment=True, cutout=8, seed=3)
    one = BatchLoader(split, 64, **kw)
    two = BatchLoader(split, 64, **kw)
    assert len(one) == math.ceil(1000 / 64) and one.num_examples == 1000
    e2 = list(one.epoch(2))
    assert batches_equal(e2, list(two.epoch(2)))
    assert sum(x.shape[0] for x, _ in e2) == 1000
    for k in (1, 7, len(one) - 1):
        assert batches_equal(e2[k:], list(two.epoch(2, start_batch=k)))
    assert list(one.epoch(2, start_batch=len(one))) == []
    # Another epoch or another seed gives another order.
    assert not torch.equal(e2[0][1], list(one.epoch(3))[0][1])
    assert not torch.equal(e2[0][1], list(BatchLoader(split, 64, **{**kw, "seed": 4}).epoch(2))[0][1])
    # Batches are built single-threaded by default, but torch's setting is back before the model step.
    threads = torch.get_num_threads()
    assert all(torch.get_num_threads() == threads for _ in one.epoch(2))
    assert batches_equal(e2, list(BatchLoader(split, 64, **kw, cpu_threads=None).epoch(2)))
    dropped = BatchLoader(split, 64, **kw, drop_last=True)
    assert len(dropped) == 1000 // 64 and dropped.num_examples == (1000 // 64) * 64
    assert all(x.shape[0] == 64 for x, _ in dropped.epoch(0))


def test_eval_loader_is_sequential_without_augmentation():
    split = index_split(50)
    loader = BatchLoader(split, 16, train=False, mean=MEAN, std=STD, augment=True, cutout=4)
    xs = [x for x, _ in loader.epoch(5)]
    assert [x.shape[0] for x in xs] == [16, 16, 16, 2]
    assert torch.allclose(torch.cat(xs), normalise(split.images), atol=1e-6)


# ----------------------------------------------------------------------------- loader: DDP sharding
@pytest.mark.parametrize("n, world_size", [(10, 3), (12, 4), (2, 5), (7, 1)])
def test_train_sharding_pads_like_distributed_sampler(n, world_size):
    split = index_split(n)
    kw = dict(train=True, mean=MEAN, std=STD, augment=False, seed=11)
    full = rank_indices(BatchLoader(split, 3, **kw), epoch=4)  # single-process order
    assert sorted(full) == list(range(n))
    per_rank = []
    for rank in range(world_size):
        loader = BatchLoader(split, 3, **kw, rank=rank, world_size=world_size)
        assert loader.num_examples == math.ceil(n / world_size)
        ids = rank_indices(loader, epoch=4)
        assert len(ids) == loader.num_examples and len(loader) == math.ceil(len(ids) / 3)
        per_rank.append(ids)
    total = math.ceil(n / world_size) * world_size
    interleaved = [per_rank[i % world_size][i // world_size] for i in range(total)]
    # Same permutation on every rank, padded by repeating from the start, then perm[rank::world_size].
    assert interleaved == [full[i % n] for i in range(total)]
    assert set().union(*map(set, per_rank)) == set(range(n))


@pytest.mark.parametrize("n, world_size", [(11, 3), (2, 4), (9, 3)])
def test_eval_sharding_is_disjoint_complete_and_unpadded(n, world_size):
    split = index_split(n)
    shards = []
    for rank in range(world_size):
        loader = BatchLoader(split, 2, train=False, mean=MEAN, std=STD, rank=rank, world_size=world_size)
        ids = rank_indices(loader)
        assert ids == list(range(rank, n, world_size)) and loader.num_examples == len(ids)
        shards.append(ids)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # complete, and no duplicates


def test_loader_rejects_bad_arguments():
    split = index_split(4)
    with pytest.raises(ConfigError):
        BatchLoader(split, 2, train=True, mean=MEAN, std=STD, rank=2, world_size=2)
    with pytest.raises(ConfigError):
        BatchLoader(split, 0, train=True, mean=MEAN, std=STD)
    with pytest.raises(ConfigError):
        BatchLoader(split, 2, train=True, mean=MEAN, std=STD, cutout=-1)


# ----------------------------------------------------------------------------- augmentation
def test_no_augmentation_equals_plain_normalisation_in_loader_order():
    split = ImageSplit(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40))
    loader = BatchLoader(split, 16, train=True, mean=MEAN, std=STD, augment=False, seed=1)
    for x, y in loader.epoch(0):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.allclose(x, normalise(split.images[y]), atol=1e-5)


def test_flip_crop_primitive_mirrors_and_pads_with_zeros():
    # exact: flips, crops and padding move values, they compute none
    img = torch.randint(1, 256, (2, 3, 6, 6), dtype=torch.uint8)
    centre_flip = AugmentDraws(torch.tensor([True, False]), torch.tensor([4, 0]), torch.tensor([4, 0]))
    out = flip_crop(img, centre_flip)
    assert torch.equal(out[0], img[0].flip(-1))  # centre crop + flip is a pure mirror
    assert torch.equal(out[1, :, 4:, 4:], img[1, :, :2, :2])  # offset (0, 0): shifted down-right
    assert (out[1, :, :4, :] == 0).all() and (out[1, :, :, :4] == 0).all()  # padding is black


def test_flip_crop_in_loader_matches_reference_pad_crop_flip():
    n, size, pad = 300, 8, 4
    images = torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8)  # 0 only from padding
    split = ImageSplit(images, torch.arange(n))
    loader = BatchLoader(split, 64, train=True, mean=MEAN, std=STD, augment=True, seed=5)
    xs, ys = zip(*loader.epoch(0))
    x, y = torch.cat(xs), torch.cat(ys)
    pixels = denormalise(x)
    assert pixels.min() >= 0 and pixels.max() <= 255
    padded = F.pad(images[y], (pad, pad, pad, pad)).to(torch.int64)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # n x 3 x 9 x 9 x size x size
    plain = (windows == pixels[:, :, None, None]).all(5).all(4).all(1)  # n x 9 x 9
    mirrored = (windows == pixels.flip(-1)[:, :, None, None]).all(5).all(4).all(1)
    matches = torch.stack([plain, mirrored], 1)  # n x 2 (flip) x 9 (oy) x 9 (ox)
    assert (matches.flatten(1).sum(1) == 1).all()  # each sample is exactly one pad-crop(-flip) of its image
    flip, oy, ox = torch.unravel_index(matches.flatten(1).int().argmax(1), (2, 9, 9))
    assert 0.35 < flip.float().mean() < 0.65
    assert set(oy.tolist()) == set(range(9)) and set(ox.tolist()) == set(range(9))
    # Pad pixels are black before normalisation, i.e. -mean/std after it (torchvision's behaviour).
    pad_mask = (pixels == 0).all(1, keepdim=True).expand_as(x)
    assert pad_mask.any()
    expected = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1).expand_as(x)
    assert torch.allclose(x[pad_mask], expected[pad_mask], atol=1e-6)


def test_cutout_zeroes_a_clipped_square_after_normalisation():
    # exact: a zero mask and boolean patterns, no arithmetic on the compared values
    n, size, side = 400, 16, 6
    split = ImageSplit(torch.zeros(n, 3, size, size, dtype=torch.uint8), torch.arange(n))  # normalised != 0
    loader = BatchLoader(split, 100, train=True, mean=MEAN, std=STD, augment=False, cutout=side, seed=2)
    x = torch.cat([b for b, _ in loader.epoch(0)])
    zero = x == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same square in every channel
    mask = zero[:, 0]
    rows, cols = mask.any(2), mask.any(1)
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])  # a rectangle
    heights, widths = rows.sum(1), cols.sum(1)
    assert (heights >= 1).all() and (heights <= side).all() and (widths <= side).all()
    assert ((heights == side) & (widths == side)).any() and (heights < side).any()  # full and clipped squares
    for r in rows:  # contiguous rows
        on = r.nonzero().flatten()
        assert on.max() - on.min() + 1 == on.numel()
    assert torch.allclose(x[~zero], normalise(split.images)[~zero])  # the rest is untouched
    evals = BatchLoader(split, 100, train=False, mean=MEAN, std=STD, cutout=side)
    assert not any((b == 0).any() for b, _ in evals.epoch(0))


def test_channels_last_output_has_same_values():
    # exact: channels_last changes the memory layout of elementwise results, not their values
    split = ImageSplit(torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8), torch.arange(20))
    kw = dict(train=True, mean=MEAN, std=STD, augment=True, cutout=3, seed=9)
    for (a, ya), (b, yb) in zip(BatchLoader(split, 8, **kw).epoch(1), BatchLoader(split, 8, **kw, channels_last=True).epoch(1)):
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b) and torch.equal(ya, yb)


# ----------------------------------------------------------------------------- splits and subsets
def test_val_split_is_disjoint_complete_and_seeded():
    # exact: integer index tensors from a seeded permutation
    tr, va = split_train_val(1000, 0.1, seed=0)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(va.tolist()) and set(tr.tolist()) | set(va.tolist()) == set(range(1000))
    assert torch.equal(va, split_train_val(1000, 0.1, seed=0)[1])
    assert not torch.equal(va, split_train_val(1000, 0.1, seed=1)[1])
    assert len(split_train_val(1000, 0.0, seed=0)[1]) == 0


def test_load_data_holds_out_val_from_train():
    # exact: uint8 images and integer labels selected by index, not computed
    full = load_data(DataConfig(**SMALL))
    b = load_data(DataConfig(val_fraction=0.2, split_seed=7, **SMALL))
    assert b.eval_split == "val" and len(b.train) == 800 and len(b.eval) == 200
    assert torch.equal(b.test.images, full.test.images)  # the official test split is untouched
    tr, va = split_train_val(1000, 0.2, seed=7)
    assert torch.equal(b.eval.images, full.train.images[va]) and torch.equal(b.train.labels, full.train.labels[tr])
    assert b.mean == full.mean  # normalisation does not depend on the split
    desc = b.describe()
    assert desc["eval_split"] == "val" and desc["val_fraction"] == 0.2 and desc["split_seed"] == 7
    other = load_data(DataConfig(val_fraction=0.2, split_seed=8, **SMALL))
    assert not torch.equal(other.eval.images, b.eval.images)


def test_subsets_are_stratified_seeded_and_bounded():
    # exact: integer index tensors
    b = load_data(DataConfig(train_subset=100, eval_subset=50, split_seed=3, **SMALL))
    assert torch.bincount(b.train.labels).tolist() == [10] * 10
    assert torch.bincount(b.eval.labels).tolist() == [5] * 10
    assert len(b.test) == 500 and b.describe()["train_subset"] == 100
    again = load_data(DataConfig(train_subset=100, eval_subset=50, split_seed=3, **SMALL))
    assert torch.equal(b.train.images, again.train.images) and torch.equal(b.eval.images, again.eval.images)
    with pytest.raises(ConfigError, match="data.train_subset"):
        load_data(DataConfig(train_subset=1001, **SMALL))
    with pytest.raises(ConfigError, match="data.eval_subset"):
        load_data(DataConfig(eval_subset=501, **SMALL))


def test_stratified_subset_fills_from_other_classes_when_one_runs_out():
    # exact: integer index tensors
    labels = torch.tensor([0] * 2 + [1] * 100 + [2] * 50)
    idx = stratified_subset(labels, 20, seed=0)
    assert len(set(idx.tolist())) == 20
    assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 9, 9]
    assert torch.equal(idx, stratified_subset(labels, 20, seed=0))


# ----------------------------------------------------------------------------- bad inputs
def test_unknown_name_lists_known_data_sets():
    with pytest.raises(RegistryError) as err:
        load_data(DataConfig(name="imagenet"))
    assert all(name in str(err.value) for name in ("cifar10", "cifar100", "synthetic"))


@pytest.mark.parametrize(
    "field, value",
    [("val_fraction", 1.0), ("val_fraction", -0.1), ("val_fraction", "0.1"), ("train_subset", -1),
     ("eval_subset", 2.5), ("cutout", -4), ("synthetic_classes", 1), ("augment", "yes"), ("split_seed", True)],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"data.{field}"):
        DataConfig(**{field: value})


def test_tiny_val_fraction_that_holds_out_nothing_is_rejected():
    with pytest.raises(ConfigError, match="data.val_fraction"):
        load_data(DataConfig(val_fraction=0.0001, synthetic_train=100, synthetic_test=10))


@pytest.mark.parametrize("root", [None, "missing"])
def test_missing_cifar_root_names_the_field_and_the_fix(tmp_path, root):
    root = None if root is None else str(tmp_path / root)
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="cifar100", root=root))
    msg = str(err.value)
    assert "data.root" in msg and "cifar-100-python" in msg and "download" in msg
    if root is not None:
        assert "train" in msg and "test" in msg


def _write_cifar10(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = 10 + b  # R plane
        data[:, 1024:2048] = 100  # G plane
        data[:, 2048:] = np.arange(1024) % 32  # B plane: column index (row-major)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": [(b + k) % 10 for k in range(per_batch)]}, fh, protocol=2)


def test_reads_cifar10_layout_from_parent_or_folder(tmp_path):
    # exact: uint8 pixels read from the pickles
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    assert find_cifar_root("cifar10", str(tmp_path)) == folder.resolve()
    assert find_cifar_root("cifar10", str(folder)) == folder.resolve()
    b = load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert (len(b.train), len(b.test), b.num_classes, b.input_shape) == (20, 4, 10, (3, 32, 32))
    assert b.train.images[:, 0, 0, 0].tolist() == [10 + i // 4 for i in range(20)]  # batch order kept
    assert (b.train.images[:, 1] == 100).all() and (b.test.images[:, 0] == 15).all()
    assert torch.equal(b.train.images[0, 2, 5], torch.arange(32, dtype=torch.uint8))  # row-major planes
    assert b.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert not b.synthetic and b.source == str(folder.resolve())


def test_corrupt_or_wrong_pickles_raise_data_error(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"\x80\x02this is not a pickle")
    (folder / "test").write_bytes(b"")
    with pytest.raises(DataError, match="data.root") as err:
        load_data(DataConfig(name="cifar100", root=str(tmp_path)))
    assert "train" in str(err.value)
    with open(folder / "train", "wb") as fh:
        pickle.dump({"labels": [1, 2]}, fh, protocol=2)
    with pytest.raises(DataError, match="fine_labels"):
        load_data(DataConfig(name="cifar100", root=str(folder)))
    with open(folder / "train", "wb") as fh:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [1, 2]}, fh, protocol=2)
    with pytest.raises(DataError, match="3072"):
        load_data(DataConfig(name="cifar100", root=str(folder)))


def test_registered_data_set_is_loaded_and_duplicates_are_refused():
    @register_dataset("tiny-test-set")
    def _tiny(cfg):
        split = index_split(12)
        return SourceData(split, index_split(5), 7, MEAN, STD, True, "tiny")

    try:
        b = load_data(DataConfig(name="tiny-test-set", val_fraction=0.25))
        assert (len(b.train), len(b.eval), len(b.test), b.source) == (9, 3, 5, "tiny")
        with pytest.raises(RegistryError):
            register_dataset("tiny-test-set")(lambda cfg: None)
        loader = make_loader(b, "train", 4, DataConfig(augment=False, cutout=0), seed=0)
        assert sorted(rank_indices(loader)) == sorted(decode_indices(normalise(b.train.images)))
    finally:
        DATASETS.remove("tiny-test-set")


# ----------------------------------------------------------------------------- real CIFAR-100
def _cifar100_root() -> Path | None:
    env = os.environ.get("NPAS_CIFAR100_ROOT")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    try:
        return find_cifar_root("cifar100", str(root))
    except DataError:
        return None


@pytest.fixture(scope="module")
def cifar100():
    folder = _cifar100_root()
    if folder is None:
        pytest.skip("CIFAR-100 pickles not found: set NPAS_CIFAR100_ROOT or put them in <repo>/../shared/data")
    return load_data(DataConfig(name="cifar100", root=str(folder)))


def test_real_cifar100_sizes_classes_and_pixel_statistics(cifar100):
    b = cifar100
    assert (len(b.train), len(b.test), b.num_classes, b.input_shape) == (50000, 10000, 100, (3, 32, 32))
    assert torch.bincount(b.train.labels, minlength=100).tolist() == [500] * 100
    assert torch.bincount(b.test.labels, minlength=100).tolist() == [100] * 100
    mean, std = channel_stats(b.train.images)
    assert mean == pytest.approx((0.5071, 0.4865, 0.4409), abs=2e-4)
    assert std == pytest.approx((0.2673, 0.2564, 0.2762), abs=2e-4)
    assert b.mean == pytest.approx((129.3 / 255, 124.1 / 255, 112.4 / 255))  # official SSN constants
    assert not b.synthetic and b.source.endswith("cifar-100-python")
    x, y = next(BatchLoader(b.train, 2048, train=True, mean=b.mean, std=b.std, augment=False).epoch(0))
    assert x.shape == (2048, 3, 32, 32) and y.dtype == torch.int64
    assert x.mean((0, 2, 3)).abs().max() < 0.05 and ((x.std((0, 2, 3)) - 1).abs() < 0.05).all()
