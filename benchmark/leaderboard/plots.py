"""Plots beside the markdown (matplotlib, Agg): top-1 against unique parameters (log x), a line per
method and variant (named by the grid spec's labels) with the 95% interval as error bars, clipped to
[0, 100] (the figure says so when a bar was cut), the unshared network as a horizontal reference line,
and each series nudged sideways by a fixed small factor with its own marker, so that no point hides
another at equal parameter counts (the figure states the offset); one PNG per (data set, architecture).
For ensembles the anytime frontier (top-1 against inference GFLOPs of every member subset, the frontier
drawn as a line).

Deterministic bytes for the same records: fixed figure size and dpi, no metadata (PNG "Software"
dropped), sorted series; written atomically."""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

from ..atomic import atomic_open
from .aggregate import Cell, is_reference

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")
OFFSET = 0.008  # sideways nudge between series, a fraction of the parameter count (log axis: equal everywhere)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_plots(cells: list[Cell], folder: Path, stem: str) -> dict[tuple[str, str], Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[tuple[str, str], Path] = {}
    sections: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if c.key["entity"] in ("model", "ensemble") and c.top1.mean is not None:
            sections.setdefault((c.key["dataset"], c.key["arch"]), []).append(c)
    for (dataset, arch), group in sorted(sections.items()):
        series: dict[str, list[Cell]] = {}
        reference: Cell | None = None
        for c in group:
            if is_reference(c.key):
                reference = c
            series.setdefault(c.name, []).append(c)
        # the legend goes under the axes (long names wrapped): inside, it hid the points it names
        fig, ax = plt.subplots(figsize=(7.5, 4.8 + 0.22 * len(series)), dpi=100)
        clipped = False
        names = sorted(series)
        for i, name in enumerate(names):
            pts = sorted(series[name], key=lambda c: c.params)
            nudge = 1.0 + OFFSET * (i - (len(names) - 1) / 2)  # multiplicative: equal on the log axis
            ys = [c.top1.mean if c.top1.mean is not None else float("nan") for c in pts]
            lo, hi = [], []
            for c, y in zip(pts, ys):
                h = c.top1.half_width or 0.0
                lo.append(y - max(0.0, y - h))
                hi.append(min(100.0, y + h) - y)
                clipped = clipped or y - h < 0.0 or y + h > 100.0
            ax.errorbar([c.params * nudge for c in pts], ys, yerr=[lo, hi], marker=MARKERS[i % len(MARKERS)],
                        markersize=5, capsize=3, label=textwrap.fill(name, 90, subsequent_indent="  "))
        if reference is not None and reference.top1.mean is not None:
            ax.axhline(reference.top1.mean, color="0.35", linestyle="--", linewidth=1, zorder=0)
            ax.annotate(f"unshared {reference.top1.mean:.2f}", (0.01, reference.top1.mean), xycoords=("axes fraction", "data"),
                        fontsize=7, color="0.35", xytext=(0, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("unique trainable parameters")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"{dataset}, {arch}")
        ax.grid(True, which="both", alpha=0.3)
        note = (f"bars: 95% t-interval of the mean over seeds{', clipped to [0, 100]' if clipped else ''}; "
                f"series offset sideways by up to ±{OFFSET * (len(names) - 1) / 2 * 100:.1f}% of their parameters "
                "so that none hides another")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False, title=note,
                  title_fontsize=6)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
        plt.close(fig)
        path = folder / f"{stem}_{_slug(dataset)}_{_slug(arch)}.png"
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())
        out[(dataset, arch)] = path
    return out


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    _figure().close(fig)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return path


def write_anytime_plots(frontiers: dict[tuple, list[list[str]]], folder: Path, stem: str) -> dict[tuple, Path]:
    """One PNG per ensemble cell of ``build.anytime_frontiers`` (rows: subset, GFLOPs, top-1, on frontier)."""
    plt = _figure()
    out = {}
    for key, rows in sorted(frontiers.items()):
        pts = [(float(g), float(t), f == "yes", name) for name, g, t, f in rows if t != "-"]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="0.6", label="member subsets")
        front = [p for p in pts if p[2]]
        ax.plot([p[0] for p in front], [p[1] for p in front], marker="o", label="anytime frontier")
        for g, t, _, name in front:
            ax.annotate(name, (g, t), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("inference GFLOPs (one image)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"{key[2]} [{key[3]}]: {key[0]}, {key[1]}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out[key] = _save(fig, folder / f"{stem}_anytime_{_slug(key[0])}_{_slug(key[1])}_{_slug(key[2])}_"
                                       f"{_slug(key[3])}.png")
    return out
