"""The ``superweights-search`` row of the learning-parity harness: SuperWeights with its gradient search and
coefficient unsharing, official and ours, in the harness's one loop (``harness.search_arm`` / ``train_arm``).

Official arm (piotr-teterwak/SuperWeights imported by path, driven with ``sw_search``'s verified pieces):
the search model (``official_nets``: depth bins, one coefficient vector per bank, ``--coefficient_share``)
trained ``group_split_epochs`` in ``search_arm`` with the official optimizer (member 0: a single network);
the analysis batch = the first training batch of the seed's loader (``official_hook_grads``: eval mode,
``HOOK``); the official threshold loop (``official_loop``: ``assign_groups`` from the start threshold down
by the decrement until the estimate fits ``max_params``); the official final model from its clusters and
share map (``load_model(groups=layer2group, coeff_share_idxs=layer_coeff_share, coeff_share=True)``),
trained in ``train_arm`` with the official optimizer; at the end of epoch ``coefficient_unshare_epochs``
``main_no.analyze_gradients`` (eval mode, per batch forward / loss / ``zero_grad`` / backward /
``bank.get_grads``; ``bank.compare_grads(grads, threshold)``; ``optimizer.add_param_group({'params':
new_coeff, 'weight_decay': 0.})``). Ours: ``methods.superweights.search.run_search`` step by step in the same
loop, the final model built from the artifact, ``unshare_coefficients`` then ``rebuild_optimizer`` (as the
trainer's ``_rebuild``). Both unsharing analyses read the batches ``npas train`` reads (the train loader
seeded ``seed + 7919``, no drop_last, epoch ``e``, the first ``coefficient_unshare_batches``).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn as nn

from .official import cpu_device_lookups, import_official, quiet

ARCH = "wrn-16-1"
UNSHARE_SEED_OFFSET = 7919  # methods.superweights.unsharing.on_epoch_end


def unshare_batches(root: str, seed: int, epoch: int, n: int, batch: int, cutout: int) -> list:
    """The batches ``npas train``'s unsharing reads at the end of (0-based) ``epoch``."""
    from ..config import build_config
    from ..data import load_data, make_loader

    cfg = build_config({}, {"data.name": "cifar100", "data.root": root, "data.cutout": cutout})
    loader = make_loader(load_data(cfg.data), "train", batch, cfg.data, seed=seed + UNSHARE_SEED_OFFSET,
                         drop_last=False, device=torch.device("cpu"))
    return list(itertools.islice(loader.epoch(epoch), n or len(loader)))


def _zero_tails(net: nn.Module) -> None:
    """The bank entries the official init leaves uninitialised (``torch.Tensor(n)``) set to zero, as
    ``superweights_map.official_model`` does for the no-search row (a seed gives a deterministic model)."""
    from .superweights_map import _official_banks

    with torch.no_grad():
        for bank in _official_banks(net).values():
            flat = bank._params._params
            flat[(flat.numel() // 9) * 9:].zero_()


def _official_net(swrn, max_params: int, seed: int, **kw) -> nn.Module:
    from .sw_search import official_nets

    net = official_nets(swrn, [ARCH], max_params, seed, **kw)[0].float()  # float32 init, doubled, back: exact
    _zero_tails(net)
    return net


def official_storages(net: nn.Module) -> int:
    from .sw_search import official_sharing

    return int(official_sharing([net])["storages"])


def official_search(row, repo: str, root: str, seed: int, h) -> tuple[nn.Module, dict[str, Any]]:
    """The official search -> (the official final model, its record fields)."""
    from .superweights_map import _official_convs
    from .sw_search import official_hook_grads, official_loop, search_share_idxs

    o, mp = row.options, row.budget
    swrn = import_official(repo, "swrn")
    net = _official_net(swrn, mp, seed, groups=-1, share_idxs=search_share_idxs([ARCH]))

    def forward(x):
        with cpu_device_lookups():
            return net(x)

    loss = h.search_arm(net, h.official_optimizer(net, h.LR, h.MOMENTUM, h.WD), forward, root, seed,
                        o["group_split_epochs"], f"{row.name} official search s{seed}")
    train, _ = h._loaders(root, seed, 1)
    x, y = next(iter(train.epoch(0)))
    hook = official_hook_grads(swrn, [net], x, y)
    depths = [len(_official_convs(net))]
    fresh = [_official_net(swrn, mp, seed, groups=-1, coeff_share=False)]
    loop = official_loop(swrn, [ARCH], fresh, depths, hook, mp)
    if not loop["ended"]:
        raise RuntimeError(f"official threshold loop did not fit max_params {mp} in {loop['rounds']} rounds")
    share = {int(n): {int(l): {"layer": int(v[1]), "net": int(v[0])} for l, v in d.items()}
             for n, d in loop["matches"].items()}
    final = _official_net(swrn, mp, seed, groups=[list(c) for c in loop["clusters"]], share_idxs=share)
    extra = {"clusters": loop["clusters"], "matches": loop["matches"], "threshold": round(loop["threshold"], 6),
             "threshold_rounds": loop["rounds"], "one_template_estimate": loop["estimate"],
             "thresholds": loop["thresholds"], "estimates": loop["estimates"], "search_loss": loss}
    return final, extra


def official_unshare(net: nn.Module, optimizer: torch.optim.Optimizer, batches, threshold: float) -> dict[str, Any]:
    """``main_no.analyze_gradients`` (``reinit=False``) for a single network, then ``add_param_group``."""
    from .sw_search import official_compare_grads

    was = net.training
    with cpu_device_lookups(), quiet():
        before = official_storages(net)
    new = official_compare_grads([net], optimizer, batches, threshold)
    with cpu_device_lookups(), quiet():
        after = official_storages(net)
    optimizer.add_param_group({"params": new, "weight_decay": 0.})
    net.train(was)
    return {"rows_before": before, "rows_after": after, "new_parameters": len(new)}


def run_official(row, repo: str, root: str, seed: int, epochs: int, h) -> dict[str, Any]:
    o = row.options
    model, extra = official_search(row, repo, root, seed, h)
    optimizer = h.official_optimizer(model, h.LR, h.MOMENTUM, h.WD)
    threshold = o.get("coefficient_unshare_threshold", 0.9)  # ours' default (main_no.py's argparse default: 0.5)
    events: list[dict[str, Any]] = []

    def forward(x):
        with cpu_device_lookups():
            return model(x)

    def on_epoch_end(epoch: int, opt):
        if epoch + 1 != o["coefficient_unshare_epochs"]:
            return None
        data = unshare_batches(root, seed, epoch, o["coefficient_unshare_batches"], h.BATCH, h.CUTOUT)
        events.append({"epoch": epoch + 1, "threshold": threshold, **official_unshare(model, opt, data, threshold)})
        return opt

    res = h.train_arm(model, optimizer, forward, root, seed, epochs, f"{row.name} official s{seed}",
                      on_epoch_end=on_epoch_end)
    return {**res, "params": h._trainable(model), **extra, "unsharing": events}


def our_search(row, cfg, root: str, seed: int, h) -> dict[str, Any]:
    """``run_search`` in the harness loop: the artifact ``npas train`` would write."""
    from ..contract import NPASModel
    from ..experiment import budget_of
    from ..factory import make_request
    from ..methods.superweights.clustering import search_clusters
    from ..methods.superweights.plan import params_outside_banks
    from ..methods.superweights.plan import depth_bins
    from ..methods.superweights.search import search_members, weight_gradients
    from ..plugins import create_method
    from ..trainer.optim import build_optimizer

    method = create_method("superweights", cfg.method.options)
    o = method.options
    request = make_request(ARCH, "cifar100", budget_of(cfg))
    torch.manual_seed(seed)
    archs, nets, shapes = method.backbones(request)
    initial = depth_bins(shapes, o.param_group_bins)
    fixed = sum(params_outside_banks(n) for n in nets)
    plan, rows = method.resolve_plan(request, shapes, initial, "bank", None, fixed)
    model = method.assemble(archs, nets, plan, rows, {"clusters_from": "depth bins", "coefficients": "bank",
                                                      "unsharing": []})
    trained = search_members(shapes)
    sub = NPASModel([model.members[i] for i in trained], [model.member_names[i] for i in trained],
                    shared=dict(model.shared))
    loss = h.search_arm(sub, build_optimizer(sub, cfg.optim, method.no_weight_decay_roles()),
                        lambda x: sub(x)[0], root, seed, o.group_split_epochs, f"{row.name} ours search s{seed}")
    for member in model.members:
        member.invalidate()
    train, _ = h._loaders(root, seed, 1)
    x, y = next(iter(train.epoch(0)))
    grads = weight_gradients(model, x, y)
    res = search_clusters(grads, initial, shapes, plan.max_params, o.group_split_threshold_start,
                          o.group_split_threshold_decrement)
    return {"archs": archs, "clusters": res.clusters,
            "matches": {str(m): {str(l): list(v) for l, v in d.items()} for m, d in res.matches.items()},
            "threshold": round(res.threshold, 6), "threshold_rounds": res.rounds,
            "one_template_estimate": res.estimate, "max_params": plan.max_params, "search_loss": loss}


def run_ours(row, root: str, seed: int, epochs: int, h) -> dict[str, Any]:
    from ..config import build_config
    from ..experiment import budget_of, resolve
    from ..factory import create_model
    from ..methods.superweights.built import SWBuilt
    from ..trainer.optim import build_optimizer, rebuild_optimizer

    cfg = resolve(build_config({}, row.overrides(seed, epochs, root, "unused"))).config
    art = our_search(row, cfg, root, seed, h)
    torch.manual_seed(seed)  # the trainer's seed_everything after the phases
    built = create_model(row.method, ARCH, "cifar100", budget_of(cfg), dict(cfg.method.options),
                         artifacts={"search": art})
    model, method = built.model, built.method
    exempt = method.no_weight_decay_roles()
    state = {"opt": build_optimizer(model, cfg.optim, exempt)}
    o = method.options

    def on_epoch_end(epoch: int, opt):
        if not method.unshare_due(epoch) or model.built(SWBuilt).info["coefficients"] == "own":
            return None
        data = unshare_batches(root, seed, epoch, o.coefficient_unshare_batches, h.BATCH, h.CUTOUT)
        if method.unshare_coefficients(model, iter(data), epoch=epoch + 1):
            return rebuild_optimizer(opt, model, cfg.optim, exempt)
        return None

    res = h.train_arm(model, state["opt"], lambda x: model(x)[0], root, seed, epochs, f"{row.name} ours s{seed}",
                      on_epoch_end=on_epoch_end)
    events = [{**e, "threshold": o.coefficient_unshare_threshold} for e in model.built(SWBuilt).info["unsharing"]]
    return {**res, "params": built.report(flops=False).total, **{k: v for k, v in art.items() if k != "archs"},
            "unsharing": events}
