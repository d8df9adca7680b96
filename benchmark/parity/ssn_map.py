"""The official SSN code's WRN (plain and shared) and ours, built alike, with a parameter transfer.

Mapping (official ``models/wrn.py`` + ``models/param_bank.py`` -> npasbench):

- weight layers: the official ``nn.Conv2d`` / ``SConv2d`` / ``SLinear`` modules in registration order
  (stem, per block conv1, conv2, shortcut, classifier) are our ``model.weight_layers()`` in spec order;
  a plain layer's ``weight`` (and the classifier's ``bias``) is our layer's own weight (and bias);
- BatchNorm: the i-th ``nn.BatchNorm2d`` of each (affine parameters and running statistics);
- a shared group ``_param_group_g`` (``ParameterBank``): its flat ``_params._params`` is our
  ``shared.group{g}.bank.flat``; layer l's coefficient vector (``layer.coefficients.coefficients``,
  K entries) is row ``coef_row`` of our table ``coefficients[K]``; an upsampler
  ``_upsample_layer_<l>.weights`` is our ``upsamplers[l].weights``; the ``emb`` projections
  ``_coeff_proj_<K>_candidates`` are our ``projections[K]``;
- a group with one layer is an official plain ``nn.Conv2d``/``nn.Linear`` *with a bias*
  (``bank._layer``); ours is the same layer with a bias (``singleton_bias``).

The transfer goes either way (``direction``), so a trace can be recorded on the official code from
our initial weights, and every generated weight is compared after the copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..methods.ssn.plan import SSNPlan
from .official import cpu_device_lookups, import_official, quiet


def wrn_depth_width(arch: str) -> tuple[int, int]:
    parts = arch.split("-")
    if len(parts) != 3 or parts[0] != "wrn":
        raise ConfigError(f"parity: only wrn-D-K architectures, got {arch!r}")
    return int(parts[1]), int(parts[2])


def official_wrn(repo: str | Path, arch: str, num_classes: int, share_type: str = "none",
                 upsample_type: str = "inter", max_params: int = 0, bank_size: int = 8, groups: Any = 1,
                 seed: int = 0) -> nn.Module:
    """The official ``models.wrn.wrn`` (what ``main.py`` builds for ``--arch wrn``), seeded."""
    wrn = import_official(repo, "wrn")
    depth, width = wrn_depth_width(arch)
    torch.manual_seed(seed)
    with quiet(), cpu_device_lookups():
        return wrn.wrn(share_type, upsample_type, 1, depth, width, bank_size, max_params, num_classes, groups)


def our_wrn(arch: str, num_classes: int, share_type: str = "none", upsample_type: str = "inter",
            max_params: int = 0, bank_size: int = 8, seed: int = 0):
    """Our model for the same cell (a ``BuiltModel``: ``.model``, ``.method``): ``unshared``, or ``ssn`` in the
    official ``max_params`` budget mode."""
    from ..budget import Budget
    from ..factory import create_model

    dataset = "cifar100" if num_classes == 100 else "cifar10"
    torch.manual_seed(seed)
    if share_type == "none":
        return create_model("unshared", arch, dataset)
    opts = {"share_type": share_type, "upsample_type": upsample_type, "bank_size": bank_size, "param_groups": 1}
    return create_model("ssn", arch, dataset, Budget(max_params, "max_params"), opts)


def _official_layers(official: nn.Module) -> list[nn.Module]:
    from_official = []
    for m in official.modules():
        name = type(m).__name__
        if name in ("SConv2d", "SLinear"):
            from_official.append(m)
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and not _inside_bank(official, m):
            from_official.append(m)
    return from_official


def _inside_bank(official: nn.Module, module: nn.Module) -> bool:
    bank = getattr(official, "bank", None)
    return bank is not None and any(module is m for m in bank.modules())


def _copy(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ConfigError(f"parity transfer: {what}: shape {tuple(src.shape)} -> {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src.detach())


def pairs(official: nn.Module, ours) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(what, official tensor, our tensor) for every parameter and buffer, by the mapping above."""
    out: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    bns_o = [m for m in official.modules() if isinstance(m, nn.BatchNorm2d)]
    bns_u = [m for m in ours.members[0].modules() if isinstance(m, nn.BatchNorm2d)]
    if len(bns_o) != len(bns_u):
        raise ConfigError(f"parity transfer: {len(bns_o)} official BatchNorms, {len(bns_u)} of ours")
    for i, (a, b) in enumerate(zip(bns_o, bns_u)):
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out.append((f"bn{i}.{key}", getattr(a, key), getattr(b, key)))
    layers_o = _official_layers(official)
    layers_u = ours.weight_layers()
    if len(layers_o) != len(layers_u):
        raise ConfigError(f"parity transfer: {len(layers_o)} official weight layers, {len(layers_u)} of ours")
    try:
        plan: SSNPlan | None = ours.built(SSNPlan)
    except TypeError:  # a plain (unshared) model: no plan
        plan = None
    by_index = {lp.index: lp for lp in plan.layers} if plan is not None else {}
    seen_groups: set[int] = set()
    for i, (lo, lu) in enumerate(zip(layers_o, layers_u)):
        name = lu.spec.name
        if type(lo).__name__ not in ("SConv2d", "SLinear"):  # plain official layer
            out.append((f"{name}.weight", lo.weight, lu.provider.weight))
            if lo.bias is not None:
                out.append((f"{name}.bias", lo.bias, lu.bias))
            continue
        bank = lo.bank
        if bank.single_layer:  # official: a plain layer with a bias
            out.append((f"{name}.weight", bank._layer.weight, lu.provider.weight))
            out.append((f"{name}.bias", bank._layer.bias, lu.bias))
            continue
        lp = by_index[i]
        group = ours.shared[f"group{lp.group}"]
        if lp.group not in seen_groups:
            seen_groups.add(lp.group)
            out.append((f"group{lp.group}.bank", bank._params._params, group.bank.flat))
            for k, proj in group.projections.items():
                off = getattr(bank, f"_coeff_proj_{k}_candidates")[0]
                out.append((f"group{lp.group}.proj{k}.weight", off.weight, proj.weight))
                out.append((f"group{lp.group}.proj{k}.bias", off.bias, proj.bias))
        comb = lo.coefficients
        if comb is not None and comb.coefficients is not None:
            table = group.coefficients[str(lp.templates)].table
            out.append((f"{name}.coefficients", comb.coefficients, table[lp.coef_row]))
        up = getattr(bank, f"_upsample_layer_{i}", None)
        if up is not None:
            out.append((f"{name}.upsampler", up.weights, group.upsamplers[str(lp.index)].weights))
    return out


def transfer(official: nn.Module, ours, direction: str = "to_ours") -> int:
    """Copy every mapped tensor official -> ours (or ``"to_official"``); returns how many were copied."""
    n = 0
    for what, o, u in pairs(official, ours):
        if direction == "to_ours":
            _copy(u, o, what)
        elif direction == "to_official":
            _copy(o, u, what)
        else:
            raise ValueError(direction)
        n += 1
    return n


def official_weights(official: nn.Module) -> list[torch.Tensor]:
    """Every weight layer's weight as the official forward uses it (generated for shared layers)."""
    out = []
    with cpu_device_lookups():
        for m in _official_layers(official):
            if type(m).__name__ in ("SConv2d", "SLinear"):
                out.append(m.bank._layer.weight if m.bank.single_layer else m.get_params())
            else:
                out.append(m.weight)
    return out


def our_weights(ours) -> list[torch.Tensor]:
    """Every weight layer's weight as our forward uses it (generating networks produce them first)."""
    for member in ours.members:
        if hasattr(member, "generate"):
            member.generate()
    return [layer.weight() for layer in ours.weight_layers()]


def trainable(official: nn.Module) -> int:
    return sum(p.numel() for p in official.parameters() if p.requires_grad)
