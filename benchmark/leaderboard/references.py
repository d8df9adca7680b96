"""Reference rows: published or separately measured numbers shown beside ours, with the difference.

A TOML file of ``[[reference]]`` tables::

    [[reference]]
    dataset = "cifar100"          # as in the leaderboard's sections
    arch = "wrn-16-1"
    method = "unshared"
    variant = ""                  # optional: the options that differ from the defaults ("" = defaults)
    budget = "none"               # "none" or the integer budget of the cell
    epochs = 3                    # optional: only cells trained this long
    top1 = 26.03
    source = "official BryanPlummer/SSN 4bd5d5c, measured here: python -m npasbench.parity.harness"
    verified = true               # true only if checked against the source itself

Nothing is invented: every row needs its source, and an unverified one is shown as unverified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .aggregate import Cell

REQUIRED = ("dataset", "arch", "method", "budget", "top1", "source", "verified")
OPTIONAL = ("variant", "epochs", "top5", "note")


@dataclass(frozen=True)
class Reference:
    dataset: str
    arch: str
    method: str
    variant: str
    budget: int | None
    epochs: int | None
    top1: float
    source: str
    verified: bool
    note: str = ""

    def matches(self, cell: Cell) -> bool:
        k = cell.key
        return (k["dataset"], k["arch"], k["method"], k["variant"], k["budget"]) == (
            self.dataset, self.arch, self.method, self.variant, self.budget) and k["entity"] in ("model", "ensemble") \
            and (self.epochs is None or k["epochs"] == self.epochs)


def load_references(path: str | Path) -> list[Reference]:
    path = Path(path)
    from ..reading import read_toml_text

    tree, _ = read_toml_text(path, "--references")
    entries = tree.get("reference")
    if not isinstance(entries, list) or set(tree) - {"reference"}:
        raise ConfigError(f"--references: {path} must hold [[reference]] tables only")
    out = []
    for i, e in enumerate(entries):
        where = f"--references: {path}, [[reference]] #{i + 1}"
        missing = [k for k in REQUIRED if k not in e]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (every reference needs its source and whether "
                              "it was verified against it)")
        unknown = sorted(set(e) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {', '.join(REQUIRED + OPTIONAL)}")
        if not isinstance(e["verified"], bool):
            raise ConfigError(f"{where}: verified must be true or false")
        if not isinstance(e["top1"], (int, float)) or isinstance(e["top1"], bool):
            raise ConfigError(f"{where}: top1 must be a number")
        if not str(e["source"]).strip():
            raise ConfigError(f"{where}: source is empty; say where the number comes from")
        budget = e["budget"]
        if budget == "none":
            budget = None
        elif not isinstance(budget, int) or isinstance(budget, bool):
            raise ConfigError(f"{where}: budget must be \"none\" or an integer parameter count")
        out.append(Reference(str(e["dataset"]), str(e["arch"]), str(e["method"]), str(e.get("variant", "")),
                             budget, e.get("epochs"), float(e["top1"]), str(e["source"]), e["verified"],
                             str(e.get("note", ""))))
    return out


def reference_rows(references: list[Reference], cells: list[Cell], dataset: str, arch: str) -> list[list[str]]:
    rows = []
    for ref in references:
        if (ref.dataset, ref.arch) != (dataset, arch):
            continue
        ours = [c for c in cells if ref.matches(c) and c.top1.mean is not None]
        mean = ours[0].top1 if ours else None
        value = mean.mean if mean is not None else None
        rows.append([ref.method, ref.variant or "(defaults)", "none" if ref.budget is None else f"{ref.budget:,}",
                     f"{ref.top1:.2f}", mean.text() if mean else "-",
                     f"{value - ref.top1:+.2f}" if value is not None else "-",
                     "yes" if ref.verified else "no (not checked against the source)", ref.source])
    return rows
