"""Grid specs, expansion, the runner (debug and local executors), skip-done, shared phases, resume after kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from npasbench.cli import main
from npasbench.contract import BuildRequest, Phase
from npasbench.demo import DEMO_SPEC
from npasbench.errors import NPASError
from npasbench.grid import expand, load_spec, plan_grid, run_grid
from npasbench.grid.runner import grid_status, status_rows
from npasbench.grid.state import read_json
from npasbench.plugins import METHODS
from npasbench.trainer.metrics import read_jsonl

# a seconds-long run: synthetic data subset, a few steps per epoch
TINY_BASE = """
"data.synthetic_train" = 512
"data.synthetic_test" = 256
"train.epochs" = 2
"train.batch_size" = 64
"train.eval_batch_size" = 128
"train.max_steps_per_epoch" = 4
"optim.milestones_unit" = "fraction"
"optim.milestones" = [0.5]
"optim.gammas" = [0.2]
"""


def write_spec(tmp_path: Path, body: str, name: str = "g.toml", results: str | None = None) -> Path:
    res = results or str(tmp_path / "res")
    text = f'[grid]\nname = "t"\nresults = "{res}"\n\n[base]\n{TINY_BASE}\n' + textwrap.dedent(body)
    p = tmp_path / name
    p.write_text(text)
    return p


AXES = """
[axes]
archs = ["wrn-10-1"]
datasets = ["synthetic"]
budgets = ["40k", "60%"]
seeds = [0, 1]
"""


# -- expansion -------------------------------------------------------------------------------
def test_product_zip_exclude_and_star(tmp_path):
    spec = load_spec(write_spec(tmp_path, AXES + """
[[methods]]
name = "unshared"
budgets = ["full"]

[[methods]]
name = "hashed"
variants = [{}, {hash_seed = 3}]
"""))
    runs = expand(spec)
    # unshared: 1 budget x 2 seeds; hashed: 2 variants x 2 budgets x 2 seeds
    assert len(runs) == 2 + 8 and len({r.run_id for r in runs}) == 10
    assert {r.variant for r in runs if r.method == "hashed"} == {"default", "hash_seed=3"}
    hashed = [r for r in runs if r.method == "hashed" and r.budget == "60%"][0]
    assert hashed.config.model.budget == round(0.6 * 77850)
    assert all(r.run_id[:10] in r.folder and r.folder.startswith(r.method) for r in runs)
    # the variant's label names the run (run.name, read by the leaderboard), and is not part of its id
    assert {r.config.run.name for r in runs if r.method == "hashed"} == {"default", "hash_seed=3"}
    labelled = load_spec(write_spec(tmp_path, AXES + '\n[[methods]]\nname = "hashed"\nlabels = ["seed3"]\n'
                                    'variants = [{hash_seed = 3}]\n'))
    by_label = {(r.budget, r.seed): r for r in expand(labelled)}
    by_auto = {(r.budget, r.seed): r for r in runs if r.method == "hashed" and r.variant == "hash_seed=3"}
    assert {r.config.run.name for r in by_label.values()} == {"seed3"}
    assert all(by_label[k].run_id == by_auto[k].run_id for k in by_auto)

    zipped = load_spec(write_spec(tmp_path, AXES.replace("seeds = [0, 1]", "seeds = [0, 1]\nzip = [[\"budgets\", \"seeds\"]]")
                                  + '\n[[methods]]\nname = "hashed"\n'))
    assert sorted((r.budget, r.seed) for r in expand(zipped)) == [("40k", 0), ("60%", 1)]

    excl = load_spec(write_spec(tmp_path, AXES.replace("seeds = [0, 1]", 'seeds = [0, 1]\nexclude = [{budget = "60%", seed = 1}]')
                                + '\n[[methods]]\nname = "hashed"\n'))
    assert len(expand(excl)) == 3

    star = load_spec(write_spec(tmp_path, AXES + '\n[[methods]]\nname = "*"\nbudgets = ["full"]\n'))
    assert {r.method for r in expand(star, check_budgets=False)} == set(METHODS.names())


def test_ids_are_the_runs_ids(tmp_path):
    """A grid run's id is the id `npas train` computes for the same experiment."""
    from npasbench.config import build_config
    from npasbench.experiment import run_id

    spec = load_spec(write_spec(tmp_path, AXES + '\n[[methods]]\nname = "hashed"\n'))
    run = [r for r in expand(spec) if r.budget == "40k" and r.seed == 1][0]
    ov = {k: v for k, v in spec.base.items()}
    ov.update({"method.name": "hashed", "model.arch": "wrn-10-1", "model.budget": "40000", "train.seed": 1})
    assert run_id(build_config({}, ov)) == run.run_id


MALFORMED = [
    ("[grid]\nname = \"t\"\nbogus = 1\n", "grid.bogus: unknown key"),
    ("[grid]\nname = 3\n", "grid.name: expected a string"),
    ("[grid]\nname = \"a b\"\n", "grid.name"),
    ("[grid]\nname = \"t\"\n[[methods]]\nname = \"hashed\"\n", "axes: missing"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("archs = [\"wrn-10-1\"]", "archs = []") + "[[methods]]\nname=\"hashed\"\n",
     "axes.archs: is empty"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("seeds = [0, 1]", "seeds = [\"zero\"]") + "[[methods]]\nname=\"hashed\"\n",
     "axes.seeds[0]: expected integer seed"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("seeds = [0, 1]", "") + "[[methods]]\nname=\"hashed\"\n",
     "axes.seeds: missing"),
    ("[grid]\nname = \"t\"\n" + AXES, "methods: missing"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"nope\"\n", "unknown method 'nope'"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"hashed\"\nvariants = [{hash_sed = 1}]\n", "hash_sed"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"hashed\"\nvariants = {}\n", "variants must be a non-empty list"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"hashed\"\ncolour = 1\n", "methods[0].colour: unknown key"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("\"40k\", \"60%\"", "\"40k\", \"40000\"") + "[[methods]]\nname = \"hashed\"\n",
     "two entries expand to the same run"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("\"40k\", \"60%\"", "\"100\"") + "[[methods]]\nname = \"ssn\"\n",
     "a budget the method cannot represent"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("\"40k\", \"60%\"", "\"lots\"") + "[[methods]]\nname = \"hashed\"\n",
     "model.budget"),
    ("[grid]\nname = \"t\"\n" + AXES + "zip = [[\"archs\", \"seeds\"]]\n[[methods]]\nname = \"hashed\"\n",
     "zipped axes need equal lengths"),
    ("[grid]\nname = \"t\"\n" + AXES + "exclude = [{colour = \"red\"}]\n[[methods]]\nname = \"hashed\"\n",
     "unknown key 'colour'"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"hashed\"\n[resources]\ngpus_per_run = \"one\"\n",
     "resources.gpus_per_run: expected a int"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"hashed\"\n[resources]\ntime_min = 0\n",
     "resources.time_min: must be >= 1"),
    ("[grid]\nname = \"t\"\n" + AXES + "[[methods]]\nname = \"hashed\"\nbudget_mode = \"max_params\"\n",
     "model.budget_mode"),
    ("[grid]\nname = \"t\"\n" + AXES.replace("wrn-10-1", "wrn-11-1") + "[[methods]]\nname = \"hashed\"\n", "wrn-11-1"),
    ("[grid\nname = \"t\"\n", "not valid TOML"),
    ("[grid]\nname = \"t\"\n" + AXES + "exclude = [{seed = 0}, {seed = 1}]\n[[methods]]\nname = \"hashed\"\n",
     "the grid is empty"),
    ("[grid]\nname = \"t\"\nbase_config = \"missing.toml\"\n" + AXES + "[[methods]]\nname = \"hashed\"\n",
     "grid.base_config: no such file"),
]


@pytest.mark.parametrize("text, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_specs_are_clear_errors(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text.replace('name = "t"\n', f'name = "t"\nresults = "{tmp_path / "res"}"\n', 1))
    with pytest.raises(NPASError) as info:
        expand(load_spec(p))
    msg = str(info.value)
    assert message in msg and str(p) in msg
    assert "\n" not in msg.strip() or "TOML" in msg
    assert not (tmp_path / "res").exists()  # nothing written


def test_error_names_the_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[grid]\nname = "t"\n' + AXES + '[[methods]]\nname = "hashed"\nvariants = [{hash_sed = 1}]\n')
    with pytest.raises(NPASError, match=r"line (\d+)") as info:
        expand(load_spec(p))
    line = int(str(info.value).split(" line ")[1].split(":")[0])
    assert "hash_sed" in p.read_text().splitlines()[line - 1]


def test_demo_spec_plans(tmp_path, capsys):
    assert main(["grid", "plan", str(DEMO_SPEC), "--results", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert f"| {name}" in out
    assert "not started" in out and "| est. GPU-h" in out and "estimated compute:" in out and "25 sustained TFLOP/s" in out
    assert not (tmp_path / "d").exists() and "nothing written (--save writes grid.json)" in out  # planning writes nothing
    assert main(["grid", "plan", str(DEMO_SPEC), "--results", str(tmp_path / "d"), "--save"]) == 0
    manifest = json.loads((tmp_path / "d" / "grid.json").read_text())
    assert manifest["spec"] == "benchmark/grid/demo.toml"  # relative to the repository: the same on every checkout


# -- running --------------------------------------------------------------------------------
GRID = """
[axes]
archs = ["wrn-10-1"]
datasets = ["synthetic"]
budgets = ["40k"]
seeds = [0, 1]

[[methods]]
name = "unshared"
budgets = ["full"]

[[methods]]
name = "hashed"
"""


def _records(results: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(results.rglob("result.json")):
        rec = json.loads(p.read_text())
        out[rec["run_id"]] = rec
    return out


def test_debug_grid_runs_then_skips_done(tmp_path, capsys):
    spec = write_spec(tmp_path, GRID)
    out = run_grid(spec, "debug", progress=False)
    assert out.ok and out.counts["done"] == 4
    recs = _records(tmp_path / "res")
    assert len(recs) == 4 and all(r["status"] == "completed" for r in recs.values())
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("result.json")}
    again = run_grid(spec, "debug", progress=True)
    assert again.counts["done"] == 4
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("result.json")} == mtimes  # cache hits
    assert "4 already finished, 0 to run" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "res" / "grid.json").read_text())
    assert len(manifest["launches"]) == 2 and manifest["launches"][0]["executor"] == "debug"
    assert main(["grid", "status", str(spec)]) == 0
    assert "4 runs: 4 done" in capsys.readouterr().out


def test_failed_run_is_reported_and_retried(tmp_path, capsys):
    body = GRID.replace('[[methods]]\nname = "unshared"\nbudgets = ["full"]\n', "")
    spec = write_spec(tmp_path, body.replace('datasets = ["synthetic"]', 'datasets = ["cifar10"]'))
    # cifar10 without data: the run fails at load time (not at plan time: planning reads no data)
    text = spec.read_text() + '\n[notes]\nhashed = "x"\n'
    spec.write_text(text.replace("[base]\n", f'[base]\n"data.root" = "{tmp_path / "nodata"}"\n'))
    out = run_grid(spec, "debug", progress=False)
    assert out.counts["failed"] == 2 and not out.ok
    rows, counts = status_rows(plan_grid(spec, write=False))
    assert all(r["state"] == "failed" and "cifar" in r["detail"].lower() for r in rows)
    failed = read_json(tmp_path / "res" / rows[0]["run"] / "failed.json")
    assert "Traceback" in failed["traceback"]
    # a failed run is never a cache hit: the next invocation tries again
    again = run_grid(spec, "debug", progress=False)
    assert again.counts["failed"] == 2
    assert len(json.loads((tmp_path / "res" / "grid.json").read_text())["launches"]) == 2


def test_shared_ssn_search_runs_once_and_matches_in_run(tmp_path):
    """SSN's group search ignores the budget: one phase job serves both budgets, and its artifact is
    the one a plain `npas train` computes inside the run."""
    body = GRID.replace("seeds = [0, 1]", "seeds = [0]").replace('budgets = ["40k"]', 'budgets = ["40k", "30k"]')
    body = body.replace('[[methods]]\nname = "unshared"\nbudgets = ["full"]\n', "").replace(
        'name = "hashed"', 'name = "ssn"\nvariants = [{param_groups = 2, search_epochs = 1, search_milestones = [], '
                           'search_gammas = [], search_steps_per_epoch = 3}]')
    spec = write_spec(tmp_path, body)
    plan = plan_grid(spec, write=True)
    assert len(plan.manifest.phases) == 1 and len(plan.runs) == 2
    out = run_grid(spec, "debug", progress=False)
    assert out.ok and out.counts["done"] == 2
    shared = json.loads(next((tmp_path / "res" / "phases").glob("ssn-search-*.json")).read_text())
    sources = [json.loads((tmp_path / "res" / r.folder / "artifacts" / "search.json").read_text()) for r in plan.runs]
    assert all(s["source"].startswith("shared") and s["artifact"] == shared["artifact"] for s in sources)

    from npasbench.config import build_config
    from npasbench.trainer import train

    alone = build_config(plan.runs[0].config.to_dict(), {"run.out": str(tmp_path / "alone"), "run.phase_dir": ""})
    res = train(alone)
    inrun = json.loads((res.run_dir / "artifacts" / "search.json").read_text())
    assert inrun["source"] == "run" and inrun["artifact"] == shared["artifact"]


def test_failed_phase_blocks_its_runs(tmp_path):
    from npasbench.baselines.unshared import Unshared

    class BrokenPhase(Unshared):
        def phases(self, request: BuildRequest) -> list[Phase]:
            def boom(ctx):
                raise RuntimeError("search exploded on purpose")
            return [Phase("search", "always fails", boom)]

        def phase_inputs(self, phase, experiment):
            return {"arch": experiment["model"]["arch"], "seed": experiment["train"]["seed"]}

    METHODS.add("broken-phase", BrokenPhase)
    try:
        body = GRID.replace('[[methods]]\nname = "unshared"\nbudgets = ["full"]\n', "").replace(
            'name = "hashed"', 'name = "broken-phase"\nbudgets = ["full"]')
        spec = write_spec(tmp_path, body)
        out = run_grid(spec, "debug", progress=False)
        assert out.counts["blocked"] == 2 and not out.ok
        rows, _ = status_rows(plan_grid(spec, write=False))
        assert all(r["state"] == "blocked" and "search exploded on purpose" in r["detail"] for r in rows)
        assert not list((tmp_path / "res").rglob("result.json"))
    finally:
        METHODS.remove("broken-phase")


def test_one_runner_per_results_folder(tmp_path):
    from npasbench.grid.runner import RunnerLock

    spec = write_spec(tmp_path, GRID)
    plan_grid(spec, write=True)
    with RunnerLock(tmp_path / "res"):
        with pytest.raises(NPASError, match=r"`npas grid run` \(pid \d+ on .*\) holds this results folder"):
            run_grid(spec, "debug", progress=False)


def test_task_refuses_a_second_writer(tmp_path, monkeypatch):
    import npasbench.grid.task as task_mod
    from npasbench.grid.task import EXIT_BUSY, run_task
    from npasbench.storage import folder_lock

    spec = write_spec(tmp_path, GRID)
    plan = plan_grid(spec, write=True)
    r = plan.runs[0]
    monkeypatch.setattr(task_mod, "TASK_LOCK_WAIT_S", 0.5)
    with folder_lock(tmp_path / "res" / r.folder):
        t0 = time.monotonic()
        assert run_task(tmp_path / "res", r.run_id) == EXIT_BUSY
        assert time.monotonic() - t0 < 10


# -- a whole grid killed and restarted (local executor, real processes) ------------------------
KILL_GRID = GRID.replace('budgets = ["40k"]', 'budgets = ["40k", "30k"]').replace("seeds = [0, 1]", "seeds = [0]")


def _run_cli(spec: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "npasbench.cli", "grid", "run", str(spec), "--results", str(results),
                             "-j", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_the_runner_mid_grid_and_restart(tmp_path):
    spec = write_spec(tmp_path, KILL_GRID.replace("[[methods]]\nname = \"hashed\"",
                                                  "[[methods]]\nname = \"hashed\"\noverrides = {\"train.epochs\" = 6}"))
    ref = tmp_path / "uninterrupted"
    p = _run_cli(spec, ref)
    assert p.wait(timeout=600) == 0, p.stdout.read()
    expected = _records(ref)
    assert len(expected) == 3

    res = tmp_path / "killed"
    p = _run_cli(spec, res)
    deadline = time.monotonic() + 300
    # kill -9 once a run has finished and another has checkpointed part of its epochs
    while time.monotonic() < deadline:
        done = list(res.rglob("result.json"))
        ckpts = [c for c in res.rglob("ckpt-*.pt") if not (c.parent.parent / "result.json").exists()]
        if done and ckpts:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the grid never reached a kill point")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # the kernel sent the orphaned tasks SIGTERM (PR_SET_PDEATHSIG): they checkpoint, exit and unmark themselves
    deadline = time.monotonic() + 60
    while list(res.rglob("running.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(res.rglob("running.json"))  # a task stopped in set-up unmarks itself too (task.Stopped)
    states = [json.loads(f.read_text())["status"] for f in res.rglob("result.json")]
    partial = states.count("completed")
    assert 1 <= partial < 3
    p2 = _run_cli(spec, res)
    log = p2.communicate(timeout=600)[0]
    assert p2.returncode == 0, log
    launches = json.loads((res / "grid.json").read_text())["launches"]
    assert [l["runs"] for l in launches] == [3, 3 - partial]  # finished runs were skipped
    got = _records(res)
    assert set(got) == set(expected)
    for rid, rec in got.items():
        assert rec["metrics"]["top1"] == expected[rid]["metrics"]["top1"], rid
        assert rec["metrics"]["loss"] == expected[rid]["metrics"]["loss"], rid
        lines = read_jsonl(res / Path(rec["config"]["run"]["out"]).name / "metrics.jsonl")
        assert sum(1 for l in lines if l["kind"] == "train") == rec["epochs"]  # nothing counted twice
        assert sum(1 for l in lines if l["kind"] == "final") == 1
    assert any(rec["resumed_from"] for rec in got.values())


def test_ctrl_c_checkpoints_the_running_tasks(tmp_path):
    """SIGINT to the runner (a terminal's Ctrl-C reaches only it: tasks run in their own session): it sends
    its tasks SIGTERM, they checkpoint and record `preempted`, and the next `grid run` finishes them."""
    spec = write_spec(tmp_path, KILL_GRID.replace("[[methods]]\nname = \"hashed\"",
                                                  "[[methods]]\nname = \"hashed\"\noverrides = {\"train.epochs\" = 20}"))
    res = tmp_path / "res"
    p = _run_cli(spec, res)
    deadline = time.monotonic() + 300
    # stop while a run is well inside its training loop (epoch <= 10 of 20), where SIGTERM means a checkpoint
    while time.monotonic() < deadline and not [c for c in res.rglob("ckpt-e0000[1-9]-*.pt")
                                               if not (c.parent.parent / "result.json").exists()]:
        time.sleep(0.05)
    # status while the grid runs: read from the folders and the manifest, never waiting on the runner
    t0 = time.monotonic()
    rows, counts = grid_status(spec)
    assert time.monotonic() - t0 < 5 and counts["running"] >= 1 and sum(counts.values()) == 3
    p.send_signal(signal.SIGINT)
    log = p.communicate(timeout=180)[0]
    assert p.returncode == 130, log
    assert "interrupted: run again to resume" in log
    states = [json.loads(f.read_text())["status"] for f in res.rglob("result.json")]
    assert "preempted" in states and not list(res.rglob("running.json"))
    p2 = _run_cli(spec, res)
    assert p2.wait(timeout=600) == 0
    recs = _records(res)
    assert len(recs) == 3 and all(r["status"] == "completed" for r in recs.values())


def test_sigterm_during_set_up_stops_the_task_cleanly(tmp_path):
    """A signal between the task's start and the training loop (data, model, phases) is a clean, resumable
    stop (exit 75): no failed.json, no stale running.json, and the next start runs the experiment."""
    from npasbench.grid.task import EXIT_PREEMPTED

    spec = write_spec(tmp_path, GRID)
    plan = plan_grid(spec, write=True)
    r = plan.runs[0]
    marker = tmp_path / "res" / r.folder / "running.json"
    for _attempt in range(3):
        p = subprocess.Popen([sys.executable, "-m", "npasbench.grid.task", str(tmp_path / "res"), r.run_id],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)  # set-up has just begun (running.json is written before it)
        out = p.communicate(timeout=60)[0]
        if p.returncode != 0:
            break
        # on a loaded machine this process may see the marker only after the tiny run has trained: the signal
        # then came after training (a finished run stays finished), not during set-up; start over and try again
        shutil.rmtree(tmp_path / "res" / r.folder)
    assert p.returncode == EXIT_PREEMPTED, out
    assert not marker.exists() and not (tmp_path / "res" / r.folder / "failed.json").exists()
    assert run_grid(spec, "debug", progress=False).counts["done"] == 4


@pytest.mark.parametrize("where", ["after running.json", "waiting for the lock"])
def test_a_signal_outside_training_is_a_clean_stop(tmp_path, monkeypatch, where):
    """The window CI once hit: SIGTERM right after running.json was renamed into place (still inside the
    atomic write, before the training's own try). A real signal is raised at that moment, in-process."""
    from npasbench import run_folder
    from npasbench.grid import task as grid_task
    from npasbench.grid.manifest import Manifest

    spec = write_spec(tmp_path, GRID)
    plan = plan_grid(spec, write=True)
    r = plan.runs[0]
    res = tmp_path / "res"
    Manifest.load(res)  # planned
    real_write = run_folder.write_json  # the markers are written by RunFolder
    real_lock = grid_task.folder_lock

    def write_then_signal(path, obj):
        real_write(path, obj)
        if Path(path).name == "running.json":
            signal.raise_signal(signal.SIGTERM)

    def lock_then_signal(*a, **k):
        signal.raise_signal(signal.SIGTERM)
        return real_lock(*a, **k)

    if where == "after running.json":
        monkeypatch.setattr(run_folder, "write_json", write_then_signal)
    else:
        monkeypatch.setattr(grid_task, "folder_lock", lock_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    assert grid_task.run_task(res, r.run_id) == grid_task.EXIT_PREEMPTED
    assert signal.getsignal(signal.SIGTERM) == previous  # the task's handlers are gone again
    assert not (res / r.folder / "running.json").exists() and not (res / r.folder / "failed.json").exists()


def test_progress_lines_in_a_log(tmp_path):
    """Not a terminal: one line per event and, periodically, the current runs with their epochs."""
    import io

    from npasbench.grid.executors import Running, Task
    from npasbench.grid.runner import Progress

    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "metrics.jsonl").write_text('{"kind": "train", "epoch": 1}\n{"kind": "eval", "epoch": 1}\n'
                                                   '{"kind": "train", "epoch": 2}\n')
    stream = io.StringIO()
    bar = Progress(total=5, done=2, enabled=True, stream=stream)
    bar.LOG_EVERY_S = 0.0
    bar.event("start  r1")
    bar.advance()
    bar.refresh([Running(Task("id1", "r1", tmp_path / "log"), 0.0, 0)], tmp_path, {"id1": "r1"}, {"id1": 7})
    bar.close()
    assert stream.getvalue().splitlines() == ["start  r1", "[3/5 done] running: r1 epoch 2/7"]


def test_bad_executor_writes_nothing(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, GRID)
    with pytest.raises(NPASError, match="--executor: 'kubernetes' is not an executor here.*slurm.*npas grid submit SPEC"):
        run_grid(spec, "kubernetes", progress=False)
    assert not (tmp_path / "res").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no SLURM here: the slurm executor says so, writes nothing
    with pytest.raises(NPASError, match="scontrol is not on PATH"):
        run_grid(spec, "slurm", progress=False)
    assert not (tmp_path / "res").exists()
    with pytest.raises(NPASError, match="runs at once must be >= 1"):
        run_grid(spec, "local", parallel=-1, progress=False)
    assert not (tmp_path / "res").exists()


def test_a_bad_variant_value_points_at_its_key_not_at_a_comment(tmp_path: Path):
    spec = tmp_path / "bad.toml"
    spec.write_text(textwrap.dedent(f"""\
        # hashed: a hash_seed = 0 default; the comment names the key before the key itself
        [grid]
        name = "bad"
        results = "{tmp_path / 'res'}"

        [axes]
        archs = ["wrn-10-1"]
        datasets = ["synthetic"]
        budgets = ["50%"]
        seeds = [0]

        [[methods]]
        name = "unshared"
        budgets = ["full"]

        [[methods]]
        name = "hashed"  # hash_seed below
        variants = [{{}}, {{hash_seed = "x"}}]
        """))
    with pytest.raises(NPASError) as e:
        expand(load_spec(spec), check_budgets=False)
    text = str(e.value)
    assert f"grid spec {spec} line 18:" in text
    assert "method.options.hash_seed: expected int, got 'x'" in text and "method.options(" not in text
