"""Run identity: the same experiment, however it is written, has one id; bad values fail before any write."""

from __future__ import annotations

import json

import pytest

from npasbench.config import build_config
from npasbench.errors import NPASError
from npasbench.experiment import identity_dict, resolve, run_id, unshared_size
from npasbench.options import describe_options
from npasbench.plugins import METHODS
from npasbench.trainer import train


def _as_text(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("name", METHODS.names())
def test_default_options_any_spelling_one_id(name):
    """No options, every default as a --opt string, every default as a typed TOML value: one id."""
    opts = describe_options(METHODS.get(name).Options)
    base = {"method.name": name, "model.arch": "wrn-16-1"}
    implicit = run_id(build_config({}, base))
    as_strings = {f"method.options.{o['name']}": _as_text(o["default"]) for o in opts}
    typed = {"method": {"name": name, "options": {o["name"]: (list(o["default"]) if isinstance(o["default"], tuple)
                                                               else o["default"]) for o in opts}},
             "model": {"arch": "wrn-16-1"}}
    assert run_id(build_config({}, {**base, **as_strings})) == implicit
    assert run_id(build_config(typed)) == implicit
    # and the resolved config names every option with its default
    assert set(resolve(build_config({}, base)).config.method.options) == {o["name"] for o in opts}


def test_ssn_bank_size_three_spellings():
    a = build_config({}, {"method.name": "ssn", "method.options.bank_size": "8"})
    b = build_config({"method": {"name": "ssn", "options": {"bank_size": 8}}})
    c = build_config({}, {"method.name": "ssn"})
    assert run_id(a) == run_id(b) == run_id(c)
    assert run_id(build_config({}, {"method.name": "ssn", "method.options.bank_size": "4"})) != run_id(c)


@pytest.mark.parametrize("spelling", ["100k", "100000", 100000, "1e5", "100_000", "0.1M", 100000.0])
def test_budget_spellings_one_id(spelling):
    ref = run_id(build_config({}, {"method.name": "ssn", "model.budget": 100000}))
    assert run_id(build_config({}, {"method.name": "ssn", "model.budget": spelling})) == ref


def test_percentage_budget_is_its_integer():
    full = unshared_size("wrn-16-1", "synthetic", 10)
    cfg = resolve(build_config({}, {"method.name": "hashed", "model.arch": "wrn-16-1", "model.budget": "10%"})).config
    assert cfg.model.budget == round(full * 0.1)
    same = build_config({}, {"method.name": "hashed", "model.arch": "wrn-16-1", "model.budget": cfg.model.budget})
    assert run_id(cfg) == run_id(same)


def test_settings_that_cannot_change_results_keep_the_id(tmp_path):
    ref = run_id(build_config({}, {"method.name": "unshared"}))
    for k, v in {"data.root": str(tmp_path), "data.num_workers": "2", "train.threads": "1", "train.device": "cpu",
                 "train.eval_batch_size": "100", "run.out": "elsewhere", "run.progress": "false",
                 "run.keep_checkpoints": "5", "data.os_cache": "false", "run.phase_dir": "x"}.items():
        assert run_id(build_config({}, {"method.name": "unshared", k: v})) == ref, k
    for k, v in {"train.seed": "1", "train.epochs": "7", "optim.lr": "0.2", "data.cutout": "16"}.items():
        assert run_id(build_config({}, {"method.name": "unshared", k: v})) != ref, k
    assert "root" not in identity_dict(resolve(build_config({}, {})).config)["data"]


def test_no_budget_ignores_mode():
    a = build_config({}, {"method.name": "ssn", "model.budget_mode": "max_params"})
    b = build_config({}, {"method.name": "ssn"})
    assert run_id(a) == run_id(b)


@pytest.mark.parametrize("overrides, message", [
    ({"method.name": "nope"}, "unknown method 'nope'"),
    ({"model.arch": "wrn-17-1"}, "model.arch"),
    ({"data.name": "mnist"}, "unknown dataset 'mnist'"),
    ({"model.budget": "lots"}, "model.budget"),
    ({"model.budget": "-5%"}, "model.budget"),
    ({"model.budget_mode": "max_params"}, "model.budget_mode"),
    ({"method.name": "ssn", "method.options.bank_sise": "8"}, "bank_sise"),
    ({"method.name": "ssn", "method.options.bank_size": "eight"}, "bank_size"),
    ({"method.name": "ssn", "model.budget": "100"}, "budget"),
])
def test_bad_values_rejected_before_anything_is_written(tiny, tmp_path, overrides, message):
    out = tmp_path / "never"
    cfg = build_config({}, {**tiny, "run.out": str(out), **overrides})
    with pytest.raises(NPASError, match=message.replace("(", r"\(")):
        train(cfg)
    assert not out.exists()


def test_record_holds_options_once_and_the_run_id(tiny):
    res = train(build_config({}, {**tiny, "method.name": "hashed", "model.budget": "40k"}))
    rec = json.loads((res.run_dir / "result.json").read_text())
    assert "options" not in rec["method"] and rec["config"]["method"]["options"]
    assert "config_hash" not in rec and rec["run_id"] == run_id(build_config({}, {**tiny, "method.name": "hashed",
                                                                           "model.budget": 40000}))
    assert rec["config"]["model"]["budget"] == 40000
    assert json.loads((res.run_dir / "config.json").read_text())["run_id"] == rec["run_id"]


def test_moving_the_data_keeps_resume(tiny, tmp_path):
    """A checkpoint written with one data.root/threads resumes with another (the id is the experiment's)."""
    cfg = build_config({}, {**tiny, "train.epochs": 1})
    first = train(cfg)
    again = train(build_config({}, {**tiny, "train.epochs": 1, "data.root": str(tmp_path), "train.threads": 1}))
    assert again.record["run_id"] == first.record["run_id"]
    assert again.record["metrics"]["top1"] == first.record["metrics"]["top1"]
    assert again.record["resumed_from"] is not None  # the checkpoint was accepted, not refused as foreign
