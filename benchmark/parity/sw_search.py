"""SuperWeights' search phase against the official code, deterministically: same weights, same batches, float64.

    python -m npasbench.parity.sw_search --superweights /path/to/SuperWeights \
        [--out tests/data/superweights_search_trace.json]

For every cell (``CELLS``: one WRN, ensembles of different depths and widths, two of them with members of
the same depth) our search model (depth-bin clusters, one coefficient vector per bank) is built at seed 0
and its weights are copied into the official one (``link_members``: every bank, coefficient vector, norm and
classifier of every member, found from the structure and checked; then every composed weight and every
member's output are compared). Both then go through the same steps and every intermediate is compared:

1. ``PRETRAIN_STEPS`` SGD steps of search pre-training on seeded fixed batches (``steps.fixed_batches``):
   member 0 and the first member of every other depth, losses summed (official ``train`` with
   ``pretrain_students``; its optimizer: ``group_weight_decay`` over all members, no decay on names with
   "coefficients", Nesterov SGD; ours: ``build_optimizer`` with the method's exemptions);
2. one analysis batch in evaluation mode: the loss gradient w.r.t. every composed layer weight (official:
   ``register_hook = True`` on every layer with a ``group_id``, ``HOOK.update_model(j)``, forward, loss,
   ``optimizer.zero_grad()``, backward, as ``analyze_group_gradients``; ours: ``search.weight_gradients``);
3. the cosine similarities: the official ``assign_groups(..., verbose=True)`` prints every similarity
   ``split`` and ``join_large`` compute (read back from its output: a 0-dim tensor formats as its exact
   Python float); ours are recorded by ``clustering.assign(..., trace=...)``;
4. clusters (``layer2group``) and coefficient-share maps (official ``layer_coeff_share`` ``{net: {layer:
   {'layer': i, 'net': n}}}``, ours ``matches`` ``{member: {layer: (n, i)}}``) of the official
   ``assign_groups`` (it calls ``split``, ``join_large``, ``join_large_same_depth``) and our ``assign`` at
   every threshold of ``THRESHOLDS``;
5. the threshold loop. It lives in ``main_no.py`` (``analyze_group_gradients``, reading argparse globals), so
   ``official_loop`` drives the official ``assign_groups`` in the same loop: start at
   ``group_split_threshold_start``, subtract ``group_split_threshold_decrement`` after each round, rebuild
   the models before every round but the first (``load_model(..., groups=-1)``: fresh group ids), stop when
   the sum of ``max_group_sizes`` is <= ``max_params`` (``while i == 0 or num_params > max_params``),
   counting rounds; against our ``search_clusters``. The official loop has no other exit: ``official_loop``
   caps it at ``max_rounds`` to measure a budget that no threshold fits (``NO_FIT``) and ``max_params`` 0;
6. coefficient unsharing on the final model of the search (official: ``load_model(groups=layer2group,
   coeff_share_idxs=layer_coeff_share, coeff_share=True)``; ours: the search artifact, ``matched`` rows),
   weights again copied from ours: gradients gathered as ``analyze_gradients`` does (evaluation mode, per
   batch and network: forward, loss, ``optimizer.zero_grad()``, backward, ``bank.get_grads(previous)``),
   then the teacher's ``bank.compare_grads(grads, threshold)``; ours: ``unshare_coefficients``. Compared:
   which uses share coefficients before and after (official: by tensor storage) and their values.

The official code is imported from the checkout by path (``official.import_official``; nothing copied);
its ``HOOK`` and ``assign_groups`` are the ones ``models.swrn`` star-imports (the instance the layers call).
Patches: ``cpu_device_lookups`` (``get_device()`` of a CPU tensor answers "cpu"), and ``torch.manual_seed``
before the official constructors draw. Besides, ``HOOK.grads`` is set to ``{}`` before each analysis (its
state after import; ``analyze_group_gradients`` deletes it at the end). Nothing else is changed.

The recorder writes the official side as numbers (gradient norms, sums and a few entries per layer,
similarities, clusters, share maps, rounds, thresholds, estimates, unsharing partitions and values) and
the live full-tensor differences it measured; ``tests/test_superweights_search_parity.py`` replays ours
alone (``replay``) and compares (``differences``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import write_json
from ..budget import Budget
from ..config import OptimConfig
from ..contract import NPASModel
from ..errors import ConfigError
from ..methods.superweights.built import SWBuilt
from ..methods.superweights.clustering import assign, one_template_estimate, search_clusters
from ..methods.superweights.network import bank_name
from ..methods.superweights.plan import depth_bins
from ..methods.superweights.search import search_members, weight_gradients
from ..trainer.optim import build_optimizer
from .official import checkout_commit, cpu_device_lookups, float64, import_official, quiet
from .steps import fixed_batches
from .superweights_map import (BIN_TYPE, SEPARATE_KERNELS, SHARE_TYPE, TRANS, UPSAMPLE_TYPE, UPSAMPLE_WINDOW,
                               TransferError, _official_convs, _wrn, official_layer_shapes, our_options)

NUM_CLASSES, BINS, BANK_SIZE = 100, 4, 8
BATCH, SIZE = 8, 16
PRETRAIN_STEPS, UNSHARE_BATCHES = 1, 2
LR, MOMENTUM, DECAY = 0.1, 0.9, 5e-4
START, DECREMENT = 0.1, 0.05  # official --group_split_threshold_start / --group_split_threshold_decrement
THRESHOLDS = (0.1, 0.05, 0.0, -0.1, -0.5, -1.05)
UNSHARE_THRESHOLDS = (0.0, 0.9)
SEED = 0

# max_params: a budget the depth-bin search model fits and the threshold loop reaches after several rounds
CELLS: dict[str, dict[str, Any]] = {
    "wrn-16-1": {"archs": ["wrn-16-1"], "max_params": 87_500},
    "wrn-16-2+wrn-10-1": {"archs": ["wrn-16-2", "wrn-10-1"], "max_params": 210_000},
    # wrn-16-3 and wrn-16-2 both have 16 convolutions (the official "depth"): join_large_same_depth from member 0
    "wrn-16-3+wrn-16-2+wrn-10-1": {"archs": ["wrn-16-3", "wrn-16-2", "wrn-10-1"], "max_params": 600_000},
    # the README's shape (28-7, 28-4, 16-7, 16-4) in small: join_large_same_depth from member 2 as well
    "wrn-16-4+wrn-16-2+wrn-10-4+wrn-10-2": {"archs": ["wrn-16-4", "wrn-16-2", "wrn-10-4", "wrn-10-2"],
                                            "max_params": 1_300_000},
}
# no threshold fits: above the depth-bin minimum (50,432), below every clustering's estimate (no union-find)
NO_FIT = {"cell": "wrn-16-1", "max_params": 55_000, "max_rounds": 40}


# -- batches ------------------------------------------------------------------------------------------
def batches() -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Seeded batches: pre-training steps, the analysis batch, the unsharing batches. Drawn in float32 whatever
    the default dtype (``randn`` draws other numbers in float64), then cast to float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        drawn = fixed_batches(PRETRAIN_STEPS + 1 + UNSHARE_BATCHES, BATCH, NUM_CLASSES, SIZE)
    finally:
        torch.set_default_dtype(previous)
    all_ = [(x.double(), y) for x, y in drawn]
    return {"pretrain": all_[:PRETRAIN_STEPS], "analysis": all_[PRETRAIN_STEPS:PRETRAIN_STEPS + 1],
            "unshare": all_[PRETRAIN_STEPS + 1:]}


# -- building -------------------------------------------------------------------------------------------
def search_share_idxs(archs: list[str]) -> dict[int, dict[int, dict[str, int]]]:
    """``learn_gradient_similarity_groups``: every layer of every net shares coefficient 0 of net 0 (the
    pretraining coefficients; ``range(args.depth + 1)``, the teacher's depth)."""
    depth0 = _wrn(archs[0])[0]
    return {n: {layer: {"layer": 0, "net": 0} for layer in range(depth0 + 1)} for n in range(len(archs))}


def official_nets(swrn, archs: list[str], max_params: int, seed: int = SEED, *, groups: Any = -1,
                  share_idxs: dict | None = None, coeff_share: bool = True) -> list[nn.Module]:
    """``main_no.load_model`` on CPU for teacher ``archs[0]`` and students ``archs[1:]``: seed, the layer
    shapes of every net (``get_layer_shapes``: unshared models, drawing from the generator), the teacher,
    then each student with the banks of the nets before it (``params``)."""
    dw = [_wrn(a) for a in archs]
    with cpu_device_lookups(), quiet():
        torch.manual_seed(seed)
        shapes = [[(i, j, s) for _, j, s in official_layer_shapes(swrn, d, w, NUM_CLASSES)[0]]
                  for i, (d, w) in enumerate(dw)]
        nets: list[nn.Module] = []
        params = None
        for i, (d, w) in enumerate(dw):
            if i == 0:
                idxs = None if share_idxs is None or 0 not in share_idxs else share_idxs[0]
            else:
                idxs = None if share_idxs is None else share_idxs[i]
            net = swrn.swrn(SHARE_TYPE, UPSAMPLE_TYPE, UPSAMPLE_WINDOW, d, w, BANK_SIZE, max_params, NUM_CLASSES,
                            groups, TRANS, params=params, param_group_bins=BINS, bin_type=BIN_TYPE,
                            separate_kernels=SEPARATE_KERNELS, allocation_normalized=False, share_linear=False,
                            share_coeff=coeff_share, coeff_share_idxs=idxs, layer_shapes=(i, shapes), variant=None)
            nets.append(net)
            if i == 0:
                params = [net.bank.get_params()] if net.bank else None
            elif params is not None and net.bank is not None:
                params.append(net.bank.get_params())
    return [n.double() for n in nets]


def our_model(archs: list[str], max_params: int, seed: int = SEED, *, options: dict | None = None,
              artifacts: dict | None = None):
    """Our ``BuiltModel`` in float64: the search model by default (``bank`` coefficients), the final model of
    a search with ``artifacts={'search': ...}`` and ``coefficient_unshare_epochs`` > 0 (``matched`` rows)."""
    from ..factory import create_model

    torch.manual_seed(seed)
    opts = our_options(BANK_SIZE, BINS, {"members": ",".join(archs), **(options or {})})
    built = create_model("superweights", archs[0], f"cifar{NUM_CLASSES}", Budget(max_params, "max_params"), opts,
                         artifacts=artifacts)
    built.model.double()
    return built


# -- the structural map, for ensembles ------------------------------------------------------------------
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise TransferError(f"superweights search parity: {msg}")


def link_members(nets: list[nn.Module], ours: NPASModel) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(our name, official tensor, our tensor) for every tensor of every member, each official tensor once.
    Checked from the structure, never from values: layer ids, names, shapes, clusters and levels; every
    official bank tensor maps to exactly one of our banks and back; every official coefficient vector to
    exactly one of our rows and back (so the partition of uses into shared coefficients is the same);
    masks all ones, no projections; then norms and classifiers by name; nothing left over on either side."""
    _need(len(nets) == ours.num_members, f"{len(nets)} official nets, {ours.num_members} members of ours")
    built = ours.built(SWBuilt)
    plan, rows = built.plan, built.rows
    links: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    fwd: dict[int, tuple] = {}  # id(official tensor) -> our key
    back: dict[tuple, int] = {}  # our key -> id(official tensor)

    def add(name: str, a: torch.Tensor, b: torch.Tensor, key: tuple) -> None:
        _need(fwd.get(id(a), key) == key and back.get(key, id(a)) == id(a),
              f"{name}: the official sharing differs from ours ({key})")
        if id(a) not in fwd:
            _need(a.numel() == b.numel() and a.dtype == b.dtype,
                  f"{name}: official {tuple(a.shape)} {a.dtype}, ours {tuple(b.shape)} {b.dtype}")
            links.append((name, a, b))
        fwd[id(a)], back[key] = key, id(a)

    for m, (net, member) in enumerate(zip(nets, ours.members)):
        oconvs = _official_convs(net)
        uconvs = {l.spec.index: l for l in member.net.modules() if hasattr(l, "spec") and l.spec.kind == "conv"}
        _need(sorted(oconvs) == sorted(uconvs), f"member {m}: layer ids {sorted(oconvs)} vs ours {sorted(uconvs)}")
        for lid, (oname, ol) in sorted(oconvs.items()):
            ul, use = uconvs[lid], plan.uses[m][lid]
            _need(oname.replace("convShortcut", "shortcut") == ul.spec.name,
                  f"member {m} layer {lid}: official {oname}, ours {ul.spec.name}")
            _need(tuple(ol.shape) == tuple(ul.spec.shape), f"member {m} {oname}: shapes {ol.shape} vs {ul.spec.shape}")
            _need(int(ol.group_id) == use.cluster and len(ol.banks) == use.levels,
                  f"member {m} {oname}: official group {ol.group_id} x {len(ol.banks)} widths, ours cluster "
                  f"{use.cluster} x {use.levels} levels")
            for w, (bank, comb) in enumerate(zip(ol.banks, ol.coefficients)):
                key = (use.cluster, w)
                name = bank_name(key)
                _need(comb.layer is None and not comb._learn_groups and comb.trans <= 1
                      and bool(torch.all(comb.mask == 1)), f"member {m} {oname} width {w}: not a plain wavg combiner")
                add(f"shared.bank_{name}.templates", bank._params._params, ours.shared[f"bank_{name}"].templates,
                    ("bank", key))
                row = rows.rows[key][(m, lid)]
                add(f"shared.coef_{name}.rows[{row}]", comb.coefficients, ours.shared[f"coef_{name}"].rows[row],
                    ("coef", key, row))
        obn = {n: mod for n, mod in net.named_modules() if isinstance(mod, nn.BatchNorm2d)}
        ubn = {n: mod for n, mod in member.net.named_modules() if isinstance(mod, nn.BatchNorm2d)}
        _need(sorted(obn) == sorted(ubn), f"member {m}: norms {sorted(obn)} vs ours {sorted(ubn)}")
        for n in obn:
            for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                add(f"members.{m}.net.{n}.{t}", getattr(obn[n], t), getattr(ubn[n], t), ("bn", m, n, t))
        add(f"members.{m}.net.classifier.weight", net.classifier.weight, member.net.classifier.provider.weight,
            ("fc", m, "w"))
        add(f"members.{m}.net.classifier.bias", net.classifier.bias, member.net.classifier.bias, ("fc", m, "b"))
    _complete(nets, ours, links)
    return links


def _complete(nets: list[nn.Module], ours: NPASModel, links) -> None:
    """Every trainable parameter and persistent buffer of both sides is linked (official masks: checked ones)."""
    o_ids = {id(a) for _, a, _ in links}
    u_ids = {id(b) for _, _, b in links} | {id(b._base) for _, _, b in links if b._base is not None}
    missing = [f"net {i}: {n}" for i, net in enumerate(nets) for n, p in net.named_parameters()
               if p.requires_grad and id(p) not in o_ids]
    missing += [f"net {i}: {n}" for i, net in enumerate(nets) for n, b in net.named_buffers() if id(b) not in o_ids]
    _need(not missing, f"official tensors without a counterpart: {missing[:5]}")
    persistent = set(ours.state_dict(keep_vars=True))
    missing = [n for n, p in ours.named_parameters() if id(p) not in u_ids]
    missing += [n for n, b in ours.named_buffers() if n in persistent and id(b) not in u_ids]
    _need(not missing, f"our tensors without a counterpart: {missing[:5]}")


def to_official(ours: NPASModel, nets: list[nn.Module]) -> dict[str, float]:
    """Copy our weights into the official nets, then measure: max |difference| of every member's composed
    weights (relative to the largest weight) and of every member's evaluation-mode output (relative to
    max(1, largest output)) on the first analysis batch."""
    with torch.no_grad():
        for _, a, b in link_members(nets, ours):
            a.copy_(b.detach().view_as(a))
    for member in ours.members:
        member.invalidate()
    x = batches()["analysis"][0][0]
    w_rel, o_rel = 0.0, 0.0
    with torch.no_grad(), cpu_device_lookups(), quiet():
        for m, (net, member) in enumerate(zip(nets, ours.members)):
            convs = _official_convs(net)
            member.produce()
            for layer in ours.weight_layers(m):
                ref = net.classifier.weight if layer.spec.kind == "linear" else convs[layer.spec.index][1].get_params()
                w_rel = max(w_rel, float((ref - layer.weight()).abs().max() / ref.abs().max()))
            member.invalidate()
            net.eval()
            member.eval()
            a, b = net(x), member(x)
            o_rel = max(o_rel, float((a - b).abs().max()) / max(1.0, float(a.abs().max())))
            net.train()
            member.train()
    return {"weights_rel": w_rel, "outputs_rel": o_rel}


# -- 1. search pre-training ---------------------------------------------------------------------------------
def official_optimizer(nets: list[nn.Module]) -> torch.optim.SGD:
    """``group_weight_decay(net, student_nets, decay, ['coefficients'])`` (each tensor once) + Nesterov SGD."""
    decay, no_decay, seen = [], [], set()
    for net in nets:
        for name, p in net.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if "coefficients" in name else decay).append(p)
    return torch.optim.SGD([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": DECAY}],
                           lr=LR, momentum=MOMENTUM, nesterov=True)


def official_pretrain(nets: list[nn.Module], trained: list[int], data) -> list[float]:
    opt = official_optimizer(nets)
    losses = []
    with cpu_device_lookups():
        for x, y in data:
            for i in trained:
                nets[i].train()
            loss = sum(F.cross_entropy(nets[i](x), y) for i in trained)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


def our_pretrain(built, trained: list[int], data) -> list[float]:
    """Our search phase's training (``run_search``: the sub-model of the trained members, the trainer's
    optimizer with the method's exemptions, member losses summed)."""
    model = built.model
    sub = NPASModel([model.members[i] for i in trained], [model.member_names[i] for i in trained],
                    shared=dict(model.shared))
    cfg = OptimConfig(lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=DECAY, schedule="constant")
    opt = build_optimizer(sub, cfg, built.method.no_weight_decay_roles())
    sub.train()
    losses = []
    for x, y in data:
        loss = sum(F.cross_entropy(member(x), y) for member in sub.members)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for member in model.members:
        member.invalidate()
    return losses


# -- 2. analysis gradients ---------------------------------------------------------------------------------
def official_hook_grads(swrn, nets: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> dict:
    """``analyze_group_gradients`` up to the loop: ``HOOK.grads`` = {net: {initial group: {layer: grad}}}."""
    hook = swrn.HOOK
    hook.grads = {}
    opt = official_optimizer(nets)
    for net in nets:
        net.eval()
        for _, module in net.named_modules():
            if hasattr(module, "group_id"):
                module.register_hook = True
    with cpu_device_lookups():
        for j, net in enumerate(nets):
            hook.update_model(j)
            loss = nn.CrossEntropyLoss()(net(x), y)
            opt.zero_grad()
            loss.backward()
    grads = hook.grads
    hook.update_model(-1)
    for net in nets:
        for _, module in net.named_modules():
            if hasattr(module, "group_id"):
                module.register_hook = False
    hook.remove_grads()
    hook.grads = {}
    return grads


def flat_grads(hook_grads: dict) -> list[dict[int, torch.Tensor]]:
    """{net: {group: {layer: g}}} -> per member {layer: g}."""
    return [{layer: g for group in hook_grads[n].values() for layer, g in group.items()} for n in sorted(hook_grads)]


def grad_summary(grads: list[dict[int, torch.Tensor]]) -> list[dict[str, dict[str, Any]]]:
    """Per member, per layer: norm, sum, sum |g|, max |g| and four entries (flat index 0, n/3, 2n/3, n-1)."""
    out = []
    for g in grads:
        mem = {}
        for layer in sorted(g):
            f = g[layer].reshape(-1)
            n = f.numel()
            mem[str(layer)] = {"shape": list(g[layer].shape), "norm": float(f.norm()), "sum": float(f.sum()),
                               "abs_sum": float(f.abs().sum()), "max_abs": float(f.abs().max()),
                               "entries": [float(f[i]) for i in (0, n // 3, 2 * n // 3, n - 1)]}
        out.append(mem)
    return out


# -- 3./4. similarities, clusters, share maps -----------------------------------------------------------------
# a 0-dim tensor formatted with "{}" prints as its Python float (``Tensor.__format__``): the exact value
_SIM = re.compile(r"^(\d+)-(\d+) - (\d+)-(\d+), sim: (\S+)$")


def official_assign(swrn, nets: list[nn.Module], depths: list[int], hook_grads: dict, threshold: float,
                    similarities: bool = False) -> dict[str, Any]:
    """One official ``assign_groups`` round on fresh models; with ``similarities`` also every similarity it
    printed (``verbose``), as [net, layer, net, layer, cosine] in its order (``---->`` summary lines skipped)."""
    buf = io.StringIO()
    with cpu_device_lookups(), contextlib.redirect_stdout(buf):
        out = swrn.assign_groups(hook_grads, nets, depths, BINS + 1, threshold=threshold, coeff_threshold=None,
                                 concat_weightwgrad=False, verbose=similarities)
    _, layer2group, _, _, max_group_sizes, share = out
    rec: dict[str, Any] = {"threshold": threshold, "clusters": [list(map(int, c)) for c in layer2group],
                           "matches": share_json(share), "estimate": int(sum(float(v) for v in max_group_sizes.values()))}
    if similarities:
        rec["similarities"] = [[int(a), int(b), int(c), int(d), float(s)]
                               for a, b, c, d, s in (m.groups() for m in map(_SIM.match, buf.getvalue().splitlines())
                                                     if m)]
    return rec


def share_json(share: dict) -> dict[str, dict[str, list[int]]]:
    """Official ``layer_coeff_share`` -> {member: {layer: [source member, position]}} (our ``matches`` form)."""
    return {str(n): {str(l): [int(v["net"]), int(v["layer"])] for l, v in sorted(d.items())}
            for n, d in sorted(share.items())}


def matches_json(matches: dict) -> dict[str, dict[str, list[int]]]:
    return {str(m): {str(l): [int(v[0]), int(v[1])] for l, v in sorted(d.items())} for m, d in sorted(matches.items())}


def our_assign(grads, initial, shapes, threshold: float, similarities: bool = False) -> dict[str, Any]:
    trace: list = []
    clusters, matches = assign(grads, initial, shapes, threshold, trace=trace)
    rec: dict[str, Any] = {"threshold": threshold, "clusters": clusters, "matches": matches_json(matches),
                           "estimate": one_template_estimate(clusters, shapes)}
    if similarities:
        rec["similarities"] = [list(t) for t in trace]
    return rec


# -- 5. the threshold loop -------------------------------------------------------------------------------------
def official_loop(swrn, archs: list[str], nets: list[nn.Module], depths: list[int], hook_grads: dict,
                  max_params: int, max_rounds: int = 100) -> dict[str, Any]:
    """``analyze_group_gradients``' loop, driving the official ``assign_groups`` (see the module docstring);
    stops after ``max_rounds`` rounds if the official condition never ends it (``ended`` false)."""
    num_params, threshold, i = 0, START, 0
    per_round: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    while i == 0 or num_params > max_params:
        if i >= max_rounds:
            break
        if i > 0:  # "layer group_id's were changed so reload model"
            nets = official_nets(swrn, archs, max_params, groups=-1, share_idxs=None, coeff_share=False)
        last = official_assign(swrn, nets, depths, hook_grads, threshold)
        threshold -= DECREMENT
        num_params = last["estimate"]
        per_round.append({"threshold": last["threshold"], "estimate": num_params})
        i += 1
    return {"max_params": max_params, "rounds": i, "ended": not num_params > max_params,
            "thresholds": [r["threshold"] for r in per_round], "estimates": [r["estimate"] for r in per_round],
            "threshold": last["threshold"], "estimate": last["estimate"], "clusters": last["clusters"],
            "matches": last["matches"]}


def our_loop(grads, initial, shapes, max_params: int) -> dict[str, Any]:
    res = search_clusters(grads, initial, shapes, max_params, START, DECREMENT)
    return {"max_params": max_params, "rounds": res.rounds, "ended": True, "threshold": res.threshold,
            "estimate": res.estimate, "clusters": res.clusters, "matches": matches_json(res.matches)}


def artifact(archs: list[str], loop: dict[str, Any]) -> dict[str, Any]:
    """The search artifact our final model is built from (as ``run_search`` writes it)."""
    return {"archs": archs, "clusters": loop["clusters"], "matches": loop["matches"]}


# -- 6. coefficient unsharing -----------------------------------------------------------------------------------
def official_final(swrn, archs: list[str], max_params: int, loop: dict[str, Any]) -> list[nn.Module]:
    """``main()`` after the search: ``load_model(groups=layer2group, coeff_share_idxs=layer_coeff_share,
    coeff_share=True)``."""
    share = {int(n): {int(l): {"layer": int(v[1]), "net": int(v[0])} for l, v in d.items()}
             for n, d in loop["matches"].items()}
    return official_nets(swrn, archs, max_params, groups=[list(c) for c in loop["clusters"]], share_idxs=share)


def official_sharing(nets: list[nn.Module]) -> dict[str, Any]:
    """Per bank "c,w": the uses sharing coefficients (same tensor storage), each group with its values; and
    how many distinct Parameter objects hold them (``update_layer_coeff`` gives every layer of a copied group
    its own Parameter over one shared storage)."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    objects: dict[str, set[int]] = {}
    for m, net in enumerate(nets):
        for lid, (_, ol) in sorted(_official_convs(net).items()):
            for w, comb in enumerate(ol.coefficients):
                key = f"{int(ol.group_id)},{w}"
                c = comb.coefficients
                g = groups.setdefault(key, {}).setdefault(c.data_ptr(), {"uses": [], "values": c.detach().tolist()})
                g["uses"].append([m, lid])
                objects.setdefault(key, set()).add(id(c))
    return {"banks": {k: sorted(v.values(), key=lambda g: g["uses"]) for k, v in sorted(groups.items())},
            "parameter_objects": sum(len(v) for v in objects.values()),
            "storages": sum(len(v) for v in groups.values())}


def our_sharing(model: NPASModel) -> dict[str, Any]:
    built = model.built(SWBuilt)
    out: dict[str, list[dict[str, Any]]] = {}
    for (c, w), r in sorted(built.rows.rows.items()):
        rows = model.shared[f"coef_{bank_name((c, w))}"].rows
        by_row: dict[int, dict[str, Any]] = {}
        for (m, l), row in sorted(r.items()):
            by_row.setdefault(row, {"uses": [], "values": rows[row].detach().tolist()})["uses"].append([m, l])
        out[f"{c},{w}"] = sorted(by_row.values(), key=lambda g: g["uses"])
    n = sum(len(v) for v in out.values())
    return {"banks": out, "parameter_objects": n, "storages": n}


def official_compare_grads(nets: list[nn.Module], opt: torch.optim.Optimizer, data, threshold: float) -> list:
    """``main_no.analyze_gradients`` (without ``reinit``) on ``data``, evaluation mode: per batch and network a
    forward, the loss, ``zero_grad``, backward and ``bank.get_grads``; then the teacher's ``compare_grads``.
    Returns the new coefficient parameters (the official adds them to its optimizer)."""
    for net in nets:
        net.eval()
    grads: list = [None] * len(nets)
    with cpu_device_lookups(), quiet():
        for x, y in data:
            for j, net in enumerate(nets):
                loss = nn.CrossEntropyLoss()(net(x), y)
                opt.zero_grad()
                loss.backward()
                grads[j] = net.bank.get_grads(grads[j])
        return nets[0].bank.compare_grads(grads, threshold=threshold)


def official_unshare(nets: list[nn.Module], data, threshold: float) -> dict[str, Any]:
    """The official unsharing on ``data``, and which uses share coefficients before and after."""
    with cpu_device_lookups(), quiet():
        before = official_sharing(nets)
    new = official_compare_grads(nets, official_optimizer(nets), data, threshold)
    with cpu_device_lookups(), quiet():
        after = official_sharing(nets)
    return {"threshold": threshold, "before": before, "after": after, "new_parameters": len(new)}


def our_unshare(built, data, threshold: float) -> dict[str, Any]:
    before = our_sharing(built.model)
    built.method.unshare_coefficients(built.model, iter(data))
    return {"threshold": threshold, "before": before, "after": our_sharing(built.model)}


def final_options(threshold: float) -> dict[str, Any]:
    return {"coefficient_unshare_epochs": 1, "coefficient_unshare_threshold": threshold}


# -- one cell ---------------------------------------------------------------------------------------------------
def _ours_through_analysis(cell: dict[str, Any]):
    """Our search model through pre-training and the analysis batch: (built, losses, grads, initial, shapes)."""
    archs, mp = cell["archs"], cell["max_params"]
    data = batches()
    built = our_model(archs, mp)
    plan = built.model.built(SWBuilt).plan
    shapes = plan.members
    initial = depth_bins(shapes, BINS)
    losses = our_pretrain(built, search_members(shapes), data["pretrain"])
    x, y = data["analysis"][0]
    grads = weight_gradients(built.model, x, y)
    return built, losses, grads, initial, shapes


def replay(name: str) -> dict[str, Any]:
    """Our side of cell ``name``, in the recorded format (no official code)."""
    cell = CELLS[name]
    with float64():
        built, losses, grads, initial, shapes = _ours_through_analysis(cell)
        rec = _our_search_record(cell, losses, grads, initial, shapes)
        rec["unsharing"] = [_our_final_unshare(cell, rec["loop"], t) for t in UNSHARE_THRESHOLDS]
    return rec


def _our_search_record(cell, losses, grads, initial, shapes) -> dict[str, Any]:
    first = our_assign(grads, initial, shapes, THRESHOLDS[0], similarities=True)
    return {"pretrain_losses": losses, "grads": grad_summary(grads), "similarities": first.pop("similarities"),
            "assign": [first] + [our_assign(grads, initial, shapes, t) for t in THRESHOLDS[1:]],
            "loop": our_loop(grads, initial, shapes, cell["max_params"])}


def _our_final_unshare(cell, loop, threshold: float, seed: int = SEED + 1):
    built = our_model(cell["archs"], cell["max_params"], seed, options=final_options(threshold),
                      artifacts={"search": artifact(cell["archs"], loop)})
    return our_unshare(built, batches()["unshare"], threshold)


def record(repo: str, name: str) -> dict[str, Any]:
    """The official side of cell ``name`` plus the live differences to ours (full tensors)."""
    cell = CELLS[name]
    archs, mp = cell["archs"], cell["max_params"]
    swrn = import_official(repo, "swrn")
    data = batches()
    with float64():
        built, our_losses, our_grads, initial, shapes = _ours_through_analysis(cell)
        # official from our seed-0 initial weights (a fresh copy of ours: ours above has trained)
        fresh = our_model(archs, mp)
        nets = official_nets(swrn, archs, mp, groups=-1, share_idxs=search_share_idxs(archs))
        transfer = to_official(fresh.model, nets)
        depths = [len(s) for s in shapes]
        trained = search_members(shapes)
        losses = official_pretrain(nets, trained, data["pretrain"])
        x, y = data["analysis"][0]
        hook = official_hook_grads(swrn, nets, x, y)
        grads = flat_grads(hook)
        fresh_nets = lambda: official_nets(swrn, archs, mp, groups=-1, coeff_share=False)  # noqa: E731
        first = official_assign(swrn, nets, depths, hook, THRESHOLDS[0], similarities=True)
        assigns = [first] + [official_assign(swrn, fresh_nets(), depths, hook, t) for t in THRESHOLDS[1:]]
        loop = official_loop(swrn, archs, fresh_nets(), depths, hook, mp)
        rec: dict[str, Any] = {
            "archs": archs, "max_params": mp, "depths": depths, "initial_clusters": initial,
            "trained_members": trained, "pretrain_losses": losses, "grads": grad_summary(grads),
            "hook_order": {str(n): {str(g): [int(l) for l in d] for g, d in hook[n].items()} for n in sorted(hook)},
            "similarities": first.pop("similarities"), "assign": assigns, "loop": loop}
        rec["unsharing"] = []
        live_unshare = []
        for t in UNSHARE_THRESHOLDS:
            final = official_final(swrn, archs, mp, loop)
            ours_final = our_model(archs, mp, SEED + 1, options=final_options(t),
                                   artifacts={"search": artifact(archs, loop)})
            live_unshare.append(to_official(ours_final.model, final))
            rec["unsharing"].append(official_unshare(final, data["unshare"], t))
        ours = _our_search_record(cell, our_losses, our_grads, initial, shapes)
        ours["unsharing"] = [_our_final_unshare(cell, loop, t) for t in UNSHARE_THRESHOLDS]
        live = {"transfer_search_model": transfer, "transfer_final_models": live_unshare,
                "grads_rel": max(float((a[k] - b[k]).abs().max() / a[k].abs().max())
                                 for a, b in zip(grads, our_grads) for k in a),
                **differences(rec, ours)}
    rec["live"] = live
    return rec


def record_no_fit(repo: str) -> dict[str, Any]:
    """The official loop where no threshold fits (``NO_FIT``) and with ``max_params`` 0, capped."""
    archs, budget = CELLS[NO_FIT["cell"]]["archs"], NO_FIT["max_params"]
    swrn = import_official(repo, "swrn")
    data = batches()
    with float64():  # models built at that budget, as the official --max_params serves both
        fresh = our_model(archs, budget)
        nets = official_nets(swrn, archs, budget, groups=-1, share_idxs=search_share_idxs(archs))
        transfer = to_official(fresh.model, nets)
        shapes = fresh.model.built(SWBuilt).plan.members
        official_pretrain(nets, search_members(shapes), data["pretrain"])
        hook = official_hook_grads(swrn, nets, *data["analysis"][0])
        depths = [len(s) for s in shapes]
        fresh_nets = lambda: official_nets(swrn, archs, budget, groups=-1, coeff_share=False)  # noqa: E731
        out = {}
        for key, mp, cap in (("no_threshold_fits", NO_FIT["max_params"], NO_FIT["max_rounds"]), ("max_params_0", 0, 5)):
            loop = official_loop(swrn, archs, fresh_nets(), depths, hook, mp, max_rounds=cap)
            out[key] = {k: loop[k] for k in ("max_params", "rounds", "ended", "thresholds", "estimates")}
            out[key]["max_rounds"] = cap
    return {"cell": NO_FIT["cell"], "transfer": transfer, **out}


# -- comparison ---------------------------------------------------------------------------------------------------
def _rel(a: float, b: float, scale: float) -> float:
    return abs(a - b) / max(abs(scale), 1e-300)


def differences(official: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Largest differences of ours against the recorded official side, per quantity; structures as
    ``*_equal`` booleans (False names what to look at)."""
    d: dict[str, Any] = {}
    d["pretrain_loss_rel"] = max((_rel(a, b, b) for a, b in zip(ours["pretrain_losses"], official["pretrain_losses"])),
                                 default=0.0)
    g_rel = 0.0
    shapes_equal = len(ours["grads"]) == len(official["grads"])
    for mo, mu in zip(official["grads"], ours["grads"]):
        shapes_equal &= sorted(mo) == sorted(mu)
        for layer, o in mo.items():
            u = mu.get(layer)
            if u is None or u["shape"] != o["shape"]:
                shapes_equal = False
                continue
            g_rel = max(g_rel, _rel(u["norm"], o["norm"], o["norm"]), _rel(u["sum"], o["sum"], o["abs_sum"]),
                        _rel(u["abs_sum"], o["abs_sum"], o["abs_sum"]), _rel(u["max_abs"], o["max_abs"], o["max_abs"]),
                        *(_rel(a, b, o["max_abs"]) for a, b in zip(u["entries"], o["entries"])))
    d["grads_rel"], d["grads_layers_equal"] = g_rel, shapes_equal
    so = {tuple(s[:4]): s[4] for s in official["similarities"]}
    su = {tuple(s[:4]): s[4] for s in ours["similarities"]}
    d["similarity_pairs_equal"] = set(so) == set(su)
    d["similarity_order_equal"] = [s[:4] for s in official["similarities"]] == [s[:4] for s in ours["similarities"]]
    d["similarity_count"] = len(so)
    d["similarity_abs"] = max((abs(su[k] - so[k]) for k in so if k in su), default=math.nan)
    d["assign_equal"] = [(o["threshold"], o["clusters"] == u["clusters"] and o["matches"] == u["matches"]
                          and o["estimate"] == u["estimate"]) for o, u in zip(official["assign"], ours["assign"])]
    lo, lu = official["loop"], ours["loop"]
    d["loop"] = {"rounds": [lo["rounds"], lu["rounds"]], "threshold": [lo["threshold"], lu["threshold"]],
                 "estimate": [lo["estimate"], lu["estimate"]],
                 "equal": lo["rounds"] == lu["rounds"] and lo["threshold"] == lu["threshold"]
                 and lo["estimate"] == lu["estimate"] and lo["clusters"] == lu["clusters"]
                 and lo["matches"] == lu["matches"] and lo["ended"] and lu["ended"]}
    d["unsharing"] = [_unshare_diff(o, u) for o, u in zip(official["unsharing"], ours["unsharing"])]
    return d


def _partition(sharing: dict[str, Any]) -> dict[str, list]:
    return {k: [g["uses"] for g in v] for k, v in sharing["banks"].items()}


def _unshare_diff(o: dict[str, Any], u: dict[str, Any]) -> dict[str, Any]:
    vals = 0.0
    for k, groups in o["after"]["banks"].items():
        for go, gu in zip(groups, u["after"]["banks"].get(k, [])):
            vals = max(vals, max((abs(a - b) for a, b in zip(go["values"], gu["values"])), default=0.0))
    n_before = sum(len(v) for v in _partition(o["before"]).values())
    n_after = sum(len(v) for v in _partition(o["after"]).values())
    return {"threshold": o["threshold"], "before_equal": _partition(o["before"]) == _partition(u["before"]),
            "after_equal": _partition(o["after"]) == _partition(u["after"]), "values_abs": vals,
            "groups_before": n_before, "groups_after": n_after}


def ok(d: dict[str, Any], tol: float = 1e-9) -> list[str]:
    """What fails in ``differences`` output ``d`` (empty: all agree)."""
    bad = [k for k in ("pretrain_loss_rel", "grads_rel") if not d[k] <= tol]
    bad += [k for k in ("grads_layers_equal", "similarity_pairs_equal", "similarity_order_equal") if not d[k]]
    if not d["similarity_abs"] <= tol:
        bad.append("similarity_abs")
    bad += [f"assign at {t}" for t, same in d["assign_equal"] if not same]
    if not d["loop"]["equal"]:
        bad.append(f"loop {d['loop']}")
    for u in d["unsharing"]:
        if not (u["before_equal"] and u["after_equal"] and u["values_abs"] <= tol):
            bad.append(f"unsharing at {u['threshold']}: {u}")
    return bad


# -- CLI ---------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.parity.sw_search", description=__doc__.splitlines()[0])
    p.add_argument("--superweights", required=True, help="path of a piotr-teterwak/SuperWeights checkout")
    p.add_argument("--out", default="tests/data/superweights_search_trace.json")
    p.add_argument("--cells", default="", help="comma-separated cell names (default: all)")
    a = p.parse_args(argv)
    if not (Path(a.superweights) / "models" / "swrn.py").is_file():
        raise ConfigError(f"--superweights: {a.superweights} has no models/swrn.py; give a SuperWeights checkout")
    names = [n for n in a.cells.split(",") if n] or list(CELLS)
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        raise ConfigError(f"--cells: unknown {unknown}; known: {', '.join(CELLS)}")
    cells = {}
    for name in names:
        cells[name] = record(a.superweights, name)
        live = cells[name]["live"]
        print(f"{name}: grads rel {live['grads_rel']:.2e}, similarities {live['similarity_abs']:.2e}, loop "
              f"{live['loop']}, failing: {ok(live) or 'nothing'}", file=sys.stderr)
    no_fit = record_no_fit(a.superweights)
    print(f"no fit: {no_fit}", file=sys.stderr)
    write_json(Path(a.out), {
        "notes": "Official SuperWeights search phase (float64, CPU) from our seed-0 weights on steps.fixed_batches; "
                 "written by python -m npasbench.parity.sw_search (see its docstring for what is compared).",
        "official": {"repo": "piotr-teterwak/SuperWeights", "commit": checkout_commit(a.superweights)},
        "torch": torch.__version__,
        "settings": {"num_classes": NUM_CLASSES, "bins": BINS, "bank_size": BANK_SIZE, "batch": BATCH, "size": SIZE,
                     "pretrain_steps": PRETRAIN_STEPS, "unshare_batches": UNSHARE_BATCHES, "lr": LR,
                     "momentum": MOMENTUM, "decay": DECAY, "start": START, "decrement": DECREMENT,
                     "thresholds": list(THRESHOLDS), "unshare_thresholds": list(UNSHARE_THRESHOLDS)},
        "cells": cells, "no_fit": no_fit})
    return 0


if __name__ == "__main__":
    sys.exit(main())
