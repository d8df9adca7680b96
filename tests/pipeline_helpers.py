"""Helpers shared by test_pipelines.py and test_ffcv.py (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("n01440764", "n01443537", "n01484850")  # three ImageNet-style class folder names


def make_image_tree(root: Path, train_per_class: int = 8, val_per_class: int = 2, size=(400, 300), seed: int = 0) -> Path:
    """``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``: small ImageNet-resolution JPEGs.

    Class c is dominated by colour channel c (so labels are learnable and pixel statistics differ by
    class); image sizes vary a little around ``size`` (W x H), one image per class is portrait.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, k in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                w, h = size[0] + int(rng.integers(-40, 41)), size[1] + int(rng.integers(-30, 31))
                if i == 0:
                    w, h = h, w
                img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
                img[..., c] += 150
                # a smooth gradient so resizing/cropping changes statistics a little, as with photos
                img[..., (c + 1) % 3] = np.linspace(0, 120, w, dtype=np.uint8)[None, :]
                Image.fromarray(img).save(folder / f"{name}_{i:04d}.JPEG", quality=90)
    return root


def ffcv_ddp_rank(rank: int, world_size: int, store: str, beton_dir: str, out: str) -> None:
    """One rank of test_ffcv's 2-process sharding test (a spawn target: must be importable)."""
    import json

    import torch.distributed as dist
    from ffcv.pipeline.compiler import Compiler

    from npasbench.data import DataConfig, load_data, make_loader

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        Compiler.set_enabled(False)
        cfg = DataConfig(name="cifar100", beton_dir=beton_dir, pipeline="ffcv", num_workers=1)
        bundle = load_data(cfg)
        loader = make_loader(bundle, "train", 64, cfg, seed=3, rank=rank, world_size=world_size, drop_last=True)
        report = {"order": loader.order_name, "len": len(loader), "num_examples": loader.num_examples,
                  "positions": [int(p) for p in loader.order(1)],
                  "labels": [int(y) for _, (_, ys) in zip(range(3), loader.epoch(1)) for y in ys]}
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(report, fh)
    finally:
        dist.destroy_process_group()
