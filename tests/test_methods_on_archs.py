"""Every registered method on every architecture family beyond the residual convnets (a ViT, a DenseNet-BC, a
MobileNetV2 with its depthwise convolutions), and what each method does with a transformer's layers.

At its natural size every method builds, runs forward and backward. At 50% of the unshared network a method
either fits the budget or refuses with one line that names the field and says how many parameters it needs;
which in-tree methods fit is pinned per architecture, so a method that silently stops fitting fails here."""

from __future__ import annotations

import re

import pytest
import torch

from npasbench import METHODS, BudgetError, ConfigError, create_model
from npasbench.errors import NPASError
from npasbench.models.layers import Conv, Linear

ARCHS = ["vit-4-64-h2-p4", "densenet-bc-22-6", "mobilenetv2-cifar-0.25"]
IN_TREE = {"unshared", "ensemble", "hard-sharing", "soft-sharing", "hashed", "reduced", "ssn", "superweights"}
# which in-tree methods fit 50% (the rest have a fixed size or a structural floor above it, and say so)
FITS_HALF = {
    "vit-4-64-h2-p4": {"hard-sharing", "hashed", "reduced", "soft-sharing", "ssn"},
    "densenet-bc-22-6": {"hashed", "reduced", "ssn", "superweights"},
    "mobilenetv2-cifar-0.25": {"hashed", "reduced", "ssn"},
}


def _step(built) -> None:
    model = built.model.train()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (model.num_members, 4, 100) and torch.isfinite(out).all()
    out.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_builds_and_trains_at_its_natural_size(name, arch):
    built = create_model(name, arch, "cifar100")
    _step(built)
    rep = built.report()
    assert rep.total == sum(rep.breakdown.values()) and rep.flops["per_member"][0] > 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", METHODS.names())
def test_at_half_a_method_fits_or_says_what_it_needs(name, arch):
    try:
        built = create_model(name, arch, "cifar100", budget="50%")
    except NPASError as exc:
        text = str(exc)
        assert "\n" not in text and isinstance(exc, (BudgetError, ConfigError))
        assert re.match(r"(budget|model\.arch|method\.options)", text), text
        if isinstance(exc, BudgetError):  # how much it would need: the smallest budget it can do
            assert re.search(r"(needs|has) (at least |more than the )?[\d,]+ (unique trainable )?parameters", text), text
        assert name not in FITS_HALF[arch], text
        return
    assert name in FITS_HALF[arch] or name not in IN_TREE
    assert built.report(flops=False).total <= built.request.budget.params
    _step(built)


def test_hard_sharing_on_a_vit_is_albert():
    built = create_model("hard-sharing", "vit-4-64-h2-p4", "cifar100")
    net = built.model.members[0]
    for op in ("qkv", "proj"):
        weights = {id(b.attn.__getattr__(op).weight()) for b in net.blocks}
        assert len(weights) == 1  # one tensor for every block
    assert len({id(b.fc1.weight()) for b in net.blocks}) == 1
    assert len({id(b.norm1.weight) for b in net.blocks}) == 4  # norms stay per block
    attention = create_model("hard-sharing", "vit-4-64-h2-p4", "cifar100", options={"share": "attention"}).model.members[0]
    assert len({id(b.attn.qkv.weight()) for b in attention.blocks}) == 1
    assert len({id(b.fc1.weight()) for b in attention.blocks}) == 4
    mlp = create_model("hard-sharing", "vit-4-64-h2-p4", "cifar100", options={"share": "mlp"}).model.members[0]
    assert len({id(b.attn.qkv.weight()) for b in mlp.blocks}) == 4 and len({id(b.fc2.weight()) for b in mlp.blocks}) == 1
    with pytest.raises(ConfigError, match="method.options.share: 'mlp' selects part of a transformer block"):
        create_model("hard-sharing", "wrn-16-1", "cifar100", options={"share": "mlp"})


def test_sharing_baselines_start_a_vit_at_its_own_init():
    """Templates and shared weights of a ViT start at timm's N(0, 0.02), not at the convnets' kaiming scale."""
    for name in ("hard-sharing", "soft-sharing"):
        net = create_model(name, "vit-4-64-h2-p4", "cifar100").model.members[0]
        std = net.blocks[1].fc1.weight().std().item()
        assert 0.015 < std < 0.025, (name, std)


def test_ssn_on_linear_and_depthwise_layers_with_every_upsampling():
    for arch in ("vit-4-64-h2-p4", "mobilenetv2-cifar-0.25"):
        for up in ("inter", "repeat", "mask", "wavg"):
            built = create_model("ssn", arch, "cifar100", budget="25%", options={"upsample_type": up})
            assert built.report(flops=False).total <= built.request.budget.params
            _step(built)
    vit = create_model("ssn", "vit-4-64-h2-p4", "cifar100", budget="30%").model.members[0]
    # grouped body linears keep the architecture's biases; only the classifier drops it (official SLinear)
    assert vit.net.blocks[0].attn.qkv.bias is not None and vit.net.head.bias is None


def test_ssn_learned_groups_on_a_vit(tmp_path):
    from npasbench.config import build_config
    from npasbench.trainer import train

    over = {"method.name": "ssn", "model.arch": "vit-2-32-h1-p4", "model.budget": "40%",
            "method.options": {"param_groups": 3, "search_epochs": 1, "search_max_params": 20000,
                               "search_steps_per_epoch": 2, "search_milestones": [], "search_gammas": []},
            "data.synthetic_train": 128, "data.synthetic_test": 64, "train.epochs": 1, "train.batch_size": 32,
            "train.max_steps_per_epoch": 2, "run.progress": False, "run.out": str(tmp_path / "run")}
    result = train(build_config({}, over))
    assert result.status == "completed" and len(result.record["method_info"]["groups"]) == 3


def test_superweights_levels_on_linear_layers_and_a_multi_width_vit_ensemble():
    from npasbench.methods.superweights.plan import depth_bins, make_plan, shared_layers
    from npasbench.models.registry import create_backbone

    members = ["vit-2-128-h2-p4", "vit-2-64-h2-p4"]  # same depth, embed 128 + 64
    shapes = [[tuple(l.spec.shape) for l in shared_layers(create_backbone(a, 100))] for a in members]
    plan = make_plan(shapes, depth_bins(shapes, 1), 0)
    linear = [lv for c, lvs in plan.levels.items() for lv in lvs if len(lv.shape) == 2]
    # L-shaped pieces for linear layers: levels that add input columns (the wider member) exist
    assert any(lv.in_piece is not None for lv in linear)
    # equal-size transposed shapes (fc1 (4d, d), fc2 (d, 4d)) are one level each per width, not one per block
    assert len(linear) <= 8
    built = create_model("superweights", "vit-2-128-h2-p4", "cifar100", budget="60%",
                         options={"members": ",".join(members), "param_group_bins": 1})
    assert built.model.num_members == 2
    _step(built)
    for member, arch in zip(built.model.members, members):
        for layer in member.modules():
            if isinstance(layer, (Conv, Linear)):
                assert tuple(layer.weight().shape) == layer.spec.shape, (arch, layer.spec.name)


def test_reduced_shrinks_each_family_along_its_own_dimension():
    cases = [("vit-4-64-h2-p4", "width", "vit-4-"), ("vit-4-64-h2-p4", "depth", "-64-h2-p4"),
             ("densenet-bc-22-6", "width", "densenet-bc-22-"), ("densenet-bc-22-6", "depth", "-6"),
             ("mobilenetv2-cifar-0.25", "width", "mobilenetv2-cifar-0.")]
    for arch, dim, part in cases:
        built = create_model("reduced", arch, "cifar100", budget="50%", options={"dimension": dim})
        info = built.method.record_info(built.model)
        assert info["reduced"] and part in info["used"]["arch"] and info["params_ratio"] <= 0.5
        if "next_larger" in info:
            assert info["next_larger"]["params"] > built.request.budget.params
    with pytest.raises(ConfigError, match="method.options.dimension: 'depth' reduction is not defined for MobileNetV2"):
        create_model("reduced", "mobilenetv2-cifar", "cifar100", budget="50%", options={"dimension": "depth"})
