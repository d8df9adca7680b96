"""What a SuperWeights ``build`` decided, kept on the model (``NPASModel.built``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .coefficients import RowMap
from .plan import SWPlan


@dataclass
class SWBuilt:
    """What ``build`` decided, kept on the model (``NPASModel.built``): the plan (banks, clusters, levels), the
    coefficient row map (changed by unsharing and restored on resume), the members' architectures, and the
    facts the record reports (where the clusters came from, coefficient mode, every unsharing event)."""

    plan: SWPlan
    rows: RowMap
    archs: list[str]
    info: dict[str, Any]
