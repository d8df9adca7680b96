"""The official-code reference row of a grid (`npasbench.parity.reference`): the cell's recipe and official
arguments, the reference records -> reference.md and a references TOML the leaderboard reads. The official
SSN code itself is not in this repository: the one test that trains it reads a checkout from
$NPAS_SSN_CHECKOUT and is skipped, with that reason, without one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from npasbench.errors import ConfigError
from npasbench.leaderboard.references import load_references
from npasbench.leaderboard.tidy import variant_of
from npasbench.grid.runner import plan_grid
from npasbench.parity.reference import _cell, _official_args, references_toml, summarize

SPEC = """
[grid]
name = "ref"
results = "{results}"
[base]
"data.name" = "synthetic"
"data.synthetic_train" = 256
"data.synthetic_test" = 64
"train.epochs" = 1
"train.batch_size" = 64
"optim.milestones_unit" = "fraction"
"optim.milestones" = [0.5]
"optim.gammas" = [0.2]
[axes]
archs = ["wrn-16-1"]
datasets = ["synthetic"]
budgets = ["50%"]
seeds = [0, 1]
[[methods]]
name = "ssn"
labels = ["by-shape", "learned"]
variants = [{{param_groups = -1}}, {{param_groups = 4, search_epochs = 1}}]
[[methods]]
name = "reduced"
"""


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "ref.toml"
    p.write_text(SPEC.format(results=tmp_path / "res"))
    return p


def test_the_cell_and_its_official_arguments(spec):
    plan = plan_grid(spec, write=False)
    run = _cell(plan, "ssn", "by-shape", "50%", 1)
    assert run.seed == 1 and run.variant == "by-shape"
    args = _official_args(run.config)
    assert args["groups"] == -1 and args["share_type"] == "wavg" and args["upsample_type"] == "inter"
    assert args["bank_size"] == 8
    # the official --max_params counts the banks only: below the total budget the run is held to
    assert 0 < args["max_params"] < args["ours_params"] <= run.config.model.budget


def test_cells_it_cannot_reproduce_are_refused_by_name(spec):
    plan = plan_grid(spec, write=False)
    with pytest.raises(ConfigError, match="no single run ssn/nope/50%"):
        _cell(plan, "ssn", "nope", "50%", 0)
    learned = _cell(plan, "ssn", "learned", "50%", 0)
    with pytest.raises(ConfigError, match="learned or explicit groups"):
        _official_args(learned.config)
    reduced = _cell(plan, "reduced", "default", "50%", 0)
    with pytest.raises(ConfigError, match="not ssn"):
        _official_args(reduced.config)


def _record(plan, run, top1: float) -> dict:
    return {"cell": "ssn [by-shape] 50%", "seed": run.seed, "run_id": run.run_id,
            "result": {"top1": top1, "top5": top1 + 10, "params": 1234, "steps": 4, "test_examples": 64},
            "ours_params": 1234, "official": {"repo": "BryanPlummer/SSN", "commit": "4bd5d5c" + "0" * 33,
                                              "args": {"groups": -1}},
            "command": "python -m npasbench.parity.reference --ssn SSN --spec ref.toml"}


def test_records_become_a_table_and_leaderboard_references(spec):
    plan = plan_grid(spec, write=False)
    r0, r1 = (_cell(plan, "ssn", "by-shape", "50%", s) for s in (0, 1))
    folder = plan.results / "reference"
    folder.mkdir(parents=True)
    for run, top1 in ((r0, 10.0), (r1, 12.0)):
        (folder / f"official-ssn-{run.run_id[:10]}.json").write_text(json.dumps(_record(plan, run, top1)))
    text = summarize(folder, plan)
    assert "| ssn [by-shape] 50% | 0 |" in text and "not finished" in text  # our runs have not run
    assert "4bd5d5c" in text and (folder / "reference.md").read_text() == text
    assert "- `python -m npasbench.parity.reference --ssn SSN --spec ref.toml`" in text  # each cell's own command
    refs = load_references(folder / "references.toml")
    assert len(refs) == 1
    ref = refs[0]
    assert ref.top1 == pytest.approx(11.0) and ref.verified and "seed 0 10.00, seed 1 12.00" in ref.note
    cfg = r0.config
    assert (ref.dataset, ref.arch, ref.method, ref.budget, ref.epochs) == (
        "synthetic", "wrn-16-1", "ssn", cfg.model.budget, 1)
    assert ref.variant == variant_of("ssn", cfg.method.options) == "param_groups=-1"
    assert references_toml([], plan).startswith("# written by")


@pytest.mark.skipif(not os.environ.get("NPAS_SSN_CHECKOUT"),
                    reason="needs a checkout of BryanPlummer/SSN in $NPAS_SSN_CHECKOUT (never part of this repository)")
def test_the_official_model_trains_with_the_cells_recipe(spec):
    from npasbench.parity.reference import train_official

    run = _cell(plan_grid(spec, write=False), "ssn", "by-shape", "50%", 0)
    args = _official_args(run.config)
    res = train_official(os.environ["NPAS_SSN_CHECKOUT"], run.config, args)
    assert res["params"] == args["ours_params"]
    assert res["steps"] == 256 // 64 and res["test_examples"] == 64 and 0 <= res["top1"] <= 100
