"""Checkpoint/resume: a run killed with SIGKILL (or preempted with SIGTERM) and resumed ends with
exactly the same weights and metrics as an uninterrupted run on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npasbench.experiment import run_id
import torch

from npasbench.config import build_config
from npasbench.errors import CheckpointError
from npasbench.trainer import EXIT_PREEMPTED, train
from npasbench.trainer.checkpoint import find_latest, list_checkpoints, load_checkpoint

TIMING_KEYS = {"timing"}


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "npasbench.cli", "train", "--method", "unshared", "--arch", "wrn-10-1",
            "--dataset", "synthetic", "--epochs", "4", "--out", str(out), "--no-progress",
            "data.synthetic_train=1024", "data.synthetic_test=256", "train.batch_size=64",
            "train.max_steps_per_epoch=12", "optim.milestones_unit=fraction", "optim.milestones=[0.5,0.75]",
            "optim.gammas=[0.2,0.2]", "train.threads=1"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run / "checkpoints")[-1])["model"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    # exact: the resumed and the uninterrupted run take the same operations on the same shapes with one thread each
    # (train.threads=1, OMP_NUM_THREADS=1) on one machine, so they are bit-equal on any CPU; a different thread count
    # changes the rounding (tests/test_float_portability.py)
    sa, sb = _final_state(a), _final_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"weights differ at {k}"
    assert _metrics(a) == _metrics(b)
    ra, rb = (json.loads((r / "result.json").read_text()) for r in (a, b))
    assert ra["metrics"] == rb["metrics"] and ra["status"] == rb["status"] == "completed"
    if importlib.util.find_spec("tensorboard") is not None:  # run.tensorboard=auto wrote event files: the lost
        assert _scalars(a) == _scalars(b)                     # part's events are purged on resume


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard reads the run's event files (trainer/tensorboard.py)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(_cmd(out), check=True, env=_env(), timeout=300, capture_output=True)
    return out


def _wait_for(pred, timeout: float, proc: subprocess.Popen) -> None:
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early with code {proc.returncode}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting for training progress")
        time.sleep(0.02)


def test_sigkill_then_resume_is_bit_exact(reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill after the first epoch checkpoint exists: somewhere inside epoch 2 (or its eval)
        _wait_for(lambda: len(list_checkpoints(out / "checkpoints")) >= 1, 240, proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "result.json").exists()
    done = subprocess.run(_cmd(out), env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rec = json.loads((out / "result.json").read_text())
    assert rec["resumed_from"] is not None
    _assert_same_run(reference, out)


def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(list_checkpoints(out / "checkpoints")) >= 1, 240, proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "preempted"
    latest = list_checkpoints(out / "checkpoints")[-1]
    state = load_checkpoint(latest)
    assert state["step"] > 0 and state["batch"] >= 1  # taken at a step boundary inside an epoch
    done = subprocess.run(_cmd(out), env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _assert_same_run(reference, out)


def test_corrupt_checkpoint_is_clear_and_skipped(tiny, tmp_path):
    cfg = build_config({}, tiny)
    res = train(cfg)
    ckpts = list_checkpoints(res.run_dir / "checkpoints")
    assert len(ckpts) == 2
    ckpts[-1].write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpts[-1])
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        found = find_latest(res.run_dir / "checkpoints", run_id(cfg))
    assert found is not None and found[0] == ckpts[0]
    # explicit resume from the corrupt file: a clear error naming the field
    bad = build_config({}, {**tiny, "run.resume": str(ckpts[-1])})
    with pytest.raises(CheckpointError, match="run.resume"):
        train(bad)
    # a checkpoint from another config is refused, not silently mixed in
    other = build_config({}, {**tiny, "optim.lr": 0.01})
    with pytest.raises(CheckpointError, match="belongs to config"):
        train(other)


def test_no_temp_files_left_behind(tiny):
    res = train(build_config({}, tiny))
    leftovers = [p for p in res.run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert {p.name for p in res.run_dir.iterdir()} >= {"config.toml", "config.json", "metrics.jsonl", "result.json",
                                                       "checkpoints"}


def test_every_checkpoint_corrupt_is_refused_not_restarted(tiny, capsys):
    """No usable checkpoint left: refuse (CLI exit 2, naming the files and run.resume=never), never start over."""
    from npasbench.cli import main

    cfg = build_config({}, tiny)
    res = train(cfg)
    ckpts = list_checkpoints(res.run_dir / "checkpoints")
    for c in ckpts:
        c.write_bytes(b"\x00" * 64)
    metrics_before = (res.run_dir / "metrics.jsonl").read_text()
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        with pytest.raises(CheckpointError, match="no usable checkpoint") as info:
            train(cfg)
    assert all(c.name in str(info.value) for c in ckpts) and "run.resume=never" in str(info.value)
    assert (res.run_dir / "metrics.jsonl").read_text() == metrics_before  # the evidence is untouched
    argv = ["train"] + [f"{k}={v}" if not isinstance(v, list) else f"{k}={','.join(map(str, v))}"
                        for k, v in tiny.items()]
    assert main(argv) == 2
    assert "no usable checkpoint" in capsys.readouterr().err
    # starting over deliberately works
    again = train(build_config({}, {**tiny, "run.resume": "never"}))
    assert again.status == "completed"


def test_checkpoint_missing_entries_is_a_clear_error(tiny):
    cfg = build_config({}, tiny)
    res = train(cfg)
    path = list_checkpoints(res.run_dir / "checkpoints")[-1]
    payload = torch.load(path, weights_only=True)
    del payload["optimizer"], payload["rng"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="lacks optimizer, rng"):
        load_checkpoint(path, run_id(cfg))
