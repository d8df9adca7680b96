"""`npas grid plan`'s compute estimate: FLOPs counted on the meta device agree with the real count for every
registered method, the FLOP arithmetic of a run, and the GPU-hours a spec's plan reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from npasbench import METHODS, create_model
from npasbench.accounting import count_flops
from npasbench.config import build_config
from npasbench.grid.compute import BACKWARD_FACTOR, Compute, epoch_images, grid_cost, split_sizes, training_compute
from npasbench.grid.expand import Previewer, preview_flops
from npasbench.grid.runner import plan_cost, plan_grid, plan_rows
from npasbench.grid.spec import SpecError, load_spec

# a size every method represents on wrn-16-1 (soft sharing needs >= 81,854; SuperWeights >= 57,868)
BUDGET = {"unshared": None, "hard-sharing": None, "ensemble": None}


@pytest.mark.parametrize("name", METHODS.names())
def test_meta_flops_equal_the_real_count(name):
    options = {"group_split_epochs": 0} if name == "superweights" else {}
    options.update(METHODS.get(name).demo_options if name == "ssn" else {})
    budget = BUDGET.get(name, "120k")

    def build():
        return create_model(name, "wrn-16-1", "cifar100", budget, options=options).model

    real = count_flops(build(), (3, 32, 32))["total"]
    assert real > 0
    assert preview_flops(build(), (3, 32, 32), build) == real


def test_preview_flops_falls_back_to_a_real_model_when_meta_fails():
    import torch.nn as nn

    class ReadsValues(nn.Module):  # a forward that needs a value (.item()) cannot run on meta
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            scale = float(self.lin.weight.abs().sum().item() > -1)
            return self.lin(x.flatten(1)[:, :4]) * scale

    real = count_flops(ReadsValues(), (4,))["total"]
    assert real == 2 * 4 * 3
    assert preview_flops(ReadsValues(), (4,), ReadsValues) == real


def _cfg(**over):
    return build_config(overrides={"data.name": "cifar100", **over})


def test_split_sizes_follow_the_config():
    assert split_sizes(_cfg()) == (50_000, 10_000, 10_000)
    assert split_sizes(_cfg(**{"data.val_fraction": 0.1})) == (45_000, 5_000, 10_000)
    assert split_sizes(_cfg(**{"data.train_subset": 10_000})) == (10_000, 10_000, 10_000)
    assert split_sizes(build_config(overrides={"data.name": "imagenet"}))[0] == 1_281_167
    assert split_sizes(build_config(overrides={"data.synthetic_train": 640, "data.synthetic_test": 64})) == (640, 64, 64)


def test_training_compute_counts_whole_batches_evaluations_and_the_backward_pass():
    cfg = _cfg(**{"data.train_subset": 1000, "train.batch_size": 128, "train.epochs": 4, "train.eval_every": 2})
    assert epoch_images(cfg) == 7 * 128  # drop_last: 1000 // 128 whole batches
    assert epoch_images(_cfg(**{"data.train_subset": 1000, "train.drop_last": False})) == 8 * 128
    c = training_compute(cfg, gflops=0.5)
    assert (c.train_images, c.eval_images) == (4 * 7 * 128, 2 * 10_000)  # epochs 2 and 4 evaluate the test set
    assert c.flops == pytest.approx(0.5e9 * (BACKWARD_FACTOR * 4 * 7 * 128 + 2 * 10_000))
    assert c.gpu_hours(25) == pytest.approx(c.flops / 25e12 / 3600)
    val = training_compute(_cfg(**{"data.val_fraction": 0.1, "train.epochs": 1}), gflops=1.0)
    assert val.eval_images == 5_000 + 10_000  # the validation split, then the test set once
    assert Compute(1.0, 2, 3).flops == pytest.approx(1e9 * (BACKWARD_FACTOR * 2 + 3))


SPEC = """
[grid]
name = "cost"
results = "{results}"
[base]
"data.name" = "cifar100"
"train.epochs" = 10
[axes]
archs = ["wrn-16-1"]
datasets = ["cifar100"]
budgets = ["100k"]
seeds = [0, 1]
[[methods]]
name = "unshared"
budgets = ["full"]
[[methods]]
name = "ssn"
variants = [{{param_groups = 4, search_epochs = 3}}]
[resources]
gpu_tflops = {tflops}
"""


def test_plan_reports_gpu_hours_and_counts_a_shared_search_once(tmp_path: Path):
    spec = tmp_path / "cost.toml"
    spec.write_text(SPEC.format(results=tmp_path / "res", tflops=10))
    plan = plan_grid(spec, write=True)
    pv = Previewer()
    cost = plan_cost(plan, pv)
    assert cost.tflops == 10
    g = pv.get(plan.runs[0]).gflops
    one = training_compute(plan.runs[0].config, g).gpu_hours(10)
    assert cost.runs[plan.runs[0].run_id] == pytest.approx(one)
    # the 4-group SSN search depends on the seed, not on the run: one shared search per seed, counted once
    assert len(cost.shared_phases) == 2
    search = 3 * epoch_images(plan.runs[0].config) * BACKWARD_FACTOR * g * 1e9 / 10e12 / 3600
    assert sorted(cost.shared_phases.values()) == pytest.approx([search, search])
    assert cost.total == pytest.approx(sum(cost.runs.values()) + 2 * search)
    rows = plan_rows(plan, pv)
    assert all(r["est. GPU-h"] for r in rows)
    # a faster GPU: proportionally fewer hours
    spec.write_text(SPEC.format(results=tmp_path / "res2", tflops=20))
    assert plan_cost(plan_grid(spec)).total == pytest.approx(cost.total / 2)
    assert grid_cost(plan.runs, lambda r: None, 10).unknown == len(plan.runs)


def test_gpu_tflops_must_be_positive(tmp_path: Path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(results=tmp_path / "res", tflops=0))
    with pytest.raises(SpecError, match="resources.gpu_tflops"):
        load_spec(spec)


SPECS = sorted((Path(__file__).resolve().parents[1] / "slurm").glob("*.toml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_expands_and_says_how_to_plan_it(path: Path):
    from npasbench.grid.expand import expand

    spec = load_spec(path)
    runs = expand(spec, check_budgets=False)  # the budget check builds every model: `npas grid plan` does it
    assert runs and len({r.run_id for r in runs}) == len(runs)
    text = path.read_text()
    assert re.search(rf"npas grid plan +slurm/{re.escape(path.name)}", text), "the spec's header shows its plan command"
    if spec.resources.gpus_per_run:  # a paper-scale spec: names the official flags it translates
        assert "Official flags translated" in text and spec.base_config is not None and spec.base_config.is_file()


# planning builds each distinct model once for its budget check: seconds for the CPU-scale specs, 40-75 s for the
# paper-scale WRN-28-10, ImageNet and ViT-Ti ones (measured on this 2-core machine), which run with the slow tests
SLOW_TO_PLAN = {"baselines-cifar-wrn28-10", "imagenet-ssn-baselines", "ssn-cifar-wrn28-10", "vit-cifar100"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_TO_PLAN else p
                                  for p in SPECS], ids=[p.stem for p in SPECS])
def test_every_shipped_spec_plans_with_its_budget_check(path: Path, tmp_path: Path, capsys):
    """`npas grid plan slurm/<spec>` as a user types it, budget check on: every model of the grid is built
    and fits its budget (or the spec would not plan), and nothing is written."""
    from npasbench.cli import main

    before = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "results" / "grids").iterdir())
    assert main(["grid", "plan", str(path), "--results", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert f"{len(expand_runs(path))} runs" in out and "nothing written" in out
    assert not (tmp_path / "res").exists()
    assert sorted(p.name for p in (Path(__file__).resolve().parents[1] / "results" / "grids").iterdir()) == before


def expand_runs(path: Path) -> list:
    from npasbench.grid.expand import expand

    return expand(load_spec(path), check_budgets=False)


def test_a_budget_error_points_at_the_methods_own_budgets_line(tmp_path: Path):
    """An impossible budget set by a method's own ``budgets`` is reported at that line, not at ``[axes]``
    (whose budgets hold the same text); one set by ``axes.budgets`` at the axes line."""
    from npasbench.grid.expand import expand

    text = (f'[grid]\nname = "b"\nresults = "{tmp_path / "res"}"\n\n[axes]\narchs = ["wrn-10-1"]\n'
            'datasets = ["synthetic"]\nbudgets = ["100"]\nseeds = [0]\n\n[[methods]]\nname = "unshared"\n'
            'budgets = ["full"]\n\n[[methods]]\nname = "hashed"\n# budgets: a comment naming the key\nbudgets = ["100"]\n')
    spec = tmp_path / "b.toml"
    spec.write_text(text)
    with pytest.raises(SpecError, match=r"line (\d+)") as info:
        expand(load_spec(spec))
    line = int(str(info.value).split(" line ")[1].split(":")[0])
    assert text.splitlines()[line - 1] == 'budgets = ["100"]' and line > 12, str(info.value)
    spec.write_text(text.replace('# budgets: a comment naming the key\nbudgets = ["100"]\n', ""))
    with pytest.raises(SpecError, match=r"line (\d+)") as info:
        expand(load_spec(spec))
    assert int(str(info.value).split(" line ")[1].split(":")[0]) == 8


def test_the_paper_recipes_translate_the_official_flags():
    root = Path(__file__).resolve().parents[1] / "configs"
    ssn = build_config(__import__("tomllib").loads((root / "ssn_cifar.toml").read_text()))
    sw = build_config(__import__("tomllib").loads((root / "superweights_cifar.toml").read_text()))
    for cfg in (ssn, sw):
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr, cfg.optim.weight_decay) == (200, 128, 0.1, 5e-4)
        assert cfg.optim.nesterov and tuple(cfg.optim.milestones) == (60, 120, 160)
        assert tuple(cfg.optim.gammas) == (0.2, 0.2, 0.2) and cfg.data.cutout == 16 and not cfg.train.drop_last
    assert ssn.data.val_fraction == 0.1  # SSN: the model is selected on a random 10% of train
    assert sw.data.val_fraction == 0.0  # SuperWeights --cifar_split full
