"""Operating a grid without a cluster: the joined run state, the run history, a dry run with no controller,
planning that writes nothing, progress lines without a bar. The same paths against a real slurmctld are in
test_slurm_cluster.py (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from npasbench.cli import main
from npasbench.grid.queue import SlurmJob, merge, submitted_tasks
from conftest import small_grid_toml
from npasbench.grid.runner import grid_status, plan_grid, run_grid
from npasbench.trainer.history import append_event, describe_checkpoint, note_start, read_history, slurm_summary

GRID = small_grid_toml("ops")


def _spec(tmp_path: Path, epochs: int = 2) -> Path:
    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res", epochs=epochs))
    return spec


# -- the joined state -------------------------------------------------------------------------------
def test_merge_names_every_job_that_holds_a_run():
    pending = SlurmJob("35_3", "PENDING", "Priority")
    running = SlurmJob("34_3", "RUNNING", node="node7", elapsed="1:02")
    gone = SlurmJob("33_3")
    assert merge("not started", "", [gone, pending]) == ("queued", "SLURM 35_3 PENDING (Priority)")
    state, detail = merge("interrupted", "resumable from epoch 2 step 114/390", [running, pending])
    assert state == "running" and "34_3 RUNNING on node7 for 1:02" in detail and "also 35_3 PENDING (Priority)" in detail
    assert "epoch 2 step 114/390" in detail
    assert merge("failed", "boom", [gone]) == ("failed", "boom")  # a job that left the queue holds nothing
    state, detail = merge("done", "top1 3.10", [pending])
    assert state == "done" and "still held by 35_3 PENDING" in detail
    assert merge("failed", "boom", [pending])[1] == "SLURM 35_3 PENDING (Priority); previous attempt failed: boom"


def test_submitted_tasks_keeps_every_submission_and_only_slurm_ids(tmp_path: Path):
    (tmp_path / "slurm.json").write_text(json.dumps({"arrays": [
        {"job_id": "34", "tasks": ["a", "b"], "task_jobs": ["34_0", "34_1"]},
        {"job_id": "35", "tasks": ["b"], "task_jobs": ["35"]},
        {"job_id": "--user=x", "tasks": ["c"], "task_jobs": ["--user=x"]},  # never reaches squeue or scancel
        "not an array"]}))
    assert submitted_tasks(tmp_path) == {"a": ["34_0"], "b": ["34_1", "35"]}


def test_status_counts_add_up_and_watch_ends_when_settled(tmp_path: Path, capsys):
    spec = _spec(tmp_path)
    assert run_grid(spec, "debug", progress=False).ok
    status = grid_status(spec, scheduler=True)
    assert sum(status.counts.values()) == len(status.rows) == 2 and status.unsettled == 0
    assert main(["grid", "status", str(spec), "--watch", "2"]) == 0  # settled: one table, no refresh
    out = capsys.readouterr().out
    assert out.count("2 runs: 2 done") == 1 and "refreshing" not in out


def test_watch_refreshes_while_a_grid_runs(tmp_path: Path):
    spec = _spec(tmp_path, epochs=6)
    runner = subprocess.Popen([sys.executable, "-m", "npasbench.cli", "grid", "run", str(spec), "-j", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "res" / "runner.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        watch = subprocess.run([sys.executable, "-m", "npasbench.cli", "grid", "status", str(spec), "--watch", "2"],
                               capture_output=True, text=True, timeout=300)
    finally:
        runner.wait(timeout=300)
    assert watch.returncode == 0, watch.stderr
    tables = watch.stdout.count("2 runs: ")
    assert tables >= 2 and "refreshing every 2 s" in watch.stdout and watch.stdout.rstrip().endswith(
        "0 not started") and "2 runs: 2 done" in watch.stdout, watch.stdout[-2000:]


# -- the history ----------------------------------------------------------------------------------
def _train_lines(folder: Path) -> int:
    try:
        return (folder / "metrics.jsonl").read_text().count('"kind": "train"')
    except OSError:
        return 0


def _start_then(results: Path, run_id: str, folder: Path, sig: int) -> int:
    """Start the run's grid task, wait until it has trained one more epoch in this process, send ``sig``."""
    n0 = len(read_history(folder))
    p = subprocess.Popen([sys.executable, "-m", "npasbench.grid.task", str(results), run_id],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(e["kind"] == "start" for e in read_history(folder)[n0:]) and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = _train_lines(folder)
    while _train_lines(folder) <= lines and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(sig)
    return p.wait(timeout=120)


def test_a_stopped_and_resumed_run_keeps_its_whole_history(tmp_path: Path):
    """Stop a run in training twice (SIGTERM) and let it finish: the record's history holds every start,
    stop (signal, checkpoint, epoch and step), resume and the end; status said where it stood."""
    spec = _spec(tmp_path, epochs=40)
    run = plan_grid(spec, write=True).runs[0]
    folder = tmp_path / "res" / run.folder
    for _ in range(2):
        assert _start_then(tmp_path / "res", run.run_id, folder, signal.SIGTERM) == 75
        rows, _ = grid_status(spec)
        stop = read_history(folder)[-1]
        assert stop["kind"] == "stop" and stop["stage"] == "training", stop
        assert rows[0]["state"] == "interrupted" and rows[0]["detail"] == (
            f"resumable from {describe_checkpoint(stop)}; stopped by SIGTERM"), rows[0]
        assert json.loads((folder / "result.json").read_text())["status"] == "preempted"
    assert run_grid(spec, "debug", progress=False).ok
    rec = json.loads((folder / "result.json").read_text())
    kinds = [e["kind"] for e in rec["history"]]
    assert kinds == ["start", "stop", "start", "resume", "stop", "start", "resume", "end"], kinds
    stops = [e for e in rec["history"] if e["kind"] == "stop"]
    assert all(e["signals"] == ["SIGTERM"] and e["checkpoint"] and e["steps_per_epoch"] == 4 for e in stops)
    resumes = [e for e in rec["history"] if e["kind"] == "resume"]
    assert [r["checkpoint"] for r in resumes] == [s["checkpoint"] for s in stops]  # each resumed where it stopped
    assert [(r["epoch"], r["batch"], r["step"]) for r in resumes] == [(s["epoch"], s["batch"], s["step"]) for s in stops]
    assert rec["resumed_from"].endswith(resumes[-1]["checkpoint"]) and rec["history"][-1]["status"] == "completed"
    assert all(e["pid"] and e["host"] for e in rec["history"])


def test_a_killed_run_is_lost_not_preempted(tmp_path: Path):
    """kill -9 after an earlier clean stop: result.json no longer says `preempted` (that stop is in the history),
    the next start notes the lost process, and status says where the run resumes."""
    spec = _spec(tmp_path, epochs=40)
    run = plan_grid(spec, write=True).runs[0]
    folder = tmp_path / "res" / run.folder
    assert _start_then(tmp_path / "res", run.run_id, folder, signal.SIGTERM) == 75
    assert json.loads((folder / "result.json").read_text())["status"] == "preempted"
    assert _start_then(tmp_path / "res", run.run_id, folder, signal.SIGKILL) == -signal.SIGKILL
    assert not (folder / "result.json").exists()  # the stale stop record went when the second process started
    (folder / "running.json").unlink(missing_ok=True)  # what a kill -9 leaves names a dead pid anyway
    rows, _ = grid_status(spec)
    assert rows[0]["state"] == "interrupted" and rows[0]["detail"].startswith("resumable from ")
    assert rows[0]["detail"].endswith("; its process was lost"), rows[0]
    note_start(folder)  # what the next start writes first
    events = read_history(folder)
    assert [e["kind"] for e in events][-2:] == ["lost", "start"] and events[-2]["previous"]["kind"] in ("start", "resume")


def test_history_lines_and_descriptions(tmp_path: Path, monkeypatch):
    append_event(tmp_path, "start")
    with open(tmp_path / "history.jsonl", "a") as fh:
        fh.write('{"torn": \n')  # a torn line from a full disk: skipped, not fatal
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    append_event(tmp_path, "start")
    monkeypatch.setenv("SLURM_JOB_ID", "52")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "52")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    append_event(tmp_path, "start")
    events = read_history(tmp_path)
    assert [e["kind"] for e in events] == ["start"] * 3 and events[1]["slurm"]["job"] == "40_2"
    assert slurm_summary(events) == {"jobs": ["40_2", "52_0"], "restarts": 1}  # a resubmission counts
    assert describe_checkpoint({"epoch": 1, "batch": 114, "steps_per_epoch": 390}) == "epoch 2 step 114/390"
    assert describe_checkpoint({"epoch": 2, "batch": 0}) == "after epoch 2"


# -- planning and a dry run write nothing, and need no cluster ----------------------------------------
def test_dry_run_without_a_cluster(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # python, but no scontrol/squeue/sbatch
    spec = _spec(tmp_path)
    assert main(["grid", "submit", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train array of 2 task(s)" in out and "#SBATCH --array=0-1" in out
    assert "SLURM's default MaxArraySize, 1001" in out and "nothing submitted" in out
    assert not (tmp_path / "res").exists()
    spec.write_text(spec.read_text() + "\n[resources]\nmax_array_size = 1\n")
    assert main(["grid", "submit", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("train array of 1 task(s)") == 2 and "resources.max_array_size" in out
    assert main(["grid", "submit", str(spec)]) == 2  # a real submission still needs a controller
    assert "scontrol is not on PATH" in capsys.readouterr().err and not (tmp_path / "res").exists()


def test_run_without_progress_still_prints_one_line_per_event(tmp_path: Path, capsys):
    spec = _spec(tmp_path, epochs=1)
    assert main(["grid", "run", str(spec), "--executor", "debug", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("start  ") == 2 and err.count("done   ") == 2 and "[0/2 done] running" not in err


def test_resubmit_needs_no_flag_and_refuses_without_a_queue(tmp_path: Path, monkeypatch, capsys):
    """No flag means every unfinished run; without squeue it cannot know which runs jobs hold, and says so
    (it never submits a second copy of a run it cannot see)."""
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    spec = _spec(tmp_path)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "slurm.json").write_text(json.dumps({"arrays": [{"job_id": "7", "tasks": ["x"],
                                                                           "task_jobs": ["7_0"]}]}))
    for flags in ([], ["--failed"], ["--interrupted", "--not-started"]):
        assert main(["grid", "resubmit", str(spec), *flags]) == 2
        assert "cannot tell which runs live jobs still hold (squeue unavailable" in capsys.readouterr().err
