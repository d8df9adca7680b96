"""A SuperWeight member network: composes every shared layer's weight from the banks, then runs.

Per forward (``produce``), for every bank the member reads: one ``index_select`` of its uses'
coefficient rows and one matmul with the bank's templates give all of the member's pieces from
that bank at once (``avg``: the templates' mean). Each layer's weight is then its level-0 piece
extended level by level with the L-shaped pieces (``compose``), exactly as the official
``SModule.get_params``:

- one piece (new output rows only): ``cat(w[:, :in_new], rows, dim=0)``;
- two pieces (new input columns for the kept rows, then new rows): ``cat(cat(w, cols, 1), rows, 0)``;
  when the level has fewer rows than the previous one, rows are cut first: ``cat(w[:rows], cols, 1)``.

Caching in evaluation (weights composed once until a parameter changes) is ``GeneratingNet``'s.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from npasbench.models.generated import GeneratedWeight, GeneratingNet

from .coefficients import RowMap
from .modules import CoefficientTable, Projection, TemplateBank
from .plan import Level, SWPlan


def compose(pieces: list[torch.Tensor], levels: list[Level]) -> torch.Tensor:
    """A layer's weight from its flat pieces of levels 0..len(pieces)-1."""
    w = pieces[0].view(levels[0].shape)
    for flat, lv in zip(pieces[1:], levels[1:]):
        rows = lv.out_piece[0]
        if lv.in_piece is None:
            w = torch.cat((w[:, : lv.out_piece[1]], flat.view(lv.out_piece)), 0)
            continue
        n_in = math.prod(lv.in_piece)
        if rows > 0:  # split, not two slices: one gradient buffer for the piece, not two zero-filled ones
            cols, new_rows = flat.split([n_in, flat.numel() - n_in])
            w = torch.cat((torch.cat((w, cols.view(lv.in_piece)), 1), new_rows.view(lv.out_piece)), 0)
            continue
        cols = flat[:n_in].view(lv.in_piece)
        if rows < 0:
            w = torch.cat((w[:rows], cols), 1)
        else:
            w = torch.cat((w, cols), 1)
    return w


class SWNet(GeneratingNet):
    """One member: its backbone, the banks it reads and the providers of its shared layers."""

    def __init__(self, backbone: nn.Module, member: int, plan: SWPlan, banks: dict[str, TemplateBank],
                 tables: dict[str, CoefficientTable], projections: dict[str, Projection],
                 providers: list[GeneratedWeight], share_type: str, rowmap: RowMap) -> None:
        uses = plan.uses[member]
        keys = sorted({(u.cluster, w) for u in uses for w in range(u.levels)})
        names = [bank_name(k) for k in keys]
        sources = [p for n in names for mod in (banks[n], tables.get(n), projections.get(f"{n}_m{member}"))
                   if mod is not None for p in mod.parameters()]
        super().__init__(backbone, sources)
        self.member = member
        self.share_type = share_type
        object.__setattr__(self, "_banks", [banks[n] for n in names])  # live in the model's `shared`
        object.__setattr__(self, "_tables", [tables.get(n) for n in names])
        object.__setattr__(self, "_projections", [projections.get(f"{n}_m{member}") for n in names])  # this member's
        object.__setattr__(self, "_providers", providers)
        self.bank_keys = keys
        # per bank: this member's layers reading it, in layer order; per layer: (bank slot, row slot)
        self._readers: list[list[int]] = [[u.layer for u in uses if u.levels > w and u.cluster == c] for c, w in keys]
        slot = {k: i for i, k in enumerate(keys)}
        self._layer_parts: list[list[tuple[int, int]]] = []
        self._layer_levels: list[list[Level]] = []
        for u in uses:
            parts = [(slot[(u.cluster, w)], self._readers[slot[(u.cluster, w)]].index(u.layer)) for w in range(u.levels)]
            self._layer_parts.append(parts)
            self._layer_levels.append(plan.levels[u.cluster][: u.levels])
        for i in range(len(keys)):
            self.register_buffer(f"rows{i}", torch.zeros(len(self._readers[i]), dtype=torch.long), persistent=False)
        self.set_rows(rowmap)
        # search phase: called with (layer, composed weight) when set
        self.weight_hook: Callable[[int, torch.Tensor], None] | None = None

    def refresh_sources(self) -> None:
        """Re-read the parameters generation depends on (a table's ``rows`` is replaced at unsharing)."""
        self.set_sources(p for parts in zip(self._banks, self._tables, self._projections) for mod in parts
                         if mod is not None for p in mod.parameters())

    def set_rows(self, rowmap: RowMap) -> None:
        """Point this member's uses at their coefficient rows (after a build, an unsharing, a resume)."""
        for i, key in enumerate(self.bank_keys):
            idx = rowmap.row_tensor(key, [(self.member, l) for l in self._readers[i]])
            buf = getattr(self, f"rows{i}")
            setattr(self, f"rows{i}", idx.to(buf.device))
        self.invalidate()

    def bank_pieces(self) -> list[torch.Tensor]:
        out = []
        for i, bank in enumerate(self._banks):
            t = bank.templates  # (T, P)
            n = len(self._readers[i])
            if self.share_type == "avg":
                out.append(t.mean(0, keepdim=True).expand(n, -1))
                continue
            coef = self._tables[i].rows.index_select(0, getattr(self, f"rows{i}"))  # (n, T) or (n, emb)
            if self.share_type == "emb":
                coef = self._projections[i](coef)
            out.append(coef @ t)  # (n, P): all of this member's pieces from the bank
        return out

    def produce(self) -> None:
        # unbind, not pieces[b][r]: indexing a row back-propagates a zero-filled (n, P) buffer per row,
        # which on a ViT (48 linears per member) was most of the composition's time
        pieces = [p.unbind(0) for p in self.bank_pieces()]
        hook = self.weight_hook
        for li, (parts, levels, provider) in enumerate(zip(self._layer_parts, self._layer_levels, self._providers)):
            w = compose([pieces[b][r] for b, r in parts], levels)
            if hook is not None:
                hook(li, w)
            provider.current = w


def bank_name(key: tuple[int, int]) -> str:
    return f"c{key[0]}_l{key[1]}"
