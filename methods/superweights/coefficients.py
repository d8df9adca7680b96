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
import torch.nn as nn
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


def initial_coefficients(plan: SWPlan, rowmap: RowMap, key: BankKey, width: int) -> torch.Tensor:
    """Initial values of bank ``key``'s coefficient rows (``rowmap.count(key)`` x ``width``), drawn as the
    official ``ParameterBank.set_layer_coeff`` draws them.

    The official code gives every member network its own ``ParameterBank`` for the bank, which draws
    one ``orthogonal_`` matrix of shape (that member's layers reading the bank, width) and offers its
    i-th layer row i; a layer that reuses a combiner created before (shared coefficients) takes that
    combiner's values instead, so its own row goes unused. Here a table row takes the row of the first
    use pointing at it (members in order, layers in order) from that use's member's matrix. Hence:

    - ``bank`` (one row shared by the whole bank): row 0 of member 0's (readers x K) matrix. With more
      readers than templates that matrix has orthonormal *columns*, so the row's norm is below 1
      (E|row|^2 = K / readers); drawing ``orthogonal_`` of shape (1, K) instead would give a unit vector.
    - ``own``: use i of member m gets row i of member m's matrix (not one matrix over all members' uses).
    - ``matched``: member 0's rows as ``own``; another member's matched use shares the row it joined,
      an unmatched one gets its row from its own member's matrix.

    Every member's matrix is drawn, used or not, so each bank consumes the random stream exactly as
    the official one does (one normal block of readers x width per member); only the order across
    banks differs (the official visits banks in order of first use, member by member).
    """
    r = rowmap.rows[key]
    uses = bank_uses(plan)[key]
    out = torch.zeros(rowmap.count(key), width)
    filled: set[int] = set()
    for m in sorted({m for m, _ in uses}):
        readers = [layer for mm, layer in uses if mm == m]
        draw = nn.init.orthogonal_(torch.empty(len(readers), width))
        for i, layer in enumerate(readers):
            row = r[(m, layer)]
            if row not in filled:
                filled.add(row)
                out[row] = draw[i]
    if len(filled) != out.shape[0]:  # pragma: no cover - initial_rows numbers the rows of a bank's uses 0..n-1
        raise ValueError(f"bank {key}: rows {sorted(set(range(out.shape[0])) - filled)} have no use")
    return out


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
