"""The SuperWeight search phase (official ``learn_gradient_similarity_groups``).

1. Build the model with the initial clusters (depth bins) and one coefficient vector shared by
   every use of a bank (the official "pretraining" coefficients).
2. Train member 0 and the first member of every other depth (official: the other members are
   skipped "to save time") for ``group_split_epochs`` at the run's learning rate, coefficients
   exempt from weight decay.
3. On one training batch, in evaluation mode, take every member's loss gradient with respect to
   each composed layer weight, and cluster (``clustering.py``), lowering the threshold until the
   one-template estimate fits ``max_params``.

The artifact (clusters per member, coefficient matches, the threshold used) is written by the
trainer to ``artifacts/search.json``; a resumed run reuses it instead of searching again.
"""

from __future__ import annotations

import torch

from npasbench.contract import NPASModel

from .clustering import search_clusters
from .plan import depth_bins, params_outside_banks
from .unsharing import analysis_loss


def search_members(shapes) -> list[int]:
    """Member 0 plus the first member of every depth other than member 0's (official)."""
    depths = [len(s) for s in shapes]
    out, seen = [0], {depths[0]}
    for m in range(1, len(depths)):
        if depths[m] not in seen:
            seen.add(depths[m])
            out.append(m)
    return out


def weight_gradients(model: NPASModel, x: torch.Tensor, y: torch.Tensor) -> list[dict[int, torch.Tensor]]:
    """Every member's loss gradient w.r.t. each composed shared-layer weight (one batch, eval mode)."""
    out: list[dict[int, torch.Tensor]] = []
    was = model.training
    model.eval()
    try:
        for member in model.members:
            grads: dict[int, torch.Tensor] = {}

            def hook(li, w, grads=grads):
                if w.requires_grad:
                    w.register_hook(lambda g, li=li: grads.__setitem__(li, g.detach().clone()))

            member.weight_hook = hook
            member.invalidate()
            try:
                model.zero_grad(set_to_none=True)
                analysis_loss(member(x), y).backward()
            finally:
                member.weight_hook = None
                member.invalidate()
            out.append(grads)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return out


def run_search(method, ctx) -> dict:
    o = method.options
    request = ctx.request
    torch.manual_seed(ctx.cfg.train.seed)
    archs, nets, shapes = method.backbones(request)
    initial = depth_bins(shapes, o.param_group_bins)
    fixed = sum(params_outside_banks(n) for n in nets)
    plan, rows = method.resolve_plan(request, shapes, initial, "bank", None, fixed)
    model = method.assemble(archs, nets, plan, rows, {"clusters_from": "depth bins", "coefficients": "bank", "unsharing": []})
    trained = search_members(shapes)
    sub = NPASModel([model.members[i] for i in trained], [model.member_names[i] for i in trained], shared=dict(model.shared))
    fit = ctx.fit(sub, o.group_split_epochs, no_decay_roles=method.no_weight_decay_roles(),
                  max_steps_per_epoch=o.search_steps_per_epoch or None, desc="superweights search")
    model.to(ctx.device)
    loader = ctx.loader("train")
    x, y = next(iter(loader.epoch(0)))
    grads = weight_gradients(model, x, y)
    result = search_clusters(grads, initial, shapes, plan.max_params, o.group_split_threshold_start,
                             o.group_split_threshold_decrement)
    return {
        "archs": archs,
        "clusters": result.clusters,
        "matches": {str(m): {str(l): list(v) for l, v in d.items()} for m, d in result.matches.items()},
        "initial_clusters": initial,
        "threshold": round(result.threshold, 6),
        "threshold_rounds": result.rounds,
        "one_template_estimate": result.estimate,
        "max_params": plan.max_params,
        "trained_members": [archs[i] for i in trained],
        "search_loss": fit["loss"],
    }
