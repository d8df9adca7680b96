"""SSN's learned parameter groups: the search phase.

A one-group SSN (bank ``search_max_params``, K = 4 templates per layer viewing the whole bank,
softmax over coefficients, ``inter`` resizing) is trained for ``search_epochs`` with the LR cut by
``search_gammas`` at ``search_milestones``; coefficients are exempt from weight decay, as in the
official code. Each layer is then described by its coefficients (``wavg``) or its embedding
(``emb``), and seeded k-means splits the layers into ``param_groups`` groups. The labels are the
phase's artifact; the training phase builds its groups from them.
"""

from __future__ import annotations

import numpy as np
import torch

from .kmeans import kmeans


def layer_features(model) -> np.ndarray:
    """One row per weight layer (network order): raw coefficients (wavg) or embeddings (emb)."""
    group = model.shared["group0"]
    rows = []
    for lp in sorted(group.plans, key=lambda p: p.index):
        table = group.coefficients[str(lp.templates)].table
        rows.append(table[lp.coef_row].detach().cpu().double().numpy())
    return np.stack(rows)


def run_search(method, ctx) -> dict:
    o = method.options
    torch.manual_seed(ctx.cfg.train.seed)
    model = method.search_model(ctx.request)
    n_layers = len(model.weight_layers())
    if n_layers <= o.param_groups:  # official: every layer its own group
        return {"labels": list(range(n_layers)), "note": "no more layers than groups", "search_loss": None}
    fit = ctx.fit(model, o.search_epochs, milestones=tuple(float(m) for m in o.search_milestones),
                  gammas=tuple(o.search_gammas), no_decay_roles=method.no_weight_decay_roles(),
                  max_steps_per_epoch=o.search_steps_per_epoch or None, desc="ssn search")
    feats = layer_features(model)
    labels, inertia = kmeans(feats, o.param_groups, seed=o.group_seed)
    return {
        "labels": [int(l) for l in labels],
        "features": o.search_share_type,
        "feature_dim": int(feats.shape[1]),
        "kmeans_inertia": inertia,
        "search_loss": fit["loss"],
        "search_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
    }
