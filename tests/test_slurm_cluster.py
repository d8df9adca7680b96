"""SLURM against a real slurmctld on localhost: the facts a submission depends on, submitting a grid,
its status, cancel and resubmit. (Preemption -> requeue -> resume is not tested yet: see GridJob.)

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
    check_shared_folder(REPO / "results", "grid.results")


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


GRID = """[grid]
name = "sl"
results = "{results}"

[base]
"train.epochs" = 12
"train.max_steps_per_epoch" = 4
"data.synthetic_train" = 512
"data.synthetic_test" = 128

[axes]
archs = ["wrn-10-1"]
datasets = ["synthetic"]
budgets = ["full"]
seeds = [0, 1]

[[methods]]
name = "unshared"
"""


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
    _wait(lambda: grid_status(spec, None)[1].get("done", 0) == 3, 400, "all runs done")
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
def test_status_cancel_resubmit(cluster, tmp_path, capsys):
    """Status shows the scheduler's view while jobs are queued/running; cancel keeps the folders; a failed
    run (its data folder missing) is resubmitted alone after the folder is fixed, and finishes."""
    import json

    from npasbench.cli import main
    from npasbench.grid.runner import grid_status
    from npasbench.grid.submit import scheduler_view

    spec = tmp_path / "g.toml"
    slow = GRID.format(results=tmp_path / "res").replace('"train.epochs" = 12', '"train.epochs" = 200')
    spec.write_text(slow)
    assert main(["grid", "submit", str(spec)]) == 0
    capsys.readouterr()
    _wait(lambda: any(v["state"] == "RUNNING" for v in scheduler_view(tmp_path / "res")[0].values()), 120, "a task to run")
    assert main(["grid", "status", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "RUNNING" in out and "slurm job" in out and "no SLURM accounting here" in out
    _wait(lambda: any((tmp_path / "res").glob("unshared_*/config.json")), 120, "a run to set up")
    before = sorted(p.parent for p in (tmp_path / "res").glob("unshared_*/config.json"))
    assert main(["grid", "cancel", str(spec)]) == 0
    assert "cancelled 2 task(s)" in capsys.readouterr().out
    # cancelled tasks end (CANCELLED, or gone) and are never requeued (SIGTERM is not a preemption)
    _wait(lambda: all(v["state"] in ("", "CANCELLED", "COMPLETED", "FAILED")
                      for v in scheduler_view(tmp_path / "res")[0].values()), 120, "the cancelled tasks to end")
    assert all((f / "config.json").is_file() for f in before)  # cancel never deletes a run's files

    # a run that fails at run time, then is fixed and resubmitted alone
    spec2 = tmp_path / "f.toml"
    broken = GRID.format(results=tmp_path / "res2").replace('"data.synthetic_test" = 128',
                                                            '"data.synthetic_test" = 128\n"data.name" = "cifar100"\n'
                                                            f'"data.root" = "{tmp_path / "cifar"}"')
    broken = broken.replace('datasets = ["synthetic"]', 'datasets = ["cifar100"]').replace("seeds = [0, 1]", "seeds = [0]")
    spec2.write_text(broken)
    assert main(["grid", "submit", str(spec2)]) == 0
    _wait(lambda: grid_status(spec2, None)[1].get("failed", 0) == 1, 120, "the run to fail")
    from conftest import cifar100_root

    root = cifar100_root()
    if root is None:
        return  # the fixed run needs real CIFAR-100; the failure path above is what this part checks
    (tmp_path / "cifar").symlink_to(Path(root) / "cifar-100-python", target_is_directory=True)
    assert main(["grid", "resubmit", str(spec2), "--failed"]) == 0
    assert "train array of 1 task(s)" in capsys.readouterr().out
    _wait(lambda: grid_status(spec2, None)[1].get("done", 0) == 1, 300, "the resubmitted run")
    state = json.loads((tmp_path / "res2" / "slurm.json").read_text())
    assert len(state["arrays"]) == 2
