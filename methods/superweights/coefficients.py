"""Which uses of a bank share coefficients: the row map, its initial forms and the unsharing step.

A *use* is (member, layer) reading bank (cluster, level). ``RowMap`` gives every use a row of the
bank's ``CoefficientTable``; uses with the same row share coefficients (the official code shares
the same ``ParameterCombiner`` object). Three initial forms, as the official ``set_layer_coeff``:

- ``own``: every use its own row (``--coefficient_share`` off);
- ``bank``: all uses of a bank share one row (the search model, and ``--coefficient_share``
  without a search: the official "pretraining" coefficients);
- ``matched``: after the search, member 0's uses own their rows; another member's layer shares
  the row of the layer it was matched to (``join_large`` / ``join_large_same_depth``) wherever
  that layer reads the same bank, else it gets its own row.

``unshare`` is the official ``compare_grads`` refine step: per bank, every pair of uses sharing a
row is compared by the cosine similarity of their coefficient gradients (each member's own loss,
summed over the analysed batches); pairs are visited from most to least similar and a pair above
the threshold puts the second use into the first one's group; visiting stops at the first pair at
or below the threshold. Every resulting group gets its own row, initialised from the shared value.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from .clustering import priority_merge
from .plan import SWPlan

BankKey = tuple[int, int]
Use = tuple[int, int]  # (member, layer)


class RowMap:
    """bank -> {use: row}, plus the number of rows of each bank's table."""

    def __init__(self, rows: dict[BankKey, dict[Use, int]]) -> None:
        self.rows = rows

    def count(self, key: BankKey) -> int:
        r = self.rows[key]
        return (max(r.values()) + 1) if r else 0

    def total_rows(self) -> int:
        return sum(self.count(k) for k in self.rows)

    def row_tensor(self, key: BankKey, uses: Iterable[Use]) -> torch.Tensor:
        r = self.rows[key]
        return torch.tensor([r[u] for u in uses], dtype=torch.long)

    # -- (de)serialisation for checkpoints and artifacts ------------------------------------------
    def to_json(self) -> dict[str, list[list[int]]]:
        return {f"{c},{w}": [[m, l, row] for (m, l), row in sorted(r.items())] for (c, w), r in sorted(self.rows.items())}

    @classmethod
    def from_json(cls, data: dict[str, list[list[int]]]) -> "RowMap":
        rows: dict[BankKey, dict[Use, int]] = {}
        for k, items in data.items():
            c, w = (int(x) for x in k.split(","))
            rows[(c, w)] = {(int(m), int(l)): int(row) for m, l, row in items}
        return cls(rows)

    def same_as(self, other: "RowMap") -> bool:
        return self.rows == other.rows


def bank_uses(plan: SWPlan) -> dict[BankKey, list[Use]]:
    """Uses of every bank in the official order: member by member, layer by layer."""
    out: dict[BankKey, list[Use]] = {k: [] for k in plan.bank_order()}
    for m, lst in enumerate(plan.uses):
        for u in lst:
            for w in range(u.levels):
                out[(u.cluster, w)].append((m, u.layer))
    return out


def initial_rows(plan: SWPlan, mode: str, matches: dict[int, dict[int, tuple[int, int]]] | None = None) -> RowMap:
    """The row map of a freshly built model (see the module docstring for the modes)."""
    uses = bank_uses(plan)
    rows: dict[BankKey, dict[Use, int]] = {}
    if mode == "own":
        for k, lst in uses.items():
            rows[k] = {u: i for i, u in enumerate(lst)}
        return RowMap(rows)
    if mode == "bank":
        for k, lst in uses.items():
            rows[k] = {u: 0 for u in lst}
        return RowMap(rows)
    if mode != "matched":
        raise ValueError(f"unknown coefficient sharing mode {mode!r}")
    matches = matches or {}
    # position -> layer of each member's cluster-local lists (official layer_group_idx)
    local: list[dict[tuple[int, int], int]] = []
    for lst in plan.uses:
        local.append({(u.cluster, u.position): u.layer for u in lst})
    for k in plan.bank_order():
        rows[k] = {}
    for m, lst in enumerate(plan.uses):  # members in order, so a source member is resolved first
        for u in lst:
            src = matches.get(m, {}).get(u.layer) if m > 0 else None
            for w in range(u.levels):
                key = (u.cluster, w)
                r = rows[key]
                if src is not None:
                    sm, spos = src
                    sl = local[sm].get((u.cluster, spos)) if sm < m else None
                    if sl is not None and (sm, sl) in r:
                        r[(m, u.layer)] = r[(sm, sl)]
                        continue
                r[(m, u.layer)] = (max(r.values()) + 1) if r else 0
    return RowMap(rows)


def unshare(rowmap: RowMap, uses: dict[BankKey, list[Use]], grads: dict[int, dict[BankKey, torch.Tensor]],
            threshold: float) -> tuple[RowMap, dict[BankKey, list[int]]]:
    """The refine step. ``grads[member][bank]`` is the gradient of that member's loss with respect to
    the bank's coefficient rows (rows x K). Returns the new row map and, per changed bank, the old
    row each new row starts from."""
    new_rows: dict[BankKey, dict[Use, int]] = {}
    sources: dict[BankKey, list[int]] = {}
    for key, lst in uses.items():
        r = rowmap.rows[key]
        groups = {u: i for i, u in enumerate(lst)}
        queue: list[tuple[float, Use, Use]] = []
        checked: set[tuple[Use, Use]] = set()
        for i in lst:
            for j in lst:
                if i == j or r[i] != r[j] or (i, j) in checked or (j, i) in checked:
                    continue
                gi = grads[i[0]][key][r[i]].double()
                gj = grads[j[0]][key][r[j]].double()
                sim = float(F.cosine_similarity(gi, gj, dim=0))
                queue.append((sim, i, j))
                checked.add((i, j))
        if not checked:
            new_rows[key] = dict(r)
            continue
        priority_merge(threshold, groups, queue)
        order: dict[int, int] = {}
        mapping: dict[Use, int] = {}
        src: list[int] = []
        for u in lst:
            g = groups[u]
            if g not in order:
                order[g] = len(order)
                src.append(r[u])
            mapping[u] = order[g]
        # unchanged partition (same uses together as before): keep the rows (and their momenta)
        before = {frozenset(u for u in lst if r[u] == row) for row in set(r.values())}
        after = {frozenset(u for u in lst if mapping[u] == row) for row in set(mapping.values())}
        if before == after:
            new_rows[key] = dict(r)
        else:
            new_rows[key] = mapping
            sources[key] = src
    return RowMap(new_rows), sources
