"""SLURM against a real slurmctld on localhost: the facts a submission depends on, submitting a grid,
its status, cancel and resubmit, preemption -> requeue -> resume, the timeout cap, the code snapshot,
a two-process (gloo DDP) run.

The cluster is started by ``slurm/localhost-cluster.sh`` (Debian's slurm-wlm + munge, root) in a private
state folder with a small MaxArraySize, and stopped afterwards. Without root or the packages the
cluster tests skip with that reason (CI runs as root and ``.ci/run`` installs the packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from npasbench.errors import NPASError
from npasbench.grid.slurm_cluster import (ClusterConfig, SlurmUnavailable, array_chunks, check_shared_folder,
                                          query_cluster, sbatch_parameters)
from npasbench.grid.spec import Resources

from conftest import small_grid_toml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "localhost-cluster.sh"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the localhost SLURM cluster needs root (CI runs as root)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "NPAS_SLURM_MAX_ARRAY": "5"}
    r = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"could not start the localhost SLURM cluster: {r.stderr[-2000:]}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def test_query_a_real_controller(cluster):
    cfg = query_cluster()
    assert cfg.max_array_size == 5 and cfg.cluster_name == "npas-localhost"
    assert cfg.preempt_send_user_signal and not cfg.accounting
    r = subprocess.run(["sbatch", "--wrap", "true", "--array=0-4", "-o", str(cluster / "o_%a.txt")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    too_long = subprocess.run(["sbatch", "--wrap", "true", "--array=0-5"], capture_output=True, text=True, timeout=30)
    assert too_long.returncode != 0  # index 5 >= MaxArraySize: why every chunk is indexed from 0
    assert len(array_chunks(12, cfg.max_array_size)) == 3


def test_no_controller_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol
    with pytest.raises(SlurmUnavailable, match="scontrol is not on PATH"):
        query_cluster()
    if shutil.which("scontrol", path=os.defpath + ":/usr/bin") is None:
        return
    monkeypatch.setenv("PATH", os.defpath + ":/usr/bin")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(SlurmUnavailable, match="failed|did not answer"):
        query_cluster(timeout_s=10)


def test_parse_refuses_what_is_not_a_config():
    with pytest.raises(SlurmUnavailable, match="MaxArraySize"):
        ClusterConfig.parse("hello\n")
    cfg = ClusterConfig.parse("ClusterName = c\nMaxArraySize = 1001\nAccountingStorageType = accounting_storage/slurmdbd\n")
    assert cfg.max_array_size == 1001 and cfg.accounting and not cfg.preempt_send_user_signal


@pytest.mark.parametrize("n,size,lengths", [(0, 5, []), (1, 5, [1]), (5, 5, [5]), (6, 5, [5, 1]), (12, 5, [5, 5, 2]),
                                            (2500, 1001, [1001, 1001, 498])])
def test_array_chunks(n, size, lengths):
    chunks = array_chunks(n, size)
    assert [len(c) for c in chunks] == lengths
    assert [i for c in chunks for i in c] == list(range(n))
    with pytest.raises(ValueError):
        array_chunks(3, 0)


def test_node_local_folders_are_refused(tmp_path):
    for path in ("/tmp/results", "/dev/shm/x", "/var/tmp/y", "/tmp"):
        with pytest.raises(NPASError, match="node-local"):
            check_shared_folder(path, "grid.results")
    check_shared_folder("/srv/project/results", "grid.results")  # not REPO: a checkout may itself live in /tmp
    check_shared_folder("/home/me/tmp/results", "grid.results")  # a folder named tmp elsewhere is fine


def test_sbatch_parameters_are_submitits(tmp_path):
    import submitit

    res = Resources(partition="gpu", gpus_per_run=4, cpus_per_run=32, mem_gb=64, time_min=240, qos="high",
                    array_parallelism=8)
    params = sbatch_parameters(res, "npas-grid")
    assert params["tasks_per_node"] == 4 and params["cpus_per_task"] == 8 and params["gpus_per_node"] == 4
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    ex.update_parameters(**params)  # submitit validates every key
    text = ex._executor._make_submission_file_text("true", "uid")
    for line in ("--partition=gpu", "--qos=high", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8",
                 "--time=240", "--mem=64GB"):
        assert line in text, line
    plain = sbatch_parameters(Resources(), "cpu-grid")
    assert plain == {"name": "cpu-grid", "timeout_min": 60, "cpus_per_task": 1, "tasks_per_node": 1, "nodes": 1}


def test_sbatch_parameters_for_ddp_and_phases():
    cpu_ddp = sbatch_parameters(Resources(cpus_per_run=4, tasks_per_run=2), "g")
    assert cpu_ddp["tasks_per_node"] == 2 and cpu_ddp["cpus_per_task"] == 2 and "gpus_per_node" not in cpu_ddp
    phase = sbatch_parameters(Resources(gpus_per_run=4, cpus_per_run=32), "g-phase", single_task=True)
    assert phase["tasks_per_node"] == 1 and phase["gpus_per_node"] == 1 and phase["cpus_per_task"] == 32


@pytest.mark.parametrize("body,field", [("tasks_per_run = 2\ngpus_per_run = 4", "resources.tasks_per_run"),
                                        ("max_timeouts = -1", "resources.max_timeouts"),
                                        ("max_timeouts = 1.5", "resources.max_timeouts")])
def test_bad_resources_name_the_field(tmp_path, body, field):
    from npasbench.grid.spec import load_spec

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res") + "\n[resources]\n" + body + "\n")
    with pytest.raises(NPASError, match=field.replace(".", r"\.")):
        load_spec(spec)


def test_code_snapshot_is_the_imported_package(tmp_path):
    """The snapshot holds every module of the package as imported, is named by its content (taken twice:
    reused), and a process importing from it reports the snapshot's git state, not a checkout's."""
    import json
    import sys

    from npasbench.grid.code_snapshot import package_files, python_command, take_snapshot

    files = package_files()
    assert "npasbench/grid/task.py" in files and "npasbench/methods/ssn/__init__.py" in files
    assert "npasbench/baselines/__init__.py" in files and "npasbench/grid/demo.toml" in files
    snap = take_snapshot(tmp_path / "submitit")
    again = take_snapshot(tmp_path / "submitit")
    assert again.reused and again.path == snap.path and not snap.reused and snap.files == len(files)
    assert not list((tmp_path / "submitit" / "code").glob(".tmp-*"))  # no half-written snapshot left
    for rel, src in files.items():
        assert (snap.path / rel).read_bytes() == src.read_bytes(), rel
    cmd = python_command(snap)
    assert cmd.startswith("/usr/bin/env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=") and str(snap.path) in cmd
    probe = "import json, npasbench; from npasbench.provenance import git_info; " \
            "print(json.dumps([npasbench.__file__, git_info()]))"
    r = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(snap.path)},
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    where, git = json.loads(r.stdout)
    assert Path(where).is_relative_to(snap.path) and git["snapshot"] == snap.digest
    assert git["sha"] == json.loads((snap.path / "code.json").read_text())["git"]["sha"]


GRID = small_grid_toml("sl", 12)


def _wait(predicate, timeout, what):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


TWO_PHASE = """[grid]
name = "two"
results = "{results}"

[base]
"train.epochs" = 1
"train.max_steps_per_epoch" = 2
"data.synthetic_train" = 256
"data.synthetic_test" = 128

[axes]
archs = ["wrn-10-1"]
datasets = ["synthetic"]
budgets = ["40k", "30k"]
seeds = [0]

[[methods]]
name = "ssn"
variants = [{{param_groups = 2, search_epochs = 1, search_milestones = [], search_gammas = [], search_steps_per_epoch = 3}}]

[[methods]]
name = "unshared"
budgets = ["full"]
"""


@pytest.mark.slow
def test_submit_a_two_phase_grid(cluster, tmp_path, capsys):
    """`npas grid submit`: the SSN search is its own array, the training array waits on it (afterany),
    every run ends done; a second submit finds nothing to do; --dry-run submits nothing."""
    import json

    from npasbench.cli import main
    from npasbench.grid.runner import grid_status

    spec = tmp_path / "g.toml"
    spec.write_text(TWO_PHASE.format(results=tmp_path / "res"))
    assert main(["grid", "submit", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "phase array of 1 task(s)" in out and "train array of 3 task(s), after phase arrays" in out
    assert "nothing submitted" in out and not (tmp_path / "res" / "slurm.json").exists()
    assert main(["grid", "submit", str(spec)]) == 0
    state = json.loads((tmp_path / "res" / "slurm.json").read_text())
    phase, train = state["arrays"]
    assert phase["kind"] == "phase" and train["parameters"]["slurm_additional_parameters"] == {
        "dependency": f"afterany:{phase['job_id']}"}
    _wait(lambda: grid_status(spec, None).counts.get("done", 0) == 3, 400, "all runs done")
    assert main(["grid", "submit", str(spec)]) == 0
    assert "nothing to submit" in capsys.readouterr().out


def test_max_array_size_splits_the_arrays(cluster, tmp_path):
    """12 runs under MaxArraySize 5 (the test cluster's): three training arrays of 5, 5 and 2 (planned)."""
    from npasbench.grid.submit import plan_arrays

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace("seeds = [0, 1]", "seeds = " + str(list(range(12)))))
    _, arrays, size = plan_arrays(spec)
    assert size == 5 and [len(a.task_ids) for a in arrays] == [5, 5, 2] and all(a.kind == "train" for a in arrays)


@pytest.mark.slow
def test_a_split_array_runs_all_of_it(cluster, tmp_path, capsys):
    """7 runs under MaxArraySize 5: two arrays (5 + 2, each indexed from 0) submitted, every run done;
    --dry-run shows submitit's #SBATCH lines for each."""
    import json

    from npasbench.cli import main
    from npasbench.grid.runner import grid_status

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 1')
                    .replace("seeds = [0, 1]", "seeds = " + str(list(range(7)))))
    assert main(["grid", "submit", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-4" in out and "#SBATCH --array=0-1" in out and "#SBATCH --signal=USR2@90" in out
    assert main(["grid", "submit", str(spec)]) == 0
    state = json.loads((tmp_path / "res" / "slurm.json").read_text())
    assert [len(a["tasks"]) for a in state["arrays"]] == [5, 2]
    assert [a["task_jobs"][-1].split("_")[1] for a in state["arrays"]] == ["4", "1"]
    _wait(lambda: grid_status(spec, None).counts.get("done", 0) == 7, 400, "all 7 runs")


@pytest.mark.slow
def test_status_cancel_resubmit(cluster, tmp_path, capsys):
    """Status shows the scheduler's view while jobs are queued/running; cancel keeps the folders; a failed
    run (its data folder missing) is resubmitted alone after the folder is fixed, and finishes."""
    import json

    from npasbench.cli import main
    from npasbench.grid.queue import queue_view
    from npasbench.grid.runner import grid_status

    def live() -> list[str]:
        return [j.job for jobs in queue_view(tmp_path / "res").jobs.values() for j in jobs if j.holds]

    spec = tmp_path / "g.toml"
    slow = GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 200')
    spec.write_text(slow)
    assert main(["grid", "submit", str(spec)]) == 0
    capsys.readouterr()
    _wait(lambda: any(j.active for jobs in queue_view(tmp_path / "res").jobs.values() for j in jobs), 120, "a task to run")
    assert main(["grid", "status", str(spec)]) == 0
    out = capsys.readouterr().out
    assert " RUNNING on " in out and "no SLURM accounting here" in out
    assert main(["grid", "submit", str(spec)]) == 2  # the same grid again while its jobs hold the runs: refused
    err = capsys.readouterr().err
    assert "2 of the 2 unfinished runs are still held by live SLURM jobs" in err and live()[0] in err and "--force" in err
    assert main(["grid", "submit", str(spec), "--force"]) == 0  # anyway: a second array, each run named
    assert capsys.readouterr().out.count("submitted again (--force)") == 2
    assert len(live()) == 4
    assert main(["grid", "status", str(spec)]) == 0
    assert "also " in capsys.readouterr().out  # a run held by two jobs shows both
    _wait(lambda: any((tmp_path / "res").glob("unshared_*/config.json")), 120, "a run to set up")
    before = sorted(p.parent for p in (tmp_path / "res").glob("unshared_*/config.json"))
    held = live()
    assert main(["grid", "cancel", str(spec)]) == 0
    assert f"cancelled 4 job(s) that still held runs: {' '.join(held)}" in capsys.readouterr().out
    # cancelled tasks end (CANCELLED, or gone) and are never requeued (SIGTERM is not a preemption)
    _wait(lambda: not live(), 120, "the cancelled tasks to end")
    assert main(["grid", "cancel", str(spec)]) == 0
    assert "cancelled 0 job(s)" in capsys.readouterr().out  # only what it cancelled, never an ended task
    assert all((f / "config.json").is_file() for f in before)  # cancel never deletes a run's files

    # a run that fails at run time, then is fixed and resubmitted alone
    spec2 = tmp_path / "f.toml"
    broken = GRID.format(results=tmp_path / "res2").replace('"data.synthetic_test" = 128',
                                                            '"data.synthetic_test" = 128\n"data.name" = "cifar100"\n'
                                                            f'"data.root" = "{tmp_path / "cifar"}"')
    broken = broken.replace('datasets = ["synthetic"]', 'datasets = ["cifar100"]').replace("seeds = [0, 1]", "seeds = [0]")
    spec2.write_text(broken)
    assert main(["grid", "submit", str(spec2)]) == 0
    _wait(lambda: grid_status(spec2, None).counts.get("failed", 0) == 1, 120, "the run to fail")
    capsys.readouterr()
    _wait(lambda: not any(j.holds for jobs in queue_view(tmp_path / "res2").jobs.values() for j in jobs), 60,
          "the failed task to leave the queue")
    from conftest import cifar100_root

    root = cifar100_root()
    if root is None:
        return  # the fixed run needs real CIFAR-100; the failure path above is what this part checks
    (tmp_path / "cifar").symlink_to(Path(root) / "cifar-100-python", target_is_directory=True)
    assert main(["grid", "resubmit", str(spec2), "--failed"]) == 0
    assert "train array of 1 task(s)" in capsys.readouterr().out
    _wait(lambda: grid_status(spec2, None).counts.get("done", 0) == 1, 300, "the resubmitted run")
    state = json.loads((tmp_path / "res2" / "slurm.json").read_text())
    assert len(state["arrays"]) == 2


def _squeue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def _release(job: str) -> None:
    """A requeued job waits ~2 minutes (SLURM's delayed begin); the test starts it now."""
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, capture_output=True)


def _record(folder: Path):
    import json

    f = folder / "result.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _first_checkpoint(folder: Path):
    return lambda: (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.slow
def test_preemption_is_requeued_and_resumed(cluster, tmp_path, capsys):
    """`npas grid submit`, then a preemption exactly as submitit's ``_interrupt`` sends it (SIGTERM, then
    USR2) once the run has checkpointed: the task is requeued, resumes from its checkpoint, and ends
    equal to the same run uninterrupted; its record counts one requeue."""
    import json

    import submitit

    from npasbench.cli import main
    from npasbench.grid.runner import plan_grid
    from npasbench.grid.task import run_task

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 30')
                    .replace("seeds = [0, 1]", "seeds = [0]"))
    assert main(["grid", "submit", str(spec)]) == 0
    capsys.readouterr()
    plan = plan_grid(spec, write=False)
    folder = plan.results / plan.runs[0].folder
    _wait(_first_checkpoint(folder), 180, "a checkpoint")
    from npasbench.grid.queue import submitted_tasks

    job = submitted_tasks(plan.results)[plan.runs[0].run_id][-1]
    submitit_job = submitit.SlurmJob(folder=plan.results / "submitit", job_id=job)
    submitit_job._interrupt()  # scancel --signal SIGTERM, then --signal USR2
    _wait(lambda: _squeue_state(job) == "PENDING", 90, "the requeue")
    assert _record(folder)["status"] == "preempted"
    assert main(["grid", "status", str(spec), "--json"]) == 0  # the scheduler's view of a requeued task
    row = json.loads(capsys.readouterr().out)["runs"][0]
    assert row["state"] == "queued" and f"SLURM {job} PENDING" in row["detail"], row
    assert row["slurm jobs"][-1]["restarts"] == "1" and row["slurm jobs"][-1]["reason"], row
    _release(job)
    _wait(lambda: (_record(folder) or {}).get("status") == "completed", 300, "the resumed run")
    rec = _record(folder)
    assert rec["resumed_from"] and rec["slurm"]["requeues"] == 1
    ref = tmp_path / "ref"
    ref_spec = tmp_path / "ref.toml"
    ref_spec.write_text(spec.read_text().replace(str(tmp_path / "res"), str(ref)))
    ref_plan = plan_grid(ref_spec, write=True)
    assert ref_plan.runs[0].run_id == plan.runs[0].run_id  # the id does not depend on where results go
    assert rec["config"]["train"]["threads"] == 1  # the task's SLURM_CPUS_PER_TASK
    assert run_task(ref, ref_plan.runs[0].run_id, threads=1) == 0  # same threads: same float reductions
    assert _record(ref / ref_plan.runs[0].folder)["metrics"] == rec["metrics"]


def _running_for(folder: Path, seconds: float):
    """True once the task that wrote running.json has been up ``seconds`` (submitit counts a USR2 as a
    timeout only after min(80 %, limit - 10 min) of the time limit: 60 s of an 11-minute job)."""
    import datetime as dt
    import json
    import time

    def check():
        try:
            started = dt.datetime.fromisoformat(json.loads((folder / "running.json").read_text())["started"])
        except (OSError, ValueError, KeyError):
            return False
        return time.time() - started.timestamp() >= seconds
    return check


@pytest.mark.slow
def test_timeouts_are_requeued_at_most_max_timeouts(cluster, tmp_path, capsys):
    """``max_timeouts = 1``: the first time-limit signal requeues the run, the second leaves it preempted
    and resumable (not requeued). The job asks for 11 minutes; a USR2 after 60 s of it is a timeout."""
    import submitit

    from npasbench.cli import main
    from npasbench.grid.runner import grid_status, plan_grid
    from npasbench.grid.queue import submitted_tasks

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 1000')
                    .replace("seeds = [0, 1]", "seeds = [0]") + "\n[resources]\ntime_min = 11\nmax_timeouts = 1\n")
    assert main(["grid", "submit", str(spec)]) == 0
    capsys.readouterr()
    plan = plan_grid(spec, write=False)
    folder = plan.results / plan.runs[0].folder
    job = submitted_tasks(plan.results)[plan.runs[0].run_id][-1]
    sj = submitit.SlurmJob(folder=plan.results / "submitit", job_id=job)
    _wait(_running_for(folder, 62), 240, "62 s of the first start")
    sj._interrupt(timeout=True)  # USR2 only: a time limit
    _wait(lambda: _squeue_state(job) == "PENDING", 90, "the first requeue")
    _release(job)
    _wait(lambda: _squeue_state(job) == "RUNNING", 120, "the second start")
    _wait(_running_for(folder, 62), 240, "62 s of the second start")
    sj._interrupt(timeout=True)
    _wait(lambda: _squeue_state(job) == "", 90, "the job to end")  # not requeued a second time
    rec = _record(folder)
    assert rec["status"] == "preempted" and rec["slurm"]["requeues"] == 1 and rec["resumed_from"]
    assert grid_status(spec, None).counts.get("interrupted", 0) == 1  # resumable: `npas grid resubmit` continues it
    log = "".join(f.read_text() for f in (plan.results / "submitit").glob("*_log.out"))
    assert "timed-out too many times" in log


def _package_copy(dest: Path) -> Path:
    """A copy of the package in the layout an import needs, standing in for a checkout (first on PYTHONPATH)."""
    for src, rel in ((REPO / "benchmark", "npasbench"), (REPO / "methods", "npasbench/methods"),
                     (REPO / "baselines", "npasbench/baselines")):
        shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return dest


@pytest.mark.slow
def test_the_code_is_fixed_at_submission(cluster, tmp_path):
    """Submitted from a checkout (here a copy of the package first on PYTHONPATH) while the cluster is busy;
    the checkout is then broken before any job starts: the jobs run the snapshot and finish, and their
    records carry its digest."""
    import json
    import sys

    checkout = _package_copy(tmp_path / "checkout")
    blocker = subprocess.run(["sbatch", "--parsable", "-c", "2", "--wrap", "sleep 300", "-o", "/dev/null"],
                             capture_output=True, text=True, check=True).stdout.strip()
    try:
        _wait(lambda: _squeue_state(blocker) == "RUNNING", 60, "the blocker to hold every CPU")
        spec = tmp_path / "g.toml"
        spec.write_text(GRID.format(results=tmp_path / "res"))
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        r = subprocess.run([sys.executable, "-m", "npasbench.cli", "grid", "submit", str(spec)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        state = json.loads((tmp_path / "res" / "slurm.json").read_text())
        code = Path(state["arrays"][0]["code"])
        assert (code / "npasbench" / "grid" / "task.py").read_bytes() == \
            (checkout / "npasbench" / "grid" / "task.py").read_bytes()
        for broken in ("grid/task.py", "trainer/loop.py"):  # the checkout moves on while the jobs queue
            (checkout / "npasbench" / broken).write_text("raise RuntimeError('edited while queued')\n")
        from npasbench.grid.queue import queue_view

        def pending_with_reason():  # status while pending: the scheduler says why (after its next pass)
            view = queue_view(tmp_path / "res").jobs
            return len(view) == 2 and all(v[-1].state == "PENDING" and v[-1].reason in ("Resources", "Priority")
                                          for v in view.values())
        _wait(pending_with_reason, 60, "both tasks pending with a reason")
    finally:
        subprocess.run(["scancel", blocker], capture_output=True)
    from npasbench.grid.runner import plan_grid

    folders = [tmp_path / "res" / r.folder for r in plan_grid(spec, write=False).runs]
    _wait(lambda: len(folders) == 2 and all((_record(f) or {}).get("status") == "completed" for f in folders), 400,
          "both runs (from the snapshot)")
    for f in folders:
        assert _record(f)["git"]["snapshot"] == code.name


@pytest.mark.slow
def test_a_two_process_run_through_submitits_environment(cluster, tmp_path, capsys):
    """``tasks_per_run = 2`` (CPU: gloo): one job with two tasks, each exporting submitit's distributed
    environment; the trainer's DDP runs as under torchrun; rank 0 writes the only record."""
    from npasbench.cli import main
    from npasbench.grid.runner import plan_grid

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace("seeds = [0, 1]", "seeds = [0]")
                    + "\n[resources]\ncpus_per_run = 2\ntasks_per_run = 2\n")
    assert main(["grid", "submit", str(spec), "--dry-run"]) == 0
    assert '"tasks_per_node": 2' in capsys.readouterr().out
    assert main(["grid", "submit", str(spec)]) == 0
    plan = plan_grid(spec, write=False)
    folder = plan.results / plan.runs[0].folder
    _wait(lambda: (_record(folder) or {}).get("status") == "completed", 400, "the DDP run")
    rec = _record(folder)
    assert rec["world_size"] == 2 and not (folder / "failed.json").exists()
    assert rec["config"]["train"]["threads"] == 1  # SLURM_CPUS_PER_TASK (2 CPUs / 2 tasks), not every core


def _task_logs(results: Path) -> str:
    return "".join(f.read_text(errors="replace") for f in (results / "submitit").glob("*_log.*"))


@pytest.mark.slow
def test_cancel_then_resubmit_resumes_and_keeps_the_history(cluster, tmp_path, capsys):
    """`npas grid cancel` mid-run, then `npas grid resubmit` with no flag: the interrupted run is submitted
    again, resumes from its checkpoint and ends equal to the same run uninterrupted. The cancelled task ended
    quietly (one line, no traceback); the record lists both jobs, counts the restart, and holds the history."""
    import json

    from npasbench.cli import main
    from npasbench.grid.queue import submitted_tasks
    from npasbench.grid.runner import grid_status, plan_grid

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 30')
                    .replace("seeds = [0, 1]", "seeds = [0]"))
    assert main(["grid", "submit", str(spec)]) == 0
    plan = plan_grid(spec)
    folder = plan.results / plan.runs[0].folder
    _wait(_first_checkpoint(folder), 180, "a checkpoint")
    first = submitted_tasks(plan.results)[plan.runs[0].run_id][-1]
    capsys.readouterr()
    assert main(["grid", "cancel", str(spec)]) == 0
    assert f"cancelled 1 job(s) that still held runs: {first}" in capsys.readouterr().out
    _wait(lambda: _squeue_state(first) == "", 90, "the cancelled job to end")
    _wait(lambda: grid_status(spec, None, scheduler=True).counts.get("interrupted") == 1, 60, "the run interrupted")
    row = grid_status(spec, None, scheduler=True).rows[0]
    assert "stopped by SIGTERM" in row["detail"] and "resumable from " in row["detail"], row
    logs = _task_logs(plan.results)
    assert "Traceback" not in logs and "ended with exit status 75" not in logs, logs[-3000:]
    assert "stopped by SIGTERM (scancel, `npas grid cancel`, or the node going down)" in logs
    assert main(["grid", "resubmit", str(spec)]) == 0  # no flag: every unfinished run no job holds
    assert "train array of 1 task(s)" in capsys.readouterr().out
    _wait(lambda: (_record(folder) or {}).get("status") == "completed", 300, "the resubmitted run")
    rec = _record(folder)
    second = submitted_tasks(plan.results)[plan.runs[0].run_id][-1]
    assert rec["slurm"]["jobs"] == [first, second] and rec["slurm"]["requeues"] == 1, rec["slurm"]
    kinds = [e["kind"] for e in rec["history"]]
    assert kinds == ["start", "stop", "start", "resume", "end"], kinds
    assert rec["history"][0]["slurm"]["job"] == first and rec["history"][2]["slurm"]["node"]
    assert _uninterrupted_metrics(spec, tmp_path) == rec["metrics"]
    json.dumps(rec)  # the record with its history stays plain JSON


@pytest.mark.slow
def test_a_real_preemption_by_a_higher_priority_job(cluster, tmp_path, capsys):
    """The cluster script's two partitions: a job on `high` preempts the grid's task on `debug`; slurmctld
    requeues it (PreemptMode=REQUEUE) and sends its signal; the task checkpoints, ends quietly (submitit's own
    requeue finding the job already pending is not an error) and resumes; the metrics equal an uninterrupted
    run's and the history says what happened."""
    from npasbench.cli import main
    from npasbench.grid.queue import submitted_tasks
    from npasbench.grid.runner import plan_grid

    spec = tmp_path / "g.toml"
    spec.write_text(GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 30')
                    .replace("seeds = [0, 1]", "seeds = [0]") + '\n[resources]\npartition = "debug"\n')
    assert main(["grid", "submit", str(spec)]) == 0
    plan = plan_grid(spec)
    folder = plan.results / plan.runs[0].folder
    job = submitted_tasks(plan.results)[plan.runs[0].run_id][-1]
    _wait(_first_checkpoint(folder), 180, "a checkpoint")
    high = subprocess.run(["sbatch", "-p", "high", "-c", str(os.cpu_count() or 2), "--parsable", "-o", "/dev/null",
                           "--wrap", "sleep 10"], capture_output=True, text=True, timeout=30)
    assert high.returncode == 0, high.stderr
    _wait(lambda: any(e.get("kind") == "stop" for e in _history(folder)), 120, "the preempted task to stop")
    _wait(lambda: _squeue_state(job) == "PENDING", 120, "the requeue")
    _wait(lambda: _squeue_state(high.stdout.strip().split(";")[0]) == "", 120, "the high-priority job to end")
    _release(job)
    _wait(lambda: (_record(folder) or {}).get("status") == "completed", 300, "the resumed run")
    rec = _record(folder)
    kinds = [e["kind"] for e in rec["history"]]
    assert kinds[:2] == ["start", "stop"] and kinds[-3:] == ["start", "resume", "end"], kinds
    stop = rec["history"][1]
    assert "SIGUSR2" in stop["signals"] or "SIGTERM" in stop["signals"], stop
    logs = _task_logs(plan.results)
    assert "CalledProcessError" not in logs and "Traceback" not in logs, logs[-3000:]
    assert rec["slurm"]["requeues"] >= 1 and rec["slurm"]["jobs"] == [job]
    assert _uninterrupted_metrics(spec, tmp_path) == rec["metrics"]


def _uninterrupted_metrics(spec: Path, tmp_path: Path) -> dict:
    """The metrics of the spec's first run trained in one go, in-process, with one thread (the submitted
    tasks' SLURM_CPUS_PER_TASK: the same float reductions)."""
    from npasbench.grid.runner import plan_grid
    from npasbench.grid.task import run_task

    ref = tmp_path / "ref"
    ref_spec = tmp_path / "ref.toml"
    ref_spec.write_text(spec.read_text().replace(str(tmp_path / "res"), str(ref)))
    ref_plan = plan_grid(ref_spec, write=True)
    assert run_task(ref, ref_plan.runs[0].run_id, threads=1) == 0
    return _record(ref / ref_plan.runs[0].folder)["metrics"]


def _history(folder: Path) -> list:
    from npasbench.trainer.history import read_history

    return read_history(folder)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_overhead_benchmark_runs_on_the_cluster(cluster, tmp_path):
    """`python -m npasbench.perf.slurm_overhead` (docs/grids.md, "Overhead"), tiny: both arms finish, the submit samples
    (quiet and loaded) are real timings, held jobs are cancelled (the queue is empty after), the report is whole.
    Never a speed assertion."""
    import json

    from npasbench.perf import slurm_overhead

    out = tmp_path / "perf" / "slurm_overhead.json"
    assert slurm_overhead.main(["--runs", "2", "--epochs", "1", "--submit-samples", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["runs"] == 2 and data["slurm_wall_s"] > 0 and data["local_wall_s"] > 0 and data["submit_s"] > 0
    assert [len(data["submit_command_s"][k]) for k in ("quiet", "loaded")] == [1, 1]
    assert all(x > 0 for k in ("quiet", "loaded") for x in data["submit_command_s"][k])
    md = out.with_suffix(".md").read_text()
    assert "--submit-samples 1" in md and "| every core busy |" in md
    left = subprocess.run(["squeue", "-h", "-n", "npas-slurm-overhead", "-t", "PENDING,RUNNING"], capture_output=True, text=True, timeout=30)
    assert left.returncode == 0 and left.stdout.strip() == ""


@pytest.mark.slow
def test_grid_run_with_the_slurm_executor(cluster, tmp_path, capsys):
    """`npas grid run --executor slurm`: the runner submits the shared SSN search as a job, then each run as its
    own job once the phase's artifact exists, at most -j at a time; every run ends done, its record names its
    job, slurm.json holds every job (so status and cancel reach them); a second run finds nothing to do."""
    import json

    from npasbench.cli import main
    from npasbench.grid.runner import grid_status

    spec = tmp_path / "g.toml"
    spec.write_text(TWO_PHASE.format(results=tmp_path / "res"))
    assert main(["grid", "run", str(spec), "--executor", "slurm", "-j", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "(slurm executor, 2 at a time)" in captured.err + captured.out
    assert grid_status(spec, None).counts.get("done", 0) == 3
    state = json.loads((tmp_path / "res" / "slurm.json").read_text())
    jobs = state["arrays"]
    assert [j["kind"] for j in jobs] == ["phase", "train", "train", "train"]
    assert all(j["via"] == "npas grid run --executor slurm" and len(j["tasks"]) == 1 for j in jobs)
    assert jobs[0]["parameters"]["name"] == "npas-two-phase" and jobs[1]["parameters"]["name"] == "npas-two"
    by_run = {j["tasks"][0]: j["job_id"] for j in jobs[1:]}
    for folder in (tmp_path / "res").glob("*_s0_*"):
        rec = _record(folder)
        assert rec["status"] == "completed" and rec["slurm"]["job_id"] == by_run[rec["run_id"]], folder
    assert main(["grid", "run", str(spec), "--executor", "slurm", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "0 to run" in out.err + out.out
    assert len(json.loads((tmp_path / "res" / "slurm.json").read_text())["arrays"]) == 4  # nothing submitted again


@pytest.mark.slow
def test_leaving_a_slurm_executor_runner_cancels_its_jobs_and_resumes(cluster, tmp_path, capsys):
    """While `npas grid run --executor slurm` runs, `npas grid status` shows its job; Ctrl-C of the runner once
    its run has checkpointed: the runner scancels the job (SIGTERM: the run checkpoints and ends resumable, not
    requeued) and exits 130 once the job has ended; the same command again resumes the run from its checkpoint
    and finishes it."""
    import signal
    import sys

    from npasbench.cli import main

    spec = tmp_path / "g.toml"
    spec.write_text(small_grid_toml("stop", 30).format(results=tmp_path / "res").replace("seeds = [0, 1]", "seeds = [0]"))
    cmd = [sys.executable, "-m", "npasbench.cli", "grid", "run", str(spec), "--executor", "slurm", "--no-progress"]
    runner = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: any(_first_checkpoint(f)() for f in (tmp_path / "res").glob("unshared_*")), 240, "a checkpoint")
        assert main(["grid", "status", str(spec)]) == 0
        assert " RUNNING on " in capsys.readouterr().out  # the runner's job, from slurm.json and squeue
        runner.send_signal(signal.SIGINT)
        out, _ = runner.communicate(timeout=180)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, out
    assert "stopping: 1 running task(s) checkpoint and exit" in out and "interrupted: run again to resume" in out
    (folder,) = (tmp_path / "res").glob("unshared_*")
    assert _record(folder) is None or _record(folder)["status"] == "preempted"
    import json

    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "stop" and e.get("signals") == ["SIGTERM"] for e in history), history
    assert not any(e["kind"] == "requeue" for e in history)  # a cancel is not a preemption
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    rec = _record(folder)
    assert rec["status"] == "completed" and rec["resumed_from"], rec
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in history].count("resume") == 1
