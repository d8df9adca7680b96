"""TensorBoard event files (``run.tensorboard``): they read back as the run's metrics.jsonl, a resumed run's
read back as an uninterrupted run's (no step twice, nothing from the lost part), a grid's results folder is
one TensorBoard log dir, "on" without the package is refused before anything is written, "off" writes
nothing, and the setting is not part of the run id."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npasbench.config import build_config
from npasbench.errors import ConfigError
from npasbench.experiment import run_id
from npasbench.trainer import train
from npasbench.trainer.checkpoint import list_checkpoints
from npasbench.trainer.tensorboard import FOLDER, scalars


def _events(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard reads the run's event files (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / FOLDER), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The same from metrics.jsonl, each value rounded to float32 as an event stores it."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for tag, value in scalars(rec):
            out.setdefault(tag, []).append((rec["step"], float(np.float32(value))))
    return out


def _no_tensorboard(monkeypatch) -> None:
    """Make `import tensorboard` fail, as on a machine without the package."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)


def test_run_id_does_not_change_with_run_tensorboard():
    ref = run_id(build_config({}, {"method.name": "unshared"}))
    for mode in ("auto", "on", "off"):
        assert run_id(build_config({}, {"method.name": "unshared", "run.tensorboard": mode})) == ref, mode


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match="run.tensorboard: must be one of 'auto', 'on', 'off'"):
        build_config({}, {"run.tensorboard": "yes"})


def test_on_without_the_package_is_refused_before_anything_is_written(tiny, monkeypatch, capsys):
    from npasbench.cli import main

    _no_tensorboard(monkeypatch)
    with pytest.raises(ConfigError, match=r"run\.tensorboard.*pip install -e '\.\[tensorboard\]'"):
        train(build_config({}, {**tiny, "run.tensorboard": "on"}))
    assert not Path(tiny["run.out"]).exists()
    argv = ["train"] + [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in tiny.items()]
    assert main(argv + ["run.tensorboard=on"]) == 2
    assert "run.tensorboard" in capsys.readouterr().err and not Path(tiny["run.out"]).exists()


def test_auto_without_the_package_trains_without_events(tiny, monkeypatch):
    _no_tensorboard(monkeypatch)
    res = train(build_config({}, tiny))
    assert res.status == "completed" and not (res.run_dir / FOLDER).exists()


def test_off_writes_no_events(tiny):
    res = train(build_config({}, {**tiny, "run.tensorboard": "off"}))
    assert res.status == "completed" and not (res.run_dir / FOLDER).exists()


def test_events_are_the_metrics_lines(tiny):
    """An ensemble (per-member values in its eval and final lines): every number of metrics.jsonl is a scalar
    at the line's global step, and nothing else is."""
    pytest.importorskip("tensorboard")
    res = train(build_config({}, {**tiny, "method.name": "ensemble", "run.tensorboard": "on"}))
    assert res.status == "completed"
    got, want = _events(res.run_dir), _expected(res.run_dir)
    assert got == want  # exact: the same numbers, each rounded to float32 once (as an event stores a scalar)
    assert {"train/loss", "train/lr", "eval/top1", "eval/top5", "eval/loss", "final/top1"} <= set(got)
    members = res.record["members"]
    assert f"eval/{members[0]}/top1" in got and f"final/{members[1]}/loss" in got
    assert [s for s, _ in got["train/loss"]] == [4, 8]  # 4 steps per epoch: the global step, not the epoch


def test_resumed_run_reads_back_as_the_uninterrupted_run(tiny, tmp_path):
    """A run that lost its newest checkpoint and its record (killed after epoch 3's lines and the final test)
    resumes from epoch 2: the events of the lost lines are purged. Then the record alone is lost (the final
    line's step equals the checkpoint's): the final test is in the events once."""
    pytest.importorskip("tensorboard")
    over = {**tiny, "train.epochs": 3, "train.threads": 1}
    # exact: two runs of one config in one process at one thread (train.threads=1): the same operations on the same
    # shapes, bit-equal on any CPU (tests/test_float_portability.py); events vs metrics.jsonl: the same numbers
    ref = train(build_config({}, {**over, "run.out": str(tmp_path / "ref")}))
    run = train(build_config({}, over)).run_dir
    assert _events(run) == _events(ref.run_dir)
    (run / "result.json").unlink()
    list_checkpoints(run / "checkpoints")[-1].unlink()  # resume at the end of epoch 2 (step 8)
    again = train(build_config({}, over))
    assert again.record["resumed_from"] and again.record["metrics"] == ref.record["metrics"]
    assert len(list((run / FOLDER).iterdir())) == 2  # one event file per attempt
    got = _events(run)
    assert got == _events(ref.run_dir) == _expected(run)
    assert all(len({s for s, _ in pts}) == len(pts) for pts in got.values())  # no step twice
    (run / "result.json").unlink()
    train(build_config({}, over))  # resumes at step 12, after epoch 3's lines: writes the final line again
    assert _events(run) == _events(ref.run_dir) == _expected(run)
    assert [s for s, _ in _events(run)["final/top1"]] == [12]


def test_a_fresh_start_drops_the_events_of_the_run_started_over(tiny):
    pytest.importorskip("tensorboard")
    first = train(build_config({}, tiny))
    again = train(build_config({}, {**tiny, "run.resume": "never"}))
    assert first.run_dir == again.run_dir and len(list((again.run_dir / FOLDER).iterdir())) == 2
    assert _events(again.run_dir) == _expected(again.run_dir)


def test_the_documented_install_extras_exist():
    """README's `pip install -e '.[...]'` lines name extras that pyproject.toml defines (tensorboard among them)."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["tensorboard"] == ["tensorboard>=2.10"]
    named = [e.strip() for group in re.findall(r"pip install -e '\.\[([^\]]*)\]'", (root / "README.md").read_text())
             for e in group.split(",")]
    assert "tensorboard" in named and set(named) <= set(extras), sorted(set(named) - set(extras))
    assert "tensorboard" in (root / ".ci" / "run").read_text().split("pip install -e '.[")[1].split("]")[0]


def test_a_grid_results_folder_is_one_tensorboard_logdir(tmp_path):
    """`tensorboard --logdir results/grids/<name>` (docs/training.md): the command itself (with --inspect: the same loading,
    no server) and TensorBoard's own loader find every run of the grid in the results folder, with its curves."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.util import tensor_util

    from npasbench.cli import main

    results = tmp_path / "results" / "grids" / "g"
    spec = tmp_path / "g.toml"
    spec.write_text(f'[grid]\nname = "g"\nresults = "{results}"\n\n[base]\n"train.epochs" = 2\n'
                    '"train.max_steps_per_epoch" = 2\n"data.synthetic_train" = 256\n"data.synthetic_test" = 128\n\n'
                    '[axes]\narchs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [0, 1]\n\n'
                    '[[methods]]\nname = "unshared"\n')
    assert main(["grid", "run", str(spec), "--executor", "debug", "--no-progress"]) == 0
    folders = sorted(p.parent for p in results.rglob("metrics.jsonl"))
    assert len(folders) == 2
    command = [shutil.which("tensorboard") or sys.executable, *([] if shutil.which("tensorboard") else
                                                                ["-m", "tensorboard.main"])]
    shown = subprocess.run(command + ["--inspect", "--logdir", str(results)], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout + shown.stderr
    assert all(str(f / FOLDER) in text for f in folders) and "train/loss" in text and "eval/top1" in text
    logs = EventMultiplexer().AddRunsFromDirectory(str(results))
    logs.Reload()
    runs = logs.Runs()
    assert sorted(runs) == sorted(str((f / FOLDER).relative_to(results)) for f in folders)
    for folder in folders:
        name = str((folder / FOLDER).relative_to(results))
        # the plugin multiplexer hands the scalars to the dashboard as tensors (legacy scalars converted)
        assert [e.step for e in logs.Tensors(name, "train/loss")] == [2, 4]
        last_eval = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines() if '"eval"' in l][-1]
        value = tensor_util.make_ndarray(logs.Tensors(name, "eval/top1")[-1].tensor_proto)
        assert float(value) == float(np.float32(last_eval["top1"]))
