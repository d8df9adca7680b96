"""Mapping weight layers to SSN parameter groups, for any architecture.

- ``single``: one group (official ``param_groups 1``);
- ``type``: one group per layer type, conv and linear (official ``param_groups 0``);
- ``shape``: one group per (type, shape) (official ``param_groups -1``);
- ``manual``: the official hand-designed rule, generalised from its WRN-28 and ResNet-50 lists:
  stem layers and every layer of a stage's first block get their own group; the later (repeated)
  blocks of a stage share one group per layer shape; the classifier has its own group;
- ``random``: seeded; every one of the G groups is used (official: G layers get ids 0..G-1, the
  rest uniform draws, then a shuffle);
- ``learned``: labels from the search phase's k-means (see ``search.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from npasbench.errors import ConfigError
from npasbench.models.layers import LayerSpec


def _shape_key(s: LayerSpec) -> str:
    return " ".join(str(d) for d in s.shape)


def auto_groups(specs: Sequence[LayerSpec], by: str) -> list[int]:
    """Official auto-grouping: by layer type (``type``) or by (type, shape) (``shape``)."""
    table: "OrderedDict[str, OrderedDict[str, list[int]]]" = OrderedDict()
    for i, s in enumerate(specs):
        kind = "SConv2d" if s.kind == "conv" else "SLinear"
        table.setdefault(kind, OrderedDict()).setdefault(_shape_key(s), []).append(i)
    out = [0] * len(specs)
    gid = 0
    for shapes in table.values():
        for ids in shapes.values():
            for i in ids:
                out[i] = gid
            if by == "shape":
                gid += 1
        if by == "type":
            gid += 1
    return out


def manual_groups(specs: Sequence[LayerSpec]) -> list[int]:
    out: list[int] = []
    keys: dict[tuple, int] = {}
    for s in specs:
        if s.role in ("stem", "head") or s.block <= 0:
            key: tuple = ("own", s.index)
        else:
            key = ("repeat", s.stage, s.shape)
        if key not in keys:
            keys[key] = len(keys)
        out.append(keys[key])
    return out


def random_groups(n_layers: int, n_groups: int, seed: int) -> list[int]:
    if n_groups > n_layers:
        raise ConfigError(f"method.options.param_groups: {n_groups} groups for only {n_layers} weight layers.")
    rng = np.random.RandomState(seed)
    groups = list(rng.randint(n_groups, size=n_layers - n_groups)) + list(range(n_groups))
    rng.shuffle(groups)
    return [int(g) for g in groups]


def normalise(labels: Sequence[int]) -> list[int]:
    """Relabel to 0..G-1 in order of first appearance (a stable, comparable form)."""
    mapping: dict[int, int] = {}
    return [mapping.setdefault(int(l), len(mapping)) for l in labels]
