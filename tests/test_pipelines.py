"""data.pipeline without FFCV: config validation, the auto fallback, the torchvision pipeline
(BatchLoader's order, sharding and sizes; exact resume; ImageFolder / ImageNet), the trainer on it.

FFCV itself is tested in test_ffcv.py; nothing here needs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from conftest import cifar100_root
from npasbench.config import build_config
from npasbench.data import BatchLoader, DataConfig, load_data, make_loader
from npasbench.data import pipelines
from npasbench.data.imagefolder import scan_tree, verify_images
from npasbench.data.pipeline_base import FileSplit, progressive_res
from npasbench.data.loader import Loader
from npasbench.data.torchvision_loader import TorchvisionLoader
from npasbench.errors import ConfigError, DataError, RegistryError
from npasbench.trainer import train
from pipeline_helpers import CLASSES, make_image_tree

SYN = dict(name="synthetic", synthetic_train=300, synthetic_test=70)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs,field", [
    (dict(pipeline="fast"), "data.pipeline"),
    (dict(num_workers=-2), "data.num_workers"),
    (dict(num_workers="2"), "data.num_workers"),
    (dict(os_cache="yes"), "data.os_cache"),
    (dict(beton_dir=""), "data.beton_dir"),
    (dict(crop_ratio=0.0), "data.crop_ratio"),
    (dict(crop_ratio=1.5), "data.crop_ratio"),
    (dict(name="imagenet", train_res=8), "data.train_res"),
    (dict(name="imagenet", min_res=192, max_res=160), "data.min_res"),
    (dict(name="imagenet", min_res=160), "data.min_res and data.max_res"),
    (dict(name="imagenet", min_res=160, max_res=192, start_ramp=10, end_ramp=5), "data.end_ramp"),
    (dict(name="imagenet", min_res=160, max_res=192, train_res=224), "data.train_res"),
    (dict(name="cifar100", val_res=64), "data.val_res"),
])
def test_bad_pipeline_fields_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        DataConfig(**kwargs)


def test_pipeline_fields_from_overrides():
    cfg = build_config({}, {"data.pipeline": "torchvision", "data.num_workers": "0", "data.os_cache": "false",
                            "data.name": "imagenet", "data.crop_ratio": "0.875", "data.min_res": "160",
                            "data.max_res": "192", "data.end_ramp": "13", "data.start_ramp": "11"})
    d = cfg.data
    assert (d.pipeline, d.num_workers, d.os_cache, d.min_res, d.max_res) == ("torchvision", 0, False, 160, 192)
    with pytest.raises(ConfigError, match=r"data\.pipeline"):
        build_config({}, {"data.pipeline": "ffvc"})


def test_progressive_schedule_matches_ffcv_imagenet():
    # ffcv-imagenet rn50 configs: min_res 160, max_res 192, start_ramp 65 (or 11), end_ramp 76 (or 13)
    got = [progressive_res(e, 160, 192, 65, 76) for e in (0, 65, 66, 70, 71, 72, 75, 76, 87)]
    assert got == [160, 160, 160, 160, 192, 192, 192, 192, 192]
    ramp = [progressive_res(e, 128, 256, 0, 8) for e in range(10)]
    assert ramp == [128, 128, 160, 192, 192, 192, 224, 256, 256, 256]  # np.round: halves go to even
    assert all(r % 32 == 0 for r in ramp)


# ----------------------------------------------------------------------------- choosing the pipeline
def test_memory_is_default_and_imagenet_needs_a_pipeline():
    assert DataConfig().pipeline == "memory"
    assert load_data(DataConfig(**SYN)).pipeline == "memory"
    with pytest.raises(RegistryError, match=r"data\.pipeline=memory.*data\.pipeline=ffcv"):
        load_data(DataConfig(name="imagenet"))


def test_auto_falls_back_to_torchvision_with_one_log_line(caplog, tmp_path, monkeypatch):
    caplog.set_level(logging.INFO, logger="npasbench.data")
    assert pipelines.resolve_pipeline(DataConfig(name="cifar100", pipeline="auto")) == "torchvision"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "data.beton_dir is not set" in warnings[0].getMessage()
    assert "torchvision DataLoader" in warnings[0].getMessage()

    caplog.clear()
    assert pipelines.resolve_pipeline(DataConfig(name="cifar100", pipeline="auto", beton_dir=str(tmp_path))) == "torchvision"
    assert "cifar100_train.beton" in caplog.records[-1].getMessage()

    # betons present but ffcv not importable: torchvision, saying why
    for split in ("train", "test"):
        (tmp_path / f"cifar100_{split}.beton").write_bytes(b"")
    monkeypatch.setattr(pipelines, "ffcv_available", lambda: (False, "ModuleNotFoundError: No module named 'ffcv'"))
    caplog.clear()
    assert pipelines.resolve_pipeline(DataConfig(name="cifar100", pipeline="auto", beton_dir=str(tmp_path))) == "torchvision"
    (msg,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "FFCV is not importable" in msg and "No module named 'ffcv'" in msg
    with pytest.raises(ConfigError, match=r"data\.pipeline=ffcv: FFCV is not importable.*pip install -e '\.\[ffcv\]'"):
        pipelines.resolve_pipeline(DataConfig(name="cifar100", pipeline="ffcv"))

    caplog.clear()
    assert load_data(DataConfig(**SYN, pipeline="auto")).pipeline == "torchvision"
    assert "no FFCV betons for data.name='synthetic'" in caplog.records[-1].getMessage()


# ----------------------------------------------------------------------------- torchvision loader
@pytest.fixture(scope="module")
def syn():
    return load_data(DataConfig(**SYN)), load_data(DataConfig(**SYN, pipeline="torchvision"))


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_torchvision_order_sizes_and_sharding_match_batchloader(syn, world_size, drop_last):
    # exact: integer sample indices
    mem, tv = syn
    for which in ("train", "eval"):
        for rank in range(world_size):
            kw = dict(seed=5, rank=rank, world_size=world_size)
            if which == "train":
                kw["drop_last"] = drop_last
            a = make_loader(mem, which, 32, mem.config, **kw)
            b = make_loader(tv, which, 32, tv.config, **kw)
            assert isinstance(a, BatchLoader) and isinstance(b, TorchvisionLoader) and b.pipeline == "torchvision"
            assert isinstance(a, Loader) and isinstance(b, Loader)  # the declared interface the trainer uses
            assert (len(a), a.num_examples) == (len(b), b.num_examples)
            for epoch in (0, 3):
                assert torch.equal(a.indices(epoch), b.indices(epoch))


def test_torchvision_eval_batches_equal_memory_and_train_is_augmented(syn):
    # exact: the same uint8 pixels through the same Normalizer on the same batch shapes (elementwise ops); the
    # inequality asserts different augmentation draws
    mem, tv = syn
    for (xa, ya), (xb, yb) in zip(make_loader(mem, "test", 32).epoch(0), make_loader(tv, "test", 32).epoch(0)):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)  # same images, same normaliser
    cfg = tv.config.replace(cutout=8, num_workers=0)
    a = [b for b in make_loader(mem, "train", 50, mem.config.replace(cutout=8), seed=1).epoch(0)]
    b = [b for b in make_loader(tv, "train", 50, cfg, seed=1).epoch(0)]
    assert all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(a, b))  # same order as memory
    xa, xb = torch.cat([x for x, _ in a]), torch.cat([x for x, _ in b])
    assert not torch.equal(xa, xb)  # different (per-sample) augmentation draws ...
    assert abs(xa.mean() - xb.mean()) < 0.05 and abs(xa.std() - xb.std()) < 0.05  # ... same distribution
    zero = (xb == 0).all(dim=1).float().mean()  # cutout 8x8 (clipped at borders) zeroes ~5% of pixels
    assert 0.02 < zero < 0.08


def test_torchvision_resume_is_exact_and_independent_of_workers(syn):
    # exact: seeded per-sample draws and the same elementwise augment/normalise ops on the same uint8 pixels, in
    # whichever worker they run: no reduction whose order could depend on the CPU
    _, tv = syn
    rng = torch.get_rng_state()
    inproc = make_loader(tv, "train", 32, tv.config.replace(cutout=8, num_workers=0), seed=3)
    full = [(x.clone(), y.clone()) for x, y in inproc.epoch(2)]
    assert torch.equal(torch.get_rng_state(), rng)  # in-process loading leaves the caller's RNG alone
    tail = list(inproc.epoch(2, start_batch=4))
    assert len(tail) == len(full) - 4
    assert all(torch.equal(x, fx) and torch.equal(y, fy) for (x, y), (fx, fy) in zip(tail, full[4:]))
    workers = make_loader(tv, "train", 32, tv.config.replace(cutout=8, num_workers=2), seed=3)
    assert workers.num_workers == 2
    again = list(workers.epoch(2, start_batch=1))
    assert all(torch.equal(x, fx) for (x, _), (fx, _) in zip(again, full[1:]))
    other = [x for x, _ in inproc.epoch(3)]
    assert not torch.equal(other[0], full[0][0])
    assert list(inproc.epoch(2, start_batch=len(inproc))) == []


def test_worker_count_is_clamped_to_available_cores(syn):
    from npasbench.data.betons import available_cores

    _, tv = syn
    assert make_loader(tv, "train", 32, tv.config.replace(num_workers=512)).num_workers == available_cores()
    assert make_loader(tv, "train", 32, tv.config.replace(num_workers=-1)).num_workers == available_cores()


# ----------------------------------------------------------------------------- ImageFolder / ImageNet
@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("imagefolder") / "imagenet")


def test_imagefolder_scan_matches_torchvision_order(tree):
    from torchvision.datasets import ImageFolder

    trees = scan_tree(tree)
    for split, folder in (("train", "train"), ("test", "val")):
        ref = ImageFolder(str(tree / folder))
        assert list(trees[split].classes) == ref.classes == list(CLASSES)
        assert [(p, l) for p, l in trees[split].samples] == [(p, l) for p, l in ref.samples]


def test_imagenet_through_torchvision(tree):
    cfg = DataConfig(name="imagenet", root=str(tree), pipeline="torchvision", train_res=64, val_res=48, num_workers=0)
    bundle = load_data(cfg)
    assert bundle.pipeline == "torchvision" and bundle.num_classes == 1000 and bundle.input_shape == (3, 48, 48)
    assert isinstance(bundle.train, FileSplit) and (len(bundle.train), len(bundle.test)) == (24, 6)
    assert bundle.describe()["pipeline"] == "torchvision"
    x, y = next(make_loader(bundle, "train", 8, cfg, seed=0).epoch(0))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    ys = torch.cat([y for _, y in make_loader(bundle, "test", 4, cfg).epoch(0)])
    assert ys.tolist() == [0, 0, 1, 1, 2, 2]
    # progressive resolution: the epoch's side, as ffcv-imagenet
    prog = cfg.replace(train_res=0, min_res=32, max_res=64, start_ramp=0, end_ramp=1)
    loader = make_loader(load_data(prog), "train", 8, prog, seed=0)
    assert [next(loader.epoch(e))[0].shape[-1] for e in range(3)] == [32, 64, 64]


def test_imagefolder_errors_name_the_field(tmp_path, tree):
    with pytest.raises(DataError, match=r"data\.root.*does not exist"):
        load_data(DataConfig(name="imagenet", root=str(tmp_path / "nope"), pipeline="torchvision"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match=r"data\.root=.*has no train/ folder.*ImageFolder tree"):
        load_data(DataConfig(name="imagenet", root=str(tmp_path / "flat"), pipeline="torchvision"))
    bad = make_image_tree(tmp_path / "bad", train_per_class=1, val_per_class=1)
    (bad / "val" / "n99999999").mkdir()
    (bad / "val" / "n99999999" / "x.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"class folders that train/ lacks: n99999999"):
        load_data(DataConfig(name="imagenet", root=str(bad), pipeline="torchvision"))
    empty = make_image_tree(tmp_path / "empty", train_per_class=1, val_per_class=1)
    (empty / "train" / "n00000000").mkdir()
    with pytest.raises(DataError, match=r"without images.*n00000000"):
        scan_tree(empty)
    corrupt = make_image_tree(tmp_path / "corrupt", train_per_class=2, val_per_class=1)
    (corrupt / "train" / CLASSES[1] / "zz_broken.JPEG").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match=r"--root: unreadable image file.*zz_broken\.JPEG"):
        verify_images(scan_tree(corrupt, field="--root")["train"], field="--root")


# ----------------------------------------------------------------------------- the trainer
def _run(tmp_path: Path, pipeline: str, **data) -> dict:
    cfg = build_config({}, {
        "model.arch": "wrn-10-1", "train.epochs": 2, "train.batch_size": 32, "train.eval_batch_size": 128,
        "train.max_steps_per_epoch": 3, "optim.milestones_unit": "fraction", "optim.milestones": [0.5],
        "optim.gammas": [0.2], "run.out": str(tmp_path / f"run_{pipeline}"), "run.progress": False,
        "data.pipeline": pipeline, "data.cutout": 8, "data.num_workers": 2, **{f"data.{k}": v for k, v in data.items()}})
    result = train(cfg)
    assert result.status == "completed", result.record
    return result.record


def test_trainer_records_the_pipeline_synthetic(tmp_path):
    rec = _run(tmp_path, "torchvision", name="synthetic", synthetic_train=256, synthetic_test=128)
    assert rec["pipeline"] == "torchvision" and rec["dataset"]["pipeline"] == "torchvision"
    assert _run(tmp_path, "memory", name="synthetic", synthetic_train=256, synthetic_test=128)["pipeline"] == "memory"


def test_trainer_torchvision_on_a_cifar100_slice(tmp_path):
    root = cifar100_root()
    if root is None:
        pytest.skip("real CIFAR-100 not found (set NPAS_CIFAR100_ROOT or place it in ../shared/data)")
    rec = _run(tmp_path, "torchvision", name="cifar100", root=str(root), train_subset=512, val_fraction=0.02,
               eval_subset=200)
    assert rec["pipeline"] == "torchvision" and rec["dataset"]["num_train"] == 512
    assert rec["dataset"]["eval_split"] == "val" and rec["metrics"]["split"] == "test"


def test_torchvision_mixing_is_seeded_per_batch(syn):
    # exact: seeded per-batch draws on the same pixels
    _, tv = syn
    cfg = tv.config.replace(num_workers=0, auto_augment="trivial", mixup_alpha=0.8)
    a = [(x.clone(), y.clone()) for x, y in make_loader(tv, "train", 32, cfg, seed=3).epoch(1)]
    b = list(make_loader(tv, "train", 32, cfg, seed=3).epoch(1, start_batch=2))
    assert all(torch.equal(x, bx) and torch.equal(y, by) for (x, y), (bx, by) in zip(a[2:], b))
    assert a[0][1].shape == (32, tv.num_classes) and float(a[0][1].max(1).values.min()) < 1.0
