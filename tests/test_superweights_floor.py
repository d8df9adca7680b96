"""SuperWeights' search budgets said before launch (methods/superweights/floor.py): the floor no gradients can
go below, the guarantee from which every gradient fits, in both budget modes, for WRN-16-1 and the CPU grid's
ensemble wrn-16-1+wrn-10-1 on CIFAR-100; shown by `npas params`, enforced by `npas grid plan` and the run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import textwrap
from types import SimpleNamespace

import pytest
import torch

from npasbench.budget import Budget
from npasbench.cli import main
from npasbench.errors import BudgetError, NPASError
from npasbench.factory import make_request
from npasbench.grid import plan_grid
from npasbench.methods.superweights.clustering import assign, one_template_estimate, search_clusters
from npasbench.methods.superweights.floor import search_bounds, visit_order
from npasbench.methods.superweights.method import shared_layers
from npasbench.methods.superweights.plan import params_outside_banks
from npasbench.methods.superweights.plan import depth_bins
from npasbench.models.registry import create_backbone
from npasbench.plugins import create_method

ENSEMBLE = "wrn-16-1,wrn-10-1"
# measured (see the module docstring of floor.py; the official assign_groups loop agrees on the constructed cases)
EXPECTED = {
    "": dict(floor_max_params=50_432, floor_total=57_886, guaranteed_max_params=149_504, guaranteed_total=156_951,
             estimate_floor=50_432, estimate_guaranteed=149_504, reference=180_916, search_floor_total=57_868,
             search_guaranteed_total=156_540),
    ENSEMBLE: dict(floor_max_params=50_432, floor_total=64_880, guaranteed_max_params=149_504, guaranteed_total=163_944,
                   estimate_floor=50_432, estimate_guaranteed=149_504, reference=264_616, search_floor_total=64_848,
                   search_guaranteed_total=163_786),
}


def method(members: str = "", **options):
    return create_method("superweights", {"members": members, "group_split_epochs": 1, **options})


def setup(members: str):
    archs = members.split(",") if members else ["wrn-16-1"]
    shapes = [[tuple(l.spec.shape) for l in shared_layers(create_backbone(a, 100))] for a in archs]
    return shapes, depth_bins(shapes, 4)


@pytest.mark.parametrize("members", ["", ENSEMBLE])
def test_floor_and_guarantee_numbers(members):
    sb = method(members).search_budgets(make_request("wrn-16-1", "cifar100"))
    got = {k: v for k, v in sb.to_dict().items() if k in EXPECTED[members]}
    assert got == EXPECTED[members]
    assert method(members, group_split_epochs=0).search_budgets(make_request("wrn-16-1", "cifar100")) is None


@pytest.mark.parametrize("members", ["", ENSEMBLE])
def test_total_mode_figures_are_where_the_search_max_params_reaches_the_bounds(members):
    m = method(members)
    req = make_request("wrn-16-1", "cifar100")
    sb = m.search_budgets(req)
    archs, nets, shapes = m.backbones(req)
    initial = depth_bins(shapes, 4)
    fixed = sum(params_outside_banks(n) for n in nets)

    def search_mp(total: int) -> int:
        return m.search_max_params(dataclasses.replace(req, budget=Budget(total, "total")), shapes, initial, fixed)

    assert search_mp(sb.search_guaranteed_total) >= sb.guaranteed_max_params > search_mp(sb.search_guaranteed_total - 1)
    assert search_mp(sb.search_floor_total) >= sb.floor_max_params
    with pytest.raises(BudgetError):  # below the search model's minimum
        search_mp(sb.search_floor_total - 1)


# -- gradients realising a chosen order of similarities (inside every crop of a cluster) ---------------------------
def band_grads(initial, shapes, order, join, band=(0.06, 0.09)):
    """Member-0 gradients whose pairwise cosines realise ``order(layers)`` (edges, most similar first) strictly
    inside ``band``: below the start 0.1 and above 0.05, so round 1 merges nothing and round 2 every pair; a joining
    member's layer copies the gradient of member-0 layer ``join(member, layer, layers)`` (cosine 1)."""
    grads = [dict() for _ in shapes]
    for g in sorted(set(initial[0])):
        layers = [l for l in range(len(initial[0])) if initial[0][l] == g]
        edges = order(g, layers)
        gram = torch.eye(len(layers), dtype=torch.float64)
        for r, (a, b) in enumerate(edges):
            v = band[1] - (band[1] - band[0]) * r / max(1, len(edges) - 1)
            gram[layers.index(a), layers.index(b)] = gram[layers.index(b), layers.index(a)] = v
        vecs = torch.linalg.cholesky(gram)
        for k, l in enumerate(layers):
            grads[0][l] = torch.zeros(shapes[0][l], dtype=torch.float64)
            grads[0][l][: len(layers), 0, 0, 0] = vecs[k]
        for m in range(1, len(shapes)):
            for l in [l for l in range(len(initial[m])) if initial[m][l] == g]:
                grads[m][l] = torch.zeros(shapes[m][l], dtype=torch.float64)
                grads[m][l][: len(layers), 0, 0, 0] = grads[0][join(m, l, layers)][: len(layers), 0, 0, 0]
    return grads


def worst_order(initial):
    """For every layer in visit order: its pairs with all later layers but the next, then the pair with the next."""
    def order(g, layers):
        v = visit_order(initial[0], g)
        return [e for i in range(len(v) - 1) for e in [(v[i], v[j]) for j in range(i + 2, len(v))] + [(v[i], v[i + 1])]]
    return order


def fits(grads, initial, shapes, max_params) -> bool:
    try:
        search_clusters(grads, initial, shapes, max_params)
        return True
    except BudgetError:
        return False


@pytest.mark.parametrize("members", ["", ENSEMBLE])
def test_both_bounds_are_tight_in_the_search(members):
    shapes, initial = setup(members)
    b = search_bounds(shapes, initial)
    worst = b.guaranteed_clusters
    adversarial = band_grads(initial, shapes, worst_order(initial),
                             lambda m, l, layers: next(x for x in layers if worst[0][x] == worst[m][l]))
    clusters, _ = assign(adversarial, initial, shapes, -1.05)
    assert one_template_estimate(clusters, shapes) == b.guaranteed == one_template_estimate(worst, shapes)
    assert not fits(adversarial, initial, shapes, b.guaranteed - 1)  # every threshold, down to below -1
    assert fits(adversarial, initial, shapes, b.guaranteed)
    # the floor: every pair equally similar merges each initial cluster into one
    equal = band_grads(initial, shapes, lambda g, ls: list(itertools.combinations(ls, 2)), lambda m, l, ls: ls[0],
                       band=(0.07, 0.07))
    assert search_clusters(equal, initial, shapes, b.floor).estimate == b.floor == one_template_estimate(initial, shapes)
    assert not fits(equal, initial, shapes, b.floor - 1)


@pytest.mark.parametrize("members", ["", ENSEMBLE])
def test_random_similarity_orders_fit_at_the_guarantee(members):
    shapes, initial = setup(members)
    b = search_bounds(shapes, initial)
    rng = random.Random(0)
    for _ in range(6):
        def order(g, layers):
            e = list(itertools.combinations(layers, 2))
            rng.shuffle(e)
            return e
        grads = band_grads(initial, shapes, order, lambda m, l, layers: rng.choice(layers))
        res = search_clusters(grads, initial, shapes, b.guaranteed)
        assert b.floor <= res.estimate <= b.guaranteed
        assert not fits(grads, initial, shapes, b.floor - 1)


# -- every tie pattern, for up to 5 layers per initial cluster ------------------------------------------------------
def reachable(n: int) -> set[tuple[tuple[int, ...], ...]]:
    """Final partitions (of visit positions) of the merge after every pair, over every pattern of equal
    similarities: a tie block is visited as the stable sort + pop does, pairs (x, y) by x then y descending
    (positions in visit order), y taking x's label."""
    edges = list(itertools.combinations(range(n), 2))
    seen, finals, stack = set(), set(), [((1 << len(edges)) - 1, tuple(range(n)))]
    while stack:
        rem, lab = stack.pop()
        if (rem, lab) in seen:
            continue
        seen.add((rem, lab))
        if not rem:
            finals.add(lab)
            continue
        block = rem
        while block:
            ops = sorted((p for k, e in enumerate(edges) if block >> k & 1 for p in (e, e[::-1])), key=lambda t: (-t[0], -t[1]))
            cur = list(lab)
            for x, y in ops:
                cur[y] = cur[x]
            names: dict[int, int] = {}
            stack.append((rem & ~block, tuple(names.setdefault(v, len(names)) for v in cur)))
            block = (block - 1) & rem
    out = set()
    for lab in finals:
        parts: dict[int, list[int]] = {}
        for v, c in enumerate(lab):
            parts.setdefault(c, []).append(v)
        out.add(tuple(tuple(p) for p in parts.values()))
    return out


@pytest.mark.parametrize("members", ["", ENSEMBLE])
def test_no_tie_pattern_exceeds_the_guarantee(members):
    shapes, initial = setup(members)
    b = search_bounds(shapes, initial)
    worst = 0
    for g in sorted(set(initial[0])):
        order = visit_order(initial[0], g)
        sizes = [math.prod(shapes[0][l]) for l in order]
        joiners = [math.prod(shapes[m][l]) for m in range(1, len(shapes)) for l in range(len(initial[m]))
                   if initial[m][l] == g]
        best = 0
        for part in reachable(len(order)):
            base = [max(sizes[p] for p in block) for block in part]
            for where in itertools.product(range(len(part)), repeat=len(joiners)):
                value = list(base)
                for size, c in zip(joiners, where):
                    value[c] = max(value[c], size)
                best = max(best, sum(value))
        worst += best
    assert worst == b.guaranteed


# -- before launch: npas params, npas grid plan, the run ------------------------------------------------------------
def test_params_prints_the_floor_and_guarantee(capsys):
    assert main(["params", "--method", "superweights", "--arch", "wrn-16-1", "--dataset", "cifar100", "--budget", "50%",
                 "--opt", "group_split_epochs=1", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert ("search floor: max_params 50,432 (27.9%), total 57,886 (32.0% of the unshared wrn-16-1: 180,916): below it "
            "no gradients fit (refused before launch)") in out
    assert "search fits whatever the gradients from: max_params 149,504 (82.6%), total 156,951 (86.8%)" in out
    assert "model.budget: 90,458 (total) is below 156,951" in out and "BudgetError after its 1 epoch(s)" in out
    assert main(["params", "--method", "superweights", "--arch", "wrn-16-1", "--dataset", "cifar100", "--budget",
                 "132308", "--opt", f"members={ENSEMBLE}", "--opt", "group_split_epochs=1", "--json", "--no-flops"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["search_budgets"]["floor_total"] == 64_880 and rep["search_budgets"]["guaranteed_total"] == 163_944
    assert "below 163,944" in rep["search_budgets"]["problem"]
    assert main(["params", "--method", "superweights", "--arch", "wrn-16-1", "--dataset", "cifar100", "--budget",
                 "150000", "--budget-mode", "max_params", "--opt", "group_split_epochs=1", "--no-flops"]) == 0
    assert "this budget (150,000, max_params): the search fits whatever the gradients" in capsys.readouterr().out
    assert main(["params", "--method", "superweights", "--arch", "wrn-16-1", "--dataset", "cifar100", "--budget", "50%",
                 "--opt", "group_split_epochs=0", "--no-flops"]) == 0
    assert "search floor" not in capsys.readouterr().out


def spec(tmp_path, budgets: str, mode: str = "total"):
    p = tmp_path / "sw.toml"
    p.write_text(textwrap.dedent(f"""\
        [grid]
        name = "swfloor"
        results = "{tmp_path / 'res'}"

        [axes]
        archs = ["wrn-16-1"]
        datasets = ["cifar100"]
        budgets = ["75%"]
        seeds = [0, 1]

        [[methods]]
        name = "superweights"
        budget_mode = "{mode}"
        budgets = [{budgets}]
        variants = [{{group_split_epochs = 1}}]
        """))
    return p


@pytest.mark.parametrize("budget,mode,floor", [("57885", "total", "57,886"), ("50431", "max_params", "50,432")])
def test_grid_plan_refuses_a_budget_below_the_floor_and_writes_nothing(tmp_path, capsys, budget, mode, floor):
    p = spec(tmp_path, budget, mode)
    with pytest.raises(NPASError) as info:
        plan_grid(p)
    msg = str(info.value)
    assert f"model.budget: {int(budget):,} ({mode}) is below the smallest budget" in msg and f": {floor} (" in msg
    line = int(msg.split(" line ")[1].split(":")[0])
    assert budget in p.read_text().splitlines()[line - 1]
    assert not (tmp_path / "res").exists()
    assert main(["grid", "plan", str(p)]) == 2
    assert "below the smallest budget" in capsys.readouterr().err and not (tmp_path / "res").exists()


def test_grid_plan_at_the_floor_plans_and_warns(tmp_path, capsys):
    assert main(["grid", "plan", str(spec(tmp_path, "57886"))]) == 0
    out = capsys.readouterr().out
    assert ("warning: superweights [group_split_epochs=1], wrn-16-1, cifar100, budget 57886 (seeds 0, 1): "
            "model.budget: 57,886 (total) is below 156,951") in out
    assert main(["grid", "plan", str(spec(tmp_path, "156951"))]) == 0
    assert "warning:" not in capsys.readouterr().out


def test_the_run_stops_below_the_floor_before_its_search_trains():
    m = method()
    request = make_request("wrn-16-1", "cifar100", Budget(57_885, "total"))
    phase = m.phases(request)[0]

    def fit(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("the search trained")

    ctx = SimpleNamespace(request=request, fit=fit)
    with pytest.raises(BudgetError, match=r"model.budget: 57,885 \(total\) is below the smallest budget .*: 57,886"):
        phase.run(ctx)
