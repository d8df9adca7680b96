"""ViT / DeiT, DenseNet-BC and MobileNetV2 against well-kept reference implementations built here: timm's
``VisionTransformer`` and torchvision's ``DenseNet`` and ``mobilenet_v2``. Equal unique-parameter counts,
equal weight shapes in the same order, equal inference FLOPs, and -- with the reference's weights copied in
-- equal outputs, so the layouts are the same network and not merely the same size."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch.utils.flop_counter import FlopCounterMode

from npasbench import ConfigError, RegistryError, create_model
from npasbench.models.layers import WeightedLayer
from npasbench.models.registry import get_arch


def _ref_flops(model: nn.Module, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def _ref_weight_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _copy_reference_weights(ours: nn.Module, ref: nn.Module) -> None:
    """Copy the reference's weights into ours: weight layers by order (weight and bias), every other parameter
    and buffer (norms, embeddings) by order of the modules that hold them."""
    ref_layers = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    our_layers = sorted((m for m in ours.modules() if isinstance(m, WeightedLayer)), key=lambda m: m.spec.index)
    assert len(ref_layers) == len(our_layers)
    with torch.no_grad():
        for a, b in zip(our_layers, ref_layers):
            a.provider.weight.copy_(b.weight)
            assert (a.bias is None) == (b.bias is None), a.spec.name
            if a.bias is not None:
                a.bias.copy_(b.bias)

        def rest(model: nn.Module) -> list[torch.Tensor]:
            out = []
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, WeightedLayer)) or m is getattr(m, "provider", None):
                    continue
                if any(isinstance(m, t) for t in (nn.BatchNorm2d, nn.LayerNorm)):
                    out += [m.weight, m.bias] + ([m.running_mean, m.running_var] if isinstance(m, nn.BatchNorm2d) else [])
            return out

        ours_rest, ref_rest = rest(ours), rest(ref)
        assert len(ours_rest) == len(ref_rest)
        for a, b in zip(ours_rest, ref_rest):
            a.copy_(b)
        for name in ("cls_token", "pos_embed"):
            if hasattr(ref, name):
                getattr(ours, name).copy_(getattr(ref, name))


def _timm_vit(arch: str, classes: int) -> nn.Module:
    h = get_arch(arch).hyper
    size = get_arch(arch).image_size
    return TimmViT(img_size=size, patch_size=h["patch"], embed_dim=h["embed"], depth=h["depth"], num_heads=h["heads"],
                   num_classes=classes)


@pytest.mark.parametrize("arch,timm_name", [("deit-tiny", "deit_tiny_patch16_224"),
                                            ("deit-tiny", "vit_tiny_patch16_224"),
                                            ("deit-small", "deit_small_patch16_224")])
def test_deit_counts_equal_timm(arch, timm_name):
    ours = create_model("unshared", arch, "imagenet")
    ref = timm.create_model(timm_name, pretrained=False)
    assert ours.report(flops=False).total == sum(p.numel() for p in ref.parameters())
    assert [l.spec.shape for l in ours.model.weight_layers()] == _ref_weight_shapes(ref)


@pytest.mark.parametrize("arch,expected", [("vit-tiny-p4", 5_380_132), ("vit-small-p4", 21_376_996)])
def test_cifar_vits_equal_timm_at_32px(arch, expected):
    ours = create_model("unshared", arch, "cifar100")
    ref = _timm_vit(arch, 100)
    rep = ours.report()
    assert rep.total == sum(p.numel() for p in ref.parameters()) == expected
    assert [l.spec.shape for l in ours.model.weight_layers()] == _ref_weight_shapes(ref)
    assert rep.flops["per_member"][0] == _ref_flops(ref, 32)


def test_deit_tiny_flops_equal_timm():
    ours = create_model("unshared", "deit-tiny", "imagenet")
    assert ours.report().flops["per_member"][0] == _ref_flops(timm.create_model("deit_tiny_patch16_224"), 224)


def test_vit_with_timm_weights_computes_timm_outputs():
    arch = "vit-2-64-h2-p4"
    ours = create_model("unshared", arch, "cifar100").model
    ref = _timm_vit(arch, 100).eval()
    net = ours.members[0]
    _copy_reference_weights(net, ref)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), ref(x), rtol=1e-4, atol=1e-5)  # approx: another op order


def _densenet_reference(depth: int, growth: int, classes: int) -> nn.Module:
    """torchvision's DenseNet (BC: bottleneck 4k, compression 0.5) with the CIFAR stem: one 3x3 conv of 2k channels
    in place of the ImageNet 7x7 conv, BN, ReLU and max-pool."""
    n = (depth - 4) // 6
    ref = torchvision.models.DenseNet(growth_rate=growth, block_config=(n, n, n), num_init_features=2 * growth,
                                      bn_size=4, num_classes=classes)
    ref.features.conv0 = nn.Conv2d(3, 2 * growth, 3, 1, 1, bias=False)
    ref.features.norm0 = nn.Identity()
    ref.features.relu0 = nn.Identity()
    ref.features.pool0 = nn.Identity()
    return ref


@pytest.mark.parametrize("classes,expected", [(10, 769_162), (100, 800_032)])
def test_densenet_bc_100_12_is_the_published_0_8m_model(classes, expected):
    ours = create_model("unshared", "densenet-bc-100-12", "cifar10" if classes == 10 else "cifar100")
    ref = _densenet_reference(100, 12, classes)
    rep = ours.report()
    assert rep.total == sum(p.numel() for p in ref.parameters()) == expected
    assert [l.spec.shape for l in ours.model.weight_layers()] == _ref_weight_shapes(ref)
    assert rep.flops["per_member"][0] == _ref_flops(ref, 32)


def test_densenet_with_torchvision_weights_computes_its_outputs():
    ours = create_model("unshared", "densenet-bc-16-6", "cifar10").model.members[0]
    ref = _densenet_reference(16, 6, 10)
    for m in ref.modules():  # non-trivial running statistics, so that the BN order is checked too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    _copy_reference_weights(ours, ref)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)


def _mobilenet_reference(width: float, classes: int, cifar: bool) -> nn.Module:
    ref = torchvision.models.mobilenet_v2(num_classes=classes, width_mult=width)
    if cifar:  # the CIFAR variant: stride 1 in the stem and in the second stage's first block
        ref.features[0][0].stride = (1, 1)
        ref.features[2].conv[1][0].stride = (1, 1)
    return ref


@pytest.mark.parametrize("arch,width,dataset", [("mobilenetv2", 1.0, "imagenet"), ("mobilenetv2-0.5", 0.5, "imagenet"),
                                                ("mobilenetv2-cifar", 1.0, "cifar100")])
def test_mobilenetv2_equals_torchvision(arch, width, dataset):
    cifar = dataset != "imagenet"
    classes = 100 if cifar else 1000
    ours = create_model("unshared", arch, dataset)
    ref = _mobilenet_reference(width, classes, cifar)
    rep = ours.report()
    assert rep.total == sum(p.numel() for p in ref.parameters())
    if arch == "mobilenetv2":
        assert rep.total == 3_504_872
    assert [l.spec.shape for l in ours.model.weight_layers()] == _ref_weight_shapes(ref)
    ref_groups = [m.groups for m in ref.modules() if isinstance(m, nn.Conv2d)]
    assert [l.spec.groups for l in ours.model.weight_layers() if l.spec.kind == "conv"] == ref_groups
    assert sum(g > 1 for g in ref_groups) == 17  # one depthwise conv per inverted residual block
    assert rep.flops["per_member"][0] == _ref_flops(ref, 32 if cifar else 224)


def test_mobilenetv2_cifar_with_torchvision_weights_computes_its_outputs():
    ours = create_model("unshared", "mobilenetv2-cifar-0.25", "cifar10").model.members[0]
    ref = _mobilenet_reference(0.25, 10, cifar=True)
    _copy_reference_weights(ours, ref)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)


def test_grammar_names_and_their_errors():
    a = get_arch("vit-6-96-p4")
    assert a.family == "vit" and a.image_size == 32 and a.hyper == {"depth": 6, "embed": 96, "heads": 1, "patch": 4}
    assert get_arch("deit-12-384-h6").hyper == get_arch("deit-small").hyper
    assert get_arch("densenet-bc-40-12").hyper == {"depth": 40, "growth": 12}
    assert get_arch("mobilenetv2-cifar-0.5").domain == "cifar" and get_arch("mobilenetv2-0.75").domain == "imagenet"
    for bad, field in [("vit-6-100-h3-p4", "heads"), ("vit-6-96-p5", "patch"), ("vit-6-96", "patch"),
                       ("deit-12-192-p8", "patch 16"), ("densenet-bc-41-12", "6n\\+4")]:
        with pytest.raises(RegistryError, match=field):
            get_arch(bad)


def test_a_vit_refuses_a_data_set_of_another_image_size():
    with pytest.raises(ConfigError, match=r"model.arch: deit-tiny takes 224x224 images .* cifar100 gives 32x32"):
        create_model("unshared", "deit-tiny", "cifar100")
    with pytest.raises(ConfigError, match="data.synthetic_size"):
        create_model("unshared", "deit-tiny", "synthetic")
