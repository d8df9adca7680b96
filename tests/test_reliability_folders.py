"""Reliability, part 2: grids and leaderboards over damaged, hostile or shared results folders.

Real files, FIFOs and devices, real processes: a record that is wrong below its top level is one problem
line naming the field (never a crash, never averaged); a FIFO, a device or a huge file is never read; a
planted code snapshot is never reused; a run folder in grid.json outside the results folder is refused;
binary, non-UTF-8 or absurdly nested TOML is one line naming the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npasbench.errors import ConfigError, NPASError
from npasbench.leaderboard import build_leaderboard, collect
from npasbench.reading import RECORD_CAP, UnreadableFile, read_capped
from npasbench.records import FIELDS, field_problem, read_json_object, read_record

from test_leaderboard import make_record, write


# -- readers open only regular files, under a cap ------------------------------------------------------
def test_a_fifo_is_never_read(tmp_path: Path):
    fifo = tmp_path / "run" / "result.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    t0 = time.monotonic()
    rec, problem = read_record(fifo)
    assert rec is None and problem is not None and "a FIFO" in problem.problem
    assert read_json_object(fifo) is None
    assert time.monotonic() - t0 < 5  # a plain open() would wait for a writer forever


def test_a_device_and_a_huge_file_are_never_read(tmp_path: Path):
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "result.json").symlink_to("/dev/zero")
    rec, problem = read_record(tmp_path / "zero" / "result.json")
    assert rec is None and "a character device" in problem.problem
    big = tmp_path / "big" / "result.json"
    big.parent.mkdir()
    with big.open("wb") as fh:  # sparse: 17 MiB on paper, nothing on disk
        fh.truncate(RECORD_CAP + 2**20)
    rec, problem = read_record(big)
    assert rec is None and "above the 16 MiB" in problem.problem
    with pytest.raises(UnreadableFile, match="a folder"):
        read_capped(tmp_path, 100)


def test_status_and_leaderboard_do_not_block_on_a_fifo(tmp_path: Path):
    """The commands as a user runs them, in a real process, with a FIFO where a record should be."""
    spec = tmp_path / "g.toml"
    spec.write_text(f'[grid]\nname = "f"\nresults = "{tmp_path / "res"}"\n[base]\n"data.name" = "synthetic"\n'
                    '"train.epochs" = 1\n[axes]\narchs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["full"]\n'
                    'seeds = [0]\n[[methods]]\nname = "unshared"\n')
    from npasbench.grid.runner import plan_grid

    plan = plan_grid(spec, write=True)
    folder = plan.results / plan.runs[0].folder
    folder.mkdir(parents=True)
    os.mkfifo(folder / "result.json")
    for args in (["grid", "status", str(spec)], ["leaderboard", str(tmp_path / "res"), "--out",
                                                   str(tmp_path / "board" / "LB.md"), "--no-plots"]):
        r = subprocess.run([sys.executable, "-m", "npasbench.cli", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "npasbench.cli", "grid", "status", str(spec)], capture_output=True,
                       text=True, timeout=120)
    assert "bad record" in r.stdout and "a FIFO" in r.stdout
    assert "a FIFO, not a regular file" in (tmp_path / "board" / "LB.md").read_text()


# -- the record schema: every field a reader uses --------------------------------------------------------
BAD_FIELDS = [
    ("seed", None, "seed is missing"),
    ("seed", "1", "seed should be an integer"),
    ("params.total", "77850", "params.total"),
    ("metrics.top1", "95.5", "metrics.top1 should be a number, not \"95.5\""),
    ("metrics.top5", [1], "metrics.top5"),
    ("metrics.members", {"a": 1}, "metrics.members should be a list of objects"),
    ("members", "wrn-10-1", "members should be a list of strings"),
    ("budget", [40000], "budget should be an object"),
    ("budget.params", 0, "budget.params should be an integer >= 1"),
    ("params.flops.total", "many", "params.flops.total"),
    ("params.flops.total", float("inf"), "params.flops.total should be a finite number"),
    ("params.flops.per_member", [1, "x"], "params.flops.per_member"),
    ("dataset", "cifar100", "without dataset"),
    ("dataset.name", 100, "dataset.name"),
    ("timing.train_s", "3600", "timing.train_s"),
    ("timing.train_s", 1e400, "timing.train_s"),
    ("world_size", 0, "world_size"),
    ("git.dirty", "no", "git.dirty should be true or false"),
    ("config.method.options", [], "config.method.options"),
    ("hardware.device", 0, "hardware.device"),
]


def _set(rec: dict, dotted: str, value) -> dict:
    node = rec
    *parents, last = dotted.split(".")
    for p in parents:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
    node[last] = value
    return rec


@pytest.mark.parametrize("dotted,value,message", BAD_FIELDS, ids=[f"{d}={v!r}" for d, v, _ in BAD_FIELDS])
def test_a_wrong_nested_field_is_one_problem_naming_it(tmp_path: Path, dotted, value, message):
    write(tmp_path, "good", make_record(seed=1, top1=50.0))
    path = write(tmp_path, "bad", json.dumps(_set(make_record(seed=0, top1=99.0), dotted, value)))
    rec, problem = read_record(path)
    assert rec is None and message in problem.problem, problem
    out = tmp_path / "board" / "LB.md"
    build_leaderboard([tmp_path], out, "test", plots=False)  # never a crash
    text = out.read_text()
    assert message.split(" ")[-1 if message.startswith("without") else 0] in text and "99.0" not in text  # named, and never averaged in


def test_a_member_of_the_wrong_shape_is_named(tmp_path: Path):
    rec = make_record("ensemble", members=["a", "b"])
    rec["metrics"]["members"][1]["top1"] = "high"
    assert field_problem(rec) == 'metrics.members[1].top1 should be a number, not "high"'
    rec = make_record("ensemble", members=["a", "b"])
    rec["params"]["flops"]["per_member"] = [1, 2, 3]
    assert "per_member lists 3 members" in field_problem(rec)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "null"])
def test_a_metric_that_is_not_finite_is_flagged_and_left_out_of_the_mean(tmp_path: Path, token):
    for seed, top1 in enumerate((50.0, 52.0)):
        write(tmp_path, f"ok{seed}", make_record(seed=seed, top1=top1))
    text = json.dumps(make_record(seed=2, top1=1.0)).replace('"top1": 1.0', f'"top1": {token}')
    write(tmp_path, "odd", text)
    from npasbench.leaderboard.aggregate import aggregate
    from npasbench.leaderboard.tidy import tidy_rows

    cells = aggregate(tidy_rows(collect([tmp_path]).records))
    cell = next(c for c in cells if c.key["entity"] == "model")
    assert cell.top1.n == 2 and cell.top1.mean == pytest.approx(51.0)
    assert "1 of 3 completed without a finite top-1 (left out of the mean)" in cell.flags


def test_the_writers_record_passes_the_schema(tiny):
    """The schema and the writer agree: a real run's record (trainer/record.py) has no field problem."""
    from npasbench.config import build_config
    from npasbench.trainer.loop import train

    rec = train(build_config({}, tiny)).record
    assert field_problem(rec) == ""
    for dotted, _kind, required in FIELDS:
        if required:
            node = rec
            for part in dotted.split("."):
                node = node[part]


# -- TOML the user names: one line, whatever the file is ---------------------------------------------------
@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8 text"),
    ("x = " + "[" * 5000 + "]" * 5000, "nests tables or arrays too deeply"),
    ("[train\n", "not valid TOML"),
])
def test_a_config_file_that_is_not_toml_is_one_line(tmp_path: Path, capsys, content, message):
    from npasbench.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(cfg) in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_a_spec_or_base_config_that_is_not_toml_is_one_line(tmp_path: Path, capsys):
    from npasbench.cli import main

    spec = tmp_path / "g.toml"
    spec.write_bytes(b'[grid]\nname = "\xff\xfe"\n')
    assert main(["grid", "plan", str(spec)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "base.toml").write_bytes(b"\x00\x01\x02\xff")
    spec.write_text('[grid]\nname = "g"\nbase_config = "base.toml"\n[axes]\narchs = ["wrn-10-1"]\n'
                    'datasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [0]\n[[methods]]\nname = "unshared"\n')
    assert main(["grid", "plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "grid.base_config" in err and "not UTF-8 text" in err and "Traceback" not in err


def test_non_utf8_bytes_in_metrics_do_not_stop_a_run(tiny, tmp_path: Path):
    """A foreign line of bytes in metrics.jsonl: the log is counted and truncated as bytes (no
    UnicodeDecodeError), the run trains, and the readers skip the line."""
    from npasbench.config import build_config
    from npasbench.trainer.loop import train
    from npasbench.trainer.metrics import JsonLines, read_jsonl

    log = tmp_path / "m.jsonl"
    log.write_bytes(b'{"kind": "train", "epoch": 0}\n\xff\xfe garbage \x80\n{"kind": "eval"}\n')
    lines = JsonLines(log)
    assert lines.lines == 3
    lines.truncate(2)
    assert log.read_bytes().count(b"\n") == 2 and read_jsonl(log) == [{"kind": "train", "epoch": 0}]
    cfg = build_config({}, tiny)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_bytes(b"\xff\xfe garbage \x80\n")
    assert train(cfg).status == "completed"
    assert all(isinstance(r, dict) for r in read_jsonl(out / "metrics.jsonl"))


# -- results-folder metadata is neither code nor a path ----------------------------------------------------
def test_a_changed_or_planted_snapshot_is_never_reused(tmp_path: Path):
    from npasbench.grid.code_snapshot import take_snapshot, verify

    first = take_snapshot(tmp_path)
    assert not first.reused and verify(first.path, first.digest)
    assert take_snapshot(tmp_path).reused
    for plant in (lambda p: (p / "npasbench" / "grid" / "task.py").write_text("import os; os.system('id')\n"),
                  lambda p: (p / "sitecustomize.py").write_text("print('planted')\n"),
                  lambda p: (p / "npasbench" / "__pycache__").mkdir()):
        plant(first.path)
        assert not verify(first.path, first.digest)
        again = take_snapshot(tmp_path)
        assert not again.reused and again.path == first.path and verify(again.path, again.digest)
        assert not (again.path / "sitecustomize.py").exists()
    aside = [p.name for p in (tmp_path / "code").iterdir() if p.name.startswith(".unverified-")]
    assert len(aside) == 3


@pytest.mark.parametrize("folder", ["/tmp/elsewhere", "../outside", "..", "a/b", ""])
def test_a_run_folder_outside_the_results_folder_is_refused(tmp_path: Path, folder):
    from npasbench.grid.manifest import Manifest
    from npasbench.grid.runner import plan_grid
    from npasbench.grid.task import run_task

    spec = tmp_path / "g.toml"
    spec.write_text(f'[grid]\nname = "f"\nresults = "{tmp_path / "res"}"\n[base]\n"data.name" = "synthetic"\n'
                    '"train.epochs" = 1\n[axes]\narchs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["full"]\n'
                    'seeds = [0]\n[[methods]]\nname = "unshared"\n')
    plan = plan_grid(spec, write=True)
    grid = tmp_path / "res" / "grid.json"
    d = json.loads(grid.read_text())
    rid = plan.runs[0].run_id
    d["runs"][rid]["folder"] = folder
    grid.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="is not a folder name inside the results folder"):
        Manifest.load(tmp_path / "res")
    with pytest.raises(NPASError):
        run_task(tmp_path / "res", rid)
    assert not Path("/tmp/elsewhere").exists() and not (tmp_path / "outside").exists()
    # the task as a SLURM job starts it: one line, exit status 2, nothing written outside
    r = subprocess.run([sys.executable, "-m", "npasbench.grid.task", str(tmp_path / "res"), rid], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "is not a folder name inside the results folder" in r.stderr
    assert not Path("/tmp/elsewhere").exists() and not (tmp_path / "outside").exists()


def test_a_manifest_of_the_wrong_shape_is_one_line(tmp_path: Path, capsys):
    from npasbench.grid.manifest import Manifest

    (tmp_path / "grid.json").write_text(json.dumps({"manifest_version": 1, "name": "g", "spec": "s", "spec_digest": "d",
                                                    "runs": [], "phases": {}}))
    with pytest.raises(ConfigError, match="runs should be a JSON object"):
        Manifest.load(tmp_path)
    (tmp_path / "grid.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="corrupt grid manifest"):
        Manifest.load(tmp_path)


# -- one command's outputs: all or none ----------------------------------------------------------------
def test_a_leaderboard_that_cannot_write_its_markdown_writes_nothing(tmp_path: Path, capsys):
    from npasbench.cli import main

    for seed in range(2):
        write(tmp_path / "runs", f"u{seed}", make_record(seed=seed, top1=50.0 + seed))
    board = tmp_path / "board"
    (board / "LB.md").mkdir(parents=True)  # a folder where the markdown should go
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(board / "LB.md")]) == 2
    err = capsys.readouterr().err
    assert "LB.md: it is a folder" in err and "Nothing was written" in err
    assert sorted(p.name for p in board.iterdir()) == ["LB.md"]  # no PNG, no CSV, no staging folder left
    (board / "LB.md").rmdir()
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(board / "LB.md")]) == 0
    names = sorted(p.name for p in board.iterdir())
    assert "LB.md" in names and "LB_runs.csv" in names and any(n.endswith(".png") for n in names)
    assert not any(n.startswith(".") for n in names)


# -- a results folder that cannot be one ---------------------------------------------------------------
GRID = ('[grid]\nname = "g"\nresults = "{results}"\n[base]\n"train.epochs" = 1\n[axes]\narchs = ["wrn-10-1"]\n'
        'datasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [0]\n[[methods]]\nname = "unshared"\n')


@pytest.mark.parametrize("results,message", [("", "grid.results: empty"), ("afile", "afile exists and is not a folder")])
def test_a_results_path_that_is_empty_or_a_file_is_one_line(tmp_path: Path, monkeypatch, capsys, results, message):
    from npasbench.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "g.toml").write_text(GRID.format(results=results))
    for args in (["plan", "g.toml", "--save"], ["run", "g.toml"], ["status", "g.toml"]):
        assert main(["grid", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "g.toml"]  # no grid.json in the working folder


def test_a_read_only_results_folder_is_one_line(tmp_path: Path, capsys):
    from npasbench.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({r.stderr.strip() or r.returncode}); this test needs root, as in CI")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True, capture_output=True)
        spec = tmp_path / "g.toml"
        spec.write_text(GRID.format(results=ro / "res"))
        for args in (["plan", str(spec), "--save"], ["run", str(spec)]):
            assert main(["grid", *args]) == 2, args
            err = capsys.readouterr().err
            assert "grid.results" in err and "Read-only file system" in err and len(err.strip().splitlines()) == 1
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_a_running_marker_of_an_unrelated_live_process_is_stale(tmp_path: Path):
    """running.json names a live pid that is not its process -- another start time (a reused pid), or a live
    process that does not hold the run folder's lock: the run is not `running`, and the status says why. The
    marker of the process that holds the lock still reads running."""
    import platform

    from npasbench.grid.state import flock_holders, process_start, run_state

    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert flock_holders(folder / ".lock") == {holder.pid}
        marker = {"host": platform.node(), "pid": other.pid, "pid_start": "another-boot:12345", "epochs": 3}
        (folder / "running.json").write_text(json.dumps(marker))
        state, detail = run_state(folder, "rid")
        assert state == "not started" and f"stale running.json (pid {other.pid}" in detail
        (folder / "running.json").write_text(json.dumps({**marker, "pid_start": process_start(other.pid)}))
        assert run_state(folder, "rid")[0] == "not started"  # alive, the right start, but not the lock's holder
        (folder / "running.json").write_text(json.dumps({**marker, "pid": holder.pid,
                                                         "pid_start": process_start(holder.pid)}))
        assert run_state(folder, "rid")[0] == "running"
    finally:
        for p in (holder, other):
            p.kill()
            p.wait()

# -- the size guard ----------------------------------------------------------------------------------
def test_a_grid_above_its_size_limit_is_refused_before_expanding(tmp_path: Path, capsys):
    from npasbench.cli import main
    from npasbench.grid.expand import grid_size
    from npasbench.grid.spec import DEFAULT_MAX_RUNS, load_spec

    spec = tmp_path / "g.toml"
    text = GRID.format(results=tmp_path / "res").replace("seeds = [0]", "seeds = [0, 1, 2]").replace(
        '[grid]\nname = "g"\n', '[grid]\nname = "g"\nmax_runs = 2\n')
    spec.write_text(text)
    assert grid_size(load_spec(spec)) == 3 and DEFAULT_MAX_RUNS == 10_000
    assert main(["grid", "plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "expands to 3 runs (before axes.exclude), above grid.max_runs = 2" in err and "--max-runs N" in err
    assert "line 3" in err  # the max_runs line
    assert main(["grid", "plan", str(spec), "--max-runs", "3"]) == 0
    assert "3 runs" in capsys.readouterr().out
    assert main(["grid", "plan", str(spec)]) == 2  # the flag held for that command only
    capsys.readouterr()
    assert main(["grid", "plan", str(spec), "--max-runs", "0"]) == 2
    assert "--max-runs: expected a whole number >= 1" in capsys.readouterr().err
    zipped = text.replace("[axes]\n", '[axes]\nzip = [["budgets", "seeds"]]\n').replace(
        'budgets = ["full"]', 'budgets = ["full", "50%", "25%"]')
    spec.write_text(zipped.replace("max_runs = 2\n", ""))
    assert grid_size(load_spec(spec)) == 3  # a zip group advances together


# -- one lock per results folder ------------------------------------------------------------------------
def test_a_second_writer_of_a_busy_results_folder_is_refused_and_readers_never_wait(tmp_path: Path, capsys):
    """`grid plan --save` (and submit) of another spec into a folder a live `grid run` uses used to rewrite its
    grid.json, so the runner's remaining tasks failed; now the writer is refused with one line naming the
    holder, a reader (`status`) answers at once, and the runner finishes every run."""
    from npasbench.cli import main

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace('"train.epochs" = 1', '"train.epochs" = 4')
                    .replace("seeds = [0]", "seeds = [0, 1]").replace('[base]\n', '[base]\n"data.name" = "synthetic"\n'))
    other = tmp_path / "other.toml"
    other.write_text(spec.read_text().replace('name = "g"', 'name = "other"'))
    runner = subprocess.Popen([sys.executable, "-m", "npasbench.cli", "grid", "run", str(spec), "-j", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "res" / "runner.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert main(["grid", "plan", str(spec), "--save"]) == 2
        err = capsys.readouterr().err
        assert "`npas grid run` (pid" in err and "holds this results folder" in err, err
        t0 = time.monotonic()
        assert main(["grid", "status", str(spec)]) == 0 and time.monotonic() - t0 < 30
        capsys.readouterr()
    finally:
        _, runner_err = runner.communicate(timeout=600)
    assert runner.returncode == 0, runner_err[-2000:]
    assert main(["grid", "status", str(spec)]) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out
    # another grid's manifest is never replaced: its runs would be orphaned
    assert main(["grid", "plan", str(other), "--save", "--results", str(tmp_path / "res")]) == 2
    assert "holds the grid 'g'" in capsys.readouterr().err
