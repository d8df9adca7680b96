"""Weight layers whose weights come from the method, not from the layer.

Every convolution and linear layer of every architecture is a ``WeightedLayer``: it knows its
``LayerSpec`` (shape, role, position) and asks its *weight provider* for the weight on each
forward. The plain network gives each layer an ``OwnedWeight``; sharing methods hand out providers
that generate the weight from shared storage. So sharing methods need no copy of an architecture.

Contract for providers: an ``nn.Module`` whose ``forward()`` returns a tensor of exactly
``spec.shape``. Storage shared between layers must live in the model's ``shared`` container, and a
provider must keep its reference to it *outside* the module tree (e.g. in a plain attribute set with
``object.__setattr__``), so that a shared bank appears once in ``state_dict`` and ``parameters()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

LayerKind = Literal["conv", "linear"]
LayerRole = Literal["stem", "body", "shortcut", "head"]
# How a layer's own weight is initialised when nothing shares it (``OwnedWeight``; ``init_weight_``):
# "kaiming" = kaiming-normal, fan-in, ReLU gain (the WRN/ResNet/DenseNet reference code);
# "kaiming_fan_out" = the same with fan-out (torchvision's MobileNetV2 convs); "trunc_normal" = N(0, 0.02)
# truncated at +-2 std (timm's ViT/DeiT init of every linear layer); "normal_0.01" = N(0, 0.01) (torchvision's
# MobileNetV2 classifier).
LayerInit = Literal["kaiming", "kaiming_fan_out", "trunc_normal", "normal_0.01"]


@dataclass(frozen=True)
class LayerSpec:
    """What a sharing method needs to know about one weight layer."""

    name: str  # module path inside its network, e.g. "stage_1.0.conv1"
    kind: LayerKind
    shape: tuple[int, ...]  # weight shape: (out, in, kh, kw) for conv, (out, in) for linear
    index: int = -1  # weight-layer order within the network (stem first, classifier last)
    role: LayerRole = "body"
    stage: int = 0  # 0 = stem, 1.. = stages, last+1 = head
    block: int = -1  # block index within the stage (-1 outside blocks)
    stride: int = 1
    padding: int = 0
    member: int = 0  # ensemble member index (set when a model holds several networks)
    groups: int = 1  # conv groups: shape[1] is in_channels / groups (depthwise: groups == in_channels)
    # what the layer is inside its block when the architecture names it: "qkv", "proj" (attention), "fc1", "fc2"
    # (MLP) in a transformer block; "" for convnets, whose layers are told apart by shape. Methods that share
    # only part of a transformer block (hard-sharing's `share`) select layers by it.
    op: str = ""
    init: LayerInit = "kaiming"
    bias: bool = False  # the architecture gives the layer a bias (a transformer's linears, ViT's patch embedding)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def kernel_size(self) -> int:
        return self.shape[2] if self.kind == "conv" else 1

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[1:])

    def with_member(self, member: int) -> "LayerSpec":
        return replace(self, member=member)


def kaiming_normal_(weight: torch.Tensor) -> torch.Tensor:
    """``init.kaiming_normal_`` (fan_in, ReLU gain), the init the reference WRN/ResNet code uses."""
    return nn.init.kaiming_normal_(weight)


def init_weight_(weight: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    """Initialise a tensor of ``spec.shape`` as the architecture's reference code initialises that layer
    (``spec.init``): the plain network's weights and every hand-crafted share of them start alike, so a
    sharing baseline is not handicapped by an init its architecture never used."""
    if spec.init == "trunc_normal":
        return nn.init.trunc_normal_(weight, std=0.02, a=-0.04, b=0.04)
    if spec.init == "kaiming_fan_out":
        return nn.init.kaiming_normal_(weight, mode="fan_out")
    if spec.init == "normal_0.01":
        return nn.init.normal_(weight, std=0.01)
    return kaiming_normal_(weight)


class OwnedWeight(nn.Module):
    """A layer's own, unshared weight tensor: the plain network's provider."""

    npas_roles = {"weight": "weights"}

    def __init__(self, spec: LayerSpec, head: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(spec.shape))
        init_weight_(self.weight.data, spec)
        if head:
            self.npas_roles = {"weight": "head"}

    def forward(self) -> torch.Tensor:
        return self.weight


class WeightedLayer(nn.Module):
    """Base of ``Conv`` and ``Linear``: holds a spec and a provider slot."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.provider: nn.Module | None = None

    def set_provider(self, provider: nn.Module) -> None:
        self.provider = provider

    def weight(self) -> torch.Tensor:
        if self.provider is None:
            raise RuntimeError(
                f"layer {self.spec.name!r} has no weight provider: build networks through a method "
                "(npasbench.create_model), which attaches one to every weight layer"
            )
        return self.provider()

    def extra_repr(self) -> str:
        return f"shape={tuple(self.spec.shape)}, role={self.spec.role}, index={self.spec.index}"



def weight_layers(net: nn.Module) -> list["WeightedLayer"]:
    """The weight layers of one network in reference order (stem first, classifier last): the one place
    that order is defined (``NPASModel.weight_layers`` per member, the baselines' providers)."""
    return sorted((m for m in net.modules() if isinstance(m, WeightedLayer)), key=lambda layer: layer.spec.index)

class Conv(WeightedLayer):
    """Convolution without bias by default (as in WRN/ResNet); a method may give it one. Grouped and
    depthwise convolutions (MobileNetV2) carry ``spec.groups``."""

    npas_roles = {"bias": "norm_bias"}

    def __init__(self, spec: LayerSpec, bias: bool = False) -> None:
        assert spec.kind == "conv"
        super().__init__(spec)
        self.stride = spec.stride
        self.padding = spec.padding
        self.groups = spec.groups
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(spec.shape[0])) if bias else None

    def add_bias(self, bias: torch.Tensor | None = None) -> None:
        """E.g. SSN's singleton groups are plain ``nn.Conv2d`` layers, which carry a bias."""
        self.bias = nn.Parameter(torch.zeros(self.spec.shape[0]) if bias is None else bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, 1, self.groups)


class Linear(WeightedLayer):
    """Linear layer; the bias (if any) belongs to the layer, not the provider. The classifier's bias has
    role ``head``; a body linear layer's (a transformer's qkv, proj, fc1, fc2) role ``norm_bias``, as a
    convolution's bias."""

    npas_roles = {"bias": "head"}

    def __init__(self, spec: LayerSpec, bias: bool = True) -> None:
        assert spec.kind == "linear"
        super().__init__(spec)
        if spec.role != "head":
            self.npas_roles = {"bias": "norm_bias"}
        self.bias = nn.Parameter(torch.zeros(spec.shape[0])) if bias else None

    def drop_bias(self) -> None:
        """Methods whose reference code has no classifier bias (e.g. SSN's SLinear) call this."""
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class LayerFactory:
    """Used by architecture builders: creates weight layers and numbers them in build order.

    Build order is the reference code's weight-layer order (stem, then per block conv1, conv2,
    shortcut, classifier last), so ``index`` is comparable with the official implementations.
    """

    def __init__(self) -> None:
        self.specs: list[LayerSpec] = []

    def conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None,
             *, role: LayerRole = "body", stage: int = 0, block: int = -1, groups: int = 1, bias: bool = False,
             init: LayerInit = "kaiming") -> Conv:
        if cin % groups or cout % groups:
            raise ValueError(f"{name}: {cin} -> {cout} channels do not split into {groups} groups")
        spec = LayerSpec(
            name=name, kind="conv", shape=(cout, cin // groups, k, k), index=len(self.specs), role=role,
            stage=stage, block=block, stride=stride, padding=(k // 2 if padding is None else padding), groups=groups,
            init=init, bias=bias,
        )
        self.specs.append(spec)
        return Conv(spec, bias=bias)

    def linear(self, name: str, cin: int, cout: int, *, stage: int, bias: bool = True, role: LayerRole = "head",
               block: int = -1, op: str = "", init: LayerInit = "kaiming") -> Linear:
        spec = LayerSpec(name=name, kind="linear", shape=(cout, cin), index=len(self.specs), role=role, stage=stage,
                         block=block, op=op, init=init, bias=bias)
        self.specs.append(spec)
        return Linear(spec, bias=bias)


def reset_batchnorms(model: nn.Module) -> None:
    """Every BatchNorm2d of ``model`` to weight 1, bias 0: the init the WRN, ResNet, DenseNet and MobileNetV2
    references all spell out (explicit, so a method that re-creates norms starts from the same place)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
