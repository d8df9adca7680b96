"""``reduced``: the largest network of the requested family that fits the budget (reduced width/depth).

The simplest answer to a parameter budget: shrink the plain network until it fits. The result is an
ordinary unshared network -- but a *different architecture*, so its FLOPs (and usually its accuracy)
differ from the requested one's; the record says so (``method_info``: the architecture used, its
parameters and FLOPs next to the requested architecture's).

WRN (``wrn-D-K``, channels ``round(c * K)`` for c = 16, 32, 64; the stem stays at 16):

- ``dimension=width`` (default): the largest width at the requested depth. The search walks every
  distinct channel triple a width <= K can produce (not a coarse grid of widths), so the chosen
  network is exactly maximal: the next larger triple would exceed the budget. Its name is the
  shortest decimal width giving that triple (e.g. ``wrn-16-2.45``), resolvable by the registry.
- ``dimension=depth``: the largest depth D' = 6n+4 <= D at the requested width.
- ``dimension=both``: the most parameters within the budget over all (D', width) with D' <= D
  (ties go to the deeper network).

ResNet (``resnet50``, ``wrn50-2``, ``resnet50-ssn``, ``wrn50-2-ssn``): ``dimension=width`` shrinks the
bottleneck width (``width_per_group``, the 3x3 convs' channels; block outputs stay 4 x planes) and keeps
the requested network's variant (the SSN code's trunk and block order for the ``-ssn`` archs); depth is
not reduced for this family (a clear error names the option).

ViT / DeiT (embed width at the same heads, and/or depth), DenseNet-BC (growth rate and/or depth) and
MobileNetV2 (width multiplier): the candidates are names of the registry's grammars
(``reduced_ladders.py``), searched the same way (the largest that fits; ``both``: the most parameters over
every depth's widest fitting network).

Without a budget the requested network is used unchanged. A budget above the requested network's
size also gives the requested network (``reduced`` never grows a network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn as nn

from npasbench.models.registry import get_arch
from npasbench.models.resnet import BottleneckResNet
from npasbench.models.wrn import WideResNet
from .reduced_ladders import LADDERS
from npasbench.sdk import (BudgetError, BuildRequest, ConfigError, Method, MethodOptions, NPASModel,
                           attach_owned_weights, backbone_flops, create_backbone, largest_fitting, plain_params,
                           register_method)

WRN_BASE = (16, 32, 64)


def wrn_channels(width: float) -> tuple[int, int, int]:
    """Stage channels of ``WideResNet(depth, width)`` (the same expression as models/wrn.py)."""
    return tuple(max(1, int(round(c * width))) for c in WRN_BASE)  # type: ignore[return-value]


def width_ladder(width: float) -> list[tuple[tuple[int, int, int], float]]:
    """Every distinct channel triple of a width in (0, ``width``], in increasing order, each with a width
    producing it. Breakpoints of round(16w), round(32w) lie on multiples of 1/64 and those of
    round(64w) on odd multiples of 1/128, so the points (2j+1)/256 (exact in binary, so rounding is
    unambiguous) visit every triple; the requested width closes the ladder."""
    out: list[tuple[tuple[int, int, int], float]] = []
    j = 0
    while True:
        t = (2 * j + 1) / 256
        if t >= width:
            break
        tri = wrn_channels(t)
        if not out or out[-1][0] != tri:
            out.append((tri, t))
        j += 1
    top = wrn_channels(width)
    if out and out[-1][0] == top:
        out.pop()
    out.append((top, float(width)))
    return out


def width_name(triple: tuple[int, int, int], sample: float) -> str:
    """The shortest decimal width string whose WRN has exactly ``triple`` channels."""
    for digits in range(0, 7):
        scale = 10 ** digits
        base = int(sample * scale)
        for k in (base, base + 1, base - 1):
            if k <= 0:
                continue
            text = f"{k / scale:.{digits}f}"
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            if wrn_channels(float(text)) == triple:
                return text
    return repr(sample)  # a dyadic rational: its repr is exact


@dataclass(frozen=True)
class Choice:
    """A concrete architecture: WRN (depth, width) or bottleneck ResNet (layers, width_per_group, variant)."""

    family: str
    name: str
    depth: int = 0
    width: float = 0.0
    layers: tuple[int, ...] = ()
    width_per_group: int = 0
    variant: str = "torchvision"  # bottleneck ResNet: BottleneckResNet's variant ("ssn": the SSN code's network)

    def backbone(self, num_classes: int) -> nn.Module:
        if self.family == "wrn":
            return WideResNet(self.depth, self.width, num_classes)
        if self.family in LADDERS:
            return create_backbone(self.name, num_classes)
        return BottleneckResNet(self.layers, num_classes, self.width_per_group, variant=self.variant)

    def describe(self) -> dict[str, Any]:
        if self.family in LADDERS:
            return {"arch": self.name, "family": self.family, **get_arch(self.name).hyper}
        if self.family == "wrn":
            w = self.width
            return {"arch": self.name, "family": "wrn", "depth": self.depth,
                    "width": int(w) if float(w).is_integer() else w, "channels": [16, *wrn_channels(w)]}
        out: dict[str, Any] = {"arch": self.name, "family": "resnet", "layers": list(self.layers),
                               "width_per_group": self.width_per_group}
        if self.variant != "torchvision":  # torchvision-layout records unchanged
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class ReducedOptions(MethodOptions):
    dimension: Literal["width", "depth", "both"] = field(default="width", metadata={"help": (
        "what shrinks to fit the budget: width (exact channel counts), depth (6n+4), or both (most "
        "parameters over all depth/width pairs); ResNets: width only (bottleneck width)")})


@register_method("reduced")
class Reduced(Method):
    Options = ReducedOptions
    summary = "Reduced width/depth: the largest plain network of the requested family within the budget."
    reference = "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016 (width/depth scaling)"

    # -- the search -------------------------------------------------------------------------------
    def __init__(self, options: ReducedOptions | None = None) -> None:
        super().__init__(options)
        self._counts: dict[tuple[Choice, int], int] = {}

    def _count(self, choice: Choice, num_classes: int) -> int:
        """Unique parameters of the plain ``choice`` network (built without weights: norms only)."""
        key = (choice, num_classes)
        if key not in self._counts:
            self._counts[key] = plain_params(choice.backbone(num_classes))
        return self._counts[key]

    def _largest(self, ladder: list[Choice], num_classes: int, budget: int) -> tuple[int, Choice | None]:
        """Index and element of the largest choice that fits (params increase along ``ladder``)."""
        lo = largest_fitting(-1, len(ladder) - 1, lambda i: self._count(ladder[i], num_classes) <= budget)
        return lo, (ladder[lo] if lo >= 0 else None)

    @staticmethod
    def _wrn_widths(depth: int, requested: Choice, width_text: str) -> list[Choice]:
        """Every WRN of this depth whose channels do not exceed the requested width's, narrowest first."""
        top = wrn_channels(requested.width)
        out = []
        for tri, sample in width_ladder(requested.width):
            if tri == top:
                out.append(Choice("wrn", f"wrn-{depth}-{width_text}", depth, requested.width))
            else:
                k = width_name(tri, sample)
                out.append(Choice("wrn", f"wrn-{depth}-{k}", depth, float(k)))
        return out

    def resolve(self, request: BuildRequest) -> tuple[Choice, Choice, Choice | None]:
        """(requested, chosen, next larger candidate that did not fit or None)."""
        arch = get_arch(request.arch)
        nc = request.num_classes
        dim = self.options.dimension
        budget = request.budget.params if request.budget is not None else None
        if arch.family == "wrn":
            depth, width = int(arch.hyper["depth"]), float(arch.hyper["width"])
            width_text = request.arch.rsplit("-", 1)[1]
            requested = Choice("wrn", request.arch, depth, width)
        elif arch.family == "resnet":
            net = create_backbone(request.arch, nc)
            layers = tuple(len(getattr(net, f"layer{i}")) for i in range(1, 5))
            wpg = int(net.layer1[0].conv1.spec.shape[0])  # mid = planes * wpg / 64 with planes 64
            requested = Choice("resnet", request.arch, layers=layers, width_per_group=wpg,
                               variant=getattr(net, "variant", "torchvision"))
            if dim != "width":
                raise ConfigError(
                    f"method.options.dimension: {dim!r} reduction is defined for the WRN family only; "
                    f"{request.arch} is a bottleneck ResNet: use dimension=width (it shrinks the bottleneck width)."
                )
        elif arch.family in LADDERS:
            requested = Choice(arch.family, request.arch)
            ladders = LADDERS[arch.family](arch, dim)  # a clear error for a dimension the family lacks
        else:  # pragma: no cover - every registered family is handled
            raise ConfigError(f"model.arch: reduced supports the wrn, resnet, vit, densenet-bc and mobilenetv2 "
                              f"families, not {arch.family!r}.")
        if budget is None:
            return requested, requested, None
        full = self._count(requested, nc)
        if full <= budget:
            return requested, requested, None
        if requested.family in LADDERS:
            return self._from_ladders(requested, arch.hyper, ladders, nc, budget)

        if requested.family == "resnet":
            ladder = [Choice("resnet", f"{request.arch}[width_per_group={w}]", layers=requested.layers,
                             width_per_group=w, variant=requested.variant)
                      for w in range(1, requested.width_per_group + 1)]
            ladder[-1] = requested
            i, best = self._largest(ladder, nc, budget)
            if best is None:
                raise BudgetError(
                    f"budget: the smallest reduced {request.arch} (bottleneck width_per_group=1) has "
                    f"{self._count(ladder[0], nc):,} parameters, above the budget of {budget:,}: the block outputs, "
                    "shortcuts and classifier do not shrink. Raise the budget or use a sharing method."
                )
            return requested, best, ladder[i + 1]

        depths = list(range(10, requested.depth + 1, 6))
        if dim == "width":
            ladder = self._wrn_widths(requested.depth, requested, width_text)
            i, best = self._largest(ladder, nc, budget)
            if best is None:
                raise BudgetError(
                    f"budget: the narrowest wrn-{requested.depth} (channels 16-1-1-1) has "
                    f"{self._count(ladder[0], nc):,} parameters, above the budget of {budget:,}. Raise the budget, "
                    "or use dimension=both (shallower networks too) or a sharing method."
                )
            return requested, best, ladder[i + 1]
        if dim == "depth":
            ladder = [Choice("wrn", f"wrn-{d}-{width_text}", d, requested.width) for d in depths]
            ladder[-1] = requested
            i, best = self._largest(ladder, nc, budget)
            if best is None:
                raise BudgetError(
                    f"budget: the shallowest network at this width, wrn-10-{width_text}, has "
                    f"{self._count(ladder[0], nc):,} parameters, above the budget of {budget:,}. Raise the budget, "
                    "or use dimension=width or both."
                )
            return requested, best, ladder[i + 1]
        # both: the best width at every depth, then the most parameters (ties: deeper)
        best, best_n = None, -1
        for d in depths:
            _, c = self._largest(self._wrn_widths(d, requested, width_text), nc, budget)
            if c is not None and self._count(c, nc) >= best_n:
                best, best_n = c, self._count(c, nc)
        if best is None:
            smallest = self._count(Choice("wrn", "", 10, 1 / 256), nc)
            raise BudgetError(
                f"budget: the smallest WRN (wrn-10, channels 16-1-1-1) has {smallest:,} parameters, above the "
                f"budget of {budget:,}. Raise the budget or use a sharing method."
            )
        return requested, best, None

    def _from_ladders(self, requested: Choice, hyper: dict, ladders: list[list[str]], nc: int,
                      budget: int) -> tuple[Choice, Choice, Choice | None]:
        """The largest fitting network over grammar ladders (one ladder: its next rung is the next larger)."""
        chains = [[requested if get_arch(n).hyper == hyper else Choice(requested.family, n) for n in ladder]
                  for ladder in ladders]
        best, best_n, nxt = None, -1, None
        for chain in chains:
            i, c = self._largest(chain, nc, budget)
            if c is not None and self._count(c, nc) >= best_n:
                best, best_n = c, self._count(c, nc)
                nxt = chain[i + 1] if len(chains) == 1 and i + 1 < len(chain) else None
        if best is None:
            smallest = min(self._count(chain[0], nc) for chain in chains)
            raise BudgetError(
                f"budget: the smallest reduced {requested.name} ({chains[0][0].name}) has {smallest:,} parameters, "
                f"above the budget of {budget:,}: its norms, embeddings and classifier do not shrink. Raise the "
                "budget or use a sharing method.")
        return requested, best, nxt

    # -- the contract --------------------------------------------------------------------------
    def build(self, request: BuildRequest) -> NPASModel:
        requested, chosen, nxt = self.resolve(request)
        net = create_backbone(request.arch, request.num_classes) if chosen == requested else \
            chosen.backbone(request.num_classes)
        attach_owned_weights(net)
        choice = {"requested": requested, "chosen": chosen, "next": nxt, "num_classes": request.num_classes,
                  "image_size": request.image_size, "budget": request.budget.params if request.budget else None}
        return NPASModel([net], [chosen.name], built=choice)

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        c = model.built(dict)
        nc, size = c["num_classes"], c["image_size"]
        req, used = c["requested"], c["chosen"]
        req_p, used_p = self._count(req, nc), self._count(used, nc)
        req_f = backbone_flops(req.backbone(nc), size)
        used_f = req_f if used == req else backbone_flops(used.backbone(nc), size)
        info: dict[str, Any] = {
            "dimension": self.options.dimension,
            "requested": {**req.describe(), "params": req_p, "flops": req_f},
            "used": {**used.describe(), "params": used_p, "flops": used_f},
            "params_ratio": used_p / req_p,
            "flops_ratio": used_f / req_f,
            "reduced": used != req,
        }
        if c["next"] is not None:
            info["next_larger"] = {"arch": c["next"].name, "params": self._count(c["next"], nc)}
        if used != req:
            info["note"] = (f"trained {used.name} instead of {req.name}: {used_f / req_f:.3f}x its inference FLOPs, "
                            f"{used_p / req_p:.3f}x its parameters")
        return info
