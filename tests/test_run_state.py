"""The run's explicit objects: TrainState (checkpoint progress), best.pt's checks, the record's RunSummary,
a method's typed built facts, and the RunContext hooks get."""

from __future__ import annotations

import pytest
import torch

from npasbench.config import build_config
from npasbench.contract import NPASModel, RunContext
from npasbench.errors import CheckpointError
from npasbench.methods.ssn.plan import SSNPlan
from npasbench.trainer import train
from npasbench.trainer.checkpoint import list_checkpoints, load_best, load_checkpoint, save_best
from npasbench.trainer.state import CHECKPOINT_KEYS, TrainState, best_payload


def test_train_state_round_trips_through_a_checkpoint_payload():
    s = TrainState(step=7, loss_sum=3.5, seen=10, best={"top1": 12.5, "epoch": 2},
                   timing={"train_s": 1.0, "train_images": 64, "eval_s": 0.5, "eval_images": 32}, wall_before=4.0)
    progress = s.progress_payload(epoch=2, batch=3, per_rank=[[3.5, 10], [1.5, 6]], wall_now=2.0)
    assert progress["epoch_acc"] == {"loss_sum": 5.0, "seen": 16, "per_rank": [[3.5, 10], [1.5, 6]]}
    assert progress["timing"]["wall_s_before"] == 6.0  # earlier processes' wall time plus this one's
    back = TrainState.from_payload(progress, "ckpt.pt", rank=1, world_size=2)
    assert (back.step, back.loss_sum, back.seen, back.best, back.wall_before, back.resumed_from) == (
        7, 1.5, 6, {"top1": 12.5, "epoch": 2}, 6.0, "ckpt.pt")
    assert "wall_s_before" not in back.timing and back.timing["train_images"] == 64
    # another world size: rank 0 carries the epoch's totals, the others start at zero
    assert (TrainState.from_payload(progress, "p", 0, 3).loss_sum, TrainState.from_payload(progress, "p", 2, 3).seen) == (5.0, 0)


def test_a_real_checkpoint_holds_exactly_the_declared_keys(tiny):
    res = train(build_config({}, tiny))
    payload = load_checkpoint(list_checkpoints(res.run_dir / "checkpoints")[-1], res.record["run_id"])
    assert set(payload) - {"format_version"} == set(CHECKPOINT_KEYS)


def test_best_weights_are_checked_like_a_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)

    class NoExtra:
        def extra_state(self, m):
            return {}

    save_best(tmp_path, best_payload(model, NoExtra(), 3, "abc"))
    assert load_best(tmp_path, "abc")["epoch"] == 3
    with pytest.raises(CheckpointError, match="belongs to config abc"):
        load_best(tmp_path, "other")
    torch.save({"model": {}, "format_version": 1}, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="lacks extra, epoch, run_id"):
        load_best(tmp_path, "abc")


def test_the_record_comes_from_the_run_summary(tiny):
    rec = train(build_config({}, {**tiny, "data.val_fraction": 0.25})).record
    assert rec["steps"] == 8 and rec["selection"]["split"] == "val" and rec["pipeline"] == "memory"
    assert rec["timing"]["train_images_per_s"] > 0 and rec["resumed_from"] is None


def test_built_facts_are_typed_and_checked():
    model = NPASModel([torch.nn.Linear(2, 2)], built={"plan": 1})
    assert model.built(dict) == {"plan": 1}
    with pytest.raises(TypeError, match="built facts are dict, not SSNPlan"):
        model.built(SSNPlan)
    with pytest.raises(TypeError, match="NoneType"):
        NPASModel([torch.nn.Linear(2, 2)]).built(dict)


def test_the_trainer_context_is_a_run_context(tiny, tmp_path):
    from npasbench.data import DataConfig, Loader, load_data
    from npasbench.factory import make_request
    from npasbench.trainer.phase import PhaseContext

    cfg = build_config({}, tiny)
    ctx = PhaseContext(cfg=cfg, data=load_data(DataConfig(synthetic_train=256, synthetic_test=64)),
                       device=torch.device("cpu"), run_dir=tmp_path, request=make_request("wrn-10-1", "synthetic"),
                       run_id="x", progress=False)
    assert isinstance(ctx, RunContext)
    assert ctx.agree({"a": 1}) == {"a": 1}  # one process: the value itself
    loader = ctx.loader("train", batch_size=32, seed=3)
    assert isinstance(loader, Loader) and len(loader) == 8
