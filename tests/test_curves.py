"""Training curves beside the leaderboard (leaderboard/curves.py): from real short runs, the figure is written and
linked, its means are the seeds' metrics.jsonl means, a bad metrics.jsonl leaves only that run out (with a note),
the bytes are the same for the same runs, and ``--no-plots`` skips the curves too."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from npasbench.config import build_config
from npasbench.leaderboard import build_leaderboard
from npasbench.leaderboard.curves import read_curves, training_curves
from npasbench.trainer import train

BASE = {"model.arch": "wrn-10-1", "data.name": "synthetic", "data.synthetic_train": 256, "data.synthetic_test": 128,
        "train.epochs": 3, "train.batch_size": 64, "train.eval_batch_size": 128, "train.max_steps_per_epoch": 2,
        "optim.milestones_unit": "fraction", "optim.milestones": [0.5], "optim.gammas": [0.2], "run.progress": False,
        "run.tensorboard": "off"}
FIGURE = "L_curves_synthetic_wrn-10-1.png"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """unshared (3 seeds, one of them with a corrupt metrics.jsonl) and hashed at half the parameters (2 seeds)."""
    root = tmp_path_factory.mktemp("curves") / "runs"
    for name, extra in [("unshared", {}), ("hashed", {"method.name": "hashed", "model.budget": "50%"})]:
        for seed in range(3 if name == "unshared" else 2):
            res = train(build_config({}, {**BASE, **extra, "train.seed": seed, "run.out": str(root / f"{name}-s{seed}")}))
            assert res.status == "completed"
    bad = root / "unshared-s2" / "metrics.jsonl"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1][:20]] + lines[2:]) + "\n")  # a torn line in the middle
    return root


def _points(run: Path, kind: str, field: str) -> dict[int, float]:
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["epoch"]: r[field] for r in recs if r["kind"] == kind}


def test_curves_are_the_seeds_means_and_linked(runs, tmp_path):
    board = build_leaderboard([runs], tmp_path / "L.md", "npas leaderboard runs --out L.md")
    png = (tmp_path / FIGURE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in png[:4096] and tmp_path / FIGURE in board.written
    md = board.markdown
    assert f"### Training curves\n\n![training curves]({FIGURE})" in md
    assert "unshared-s2`: metrics.jsonl line 2 is not valid JSON" in md  # left out, said, not fatal

    curves = training_curves(board.cells)
    assert list(curves) == [("synthetic", "wrn-10-1")]
    section = curves[("synthetic", "wrn-10-1")]
    by_method = {cc.cell.key["method"]: cc for cc in section.cells}
    assert set(by_method) == {"unshared", "hashed"} and section.splits == ["test"]
    assert by_method["unshared"].label == "unshared (n=2 of 3)" and by_method["unshared"].seeds == 2
    assert by_method["hashed"].label.startswith("hashed @ ") and by_method["hashed"].label.endswith("(n=2)")
    for method, seeds in (("unshared", [0, 1]), ("hashed", [0, 1])):
        for series, kind, field in ((by_method[method].train_loss, "train", "loss"),
                                    (by_method[method].eval_top1, "eval", "top1")):
            per_seed = [_points(runs / f"{method}-s{s}", kind, field) for s in seeds]
            assert series.epochs == [1, 2, 3] and series.n == [2, 2, 2]
            for i, epoch in enumerate(series.epochs):
                vals = [p[epoch] for p in per_seed]
                assert series.mean[i] == pytest.approx(sum(vals) / len(vals), rel=1e-12)
                assert (series.low[i], series.high[i]) == (min(vals), max(vals))
            assert not all(math.isclose(a, b) for a, b in zip(per_seed[0].values(), per_seed[1].values()))


def test_same_runs_same_curve_bytes(runs, tmp_path):
    build_leaderboard([runs], tmp_path / "a" / "L.md", "cmd")
    build_leaderboard([runs], tmp_path / "b" / "L.md", "cmd")
    assert (tmp_path / "a" / FIGURE).read_bytes() == (tmp_path / "b" / FIGURE).read_bytes()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_no_plots_skips_the_curves(runs, tmp_path, capsys):
    from npasbench.cli import main

    assert main(["leaderboard", str(runs), "--out", str(tmp_path / "L.md"), "--no-plots"]) == 0
    assert not list(tmp_path.glob("*.png")) and "Training curves" not in (tmp_path / "L.md").read_text()


@pytest.mark.parametrize("text,problem", [
    (None, "no metrics.jsonl"),
    ("", "metrics.jsonl is empty"),
    ("\n  \n", "metrics.jsonl is empty"),
    ('{"kind": "train", "epoch": 1, "step": 2, "loss": 1.0}\n[1]\n', "line 2 is not a JSON object"),
    ('{"kind": "train", "epoch": 1, "loss": 1.0}\n{"kind": "train", "epoch": 1, "loss": 0.9}\n', "epoch 1 logged twice"),
    ('{"kind": "train", "loss": 1.0}\n', "line 1: no epoch"),
    ('{"kind": "eval", "epoch": 1, "top1": "high"}\n', "top1 is not a number"),
    ('{"kind": "final", "top1": 3.0}\n', "no train or eval lines"),
    (b"\xff\xfe\x00garbage", "line 1 is not valid JSON"),
])
def test_bad_metrics_files_are_a_note(tmp_path, text, problem):
    if isinstance(text, bytes):
        (tmp_path / "metrics.jsonl").write_bytes(text)
    elif text is not None:
        (tmp_path / "metrics.jsonl").write_text(text)
    points, splits, note = read_curves(tmp_path)
    assert points == {} and note is not None and problem in note


def test_a_non_finite_value_is_a_gap_not_a_problem(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "epoch": 1, "loss": null}\n'
                                            '{"kind": "train", "epoch": 2, "loss": 2.5}\n')
    assert read_curves(tmp_path) == ({"train": {2: 2.5}, "eval": {}}, set(), None)


def test_a_section_without_a_readable_run_has_no_figure(runs, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs / "hashed-s0", copy / "hashed-s0")
    (copy / "hashed-s0" / "metrics.jsonl").unlink()
    board = build_leaderboard([copy], tmp_path / "L.md", "cmd")
    assert board.cells and not (tmp_path / FIGURE).exists() and "Training curves" not in board.markdown
