"""Configs: TOML files, dotted overrides, typed validation, the config hash."""

from __future__ import annotations

import pytest

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
    assert load_config(again).hash() == cfg.hash()


def test_hash_ignores_run_section_only():
    a = build_config({}, {"run.out": "x", "run.progress": "false"})
    b = build_config({}, {"run.out": "y"})
    c = build_config({}, {"train.seed": 1})
    assert a.hash() == b.hash() != c.hash()


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
