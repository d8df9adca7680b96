"""Leaderboards from records: golden markdown and CSVs, deterministic plots, every kind of bad input.

Records are written here by ``make_record`` (schema 3, the trainer's keys), so the expected files do
not depend on training; ``test_a_real_grid_collects`` covers records the trainer wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest

from npasbench.errors import NPASError
from npasbench.leaderboard import build_leaderboard, collect
from npasbench.leaderboard.stats import bootstrap_interval, summarize, t975

GOLDEN = Path(__file__).parent / "data" / "leaderboard"
UPDATE = os.environ.get("NPAS_UPDATE_GOLDEN") == "1"  # regenerate the golden files on purpose


def make_record(method="unshared", arch="wrn-10-1", budget=None, seed=0, top1=50.0, status="completed",
                options=None, params=77_850, dataset="cifar100", sha="a" * 40, dirty=False, members=None,
                created="2026-12-01T00:00:00+00:00", epochs=3, train_s=3600.0) -> dict:
    run_id = hashlib.sha256(json.dumps([method, arch, budget, seed, options, dataset, epochs]).encode()).hexdigest()[:16]
    metrics = {"top1": top1, "top5": top1 + 20, "loss": 1.0, "examples": 10000, "split": "test"}
    per_member = [25_000_000]
    if members:
        per_member = [25_000_000] * len(members)
        metrics["members"] = [{"name": m, "top1": top1 - 2 - i, "top5": top1 + 10, "loss": 1.0}
                              for i, m in enumerate(members)]
        metrics["anytime"] = [{"members": [m], "flops": 25_000_000, "top1": top1 - 2 - i, "top5": 0, "frontier": i == 0}
                              for i, m in enumerate(members)]
        metrics["anytime"].append({"members": list(members), "flops": 25_000_000 * len(members), "top1": top1,
                                   "top5": 0, "frontier": True})
    return {
        "schema_version": 3, "status": status, "run_id": run_id,
        "method": {"name": method, "source": "in-tree"}, "arch": arch, "members": list(members or [arch]),
        "dataset": {"name": dataset, "num_classes": 100}, "synthetic": dataset == "synthetic",
        "budget": {"params": budget, "mode": "total"} if budget else None,
        "params": {"total": params, "flops": {"total": sum(per_member), "per_member": per_member}},
        "metrics": metrics if status == "completed" else {}, "selection": {"split": "none", "rule": "last epoch"},
        "epochs": epochs, "seed": seed, "steps": 100,
        "config": {"method": {"name": method, "options": dict(options or {})}},
        "git": {"sha": sha, "dirty": dirty}, "hardware": {"device": "cpu"}, "world_size": 1,
        "timing": {"train_s": train_s, "wall_s": train_s + 10}, "created_at": created,
    }


def write(root: Path, name: str, rec: dict | bytes | str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    if isinstance(rec, dict):
        path.write_text(json.dumps(rec))
    elif isinstance(rec, bytes):
        path.write_bytes(rec)
    else:
        path.write_text(rec)
    return path


def populate(root: Path) -> None:
    """A small benchmark: unshared and SSN at two budgets, 3 seeds; an ensemble; every kind of bad input."""
    for seed, (u, s1, s2) in enumerate([(60.0, 55.0, 58.0), (61.0, 55.5, 58.5), (59.5, 54.0, 57.0)]):
        write(root, f"unshared-s{seed}", make_record(seed=seed, top1=u))
        write(root, f"ssn40-s{seed}", make_record("ssn", budget=40_000, seed=seed, top1=s1, params=39_990))
        write(root, f"ssn120-s{seed}", make_record("ssn", budget=120_000, seed=seed, top1=s2, params=119_000,
                                                   options={"share_type": "emb"}))
    write(root, "ens-s0", make_record("ensemble", seed=0, top1=63.0, params=155_700,
                                      members=["wrn-10-1#1", "wrn-10-1#2"]))
    write(root, "hashed-s0", make_record("hashed", budget=40_000, seed=0, top1=40.0, params=40_000, dirty=True))
    write(root, "hashed-s1", make_record("hashed", budget=40_000, seed=1, status="diverged", params=40_000,
                                         sha="b" * 40))
    # left out, each with one line
    write(root, "dup-of-unshared-s0", make_record(seed=0, top1=60.0, created="2025-01-01T00:00:00+00:00"))
    write(root, "truncated", b'{"schema_version": 3, "status": "comp')
    write(root, "latin1", b'{"status": "completed", "x": "\xff"}')
    write(root, "a-list", "[1, 2]")
    write(root, "newer-schema", json.dumps({**make_record(seed=7), "schema_version": 99}))  # refused by name
    write(root, "preempted", json.dumps({**make_record(seed=8), "status": "preempted"}))
    running = root / "running-run"
    running.mkdir()
    (running / "config.json").write_text("{}")
    (running / "running.json").write_text("{}")


REFERENCES = """
[[reference]]
dataset = "cifar100"
arch = "wrn-10-1"
method = "unshared"
budget = "none"
epochs = 3
top1 = 61.5
source = "a number measured here on the official code (test data)"
verified = true

[[reference]]
dataset = "cifar100"
arch = "wrn-10-1"
method = "ssn"
budget = 40000
top1 = 56.0
source = "a paper's table, not checked (test data)"
verified = false
"""


def test_golden_markdown_and_csvs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    populate(Path("runs"))
    Path("refs.toml").write_text(REFERENCES)
    board = build_leaderboard(["runs"], "out/LEADERBOARD.md", "npas leaderboard runs --out out/LEADERBOARD.md",
                              references="refs.toml")
    c = board.collection
    assert len(c.records) == 12  # 9 + ensemble + 2 hashed
    assert {n.kind for n in c.notes} == {"problem", "unfinished", "duplicate"}
    assert c.count("problem") == 4 and c.count("unfinished") == 2 and c.count("duplicate") == 1
    for name in ("LEADERBOARD.md", "LEADERBOARD_runs.csv", "LEADERBOARD_cells.csv"):
        got = (Path("out") / name).read_text()
        golden = GOLDEN / name
        if UPDATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(got)
        assert got == golden.read_text(), f"{name} differs from {golden} (NPAS_UPDATE_GOLDEN=1 regenerates it)"
    md = (Path("out") / "LEADERBOARD.md").read_text()
    assert md.startswith("<!-- generated by `npas leaderboard runs")
    assert "| 60.17 ± 1.90 (n=3)" in md  # unshared: mean of 60, 61, 59.5 +- t(0.975, 2) sd / sqrt(3)
    assert "1 of 2 diverged" in md and "mixed code (2 git shas)" in md and "dirty tree" in md
    assert "### low budget" in md and "### high budget" in md and "### natural size" in md
    assert "Anytime frontier" in md and "not valid JSON" in md and "in progress" in md
    assert "| unshared | (defaults) | none     | 61.50" in md and "-1.33" in md  # ours 60.17 - reference 61.50
    assert "no (not checked against the source)" in md


@pytest.mark.parametrize("text,message", [
    ('[[reference]]\ndataset = "c"\narch = "a"\nmethod = "m"\nbudget = "none"\ntop1 = 1.0\nverified = true\n',
     "missing source"),
    ('[[reference]]\ndataset = "c"\narch = "a"\nmethod = "m"\nbudget = "none"\ntop1 = 1.0\nsource = "x"\n',
     "missing verified"),
    ('[[reference]]\ndataset = "c"\narch = "a"\nmethod = "m"\nbudget = "10k"\ntop1 = 1.0\nsource = "x"\n'
     'verified = true\n', "budget must be"),
    ('[[reference]]\ndataset = "c"\narch = "a"\nmethod = "m"\nbudget = "none"\ntop1 = 1.0\nsource = " "\n'
     'verified = true\n', "source is empty"),
    ('[[reference]]\ndataset = "c"\narch = "a"\nmethod = "m"\nbudget = "none"\ntop1 = 1.0\nsource = "x"\n'
     'verified = true\nbogus = 1\n', "unknown key"),
    ("not toml [", "not valid TOML"),
])
def test_bad_reference_files_are_refused_before_writing(tmp_path, text, message):
    populate(tmp_path / "runs")
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(NPASError, match=message):
        build_leaderboard([tmp_path / "runs"], tmp_path / "L.md", "cmd", references=tmp_path / "r.toml")
    assert not (tmp_path / "L.md").exists()


def test_a_real_grid_collects(tmp_path):
    """Records the trainer wrote: a tiny grid (debug executor), then `npas grid collect`."""
    from npasbench.cli import main

    spec = tmp_path / "g.toml"
    spec.write_text(f'[grid]\nname = "g"\nresults = "{tmp_path / "res"}"\n\n[base]\n"train.epochs" = 1\n'
                    '"train.max_steps_per_epoch" = 2\n"data.synthetic_train" = 256\n"data.synthetic_test" = 128\n\n'
                    '[axes]\narchs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["50%"]\nseeds = [0, 1]\n\n'
                    '[[methods]]\nname = "unshared"\nbudgets = ["full"]\n\n[[methods]]\nname = "ssn"\n')
    assert main(["grid", "run", str(spec), "--executor", "debug", "--no-progress"]) == 0
    assert main(["grid", "collect", str(spec)]) == 0
    md = (tmp_path / "res" / "LEADERBOARD.md").read_text()
    assert "## synthetic, wrn-10-1" in md and "synthetic data" in md and "(n=2)" in md
    assert "| ssn " in md and "| unshared " in md and "Δ unshared" in md
    cells = (tmp_path / "res" / "LEADERBOARD_cells.csv").read_text().splitlines()
    assert len(cells) == 3  # header, unshared, ssn
    # the training curves of the grid's runs (tests/test_curves.py checks their numbers)
    assert (tmp_path / "res" / "LEADERBOARD_curves_synthetic_wrn-10-1.png").is_file()
    assert "### Training curves\n\n![training curves](LEADERBOARD_curves_synthetic_wrn-10-1.png)" in md


def test_same_records_same_bytes_and_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    populate(Path("runs"))
    build_leaderboard(["runs"], "a/L.md", "cmd")
    build_leaderboard(["runs"], "b/L.md", "cmd")
    for name in ("L.md", "L_runs.csv", "L_cells.csv", "L_cifar100_wrn-10-1.png"):
        assert (Path("a") / name).read_bytes() == (Path("b") / name).read_bytes(), name
    png = (Path("a") / "L_cifar100_wrn-10-1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert b"Software" not in png[:4096] and b"matplotlib" not in png


def test_golden_plot_bytes(tmp_path, monkeypatch):
    """The plot's bytes against the golden digest recorded for this matplotlib version (Agg output is
    stable within a version, not across them: a new version needs its digest recorded)."""
    import matplotlib

    monkeypatch.chdir(tmp_path)
    populate(Path("runs"))
    build_leaderboard(["runs"], "out/L.md", "cmd")
    digest = hashlib.sha256((Path("out") / "L_cifar100_wrn-10-1.png").read_bytes()).hexdigest()
    golden = GOLDEN / "plot_sha256.json"
    known = json.loads(golden.read_text()) if golden.is_file() else {}
    if UPDATE:
        known[matplotlib.__version__] = digest
        golden.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    if matplotlib.__version__ not in known:
        pytest.skip(f"no golden plot digest for matplotlib {matplotlib.__version__} (recorded: {sorted(known)}); "
                    "NPAS_UPDATE_GOLDEN=1 records it")
    assert digest == known[matplotlib.__version__]


def test_cells_numbers(tmp_path):
    populate(tmp_path)
    board = build_leaderboard([tmp_path], tmp_path / "L.md", "cmd", plots=False)
    cells = {(c.key["method"], c.key["budget"], c.key["entity"]): c for c in board.cells}
    u = cells[("unshared", None, "model")]
    assert u.top1.n == 3 and u.top1.mean == pytest.approx((60 + 61 + 59.5) / 3)
    sd = math.sqrt(sum((v - u.top1.mean) ** 2 for v in (60, 61, 59.5)) / 2)
    assert u.top1.sd == pytest.approx(sd) and u.top1.half_width == pytest.approx(4.303 * sd / math.sqrt(3))
    s = cells[("ssn", 40_000, "model")]
    assert s.delta.n == 3 and s.delta.mean == pytest.approx(((55 - 60) + (55.5 - 61) + (54 - 59.5)) / 3)
    from npasbench.experiment import unshared_size

    assert s.budget_pct == pytest.approx(100 * 40_000 / unshared_size("wrn-10-1", "cifar100"))  # 83,700
    h = cells[("hashed", 40_000, "model")]
    assert h.top1.n == 1 and h.diverged == 1 and h.runs == 2  # the diverged run counted, not averaged
    assert ("ensemble", None, "member wrn-10-1#1") in cells


def test_duplicates_are_resolved_deterministically(tmp_path):
    rec = make_record(seed=0, top1=60.0)
    write(tmp_path, "b", {**rec, "created_at": "2026-12-02T00:00:00+00:00", "metrics": {**rec["metrics"], "top1": 70.0}})
    write(tmp_path, "a", rec)
    write(tmp_path, "c", {**rec, "status": "diverged", "created_at": "2027-01-01T00:00:00+00:00"})
    c = collect([tmp_path])
    assert len(c.records) == 1 and c.records[0]["metrics"]["top1"] == 70.0  # completed, then newest
    assert c.count("duplicate") == 2


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(NPASError, match="no result.json below"):
        build_leaderboard([tmp_path], tmp_path / "L.md", "cmd")
    assert not (tmp_path / "L.md").exists()
    with pytest.raises(NPASError, match="is not a folder"):
        build_leaderboard([tmp_path / "nope"], tmp_path / "L.md", "cmd")
    with pytest.raises(NPASError, match="markdown"):
        build_leaderboard([tmp_path], tmp_path / "L.txt", "cmd")


def test_only_bad_records_give_a_board_that_says_so(tmp_path):
    write(tmp_path, "x", b"{")
    board = build_leaderboard([tmp_path], tmp_path / "L.md", "cmd", plots=False)
    assert "No finished runs." in board.markdown and "not valid JSON" in board.markdown


def test_stats():
    assert t975(1) == 12.706 and t975(30) == 2.042 and abs(t975(60) - 2.000) < 0.002
    assert summarize([]).n == 0 and summarize([5.0]).half_width is None and summarize([5.0]).text() == "5.00 (n=1)"
    lo, hi = bootstrap_interval([1.0, 2.0, 3.0, 4.0], 500, seed=3)
    assert (lo, hi) == bootstrap_interval([1.0, 2.0, 3.0, 4.0], 500, seed=3) and 1.0 <= lo < hi <= 4.0
    b = summarize([1.0, 2.0, 3.0, 4.0], bootstrap=500)
    assert b.n == 4 and b.half_width == pytest.approx((hi - lo) / 2) or b.half_width > 0


def test_cli_leaderboard(tmp_path, capsys):
    from npasbench.cli import main

    populate(tmp_path / "runs")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "L.md"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "12 finished runs" in out and "4 problem" in out and (tmp_path / "L.md").is_file()
    assert main(["leaderboard", str(tmp_path / "none"), "--out", str(tmp_path / "M.md")]) == 2


def test_a_grid_task_that_failed_before_training_is_listed_with_its_error(tmp_path):
    # a grid run whose phase failed: the runner wrote failed.json, the trainer never wrote config.json
    run = tmp_path / "runs" / "superweights_wrn-16-1_cifar100_50pct_s0_86f162ede9"
    run.mkdir(parents=True)
    (run / "failed.json").write_text(json.dumps({"error": "Traceback (most recent call last):\n  ...\n"
                                                 "npasbench.errors.BudgetError: budget: max_params=83,136 is below"}))
    broken = tmp_path / "runs" / "broken_s0"
    broken.mkdir()
    (broken / "failed.json").write_text("{not json")
    c = collect([tmp_path / "runs"])
    failed = {Path(n.path).name: n.text for n in c.notes if n.kind == "failed"}
    assert failed[run.name] == ("failed: npasbench.errors.BudgetError: budget: max_params=83,136 is below "
                                "(failed.json); rerun it")
    assert failed["broken_s0"] == "failed (see failed.json); rerun it"
    assert not c.records


def test_an_ensembles_budget_share_is_of_its_members_summed_unshared_size():
    # the committed CPU-scale grid (results/grids/cifar100-cpu-v2): a SuperWeight ensemble of wrn-16-1 + wrn-10-1
    # (180,916 + 83,700 = 264,616 unshared) at 132,308 is 50% of the full ensemble, a single WRN-16-1 at 90,458 50%,
    # and reduced width at 90,458 is 50% of the requested wrn-16-1, not 102.7% of the wrn-16-0.68 it trained
    from npasbench.leaderboard.tidy import rows_of

    grid = Path(__file__).resolve().parents[1] / "results" / "grids" / "cifar100-cpu-v2"
    ens = next(grid.glob("superweights-ens-16-1+10-1_*_132308_s0_*/result.json"))
    single = next(grid.glob("ssn-by-shape_wrn-16-1_cifar100_50pct_s0_*/result.json"))
    reduced = next(grid.glob("reduced_wrn-16-1_cifar100_50pct_s0_*/result.json"))
    assert json.loads(reduced.read_text())["members"] != ["wrn-16-1"]  # it trained a narrower network
    for path, pct in ((ens, 50.0), (single, 50.0), (reduced, 50.0)):
        rec = dict(json.loads(path.read_text()), _path=str(path))
        assert {round(r["budget_pct"], 6) for r in rows_of(rec)} == {pct}


def test_fair_comparison_columns(tmp_path):
    """Issue 22: rows named by the spec's labels, '% unshared' against the requested network (reduced width
    trains a narrower one), budget use with a flag below the threshold, the paired difference to reduced width
    at the same budget, and a mark where an interval excludes 0."""
    from npasbench.leaderboard.aggregate import UNDER_BUDGET_PCT

    root = tmp_path / "runs"
    for seed, (u, r, s, soft) in enumerate([(60.0, 50.0, 55.0, 52.0), (61.0, 50.5, 56.0, 51.0), (59.0, 49.0, 55.5, 53.5)]):
        write(root, f"u{seed}", make_record(seed=seed, top1=u))
        red = make_record("reduced", budget=38_925, seed=seed, top1=r, params=38_000, members=None)
        red["members"] = ["wrn-10-0.68"]  # the network reduced width trained in place of the requested one
        red["config"]["model"] = {"arch": "wrn-10-1"}
        write(root, f"r{seed}", red)
        ssn = make_record("ssn", budget=38_925, seed=seed, top1=s, params=38_925, options={"param_groups": 4})
        ssn["config"]["run"] = {"name": "4learned"}  # the label the grid stores (run.name)
        write(root, f"s{seed}", ssn)
        write(root, f"soft{seed}", make_record("soft-sharing", budget=38_925, seed=seed, top1=soft, params=35_000))
    board = build_leaderboard([root], tmp_path / "L.md", "cmd")
    cells = {c.name: c for c in board.cells}
    assert set(cells) == {"unshared", "reduced", "ssn [4learned]", "soft-sharing"}
    red, ssn, soft = cells["reduced"], cells["ssn [4learned]"], cells["soft-sharing"]
    from npasbench.experiment import unshared_size

    assert red.budget_pct == pytest.approx(100 * 38_925 / unshared_size("wrn-10-1", "cifar100", None))  # not vs 10-0.68
    assert red.budget_pct < 50 and red.regime.startswith("low budget")
    assert ssn.budget_used_pct == pytest.approx(100.0) and not any("budget" in f for f in ssn.flags)
    assert soft.budget_used_pct == pytest.approx(100 * 35_000 / 38_925) and soft.budget_used_pct < UNDER_BUDGET_PCT
    assert f"uses {100 * 35_000 / 38_925:.1f}% of its budget" in soft.flags
    assert ssn.delta_reduced.mean == pytest.approx(17 / 3) and ssn.delta_reduced.n == 3 and ssn.delta_reduced.excludes_zero
    assert red.delta_reduced is None and cells["unshared"].delta_reduced is None
    assert not soft.delta_reduced.excludes_zero  # 2, 0.5, 4.5: the interval spans 0
    md = board.markdown
    assert "| ssn [4learned] " in md and "param_groups" not in md  # the label, not the options, names the row
    row = next(l for l in md.splitlines() if l.startswith("| ssn [4learned]"))
    assert "5.67 ± " in row and "(n=3) *" in row and "| 100.0 " in row
    runs = (tmp_path / "L_runs.csv").read_text()
    assert "param_groups=4" in runs and "4learned" in runs  # the options stay in the CSVs
    assert (tmp_path / "L_cifar100_wrn-10-1.png").stat().st_size > 10_000
