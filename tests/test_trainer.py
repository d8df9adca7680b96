"""The common trainer: schedules, selection by validation split, divergence, records, real data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import cifar100_root
from npasbench.config import build_config
from npasbench.trainer import EXIT_DIVERGED, train
from npasbench.trainer.schedule import LRSchedule
from npasbench.config import OptimConfig


def test_step_schedule_matches_papers():
    s = LRSchedule.from_config(OptimConfig(), epochs=200, steps_per_epoch=10)
    assert s.lr(0, 0) == pytest.approx(0.1)
    assert s.lr(59, 9) == pytest.approx(0.1)
    assert s.lr(60, 0) == pytest.approx(0.02)
    assert s.lr(120, 0) == pytest.approx(0.004)
    assert s.lr(199, 9) == pytest.approx(0.0008)


def test_cosine_and_warmup():
    s = LRSchedule.from_config(OptimConfig(schedule="cosine", warmup_epochs=2, warmup_start_factor=0.1), 10, 4)
    assert s.lr(0, 0) == pytest.approx(0.1 * 0.1)
    assert s.lr(1, 0) < s.lr(2, 0)
    assert s.lr(5, 0) == pytest.approx(0.05)
    fr = LRSchedule.from_config(OptimConfig(milestones=(0.5,), gammas=(0.1,), milestones_unit="fraction"), 10, 4)
    assert fr.lr(4, 3) == pytest.approx(0.1) and fr.lr(5, 0) == pytest.approx(0.01)


def test_record_contents(tiny):
    res = train(build_config({}, tiny))
    rec = res.record
    assert res.exit_code == 0 and rec["status"] == "completed"
    for key in ("schema_version", "method", "arch", "dataset", "budget", "params", "metrics", "seed", "config",
                "run_id", "git", "packages", "hardware", "timing", "peak_memory", "selection", "synthetic"):
        assert key in rec, key
    assert rec["synthetic"] is True and rec["dataset"]["synthetic"] is True
    assert rec["packages"]["torch"] == torch.__version__.split("+")[0] or rec["packages"]["torch"].startswith(
        torch.__version__.split("+")[0])
    assert rec["params"]["total"] == sum(rec["params"]["breakdown"].values())
    assert rec["timing"]["train_images_per_s"] > 0 and rec["peak_memory"]["host_rss_mb"] > 0
    assert rec["metrics"]["examples"] == 256 and rec["selection"]["rule"] == "last epoch"
    assert json.loads((res.run_dir / "result.json").read_text())["run_id"] == rec["run_id"]
    lines = [json.loads(l) for l in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["kind"] for l in lines] == ["train", "eval", "train", "eval", "final"]


def test_seeded_runs_are_reproducible(tiny, tmp_path):
    a = train(build_config({}, tiny))
    b = train(build_config({}, {**tiny, "run.out": str(tmp_path / "b")}))
    c = train(build_config({}, {**tiny, "run.out": str(tmp_path / "c"), "train.seed": 1}))
    assert a.record["metrics"] == b.record["metrics"]
    assert a.record["metrics"]["loss"] != c.record["metrics"]["loss"]


def test_validation_split_selects_the_model(tiny):
    res = train(build_config({}, {**tiny, "data.val_fraction": 0.25, "train.epochs": 3}))
    rec = res.record
    assert rec["dataset"]["eval_split"] == "val"
    assert rec["selection"]["split"] == "val" and 1 <= rec["selection"]["epoch"] <= 3
    evals = [json.loads(l) for l in (res.run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert rec["selection"]["val_top1"] == max(e["top1"] for e in evals)
    assert all(e["split"] == "val" and e["examples"] == 128 for e in evals)
    assert rec["metrics"]["split"] == "test" and rec["metrics"]["examples"] == 256
    assert (res.run_dir / "best.pt").is_file()


def test_divergence_stops_the_run(tiny):
    res = train(build_config({}, {**tiny, "optim.lr": 1e30}))
    assert res.status == "diverged" and res.exit_code == EXIT_DIVERGED
    rec = json.loads((res.run_dir / "result.json").read_text())
    assert rec["status"] == "diverged" and rec["diverged_at"]["step"] < 8
    assert not math.isfinite(float(rec["diverged_at"]["loss"]))


def test_label_smoothing_warmup_and_clipping_change_training(tiny, tmp_path):
    base = train(build_config({}, tiny)).record["metrics"]["loss"]
    for i, extra in enumerate([{"optim.label_smoothing": 0.1}, {"optim.grad_clip": 1e-3},
                               {"optim.warmup_epochs": 1}, {"optim.schedule": "cosine"}]):
        rec = train(build_config({}, {**tiny, **extra, "run.out": str(tmp_path / f"v{i}")})).record
        assert rec["status"] == "completed" and rec["metrics"]["loss"] != base, extra


def test_cifar100_smoke(tiny):
    root = cifar100_root()
    if root is None:
        pytest.skip("real CIFAR-100 not found (set NPAS_CIFAR100_ROOT or place it in ../shared/data)")
    res = train(build_config({}, {**tiny, "data.name": "cifar100", "data.root": str(root), "data.eval_subset": 500,
                                  "train.epochs": 1}))
    rec = res.record
    assert rec["status"] == "completed" and rec["synthetic"] is False
    assert rec["dataset"]["num_classes"] == 100 and rec["params"]["breakdown"]["head"] == 64 * 100 + 100
    assert rec["metrics"]["examples"] == 10000  # final test on the full official test split


@pytest.mark.slow
def test_cifar100_learns(tmp_path):
    """Real learning: WRN-10-1 on 10k CIFAR-100 images for 3 epochs beats chance (1%) by far."""
    root = cifar100_root()
    if root is None:
        pytest.skip("real CIFAR-100 not found (set NPAS_CIFAR100_ROOT or place it in ../shared/data)")
    res = train(build_config({}, {
        "model.arch": "wrn-10-1", "data.name": "cifar100", "data.root": str(root), "data.train_subset": 10000,
        "train.epochs": 3, "optim.milestones_unit": "fraction", "optim.milestones": [0.67], "optim.gammas": [0.2],
        "run.out": str(tmp_path / "c100"), "run.progress": False}))
    assert res.record["metrics"]["top1"] > 8.0, res.record["metrics"]


def test_in_process_checkpoint_request(tiny):
    """A launcher (e.g. submitit's checkpoint()) can ask for checkpoint-and-stop without a signal."""
    from npasbench.trainer import EXIT_PREEMPTED
    from npasbench.trainer.checkpoint import list_checkpoints, load_checkpoint
    from npasbench.trainer.signals import PreemptionFlag

    flag = PreemptionFlag()
    flag.request()
    res = train(build_config({}, tiny), preemption=flag)
    assert res.status == "preempted" and res.exit_code == EXIT_PREEMPTED
    state = load_checkpoint(list_checkpoints(res.run_dir / "checkpoints")[-1])
    assert (state["epoch"], state["batch"], state["step"]) == (0, 1, 1)
    done = train(build_config({}, tiny))
    ref = train(build_config({}, {**tiny, "run.out": tiny["run.out"] + "-ref"}))
    assert done.record["metrics"] == ref.record["metrics"]
