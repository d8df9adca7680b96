"""Weight transfer between the official SuperWeights model and ours, for one single-network cell.

``official_model(repo, ...)`` builds the official ``models.swrn.swrn`` (piotr-teterwak/SuperWeights,
imported from a checkout, never copied) on CPU exactly as ``main_no.py`` does for a single network
(``--n_students 0``, defaults otherwise): ``torch.manual_seed(seed)``, the layer shapes from an unshared
model (``get_layer_shapes``, which draws from the same generator before the shared model is built),
then ``swrn('wavg_slide', 'inter', 1, depth, width, bank_size, max_params, num_classes, -1, 0,
param_group_bins=bins, bin_type='all_nets_groupslim_depth', separate_kernels=True,
coefficient_share=True, coeff_share_idxs={layer: {'layer': 0, 'net': 0}})`` (``--coefficient_share``
without a search: one coefficient vector per bank; the bank setup runs inside the constructor).
``our_model(...)`` builds ours for the same cell (``group_split_epochs`` 0 keeps the 4 depth-bin
clusters, ``coefficient_unshare_epochs`` 0; coefficients shared per bank).

Mapping (official -> ours; member 0 of ours, ``net`` = ``members[0].net``). Every pair is found from
the two models' structure and checked (shapes, layer ids, bank readers, sharing), never from values:

- bank ``bank._param_group_<c>_width_<w>._params._params`` (flat, ``T*P`` entries, template ``t`` at
  ``[t*P:(t+1)*P]``, every layer reads the whole bank: ``_layer_param_blocks == [T, 0, T*P]``) ->
  ``shared.bank_c<c>_l<w>.templates`` (``T x P``, same row-major order). Official group ``c`` is our
  cluster ``c`` (same depth-bin numbering: 1x1 bins first, then 3x3 bins) and width ``w`` our level ``w``.
- coefficients: official layer ``layer_id = l`` (an ``SConv2d``) reads bank ``c``/width ``w`` through
  ``layer.coefficients[w]`` (a ``ParameterCombiner``; layers sharing coefficients hold the same object);
  its ``.coefficients`` (``T``) -> row ``built(SWBuilt).rows.rows[(c, w)][(0, l)]`` of ``shared.coef_c<c>_l<w>.rows``.
  The partition of uses into combiners must equal ours into rows. ``.mask`` (ones, not trainable) has
  no counterpart: it must be all ones.
- convolutions: official ``SConv2d`` with ``layer_id`` ``l`` <-> our conv with ``spec.index`` ``l``
  (names equal except ``convShortcut`` = ``shortcut``); nothing to copy, their weights are composed.
- norms: every official ``BatchNorm2d`` (``stage_<s>.<b>.bn1/bn2``, ``lastact.0``) -> the module of the
  same name in ``net``: ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``.
- classifier: ``classifier.weight`` -> ``net.classifier.provider.weight``, ``classifier.bias`` ->
  ``net.classifier.bias``.

``transfer(src, dst)`` copies in either direction (which argument is ours is told by its type; or say
``direction``), then checks every composed layer weight and the outputs of both models on a fixed
batch in training and in evaluation mode (BatchNorm buffers and modes are restored afterwards), and
returns the differences. The official bank's last ``T*P % 9`` entries are never initialised by the
official code (``torch.Tensor(n)``); ``official_model`` sets them to zero (as our default
``bank_tail_init``), so a seed gives a deterministic model.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..budget import Budget
from ..contract import NPASModel
from ..errors import ConfigError
from ..methods.superweights.method import SWBuilt
from .official import cpu_device_lookups, import_official, quiet

# main_no.py defaults for what the cell does not set
UPSAMPLE_TYPE, UPSAMPLE_WINDOW, TRANS, GROUPS = "inter", 1, 0, -1
BIN_TYPE, SEPARATE_KERNELS = "all_nets_groupslim_depth", True
SHARE_TYPE = "wavg_slide"


class TransferError(ConfigError):
    """The two models do not have the same structure, so no parameter-by-parameter transfer exists."""


def _wrn(arch: str) -> tuple[int, int]:
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", arch)
    if not m:
        raise ConfigError(f"arch: the official SWRN takes integer depth and width, e.g. wrn-16-1; got {arch!r}")
    return int(m.group(1)), int(m.group(2))


def _dataset(num_classes: int) -> str:
    if num_classes not in (10, 100):
        raise ConfigError(f"num_classes: CIFAR-10 or CIFAR-100 (10 or 100), got {num_classes}")
    return f"cifar{num_classes}"


# -- building -----------------------------------------------------------------------------------------
def official_layer_shapes(swrn: ModuleType, depth: int, width: int, num_classes: int) -> list:
    """``main_no.get_layer_shapes`` for one network: an unshared model's conv shapes (draws from the RNG)."""
    unshared = swrn.swrn("none", None, None, depth, width, None, 0, num_classes, None, None, params=None,
                         param_group_bins=None, bin_type=None, separate_kernels=False, allocation_normalized=False,
                         share_linear=False, share_coeff=False, coeff_share_idxs=None, layer_shapes=None)
    convs = [m for m in unshared.modules() if isinstance(m, nn.Conv2d)]
    return [[(0, j, m.weight.shape) for j, m in enumerate(convs)]]


def official_model(repo: str | Path, arch: str = "wrn-16-1", num_classes: int = 100, max_params: int = 100_000,
                   bins: int = 4, seed: int = 0, *, bank_size: int = 8, bank_tail: str = "zeros") -> nn.Module:
    """The official SWRN for the cell, built on CPU as ``main_no.py`` builds it (see the module docstring).

    ``bank_tail``: the bank entries the official init leaves uninitialised: ``"zeros"`` (default) or
    ``"keep"`` (whatever memory held)."""
    if bank_tail not in ("zeros", "keep"):
        raise ConfigError(f"bank_tail: 'zeros' or 'keep', got {bank_tail!r}")
    depth, width = _wrn(arch)
    _dataset(num_classes)
    swrn = import_official(repo, "swrn")
    with cpu_device_lookups(), quiet():
        torch.manual_seed(seed)
        shapes = official_layer_shapes(swrn, depth, width, num_classes)
        share_idxs = {layer: {"layer": 0, "net": 0} for layer in range(depth + 1)}  # main(): shared from the start
        model = swrn.swrn(SHARE_TYPE, UPSAMPLE_TYPE, UPSAMPLE_WINDOW, depth, width, bank_size, max_params, num_classes,
                          GROUPS, TRANS, params=None, param_group_bins=bins, bin_type=BIN_TYPE,
                          separate_kernels=SEPARATE_KERNELS, allocation_normalized=False, share_linear=False,
                          share_coeff=True, coeff_share_idxs=share_idxs, layer_shapes=(0, shapes))
    if bank_tail == "zeros":
        with torch.no_grad():
            for bank in _official_banks(model).values():
                flat = bank._params._params
                flat[(flat.numel() // 9) * 9:].zero_()
    return model


def our_options(bank_size: int = 8, bins: int = 4, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"share_type": SHARE_TYPE, "bank_size": bank_size, "param_group_bins": bins, "coefficient_share": True,
            "group_split_epochs": 0, "coefficient_unshare_epochs": 0, **dict(options or {})}


def our_built(arch: str = "wrn-16-1", num_classes: int = 100, max_params: int = 100_000, bins: int = 4,
              seed: int = 0, *, bank_size: int = 8, options: Mapping[str, Any] | None = None):
    """Our ``BuiltModel`` (model, method, request) for the cell; ``options`` override ``our_options``."""
    from ..factory import create_model

    torch.manual_seed(seed)
    return create_model("superweights", arch, _dataset(num_classes), Budget(max_params, "max_params"),
                        our_options(bank_size, bins, options))


def our_model(arch: str = "wrn-16-1", num_classes: int = 100, max_params: int = 100_000, bins: int = 4,
              seed: int = 0, *, bank_size: int = 8, options: Mapping[str, Any] | None = None) -> NPASModel:
    """Our SuperWeights ``NPASModel`` for the cell."""
    return our_built(arch, num_classes, max_params, bins, seed, bank_size=bank_size, options=options).model


# -- the structural map ---------------------------------------------------------------------------------
_BANK = re.compile(r"_param_group_(\d+)_width_(\d+)")


def _official_banks(official: nn.Module) -> dict[tuple[int, int], nn.Module]:
    bank = getattr(official, "bank", None)
    if bank is None:
        raise TransferError("official model has no parameter bank (share_type 'none'?)")
    out = {}
    for name, mod in bank.named_children():
        m = _BANK.fullmatch(name)
        if m and hasattr(mod, "_params"):
            out[(int(m.group(1)), int(m.group(2)))] = mod
    return out


def _official_convs(official: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    out = {}
    for name, mod in official.named_modules():
        if hasattr(mod, "layer_id") and hasattr(mod, "banks") and hasattr(mod, "group_size"):
            if mod.layer_id in out:
                raise TransferError(f"official layer_id {mod.layer_id} appears twice")
            out[int(mod.layer_id)] = (name, mod)
    return out


def _bank_name(key: tuple[int, int]) -> str:
    from npasbench.methods.superweights.network import bank_name

    return bank_name(key)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise TransferError(f"superweights transfer: {msg}")


def build_map(official: nn.Module, ours: NPASModel) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(our name, official tensor, our tensor or row view) for every tensor to copy, after checking that
    the two models have the same structure. Raises ``TransferError`` naming the first disagreement."""
    _need(isinstance(ours, NPASModel), "the second model is not an NPASModel")
    try:
        built = ours.built(SWBuilt)
    except TypeError:
        raise TransferError("superweights transfer: the second model is not a SuperWeights NPASModel") from None
    _need(ours.num_members == 1, f"only single-network models map onto one official SWRN ({ours.num_members} members)")
    member = ours.members[0]
    net, plan, rows = member.net, built.plan, built.rows
    _need(member.share_type in ("wavg", "wavg_slide"), f"our share_type is {member.share_type!r}; the map covers "
                                                       "wavg/wavg_slide (coefficient vectors, no projections)")
    links: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    # banks: same keys, same sizes, every layer reads the whole bank in the same order as ours
    obanks = _official_banks(official)
    okeys, ukeys = set(obanks), set(plan.banks)
    _need(okeys == ukeys, f"banks differ: official (cluster, width) {sorted(okeys)}, ours {sorted(ukeys)}")
    for key in plan.bank_order():
        ob, pb = obanks[key], plan.banks[key]
        name = f"shared.bank_{_bank_name(key)}.templates"
        ours_t = ours.shared[f"bank_{_bank_name(key)}"].templates
        flat = ob._params._params
        _need(ob._share_type in ("wavg", "wavg_slide") and not ob._learn_groups and not ob.single_layer,
              f"official bank {key} is {ob._share_type} (learn_groups={ob._learn_groups}, single={ob.single_layer})")
        _need(tuple(ours_t.shape) == (pb.templates, pb.numel),
              f"{name} has shape {tuple(ours_t.shape)}, plan says ({pb.templates}, {pb.numel})")
        _need(flat.dim() == 1 and flat.numel() == ours_t.numel(),
              f"bank {key}: official {flat.numel()} entries, ours {pb.templates} x {pb.numel} = {ours_t.numel()}")
        readers = [int(layer.layer_id) for layer in ob._layers]
        our_readers = [l for m, l in pb.readers if m == 0]
        _need(readers == our_readers, f"bank {key}: official readers {readers}, ours {our_readers}")
        for layer, block in zip(ob._layers, ob._layer_param_blocks):
            cand, start, end = (int(v) for v in block)
            _need((cand, start, end) == (pb.templates, 0, flat.numel()),
                  f"bank {key}: official layer {layer.layer_id} reads [{start}:{end}] as {cand} templates; ours reads "
                  f"all {pb.templates} templates [0:{flat.numel()}]")
        links.append((name, flat, ours_t))

    # layers: same ids, shapes, clusters, levels and pieces; coefficients by the sharing structure
    oconvs = _official_convs(official)
    uconvs = {l.spec.index: l for l in net.modules() if hasattr(l, "spec") and l.spec.kind == "conv"}
    _need(sorted(oconvs) == sorted(uconvs), f"conv layer ids differ: official {sorted(oconvs)}, ours {sorted(uconvs)}")
    comb_rows: dict[tuple[int, int], dict[int, int]] = {}  # bank -> id(combiner) -> our row
    for lid in sorted(oconvs):
        oname, ol = oconvs[lid]
        ul = uconvs[lid]
        uname = ul.spec.name
        _need(oname.replace("convShortcut", "shortcut") == uname, f"layer {lid}: official {oname}, ours {uname}")
        _need(tuple(ol.shape) == tuple(ul.spec.shape), f"{uname}: official shape {tuple(ol.shape)}, ours {ul.spec.shape}")
        use = plan.uses[0][lid]
        levels = plan.levels[use.cluster][: use.levels]
        _need(int(ol.group_id) == use.cluster and len(ol.banks) == use.levels,
              f"{uname}: official group {ol.group_id} with {len(ol.banks)} widths, ours cluster {use.cluster} with "
              f"{use.levels} levels")
        coefs = getattr(ol, "coefficients", None)
        _need(coefs is not None and len(coefs) == use.levels, f"{uname}: official has no coefficient per width")
        for w, (bank, (gsize, pieces), comb, lv) in enumerate(zip(ol.banks, ol.group_size, coefs, levels)):
            key = (use.cluster, w)
            _need(bank is obanks[key], f"{uname}: official width {w} reads {bank._group}, ours bank {key}")
            want = [lv.out_piece] if lv.in_piece is None else [lv.out_piece, lv.in_piece]
            _need(int(gsize) == lv.numel and [tuple(p) for p in pieces] == [tuple(p) for p in want],
                  f"{uname} width {w}: official pieces {[tuple(p) for p in pieces]} ({gsize}), ours {want} ({lv.numel})")
            T = plan.banks[key].templates
            _need(comb.coefficients is not None and tuple(comb.coefficients.shape) == (T,) and comb.num_candidates == T,
                  f"{uname} width {w}: official coefficients {getattr(comb.coefficients, 'shape', None)}, ours ({T},)")
            _need(comb.layer is None and not comb._learn_groups and comb.trans <= 1,
                  f"{uname} width {w}: official combiner has a projection, softmax or kernel transformations")
            _need(bool(torch.all(comb.mask == 1)), f"{uname} width {w}: official mask is not all ones")
            row = rows.rows[key][(0, lid)]
            seen = comb_rows.setdefault(key, {})
            if id(comb) in seen:
                _need(seen[id(comb)] == row, f"{uname} width {w}: shares an official combiner with a use of our row "
                                             f"{seen[id(comb)]}, but reads our row {row}")
                continue
            _need(row not in seen.values(), f"{uname} width {w}: our row {row} is shared with a use whose official "
                                            "coefficients are a different combiner")
            seen[id(comb)] = row
            table = ours.shared[f"coef_{_bank_name(key)}"].rows
            links.append((f"shared.coef_{_bank_name(key)}.rows[{row}]", comb.coefficients, table[row]))
    for key, seen in comb_rows.items():
        n = ours.shared[f"coef_{_bank_name(key)}"].rows.shape[0]
        _need(sorted(seen.values()) == list(range(n)), f"bank {key}: our table has {n} rows, official "
                                                       f"{len(seen)} combiners")

    # norms and classifier, by module name
    obn = {n: m for n, m in official.named_modules() if isinstance(m, nn.BatchNorm2d)}
    ubn = {n: m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    _need(sorted(obn) == sorted(ubn), f"norms differ: official {sorted(obn)}, ours {sorted(ubn)}")
    for n in obn:
        a, b = obn[n], ubn[n]
        _need((a.eps, a.momentum, a.affine, a.track_running_stats) == (b.eps, b.momentum, b.affine, b.track_running_stats),
              f"norm {n}: official eps/momentum/affine/track {a.eps, a.momentum, a.affine, a.track_running_stats}, ours "
              f"{b.eps, b.momentum, b.affine, b.track_running_stats}")
        for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            links.append((f"members.0.net.{n}.{t}", getattr(a, t), getattr(b, t)))
    oc, uc = official.classifier, net.classifier
    _need(isinstance(oc, nn.Linear) and oc.bias is not None and uc.bias is not None,
          "classifier: official nn.Linear with bias and ours with bias expected")
    links.append(("members.0.net.classifier.provider.weight", oc.weight, uc.provider.weight))
    links.append(("members.0.net.classifier.bias", oc.bias, uc.bias))

    for name, a, b in links:
        _need(a.numel() == b.numel() and a.dtype == b.dtype,
              f"{name}: official {tuple(a.shape)} {a.dtype}, ours {tuple(b.shape)} {b.dtype}")
    _complete(official, ours, links)
    return links


def _complete(official: nn.Module, ours: NPASModel, links) -> None:
    """Every trainable parameter and every persistent buffer of both models is in ``links`` (official masks:
    checked ones, not copied; our row-index buffers: structure, checked through the row map)."""
    o_ids = {id(a) for _, a, _ in links}
    u_ids = {id(b) for _, _, b in links} | {id(b._base) for _, _, b in links if b._base is not None}
    missing = [n for n, p in official.named_parameters() if p.requires_grad and id(p) not in o_ids]
    missing += [n for n, b in official.named_buffers() if id(b) not in o_ids]
    _need(not missing, f"official tensors without a counterpart: {missing}")
    persistent = set(ours.state_dict(keep_vars=True))
    missing = [n for n, p in ours.named_parameters() if id(p) not in u_ids]
    missing += [n for n, b in ours.named_buffers() if n in persistent and id(b) not in u_ids]
    _need(not missing, f"our tensors without a counterpart: {missing}")


# -- transfer and checks ----------------------------------------------------------------------------------
def _split(a: nn.Module, b: nn.Module) -> tuple[nn.Module, NPASModel, str]:
    if isinstance(b, NPASModel) and not isinstance(a, NPASModel):
        return a, b, "official_to_ours"
    if isinstance(a, NPASModel) and not isinstance(b, NPASModel):
        return b, a, "ours_to_official"
    raise TransferError("give one official SWRN and one of our NPASModels")


def composed_weights(official: nn.Module, ours: NPASModel) -> dict[str, float]:
    """Max |official - ours| of every weight layer's weight (composed convs, then the classifier)."""
    convs = _official_convs(official)
    member = ours.members[0]
    out = {}
    with torch.no_grad(), cpu_device_lookups(), quiet():
        member.produce()
        for layer in ours.weight_layers(0):
            ref = official.classifier.weight if layer.spec.kind == "linear" else convs[layer.spec.index][1].get_params()
            mine = layer.weight()
            _need(tuple(ref.shape) == tuple(mine.shape), f"{layer.spec.name}: official weight {tuple(ref.shape)}, ours "
                                                         f"{tuple(mine.shape)}")
            out[layer.spec.name] = float((ref.float() - mine.float()).abs().max())
    member.invalidate()
    return out


def fixed_batch() -> torch.Tensor:
    """``torch.manual_seed(1); torch.randn(8, 3, 32, 32)``, without touching the global generator."""
    return torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def output_diffs(official: nn.Module, ours: NPASModel, x: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Both models on ``x`` (default ``fixed_batch()``): in evaluation mode with the current buffers
    (``eval``), in training mode (``train``; it updates the BatchNorm statistics of both), then in
    evaluation mode with those updated statistics (``eval_after_train``). For each: ``abs`` = max
    |official - ours|, ``scale`` = max |official|, ``rel`` = abs / max(1, scale); plus ``buffers_after_train``
    = max |difference| of the BatchNorm statistics the training-mode pass left. Buffers and modes are
    restored afterwards."""
    x = fixed_batch() if x is None else x
    models = (official, ours)
    saved = [({n: b.clone() for n, b in m.named_buffers()}, {n: s.training for n, s in m.named_modules()})
             for m in models]
    out: dict[str, Any] = {}
    try:
        with torch.no_grad(), cpu_device_lookups(), quiet():
            for name, train in (("eval", False), ("train", True), ("eval_after_train", False)):
                for m in models:
                    m.train(train)
                a, b = official(x.clone()), ours(x.clone())[0]
                d, scale = float((a - b).abs().max()), float(a.abs().max())
                out[name] = {"abs": d, "scale": scale, "rel": d / max(1.0, scale)}
                if train:
                    links = [l for l in build_map(official, ours) if "running_" in l[0]]
                    out["buffers_after_train"] = max(float((p - q.view_as(p)).abs().max()) for _, p, q in links)
    finally:
        for m, (bufs, modes) in zip(models, saved):
            with torch.no_grad():
                for n, buf in m.named_buffers():
                    buf.copy_(bufs[n])
            for n, s in m.named_modules():
                s.training = modes[n]
            if isinstance(m, NPASModel):
                for member in m.members:
                    member.invalidate()
    return out


def transfer(src: nn.Module, dst: nn.Module, direction: str | None = None, *, check: bool = True,
             weight_tol: float = 1e-6, output_tol: float = 1e-5) -> dict[str, Any]:
    """Copy every trainable parameter and buffer of ``src`` into ``dst`` (one official SWRN, one of ours, in
    either order; ``direction`` 'official_to_ours' or 'ours_to_official' overrides the order).

    With ``check``: every weight layer's composed weight must agree within ``weight_tol``, and the outputs
    on ``fixed_batch()`` (``output_diffs``: eval, train, eval after the train pass) within ``output_tol`` x
    max(1, max |official output|), else ``TransferError``. The scale matters in evaluation mode only: an
    untrained WRN's eval-mode outputs reach 1e4-1e6 (BatchNorm running statistics still 0/1), where the
    float32 spacing alone is above 1e-5; the composed weights differ in the last bit (official
    ``(x * c).sum(0)`` against our ``coef @ templates``), which those outputs amplify (with bit-identical
    weights the outputs are identical). Returns the report: tensors and values copied, ``weight_diff``
    per layer, ``max_weight_diff``, ``output_diff``."""
    official, ours, inferred = _split(src, dst)
    direction = direction or inferred
    if direction not in ("official_to_ours", "ours_to_official"):
        raise ConfigError(f"direction: 'official_to_ours' or 'ours_to_official', got {direction!r}")
    links = build_map(official, ours)
    with torch.no_grad():
        for _, a, b in links:
            if direction == "official_to_ours":
                b.copy_(a.detach().view_as(b))
            else:
                a.copy_(b.detach().view_as(a))
    for member in ours.members:
        member.invalidate()
    report: dict[str, Any] = {"direction": direction, "tensors": len(links),
                              "values": sum(a.numel() for _, a, _ in links)}
    if check:
        w = composed_weights(official, ours)
        o = output_diffs(official, ours)
        report.update(weight_diff=w, max_weight_diff=max(w.values()), output_diff=o)
        _need(report["max_weight_diff"] <= weight_tol,
              f"composed weights differ by {report['max_weight_diff']:.3g} > {weight_tol:g} after the transfer "
              f"({max(w, key=w.get)})")
        worst = max(("eval", "train", "eval_after_train"), key=lambda k: o[k]["rel"])
        _need(o[worst]["rel"] <= output_tol, f"outputs differ after the transfer ({worst}): max |diff| "
                                             f"{o[worst]['abs']:.3g} on outputs up to {o[worst]['scale']:.3g}, "
                                             f"above {output_tol:g} x max(1, scale)")
    return report


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a manual check
    import argparse
    import json

    p = argparse.ArgumentParser(description="Transfer official SuperWeights -> ours (and back) and print the report")
    p.add_argument("repo")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    to_ours = transfer(official_model(a.repo, seed=a.seed), our_model(seed=a.seed + 1))
    to_official = transfer(our_model(seed=a.seed + 2), official_model(a.repo, seed=a.seed + 3))
    print(json.dumps({"official_to_ours": to_ours, "ours_to_official": to_official}, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
