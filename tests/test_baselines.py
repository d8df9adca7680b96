"""Baselines: exact budgets and closed-form counts, shared storage counted once, shapes, gradients,
hashing determinism, maximal reduced width, clear errors, and short trainer runs with records."""

from __future__ import annotations

import json
import math

import pytest
import torch

from npasbench import Budget, BudgetError, ConfigError, create_model
from npasbench.accounting import parameter_roles
from npasbench.config import build_config
from npasbench.models.registry import get_arch
from npasbench.models.resnet import BottleneckResNet
from npasbench.trainer import train
from npasbench.trainer.optim import build_optimizer
from npasbench.sdk import plain_params
from npasbench.baselines.hashed import hash32, hash32_array, hash_indices, split_buckets, step_matched
from npasbench.baselines.reduced import wrn_channels, width_ladder

ARCH, DATA, NC = "wrn-16-4", "cifar100", 100


# -- closed forms (independent of the implementations) --------------------------------------------

def wrn_plain(depth: int, width: float, nc: int) -> int:
    """Parameters of the pre-activation WRN: convs, 1x1 shortcuts, BN (2 per channel), classifier."""
    c = [16, *(max(1, int(round(b * width))) for b in (16, 32, 64))]
    n = (depth - 4) // 6
    total = 3 * 16 * 9 + 2 * c[3] + c[3] * nc + nc  # stem, last BN, classifier
    for s in range(1, 4):
        cin, cout = c[s - 1], c[s]
        for b in range(n):
            i = cin if b == 0 else cout
            total += i * cout * 9 + cout * cout * 9 + 2 * i + 2 * cout
            if b == 0 and (i != cout or s > 1):
                total += i * cout
    return total


def wrn_hard(depth: int, width: float, nc: int) -> int:
    """Hard sharing by hand: per stage, the convs of shape (cout, cout, 3, 3) count once."""
    c = [16, *(max(1, int(round(b * width))) for b in (16, 32, 64))]
    n = (depth - 4) // 6
    total = wrn_plain(depth, width, nc)
    for s in range(1, 4):
        same = 2 * n - 1 + (1 if c[s - 1] == c[s] else 0)  # the first conv too when its shape matches
        if same >= 2:
            total -= (same - 1) * c[s] * c[s] * 9
    return total


def test_closed_form_matches_unshared():
    for arch in ("wrn-16-4", "wrn-10-1", "wrn-22-2.5", "wrn-16-1"):
        a = get_arch(arch)
        assert wrn_plain(a.hyper["depth"], a.hyper["width"], NC) == \
            create_model("unshared", arch, DATA).report(flops=False).total


# -- budgets: total <= budget, closed forms, tolerances -------------------------------------------

def build(name, budget=None, arch=ARCH, dataset=DATA, **opts):
    return create_model(name, arch, dataset, budget, opts)


@pytest.mark.parametrize("budget", [300_000, 1_000_000, 2_000_000, 2_700_000])
def test_hashed_total_equals_budget(budget):
    built = build("hashed", budget)
    rep = built.report(flops=False)
    assert rep.total == budget  # exactly: bank = budget - norms - classifier bias
    info = built.method.record_info(built.model)
    assert rep.breakdown["bank"] == info["bank"] == budget - info["unhashed"]
    assert rep.breakdown["norm_bias"] + rep.breakdown["head"] == info["unhashed"]
    assert rep.breakdown["weights"] == 0 and rep.breakdown["head"] == NC  # the classifier weight is hashed too


@pytest.mark.parametrize("budget", [200_000, 1_000_000, 2_000_000])
@pytest.mark.parametrize("dimension", ["width", "both"])
def test_reduced_width_is_maximal(budget, dimension):
    built = build("reduced", budget, dimension=dimension)
    rep = built.report(flops=False)
    info = built.method.record_info(built.model)
    used = info["used"]
    assert rep.total == used["params"] <= budget
    # the name resolves (through the registry) to exactly the channels that were built
    assert wrn_plain(used["depth"], get_arch(used["arch"]).hyper["width"], NC) == rep.total
    assert wrn_channels(get_arch(used["arch"]).hyper["width"]) == tuple(used["channels"][1:])
    # one more channel step at this depth would exceed the budget
    ladder = [tri for tri, _ in width_ladder(4)]
    nxt = ladder[ladder.index(tuple(used["channels"][1:])) + 1]
    nxt_params = next(wrn_plain(used["depth"], sample, NC) for tri, sample in width_ladder(4) if tri == nxt)
    assert nxt_params > budget
    if dimension == "width":
        assert info["next_larger"]["params"] == nxt_params and used["depth"] == 16
    else:  # both: no other (depth <= 16, width) fits with more parameters
        for d in (10, 16):
            best = max((wrn_plain(d, s, NC) for _, s in width_ladder(4) if wrn_plain(d, s, NC) <= budget), default=0)
            assert best <= rep.total


def test_reduced_ladder_visits_every_channel_triple():
    ladder = width_ladder(2.5)
    tris = [t for t, _ in ladder]
    assert tris == sorted(set(tris)) and tris[-1] == (40, 80, 160)
    for (a, _), (b, _) in zip(ladder, ladder[1:]):  # consecutive triples: each stage grows by at most one channel
        assert all(0 <= y - x <= 1 for x, y in zip(a, b)) and a != b
    # a fine scan finds no triple the ladder lacks
    fine = {wrn_channels(k / 10_000) for k in range(1, 25_001)}
    assert fine <= set(tris)


def test_reduced_depth_flops_and_record():
    built = build("reduced", 1_300_000, dimension="depth")
    info = built.method.record_info(built.model)
    assert info["used"]["arch"] == "wrn-10-4" and info["used"]["params"] == wrn_plain(10, 4, NC)
    assert info["next_larger"] == {"arch": "wrn-16-4", "params": wrn_plain(16, 4, NC)}
    rep = built.report()
    # FLOPs in the record are those the suite's counter reports; the requested network's are larger
    assert info["used"]["flops"] == rep.flops["per_member"][0]
    full = create_model("unshared", ARCH, DATA).report().flops["per_member"][0]
    assert info["requested"]["flops"] == full and info["flops_ratio"] == pytest.approx(rep.flops["per_member"][0] / full)
    assert info["flops_ratio"] < 1 and "instead of wrn-16-4" in info["note"]
    assert built.model.member_names == ["wrn-10-4"]
    # without a budget, or with a budget above the full network: the requested network itself
    for b in (None, 10_000_000):
        same = build("reduced", b, dimension="both")
        i = same.method.record_info(same.model)
        assert i["used"]["arch"] == ARCH and i["flops_ratio"] == 1 and not i["reduced"]


def test_reduced_resnet_bottleneck_width():
    built = build("reduced", 15_000_000, arch="resnet50", dataset="imagenet")
    info = built.method.record_info(built.model)
    w = info["used"]["width_per_group"]
    assert built.report(flops=False).total == info["used"]["params"] <= 15_000_000 < info["next_larger"]["params"]
    assert 1 <= w < 64 and info["next_larger"]["arch"] == f"resnet50[width_per_group={w + 1}]"
    with pytest.raises(ConfigError, match="method.options.dimension: 'depth'"):
        build("reduced", 15_000_000, arch="resnet50", dataset="imagenet", dimension="depth")
    with pytest.raises(BudgetError, match="width_per_group=1"):
        build("reduced", 4_000_000, arch="resnet50", dataset="imagenet")


def test_reduced_resnet_keeps_the_variant():
    """``reduced`` on the SSN code's network shrinks that network (its trunk, skip first), not torchvision's."""
    built = build("reduced", 15_000_000, arch="resnet50-ssn", dataset="imagenet")
    info = built.method.record_info(built.model)
    used, w = info["used"], info["used"]["width_per_group"]
    assert info["reduced"] and used["variant"] == info["requested"]["variant"] == "ssn" and 1 <= w < 64
    assert info["next_larger"]["arch"] == f"resnet50-ssn[width_per_group={w + 1}]"
    net = built.model.members[0]
    assert net.variant == "ssn" and [tuple(l.spec.shape) for l in built.model.weight_layers()[:3]] == \
        [(32, 3, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3)]
    assert built.report(flops=False).total == used["params"] == \
        plain_params(BottleneckResNet((3, 4, 6, 3), 1000, w, variant="ssn")) <= 15_000_000
    assert used["params"] != plain_params(BottleneckResNet((3, 4, 6, 3), 1000, w))
    plain = build("reduced", 15_000_000, arch="resnet50", dataset="imagenet")  # torchvision records: no variant key
    assert "variant" not in plain.method.record_info(plain.model)["used"]


def soft_closed_form(budget_info):
    return budget_info["unshared_part"] + sum(b["templates"] * (b["template_numel"] + len(b["layers"]))
                                              for b in budget_info["banks"])


@pytest.mark.parametrize("budget", [1_300_000, 2_000_000, 2_600_000, None])
@pytest.mark.parametrize("allocation", ["uniform", "fill"])
def test_soft_sharing_budgets(budget, allocation):
    arch = "wrn-28-2"  # 7 layers per bank: templates 1..7
    built = build("soft-sharing", budget, arch=arch, allocation=allocation)
    rep = built.report(flops=False)
    info = built.method.record_info(built.model)
    assert rep.total == soft_closed_form(info) == info["total"]
    assert rep.breakdown["bank"] == sum(b["templates"] * b["template_numel"] for b in info["banks"])
    assert rep.breakdown["coefficients"] == sum(b["templates"] * len(b["layers"]) for b in info["banks"])
    assert [len(b["layers"]) for b in info["banks"]] == [7, 7, 7]
    if budget is None:
        assert all(b["templates"] == 7 for b in info["banks"])
        return
    assert rep.total <= budget
    steps = [b["template_numel"] + len(b["layers"]) for b in info["banks"] if b["templates"] < len(b["layers"])]
    slack = budget - rep.total
    if allocation == "uniform":  # tolerance: less than one more template in every bank below its cap
        assert len({b["templates"] for b in info["banks"]}) == 1
        assert slack < sum(steps) or not steps
    else:  # tolerance: less than one template of the smallest bank below its cap
        assert not steps or slack < min(steps)


def test_soft_sharing_reference_layout_and_init():
    built = build("soft-sharing", arch="wrn-28-2", first_block="own", templates=3)
    info = built.method.record_info(built.model)
    assert [len(b["layers"]) for b in info["banks"]] == [6, 6, 6]  # 2(n-1) as the reference SWRN
    assert all(not any(".0." in n for n in b["layers"]) for b in info["banks"])
    assert all(b["templates"] == 3 for b in info["banks"])
    # unit coefficient rows: every generated weight starts at the kaiming scale sqrt(2 / fan_in)
    torch.manual_seed(0)
    built = build("soft-sharing", 1_000_000, arch="wrn-28-2")
    for layer in built.model.weight_layers():
        if type(layer.provider).__name__ == "SoftWeight":
            c = layer.provider.coefficients
            assert c.norm().item() == pytest.approx(1.0, abs=1e-5)
            w = layer.weight()
            assert w.std().item() == pytest.approx(math.sqrt(2 / layer.spec.fan_in), rel=0.1)
    assert built.method.no_weight_decay_roles() == {"coefficients"}


@pytest.mark.parametrize("arch", ["wrn-16-4", "wrn-28-2", "wrn-10-1", "wrn-16-1"])
def test_hard_sharing_count_by_hand(arch):
    a = get_arch(arch)
    built = build("hard-sharing", None, arch=arch)
    rep = built.report(flops=False)
    assert rep.total == wrn_hard(a.hyper["depth"], a.hyper["width"], NC)
    info = built.method.record_info(built.model)
    assert info["plain_network"] == wrn_plain(a.hyper["depth"], a.hyper["width"], NC)
    assert build("hard-sharing", rep.total, arch=arch).report(flops=False).total == rep.total  # exactly fits
    with pytest.raises(BudgetError, match=rf"hard-sharing on {arch} \(a fixed size; .*\) needs {rep.total:,} parameters, above the budget of {rep.total - 1:,}"):
        build("hard-sharing", rep.total - 1, arch=arch)


@pytest.mark.parametrize("members,budget", [
    ("", None), ("", 5_600_000), ("wrn-16-4,wrn-16-2,wrn-10-1", 3_600_000), ("wrn-16-4,wrn-16-2,wrn-10-1", None)])
def test_ensemble_counts(members, budget):
    built = build("ensemble", budget, members=members)
    archs = [a for a in members.split(",") if a] or [ARCH, ARCH]
    expected = sum(create_model("unshared", a, DATA).report(flops=False).total for a in archs)
    rep = built.report()
    assert rep.total == expected and (budget is None or rep.total <= budget)
    assert len(rep.flops["per_member"]) == len(archs)
    names = built.model.member_names
    assert names == (archs if members else ["wrn-16-4#1", "wrn-16-4#2"])
    assert [l.spec.member for l in built.model.weight_layers(len(archs) - 1)] == [len(archs) - 1] * len(
        built.model.weight_layers(len(archs) - 1))
    info = built.method.record_info(built.model)
    assert info["total"] == expected and [m["arch"] for m in info["members"]] == archs
    with pytest.raises(BudgetError, match=rf"the ensemble \(.*nothing is shared\) needs {expected:,} parameters"):
        build("ensemble", expected - 1, members=members)


# -- storage, shapes, gradients ---------------------------------------------------------------------

SHARING = [("soft-sharing", {"templates": 2}), ("hard-sharing", {}), ("hashed", {})]


@pytest.mark.parametrize("name,opts", SHARING)
def test_shared_storage_counted_once_and_gradients(name, opts):
    built = build(name, None, arch="wrn-16-1", dataset="synthetic", **opts)
    model = built.model
    rep = built.report()
    assert rep.total == sum(p.numel() for p in model.parameters()) == sum(rep.breakdown.values())
    virtual = sum(l.spec.numel for l in model.weight_layers())
    assert rep.breakdown["bank"] > 0 and rep.total < virtual  # layers read more weights than are stored
    # shared storage appears once in parameters() and state_dict(); providers hold no copy
    shared_ids = {id(p) for p in model.shared.parameters()}
    assert shared_ids and all(not any(id(p) in shared_ids for p in l.parameters()) for l in model.weight_layers())
    assert sum(k.startswith("shared.") for k in model.state_dict()) == len(list(model.shared.parameters()))
    roles = {r for _, _, r in parameter_roles(model)}
    assert "other" not in roles and "bank" in roles
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    assert out.shape == (1, 3, 10) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    for p in model.shared.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    if name == "soft-sharing":
        assert all(l.provider.coefficients.grad.abs().sum() > 0 for l in model.weight_layers()
                   if hasattr(l.provider, "coefficients"))


def test_generated_weights_cached_in_eval_until_step():
    # exact: the cache returns the very tensor; after an SGD step the weights must differ by far more than rounding
    built = build("soft-sharing", None, arch="wrn-16-1", dataset="synthetic")
    model = built.model
    layer = next(l for l in model.weight_layers() if hasattr(l.provider, "coefficients"))
    with torch.no_grad():
        a = layer.weight()
        assert layer.weight() is a  # cached
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    with torch.no_grad():
        b = layer.weight()
    assert b is not a and not torch.equal(a, b)


# -- hashing -----------------------------------------------------------------------------------------

def test_hash_is_deterministic_seeded_and_signed():
    # exact: integer hash indices (exact uint32 arithmetic), equal on every CPU
    ints = [0, 1, 2, 12345, 2**32 - 1]
    import numpy as np

    assert hash32_array(np.array(ints, dtype=np.uint32)).tolist() == [hash32(i) for i in ints]
    a = build("hashed", 200_000, arch="wrn-16-1", dataset="synthetic", bank="shared")
    b = build("hashed", 200_000, arch="wrn-16-1", dataset="synthetic", bank="shared")
    c = build("hashed", 200_000, arch="wrn-16-1", dataset="synthetic", bank="shared", hash_seed=1)
    ia, ib, ic = (m.model.shared["bank"].index for m in (a, b, c))
    assert ia.dtype == torch.int32 and torch.equal(ia, ib)
    assert (ia != ic).float().mean() > 0.9
    size = a.model.shared["bank"].size
    assert ia.min() >= 0 and ia.max() < 2 * size
    neg = (ia >= size).float().mean().item()
    assert 0.48 < neg < 0.52  # sign hashing: about half the positions read -bank
    # buckets are uniform: the share of bank entries some weight reads is 1 - exp(-weights / bank)
    used = (torch.bincount(ia.long() % size, minlength=size) > 0).float().mean().item()
    assert used == pytest.approx(1 - math.exp(-ia.numel() / size), abs=0.01)
    # indices are buffers, not parameters, and not saved: a checkpoint holds the bank only
    sd = a.model.state_dict()
    assert not any("index" in k for k in sd) and "shared.bank.flat" in sd
    assert all(p.dtype.is_floating_point for p in a.model.parameters())
    # shared: a layer's weight is sign * bank[bucket] * sqrt(2 / fan_in), and a reload reproduces the network
    layer = a.model.weight_layers()[3]
    flat = a.model.shared["bank"].flat
    idx = hash_indices(layer.spec.numel, layer.spec.index, 0, size)
    ref = torch.where(idx < size, flat[idx % size], -flat[idx % size]) * math.sqrt(2 / layer.spec.fan_in)
    a.model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ya = a.model(x)
    assert torch.allclose(layer.weight().reshape(-1), ref)
    b.model.load_state_dict(sd)
    b.model.eval()
    with torch.no_grad():
        assert torch.allclose(b.model(x), ya)


def test_hashed_per_layer_buckets_as_published():
    """The default form: each layer its own buckets (disjoint segments of the flat vector) at one compression
    rate, drawn at the layer's kaiming std and read unscaled, so the virtual weights start as a plain layer's."""
    budget = 90_458  # the CPU grid's 50% of wrn-16-1
    built = build("hashed", budget, arch="wrn-16-1", dataset="cifar100", hash_seed=2)
    info = built.method.record_info(built.model)
    assert info["bank_form"] == "per_layer" and built.report(flops=False).total == budget
    bank = built.model.shared["bank"]
    layers = built.model.weight_layers()
    per = info["buckets_per_layer"]
    assert list(per) == [l.spec.name for l in layers] and sum(per.values()) == info["bank"] == bank.size
    rate = info["bank"] / info["virtual_weights"]
    for l in layers:  # one compression rate: every share within one bucket of proportional
        assert abs(per[l.spec.name] - rate * l.spec.numel) <= 1, l.spec.name
    flat, off = bank.flat.detach(), 0
    size = bank.size
    built.model.eval()
    with torch.no_grad():
        built.model(torch.randn(1, 3, 32, 32))
        for l in layers:
            n = per[l.spec.name]
            seg = flat[off:off + n]
            idx = hash_indices(l.spec.numel, l.spec.index, 2, size, off, n)
            assert int((idx % size).min()) >= off and int((idx % size).max()) < off + n  # reads its own buckets only
            ref = torch.where(idx < size, flat[idx % size], -flat[idx % size])
            assert torch.equal(l.weight().reshape(-1), ref)  # exact: a gather and a sign, no arithmetic
            if n >= 2000:  # the init std of a plain layer (kaiming normal, fan_in)
                assert float(seg.std()) == pytest.approx(math.sqrt(2 / l.spec.fan_in), rel=0.08), l.spec.name
            off += n


def test_split_buckets_is_proportional_exact_and_bounded():
    assert split_buckets(10, [5, 5, 10]) == [3, 2, 5]  # 2.5, 2.5, 5: the tie goes to the earlier layer
    assert split_buckets(3, [1, 100, 1000]) == [1, 1, 1]  # at least one each
    assert split_buckets(21, [1, 10, 10]) == [1, 10, 10]  # at most the layer's size
    with pytest.raises(ValueError):
        split_buckets(2, [1, 2, 3])


def test_step_matched_scale_moves_the_virtual_weight_like_a_plain_one():
    """``shared``: the virtual weight is s * w; after one SGD step it has moved by lr * its gradient, as a plain
    weight would (not by s^2 of that, the form before issue 22)."""
    w = torch.nn.Parameter(torch.randn(50))
    c = torch.randn(50)
    s, lr = 0.06, 0.1
    v0 = (w * s).detach().clone()
    (step_matched(w, s) * c).sum().backward()  # d loss / d v = c
    torch.optim.SGD([w], lr=lr).step()
    assert torch.allclose(w.detach() * s - v0, -lr * c, atol=1e-6)
    assert torch.equal(step_matched(w, 1.0), w)  # exact: scale 1 is the identity, the same tensor


def test_hashed_default_without_budget():
    built = build("hashed", None, arch="wrn-16-1", dataset="synthetic")
    info = built.method.record_info(built.model)
    assert info["bank"] == round(info["virtual_weights"] / 8) and info["compression"] == pytest.approx(8, rel=1e-3)
    half = build("hashed", None, arch="wrn-16-1", dataset="synthetic", bank_fraction=0.5)
    assert half.method.record_info(half.model)["bank"] == round(info["virtual_weights"] / 2)


# -- clear errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,opts,match", [
    ("reduced", {"dimension": "height"}, "method.options.*dimension: must be one of"),
    ("soft-sharing", {"templates": -1}, "method.options.templates"),
    ("soft-sharing", {"allocation": "greedy"}, "allocation: must be one of"),
    ("hashed", {"bank_fraction": 0}, "method.options.bank_fraction"),
    ("hashed", {"bank_fraction": 1.5}, "method.options.bank_fraction"),
    ("hashed", {"hash_seed": -2}, "method.options.hash_seed"),
    ("ensemble", {"members": "wrn-16-4,wrn-99-z"}, "method.options.members: 'wrn-99-z'"),
    ("ensemble", {"members": "wrn-16-4"}, "method.options.members: an ensemble needs 2 to 8"),
    ("ensemble", {"copies": 1}, "method.options.copies"),
    ("ensemble", {"copies": 9}, "method.options.copies"),
    ("hard-sharing", {"first_block": "none"}, "first_block: must be one of"),
])
def test_bad_options(name, opts, match):
    with pytest.raises(ConfigError, match=match):
        build(name, None, **opts)


@pytest.mark.parametrize("name,arch,budget,opts,match", [
    ("reduced", "wrn-16-4", 500, {}, r"budget: the narrowest wrn-16 \(channels 16-1-1-1\) has 949 parameters, above the budget of 500"),
    ("reduced", "wrn-16-4", 1_000_000, {"dimension": "depth"}, "budget: the shallowest network at this width, wrn-10-4"),
    ("reduced", "wrn-16-4", 500, {"dimension": "both"}, "budget: the smallest WRN"),
    ("soft-sharing", "wrn-16-4", 1_000_000, {}, r"budget: soft-sharing on wrn-16-4 needs at least 1,223,7"),
    ("soft-sharing", "wrn-28-2", 1_300_000, {"templates": 7}, r"budget: soft-sharing with templates=7 on wrn-28-2 has 1,479,367 .* Use templates=0"),
    ("hashed", "wrn-16-4", 3_716, {"bank": "shared"}, r"budget: hashed \(bank=shared\) on wrn-16-4 needs more than its 3,716"),
    ("hashed", "wrn-16-4", 3_730, {}, r"budget: hashed \(bank=per_layer\) on wrn-16-4 needs its 3,716 .* one bucket for each of its 17 layers, 3,733 in all"),
    ("ensemble", "wrn-10-1", 40_000, {}, r"budget: the ensemble \(wrn-10-1 77,850 \+ wrn-10-1 77,850; nothing is shared\) needs 155,700 parameters, above the budget of 40,000"),
])
def test_impossible_budgets(name, arch, budget, opts, match):
    dataset = "synthetic" if arch == "wrn-10-1" else DATA
    with pytest.raises(BudgetError, match=match):
        build(name, budget, arch=arch, dataset=dataset, **opts)


@pytest.mark.parametrize("name", ["soft-sharing", "hard-sharing"])
def test_nothing_to_share_is_clear(name):
    with pytest.raises(ConfigError, match=r"model.arch: wrn-10-2 has no two body layers of one shape"):
        build(name, None, arch="wrn-10-2")


def test_hashed_budget_just_above_fixed_parts():
    built = build("hashed", 3_717, bank="shared")
    assert built.report(flops=False).total == 3_717 and built.model.shared["bank"].flat.numel() == 1
    per_layer = build("hashed", 3_733)  # one bucket per layer (17 weight layers)
    assert per_layer.report(flops=False).total == 3_733 and set(per_layer.method.record_info(per_layer.model)["buckets_per_layer"].values()) == {1}


# -- through the trainer ---------------------------------------------------------------------------

RUNS = [
    ("reduced", "40k", {}),
    ("hashed", "40k", {}),
    ("soft-sharing", "77k", {}),
    ("hard-sharing", "80k", {}),
    ("ensemble", None, {"members": "wrn-10-1,wrn-10-0.5,wrn-10-0.25"}),
]


@pytest.mark.parametrize("name,budget,opts", RUNS, ids=[r[0] for r in RUNS])
def test_trains_and_records(name, budget, opts, tiny):
    over = {**tiny, "method.name": name, "model.budget": budget, "train.epochs": 1, "train.max_steps_per_epoch": 2,
            **{f"method.options.{k}": v for k, v in opts.items()}}
    res = train(build_config({}, over))
    assert res.status == "completed", res.record
    rec = json.loads((res.run_dir / "result.json").read_text())
    assert rec["status"] == "completed" and rec["method"]["name"] == name and rec["steps"] == 2
    assert rec["method_info"] and rec["params"]["total"] <= (Budget.parse(budget).params if budget else 10**9)
    if budget is not None:
        assert rec["budget"]["params"] == Budget.parse(budget).params
    assert 0 <= rec["metrics"]["top1"] <= 100
    info = rec["method_info"]
    if name == "reduced":
        assert info["used"]["params"] == rec["params"]["total"] and info["used"]["flops"] == rec["params"]["flops"]["total"]
        assert info["requested"]["arch"] == "wrn-10-1" and info["flops_ratio"] < 1
    if name == "hashed":
        assert rec["params"]["total"] == 40_000
    if name == "ensemble":
        names = ["wrn-10-1", "wrn-10-0.5", "wrn-10-0.25"]
        assert rec["members"] == names and [m["name"] for m in rec["metrics"]["members"]] == names
        rows = rec["metrics"]["anytime"]
        assert len(rows) == 2 ** 3 - 1 and [r["flops"] for r in rows] == sorted(r["flops"] for r in rows)
        assert rows[0]["members"] == ["wrn-10-0.25"] and rows[0]["frontier"] is True
        full = next(r for r in rows if len(r["members"]) == 3)
        assert full["top1"] == pytest.approx(rec["metrics"]["top1"])
        assert info["total"] == rec["params"]["total"] == sum(m["params"] for m in info["members"])


def test_soft_sharing_weight_decay_exempts_coefficients():
    built = build("soft-sharing", None, arch="wrn-16-1", dataset="synthetic")
    cfg = build_config({}, {})
    opt = build_optimizer(built.model, cfg.optim, built.method.no_weight_decay_roles())
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for _, p, role in parameter_roles(built.model):
        assert (id(p) in no_decay) == (role == "coefficients")


def test_hashed_resume_rebuilds_indices_from_seed(tiny):
    """Indices are not in checkpoints: a resumed run rebuilds them from the seed and ends identically."""
    base = {**tiny, "method.name": "hashed", "model.budget": "30k", "method.options.hash_seed": 3,
            "train.max_steps_per_epoch": 2}
    full = train(build_config({}, {**base, "run.out": tiny["run.out"] + "-full"}))
    part = train(build_config({}, base))
    from npasbench.trainer.checkpoint import list_checkpoints, load_checkpoint

    ckpts = list_checkpoints(part.run_dir / "checkpoints")
    assert not any("index" in k for k in load_checkpoint(ckpts[-1])["model"])
    ckpts[-1].unlink()  # resume from the epoch-1 checkpoint
    again = train(build_config({}, base))
    assert again.record["resumed_from"].endswith(ckpts[-2].name)
    assert again.record["metrics"]["top1"] == full.record["metrics"]["top1"]
    assert again.record["metrics"]["loss"] == full.record["metrics"]["loss"]
