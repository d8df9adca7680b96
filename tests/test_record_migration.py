"""Records of every earlier schema are read, migrated in the reader; a newer schema is refused by name.

The schema-1 records are real: written by this suite at commit 7feb9af (tests/data/schema1_records/README.md says
how), not made up here. The schema-2 record is a real one of a committed grid (results/grids/cifar100-cpu-v2).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from npasbench.records import SCHEMA_VERSION, Record, migrate, read_record

ROOT = Path(__file__).resolve().parents[1]
SCHEMA1 = ROOT / "tests" / "data" / "schema1_records"
SCHEMA2_GRID = ROOT / "results" / "grids" / "cifar100-cpu-v2"


def _schema1_files() -> list[Path]:
    files = sorted(SCHEMA1.glob("*/result.json"))
    assert len(files) == 6, files
    return files


@pytest.mark.parametrize("path", _schema1_files(), ids=lambda p: p.parent.name)
def test_a_schema1_record_is_migrated_not_refused(path):
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and "run_id" not in raw and "options" in raw["method"]  # really schema 1
    rec, problem = read_record(path)
    assert problem is None and isinstance(rec, Record)
    assert rec.migrated_from == 1 and rec["schema_version"] == SCHEMA_VERSION
    assert rec.run_id == raw["config_hash"] and "config_hash" not in rec  # one name for the id
    assert "options" not in rec["method"]
    assert rec["config"]["method"]["options"] == {**raw["config"]["method"]["options"], **raw["method"]["options"]}
    assert rec.top1 == raw["metrics"]["top1"] and rec.params_total == raw["params"]["total"]
    assert rec.method == raw["method"]["name"] and rec.seed == raw["seed"] and rec.path == str(path)


def test_the_leaderboard_reads_schema1_records(tmp_path):
    """`npas leaderboard` over the schema-1 records: every run is in the table, none is a problem."""
    out = tmp_path / "LEADERBOARD.md"
    r = subprocess.run([sys.executable, "-m", "npasbench.cli", "leaderboard", str(SCHEMA1), "--out", str(out),
                        "--no-plots"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "6 finished runs" in r.stdout and "problem" not in r.stdout, r.stdout
    runs = (tmp_path / "LEADERBOARD_runs.csv").read_text()
    for path in _schema1_files():
        raw = json.loads(path.read_text())
        assert raw["config_hash"] in runs  # each run, under its own id
    board = out.read_text()
    assert "record schema 1" not in board and "rerun the run" not in board


def test_a_schema1_run_reads_done_in_a_grid_folder(tmp_path):
    from npasbench.grid.state import finished_record, run_state

    src = SCHEMA1 / "unshared-s0"
    run = tmp_path / "run"
    run.mkdir()
    for f in src.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    rid = json.loads((src / "result.json").read_text())["config_hash"]
    assert finished_record(run, rid) is not None
    state, detail = run_state(run, rid)
    assert state in ("done", "stale") and (state != "done" or detail.startswith("top1"))


def test_a_schema2_record_migrates_to_the_current_schema():
    path = sorted(SCHEMA2_GRID.glob("*/result.json"))[0]
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 2 and raw["config_hash"] == raw["run_id"]
    rec, problem = read_record(path)
    assert problem is None and rec.migrated_from == 2
    assert rec.to_dict() == {k: v for k, v in {**raw, "schema_version": SCHEMA_VERSION}.items() if k != "config_hash"}


def test_a_newer_schema_is_refused_by_name(tmp_path):
    raw = json.loads(sorted(SCHEMA2_GRID.glob("*/result.json"))[0].read_text())
    path = tmp_path / "result.json"
    path.write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
    rec, problem = read_record(path)
    assert rec is None
    assert problem.problem == (f"record schema {SCHEMA_VERSION + 1} is newer than this suite reads ({SCHEMA_VERSION}); "
                               "upgrade npasbench to read it")
    assert "not one this suite knows" in migrate({"status": "completed"})[1]


def test_a_record_is_a_frozen_value():
    rec, _ = read_record(_schema1_files()[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.top1 = 99.0  # type: ignore[misc]
    metrics = rec["metrics"]
    metrics["top1"] = 99.0  # a reader's copy: the record stays as read
    assert rec["metrics"]["top1"] == rec.top1 != 99.0
    with pytest.raises(TypeError):
        rec["top1"] = 1  # type: ignore[index]


def test_a_checkpoint_and_an_artifact_written_before_schema3_still_load(tmp_path):
    """A preempted run of the earlier suite resumes: its checkpoint and phase artifact name the id config_hash."""
    from npasbench.trainer.checkpoint import load_checkpoint
    from npasbench.trainer.phase import read_artifact
    from npasbench.trainer.state import CHECKPOINT_KEYS, FORMAT_VERSION

    payload = {k: 0 for k in CHECKPOINT_KEYS if k != "run_id"}
    payload.update(format_version=FORMAT_VERSION, config_hash="abc123")
    torch.save(payload, tmp_path / "ckpt-e1-s4.pt")
    assert load_checkpoint(tmp_path / "ckpt-e1-s4.pt", "abc123")["run_id"] == "abc123"
    (tmp_path / "search.json").write_text(json.dumps({"config_hash": "abc123", "artifact": {"groups": [1]}}))
    assert read_artifact(tmp_path / "search.json", "run_id", "abc123") == {"groups": [1]}
    assert read_artifact(tmp_path / "search.json", "run_id", "other") is None


def test_no_module_but_the_run_folder_spells_its_file_names():
    """RunFolder owns the names: a module that writes "result.json" (or any other run-folder name) by hand fails."""
    from npasbench.perf.structure import RUN_FOLDER_NAMES, modules, string_literals

    spelled = {str(p.relative_to(ROOT)): n for p in modules().values()
               if (n := string_literals(p, RUN_FOLDER_NAMES))
               and p.name not in ("run_folder.py", "structure.py") and p != ROOT / "benchmark" / "storage.py"}
    assert spelled == {}
