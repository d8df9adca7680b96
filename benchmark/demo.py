"""``npas demo``: the README's main job, a small grid run by the local executor.

The grid is ``grid/demo.toml`` (shipped with the package): every registered method at two budgets on
the built-in synthetic data set (fixed-size methods at their natural size), a few minutes on a 2-core
CPU. It ends with the comparison table of the finished records (method, unique params, FLOPs,
top-1, time), printed and written to ``<out>/summary.md`` (plus ``summary.json``), and the spec's
notes on rows that need a reason. Being a grid, it is resumable: run it again and finished runs are
skipped. A run that did not finish is listed with its state, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_json, write_text
from .leaderboard import frame, to_markdown

if TYPE_CHECKING:
    from .grid.runner import GridOutcome

DEMO_SPEC = Path(__file__).resolve().parent / "grid" / "demo.toml"


@dataclass
class DemoResult:
    """The demo's summary text and the grid outcome behind it (``ok``: every run finished)."""

    text: str
    outcome: "GridOutcome"
    unfinished: list[str]

    @property
    def exit_code(self) -> int:
        """0 every run completed, 130 interrupted (rerun resumes), 1 some run failed, was blocked or diverged."""
        if self.outcome.interrupted:
            return 130
        return 0 if self.outcome.ok and not self.unfinished else 1


def run_demo(out: str | Path, *, spec: str | Path = DEMO_SPEC, executor: str = "local", parallel: int = 0,
             progress: bool = True) -> DemoResult:
    from .grid.runner import run_grid
    from .grid.state import finished_record

    out = Path(out)
    outcome = run_grid(spec, executor, parallel, out, progress=progress)
    plan = outcome.plan
    records, missing = [], []
    for run, row in zip(plan.runs, outcome.rows):
        rec = finished_record(out / run.folder, run.run_id)
        if rec is None:
            missing.append(f"- `{run.folder}`: {row['state']}" + (f" ({row['detail']})" if row["detail"] else ""))
        else:
            records.append(rec)
    df = frame(records)
    arch = ", ".join(plan.spec.archs)
    text = "# npas demo (synthetic data set: numbers are not CIFAR results)\n\n"
    text += (f"Grid `{plan.spec.name}` ({Path(spec).name}): {arch}, budgets {', '.join(map(str, plan.spec.budgets))} "
             f"of the unshared network's unique parameters (fixed-size methods at their natural size), "
             f"{plan.runs[0].config.train.epochs} epochs, seed {', '.join(map(str, plan.spec.seeds))}.\n\n")
    text += to_markdown(df) + "\n"
    if plan.spec.notes:
        text += "\nNotes:\n\n" + "\n".join(f"- `{m}`: {n}" for m, n in plan.spec.notes.items()) + "\n"
    if missing:
        text += "\nRuns that did not finish (rerun `npas demo` to resume them):\n\n" + "\n".join(missing) + "\n"
    write_text(out / "summary.md", text)
    write_json(out / "summary.json", {"rows": df.to_dict(orient="records"), "unfinished": missing,
                                      "interrupted": outcome.interrupted})
    return DemoResult(text, outcome, missing)
