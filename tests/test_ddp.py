"""DDP for real: 2 processes over gloo on CPU, launched the way users launch it,
``torchrun --standalone --nproc_per_node 2 -m npasbench.cli train ...``.

The trainer only lets rank 0 write files, so a test-only probe shows what the other rank did: a
``sitecustomize.py`` on the workers' PYTHONPATH (active only when ``NPAS_TEST_PROBE_DIR`` is set
and the process is a torchrun worker) wraps ``Trainer.finish`` to dump every rank's final state
dict, and ``write_json`` to log which rank wrote which file. Nothing in the trainer is changed;
the command line is exactly the user's.

Processes: torchrun starts each worker in a session of its own, so a signal to the launcher's
process group reaches the launcher only (it forwards SIGTERM to the workers, SIGKILL after 30 s).
Every launch here is bounded by a timeout, and on failure the launcher and its workers are killed
by PID; ``NPAS_DIST_TIMEOUT`` turns a deadlocked collective into an error within a minute.

Two tests guard trainer fixes found here: a resumed DDP run must log the same train loss for the
interrupted epoch (every rank's running sums are checkpointed), and ranks that see a preemption
signal at different steps must all stop at the same step (no deadlock).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from npasbench.trainer.checkpoint import list_checkpoints, load_checkpoint

EPOCHS = 2
STEPS = 20  # per epoch; 819 training examples padded to 410 per rank / batch 16 = 25 batches, truncated to 20
# Odd split sizes, so the ranks' eval shards differ: val 205 = 103 + 102 (2 + 2 batches of 100),
# test 201 = 101 + 100 (2 + 1 batches). The val split selects the weights ("best.pt", broadcast from
# rank 0, DDP re-wrapped), then the test split is evaluated once.
VAL_EXAMPLES = 205
TEST_EXAMPLES = 201
OVERRIDES = [
    "train.device=cpu",
    "data.synthetic_train=1024",
    "data.val_fraction=0.2",
    f"data.synthetic_test={TEST_EXAMPLES}",
    "train.batch_size=16",
    "train.eval_batch_size=100",
    f"train.max_steps_per_epoch={STEPS}",
    "train.threads=1",
]
LAUNCH_TIMEOUT = 240  # seconds for one torchrun launch (typically 15 s here)

PROBE = textwrap.dedent(
    '''
    """Test probe for tests/test_ddp.py (torchrun workers only; see that file)."""
    import os

    _dir = os.environ.get("NPAS_TEST_PROBE_DIR")
    if _dir and "RANK" in os.environ and "LOCAL_RANK" in os.environ:
        from pathlib import Path

        import torch
        from npasbench import run_folder as _run_folder
        from npasbench.trainer import loop as _loop

        _rank = int(os.environ["RANK"])
        _out = Path(_dir)
        (_out / f"rank{_rank}.pid").write_text(str(os.getpid()))
        _orig_finish = _loop.Trainer.finish
        _orig_write_json = _run_folder.write_json  # the trainer writes its run folder's files through RunFolder

        def _finish(self, status):
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            params = {k: p.detach().cpu().clone() for k, p in self.model.named_parameters()}
            torch.save({"status": status, "step": self.state.step, "model": state, "params": params},
                       _out / f"rank{_rank}-{status}.pt")
            return _orig_finish(self, status)

        def _write_json(path, *args, **kwargs):
            with open(_out / f"rank{_rank}-write_json.log", "a") as fh:
                fh.write(f"{path}\\n")
            return _orig_write_json(path, *args, **kwargs)

        _loop.Trainer.finish = _finish
        _run_folder.write_json = _write_json
    '''
)


# ----------------------------------------------------------------------------- launching
def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "npasbench.cli", "train", "--method", "unshared", "--arch", "wrn-10-1", "--dataset", "synthetic",
            "--epochs", str(EPOCHS), "--out", str(out), "--no-progress", *OVERRIDES]


def _env(probe: Path, **extra: str) -> dict[str, str]:
    probe.mkdir(parents=True, exist_ok=True)
    (probe / "sitecustomize.py").write_text(PROBE)
    path = os.pathsep.join(p for p in (str(probe), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, NPAS_TEST_PROBE_DIR=str(probe),
               NPAS_DIST_TIMEOUT="60")
    env.update(extra)
    return env


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and its workers (each in a session of its own), by PID."""
    pids = [proc.pid]
    i = 0
    while i < len(pids):
        pids.extend(_children(pids[i]))
        i += 1
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class Launch:
    """A torchrun launch in its own session, output to a log file."""

    def __init__(self, out: Path, probe: Path, cmd: list[str] | None = None, **env: str) -> None:
        self.out, self.probe = out, probe
        env_vars = _env(probe, **env)
        self.log = probe / f"torchrun-{time.time_ns()}.log"
        self._fh = self.log.open("w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd or _cmd(out), env=env_vars, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, timeout: float = LAUNCH_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            _kill_tree(self.proc)
            pytest.fail(f"torchrun did not finish within {timeout} s (hung DDP run?); log:\n{self.output()}")
        finally:
            self._fh.close()

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text()[-6000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            _kill_tree(self.proc)
        self._fh.close()


def _run(out: Path, probe: Path) -> tuple[int, str]:
    launch = Launch(out, probe)
    try:
        rc = launch.wait()
    finally:
        launch.kill()
    return rc, launch.output()


# ----------------------------------------------------------------------------- reading a run
def _result(run: Path) -> dict[str, Any]:
    return json.loads((run / "result.json").read_text())


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def _final_checkpoint(run: Path) -> dict[str, Any]:
    ckpts = list_checkpoints(run / "checkpoints")
    assert ckpts, f"no checkpoint in {run}"
    return load_checkpoint(ckpts[-1])


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    # exact: both sides ran the same operations on the same shapes at the same thread count on one machine (two ranks
    # after the same all-reduce; a resumed run and an uninterrupted one on the same batches), so they are bit-equal on
    # any CPU; across thread counts or CPUs they would agree only to rounding (docs/reliability.md)
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def _assert_finite_run(run: Path) -> None:
    rec = _result(run)
    for k in ("top1", "top5", "loss"):
        assert math.isfinite(rec["metrics"][k]), rec["metrics"]
    for row in _metrics(run):
        for k in ("loss", "top1", "top5"):
            if k in row:
                assert math.isfinite(row[k]), row


# ----------------------------------------------------------------------------- tests
HELPERS = textwrap.dedent(
    """
    import os, sys, torch
    from npasbench.trainer.distributed import (all_gather_floats, all_reduce_sum, any_rank, barrier,
                                               broadcast_object, cleanup, init_distributed)
    info = init_distributed("cpu")
    r = info.rank
    assert (info.world_size, info.backend, info.owns_group, info.local_rank) == (2, "gloo", True, r), info
    assert all_gather_floats([r + 0.25, 10 * r], info) == [[0.25, 0.0], [1.25, 10.0]]
    assert any_rank(r == 1, info) is True and any_rank(False, info) is False
    t = torch.full((3,), float(r + 1), dtype=torch.float64)
    assert all_reduce_sum(t, info) is t and t.tolist() == [3.0, 3.0, 3.0]
    assert broadcast_object({"from": r}, info) == {"from": 0}
    barrier(info)
    cleanup(info)
    assert not torch.distributed.is_initialized()
    open(os.path.join(sys.argv[1], f"rank{r}.ok"), "w").write("ok")  # stdout is shared by the ranks
    """
)


def test_distributed_helpers_under_torchrun(tmp_path):
    script = tmp_path / "helpers.py"
    script.write_text(HELPERS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", NPAS_DIST_TIMEOUT="60"),
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.glob("rank*.ok")) == ["rank0.ok", "rank1.ok"]


def test_init_distributed_errors_are_clear(monkeypatch):
    from npasbench.errors import ConfigError
    from npasbench.trainer.distributed import DistInfo, dist_timeout, init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == DistInfo()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="RANK is not set; launch with torchrun"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2 is outside"):
        init_distributed("cpu")
    monkeypatch.setenv("NPAS_DIST_TIMEOUT", "90")
    assert dist_timeout().total_seconds() == 90
    for bad in ("soon", "0"):
        monkeypatch.setenv("NPAS_DIST_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="NPAS_DIST_TIMEOUT"):
            dist_timeout()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict[str, Any]:
    """One uninterrupted 2-process run (also the reference for the preemption test)."""
    base = tmp_path_factory.mktemp("ddp")
    out, probe = base / "run", base / "probe"
    t0 = time.monotonic()
    rc, log = _run(out, probe)
    return {"out": out, "probe": probe, "rc": rc, "log": log, "seconds": time.monotonic() - t0}


def test_ddp_gloo_two_processes(ddp_run):
    out, probe = ddp_run["out"], ddp_run["probe"]
    assert ddp_run["rc"] == 0, ddp_run["log"]
    # both workers ran the real CLI to completion
    assert ddp_run["log"].count("completed: top1") == 2, ddp_run["log"]
    rec = _result(out)
    assert rec["status"] == "completed" and rec["world_size"] == 2
    assert rec["steps"] == EPOCHS * STEPS
    _assert_finite_run(out)
    # result.json written once, by rank 0; rank 1 writes no JSON at all
    writes0 = (probe / "rank0-write_json.log").read_text().splitlines()
    assert [w for w in writes0 if w.endswith("result.json")] == [str(out / "result.json")]
    assert not (probe / "rank1-write_json.log").exists()
    # every evaluation covers its split exactly once (uneven shards, all-reduced counts)
    assert (rec["dataset"]["num_eval"], rec["dataset"]["num_test"]) == (VAL_EXAMPLES, TEST_EXAMPLES)
    evals = [r for r in _metrics(out) if r["kind"] in ("eval", "final")]
    assert [(r["kind"], r["split"]) for r in evals] == [("eval", "val")] * EPOCHS + [("final", "test")]
    assert [r["examples"] for r in evals] == [VAL_EXAMPLES] * EPOCHS + [TEST_EXAMPLES], evals
    assert rec["metrics"]["examples"] == TEST_EXAMPLES and rec["metrics"]["split"] == "test"
    assert rec["selection"]["split"] == "val" and 1 <= rec["selection"]["epoch"] <= EPOCHS
    # the two replicas ended identical (parameters and BN buffers), and equal to the checkpoint
    r0 = torch.load(probe / "rank0-completed.pt", weights_only=True)
    r1 = torch.load(probe / "rank1-completed.pt", weights_only=True)
    assert r0["step"] == r1["step"] == EPOCHS * STEPS
    _assert_same_state(r0["model"], r1["model"], "rank 0 vs rank 1")
    ck = _final_checkpoint(out)
    assert (ck["epoch"], ck["batch"], ck["step"]) == (EPOCHS, 0, EPOCHS * STEPS)
    _assert_same_state(ck["model"], r0["model"], "checkpoint vs rank 0")


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, ddp_run) -> dict[str, Any]:
    """SIGTERM to the torchrun process group during epoch 2, then the same command again."""
    assert ddp_run["rc"] == 0, ddp_run["log"]
    base = tmp_path_factory.mktemp("ddp_preempt")
    out, probe = base / "run", base / "probe"
    launch = Launch(out, probe)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        ckpts = out / "checkpoints"
        while not (ckpts.is_dir() and any(p.name.startswith("ckpt-e00001-") for p in ckpts.iterdir())):
            assert launch.proc.poll() is None, f"torchrun exited before epoch 1 ended:\n{launch.output()}"
            assert time.monotonic() < deadline, "epoch 1 did not end in time"
            time.sleep(0.02)
        # epoch 2 has begun (its 20 steps take seconds here): preempt it
        t_sig = time.monotonic()
        os.killpg(launch.proc.pid, signal.SIGTERM)
        rc = launch.wait()
        stopped_in = time.monotonic() - t_sig
    finally:
        launch.kill()
    stop = {"rc": rc, "log": launch.output(), "stopped_in": stopped_in, "result": _result(out),
            "checkpoint_path": list_checkpoints(out / "checkpoints")[-1], "checkpoint": _final_checkpoint(out),
            "rank0": torch.load(probe / "rank0-preempted.pt", weights_only=True),
            "rank1": torch.load(probe / "rank1-preempted.pt", weights_only=True)}
    rc, log = _run(out, probe)
    return {"out": out, "probe": probe, "stop": stop, "rc": rc, "log": log}


def test_ddp_sigterm_writes_a_checkpoint(preempted):
    stop = preempted["stop"]
    log = stop["log"]
    # torchrun itself exits 1 (SignalException, whatever the workers return); the workers stopped
    # on their own, well before the launcher's 30 s SIGKILL grace
    assert stop["rc"] != 0, log
    assert stop["stopped_in"] < 25, (stop["stopped_in"], log)
    assert log.count("preempted:") == 2, log
    rec = stop["result"]
    assert rec["status"] == "preempted" and rec["world_size"] == 2, rec
    ck = stop["checkpoint"]
    assert ck["epoch"] == 1 and 0 < ck["batch"] < STEPS, (ck["epoch"], ck["batch"])
    assert ck["step"] == STEPS + ck["batch"] == rec["steps"]
    # at the preemption point the replicas' parameters agree (BN running statistics are rank-local
    # until DDP broadcasts rank 0's at the next forward, so they may differ), and the checkpoint
    # holds rank 0's state
    p0, p1 = stop["rank0"], stop["rank1"]
    assert p0["step"] == p1["step"] == ck["step"]
    _assert_same_state(p0["params"], p1["params"], "preempted rank 0 vs rank 1 parameters")
    _assert_same_state(ck["model"], p0["model"], "preemption checkpoint vs rank 0")


def test_ddp_resume_after_sigterm_matches_uninterrupted(preempted, ddp_run):
    """The same command again resumes from the preemption checkpoint and ends where the
    uninterrupted run ended: bit-identical weights, optimizer state and evaluation metrics."""
    # exact: as _assert_same_state (same operations, same shapes, same thread count, one machine)
    out, probe = preempted["out"], preempted["probe"]
    assert preempted["rc"] == 0, preempted["log"]
    rec = _result(out)
    assert rec["status"] == "completed" and rec["world_size"] == 2
    assert rec["resumed_from"] == str(preempted["stop"]["checkpoint_path"])
    _assert_finite_run(out)
    r0 = torch.load(probe / "rank0-completed.pt", weights_only=True)
    r1 = torch.load(probe / "rank1-completed.pt", weights_only=True)
    _assert_same_state(r0["model"], r1["model"], "resumed rank 0 vs rank 1")
    ref, got = _final_checkpoint(ddp_run["out"]), _final_checkpoint(out)
    assert (got["epoch"], got["step"]) == (ref["epoch"], ref["step"])
    _assert_same_state(got["model"], ref["model"], "resumed vs uninterrupted")
    assert got["optimizer"]["state"].keys() == ref["optimizer"]["state"].keys()
    for i in ref["optimizer"]["state"]:
        a, b = got["optimizer"]["state"][i], ref["optimizer"]["state"][i]
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"]), f"momentum of parameter {i}"
    evals = lambda run: [r for r in _metrics(run) if r["kind"] != "train"]  # noqa: E731
    assert evals(out) == evals(ddp_run["out"])
    assert rec["metrics"] == _result(ddp_run["out"])["metrics"]
    # epoch 1 ended before the preemption, so its train record is the uninterrupted one
    assert _metrics(out)[0] == _metrics(ddp_run["out"])[0]


def test_ddp_resume_logs_the_same_train_loss(preempted, ddp_run):
    """The trainer promises the same *metrics* after a resume too: the train loss of the interrupted
    epoch is an all-reduce of every rank's running sum, so every rank's share must survive."""
    assert preempted["rc"] == 0, preempted["log"]
    assert _metrics(preempted["out"]) == _metrics(ddp_run["out"])


@pytest.mark.slow
def test_ddp_sigterm_to_one_rank_stops_all_ranks(tmp_path):
    """A signal that reaches the ranks at different step boundaries (here: only rank 1, the extreme
    case; in practice one node's launcher before another's) must still stop every rank at the same
    step with a checkpoint, not deadlock until the collective timeout."""
    out, probe = tmp_path / "run", tmp_path / "probe"
    launch = Launch(out, probe, NPAS_DIST_TIMEOUT="20")
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        ckpts = out / "checkpoints"
        while not (ckpts.is_dir() and any(p.name.startswith("ckpt-e00001-") for p in ckpts.iterdir())):
            assert launch.proc.poll() is None, f"torchrun exited before epoch 1 ended:\n{launch.output()}"
            assert time.monotonic() < deadline, "epoch 1 did not end in time"
            time.sleep(0.02)
        rank1 = int((probe / "rank1.pid").read_text())
        os.kill(rank1, signal.SIGTERM)
        rc = launch.wait()
    finally:
        launch.kill()
    log = launch.output()
    assert (out / "result.json").is_file(), log
    rec = _result(out)
    assert rec["status"] == "preempted", rec
    ck = _final_checkpoint(out)
    assert ck["epoch"] == 1 and 0 < ck["batch"] < STEPS and ck["step"] == rec["steps"]
    assert rc != 0 and log.count("preempted:") == 2, log


def test_superweights_search_and_unsharing_under_ddp(tmp_path):
    """A SuperWeight ensemble under 2-process DDP: rank 0 runs the search phase and broadcasts its
    artifact; at the unsharing event every rank analyses the same data and takes rank 0's decision,
    the optimizer and the DDP wrapper are rebuilt, and both ranks end with identical weights."""
    out, probe = tmp_path / "run", tmp_path / "probe"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "npasbench.cli", "train", "--method", "superweights", "--arch", "wrn-10-2", "--dataset", "synthetic",
           "--budget", "300k", "--epochs", "2", "--out", str(out), "--no-progress",
           "--opt", "members=wrn-10-2,wrn-10-1", "--opt", "group_split_epochs=1", "--opt", "search_steps_per_epoch=2",
           "--opt", "coefficient_unshare_epochs=1", "--opt", "coefficient_unshare_batches=2",
           "--opt", "coefficient_unshare_threshold=1.0", *OVERRIDES]
    launch = Launch(out, probe, cmd=cmd)
    try:
        rc = launch.wait()
    finally:
        launch.kill()
    assert rc == 0, launch.output()
    rec = _result(out)
    info = rec["method_info"]
    assert rec["world_size"] == 2 and info["clusters_from"] == "search"
    (event,) = info["unsharing"]
    assert event["rows_after"] > event["rows_before"] and info["coefficient_rows"] == event["rows_after"]
    r0 = torch.load(probe / "rank0-completed.pt")
    r1 = torch.load(probe / "rank1-completed.pt")
    _assert_same_state(r0["params"], r1["params"], "superweights ranks after unsharing")
    assert len(rec["metrics"]["anytime"]) == 3
