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
    assert {"wrn-28-10", "wrn-16-4", "resnet50", "wrn50-2", "vit-tiny-p4", "deit-small", "densenet-bc-100-12",
            "mobilenetv2", "mobilenetv2-cifar"} <= names
    assert main(["archs"]) == 0  # the text listing prints every family's own hyper-parameters
    text = capsys.readouterr().out
    assert "depth=12 embed=192 heads=3 patch=4" in text and "depth=100 growth=12" in text and "width=1" in text
    assert "densenet-bc-D-K" in text and "mobilenetv2[-cifar]-W" in text


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
    """`npas demo` is a grid: a shortened copy of its spec runs every method and ends with the table."""
    from npasbench.demo import DEMO_SPEC

    text = DEMO_SPEC.read_text().replace('"train.epochs" = 3', '"train.epochs" = 1\n"train.max_steps_per_epoch" = 2')
    # the data set is kept: SuperWeights' search clusters (and so whether 45% fits) depend on the data
    spec = tmp_path / "demo.toml"
    spec.write_text(text)
    result = run_demo(tmp_path / "demo", spec=spec, executor="debug", progress=False)
    out = result.text
    assert result.exit_code == 0 and result.outcome.ok
    assert "synthetic" in out and "| unshared" in out and "| ssn" in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    rows = summary["rows"]
    assert {r["method"] for r in rows} == set(npasbench.METHODS.names()) and not summary["unfinished"]
    fixed = {"unshared", "ensemble", "hard-sharing"}
    for r in rows:
        assert r["GFLOPs"] > 0 and r["top1"] is not None and r["status"] == "completed"
        if r["method"] in fixed:
            assert r["budget"] == "none"
        else:
            assert int(r["budget"].replace(",", "")) >= r["params"]  # every budgeted row holds its budget
    assert sum(1 for r in rows if r["method"] not in fixed) == 2 * (len(npasbench.METHODS.names()) - len(fixed))
    assert "Notes:" in out and "`superweights`" in out
    assert (tmp_path / "demo" / "summary.md").read_text() == out


@pytest.mark.slow
def test_the_real_demo(tmp_path):
    """`npas demo` exactly as the README runs it (local executor, the shipped spec), then again: a cache hit."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "npasbench.cli", "demo", "--out", str(tmp_path / "demo"), "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {r["method"] for r in summary["rows"]} == set(npasbench.METHODS.names()) and not summary["unfinished"]
    assert all(r["status"] == "completed" for r in summary["rows"])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "demo").rglob("result.json")}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(stamps) == len(summary["rows"])
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "demo").rglob("result.json")} == stamps
