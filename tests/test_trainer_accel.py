"""The trainer's GPU-oriented paths, exercised for real on CPU.

``train.amp`` (bf16 autocast; fp16 autocast + GradScaler), ``train.channels_last``, ``train.compile``
and seeded determinism. Every run is a few steps of WRN-10-1 on a small synthetic set. A probe
(a ``Trainer`` subclass) records, on every ``Conv`` forward, the dtype the convolution computed in
and the memory format of its input and weight, so a silently ignored option fails a test instead
of merely producing a plausible number.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from npasbench.config import build_config
from npasbench.models.layers import Conv
from npasbench.trainer import Trainer
from npasbench.trainer.checkpoint import list_checkpoints, load_checkpoint

CL = torch.channels_last

# 2 epochs x 2 steps of batch 32: exercises the epoch boundary (eval, checkpoint, new data order).
BASE: dict[str, Any] = {
    "model.arch": "wrn-10-1",
    "data.name": "synthetic",
    "data.synthetic_train": 256,
    "data.synthetic_test": 100,
    "train.epochs": 2,
    "train.batch_size": 32,
    "train.eval_batch_size": 100,
    "train.max_steps_per_epoch": 2,
    "train.device": "cpu",
    "train.seed": 7,
    "run.progress": False,
    "run.resume": "never",
}

# Two fp32 runs that differ only in summation order (memory format, fused kernels) stay within this
# fraction of the size of the training update (global norm ratio after 4 steps; measured: channels_last
# 0.0016, inductor 3e-5, aot_eager 0).
# Early training at lr 0.1 amplifies rounding differences, so weights cannot be compared elementwise
# at 1e-6; a real bug (lost layout, wrong graph) gives a ratio of order 1.
SAME_UPDATE = 0.02

# Keys of metrics.jsonl / result.json records that measure time, not results.
TIMING_KEYS = {"timing", "wall_s", "train_s", "eval_s", "train_images_per_s", "eval_images_per_s", "created_at"}


class ProbedTrainer(Trainer):
    """The real trainer, plus: the initial weights, and what every Conv forward saw."""

    def wrap_model(self, model, runtime) -> Any:
        net = super().wrap_model(model, runtime)
        if not hasattr(self, "initial_state"):  # the first wrap: after restore, before the first step
            self.initial_state = copy.deepcopy(model.state_dict())
        if getattr(self, "_probed", False) or self.cfg.train.compile:
            return net  # hooks once; no Python side effects inside a compiled graph
        self._probed = True
        self.conv_calls: list[dict[str, Any]] = []

        def hook(module: Conv, args: tuple, out: torch.Tensor) -> None:
            x, w = args[0], module.weight()
            self.conv_calls.append({
                "training": module.training,
                "autocast": torch.is_autocast_enabled("cpu"),
                "out_dtype": out.dtype,
                "in_channels_last": x.is_contiguous(memory_format=CL),
                "in_contiguous": x.is_contiguous(),
                "weight_channels_last": w.is_contiguous(memory_format=CL),
                "weight_contiguous": w.is_contiguous(),
            })

        for m in model.modules():
            if isinstance(m, Conv):
                m.register_forward_hook(hook)
        return net


def run(out: Path, **overrides: Any) -> ProbedTrainer:
    cfg = build_config({}, {**BASE, "run.out": str(out), **overrides})
    t = ProbedTrainer(cfg)
    threads = torch.get_num_threads()
    try:
        result = t.run()
    finally:
        torch.set_num_threads(threads)
    t.result = result
    return t


def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def result_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "result.json").read_text())


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in metrics_lines(run_dir) if r["kind"] == "train"]


def final_checkpoint(run_dir: Path) -> dict[str, Any]:
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert ckpts, f"no checkpoint in {run_dir}"
    return load_checkpoint(ckpts[-1])


def assert_completed(t: ProbedTrainer) -> dict[str, Any]:
    assert t.result.status == "completed" and t.result.exit_code == 0
    rec = result_json(t.run_dir)
    assert rec["status"] == "completed"
    m = rec["metrics"]
    assert m["examples"] == BASE["data.synthetic_test"]
    for k in ("top1", "top5", "loss"):
        assert math.isfinite(m[k]), (k, m)
    assert all(math.isfinite(x) for x in train_losses(t.run_dir))
    for k, v in t.model.state_dict().items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), f"non-finite {k}"
    return rec


def update_rel_diff(run: dict, ref: dict, init: dict) -> float:
    """How far ``run``'s training update is from ``ref``'s: ||run - ref|| / ||ref - init|| over all
    floating-point parameters and buffers (one global ratio)."""
    num = den = 0.0
    for k in ref:
        if ref[k].is_floating_point() and k in init:
            num += (run[k].double() - ref[k].double()).pow(2).sum().item()
            den += (ref[k].double() - init[k].double()).pow(2).sum().item()
    assert den > 0, "the reference run did not change its weights"
    return math.sqrt(num / den)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> ProbedTrainer:
    """The reference: plain fp32, contiguous, eager."""
    t = run(tmp_path_factory.mktemp("fp32") / "run")
    assert_completed(t)
    return t


# ----------------------------------------------------------------------------- amp
def test_amp_bf16_runs_in_bfloat16(tmp_path, fp32):
    t = run(tmp_path / "bf16", **{"train.amp": True})
    assert_completed(t)
    assert not t.scaler.is_enabled()  # bf16 needs no loss scaling
    train_calls = [c for c in t.conv_calls if c["training"]]
    eval_calls = [c for c in t.conv_calls if not c["training"]]
    assert train_calls and eval_calls
    # autocast really ran: every convolution computed in bf16, in training and in evaluation
    assert {c["out_dtype"] for c in t.conv_calls} == {torch.bfloat16}
    assert all(c["autocast"] for c in t.conv_calls)
    # ... while the reference never did
    assert {c["out_dtype"] for c in fp32.conv_calls} == {torch.float32}
    # master weights stay fp32
    assert {v.dtype for v in t.model.state_dict().values() if v.is_floating_point()} == {torch.float32}
    # bf16 changes the numbers (it was not silently off) but not the learning
    l_bf, l_32 = train_losses(t.run_dir), train_losses(fp32.run_dir)
    assert l_bf != l_32
    assert l_bf == pytest.approx(l_32, rel=0.05)
    dev = update_rel_diff(t.model.state_dict(), fp32.model.state_dict(), fp32.initial_state)
    assert 0 < dev < 0.1, dev  # measured ~0.01


def test_amp_fp16_with_grad_scaler(tmp_path):
    # fp16 convolution *backward* has no fast CPU kernel (~1 s per layer at batch 32 here),
    # so this test trains 2 steps at batch 8; its fp32 twin uses the same shape.
    small = {"train.epochs": 1, "train.batch_size": 8, "train.max_steps_per_epoch": 2}
    ref = run(tmp_path / "fp32", **small)
    t = run(tmp_path / "fp16", **small, **{"train.amp": True, "train.amp_dtype": "float16"})
    assert_completed(t)
    assert t.scaler.is_enabled()
    assert {c["out_dtype"] for c in t.conv_calls} == {torch.float16}
    # the scaler's state is checkpointed (a disabled scaler's state dict is empty)
    scaler_state = final_checkpoint(t.run_dir)["scaler"]
    assert scaler_state["scale"] > 1.0 and scaler_state["_growth_tracker"] == 2  # 2 finite steps, no skip
    # gradients were unscaled before the step: the update matches fp32's up to fp16 rounding
    # (a missing unscale would make it 2**16 times larger)
    dev = update_rel_diff(t.model.state_dict(), ref.model.state_dict(), ref.initial_state)
    assert 0 < dev < 0.1, dev  # measured ~0.01
    assert train_losses(t.run_dir) == pytest.approx(train_losses(ref.run_dir), rel=0.02)


# ----------------------------------------------------------------------------- channels_last
def test_channels_last_matches_contiguous(tmp_path, fp32):
    t = run(tmp_path / "cl", **{"train.channels_last": True})
    assert_completed(t)
    train_calls = [c for c in t.conv_calls if c["training"]]
    assert train_calls
    # the model's 4-D parameters are channels_last during training, and so are the conv inputs
    assert all(c["weight_channels_last"] for c in t.conv_calls)
    assert all(c["in_channels_last"] for c in t.conv_calls)
    assert not any(c["in_contiguous"] for c in train_calls)  # NCHW-contiguous would mean the format was lost
    for name, p in t.model.named_parameters():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=CL), name
    # the reference really was NCHW
    assert all(c["in_contiguous"] and c["weight_contiguous"] for c in fp32.conv_calls)
    # same training up to float reassociation
    assert train_losses(t.run_dir) == pytest.approx(train_losses(fp32.run_dir), rel=1e-4)
    dev = update_rel_diff(t.model.state_dict(), fp32.model.state_dict(), fp32.initial_state)
    assert dev < SAME_UPDATE, dev
    a, b = result_json(t.run_dir)["metrics"], result_json(fp32.run_dir)["metrics"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert abs(a["top1"] - b["top1"]) <= 100 / BASE["data.synthetic_test"]  # at most one example flips


# ----------------------------------------------------------------------------- compile
def _check_compiled_run(t: ProbedTrainer, fp32: ProbedTrainer) -> None:
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    assert_completed(t)
    assert isinstance(t.net, OptimizedModule)
    # two graphs: the training forward (+ its backward) and the no-grad evaluation forward
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert train_losses(t.run_dir) == pytest.approx(train_losses(fp32.run_dir), rel=1e-4)
    dev = update_rel_diff(t.model.state_dict(), fp32.model.state_dict(), fp32.initial_state)
    assert dev < SAME_UPDATE, dev
    a, b = result_json(t.run_dir)["metrics"], result_json(fp32.run_dir)["metrics"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert abs(a["top1"] - b["top1"]) <= 100 / BASE["data.synthetic_test"]


@pytest.fixture
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compile_path_matches_eager(tmp_path, fp32, fresh_dynamo, monkeypatch):
    """train.compile=true through dynamo + AOT autograd, without inductor's C++ code generation
    (seconds instead of a minute with a cold cache): graph capture of the trainer's model, the
    compiled backward, the train -> no-grad eval recompile, and the results."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    t = run(tmp_path / "compiled", **{"train.compile": True})
    _check_compiled_run(t, fp32)


@pytest.mark.slow
def test_compile_inductor_matches_eager(tmp_path, fp32, fresh_dynamo):
    """The real default backend (inductor, C++ code generation with gcc). Slow with a cold inductor
    cache: 44 s on an idle 2-core machine here, 92 s while other jobs ran; 5-10 s warm."""
    t = run(tmp_path / "compiled", **{"train.compile": True})
    _check_compiled_run(t, fp32)


# ----------------------------------------------------------------------------- determinism
def test_seeded_runs_are_bit_identical(tmp_path, fp32):
    # exact: the same config twice in one process: the same operations on the same shapes at the same thread count,
    # bit-equal on any CPU (not across thread counts or CPUs: docs/reliability.md)
    t = run(tmp_path / "again")
    assert_completed(t)
    a, b = final_checkpoint(t.run_dir), final_checkpoint(fp32.run_dir)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (BASE["train.epochs"], 4)
    for part in ("model", "optimizer"):
        fa, fb = _flatten(a[part]), _flatten(b[part])
        assert fa.keys() == fb.keys()
        for k in fa:
            if isinstance(fa[k], torch.Tensor):
                assert torch.equal(fa[k], fb[k]), f"{part}: {k} differs"
            else:
                assert fa[k] == fb[k], f"{part}: {k} differs"
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, fp32.model.state_dict()[k]), k
    assert metrics_lines(t.run_dir) == metrics_lines(fp32.run_dir)
    kinds = [r["kind"] for r in metrics_lines(t.run_dir)]
    assert kinds == ["train", "eval"] * BASE["train.epochs"] + ["final"]
    ra, rb = result_json(t.run_dir), result_json(fp32.run_dir)
    assert ra["metrics"] == rb["metrics"] and ra["run_id"] == rb["run_id"]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix: obj}
