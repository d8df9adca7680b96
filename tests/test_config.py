"""Configs: TOML files, dotted overrides, typed validation, the config hash."""

from __future__ import annotations

import pytest

from npasbench.experiment import run_id

from npasbench.config import build_config, load_config
from npasbench.errors import ConfigError


def test_toml_and_overrides(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('[method]\nname = "unshared"\n[method.options]\nno_decay_norm_bias = true\n'
                 '[model]\narch = "wrn-16-2"\nbudget = "1M"\n[train]\nepochs = 5\n[optim]\nmilestones = [2, 4]\n'
                 'gammas = [0.1, 0.1]\n')
    cfg = load_config(f, {"train.epochs": "7", "data.cutout": "16", "method.options.no_decay_norm_bias": "false"})
    assert cfg.train.epochs == 7 and cfg.model.arch == "wrn-16-2" and cfg.data.cutout == 16
    assert cfg.optim.milestones == (2.0, 4.0)
    assert cfg.method.options == {"no_decay_norm_bias": "false"}
    # the resolved config round-trips through TOML with the same hash
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert run_id(load_config(again)) == run_id(cfg)


def test_hash_ignores_run_section_only():
    a = build_config({}, {"run.out": "x", "run.progress": "false"})
    b = build_config({}, {"run.out": "y"})
    c = build_config({}, {"train.seed": 1})
    assert run_id(a) == run_id(b) != run_id(c)


@pytest.mark.parametrize("overrides,match", [
    ({"train.epochs": "ten"}, "train.epochs: expected int"),
    ({"train.epochs": 0}, "train.epochs: must be a positive"),
    ({"optim.lr": -1}, "optim.lr"),
    ({"optim.milestones": [10, 5], "optim.gammas": [0.1, 0.1]}, "optim.milestones"),
    ({"optim.milestones": [10]}, "optim.gammas"),
    ({"optim.schedule": "linear"}, "optim.schedule: must be one of"),
    ({"optim.no_decay_roles": ["bn"]}, "optim.no_decay_roles"),
    ({"train.nonsense": 1}, "unknown option.*train.nonsense"),
    ({"bogus.key": 1}, "unknown config section"),
    ({"data.val_fraction": 1.5}, "data.val_fraction"),
    ({"train.amp": "sometimes"}, "train.amp: expected bool"),
])
def test_bad_config_values_name_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config({}, overrides)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_shipped_configs_load():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert files, "configs/ holds the experiment configs"
    for f in files:
        cfg = load_config(f)
        assert cfg.model.arch and cfg.train.epochs > 0, f


# -- discoverable configuration (npas config) ----------------------------------------------------------
def test_every_config_key_is_listed_with_type_default_and_help():
    import dataclasses

    from npasbench.config import SECTION_TYPES
    from npasbench.config_reference import config_keys

    keys = {k.key: k for k in config_keys()}
    expected = {f"{s}.{f.name}" for s, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls) if f.init}
    assert set(keys) == expected and len(keys) > 50
    missing = [k for k, v in keys.items() if not v.help]
    assert not missing, f"config keys without a line of help: {missing}"
    assert keys["train.max_steps_per_epoch"].type == "int" and keys["train.max_steps_per_epoch"].default == 0
    assert keys["data.synthetic_train"].default == 5000 and "synthetic" in keys["data.synthetic_train"].help
    assert keys["optim.schedule"].type == "'step' | 'cosine' | 'constant' | 'exponential'"
    assert "exponential" in keys["optim.schedule"].help
    assert keys["model.budget"].help.startswith("e.g.")  # the comment line above the field


@pytest.mark.parametrize("method", ["unshared", "ssn", "superweights", "soft-sharing", "hashed", "reduced",
                                    "hard-sharing", "ensemble"])
def test_every_method_option_has_help(method):
    from npasbench.config_reference import config_keys

    own = [k for k in config_keys(method) if k.key.startswith("method.options.")]
    assert own and all(k.help for k in own), [k.key for k in own if not k.help]


def test_npas_config_prints_every_key(capsys):
    import json

    from npasbench.cli import main

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("train.max_steps_per_epoch "))
    assert " int " in line and "truncates each epoch" in line
    assert main(["config", "--method", "ssn", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["method.options.share_type"]["help"] and "method.options" not in rows


def test_method_option_errors_name_the_key_as_written():
    from npasbench.plugins import create_method

    with pytest.raises(ConfigError, match=r"^method\.options\.hash_seed: expected int, got .x.") as e:
        create_method("hashed", {"hash_seed": "x"})
    assert "method.options(" not in str(e.value)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) method\.options\.rnk\. Valid options of hashed: "):
        create_method("hashed", {"rnk": 1})


def test_python_api_takes_percent_budgets_as_the_cli_does():
    from npasbench import create_model
    from npasbench.errors import BudgetError
    from npasbench.experiment import unshared_size

    built = create_model("hashed", "wrn-10-1", "synthetic", "60%")
    assert built.request.budget.params == round(unshared_size("wrn-10-1", "synthetic") * 0.6)
    assert create_model("hashed", "wrn-10-1", "synthetic", "50k").request.budget.params == 50_000
    with pytest.raises(BudgetError, match="not a percentage"):
        create_model("hashed", "wrn-10-1", "synthetic", "x%")
    with pytest.raises(BudgetError, match="budgets above 64x are refused"):
        create_model("hashed", "wrn-10-1", "synthetic", "1e12")
