"""SSN allocation plan: how many templates each layer gets and where they sit in its group's bank.

Pure arithmetic on layer shapes -- no tensors -- so it can be checked number by number against the
official code (BryanPlummer/SSN, ``models/param_bank.py``) and solved for a budget quickly. What it
reproduces, in the official order of operations:

1. budget split: with ``max_params > 0`` each group with several layers gets
   ``round(size_g / sum(size) * avail)`` bank entries, where ``size_g`` is the sum of its layers'
   sizes and ``avail`` is ``max_params`` minus the weights of singleton groups (which become plain
   layers; their biases are *not* subtracted -- the official code leaves them outside the budget);
   with ``max_params == 0`` every bank is as large as its largest layer;
2. templates per layer: ``K = min(max(1, bank // layer size), bank_size)``;
3. upsampling of layers larger than their bank: ``inter`` shrinks both channel dimensions by
   p = 0.95, 0.90, ... until ``K`` shrunken templates fit, and interpolates back (bilinearly, on the
   weight viewed as out x (in*kh*kw)); ``repeat``/``mask``/``wavg`` read the whole bank once and
   extend it by ``upsample_mult = ceil(size / bank) - 1`` copies;
4. placement: layers are visited by shape, most common shape first; layers needing the same number
   of bank entries take consecutive blocks of ``K`` templates, wrapping to the bank's start when a
   block would run past its end (the ``_slide`` variants of auto-grouping wrap after ``K`` blocks).

Python's ``round`` (banker's rounding) and the float arithmetic of ``p -= 0.05`` are kept as the
official code has them, so shapes match exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from npasbench.models.layers import LayerSpec

SHARE_TYPES = ("wavg", "emb", "avg")
UPSAMPLE_TYPES = ("inter", "repeat", "mask", "wavg")


@dataclass
class LayerPlan:
    index: int  # weight-layer index within the network
    shape: tuple[int, ...]
    kind: str
    group: int
    templates: int = 1  # K
    start: int = 0  # block [start, end) in the group's bank
    end: int = 0
    needs_resize: bool = False
    in_shape: tuple[int, ...] | None = None  # shrunken template shape (inter / learned groups)
    upsample_mult: int = 0  # repeat / mask / wavg upsampling: extra copies of the bank
    coef_row: int = -1  # row in the group's coefficient table for this K (-1: no coefficients)
    unused_tail: int = 0  # entries at the block's end that upsampling windows leave out

    @property
    def read_end(self) -> int:
        """End of the bank entries this layer's weight actually depends on."""
        if self.in_shape is not None:
            return min(self.end, self.start + self.block_params)
        return self.end - self.unused_tail

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def template_numel(self) -> int:
        return math.prod(self.in_shape) if self.in_shape is not None else self.numel

    @property
    def block_params(self) -> int:
        """Bank entries the layer's block spans (the official ``params_per_layer``)."""
        return self.templates * self.template_numel


@dataclass
class GroupPlan:
    id: int
    layers: list[int]  # weight-layer indices
    singleton: bool
    bank: int = 0  # bank entries (0 for singletons)
    slide: bool = False
    coef_counts: dict[int, int] = field(default_factory=dict)  # K -> number of layers with K templates (K >= 2)


@dataclass
class SSNPlan:
    groups: list[GroupPlan]
    layers: list[LayerPlan]  # by weight-layer index
    max_params: int
    learn_groups: bool = False

    def bank_total(self) -> int:
        return sum(g.bank for g in self.groups if not g.singleton)

    def unread_bank_entries(self) -> dict[int, int]:
        """Bank entries no layer's block covers, per group (dead storage)."""
        out = {}
        for g in self.groups:
            if g.singleton:
                continue
            covered = sorted((self.layers[i].start, self.layers[i].read_end) for i in g.layers)
            read, cur = 0, 0
            for s, e in covered:
                s = max(s, cur)
                if e > s:
                    read += e - s
                    cur = e
            out[g.id] = g.bank - read
        return out


def _shrink_inter(shape: Sequence[int], bank: int, k: int) -> tuple[int, ...]:
    """The official 'inter' shrink: p = 0.95, 0.90, ... until K shrunken templates fit the bank."""
    rest = math.prod(shape[2:]) if len(shape) > 2 else 1
    p = 0.95
    while bank < round(shape[0] * p) * (round(shape[1] * p) * rest * k):
        p -= 0.05
        if p <= 0:
            raise ValueError(f"bank of {bank} entries cannot hold even a shrunken template of {tuple(shape)}")
    out = list(shape)
    out[0] = int(round(shape[0] * p))
    out[1] = int(round(shape[1] * p))
    if out[0] <= 0 or out[1] <= 0:
        raise ValueError(f"bank of {bank} entries shrinks {tuple(shape)} to nothing")
    return tuple(out)


def _learned_in_shape(shape: Sequence[int], bank: int, k: int) -> tuple[int, int]:
    """Search-phase template shape: every layer views the whole bank as K templates."""
    in_size = math.prod(shape[1:])
    ratio = in_size / float(shape[0])
    out_features = int(math.floor(math.sqrt((bank // k) // ratio)))
    if out_features <= 0:
        raise ValueError(f"search bank of {bank} entries is too small for a layer of shape {tuple(shape)}")
    return (out_features, bank // (out_features * k))


def split_budget(groups: list[GroupPlan], specs: Sequence[LayerSpec], max_params: int) -> None:
    """Official budget split across groups (in place)."""
    sizes = []
    avail = max_params
    for g in groups:
        if g.singleton:
            avail -= specs[g.layers[0]].numel
            sizes.append(0)
        else:
            sizes.append(sum(specs[i].numel for i in g.layers))
    total = sum(sizes)
    if avail <= 0:
        raise ValueError(f"max_params={max_params:,} does not even cover the {max_params - avail:,} weights of the "
                         "singleton groups (plain layers)")
    if total <= 0:
        raise ValueError("no group has more than one layer: nothing to share")
    for g, size in zip(groups, sizes):
        if not g.singleton:
            share = int(round((size / total) * avail))  # np.round(...).astype(int32) == banker's round
            g.bank = share


def plan_group(group: GroupPlan, specs: Sequence[LayerSpec], *, bank_size: int, share_type: str,
               upsample_type: str, learn_groups: bool = False, upsample_window: int = 1) -> list[LayerPlan]:
    """Templates, resizing and bank blocks for the layers of one (non-singleton) group."""
    layer_specs = [specs[i] for i in group.layers]
    if learn_groups:
        k = 4
        plans = []
        for i, s in zip(group.layers, layer_specs):
            lp = LayerPlan(i, tuple(s.shape), s.kind, group.id, templates=k, start=0,
                           end=group.bank - group.bank % k, needs_resize=True,
                           in_shape=_learned_in_shape(s.shape, group.bank, k))
            plans.append(lp)
        _coefficient_rows(group, plans, share_type)
        return plans

    if group.bank <= 0:  # official max_params == 0: the bank is as large as the largest layer
        group.bank = max(s.numel for s in layer_specs)
    bank = group.bank
    plans = []
    for i, s in zip(group.layers, layer_specs):
        k = min(max(1, bank // s.numel), bank_size)
        plans.append(LayerPlan(i, tuple(s.shape), s.kind, group.id, templates=k))

    def resize() -> None:
        for lp in plans:
            if lp.numel * lp.templates > bank:
                lp.needs_resize = True
                if upsample_type == "inter":
                    lp.in_shape = _shrink_inter(lp.shape, bank, lp.templates)
                else:
                    lp.upsample_mult = int(math.ceil(lp.numel / float(bank))) - 1

    if share_type in ("wavg", "emb"):  # official: the combiners (and their resizing) exist before placement
        resize()
        _coefficient_rows(group, plans, share_type)
        _place_blocks(plans, bank, slide=group.slide)
    else:  # official 'avg' has no combiners: blocks are placed for unresized layers; we resize after
        _place_blocks(plans, bank, slide=group.slide)
        resize()
    window = 2 if upsample_type == "wavg" else 9 * upsample_window
    for lp in plans:
        if lp.needs_resize and lp.in_shape is None:
            lp.unused_tail = (lp.end - lp.start) % window
    return plans


def _coefficient_rows(group: GroupPlan, plans: list[LayerPlan], share_type: str) -> None:
    counts: dict[int, int] = {}
    for lp in plans:  # rows in the group's layer order, one table per K (the official orthogonal init)
        if lp.templates >= 2 and share_type in ("wavg", "emb"):
            lp.coef_row = counts.get(lp.templates, 0)
            counts[lp.templates] = lp.coef_row + 1
    group.coef_counts = counts


def _place_blocks(plans: list[LayerPlan], bank: int, slide: bool) -> None:
    shapes = [" ".join(str(d) for d in lp.shape) for lp in plans]
    sets: dict[int, dict[str, int]] = {}
    global_start = 0
    for shape, _ in Counter(shapes).most_common():
        for lp in (p for p, s in zip(plans, shapes) if s == shape):
            lp_params, k = lp.block_params, lp.templates
            if lp_params not in sets:
                can_start = int(math.ceil(global_start / float(lp_params)))
                if can_start >= k:
                    global_start = 0
                    can_start = 0
                else:
                    global_start += lp_params
                sets[lp_params] = {"num_can": k, "can": can_start}
            entry = sets[lp_params]
            start = entry["can"] * lp_params
            end = start + lp_params
            if end > bank:
                entry["can"] = 0
                start = 0
                end = min(lp_params, bank)
            entry["can"] += 1
            if slide and entry["can"] == entry["num_can"]:
                entry["can"] = 0
            lp.start, lp.end = start, end


def make_plan(specs: Sequence[LayerSpec], assignment: Sequence[int], *, max_params: int, bank_size: int,
              share_type: str, upsample_type: str, slide: bool = False, learn_groups: bool = False,
              upsample_window: int = 1) -> SSNPlan:
    """The whole plan for one network: ``assignment[i]`` is the group of weight layer ``i``."""
    if len(assignment) != len(specs):
        raise ValueError(f"group assignment has {len(assignment)} entries for {len(specs)} weight layers")
    ids = sorted(set(assignment))
    if ids != list(range(len(ids))):
        raise ValueError(f"group ids must be 0..G-1 with every group used, got {sorted(set(assignment))}")
    groups = [GroupPlan(g, [i for i, a in enumerate(assignment) if a == g], singleton=False, slide=slide) for g in ids]
    for g in groups:
        g.singleton = len(g.layers) == 1 and not learn_groups
    if max_params > 0:
        if learn_groups:
            for g in groups:
                g.bank = max_params
        else:
            split_budget(groups, specs, max_params)
    layers: list[LayerPlan | None] = [None] * len(specs)
    for g in groups:
        if g.singleton:
            i = g.layers[0]
            layers[i] = LayerPlan(i, tuple(specs[i].shape), specs[i].kind, g.id)
            continue
        if g.bank <= 0 and max_params > 0:
            raise ValueError(f"group {g.id} gets no bank entries from max_params={max_params}")
        for lp in plan_group(g, specs, bank_size=bank_size, share_type=share_type, upsample_type=upsample_type,
                             learn_groups=learn_groups, upsample_window=upsample_window):
            layers[lp.index] = lp
    return SSNPlan(groups, [lp for lp in layers if lp is not None], max_params, learn_groups)


def spread_blocks(plan: SSNPlan) -> None:
    """Opt-in fix for dead bank regions: layers of the same block size get starts spread evenly
    over the whole bank (in template units) instead of restarting at 0 when blocks run out."""
    for g in plan.groups:
        if g.singleton:
            continue
        by_size: dict[tuple[int, int], list[LayerPlan]] = {}
        for i in g.layers:
            lp = plan.layers[i]
            if lp.needs_resize and lp.in_shape is None:
                continue
            by_size.setdefault((lp.template_numel, lp.templates), []).append(lp)
        for (tn, k), lps in by_size.items():
            size = tn * k
            slots = g.bank // tn
            last = max(slots - k, 0)
            for j, lp in enumerate(lps):
                first = round(j * last / (len(lps) - 1)) if len(lps) > 1 else 0
                lp.start, lp.end = first * tn, first * tn + size
