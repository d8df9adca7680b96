"""SuperWeights against numbers measured from the official code.

``tests/data/superweights_official.json`` holds, for 18 configurations, what the official
piotr-teterwak/SuperWeights (b480c18) builds on CPU (``models.swrn`` constructed as ``main_no.py``'s
``load_model`` does, with three one-line ``get_device`` -> ``device`` patches; numbers and shapes only,
no official code in this repository): every bank's size, template count and readers, every layer's
pieces, the depth bins, the allocation, and the unique parameter counts by role. Variant ``search``
is the official search model (one coefficient vector per bank, our ``bank`` mode).

Budgets below the one-template minimum: the official code silently builds the minimum (overrun);
ours raises ``BudgetError`` naming that minimum, which must equal the official overrun size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from npasbench.budget import Budget
from npasbench.errors import BudgetError
from npasbench.factory import make_request
from npasbench.methods.superweights.coefficients import initial_rows
from npasbench.methods.superweights.method import shared_layers
from npasbench.methods.superweights.plan import params_outside_banks
from npasbench.methods.superweights.plan import depth_bins, make_plan
from npasbench.models.registry import create_backbone
from npasbench.plugins import create_method

DATA = json.loads((Path(__file__).parent / "data" / "superweights_official.json").read_text())
CONFIGS = sorted(k for k in DATA if not k.startswith("_"))


def _setup(name: str):
    rec = DATA[name]["search"]
    o = rec["options"]
    archs = [f"wrn-{m['depth']}-{m['width']}" for m in rec["members"]]
    nets = [create_backbone(a, o["num_classes"]) for a in archs]
    shapes = [[tuple(l.spec.shape) for l in shared_layers(n)] for n in nets]
    share = "wavg_slide" if o["share_type"] == "wavg_slide" else o["share_type"]
    method = create_method("superweights", {"members": ",".join(archs), "share_type": share,
                                            "param_group_bins": o["param_group_bins"], "group_split_epochs": 0,
                                            "bank_size": o["bank_size"]})
    return rec, o, archs, nets, shapes, method


def _key(name: str) -> tuple[int, int]:
    c, _, w = name.split("_")
    return int(c), int(w)


def test_data_covers_the_readme_configs():
    assert "c1_readme_md_28-7_28-4_16-7_16-4_18M_b4" in DATA and "c2_readme_mw_28-7_28-4_28-3_18M_b4" in DATA
    assert len(CONFIGS) >= 18


@pytest.mark.parametrize("name", CONFIGS)
def test_layer_shapes_and_depth_bins_match(name):
    rec, o, archs, nets, shapes, method = _setup(name)
    for m, member in enumerate(rec["members"]):
        assert [tuple(s) for s in member["conv_shapes"]] == shapes[m]
    assert depth_bins(shapes, o["param_group_bins"]) == rec["layers_to_bin"]


@pytest.mark.parametrize("name", CONFIGS)
def test_banks_templates_and_readers_match(name):
    rec, o, archs, nets, shapes, method = _setup(name)
    bins = depth_bins(shapes, o["param_group_bins"])
    if rec["bank_total"] > o["max_params"]:  # the official overrun: ours refuses, naming that minimum
        with pytest.raises(BudgetError, match=f"minimum of {rec['bank_total']:,}"):
            make_plan(shapes, bins, o["max_params"], cap=o["bank_size"])
        plan = make_plan(shapes, bins, 0, cap=o["bank_size"])
        assert plan.minimum == rec["one_template_total"] == rec["bank_total"]
    else:
        plan = make_plan(shapes, bins, o["max_params"], cap=o["bank_size"])
    assert plan.bank_total == rec["bank_total"]
    assert len(plan.banks) == rec["n_banks"]
    for b in rec["banks"]:
        (name0,) = b["names"]
        ours = plan.banks[_key(name0)]
        assert ours.size == b["size"], name0
        assert [ours.templates] == b["candidates_set"], name0
        assert sorted(map(tuple, b["readers"])) == sorted(ours.readers), name0


@pytest.mark.parametrize("name", CONFIGS)
def test_every_layer_reads_the_same_pieces(name):
    rec, o, archs, nets, shapes, method = _setup(name)
    plan = make_plan(shapes, depth_bins(shapes, o["param_group_bins"]), 0, cap=o["bank_size"])
    for m, member in enumerate(rec["members"]):
        assert member["layer_cluster_ids"] == plan.clusters[m]
        for layer in member["layers"]:
            u = plan.uses[m][layer["layer_id"]]
            assert [_key(b["bank"]) for b in layer["banks"]] == [(u.cluster, w) for w in range(u.levels)]
            for w, b in enumerate(layer["banks"]):
                lv = plan.levels[u.cluster][w]
                pieces = [lv.out_piece] if lv.in_piece is None else [lv.out_piece, lv.in_piece]
                assert [tuple(p) for p in b["pieces"]] == pieces
                assert b["piece_params"] == lv.numel


@pytest.mark.parametrize("name", CONFIGS)
def test_unique_parameter_counts_match(name):
    """Unique trainable parameters by role (banks once for all members), in the official search model."""
    rec, o, archs, nets, shapes, method = _setup(name)
    counts = rec["unique_counts"]
    mp = o["max_params"] if rec["bank_total"] <= o["max_params"] else 0  # overrun case: the minimum
    plan = make_plan(shapes, depth_bins(shapes, o["param_group_bins"]), mp, cap=o["bank_size"])
    rows = initial_rows(plan, "own" if o["share_type"] == "avg" else "bank")
    fixed = sum(params_outside_banks(n) for n in nets)
    assert fixed == counts["bn"] + counts["classifier"]
    ours = method.plan_total(plan, rows, fixed)
    assert ours["bank"] == counts["bank"]
    assert ours["coefficients"] == counts["coefficients"]
    assert ours["generators"] == counts["other"]  # emb projections
    assert ours["total"] == counts["grand_total"]


@pytest.mark.parametrize("name", ["c5_16-4_16-2_1M_b4", "c6_md_18M_b4_share_emb", "c5_single_16-4_1M_b4"])
def test_built_model_counts_match(name):
    """The built model (not only the plan) has the official unique count."""
    from npasbench.accounting import param_report

    rec, o, archs, nets, shapes, method = _setup(name)
    model = method.build(make_request(archs[0], "cifar100" if o["num_classes"] == 100 else "cifar10",
                                      Budget(o["max_params"], "max_params")))
    rep = param_report(model, (3, 32, 32), None, flops=False) if "flops" in param_report.__code__.co_varnames else \
        param_report(model, (3, 32, 32), None)
    assert rep.total == rec["unique_counts"]["grand_total"]
    assert rep.breakdown["bank"] == rec["unique_counts"]["bank"]
    assert math.isclose(rep.total, sum(rep.breakdown.values()))
