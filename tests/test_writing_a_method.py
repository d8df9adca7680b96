"""docs/writing-a-method.md runs: its example package is installed (into a folder of the test's own, from a copy, so
the test can edit it) and every command the guide shows is run, in order, as a new user would; the README's and the
guide's code blocks are that package's code, verbatim. Then the package's code changes and the grid sees it: the
finished runs are stale, kept with --keep-stale, mixed code is flagged on the leaderboard, and a plain `grid run`
trains them again with the old run moved aside."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "npas_lowrank"
GUIDE = ROOT / "docs" / "writing-a-method.md"


def _blocks(text: str, lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"```{lang}\n(.*?)```", text, re.S)]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end > 0 else None]


def test_readme_and_guide_show_the_example_verbatim():
    source = (EXAMPLE / "npas_lowrank" / "method.py").read_text()
    project = (EXAMPLE / "pyproject.toml").read_text()
    readme = _section((ROOT / "README.md").read_text(), "## Use 2: add a method")
    guide = GUIDE.read_text()
    shown = [(b, source) for t in (readme, guide) for b in _blocks(t, "python")]
    shown += [(b, project) for t in (readme, guide) for b in _blocks(t, "toml")]
    assert len(shown) >= 5
    for block, origin in shown:
        assert block in origin, f"a code block of the docs is not the example's code:\n{block}"
    assert "make_provider" not in readme and "shared={...}" not in readme  # the old snippet that did not run


def test_example_method_is_small_and_uses_only_the_sdk():
    source = (EXAMPLE / "npas_lowrank" / "method.py").read_text()
    imports = {m.group(1) for m in re.finditer(r"^from (npasbench[\w.]*) import", source, re.M)}
    assert imports == {"npasbench"} and "from npasbench import sdk" in source
    assert len(source.splitlines()) <= 80  # the guide says how many
    assert f"It has {len(source.splitlines())} lines" in GUIDE.read_text()


def _install(site: Path, copy: Path) -> None:
    """The guide's `pip install ./docs/examples/npas_lowrank`, into ``site`` (no network: the suite is installed)."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", str(site), str(copy)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _run(line: str, cwd: Path, env: dict) -> str:
    args = shlex.split(line)
    assert args[0] == "npas", line
    r = subprocess.run([sys.executable, "-m", "npasbench.cli", *args[1:]], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _records(results: Path, method: str) -> dict[int, dict]:
    out = {}
    for path in sorted(results.glob(f"{method}_*/result.json")):
        rec = json.loads(path.read_text())
        out[rec["seed"]] = rec
    return out


def test_the_guide_runs_and_results_know_their_code(tmp_path: Path):
    work = tmp_path / "clone"  # the commands' paths are relative to a checkout: a copy of what they read
    copy = work / "docs" / "examples" / "npas_lowrank"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (str(site), os.environ.get("PYTHONPATH")) if x)}
    run_block, change_block = _blocks(GUIDE.read_text(), "bash")
    lines = [x.strip() for x in run_block.splitlines() if x.strip()]
    assert lines[0] == "pip install ./docs/examples/npas_lowrank"
    _install(site, copy)
    out = {}
    for line in lines[1:]:
        words = line.split()
        out[" ".join(words[1:3]) if words[1] == "grid" else words[1]] = _run(line, work, env)
    assert re.search(r"lowrank +\[package:npas-lowrank \(npas_lowrank\.method:LowRank\)\]", out["methods"])
    assert "rank of every layer's U V" in out["methods"]
    assert re.search(r"lowrank wrn-16-4 on cifar100: [\d,]+ unique", out["params"]) and "utilisation 9" in out["params"]
    assert (work / "runs" / "lowrank-try" / "result.json").is_file()
    assert "6 runs: 6 done" in out["grid run"] and "6 finished runs in 3 cells" in out["grid collect"]
    results = work / "runs" / "lowrank-example"
    board = (results / "LEADERBOARD.md").read_text()
    assert "lowrank" in board and "unshared" in board and "mixed method code" not in board
    first = _records(results, "lowrank")
    code = first[0]["method_code"]
    assert code["distribution"] == "npas-lowrank" and code["version"] == "0.1.0" and code["git_sha"] is None
    assert code["files"] == ["npas_lowrank.method"] and code["digest"].startswith("sha256:")
    assert code["source"].startswith("package:npas-lowrank")
    unshared = next(iter(_records(results, "unshared").values()))["method_code"]
    assert unshared["distribution"] == "npasbench" and unshared["files"] == ["npasbench.baselines.unshared"]
    assert unshared["git_sha"] == json.loads((results / next(results.glob("unshared_*")).name / "result.json")
                                             .read_text())["git"]["sha"]

    # the method's code changes (as an author edits and reinstalls it): its finished runs are stale
    installed = site / "npas_lowrank" / "method.py"
    installed.write_text(installed.read_text().replace("(2.0 / fan_in) ** 0.5", "(1.0 / fan_in) ** 0.5"))
    status, keep, again = [x.strip() for x in change_block.splitlines() if x.strip()]
    text = _run(status, work, env)
    assert "2 stale" in text and "4 done" in text and "method code changed: lowrank 0.1.0" in text
    text = _run(keep, work, env)
    assert "6 already finished, 0 to run" in text
    assert _records(results, "lowrank")[1]["created_at"] == first[1]["created_at"]  # kept as it was

    # one seed made by the new code beside one by the old: the cell says it mixes code
    shutil.rmtree(next(results.glob("lowrank_*_s1_*")))
    _run(keep, work, env)
    board = _run("npas grid collect docs/examples/npas_lowrank/grid.toml", work, env)
    board = (results / "LEADERBOARD.md").read_text()
    assert re.search(r"mixed method code \(0\.1\.0 [0-9a-f]{8}, 0\.1\.0 [0-9a-f]{8}\)", board)

    text = _run(again, work, env)
    assert "1 to run (1 stale" in text and "6 runs: 6 done" in text
    now = _records(results, "lowrank")
    assert now[0]["method_code"]["digest"] == now[1]["method_code"]["digest"] != code["digest"]
    assert now[0]["run_id"] == first[0]["run_id"]  # the run id is the experiment's, not the code's
    run0 = next(results.glob("lowrank_*_s0_*"))
    (old,) = (run0 / "superseded").iterdir()
    assert json.loads((old / "result.json").read_text())["created_at"] == first[0]["created_at"]
    assert (old / "checkpoints").is_dir() and (old / "metrics.jsonl").is_file()
    history = [json.loads(x) for x in (run0 / "history.jsonl").read_text().splitlines()]
    assert history[0]["kind"] == "superseded" and history[0]["moved_to"] == f"superseded/{old.name}"
    _run("npas grid collect docs/examples/npas_lowrank/grid.toml", work, env)
    board = (results / "LEADERBOARD.md").read_text()
    assert "mixed method code" not in board and "6 finished runs" in board and "duplicate" not in board


@pytest.mark.parametrize("kind", ["unshared", "hard-sharing", "ssn"])
def test_in_tree_method_code_names_its_own_files(kind):
    from npasbench.method_code import method_code

    code = method_code(kind)
    assert code.distribution == "npasbench" and code.source == "in-tree" and code.git_sha
    root = {"unshared": "npasbench.baselines.", "hard-sharing": "npasbench.baselines.", "ssn": "npasbench.methods.ssn."}
    assert all(f.startswith(root[kind]) for f in code.files)
    if kind == "ssn":  # the method package's modules that method.py reaches, not the suite's shared code
        assert {"npasbench.methods.ssn.method", "npasbench.methods.ssn.search"} <= set(code.files)


def test_supersede_finishes_a_move_that_a_crash_cut_short(tmp_path: Path):
    from npasbench.grid.supersede import superseded_folder, supersede

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-e00001-s000000008.pt").write_bytes(b"x")
    (run / "metrics.jsonl").write_text("{}\n")
    (run / ".lock").write_text("")
    rec = {"created_at": "2026-12-06T10:00:00+00:00", "method_code": {"digest": "sha256:abcdef0123"}}
    (run / "result.json").write_text(json.dumps(rec))
    target = superseded_folder(run, rec)
    assert target == run / "superseded" / "20261206T1000000000-abcdef01"
    target.mkdir(parents=True)
    os.replace(run / "checkpoints", target / "checkpoints")  # the crash: moved the checkpoints, not the rest
    assert supersede(run, rec, "method code changed") == target
    assert sorted(p.name for p in run.iterdir()) == [".lock", "history.jsonl", "superseded"]
    assert sorted(p.name for p in target.iterdir()) == ["checkpoints", "metrics.jsonl", "result.json"]
