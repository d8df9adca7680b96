"""FFCV pipelines: writing betons (CIFAR-100 from the real pickles, ImageNet from a generated ImageFolder),
reading them back, parity with the torchvision and memory pipelines, resume semantics, the trainer on
data.pipeline=ffcv, clear errors, and atomic writes that leave nothing behind on failure.

ffcv's numba JIT is switched off for this module (``Compiler.set_enabled(False)``: identical results,
~0.3 s per Loader instead of 1-20 s); the benchmark (npasbench.perf.loader_speed) runs with it on.
The GPU branch (``ToDevice``) cannot run here: its op list is checked, not executed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cifar100_root
from npasbench.cli import main
from npasbench.config import build_config
from npasbench.data import DataConfig, load_data, make_loader
from npasbench.data import beton_writer, betons
from npasbench.data.pipeline_base import FileSplit
from npasbench.errors import ConfigError, DataError
from npasbench.trainer import train
from pipeline_helpers import CLASSES, make_image_tree

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ffcv") is None,
    reason="ffcv is not installed (optional extra: apt-get install -y libopencv-dev libturbojpeg0-dev "
           "pkg-config; pip install -e '.[ffcv]')",
)

SLICE_TRAIN, SLICE_TEST = 2000, 500


@pytest.fixture(scope="module", autouse=True)
def ffcv_no_jit():
    ok, why = betons.ffcv_available()
    if not ok:
        pytest.skip(f"ffcv is installed but not importable ({why})")
    from ffcv.pipeline.compiler import Compiler

    Compiler.set_enabled(False)
    yield
    Compiler.set_enabled(True)


@pytest.fixture(scope="module")
def c100() -> Path:
    root = cifar100_root()
    if root is None:
        pytest.skip("real CIFAR-100 not found (set NPAS_CIFAR100_ROOT or place it in ../shared/data)")
    return root


@pytest.fixture(scope="module")
def cifar_betons(c100, tmp_path_factory) -> Path:
    """Betons of the first 2,000 train / 500 test images of the real CIFAR-100."""
    from npasbench.data.prepare import prepare_cifar

    out = tmp_path_factory.mktemp("betons")
    prepare_cifar("cifar100", str(c100), str(out), splits=("train",), limit=SLICE_TRAIN, progress=False)
    prepare_cifar("cifar100", str(c100), str(out), splits=("test",), limit=SLICE_TEST, progress=False)
    return out


@pytest.fixture(scope="module")
def memory_slice(c100):
    """The in-memory CIFAR-100 restricted to the betons' slice (same images, same order)."""
    bundle = load_data(DataConfig(name="cifar100", root=str(c100)))
    bundle.train = bundle.train.subset(torch.arange(SLICE_TRAIN))
    bundle.test = bundle.eval = bundle.test.subset(torch.arange(SLICE_TEST))
    return bundle


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("imagefolder") / "imagenet")


@pytest.fixture(scope="module")
def inet_betons(tree, tmp_path_factory) -> Path:
    from npasbench.data.prepare import prepare_imagenet

    out = tmp_path_factory.mktemp("inet_betons")
    prepare_imagenet(str(tree), str(out), max_res=256, jpeg_quality=90, write_mode="proportion",
                     compress_probability=0.5, progress=False)
    return out


def labels_of(loader, epoch=0, start_batch=0) -> list[int]:
    return torch.cat([y for _, y in loader.epoch(epoch, start_batch)]).tolist()


# ----------------------------------------------------------------------------- writing / reading
def test_cifar_betons_hold_the_pickles_in_order(cifar_betons, memory_slice):
    # exact: integer labels
    assert sorted(p.name for p in cifar_betons.iterdir()) == [
        "cifar100_test.beton", "cifar100_test.beton.json", "cifar100_train.beton", "cifar100_train.beton.json"]
    for split, n, ref in (("train", SLICE_TRAIN, memory_slice.train), ("test", SLICE_TEST, memory_slice.test)):
        info, labels = betons.read_beton(betons.beton_path(cifar_betons, "cifar100", split), "cifar100", split)
        assert info.num_samples == n and info.fixed_size and (info.max_height, info.max_width) == (32, 32)
        assert np.array_equal(labels, ref.labels.numpy())
        meta = json.loads(betons.sidecar_path(Path(info.path)).read_text())
        assert (meta["name"], meta["split"], meta["num_samples"], meta["limit"]) == ("cifar100", split, n, n)


def test_ffcv_eval_is_bit_identical_to_memory_and_torchvision(cifar_betons, memory_slice, c100):
    # exact: raw betons store the uint8 pixels losslessly and all three pipelines normalise with the same Normalizer
    # on the same batch shapes (elementwise, correctly rounded ops)
    ff = load_data(DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv", num_workers=2))
    assert ff.pipeline == "ffcv" and isinstance(ff.test, FileSplit) and ff.describe()["pipeline"] == "ffcv"
    assert (len(ff.train), len(ff.test), ff.num_classes, ff.input_shape) == (SLICE_TRAIN, SLICE_TEST, 100, (3, 32, 32))
    assert (ff.mean, ff.std) == (memory_slice.mean, memory_slice.std)
    tv = load_data(DataConfig(name="cifar100", root=str(c100), pipeline="torchvision"))
    tv.test = tv.test.subset(torch.arange(SLICE_TEST))
    loaders = [make_loader(b, "test", 128) for b in (ff, memory_slice, tv)]
    assert [ld.pipeline for ld in loaders] == ["ffcv", "memory", "torchvision"]
    from npasbench.data import Loader

    assert all(isinstance(ld, Loader) for ld in loaders)  # every pipeline offers the declared interface
    for (xf, yf), (xm, ym), (xt, yt) in zip(*(ld.epoch(0) for ld in loaders)):
        assert xf.device.type == "cpu" and xf.dtype == torch.float32 and xf.shape[1:] == (3, 32, 32)
        assert torch.equal(yf, ym) and torch.equal(yt, ym)  # the same label order in sequential mode
        assert torch.equal(xf, xm) and torch.equal(xt, xm)  # raw betons: lossless; one normaliser


def test_ffcv_and_torchvision_training_batches_agree_in_distribution(cifar_betons, c100, memory_slice):
    cfg = DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv", cutout=16, num_workers=2)
    ff = make_loader(load_data(cfg), "train", 100, cfg, seed=0)
    tcfg = cfg.replace(pipeline="torchvision", root=str(c100), beton_dir=None)
    tvb = load_data(tcfg)
    tvb.train = tvb.train.subset(torch.arange(SLICE_TRAIN))
    tv = make_loader(tvb, "train", 100, tcfg, seed=0)
    mem = make_loader(memory_slice, "train", 100, cfg.replace(pipeline="memory", beton_dir=None), seed=0)
    stats = {}
    for name, loader in (("ffcv", ff), ("torchvision", tv), ("memory", mem)):
        xs, ys = zip(*[(x, y) for x, y in loader.epoch(0)])
        x, y = torch.cat(xs), torch.cat(ys)
        assert x.shape == (SLICE_TRAIN, 3, 32, 32) and sorted(y.tolist()) == sorted(memory_slice.train.labels.tolist())
        zero = (x == 0).all(dim=1).float().mean().item()  # cutout 16 (clipped at borders): ~19% of pixels
        stats[name] = (x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)), zero)
    for name in ("ffcv", "torchvision"):
        mean, std, zero = stats[name]
        assert torch.allclose(mean, stats["memory"][0], atol=0.03), (name, mean, stats["memory"][0])
        assert torch.allclose(std, stats["memory"][1], atol=0.03), (name, std, stats["memory"][1])
        assert abs(zero - stats["memory"][2]) < 0.03 and 0.12 < zero < 0.26


def test_ffcv_order_is_seeded_and_resume_replays_it(cifar_betons):
    # exact: integer sample orders and the same decoded uint8 pixels
    cfg = DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv", num_workers=2)
    bundle = load_data(cfg)
    a = make_loader(bundle, "train", 128, cfg, seed=7, drop_last=True)
    b = make_loader(bundle, "train", 128, cfg, seed=7, drop_last=True)
    assert a.order_name == "quasi_random" and len(a) == SLICE_TRAIN // 128 and a.num_examples == len(a) * 128
    full = labels_of(a, epoch=1)
    assert len(full) == len(a) * 128 and labels_of(b, epoch=1) == full
    assert labels_of(b, epoch=1, start_batch=5) == full[5 * 128:]  # the resumed epoch visits the same images
    assert labels_of(a, epoch=2) != full
    fresh = make_loader(bundle, "train", 128, cfg, seed=7, drop_last=True)  # as in a resumed process
    assert np.array_equal(fresh.order(1), a.order(1)) and labels_of(fresh, epoch=1, start_batch=14) == full[14 * 128:]
    assert sorted(a.order(3).tolist()) == list(range(SLICE_TRAIN))
    # cutout draws are seeded per (seed, epoch, batch, rank), as in the memory pipeline
    cut = cfg.replace(cutout=16)
    xs = [torch.cat([(x == 0).all(dim=1) for x, _ in make_loader(bundle, "train", 500, cut, seed=7, augment=False)
                     .epoch(0)]) for _ in range(2)]
    assert torch.equal(xs[0], xs[1])


def test_ffcv_restores_torch_threads_and_validates_sharding(cifar_betons):
    cfg = DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv", num_workers=2)
    bundle = load_data(cfg)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        loader = make_loader(bundle, "train", 256, cfg, seed=0)
        next(iter(loader.epoch(0)))
        assert loader.num_workers == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    # eval shards without a process group: strided, unpadded, as BatchLoader
    shards = [labels_of(make_loader(bundle, "test", 64, cfg, rank=r, world_size=3)) for r in range(3)]
    ref = bundle.test.labels.tolist()
    assert [len(s) for s in shards] == [167, 167, 166] and all(s == ref[r::3] for r, s in enumerate(shards))
    # training shards through ffcv's distributed=True, which needs the process group
    with pytest.raises(ConfigError, match=r"world_size=2.*torch\.distributed.*no process group"):
        make_loader(bundle, "train", 64, cfg, rank=0, world_size=2)


def test_val_split_and_subsets_select_the_same_positions_as_memory(cifar_betons, memory_slice):
    # exact: integer labels and positions
    cfg = DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv", val_fraction=0.1,
                     train_subset=900, eval_subset=100)
    ff = load_data(cfg)
    assert (ff.eval_split, len(ff.train), len(ff.eval), len(ff.test)) == ("val", 900, 100, SLICE_TEST)
    from npasbench.data.partition import split_train_val

    tr, va = split_train_val(SLICE_TRAIN, 0.1, 0)
    assert set(ff.train.positions.tolist()) <= set(tr.tolist()) and set(ff.eval.positions.tolist()) <= set(va.tolist())
    assert torch.equal(ff.train.labels, memory_slice.train.labels[ff.train.positions])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ffcv_ddp_shards_training_through_the_process_group(cifar_betons, tmp_path):
    """2 processes over gloo: RANDOM order (ffcv's distributed=True), disjoint shards of equal length."""
    import torch.multiprocessing as mp

    from pipeline_helpers import ffcv_ddp_rank

    mp.spawn(ffcv_ddp_rank, args=(2, str(tmp_path / "store"), str(cifar_betons), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["order"] for r in ranks] == ["random", "random"]
    assert ranks[0]["len"] == ranks[1]["len"] == SLICE_TRAIN // 2 // 64
    a, b = (set(r["positions"]) for r in ranks)
    assert len(a) == len(b) == SLICE_TRAIN // 2 and not a & b and a | b == set(range(SLICE_TRAIN))
    info, labels = betons.read_beton(betons.beton_path(cifar_betons, "cifar100", "train"), "cifar100", "train")
    for r in ranks:  # the batches a rank trains on are the positions its order lists
        assert r["labels"] == labels[r["positions"][: len(r["labels"])]].tolist()


def test_gpu_branch_is_the_ffcv_imagenet_recipe(cifar_betons):
    """No GPU here: check the op list of the device branch without building or running it."""
    from ffcv.transforms import ToDevice, ToTorchImage

    from npasbench.data.ffcv_loader import FFCVLoader

    bundle = load_data(DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv"))
    loader = FFCVLoader(bundle.train, 128, train=True, mean=bundle.mean, std=bundle.std, device="cuda:0",
                        channels_last=True)
    image, label = loader.pipeline_ops()
    dev = [op for op in image if isinstance(op, ToDevice)]
    assert len(dev) == 1 and dev[0].non_blocking and dev[0].device == torch.device("cuda:0")
    assert isinstance(image[-1], ToTorchImage) and image[-1].channels_last
    assert any(isinstance(op, ToDevice) for op in label)
    cpu_image, _ = make_loader(bundle, "train", 128).pipeline_ops()
    assert not any(isinstance(op, ToDevice) for op in cpu_image)


# ----------------------------------------------------------------------------- ImageNet-style
def test_imagenet_betons_from_an_imagefolder(inet_betons, tree):
    from torchvision.datasets import ImageFolder

    for split, folder, n in (("train", "train", 24), ("test", "val", 6)):
        info, labels = betons.read_beton(betons.beton_path(inet_betons, "imagenet", split), "imagenet", split)
        ref = ImageFolder(str(tree / folder))
        assert info.num_samples == n and labels.tolist() == ref.targets
        assert max(info.max_height, info.max_width) == 256 and not info.fixed_size  # resized to --max-res
        meta = json.loads(betons.sidecar_path(Path(info.path)).read_text())
        assert meta["classes"] == list(CLASSES) and meta["write_mode"] == "proportion" and meta["max_res"] == 256


def test_imagenet_ffcv_vs_torchvision(inet_betons, tree):
    base = DataConfig(name="imagenet", root=str(tree), beton_dir=str(inet_betons), train_res=64, val_res=64,
                      num_workers=2)
    ff, tv = load_data(base.replace(pipeline="ffcv")), load_data(base.replace(pipeline="torchvision"))
    assert ff.num_classes == tv.num_classes == 1000 and ff.input_shape == tv.input_shape == (3, 64, 64)
    ev = [make_loader(b, "test", 4, base) for b in (ff, tv)]
    (xf, yf), (xt, yt) = [tuple(torch.cat(t) for t in zip(*ld.epoch(0))) for ld in ev]
    assert yf.tolist() == yt.tolist() == [0, 0, 1, 1, 2, 2]
    assert xf.shape == xt.shape == (6, 3, 64, 64)
    # centre crop 0.875 of the shorter side -> 64 px: per-channel means agree closely (JPEG + resize differ)
    assert torch.allclose(xf.mean(dim=(0, 2, 3)), xt.mean(dim=(0, 2, 3)), atol=0.08)
    assert torch.allclose(xf.std(dim=(0, 2, 3)), xt.std(dim=(0, 2, 3)), atol=0.08)
    tr = [make_loader(b, "train", 8, base, seed=0) for b in (ff, tv)]
    for ld in tr:
        xs, ys = zip(*ld.epoch(0))
        assert all(x.shape == (8, 3, 64, 64) for x in xs) and sorted(torch.cat(ys).tolist()) == sorted(yt.tolist() * 4)
    # progressive resolution (ffcv-imagenet): the decoder's output size follows the epoch
    prog = base.replace(pipeline="ffcv", train_res=0, min_res=32, max_res=96, start_ramp=0, end_ramp=2)
    loader = make_loader(load_data(prog), "train", 8, prog, seed=0)
    assert [next(iter(loader.epoch(e)))[0].shape[-1] for e in range(3)] == [32, 64, 96]


# ----------------------------------------------------------------------------- the trainer
def _train(tmp_path: Path, **data) -> dict:
    cfg = build_config({}, {
        "model.arch": "wrn-10-1", "train.epochs": 2, "train.batch_size": 64, "train.eval_batch_size": 250,
        "train.max_steps_per_epoch": 3, "optim.milestones_unit": "fraction", "optim.milestones": [0.5],
        "optim.gammas": [0.2], "run.out": str(tmp_path / "run"), "run.progress": False, "data.num_workers": 2,
        **{f"data.{k}": v for k, v in data.items()}})
    result = train(cfg)
    assert result.status == "completed", result.record
    return result.record


def test_trainer_end_to_end_on_ffcv(cifar_betons, tmp_path):
    rec = _train(tmp_path, name="cifar100", pipeline="ffcv", beton_dir=str(cifar_betons), cutout=16,
                 train_subset=512)
    assert rec["pipeline"] == "ffcv" and rec["dataset"]["pipeline"] == "ffcv"
    assert rec["dataset"]["num_train"] == 512 and rec["metrics"]["examples"] == SLICE_TEST
    assert rec["steps"] == 6 and rec["timing"]["train_images_per_s"] > 0


def test_trainer_auto_picks_ffcv_when_betons_exist(cifar_betons, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="npasbench.data")
    rec = _train(tmp_path, name="cifar100", pipeline="auto", beton_dir=str(cifar_betons), train_subset=256)
    assert rec["pipeline"] == "ffcv" and rec["config"]["data"]["pipeline"] == "auto"
    assert any("using FFCV betons" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_trainer_imagenet_resnet50_on_ffcv(inet_betons, tmp_path):
    cfg = build_config({}, {
        "model.arch": "resnet50", "train.epochs": 1, "train.batch_size": 8, "train.eval_batch_size": 6,
        "train.max_steps_per_epoch": 2, "optim.milestones_unit": "fraction", "optim.milestones": [0.5],
        "optim.gammas": [0.2], "run.out": str(tmp_path / "run"), "run.progress": False,
        "data.name": "imagenet", "data.pipeline": "ffcv", "data.beton_dir": str(inet_betons),
        "data.train_res": 64, "data.val_res": 64, "data.num_workers": 2})
    result = train(cfg)
    assert result.status == "completed" and result.record["pipeline"] == "ffcv"
    assert result.record["dataset"]["num_classes"] == 1000 and result.record["metrics"]["examples"] == 6


# ----------------------------------------------------------------------------- errors
def test_missing_or_wrong_betons_give_clear_errors(cifar_betons, inet_betons, tmp_path):
    with pytest.raises(DataError, match=r"data\.beton_dir is not set.*npas data prepare cifar100"):
        load_data(DataConfig(name="cifar100", pipeline="ffcv"))
    with pytest.raises(DataError, match=r"data\.beton_dir: .*cifar100_train\.beton does not exist.*npas data prepare"):
        load_data(DataConfig(name="cifar100", pipeline="ffcv", beton_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"no betons for data\.name='synthetic'"):
        load_data(DataConfig(name="synthetic", pipeline="ffcv", beton_dir=str(tmp_path)))
    # imagenet betons renamed as cifar100 ones: the sidecar says what they are
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for split in ("train", "test"):
        src = betons.beton_path(inet_betons, "imagenet", split)
        (wrong / f"cifar100_{split}.beton").write_bytes(src.read_bytes())
        (wrong / f"cifar100_{split}.beton.json").write_text(betons.sidecar_path(src).read_text())
    with pytest.raises(DataError, match=r"written for imagenet/train.*not cifar100/train"):
        load_data(DataConfig(name="cifar100", pipeline="ffcv", beton_dir=str(wrong)))
    for split in ("train", "test"):
        (wrong / f"cifar100_{split}.beton.json").unlink()
    with pytest.raises(DataError, match=r"does not hold 32x32 images, so it is not a cifar100 beton"):
        load_data(DataConfig(name="cifar100", pipeline="ffcv", beton_dir=str(wrong)))
    (wrong / "cifar100_train.beton").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match=r"not a readable \.beton file"):
        load_data(DataConfig(name="cifar100", pipeline="ffcv", beton_dir=str(wrong)))


def test_prepare_errors_name_the_flag(tmp_path, tree, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "cifar100", "--root", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "--root=" in capsys.readouterr().err
    assert main(["data", "prepare", "imagenet", "--root", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--root=" in err and "has no train/ folder" in err
    assert main(["data", "prepare", "imagenet", "--root", str(tree), "--out", str(out), "--jpeg-quality", "0"]) == 2
    assert "--jpeg-quality" in capsys.readouterr().err
    assert main(["data", "prepare", "cifar100", "--root", str(tmp_path), "--out", str(out), "--max-res", "64"]) == 2
    assert "--max-res: only for imagenet" in capsys.readouterr().err
    assert main(["data", "prepare", "mnist", "--root", str(tmp_path), "--out", str(out)]) == 2
    assert not out.exists()


def test_prepare_cli_writes_and_says_how_to_use(c100, tmp_path, capsys):
    assert main(["data", "prepare", "cifar100", "--root", str(c100), "--out", str(tmp_path), "--limit", "300",
                 "--splits", "test", "--no-progress", "--workers", "64"]) == 0
    out = capsys.readouterr().out
    assert "cifar100_test.beton" in out and f"data.beton_dir={tmp_path}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar100_test.beton", "cifar100_test.beton.json"]


# ----------------------------------------------------------------------------- atomic writes
def _zeros(i: int) -> tuple:
    return np.zeros((32, 32, 3), np.uint8), 1


@pytest.mark.timeout(120)
def test_failed_write_leaves_nothing_behind(tmp_path):
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    fields = beton_writer.fields_for("cifar100")

    def failing(i: int) -> tuple:
        if i == 137:
            raise ValueError("injected failure")
        return _zeros(i)

    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"x_train\.beton failed: sample 137 \(item 137\): ValueError: injected failure"):
        beton_writer.write_beton(tmp_path / "x_train.beton", fields, failing, 400, labels=[1] * 400, meta={}, workers=2,
                           progress=False, describe=lambda i: f"item {i}")
    assert time.perf_counter() - t0 < 60  # reported, not hung (ffcv's own writer waits forever)
    assert list(tmp_path.iterdir()) == []
    if shm:
        assert set(os.listdir("/dev/shm")) <= shm  # the writer's shared memory is freed

    # the target is untouched when a rewrite fails
    beton_writer.write_beton(tmp_path / "x_train.beton", fields, _zeros, 50, labels=[1] * 50, meta={}, progress=False)
    before = (tmp_path / "x_train.beton").read_bytes()
    with pytest.raises(DataError):
        beton_writer.write_beton(tmp_path / "x_train.beton", fields, failing, 400, labels=[1] * 400, meta={}, progress=False)
    assert (tmp_path / "x_train.beton").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_train.beton", "x_train.beton.json"]


@pytest.mark.timeout(120)
def test_ctrl_c_during_a_write_leaves_nothing_behind(tmp_path):
    parent = os.getpid()
    fields = beton_writer.fields_for("cifar100")

    def interrupting(i: int) -> tuple:
        if i == 200:
            # let the parent finish starting its workers first: a signal that lands while the parent runs
            # its at-fork hooks (logging's _releaseLock) is swallowed as "unraisable" (seen in full suites,
            # where the test process is large and forks slowly)
            time.sleep(1.0)
            os.kill(parent, signal.SIGINT)  # what Ctrl-C does to the main process
            time.sleep(1.0)
        return _zeros(i)

    with pytest.raises(KeyboardInterrupt):
        beton_writer.write_beton(tmp_path / "x_train.beton", fields, interrupting, 400, labels=[1] * 400, meta={},
                           workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_corrupt_jpeg_is_caught_before_or_during_the_write(tmp_path):
    from npasbench.data.prepare import prepare_imagenet

    tree = make_image_tree(tmp_path / "tree", train_per_class=3, val_per_class=1)
    bad = tree / "train" / CLASSES[2] / "zz_truncated.JPEG"
    good = next((tree / "train" / CLASSES[2]).iterdir()).read_bytes()
    bad.write_bytes(good[: len(good) // 3])  # a valid header, truncated data: passes the header check
    (tree / "val" / CLASSES[0] / "broken.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"--root: unreadable image file.*broken\.JPEG"):
        prepare_imagenet(str(tree), str(out), progress=False)  # validated first: nothing written
    assert not out.exists() or list(out.iterdir()) == []
    (tree / "val" / CLASSES[0] / "broken.JPEG").unlink()
    with pytest.raises(DataError, match=r"imagenet_train\.beton failed: sample 9 \(.*zz_truncated\.JPEG\)"):
        prepare_imagenet(str(tree), str(out), progress=False, splits=("train",))
    assert list(out.iterdir()) == []


def test_ffcv_policy_and_mixing_are_seeded_and_train_only(cifar_betons):
    # exact: the same decoded uint8 pixels through the same seeded policy and mixing draws
    cfg = DataConfig(name="cifar100", beton_dir=str(cifar_betons), pipeline="ffcv", num_workers=2,
                     auto_augment="randaugment", mixup_alpha=0.8, cutmix_alpha=1.0)
    bundle = load_data(cfg)
    runs = [[(x.clone(), y.clone()) for x, y in make_loader(bundle, "train", 250, cfg, seed=7, augment=False).epoch(1)]
            for _ in range(2)]
    plain = [x for x, _ in make_loader(bundle, "train", 250, cfg.replace(auto_augment="none", mixup_alpha=0.0,
                                                                         cutmix_alpha=0.0), seed=7, augment=False).epoch(1)]
    for (x, y), (x2, y2), p in zip(*runs, plain):
        assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, p)
        assert y.shape == (250, 100) and torch.allclose(y.sum(1), torch.ones(250))  # approx: float sums
    _, y = next(iter(make_loader(bundle, "test", 250, cfg)))
    assert y.dtype == torch.int64 and y.dim() == 1  # evaluation: neither policy nor mixing
