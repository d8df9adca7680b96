"""Shapeshifter Networks: faithfulness to the official parameter accounting, exact weight shapes,
gradients, groups, the search phase, budgets and the eval-time weight cache."""

from __future__ import annotations

import json

import pytest
import torch

from npasbench.methods.ssn.plan import SSNPlan
from npasbench import Budget, BudgetError, ConfigError, create_model
from npasbench.config import build_config
from npasbench.methods.ssn.groups import auto_groups, manual_groups, random_groups
from npasbench.methods.ssn.kmeans import kmeans
from npasbench.methods.ssn.method import plan_counts, params_outside_weight_layers, backbone_specs
from npasbench.models.registry import ARCHITECTURES, create_backbone, get_arch
from npasbench.trainer import train

OFFICIAL_WRN28_MANUAL = [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 9, 10, 11, 12, 12, 12, 12, 12, 12, 13]


def ssn(arch="wrn-16-1", dataset="synthetic", budget=None, **opts):
    return create_model("ssn", arch, dataset, budget, {k: v for k, v in opts.items()})


@pytest.mark.parametrize("max_params,total", [(3_650_000, 3_668_084), (None, 3_704_494)])
def test_official_anchor_counts(max_params, total):
    budget = Budget(max_params, "max_params") if max_params else None
    rep = ssn("wrn-28-10", "cifar100", budget).report(flops=False)
    assert rep.total == total
    assert rep.breakdown["norm_bias"] == 17_952 and rep.breakdown["head"] == 0
    assert rep.breakdown["bank"] == (3_650_000 if max_params else 3_686_400)
    assert rep.breakdown["coefficients"] == (132 if max_params else 142)


CASES = [
    dict(share_type="wavg", upsample_type="inter"),
    dict(share_type="emb", upsample_type="inter"),
    dict(share_type="avg", upsample_type="inter"),
    dict(share_type="wavg", upsample_type="repeat"),
    dict(share_type="wavg", upsample_type="mask", upsample_window=2),
    dict(share_type="wavg", upsample_type="wavg"),
    dict(share_type="avg", upsample_type="mask"),
    dict(share_type="wavg", param_groups=0),
    dict(share_type="emb", param_groups=-1),
    dict(share_type="wavg", param_groups=3, group_type="random"),
    dict(share_type="wavg", param_groups=2, group_type="manual"),
    dict(share_type="wavg", spread_blocks=True),
    dict(share_type="wavg", bank_size=2, singleton_bias=False, param_groups=-1),
]


def _pairs():
    for opts in CASES:
        budgets = [None, Budget(150_000, "max_params"), Budget(120_000)]
        if opts.get("param_groups", 1) in (0, 1) or opts.get("group_type") == "random":
            budgets.append(Budget(6000, "max_params"))  # layers far larger than their bank: upsampling
        for b in budgets:
            yield pytest.param(opts, b, id=",".join(f"{k}={v}" for k, v in opts.items()) + f"-{b}")


@pytest.mark.parametrize("opts,budget", list(_pairs()))
def test_weights_shapes_counts_and_gradients(opts, budget):
    built = ssn("wrn-16-1", "synthetic", budget, **opts)
    model = built.model
    # the analytic count (used by the budget solver) equals the built model's unique parameters
    net, specs = backbone_specs("wrn-16-1", 10)
    plan = model.built(SSNPlan)
    counted = plan_counts(plan, specs, built.method.options, params_outside_weight_layers(net))
    rep = built.report(flops=False)
    assert counted["total"] == rep.total
    for role in ("bank", "coefficients", "generators"):
        assert counted[role] == rep.breakdown[role], role
    # every generated weight has its layer's exact shape, and batched == per-layer reference
    for name, group in model.shared.items():
        weights = group.generate()
        for pos, (w, lp) in enumerate(zip(weights, group.plans)):
            assert tuple(w.shape) == lp.shape
            assert torch.allclose(w, group.reference_weight(pos), atol=1e-5), (name, lp.index)
    # gradients reach exactly the bank entries that some layer reads
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (1, 4, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, group in model.shared.items():
        read = torch.zeros(group.bank.flat.numel(), dtype=torch.bool)
        for lp in group.plans:
            read[lp.start:lp.read_end] = True
        nonzero = group.bank.flat.grad.ne(0)
        assert not (nonzero & ~read).any(), "gradient on an unread bank entry"
        assert nonzero[read].float().mean() > 0.999, "some read bank entries got no gradient"
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("opts,budget", list(_pairs()))
def test_batched_generation_gradients_equal_the_per_layer_reference(opts, budget):
    """The hand-written backward of the batched generator (``_MixTemplates``) gives the same bank and
    coefficient gradients as autograd through the official per-layer slice-and-mix, overlapping
    (wrapped) blocks included."""
    model = ssn("wrn-16-1", "synthetic", budget, **opts).model
    for name, group in model.shared.items():
        params = [p for p in group.parameters()]
        torch.manual_seed(1)
        probes = [torch.randn(lp.shape) for lp in group.plans]
        fast = torch.autograd.grad(sum((w * r).sum() for w, r in zip(group.generate(), probes)), params,
                                   allow_unused=True)
        ref = torch.autograd.grad(sum((group.reference_weight(i) * r).sum() for i, r in enumerate(probes)),
                                  params, allow_unused=True)
        for p, a, b in zip(params, fast, ref):
            assert (a is None) == (b is None), name
            if a is not None:
                assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (name, tuple(p.shape), (a - b).abs().max())


def test_manual_rule_reproduces_official_wrn28_list():
    specs = create_backbone("wrn-28-10", 100).layer_specs
    assert manual_groups(specs) == OFFICIAL_WRN28_MANUAL


def test_auto_and_random_groups():
    specs = create_backbone("wrn-28-10", 100).layer_specs
    by_type = auto_groups(specs, "type")
    assert set(by_type) == {0, 1} and by_type[-1] == 1 and by_type.count(1) == 1
    by_shape = auto_groups(specs, "shape")
    assert len(set(by_shape)) == len({s.shape for s in specs})
    r = random_groups(len(specs), 5, seed=3)
    assert sorted(set(r)) == list(range(5)) and r == random_groups(len(specs), 5, seed=3)
    assert r != random_groups(len(specs), 5, seed=4)
    with pytest.raises(ConfigError, match="param_groups"):
        random_groups(4, 5, 0)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_architecture(arch):
    dataset = "imagenet" if get_arch(arch).domain == "imagenet" else "cifar100"
    plain = create_model("unshared", arch, dataset).report(flops=False).total
    budget = str(int(0.3 * plain))  # a 30% budget: singleton layers of wide WRNs alone exceed 1M
    # by-shape groups (-1) where layers repeat their shapes; WRN-10 has no two layers of one shape, and DenseNet-BC's
    # growing inputs and MobileNetV2's expanding blocks leave most layers alone in their shape (its singletons alone
    # exceed 30%: test_by_shape_groups_say_why_a_budget_is_too_small), so those share one group
    family, depth = get_arch(arch).family, get_arch(arch).hyper.get("depth", 0)
    groups = -1 if depth > 10 and family not in ("densenet-bc", "mobilenetv2") else 1
    built = ssn(arch, dataset, budget, param_groups=groups)
    rep = built.report(flops=False)
    assert rep.total <= Budget.parse(budget).params
    assert rep.total >= 0.98 * Budget.parse(budget).params
    size = get_arch(arch).image_size or (32 if dataset == "cifar100" else 64)
    out = built.model(torch.randn(2, 3, size, size))
    assert out.shape[-1] == (100 if dataset == "cifar100" else 1000)


@pytest.mark.parametrize("arch", ["densenet-bc-100-12", "mobilenetv2-cifar"])
def test_by_shape_groups_say_why_a_budget_is_too_small(arch):
    with pytest.raises(BudgetError, match=r"^budget: SSN on \d+ layers here needs more than the [\d,]+ weights of its singleton"):
        ssn(arch, "cifar100", "30%", param_groups=-1)


@pytest.mark.parametrize("budget", ["150k", "200k", "400k", "1M"])
@pytest.mark.parametrize("groups", [1, -1])
def test_total_budget_is_solved_tightly(budget, groups):
    b = Budget.parse(budget)
    rep = ssn("wrn-16-2", "cifar100", b, param_groups=groups).report(flops=False)
    assert rep.total <= b.params
    assert rep.total >= b.params - 100  # the largest bank that fits, not a loose guess


def test_impossible_budgets_are_clear():
    with pytest.raises(BudgetError, match="needs at least"):
        ssn("wrn-16-2", "cifar100", "2k", param_groups=1)
    with pytest.raises(BudgetError, match="weights of its singleton layers"):
        ssn("resnet50", "imagenet", "5M", param_groups=-1)
    with pytest.raises(BudgetError, match="too small"):
        ssn("wrn-16-2", "cifar100", Budget(5, "max_params"))
    with pytest.raises(BudgetError, match="budget_mode"):
        ssn("wrn-16-2", "cifar100", Budget(10**6, "bank"))


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="share_type: must be one of"):
        ssn(share_type="sum")
    with pytest.raises(ConfigError, match="bank_size"):
        ssn(bank_size=0)
    with pytest.raises(ConfigError, match="groups: 3 ids for"):
        ssn(groups="0,1,1")
    with pytest.raises(ConfigError, match="search phase"):
        ssn(param_groups=3)  # learned groups without the search artifact


def test_explicit_groups_and_singletons_are_plain_layers():
    specs = create_backbone("wrn-10-1", 10).layer_specs
    groups = [0] + [1] * (len(specs) - 2) + [2]
    built = ssn("wrn-10-1", "synthetic", Budget(20000, "max_params"), groups=",".join(map(str, groups)))
    net = built.model.members[0].net
    assert net.conv_3x3.bias is not None and net.classifier.bias is not None  # plain nn.Conv2d / nn.Linear
    assert built.report(flops=False).breakdown["weights"] == specs[0].numel
    no_bias = ssn("wrn-10-1", "synthetic", Budget(20000, "max_params"), groups=",".join(map(str, groups)),
                  singleton_bias=False)
    assert no_bias.model.members[0].net.conv_3x3.bias is None


def test_spread_blocks_removes_dead_regions():
    plain = ssn("wrn-16-4", "cifar100", Budget(1_000_000, "max_params")).model.built(SSNPlan)
    fixed = ssn("wrn-16-4", "cifar100", Budget(1_000_000, "max_params"), spread_blocks=True).model.built(SSNPlan)
    assert sum(plain.unread_bank_entries().values()) > 0
    assert sum(fixed.unread_bank_entries().values()) < sum(plain.unread_bank_entries().values())


def test_eval_cache_reuses_and_invalidates():
    # exact: the same cached weights and the same forward twice; after a step the outputs must differ by far more than
    # rounding
    built = ssn("wrn-10-1", "synthetic", "20k")
    model = built.model
    group = model.shared["group0"]
    calls = {"n": 0}
    orig = group.generate

    def counting():
        calls["n"] += 1
        return orig()

    group.generate = counting
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        a = model(x)
        b = model(x)
    assert calls["n"] == 1 and torch.equal(a, b)
    # an optimizer step changes the bank: the cache must notice
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).sum().backward()
    opt.step()
    n_before = calls["n"]
    model.eval()
    with torch.no_grad():
        c = model(x)
    assert calls["n"] == n_before + 1 and not torch.equal(a, c)
    # load_state_dict restores old weights in place: the cache must notice again
    fresh = ssn("wrn-10-1", "synthetic", "20k").model.eval()
    with torch.no_grad():
        ref = fresh(x)
        model.load_state_dict(fresh.state_dict())
        d = model(x)
    assert torch.allclose(d, ref, atol=1e-6)
    # with gradients on, weights are always regenerated (they need the autograd graph)
    n = calls["n"]
    model(x).sum().backward()
    model(x).sum().backward()
    assert calls["n"] == n + 2


def test_kmeans_exact_groups_and_seeded():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(29, 24, generator=rng).numpy()
    for k in (2, 5, 13, 29):
        labels, _ = kmeans(x, k, seed=1)
        assert sorted(set(labels.tolist())) == list(range(k))
    assert (kmeans(x, 5, seed=1)[0] == kmeans(x, 5, seed=1)[0]).all()


@pytest.mark.parametrize("share", ["emb", "wavg"])
def test_search_phase_through_the_trainer(share, tmp_path):
    over = {"method.name": "ssn", "model.arch": "wrn-10-1", "model.budget": "25k",
            "method.options": {"param_groups": 3, "search_epochs": 2, "search_max_params": 100000,
                               "search_steps_per_epoch": 2, "search_share_type": share, "search_milestones": [1],
                               "search_gammas": [0.1]},
            "data.synthetic_train": 256, "data.synthetic_test": 128, "train.epochs": 1, "train.batch_size": 64,
            "train.max_steps_per_epoch": 2, "run.progress": False}
    a = train(build_config({}, {**over, "run.out": str(tmp_path / "a")}))
    b = train(build_config({}, {**over, "run.out": str(tmp_path / "b")}))
    art_a = json.loads((tmp_path / "a" / "artifacts" / "search.json").read_text())["artifact"]
    art_b = json.loads((tmp_path / "b" / "artifacts" / "search.json").read_text())["artifact"]
    assert len(set(art_a["labels"])) == 3 and art_a["labels"] == art_b["labels"]
    assert art_a["feature_dim"] == (24 if share == "emb" else 4)
    assert a.status == "completed" and a.record["params"]["total"] <= 25_000
    assert a.record["metrics"] == b.record["metrics"]
    # the trained model really uses the learned groups
    assert len(a.record["phases"]) == 1
    info = a.record["method_info"]
    assert len(info["groups"]) == 3
    from npasbench.methods.ssn.groups import normalise

    by_layer = [next(g["id"] for g in info["groups"] if i in g["layers"]) for i in range(len(art_a["labels"]))]
    assert by_layer == normalise(art_a["labels"])


def test_search_phase_key_follows_what_the_search_trains_with():
    """The shared search artifact is keyed by what its training reads (it trains through the run's training
    step): AMP and label smoothing change the key, the budget and the training length do not."""
    from npasbench.config import build_config
    from npasbench.experiment import identity_dict, resolve
    from npasbench.plugins import create_method

    def key(**overrides):
        cfg = resolve(build_config({}, {"method.name": "ssn", "model.arch": "wrn-16-1", **overrides})).config
        return create_method("ssn", cfg.method.options).phase_inputs("search", identity_dict(cfg))

    base = key()
    assert key(**{"train.epochs": 7, "model.budget": 60_000}) == base
    assert key(**{"train.amp": True}) != base and key(**{"optim.label_smoothing": 0.1}) != base
