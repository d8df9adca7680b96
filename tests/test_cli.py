"""The `npas` command line: reports, training from a config file, the demo, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import npasbench
from npasbench.cli import main
from npasbench.demo import run_demo


def test_params_json(capsys):
    assert main(["params", "--method", "unshared", "--arch", "wrn-28-10", "--dataset", "cifar100", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {"total", "breakdown", "budget", "flops"} <= set(rep)
    assert rep["total"] == 36_536_884 and rep["budget"] is None
    assert rep["flops"]["macs_per_member"][0] == 5_243_386_368
    assert main(["params", "--method", "unshared", "--arch", "resnet50", "--dataset", "imagenet", "--budget", "30M",
                 "--json", "--no-flops"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["total"] == 25_557_032 and rep["budget"] == {"params": 30_000_000, "mode": "total"}


def test_methods_and_archs_listing(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "unshared  [in-tree]" in out and "no_decay_norm_bias" in out
    assert main(["archs", "--json"]) == 0
    names = {a["name"] for a in json.loads(capsys.readouterr().out)}
    assert {"wrn-28-10", "wrn-16-4", "resnet50", "wrn50-2"} <= names


@pytest.mark.parametrize("argv,message", [
    (["params", "--method", "nope", "--arch", "wrn-16-1"], "unknown method 'nope'"),
    (["params", "--method", "unshared", "--arch", "wrn-16-3x"], "unknown architecture"),
    (["params", "--method", "unshared", "--arch", "wrn-16-1", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["params", "--method", "unshared", "--arch", "wrn-16-1", "--budget", "1k"], "above the budget"),
    (["params", "--method", "unshared", "--arch", "wrn-16-1", "--budget", "many"], "budget: expected a parameter count"),
    (["params", "--method", "unshared", "--arch", "wrn-16-1", "--opt", "no_decay_norm_bias=2"], "expected bool"),
    (["params", "--method", "unshared", "--arch", "wrn-16-1", "--opt", "novalue"], "expected key=value"),
    (["train", "--method", "unshared", "--arch", "wrn-10-1", "--dataset", "cifar100", "--data-root", "/nonexistent",
      "--epochs", "1", "--no-progress"], "data.root"),
    (["train", "--config", "/nonexistent.toml"], "no such file"),
    (["train", "--arch", "wrn-10-1", "train.epochs=zero"], "train.epochs"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + [f"run.out={tmp_path / 'r'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_from_config_file_with_overrides(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f"""
[method]
name = "unshared"
[model]
arch = "wrn-10-1"
[data]
name = "synthetic"
synthetic_train = 256
synthetic_test = 128
[train]
epochs = 1
batch_size = 64
max_steps_per_epoch = 2
[run]
out = "{tmp_path / 'run'}"
progress = false
""")
    res = subprocess.run([sys.executable, "-m", "npasbench.cli", "train", "--config", str(cfg), "train.seed=3",
                          "optim.lr=0.05"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("completed: top1")
    rec = json.loads((tmp_path / "run" / "result.json").read_text())
    assert rec["seed"] == 3 and rec["config"]["optim"]["lr"] == 0.05
    assert (tmp_path / "run" / "config.toml").read_text().count("seed = 3") == 1


def test_demo_table(tmp_path):
    text = run_demo(tmp_path / "demo", arch="wrn-10-1", budget="40k", epochs=1, progress=False,
                    extra={"data.synthetic_train": 256, "data.synthetic_test": 128, "train.max_steps_per_epoch": 2})
    assert "synthetic" in text and "| unshared" in text and "| ssn" in text
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    failed = {f["method"]: f["error"] for f in summary["failures"]}
    # every method shows up: trained at the budget, or listed with the reason it cannot represent it
    assert set(rows) | set(failed) == set(npasbench.METHODS.names()) and not set(rows) & set(failed)
    # only fixed-size baselines (the ensemble of two wrn-10-1, hard-sharing), soft-sharing (>= 75,548
    # on wrn-10-1: its sharing stays within a stage) and superweights (>= 51,570: one template per
    # bank of its depth-bin clusters) cannot hold 40k; each says so as a budget error
    assert set(failed) <= {"ensemble", "hard-sharing", "soft-sharing", "superweights"}
    assert all(e.startswith("budget: ") and "40,000" in e and f"- `{m}`: budget: " in text for m, e in failed.items())
    assert {"unshared", "ssn", "reduced", "hashed"} <= set(rows)
    assert rows["unshared"]["budget"] == "none" and rows["ssn"]["budget"] == "40,000"
    assert rows["ssn"]["params"] <= 40_000 < rows["unshared"]["params"]
    for r in rows.values():
        assert r["GFLOPs"] > 0 and r["top1"] is not None and r["status"] == "completed"
    assert (tmp_path / "demo" / "summary.md").read_text() == text
