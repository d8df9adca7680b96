"""Gradient-similarity clustering of the search phase (official ``assign_groups``), as pure functions.

Input: for every member, the gradient of its loss with respect to every shared layer's composed
weight (one batch, evaluation mode), and the initial clusters (depth bins).

1. ``split``: within each initial cluster, member 0's layers are compared pairwise by the cosine
   similarity of their gradients, cropped to the common top-left [out, in] block. Pairs are visited
   from most to least similar; while the similarity is above the threshold, the second layer joins
   the first one's cluster (official ``priority_queue_assignment``: the second layer takes the
   first's current label, no union-find). Every member-0 layer starts in its own cluster.
   Layers are visited in the official order (``backward_order``: the order its gradient hook recorded
   them, descending layer order within an initial cluster); it decides the fresh cluster ids (hence
   the final numbering), which of a pair's two directions (equal similarity) is merged last, and the
   positions recorded for coefficient sharing.
2. Other members: the first member of each depth other than member 0's is matched layer by layer
   to its most similar member-0 layer of the same initial cluster (``join_large``); members of an
   already matched depth copy the labels of that depth's first member position by position
   (``join_large_same_depth``; members of member 0's depth copy member 0). A matched layer also
   shares its coefficients with the layer it was matched to (``matches``): (source member, position).
   As in the official ``layer_coeff_share``, a ``join_large`` position counts member 0's layers of the
   cluster in visit order (descending), a ``join_large_same_depth`` position in ascending order; the
   final model reads both as ascending positions (``initial_rows``), so a ``join_large`` layer shares
   the coefficients of the layer at the mirrored position of its match, exactly as the official model.
3. Clusters are renumbered consecutively; if the one-template estimate (the largest layer of every
   cluster, summed) exceeds ``max_params``, the threshold is lowered by ``decrement`` and step 1-2
   repeat (more merging, fewer clusters). Without union-find, merging every pair (threshold below -1)
   need not leave one cluster per initial cluster, so a budget above the depth-bin minimum can still
   fit no threshold: the official loop then never ends; ours raises ``BudgetError`` (deliberate).
   ``max_params`` 0 (no budget): one round (the official loop would never end either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from npasbench.errors import BudgetError

Grads = list[dict[int, torch.Tensor]]  # per member: layer -> gradient of the composed weight


def cropped_similarity(g1: torch.Tensor, g2: torch.Tensor) -> float:
    o = min(g1.shape[0], g2.shape[0])
    i = min(g1.shape[1], g2.shape[1])
    a = g1[:o, :i].reshape(-1).double()
    b = g2[:o, :i].reshape(-1).double()
    return float(F.cosine_similarity(a, b, dim=0))


def backward_order(labels: list[int], cluster: int) -> list[int]:
    """The layers of ``cluster`` in the order the official ``split`` visits them: the order its ``HOOK``
    recorded their gradients, i.e. the backward pass, which in a WRN (a chain within every initial
    cluster: 3x3 convs along the residual path, 1x1 shortcuts in successive stages) is descending layer
    order. It decides the fresh cluster ids, which of two equal-similarity pairs (every pair is queued
    in both directions) is merged last, and the positions ``join_large`` records."""
    return [l for l in reversed(range(len(labels))) if labels[l] == cluster]


def priority_merge(threshold: float, groups: dict, queue: list) -> dict:
    """The official ``priority_queue_assignment``: visit (similarity, i, j) from the most similar;
    while above ``threshold``, ``j`` takes ``i``'s current group (no union-find); stop at the first
    pair at or below it. Used by the search (layers) and by coefficient unsharing (uses)."""
    queue.sort(key=lambda t: t[0])  # stable; the official sorts the same list of tuples by similarity
    while queue:
        sim, i, j = queue.pop()
        if sim > threshold:
            groups[j] = groups[i]
        else:
            break
    return groups


@dataclass
class Assignment:
    clusters: list[list[int]]  # per member, per layer
    matches: dict[int, dict[int, tuple[int, int]]]  # member -> layer -> (source member, source position)
    threshold: float
    estimate: int  # the one-template estimate the threshold loop compares with max_params
    rounds: int


def assign(grads: Grads, initial: list[list[int]], shapes: list[list[tuple[int, ...]]], threshold: float,
           trace: list | None = None) -> tuple[list[list[int]], dict]:
    """One round of steps 1-2 at ``threshold``; returns per-member labels and the matches. ``trace``: a list
    that receives every similarity computed, as (member, layer, member, layer, cosine) in the official order
    (what its ``verbose`` output prints), for the parity check."""
    m0 = initial[0]
    ids = sorted({c for labels in initial for c in labels})
    label0: dict[int, int] = {}
    next_group = 0
    for g in ids:
        layers = backward_order(m0, g)
        new: dict[int, int] = {}
        queue: list[tuple[float, int, int]] = []
        checked: set[tuple[int, int]] = set()
        for l1 in layers:
            new[l1] = next_group
            for l2 in layers:
                if l1 == l2 or (l1, l2) in checked:  # as the official: (l2, l1) is computed again
                    continue
                sim = cropped_similarity(grads[0][l1], grads[0][l2])
                if trace is not None:
                    trace.append((0, l1, 0, l2, sim))
                queue.append((sim, l1, l2))
                checked.add((l1, l2))
            next_group += 1
        label0.update(priority_merge(threshold, new, queue))
    labels: list[dict[int, int]] = [label0] + [dict() for _ in initial[1:]]
    members0: dict[int, list[int]] = {}  # new cluster -> member-0 layers in visit order: join_large positions
    for l in label0:  # insertion order: initial clusters ascending, layers in backward order
        members0.setdefault(label0[l], []).append(l)
    matches: dict[int, dict[int, tuple[int, int]]] = {}
    depths = [len(s) for s in shapes]
    large = 0
    for depth in sorted(set(depths), reverse=True):
        joined = depth == depths[0]
        for m in range(1, len(initial)):
            if depths[m] != depth:
                continue
            matches[m] = {}
            if not joined:  # join_large: most similar member-0 layer of the same initial cluster
                for g in ids:
                    for l1 in [l for l in range(len(initial[m])) if initial[m][l] == g]:
                        best = None
                        for l2 in [l for l in range(len(m0)) if m0[l] == g]:
                            sim = cropped_similarity(grads[m][l1], grads[0][l2])
                            if trace is not None:
                                trace.append((m, l1, 0, l2, sim))
                            if best is None or best[0] < sim:
                                best = (sim, l2)
                        if best is None:
                            raise ValueError(f"member {m}: initial cluster {g} has no member-0 layer to join")
                        c = label0[best[1]]
                        labels[m][l1] = c
                        matches[m][l1] = (0, members0[c].index(best[1]))
                joined, large = True, m
            else:  # join_large_same_depth: copy the labels of the depth's first member, by position
                for g in ids:
                    src = [l for l in range(len(initial[large])) if initial[large][l] == g]
                    dst = [l for l in range(len(initial[m])) if initial[m][l] == g]
                    for k, l1 in enumerate(src):
                        if k >= len(dst):
                            break
                        c = labels[large][l1]
                        labels[m][dst[k]] = c
                        same = sorted(l for l, cc in labels[large].items() if cc == c)
                        matches[m][dst[k]] = (large, same.index(l1))
    # consecutive ids in ascending order of the raw ids
    present = sorted({c for lab in labels for c in lab.values()})
    renum = {c: i for i, c in enumerate(present)}
    out = []
    for m, lab in enumerate(labels):
        if len(lab) != len(initial[m]):
            raise ValueError(f"member {m}: {len(initial[m]) - len(lab)} layers got no cluster in the search")
        out.append([renum[lab[l]] for l in range(len(initial[m]))])
    return out, matches


def one_template_estimate(clusters: list[list[int]], shapes: list[list[tuple[int, ...]]]) -> int:
    """Official ``max_group_size`` sum: the largest layer (all members) of every cluster."""
    biggest: dict[int, int] = {}
    for labels, sh in zip(clusters, shapes):
        for c, s in zip(labels, sh):
            biggest[c] = max(biggest.get(c, 0), math.prod(s))
    return sum(biggest.values())


def search_clusters(grads: Grads, initial: list[list[int]], shapes: list[list[tuple[int, ...]]], max_params: int,
                    start: float = 0.1, decrement: float = 0.05) -> Assignment:
    """Steps 1-3: lower the threshold until the estimate fits ``max_params`` (0: no budget, one round)."""
    threshold, rounds = start, 0
    while True:
        clusters, matches = assign(grads, initial, shapes, threshold)
        rounds += 1
        est = one_template_estimate(clusters, shapes)
        if max_params <= 0 or est <= max_params:
            return Assignment(clusters, matches, threshold, est, rounds)
        if threshold < -1.0:
            raise BudgetError(
                f"model.budget: max_params={max_params:,} fits no search threshold: the one-template estimate is "
                f"still {est:,} after {rounds} rounds, at threshold {threshold:.4g} < -1, below every cosine similarity "
                "(lowering it further changes nothing; the official loop never ends here). Raise model.budget or use "
                "fewer method.options.param_group_bins; `npas params` prints the budget from which the search fits "
                "whatever the gradients."
            )
        threshold -= decrement
