"""SuperWeight arithmetic: clusters, width levels, L-shaped pieces and template allocation.

Pure functions of the member networks' convolution shapes and the budget; no tensors. This is
where faithfulness to the official code (piotr-teterwak/SuperWeights, ``ParameterGroups``) lives,
and ``tests/test_superweights_official.py`` checks it number by number against that code.

Vocabulary (paper Sec. 3, official names in brackets):

- *member*: one network of the ensemble; member 0 is the deepest/widest ("teacher").
- *cluster* [group / bin]: a set of layers, across all members, that share SuperWeights. Initial
  clusters are depth bins per kernel size (``param_group_bins``; 1x1 and 3x3 kernels never share);
  the search phase may split them by gradient similarity (``search.py``).
- *level* [width]: within a cluster, every layer shape (of every member) is sorted by size; each
  change of shape along that order opens a level. Level 0 holds the cluster's smallest shape; level
  w holds the "L-shaped" difference between the shapes of levels w-1 and w: extra output channels
  (rows) and/or extra input channels (columns). A layer uses levels 0..its own; its weight is the
  level-0 piece extended by the later pieces.
- *bank* [ParameterBank]: one per (cluster, level); ``templates`` (T) vectors of the level's piece
  size. Each layer's piece is a learned mix of the bank's T templates (``wavg``), the mean (``avg``)
  or a mix from a learned embedding (``emb``).
- *allocation* [``_allocate_templates``]: one template per bank (the minimum), then templates
  are added cluster by cluster, level by level, first up to the number of layers reading the bank,
  then round robin, at most ``cap`` (8) per bank, while the budget allows.

Deliberate differences (documented in docs/methods.md): a budget below the one-template minimum is a
``BudgetError`` (the official code silently overruns it); equal-size shapes are ordered by a stable
sort (the official ``np.argsort`` is not guaranteed stable, so ties could depend on the machine);
the template cap follows ``bank_size`` (official: 8 whatever ``bank_size``; equal at the default 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn as nn

from npasbench.errors import BudgetError, ConfigError
from npasbench.models.layers import Conv, WeightedLayer

Shape = tuple[int, ...]


def kernel_key(shape: Shape) -> str:
    """The official kernel key: kernel dims joined by spaces ('1 1' sorts before '3 3')."""
    return " ".join(str(k) for k in shape[2:])


def depth_bins(members: list[list[Shape]], bins: int) -> list[list[int]]:
    """Initial clusters: ``bins`` depth bins split across kernel sizes, as the official
    ``_get_layers_per_bin`` (bin type 'depth', separate_kernels) + ``_get_layers_to_bin``.

    Each kernel size gets ``round(bins * n_k / depth)`` bins (at least one), sized on member 0;
    every member splits its layers of that kernel size into the same number of contiguous bins
    (first bins one layer larger when uneven). Returns a cluster id per layer per member.
    """
    if bins < 1:
        raise ConfigError(f"method.options.param_group_bins must be >= 1, got {bins}")
    teacher = members[0]
    keys = sorted({kernel_key(s) for s in teacher})
    depth0 = len(teacher)
    per_kernel = []
    for key in keys:
        n = sum(1 for s in teacher if kernel_key(s) == key)
        per_kernel.append(max(1, round(bins * n / depth0)))  # Python's round, as the official code
    out: list[list[int]] = []
    for m, shapes in enumerate(members):
        mkeys = sorted({kernel_key(s) for s in shapes})
        if not set(mkeys) <= set(keys):
            raise ConfigError(
                f"method.options.members: member {m} has kernel sizes {mkeys} that member 0 lacks ({keys}); "
                "member 0 must be the deepest/widest network"
            )
        labels = [-1] * len(shapes)
        offset = 0
        for key, nbins in zip(keys, per_kernel):
            ids = [i for i, s in enumerate(shapes) if kernel_key(s) == key]
            n = len(ids)
            if n >= nbins:
                sizes = [n // nbins] * nbins
                for k in range(n % nbins):
                    sizes[k] += 1
            else:
                sizes = [1] * n + [0] * (nbins - n)
            pos = 0
            for b, size in enumerate(sizes):
                for _ in range(size):
                    labels[ids[pos]] = offset + b
                    pos += 1
            offset += nbins
        out.append(labels)
    return out


@dataclass(frozen=True)
class Level:
    """One level of a cluster: the piece(s) a layer adds when it grows from ``prev`` to ``shape``."""

    cluster: int
    level: int
    shape: Shape  # the full layer shape reached at this level
    out_piece: Shape  # rows added (may have <= 0 rows: then rows are cut, see compose)
    in_piece: Shape | None  # columns added for the kept rows (None: no new input channels)
    numel: int  # entries of the bank's templates (the official "group size")

    @property
    def bank_key(self) -> tuple[int, int]:
        return (self.cluster, self.level)


def level_pieces(cluster: int, ordered: list[Shape]) -> list[Level]:
    """Levels of a cluster from its shapes in size order (consecutive equal shapes merged)."""
    distinct = [ordered[0]]
    for s in ordered[1:]:
        if s != distinct[-1]:
            distinct.append(s)
    levels = [Level(cluster, 0, distinct[0], distinct[0], None, math.prod(distinct[0]))]
    for w in range(1, len(distinct)):
        prev, cur = distinct[w - 1], distinct[w]
        k = cur[2:]
        out_piece = (cur[0] - prev[0], cur[1], *k)
        in_piece = None
        numel = math.prod(out_piece)
        if cur[1] > prev[1]:
            in_piece = (min(prev[0], cur[0]), cur[1] - prev[1], *k)
            numel = max(0, numel) + math.prod(in_piece)
        if numel <= 0:  # pragma: no cover - impossible for shapes sorted by size
            raise ValueError(f"cluster {cluster}: level {w} ({prev} -> {cur}) adds no parameters")
        levels.append(Level(cluster, w, cur, out_piece, in_piece, numel))
    return levels


@dataclass
class LayerUse:
    """A layer of a member: its cluster and the levels (banks) it composes its weight from."""

    member: int
    layer: int  # index among the member's shared layers (official layer_id)
    shape: Shape
    cluster: int
    position: int  # index of the layer in its cluster's member-local list (official layer_group_idx)
    levels: int  # number of levels used (0..levels-1)


@dataclass
class BankPlan:
    cluster: int
    level: int
    numel: int  # template size
    templates: int = 1
    readers: list[tuple[int, int]] = field(default_factory=list)  # (member, layer) in build order

    @property
    def size(self) -> int:
        return self.numel * self.templates

    @property
    def key(self) -> tuple[int, int]:
        return (self.cluster, self.level)


@dataclass
class SWPlan:
    """Everything the runtime needs: banks with their template counts and every layer's levels."""

    members: list[list[Shape]]
    clusters: list[list[int]]  # cluster id per layer per member
    levels: dict[int, list[Level]]  # cluster -> its levels
    banks: dict[tuple[int, int], BankPlan]  # (cluster, level) -> bank
    uses: list[list[LayerUse]]  # per member, per layer
    max_params: int
    minimum: int  # one template per bank
    allocation_log: list[tuple[int, int, int]] = field(default_factory=list)  # (cluster, level, templates)

    @property
    def bank_total(self) -> int:
        return sum(b.size for b in self.banks.values())

    def bank_order(self) -> list[tuple[int, int]]:
        """Banks in the official allocation order: by cluster, then level."""
        return sorted(self.banks)


def build_levels(members: list[list[Shape]], clusters: list[list[int]]) -> tuple[dict[int, list[Level]], list[list[LayerUse]]]:
    """The official ``_create_stack_groups`` ('groupslim'): per cluster, order all its layers of all
    members by size (stable), derive the levels, and give each layer the levels up to its shape."""
    levels: dict[int, list[Level]] = {}
    uses: list[list[LayerUse | None]] = [[None] * len(s) for s in members]
    ids = sorted({c for labels in clusters for c in labels})
    for c in ids:
        local = [[i for i, l in enumerate(labels) if l == c] for labels in clusters]
        layer_ids = sorted({i for lst in local for i in lst})
        entries = [(m, i) for i in layer_ids for m in range(len(members)) if i in local[m]]
        sizes = [math.prod(members[m][i]) for m, i in entries]
        order = sorted(range(len(entries)), key=lambda e: sizes[e])  # stable
        if len(members[entries[0][0]][entries[0][1]]) == 2:
            # a cluster of linear layers (the official code composes none): equal-size shapes are grouped by
            # shape in order of first appearance, so a transformer's fc1 (4d, d) and fc2 (d, 4d) are two levels,
            # not a new level at every block as a plain stable sort alternating between them would make
            first = {}
            for e in range(len(entries)):
                first.setdefault(members[entries[e][0]][entries[e][1]], e)
            order = sorted(range(len(entries)), key=lambda e: (sizes[e], first[members[entries[e][0]][entries[e][1]]]))
        ordered_shapes = [members[entries[e][0]][entries[e][1]] for e in order]
        lv = level_pieces(c, ordered_shapes)
        levels[c] = lv
        # level of each sorted position: number of shape changes up to it
        level_at, w = [0] * len(order), 0
        for p in range(1, len(order)):
            if ordered_shapes[p] != ordered_shapes[p - 1]:
                w += 1
            level_at[p] = w
        for p, e in enumerate(order):
            m, i = entries[e]
            uses[m][i] = LayerUse(m, i, members[m][i], c, local[m].index(i), level_at[p] + 1)
    for m, lst in enumerate(uses):
        for i, u in enumerate(lst):
            if u is None:  # pragma: no cover - every layer has a cluster
                raise ValueError(f"member {m} layer {i} has no cluster")
    return levels, uses  # type: ignore[return-value]


def allocate(banks: dict[tuple[int, int], BankPlan], max_params: int, cap: int) -> list[tuple[int, int, int]]:
    """The official ``_allocate_templates`` (min=0, cap): add templates while the budget allows.

    Pass 1: rounds ``cands`` = 1..cap-1; in each, every bank (cluster order, then level) read by
    more than ``cands`` layers gets one more template if it still fits (strictly). Pass 2: rounds
    1..cap-1 again; every bank below ``cap`` templates gets one more if it fits.
    """
    clusters = sorted({c for c, _ in banks})
    max_level = max(w for _, w in banks) + 1
    order = [(c, w) for c in clusters for w in range(max_level) if (c, w) in banks]
    excess = max_params - sum(b.numel for b in banks.values())
    log: list[tuple[int, int, int]] = []
    cands = 1
    while cands < cap and excess > 0:
        for key in order:
            b = banks[key]
            if len(b.readers) > cands and excess - b.numel > 0:
                b.templates += 1
                excess -= b.numel
                log.append((*key, b.templates))
        cands += 1
    if excess > 0:
        cands = 1
        while cands < cap and excess > 0:
            for key in order:
                b = banks[key]
                if excess - b.numel > 0 and b.templates < cap:
                    b.templates += 1
                    excess -= b.numel
                    log.append((*key, b.templates))
            cands += 1
    return log


def make_plan(members: list[list[Shape]], clusters: list[list[int]], max_params: int, cap: int = 8) -> SWPlan:
    """Levels, banks and templates for ``members`` clustered as ``clusters`` under ``max_params``
    (total size of all banks; 0 = one template per bank, the official ``max_params 0``)."""
    if len(members) != len(clusters) or any(len(a) != len(b) for a, b in zip(members, clusters)):
        raise ConfigError("superweights: one cluster id per shared layer of every member is needed")
    depths = [len(s) for s in members]
    if any(depths[i - 1] < depths[i] for i in range(1, len(depths))):
        raise ConfigError(
            f"method.options.members: members must be ordered by decreasing depth (the official code assumes "
            f"it); got {depths} shared layers. Put the deepest network first."
        )
    levels, uses = build_levels(members, clusters)
    banks: dict[tuple[int, int], BankPlan] = {}
    for m, lst in enumerate(uses):
        for u in lst:
            for w in range(u.levels):
                lv = levels[u.cluster][w]
                b = banks.setdefault(lv.bank_key, BankPlan(u.cluster, w, lv.numel))
                b.readers.append((m, u.layer))
    minimum = sum(b.numel for b in banks.values())
    log: list[tuple[int, int, int]] = []
    if max_params > 0:
        if max_params < minimum:
            raise BudgetError(
                f"budget: max_params={max_params:,} is below the SuperWeight minimum of {minimum:,} (one template "
                f"for each of the {len(banks)} banks of these members and clusters; the official code would "
                "silently overrun it). Raise the budget, use fewer/narrower members or fewer param_group_bins."
            )
        log = allocate(banks, max_params, cap)
    return SWPlan(members, clusters, levels, banks, uses, max_params, minimum, log)


def compose_shapes(levels: list[Level], used: int) -> Shape:
    """The shape a layer using the first ``used`` levels ends with (mirrors the runtime compose)."""
    shape = list(levels[0].shape)
    for lv in levels[1:used]:
        out_rows = lv.out_piece[0]
        if lv.in_piece is None:
            shape = [shape[0] + out_rows, lv.out_piece[1], *shape[2:]]
        elif out_rows > 0:
            shape = [shape[0] + out_rows, shape[1] + lv.in_piece[1], *shape[2:]]
        elif out_rows < 0:
            shape = [shape[0] + out_rows, shape[1] + lv.in_piece[1], *shape[2:]]
        else:
            shape = [shape[0], shape[1] + lv.in_piece[1], *shape[2:]]
    return tuple(shape)


def is_composed(layer: nn.Module) -> bool:
    """Whether SuperWeights composes this layer's weight from banks: every convolution (official ``SConv2d``)
    and every body linear layer (a transformer's qkv, proj, fc1, fc2, which the official code never had; they
    cluster apart from convolutions, their kernel key being empty). The classifier stays a plain per-member
    layer (official ``share_linear`` off)."""
    return isinstance(layer, Conv) or (isinstance(layer, WeightedLayer) and layer.spec.role != "head")


def shared_layers(net: nn.Module) -> list[WeightedLayer]:
    """The layers SuperWeights composes (``is_composed``), in reference order."""
    return sorted((m for m in net.modules() if isinstance(m, WeightedLayer) and is_composed(m)),
                  key=lambda layer: layer.spec.index)


def params_outside_banks(net: nn.Module) -> int:
    """A member's parameters outside the banks: norms, biases, embeddings and the classifier (weight and bias)."""
    n = sum(p.numel() for p in net.parameters())  # a fresh backbone holds only these (no provider yet)
    return n + sum(m.spec.numel for m in net.modules() if isinstance(m, WeightedLayer) and not is_composed(m))
