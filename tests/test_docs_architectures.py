"""docs/architectures.md runs: every command its bash block shows is run as a user types it (the training command
with overrides appended that cut it to a few steps on a slice of CIFAR-100), the counts its table gives are the
built models', and the learning table it links (results/grids/architectures-cpu.md) quotes the committed
leaderboards."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from npasbench import create_model
from conftest import cifar100_root

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "architectures.md"
LEARNED = ROOT / "results" / "grids" / "architectures-cpu.md"  # the guide's learning table


def _commands() -> list[str]:
    (block,) = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S)
    return [line for line in block.splitlines() if line.strip()]


def _npas(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npasbench.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("i", range(4))
def test_the_guides_listing_and_params_commands_run(i, tmp_path):
    argv = shlex.split(_commands()[i])[1:]
    r = _npas(argv, tmp_path)
    if "param_groups=-1" in argv:  # the guide says this one ends with the one-line BudgetError
        assert r.returncode == 2 and "npas params: error: budget: SSN on 100 layers here needs" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    else:
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("vit-tiny-p4" in r.stdout) if argv[0] == "archs" else ("FLOPs vit-tiny-p4" in r.stdout)


def test_the_guides_training_command_runs(tmp_path):
    if cifar100_root() is None:
        pytest.skip("real CIFAR-100 not found (set NPAS_CIFAR100_ROOT or place it in ../shared/data)")
    argv = shlex.split(_commands()[4])[1:]
    cut = ["--epochs", "1", "--out", str(tmp_path / "run"), "--data-root", str(cifar100_root()),
           "train.max_steps_per_epoch=2", "train.batch_size=32", "train.amp=false", "data.eval_subset=200",
           "optim.warmup_epochs=0"]
    r = _npas(argv + cut, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "result.json").is_file() and "completed: top1" in r.stdout


@pytest.mark.parametrize("arch,dataset,count", [("vit-tiny-p4", "cifar100", 5_380_132),
                                                 ("densenet-bc-100-12", "cifar100", 800_032),
                                                 ("mobilenetv2", "imagenet", 3_504_872),
                                                 ("deit-small", "imagenet", 22_050_664)])
def test_the_guides_table_gives_the_built_counts(arch, dataset, count):
    assert create_model("unshared", arch, dataset).report(flops=False).total == count
    assert f"{count:,}" in GUIDE.read_text()


# the guide's learning table: row -> (method, label, entity) in each grid's committed LEADERBOARD_cells.csv
_ROWS = {"unshared (100%)": ("unshared", "", "model"), "reduced": ("reduced", "", "model"),
         "SSN by-shape": ("ssn", "by-shape", "model"), "SSN 4 learned groups": ("ssn", "4learned", "model"),
         "HashedNets": ("hashed", "", "model"), "soft sharing": ("soft-sharing", "", "model"),
         "SuperWeights (depth bins)": ("superweights", "bins", "model"), "hard sharing": ("hard-sharing", "", "model"),
         "ensemble (2 members, 100%)": ("ensemble", None, "ensemble"),
         "SuperWeights ensemble (50%)": ("superweights", "ens-", "ensemble")}


def test_the_guides_learning_table_quotes_the_committed_leaderboards():
    import pandas as pd

    assert "(../results/grids/architectures-cpu.md)" in GUIDE.read_text()  # the guide links the table
    text = LEARNED.read_text().split("## Shown to learn", 1)[1].split("## ", 1)[0]
    rows = {m[0].strip(): m[1:] for m in re.findall(r"^\| ([^|]+) \| ([\d.]+)[^|]* \| ([\d.]+)[^|]* \|$", text, re.M)}
    assert set(rows) == set(_ROWS)
    for col, grid in enumerate(("vit-cifar100-cpu", "densenet-cifar100-cpu")):
        cells = pd.read_csv(ROOT / "results" / "grids" / grid / "LEADERBOARD_cells.csv").fillna("")
        for name, (method, label, entity) in _ROWS.items():
            sel = cells[(cells.method == method) & (cells.entity == entity)]
            if label is not None:
                sel = sel[sel.label.str.startswith(label)] if label else sel[sel.label == ""]
            assert len(sel) == 1, (grid, name)
            assert abs(float(rows[name][col]) - float(sel.top1_mean.iloc[0])) <= 0.0051, (grid, name)
