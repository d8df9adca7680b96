"""What the search's budget test can accept and what it always accepts, from the layer shapes alone.

The search (``clustering.search_clusters``) lowers the threshold from ``group_split_threshold_start``
until the one-template estimate (the largest layer of every cluster, summed over clusters) is at most
``max_params``; after the round whose threshold is below -1 it stops (``BudgetError``; the official
loop never ends). Two numbers bound what it can do, whatever the gradients:

- ``floor``: the least estimate any gradients give. Every clustering the search makes refines the
  initial clusters (depth bins) and puts every member's layer into a cluster inside its own initial
  cluster, so each initial cluster contributes at least its largest layer (all members): the estimate is
  never below the sum of those, which is the estimate of the initial clusters themselves, reached when
  every initial cluster merges into one (e.g. when every pair's similarity is the same: the layer visited
  last labels all). Below it no threshold fits. The plan's one-template minimum of the depth bins (which
  the search model must fit first) is never below it (the pieces of a cluster's levels compose its
  largest layer) and equals it when every cluster's shapes are nested (every WRN).
- ``guaranteed``: the largest estimate the last round (threshold below -1, every pair visited) can end
  with. The merge has no union-find: a visited pair (i, j) gives j i's *current* label. A pair is queued
  in both directions with the same similarity and the later-queued direction is visited first, so, in the
  order the search visits a cluster's layers (``clustering.backward_order``: descending layer order, as
  the official gradient hook records them), the earlier-visited layer of a pair takes the later one's
  label. Hence the layer visited last is never relabelled, the one visited second to last ends with its
  label (its only later-visited partner), and every other layer can end alone: the order that visits,
  for each layer in visit order, its pairs with all later layers but the next one, then the pair with
  the next one, has each layer copy the next one's label before that one changes. So the last round's
  clustering of member 0 always merges the last two visited layers of every initial cluster (a
  coarsening of "that pair together, every other layer alone", and coarsening never raises the
  estimate), and that clustering is reached. The first member of every other depth joins each of its
  layers to its most similar member-0 layer of the same initial cluster (any one, for some gradients);
  members of an already joined depth copy their depth's first member position by position. The worst
  joins put the largest joining layers into the clusters with the smallest largest layers (the sorted
  matching is optimal: the gain max(0, joiner - cluster) is convex in their difference). Gradients
  whose similarities all lie between two consecutive thresholds below the start merge nothing before
  that round and everything in it, so the bound is tight: at ``guaranteed - 1`` those gradients fail.

Between the two, whether the search fits depends on the gradients (the CPU grid's WRN-16-1 at 50%:
``BudgetError`` after its search). Assumptions: distinct pairs have distinct similarities (real
gradients). Exact ties between different pairs (e.g. a layer whose gradient is all zero) reach other
clusterings; an exhaustive search over every tie pattern for up to 5 layers per initial cluster finds the
same worst case for WRN-16-1 and wrn-16-1+wrn-10-1 (tests/test_superweights_floor.py), but it is not
proven in general. A pair whose similarity is at or below the last threshold (-1 - 2e-16 by default:
exactly opposite gradients can round there) is not visited at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

try:  # the official visit order (the gradient hook's, descending layers): clustering.py defines it
    from .clustering import backward_order as visit_order
except ImportError:  # pragma: no cover - a clustering.py that visits layers in ascending order
    def visit_order(labels: list[int], cluster: int) -> list[int]:
        return [l for l in range(len(labels)) if labels[l] == cluster]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class SearchBounds:
    """Bounds of the one-template estimate (in ``max_params`` units) and the clusterings reaching them."""

    floor: int
    floor_clusters: list[list[int]]  # every initial cluster merged: the initial clusters
    guaranteed: int
    guaranteed_clusters: list[list[int]]  # the worst last-round clustering (per member, per layer)


def _size(shape: Shape) -> int:
    return math.prod(shape)


def _join_structure(initial: list[list[int]], shapes: list[list[Shape]]) -> tuple[list[int], dict[int, int]]:
    """(the members that choose their clusters by similarity, follower -> the member it copies by position),
    as ``clustering.assign``: the first member of every depth but member 0's chooses; the others copy the
    first member of their depth (member 0 for its own depth)."""
    depths = [len(s) for s in shapes]
    choosers: list[int] = []
    copies: dict[int, int] = {}
    first: dict[int, int] = {depths[0]: 0}
    for m in range(1, len(initial)):
        if depths[m] in first:
            copies[m] = first[depths[m]]
        else:
            first[depths[m]] = m
            choosers.append(m)
    return choosers, copies


def _layers(labels: list[int], g: int) -> list[int]:
    return [l for l in range(len(labels)) if labels[l] == g]


def search_bounds(shapes: list[list[Shape]], initial: list[list[int]]) -> SearchBounds:
    """``floor`` and ``guaranteed`` of the search for members ``shapes`` starting from ``initial`` (the depth
    bins), see the module docstring; pure arithmetic on the shapes."""
    ids = sorted({c for labels in initial for c in labels})
    floor = 0
    for g in ids:
        floor += max(_size(shapes[m][l]) for m in range(len(initial)) for l in _layers(initial[m], g))
    choosers, copies = _join_structure(initial, shapes)
    out: list[list[int]] = [[-1] * len(labels) for labels in initial]
    guaranteed = 0
    next_id = 0
    for g in ids:
        order = visit_order(initial[0], g)
        if not order:
            raise ValueError(f"initial cluster {g} has no member-0 layer")  # as clustering.assign
        # member 0: the last two visited layers together, every other layer alone
        blocks = [[l] for l in order[:-2]] + [order[-2:]]
        for i, b in enumerate(blocks):
            for l in b:
                out[0][l] = next_id + i
        block_of = {l: i for i, b in enumerate(blocks) for l in b}
        local = {m: _layers(initial[m], g) for m in range(len(initial))}  # ascending: copy positions

        def group(m: int, k: int) -> list[tuple[int, int]]:
            """member m's k-th layer of the cluster and the layers copying it (same position, its followers)"""
            return [(m, local[m][k])] + [(f, local[f][k]) for f, src in copies.items() if src == m and k < len(local[f])]

        value = [max(_size(shapes[0][l]) for l in b) for b in blocks]
        for k, l in enumerate(local[0]):  # members of member 0's depth copy member 0
            for m, layer in group(0, k)[1:]:
                out[m][layer] = next_id + block_of[l]
                value[block_of[l]] = max(value[block_of[l]], _size(shapes[m][layer]))
        units = sorted(((max(_size(shapes[m][layer]) for m, layer in group(c, k)), c, k)
                        for c in choosers for k in range(len(local[c]))), reverse=True)
        by_value = sorted(range(len(blocks)), key=lambda b: value[b])
        for i, (size, c, k) in enumerate(units):  # the largest joiners into the clusters with the smallest largest layer
            b = by_value[i] if i < len(by_value) else by_value[0]  # the rest gain nothing wherever they go
            value[b] = max(value[b], size)
            for m, layer in group(c, k):
                out[m][layer] = next_id + b
        guaranteed += sum(value)
        next_id += len(blocks)
    for m, labels in enumerate(out):
        if any(c < 0 for c in labels):
            raise ValueError(f"member {m}: a layer got no cluster (more layers in an initial cluster than the member "
                             "it copies)")
    return SearchBounds(floor, [list(c) for c in initial], guaranteed, out)


@dataclass(frozen=True)
class SearchBudgets:
    """The search's bounds in the user's terms: ``model.budget`` in both budget modes."""

    floor_max_params: int  # smallest max_params the search can fit (and its depth-bin model needs)
    floor_total: int  # smallest total-mode budget whose search gets that max_params (and whose model fits)
    guaranteed_max_params: int  # from here the search fits whatever the gradients
    guaranteed_total: int
    estimate_floor: int  # the bounds of the one-template estimate itself
    estimate_guaranteed: int
    reference: int  # the unshared networks' unique parameters (the members summed), for percentages
    members: list[str]
    search_floor_total: int  # total-mode budgets at which the search's max_params reaches the bounds (the totals
    search_guaranteed_total: int  # above add the model after the search: more coefficient rows, more banks)

    def floor(self, mode: str) -> int:
        return self.floor_total if mode == "total" else self.floor_max_params

    def guaranteed(self, mode: str) -> int:
        return self.guaranteed_total if mode == "total" else self.guaranteed_max_params

    def share(self, n: int) -> str:
        return f"{100 * n / self.reference:.1f}%"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
