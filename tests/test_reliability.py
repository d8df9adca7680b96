"""What an unattended grid needs from one run (issue 11), tested with real parts: real processes on
one folder, real signals, a real read-only mount and a real full tmpfs, crafted pickles, damaged records.

Classes: one folder one writer; signals before the loop; operating-system faults; values that pass
types but make no sense; untrusted data files; record readers; file permissions. (Divergence and
unusable checkpoints: ``test_divergence.py`` and ``test_resume.py``.)
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npasbench.cli import main, parse_args
from npasbench.config import build_config
from npasbench.errors import DataError, FolderBusy, NPASError
from npasbench.trainer import train
from npasbench.trainer.checkpoint import list_checkpoints, load_checkpoint
from npasbench.trainer.metrics import read_jsonl

NPAS = [sys.executable, "-m", "npasbench.cli"]
FAST = ["--arch", "wrn-10-1", "--dataset", "synthetic", "--no-progress"]


def _train_cmd(out: Path, *extra: str, method: str = "unshared", epochs: int = 2) -> list[str]:
    return [*NPAS, "train", "--method", method, *FAST, "--epochs", str(epochs), "--out", str(out),
            "data.synthetic_train=512", "data.synthetic_test=256", "train.batch_size=64", *extra]


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _one_line_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr[-2000:]
    for n in needles:
        assert n in errors[0], errors[0]


# -- one run folder, one writer ----------------------------------------------------------------
def test_a_second_process_on_the_same_folder_refuses(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(out, epochs=30), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "config.json").is_file(), what="the first run to set up")
        config_before = (out / "config.json").read_bytes()
        # the second one is another experiment: refused before touching anything
        second = subprocess.run(_train_cmd(out, "train.seed=7", epochs=30), capture_output=True, text=True, timeout=120)
        assert second.returncode == 5
        _one_line_error(second.stderr, "run.out", "in use by another process", f"pid {first.pid}")
        assert (out / "config.json").read_bytes() == config_before
        # the first run's metrics log exists once it has finished an epoch (on a busy machine, later than the above)
        _wait_for(lambda: (out / "metrics.jsonl").is_file(), what="the first run's first epoch")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 75
    # one writer: every metrics line is whole and epochs are consecutive
    epochs = [r["epoch"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert epochs == list(range(1, len(epochs) + 1))


def test_a_lock_dies_with_its_process(tmp_path):
    """kill -9 leaves no stale lock: the kernel drops a flock with its holder, and the rerun resumes."""
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(out, epochs=8), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: bool(list_checkpoints(out / "checkpoints")), what="a checkpoint")
    first.kill()
    first.wait(timeout=30)
    again = subprocess.run(_train_cmd(out, epochs=8), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "completed" and rec["resumed_from"]


def test_folder_lock_in_process(tmp_path):
    from npasbench.storage import folder_lock

    with folder_lock(tmp_path / "a"):
        with pytest.raises(FolderBusy, match="in use by another process"):
            with folder_lock(tmp_path / "a"):
                pass
        t0 = time.monotonic()
        with pytest.raises(FolderBusy):
            with folder_lock(tmp_path / "a", wait_s=0.6):
                pass
        assert time.monotonic() - t0 >= 0.5
    with folder_lock(tmp_path / "a"):  # released on exit
        pass
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "b"):
            raise RuntimeError("refused")
    assert not (tmp_path / "b").exists()  # a refused run that wrote nothing leaves no folder behind


def test_a_refused_run_leaves_the_folder_as_it_was(tiny, tmp_path):
    train(build_config({}, tiny))
    before = {p: p.read_bytes() for p in Path(tiny["run.out"]).rglob("*") if p.is_file()}
    rc = main(["train", "--config", str(_toml(tmp_path, tiny)), "train.seed=9", "--no-progress"])
    assert rc == 2  # the checkpoints belong to another config: refused in the checkpoint lookup
    after = {p: p.read_bytes() for p in Path(tiny["run.out"]).rglob("*") if p.is_file()}
    assert after == before


def _toml(tmp_path: Path, overrides: dict) -> Path:
    import tomli_w

    tree: dict = {}
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        tree.setdefault(section, {})[name] = value
    path = tmp_path / "exp.toml"
    path.write_text(tomli_w.dumps(tree))
    return path


# -- signals before the training loop ----------------------------------------------------------
SSN_SEARCH = ["--budget", "20000", "--opt", "param_groups=2", "--opt", "search_epochs=15",
              "--opt", "search_steps_per_epoch=2", "train.max_steps_per_epoch=2"]


def test_sigterm_during_a_search_phase_is_a_clean_resumable_stop(tmp_path):
    out = tmp_path / "run"
    cmd = _train_cmd(out, *SSN_SEARCH, method="ssn", epochs=1)
    cmd.remove("--no-progress")  # the search's progress bar says when it has started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    seen = ""
    while "ssn search" not in seen:
        ch = proc.stderr.read(1)
        assert ch, f"the run ended before its search: {seen[-2000:]}"
        seen += ch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "Traceback" not in err and "stopped by SIGTERM during model and phases" in err
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "preempted" and rec["stopped"] == {"stage": "model and phases", "signal": "SIGTERM"}
    assert not (out / "artifacts").exists()  # no half-done phase artifact: the search reruns whole
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json", "config.toml", "history.jsonl", "result.json"]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [(e["kind"], e.get("stage")) for e in history] == [("start", None), ("stop", "model and phases")]
    again = subprocess.run(_train_cmd(out, *SSN_SEARCH, method="ssn", epochs=1), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    done = json.loads((out / "result.json").read_text())
    ref_out = tmp_path / "ref"
    ref = subprocess.run(_train_cmd(ref_out, *SSN_SEARCH, method="ssn", epochs=1), capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0
    assert done["metrics"] == json.loads((ref_out / "result.json").read_text())["metrics"]
    assert done["run_id"] == rec["run_id"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_every_stop_signal_checkpoints_in_the_loop(tmp_path, signum):
    """SLURM's SIGTERM, a configured USR1, and USR2 (what submitit sends its jobs): the same clean stop."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(out, epochs=30), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: bool(list_checkpoints(out / "checkpoints")), what="the first checkpoint")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "preempted" and rec["epochs"] == 30
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert state["step"] == rec["steps"]  # the checkpoint is where the run stopped


def test_sigterm_while_reading_the_data(tmp_path):
    """CIFAR-100 from its pickles takes a few seconds: a stop there is the same clean stop."""
    from conftest import cifar100_root

    root = cifar100_root()
    if root is None:
        pytest.skip("the real CIFAR-100 copy (../shared/data) is not here")
    out = tmp_path / "run"
    cmd = [*NPAS, "train", "--method", "unshared", "--arch", "wrn-10-1", "--dataset", "cifar100", "--epochs", "1",
           "--out", str(out), "--data-root", str(root), "--no-progress", "train.max_steps_per_epoch=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / ".lock").is_file(), what="the run to claim its folder")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    rec = json.loads((out / "result.json").read_text())
    # where exactly the signal lands depends on the machine's load (the pickles take 0.3 s to seconds): any
    # stage before training, each a clean stop with its stage named (test_a_stop_in_the_data_stage pins one)
    assert rec["status"] == "preempted" and rec["stopped"]["stage"] in ("set-up", "checkpoint lookup", "data",
                                                                        "model and phases")


def test_a_stop_in_the_data_stage_is_recorded_as_such(tiny):
    from npasbench.trainer.loop import Trainer

    class StopInData(Trainer):
        def setup_data(self, runtime):
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered while the data would load
            time.sleep(1)

    res = StopInData(build_config({}, tiny)).run()
    rec = json.loads((res.run_dir / "result.json").read_text())
    assert (res.exit_code, rec["status"], rec["stopped"]) == (75, "preempted", {"stage": "data", "signal": "SIGTERM"})


def test_a_stop_never_overwrites_a_finished_record(tiny):
    from npasbench.trainer.loop import Trainer

    first = train(build_config({}, tiny))
    assert first.status == "completed"
    record = (first.run_dir / "result.json").read_bytes()

    class StopInData(Trainer):
        def setup_data(self, runtime):
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered during set-up
            time.sleep(1)

    res = StopInData(build_config({}, tiny)).run()
    assert res.status == "preempted" and res.exit_code == 75
    assert (first.run_dir / "result.json").read_bytes() == record


# -- operating-system faults -------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """Mount a real tmpfs (``size``, optionally read-only) under tmp_path; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "8m", read_only: bool = False) -> Path:
        d = tmp_path / name
        d.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); these tests need root, "
                        "as in CI")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_read_only_run_folder_is_one_line_before_any_work(tmpfs):
    ro = tmpfs("ro", read_only=True)
    res = subprocess.run(_train_cmd(ro / "run"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    _one_line_error(res.stderr, "run.out", "Read-only file system", "choose a writable folder")
    assert not any(ro.iterdir())


def test_a_read_only_checkpoints_folder_is_found_before_training(tmp_path):
    """checkpoints/ on a read-only mount inside a writable run folder (a bind mount: real, as root in CI) is
    refused at the claim, before the data or one epoch; it used to surface only at the first checkpoint."""
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True)
    r = subprocess.run(["mount", "--bind", str(ckpt), str(ckpt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({r.stderr.strip() or r.returncode}); this test needs root, as in CI")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ckpt)], check=True, capture_output=True)
        res = subprocess.run(_train_cmd(out), capture_output=True, text=True, timeout=120)
        assert res.returncode == 2
        _one_line_error(res.stderr, "run.out (its checkpoints/ folder)", "Read-only file system")
        assert not (out / "metrics.jsonl").exists()
    finally:
        subprocess.run(["umount", "-l", str(ckpt)], check=False)


def test_a_read_only_phase_dir_is_refused_up_front(tmpfs, tmp_path):
    ro = tmpfs("ro", read_only=True)
    res = subprocess.run(_train_cmd(tmp_path / "run", f"run.phase_dir={ro / 'phases'}"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    _one_line_error(res.stderr, "run.phase_dir", "Read-only file system")
    assert not (tmp_path / "run").exists()


def test_a_disk_too_full_for_one_checkpoint_is_refused_before_training(tmpfs):
    small = tmpfs("small", size="600k")
    res = subprocess.run(_train_cmd(small / "run"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    _one_line_error(res.stderr, "run.out", "MiB free", "a checkpoint")
    assert not (small / "run" / "checkpoints").exists()


def test_a_disk_filling_up_mid_run_keeps_the_checkpoint_and_resumes(tmpfs, tmp_path):
    disk = tmpfs("disk", size="8m")
    out = disk / "run"
    cmd = _train_cmd(out, epochs=10)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: bool(list_checkpoints(out / "checkpoints")), what="the first checkpoint")
    with open(disk / "filler", "wb") as fh:  # fill the disk to the last byte
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    _one_line_error(err, "could not write", "No space left on device", "resumes from its newest checkpoint")
    newest = list_checkpoints(out / "checkpoints")[-1]
    load_checkpoint(newest)  # intact
    assert not list((out / "checkpoints").glob(".*.tmp"))  # no partial file left
    (disk / "filler").unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "completed" and rec["resumed_from"].endswith(newest.name)
    ref = subprocess.run(_train_cmd(tmp_path / "ref", epochs=10), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0
    assert rec["metrics"] == json.loads((tmp_path / "ref" / "result.json").read_text())["metrics"]


# -- values that pass their types but make no sense --------------------------------------------
NONSENSE = [
    (["optim.momentum=-0.5"], "optim.momentum"),
    (["optim.momentum=1.5"], "optim.momentum"),
    (["optim.weight_decay=-1"], "optim.weight_decay"),
    (["optim.lr=nan"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.grad_clip=-1"], "optim.grad_clip"),
    (["optim.warmup_epochs=-2"], "optim.warmup_epochs"),
    (["optim.warmup_start_factor=0"], "optim.warmup_start_factor"),
    (["optim.gammas=-0.2,0.2,0.2"], "optim.gammas"),
    (["optim.milestones=-5,10,20"], "optim.milestones"),
    (["train.threads=-3"], "train.threads"),
    (["run.keep_checkpoints=0"], "run.keep_checkpoints"),
    (["--budget", " "], "model.budget: empty value"),
    (["--budget", ""], "model.budget: empty value"),
    (["--budget", "1e12"], "budgets above 64x are refused"),
    (["--method", "ssn", "--budget", "1e9"], "budgets above 64x are refused"),
    (["--method", "ensemble", "--budget", "1e9"], "networks of its 2 members"),
    (["--method", "ssn", "--budget", "20000", "--opt", "search_milestones=20,10"], "method.options.search_milestones"),
    (["--method", "ssn", "--budget", "20000", "--opt", "search_steps_per_epoch=-1"],
     "method.options.search_steps_per_epoch"),
    (["--method", "ssn", "--budget", "20000", "--opt", "search_epochs=0"], "method.options.search_epochs"),
    (["--method", "ssn", "--budget", "20000", "--opt", "search_gammas=0,0.1"], "method.options.search_gammas"),
    (["--method", "superweights", "--opt", "group_split_threshold_start=-3"],
     "method.options.group_split_threshold_start"),
]


@pytest.mark.parametrize("extra,message", NONSENSE, ids=[" ".join(e) for e, _ in NONSENSE])
def test_nonsense_values_are_one_clear_error_before_anything_is_written(extra, message, tmp_path, capsys):
    # overrides and options mixed freely (a later --method wins)
    argv = ["train", *FAST, "--method", "unshared", "--epochs", "1", "--out", str(tmp_path / "r"), *extra]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_search_max_params_too_small_is_named(tmp_path, capsys):
    rc = main(["train", "--method", "ssn", *FAST, "--budget", "20000", "--opt", "param_groups=2", "--opt",
               "search_max_params=10", "--epochs", "1", "--out", str(tmp_path / "r"), "train.max_steps_per_epoch=1",
               "data.synthetic_train=256"])
    err = capsys.readouterr().err
    assert rc == 2 and "method.options.search_max_params" in err and "Traceback" not in err, err


def test_an_out_of_memory_build_is_a_budget_error():
    """Within the 64x cap a build can still exceed the machine; that is a BudgetError, not a traceback."""
    from npasbench.budget import Budget
    from npasbench.errors import BudgetError
    from npasbench.factory import build_checked, make_request
    from npasbench.plugins import create_method

    method = create_method("ssn", {})

    def build(request):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3999999997760 bytes")

    method.build = build  # the allocator's own error text, as torch raises it
    with pytest.raises(BudgetError, match="ran out of memory on this machine"):
        build_checked(method, make_request("wrn-10-1", "cifar100", Budget(5_000_000)))


def test_overrides_work_anywhere_on_the_line():
    args = parse_args(["train", "model.arch=wrn-10-1", "--epochs", "1", "train.seed=3", "--seed", "2", "data.name=x"])
    assert args.overrides == ["model.arch=wrn-10-1", "train.seed=3", "data.name=x"] and args.epochs == 1
    with pytest.raises(SystemExit):
        parse_args(["train", "--epochs", "1", "--bogus"])
    with pytest.raises(SystemExit):  # only `npas train` takes overrides
        parse_args(["params", "--method", "unshared", "--arch", "wrn-10-1", "x.y=1"])


def test_an_integer_budget_in_toml(tiny, tmp_path):
    cfg_path = _toml(tmp_path, {**tiny, "method.name": "ssn", "model.budget": 20000})
    rc = main(["train", "--config", str(cfg_path), "--no-progress"])
    assert rc == 0
    rec = json.loads((Path(tiny["run.out"]) / "result.json").read_text())
    assert rec["budget"] == {"params": 20000, "mode": "total"}


def test_demo_exits_nonzero_when_a_run_fails(tmp_path):
    """A run that fails at run time (its data folder is missing) makes `npas demo` exit 1 and list it."""
    from npasbench.demo import run_demo

    spec = tmp_path / "demo.toml"
    spec.write_text('[grid]\nname = "broken-demo"\nresults = "x"\n\n[base]\n"train.epochs" = 1\n'
                    f'"data.root" = "{tmp_path / "nowhere"}"\n\n[axes]\narchs = ["wrn-10-1"]\n'
                    'datasets = ["cifar100"]\nbudgets = ["full"]\nseeds = [0]\n\n[[methods]]\nname = "unshared"\n')
    result = run_demo(tmp_path / "out", spec=spec, executor="debug", progress=False)
    assert result.exit_code == 1 and len(result.unfinished) == 1 and "failed" in result.unfinished[0]


# -- untrusted data files ----------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_crafted_cifar_pickle_does_not_run_code(tmp_path, protocol):
    from npasbench.data.cifar import load_cifar_pickle

    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    payload = pickle.dumps({"data": _Exploit(marker), "fine_labels": [0]}, protocol=protocol)
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="refused global posix.system"):
        load_cifar_pickle(open(folder / "train", "rb"))
    rc = main(["train", "--method", "unshared", "--arch", "wrn-10-1", "--dataset", "cifar100", "--epochs", "1",
               "--data-root", str(tmp_path), "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2 and not marker.exists()


def test_the_restricted_unpickler_reads_cifar_shaped_pickles(tmp_path):
    import numpy as np

    from npasbench.data.cifar import CIFAR_SPECS, _read_pickle_file

    CIFAR100 = CIFAR_SPECS["cifar100"]

    entry = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "fine_labels": [3, 99],
             "coarse_labels": [1, 2], "filenames": [b"a.png", b"b.png"], "batch_label": "training batch 1 of 1"}
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps(entry, protocol=protocol))
        data, labels = _read_pickle_file(path, CIFAR100)
        assert (data == entry["data"]).all() and labels.tolist() == [3, 99]
    bad = tmp_path / "bad"
    bad.write_bytes(pickle.dumps({"data": stat.S_IMODE}, protocol=2))  # any other global: refused by name
    with pytest.raises(DataError, match="refused global"):
        _read_pickle_file(bad, CIFAR100)


# -- record readers ----------------------------------------------------------------------------
BAD_RECORDS = {
    "truncated": b'{"schema_version": 3, "status": "comp',
    "not utf-8": b'{"status": "completed", "x": "\xff\xfe"}',
    "a list": b"[1, 2, 3]",
    "missing keys": json.dumps({"schema_version": 3, "status": "completed", "run_id": "abc",
                                "method": {"name": "unshared"}, "config": {}}).encode(),
    "newer schema": json.dumps({"schema_version": 99, "status": "completed"}).encode(),
    "no schema": json.dumps({"status": "completed", "run_id": "abc"}).encode(),
    "empty": b"",
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_bad_records_are_reported_and_skipped(kind, tiny, tmp_path):
    from npasbench.leaderboard import collect
    from npasbench.records import read_record

    good = train(build_config({}, {**tiny, "run.out": str(tmp_path / "all" / "good")}))
    bad = tmp_path / "all" / "bad" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(BAD_RECORDS[kind])
    rec, problem = read_record(bad)
    assert rec is None and problem is not None and problem.path == bad
    got = collect([tmp_path / "all"])  # what the leaderboard reads: the good record, one problem note for the bad
    assert [r["run_id"] for r in got.records] == [good.record["run_id"]]
    assert [(n.kind, n.path) for n in got.notes] == [("problem", str(bad))]


def test_a_bad_record_in_a_grid_is_shown_and_rerun(tmp_path):
    from npasbench.grid.runner import plan_grid, run_grid, status_rows

    spec = tmp_path / "g.toml"
    spec.write_text(f'[grid]\nname = "g"\nresults = "{tmp_path / "res"}"\n\n[base]\n"train.epochs" = 1\n'
                    '"train.max_steps_per_epoch" = 2\n"data.synthetic_train" = 256\n"data.synthetic_test" = 128\n\n'
                    '[axes]\narchs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [0]\n\n'
                    '[[methods]]\nname = "unshared"\n')
    assert run_grid(spec, "debug", progress=False).ok
    plan = plan_grid(spec, write=False)
    record = tmp_path / "res" / plan.runs[0].folder / "result.json"
    record.write_bytes(record.read_bytes()[:100])  # truncated, as by a crash of a foreign writer
    rows, counts = status_rows(plan)
    assert rows[0]["state"] == "bad record" and "not valid JSON" in rows[0]["detail"]
    out = run_grid(spec, "debug", progress=False)
    assert out.ok and out.counts["done"] == 1
    assert json.loads(record.read_text())["status"] == "completed"


# -- file permissions --------------------------------------------------------------------------
def test_files_keep_normal_permissions(tiny, tmp_path):
    from npasbench.atomic import write_text

    old = os.umask(0o022)
    try:
        res = train(build_config({}, tiny))
        for name in ("result.json", "config.json", "config.toml", "metrics.jsonl"):
            assert stat.S_IMODE((res.run_dir / name).stat().st_mode) == 0o644, name
        assert stat.S_IMODE(list_checkpoints(res.run_dir / "checkpoints")[-1].stat().st_mode) == 0o644
        os.umask(0o002)
        write_text(tmp_path / "group.txt", "x")
        assert stat.S_IMODE((tmp_path / "group.txt").stat().st_mode) == 0o664
        (tmp_path / "group.txt").chmod(0o640)
        write_text(tmp_path / "group.txt", "y")  # replacing a file keeps its mode
        assert stat.S_IMODE((tmp_path / "group.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_every_error_class_is_an_npas_error():
    from npasbench.errors import StorageError

    assert issubclass(FolderBusy, NPASError) and FolderBusy.exit_code == 5
    assert issubclass(StorageError, NPASError) and StorageError.exit_code == 2
