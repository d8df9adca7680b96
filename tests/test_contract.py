"""The method contract, proven with `unshared` and with a toy method using every feature."""

from __future__ import annotations

import json

import pytest
import torch

import npasbench
from npasbench import METHODS, Budget, BudgetError, ConfigError, RegistryError, create_model
from npasbench.accounting import parameter_roles
from npasbench.config import build_config
from npasbench.contract import Method, NPASModel
from npasbench.plugins import create_method, register_method
from npasbench.trainer import train
from npasbench.trainer.optim import build_optimizer

from toy_methods import ToyShared


@pytest.fixture
def toy():
    METHODS.add("toy-shared", ToyShared)
    yield "toy-shared"
    METHODS.remove("toy-shared")


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_builds_and_forwards(name):
    built = create_model(name, "wrn-10-1", "synthetic")
    x = torch.randn(4, 3, 32, 32)
    out = built.model(x)
    assert out.shape == (built.model.num_members, 4, 10)
    assert torch.isfinite(out).all()
    rep = built.report()
    assert rep.total == sum(rep.breakdown.values())
    assert rep.flops["per_member"][0] > 0
    cls = METHODS.get(name)
    assert issubclass(cls, Method) and cls.name == name and "total" in cls.budget_modes


def test_unshared_roles_and_budget():
    built = create_model("unshared", "wrn-16-1", "cifar100")
    rep = built.report(flops=False)
    roles = {r for _, _, r in parameter_roles(built.model)}
    assert roles == {"weights", "norm_bias", "head"}
    assert rep.breakdown["head"] == 64 * 100 + 100
    assert rep.total == sum(p.numel() for p in built.model.parameters())
    with pytest.raises(BudgetError, match="needs 180,916 parameters"):
        create_model("unshared", "wrn-16-1", "cifar100", budget="100k")
    ok = create_model("unshared", "wrn-16-1", "cifar100", budget="1M")
    assert ok.report(flops=False).to_dict()["budget_utilisation"] == pytest.approx(rep.total / 1e6)


def test_weight_decay_exemption_is_by_role():
    m = create_method("unshared", {"no_decay_norm_bias": "true"})
    built = create_model(m, "wrn-10-1", "synthetic")
    cfg = build_config({}, {})
    opt = build_optimizer(built.model, cfg.optim, m.no_weight_decay_roles())
    groups = {g["weight_decay"]: g for g in opt.param_groups}
    no_decay_ids = {id(p) for p in groups[0.0]["params"]}
    for _, p, role in parameter_roles(built.model):
        assert (id(p) in no_decay_ids) == (role == "norm_bias")
    plain = build_optimizer(built.model, cfg.optim, create_method("unshared").no_weight_decay_roles())
    assert [g["weight_decay"] for g in plain.param_groups] == [5e-4]


def test_toy_shared_bank_counted_once(toy):
    built = create_model(toy, "wrn-10-1", "synthetic")
    model = built.model
    rep = built.report()
    bank = model.shared["bank"].flat
    assert rep.breakdown["bank"] == bank.numel()
    # every conv of both members reads the same bank tensor, yet it is counted once
    users = [l for l in model.weight_layers() if getattr(l.provider, "_bank", None) is model.shared["bank"]]
    assert len(users) > 2 and {l.spec.member for l in users} == {0} and len(model.weight_layers(1)) * 2 == len(model.weight_layers())
    assert any(l in users for l in model.weight_layers(1))
    coef = sum(l.provider.coef.numel() for l in users)
    own = sum(p.numel() for m in model.members for p in m.parameters()) - coef
    assert rep.total == bank.numel() + coef + own
    assert rep.breakdown["coefficients"] == coef == len(users)
    assert rep.total == sum(p.numel() for p in model.parameters())
    assert "shared.bank.flat" in model.state_dict() and sum("flat" in k for k in model.state_dict()) == 1
    assert len(rep.flops["per_member"]) == 2 and rep.members[1]["name"] == "b"
    # an official-knob budget mode is accepted only where the method offers it
    create_model(toy, "wrn-10-1", "synthetic", budget=Budget(50_000, "bank"))
    with pytest.raises(BudgetError, match="budget_mode"):
        create_model("unshared", "wrn-10-1", "synthetic", budget=Budget(10**7, "bank"))
    # total-mode overrun is refused centrally even if the method does not check
    with pytest.raises(BudgetError, match="over the budget"):
        create_model(toy, "wrn-10-1", "synthetic", budget=1000)


def test_toy_method_full_contract_through_trainer(toy, tiny, tmp_path):
    cfg = build_config({}, {**tiny, "method.name": toy, "train.epochs": 3})
    res = train(cfg)
    assert res.status == "completed", res.record
    rec = res.record
    # the phase ran, its artifact was saved with the run and consumed by build
    art = json.loads((res.run_dir / "artifacts" / "search.json").read_text())
    assert art["artifact"]["classes"] == 10 and rec["phases"] == {"search": "artifacts/search.json"}
    # ensemble metrics per member plus the ensemble
    assert [m["name"] for m in rec["metrics"]["members"]] == ["a", "b"]
    assert 0 <= rec["metrics"]["top1"] <= 100
    # anytime prediction: every member subset, ordered by FLOPs, consistent with the member metrics
    rows = rec["metrics"]["anytime"]
    assert sorted(tuple(r["members"]) for r in rows) == [("a",), ("a", "b"), ("b",)]
    assert [r["flops"] for r in rows] == sorted(r["flops"] for r in rows)
    by = {tuple(r["members"]): r for r in rows}
    members = {m["name"]: m for m in rec["metrics"]["members"]}
    assert by[("a",)]["top1"] == pytest.approx(members["a"]["top1"])
    assert by[("a", "b")]["top1"] == pytest.approx(rec["metrics"]["top1"])
    assert by[("a", "b")]["flops"] == sum(rec["params"]["flops"]["per_member"])
    assert rows[0]["frontier"] is True
    # the model grew at the end of epoch 1 and the checkpoint carries the extra state
    from npasbench.trainer.checkpoint import list_checkpoints, load_checkpoint

    last = load_checkpoint(list_checkpoints(res.run_dir / "checkpoints")[-1])
    assert last["extra"]["grown"] is True
    assert last["extra"]["grad_calls"] == 3 * 4
    assert any("extra.offset" in k for k in last["model"])
    # the new parameter was trained (optimizer rebuilt after the hook)
    offset = next(v for k, v in last["model"].items() if "extra.offset" in k)
    assert offset.abs().sum() > 0


def test_toy_resume_restores_grown_structure(toy, tiny):
    base = {**tiny, "method.name": toy, "train.epochs": 3}
    full = train(build_config({}, {**base, "run.out": tiny["run.out"] + "-full"}))
    part = train(build_config({}, {**base, "train.epochs": 3}))
    assert part.status == full.status == "completed"
    # resume from the epoch-2 checkpoint of `part` in a fresh process state: re-run epoch 3
    from npasbench.trainer.checkpoint import list_checkpoints

    ckpts = list_checkpoints(part.run_dir / "checkpoints")
    ckpts[-1].unlink()  # drop the final checkpoint: resume must rebuild the grown model from extra state
    again = train(build_config({}, base))
    assert again.record["resumed_from"].endswith(ckpts[-2].name)
    assert again.record["metrics"]["top1"] == full.record["metrics"]["top1"]
    assert again.record["metrics"]["loss"] == full.record["metrics"]["loss"]


def test_register_duplicate_is_error():
    with pytest.raises(RegistryError, match="duplicate method name 'unshared'"):
        @register_method("unshared")
        class Again(Method):  # noqa: F841
            def build(self, request):
                raise AssertionError


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="no_decay_norm_bias: expected bool"):
        create_method("unshared", {"no_decay_norm_bias": "perhaps"})
    with pytest.raises(ConfigError, match="unknown option"):
        create_method("unshared", {"width": 3})
    with pytest.raises(RegistryError, match="unknown method 'nope'"):
        create_method("nope")


def test_public_api_exports():
    for name in npasbench.__all__:
        assert hasattr(npasbench, name), name
    assert isinstance(create_model("unshared", "wrn-10-1").model, NPASModel)
