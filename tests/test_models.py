"""Architectures: exact reference layouts and parameter counts, weight-layer order, providers."""

from __future__ import annotations

import pytest
import torch
import torchvision

from npasbench import Budget, RegistryError, create_model
from npasbench.models.layers import Conv, Linear, WeightedLayer
from npasbench.models.registry import ARCHITECTURES, create_backbone, get_arch

CIFAR_ARCHS = [n for n in ARCHITECTURES.names() if get_arch(n).family == "wrn"]  # the CIFAR WRNs (closed form)
IMAGENET_ARCHS = [n for n in ARCHITECTURES.names() if get_arch(n).domain == "imagenet"]


def wrn_params(depth: int, k: int, classes: int) -> int:
    """Closed-form parameter count of the reference pre-activation WRN (independent of our code)."""
    n = (depth - 4) // 6
    ch = [16, 16 * k, 32 * k, 64 * k]
    total = 3 * 16 * 9  # stem
    cin = 16
    for s in range(3):
        cout = ch[s + 1]
        for b in range(n):
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9  # bn1, conv1, bn2, conv2
            if cin != cout:
                total += cin * cout  # 1x1 shortcut
            cin = cout
    return total + 2 * cin + cin * classes + classes  # last BN, classifier


def test_wrn_28_10_reference_counts():
    assert create_model("unshared", "wrn-28-10", "cifar100").report(flops=False).total == 36_536_884
    assert create_model("unshared", "wrn-28-10", "cifar10").report(flops=False).total == 36_479_194


@pytest.mark.parametrize("name", CIFAR_ARCHS)
def test_every_cifar_arch_matches_closed_form(name):
    a = get_arch(name)
    for classes in (10, 100):
        total = create_model("unshared", name, "cifar10" if classes == 10 else "cifar100").report(flops=False).total
        assert total == wrn_params(a.hyper["depth"], a.hyper["width"], classes)


@pytest.mark.parametrize("name,tv", [("resnet50", torchvision.models.resnet50),
                                     ("wrn50-2", torchvision.models.wide_resnet50_2)])
def test_imagenet_archs_match_torchvision(name, tv):
    ours = create_model("unshared", name, "imagenet")
    ref = tv()
    assert ours.report(flops=False).total == sum(p.numel() for p in ref.parameters())
    # same weight shapes in the same order (torchvision's module order)
    ref_shapes = [tuple(m.weight.shape) for m in ref.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [l.spec.shape for l in ours.model.weight_layers()] == ref_shapes


# Trainable parameters of the SSN code's ImageNet network (BryanPlummer/SSN models/wrn.py ``wrn_imagenet``), measured
# on CPU by building the official model, its code imported by path as benchmark/parity/official.py does:
#   wrn = import_official(<checkout>, "wrn"); with quiet(): m = wrn.wrn_imagenet("none", "inter", 1, 50, W, 8, 0, 1000, 1)
#   sum(p.numel() for p in m.parameters() if p.requires_grad)
# at W (--wide) = 1 and 2; 56 weight layers (Conv2d / Linear) both, whose shapes, in module order, equal ours.
# With SSN (wrn.wrn_imagenet("wavg", "inter", 1, 50, 2, 8, max_params, 1000, 1): one group, 8 templates) at --wide 2,
# the same sum gives 5,068,694 at max_params 5M and 10,068,724 at 10M (ResNet-50's: tests/test_ssn_official.py).
OFFICIAL_WRN_IMAGENET = {"resnet50-ssn": (1, 25_576_264), "wrn50-2-ssn": (2, 68_902_472)}
OFFICIAL_WRN_IMAGENET_SSN_WIDE2 = {5_000_000: 5_068_694, 10_000_000: 10_068_724}


@pytest.mark.parametrize("name", sorted(OFFICIAL_WRN_IMAGENET))
def test_ssn_imagenet_archs_match_official_counts(name):
    wide, official = OFFICIAL_WRN_IMAGENET[name]
    built = create_model("unshared", name, "imagenet")
    assert built.report(flops=False).total == official
    specs = built.model.weight_layers()
    assert len(specs) == 56
    # the official trunk (3x3: 32, 32, 64), then per block the skip connection first; --wide scales the mid channels
    assert [l.spec.shape for l in specs[:3]] == [(32, 3, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3)]
    assert [l.spec.shape for l in specs[3:7]] == [(256, 64, 1, 1), (64 * wide, 64, 1, 1), (64 * wide, 64 * wide, 3, 3),
                                                  (256, 64 * wide, 1, 1)]


@pytest.mark.parametrize("max_params", sorted(OFFICIAL_WRN_IMAGENET_SSN_WIDE2))
def test_wrn50_2_ssn_ssn_counts_match_official(max_params):
    opts = {"share_type": "wavg", "upsample_type": "inter", "upsample_window": 1, "bank_size": 8, "param_groups": 1}
    built = create_model("ssn", "wrn50-2-ssn", "imagenet", Budget(max_params, "max_params"), opts)
    assert built.report(flops=False).total == OFFICIAL_WRN_IMAGENET_SSN_WIDE2[max_params]


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_layer_order_and_specs(name):
    net = create_backbone(name, 10)
    layers = [m for m in net.modules() if isinstance(m, WeightedLayer)]
    specs = net.layer_specs
    assert [s.index for s in specs] == list(range(len(specs)))
    assert specs[0].role == "stem" and specs[-1].role == "head" and specs[-1].kind == "linear"
    assert sorted(l.spec.index for l in layers) == list(range(len(specs)))
    assert all(isinstance(l, Conv) for l in layers if l.spec.kind == "conv")
    assert sum(isinstance(l, Linear) and l.spec.role == "head" for l in layers) == 1
    if get_arch(name).family != "vit":  # convnets: the classifier is the only linear layer
        assert sum(isinstance(l, Linear) for l in layers) == 1


def test_wrn_block_order_is_conv1_conv2_shortcut():
    specs = create_backbone("wrn-16-4", 10).layer_specs
    names = [s.name for s in specs]
    assert names[:5] == ["conv_3x3", "stage_1.0.conv1", "stage_1.0.conv2", "stage_1.0.shortcut", "stage_1.1.conv1"]
    assert names[-1] == "classifier"
    short = [s for s in specs if s.role == "shortcut"]
    assert [s.shape for s in short] == [(64, 16, 1, 1), (128, 64, 1, 1), (256, 128, 1, 1)]
    assert [s.stride for s in short] == [1, 2, 2]


def test_preact_shortcut_reads_preactivated_input():
    """The 1x1 shortcut sees relu(bn1(x)), as the reference code (not x itself)."""
    built = create_model("unshared", "wrn-10-2", "synthetic")
    block = built.model.members[0].stage_1[0]
    assert block.shortcut is not None
    seen = {}
    block.shortcut.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0].clone()))
    block.eval()
    x = torch.randn(2, 16, 32, 32)
    block(x)
    assert torch.allclose(seen["inp"], torch.relu(block.bn1(x)))
    assert not torch.allclose(seen["inp"], x)


def test_layer_without_provider_is_a_clear_error():
    net = create_backbone("wrn-10-1", 10)
    with pytest.raises(RuntimeError, match="no weight provider"):
        net(torch.randn(1, 3, 32, 32))


def test_fractional_and_bad_wrn_names():
    assert get_arch("wrn-16-1.5").hyper["width"] == 1.5
    create_backbone("wrn-16-1.5", 10)
    with pytest.raises(RegistryError, match="6n\\+4"):
        get_arch("wrn-15-2")
    with pytest.raises(RegistryError, match="unknown architecture"):
        get_arch("vgg16")
