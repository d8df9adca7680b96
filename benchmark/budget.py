"""Parameter budgets and their semantics.

A budget is a number of parameters plus a *mode* saying what the number limits:

- ``total`` (the suite-wide default): total unique trainable parameters of the whole model,
  shared storage counted once, every ensemble member included. The suite checks every built model
  against it and refuses an overrun (``BudgetError``) -- a method can never silently exceed it.
- a method's official knob (e.g. SSN's ``max_params``, the size of its parameter banks), offered by
  the method through ``Method.budget_modes`` so published numbers can be reproduced exactly. The
  resulting total is reported, not enforced, because that is what the official code does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import BudgetError

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}
_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgb]?)\s*$", re.IGNORECASE)


def parse_count(text: str | int | float, field: str = "budget") -> int:
    """``"36.5M"`` -> 36_500_000, ``"500k"`` -> 500_000, ``"1e6"`` -> 1_000_000, ``1234`` -> 1234."""
    if isinstance(text, bool):
        raise BudgetError(f"{field}: expected a parameter count such as 1000000, 1.5M or 500k, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _RE.match(str(text).replace("_", "").replace(",", ""))
        if not m:
            raise BudgetError(f"{field}: expected a parameter count such as 1000000, 1.5M or 500k, got {text!r}")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value <= 0 or value != value or value == float("inf"):
        raise BudgetError(f"{field}: a parameter budget must be a positive number, got {text!r}")
    return int(round(value))


NO_BUDGET = ("none", "full")


def is_no_budget(value: object, field: str = "budget") -> bool:
    """True for None, "none" and "full" (the method's natural size). An empty or blank string is an
    error, not "no budget": a budget lost to a shell variable must not silently train the full model."""
    if value is None:
        return True
    if isinstance(value, str):
        if not value.strip():
            raise BudgetError(f"{field}: empty value {value!r}; give a count (e.g. 1.5M, 500k, \"10%\") or "
                              "\"none\" for the method's natural size.")
        return value.strip().lower() in NO_BUDGET
    return False


@dataclass(frozen=True)
class Budget:
    params: int
    mode: str = "total"

    def __post_init__(self) -> None:
        if self.params <= 0:
            raise BudgetError(f"budget: must be positive, got {self.params}")

    @classmethod
    def parse(cls, value: str | int | None, mode: str = "total", field: str = "budget") -> "Budget | None":
        if value is None or is_no_budget(value, field):
            return None
        return cls(parse_count(value, field), mode)

    def to_dict(self) -> dict:
        return {"params": self.params, "mode": self.mode}

    def __str__(self) -> str:
        return f"{self.params:,} ({self.mode})"


def largest_fitting(lo: int, hi: int, fits: Callable[[int], bool]) -> int:
    """The largest ``x`` in ``(lo, hi]`` with ``fits(x)``, else ``lo``, by bisection: the one budget search of
    every method that sizes itself to a budget (reduced's ladder index, SSN's and SuperWeights' bank size).

    ``lo`` is a value known to fit, or a sentinel below the range (``first - 1``). On a monotone ``fits``
    (true up to a boundary, false beyond) this is the boundary. Where a method's total is not monotone in
    its knob (SSN's upsamplers, SuperWeights' greedy template allocation) the answer still fits: only
    ``lo`` or a probed ``x`` with ``fits(x)`` is ever returned."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
