"""``npas demo``: the README's main job, runnable anywhere in a few minutes.

Every registered method trains briefly on the built-in synthetic data set at one budget; the
unshared network runs as the reference row at its natural size (it cannot shrink). The comparison
table (method, unique params, FLOPs, top-1, time) is printed and written to ``<out>/summary.md``
(plus ``summary.json``). A method that cannot represent the budget gets a row saying why -- it is
never skipped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import write_json, write_text
from .config import build_config
from .errors import NPASError
from .leaderboard import frame, to_markdown
from .plugins import METHODS
from .trainer import train

REFERENCE = "unshared"


def run_demo(out: str | Path, *, arch: str = "wrn-16-1", budget: str = "100k", epochs: int = 3,
             methods: list[str] | None = None, progress: bool = True, extra: dict[str, Any] | None = None) -> str:
    out = Path(out)
    names = methods or METHODS.names()
    records, failures = [], []
    for name in names:
        overrides = {
            "method.name": name, "model.arch": arch, "data.name": "synthetic",
            "train.epochs": epochs, "optim.milestones_unit": "fraction", "optim.milestones": [0.5, 0.75],
            "optim.gammas": [0.2, 0.2], "optim.lr": 0.05, "run.out": str(out / name), "run.progress": progress,
            "model.budget": None if name == REFERENCE else budget,
        }
        overrides.update({f"method.options.{k}": v for k, v in METHODS.get(name).demo_options.items()})
        overrides.update(extra or {})
        try:
            cfg = build_config({}, overrides)
            records.append(train(cfg).record)
        except NPASError as exc:
            failures.append({"method": name, "error": str(exc)})
    df = frame(records)
    text = "# npas demo (synthetic data set: numbers are not CIFAR results)\n\n"
    text += f"Architecture {arch}, budget {budget} unique parameters (the `{REFERENCE}` row is the full-size reference), "
    text += f"{epochs} epochs.\n\n" + to_markdown(df) + "\n"
    if failures:
        text += "\nMethods that could not run at this budget:\n\n" + "\n".join(
            f"- `{f['method']}`: {f['error']}" for f in failures) + "\n"
    write_text(out / "summary.md", text)
    write_json(out / "summary.json", {"rows": df.to_dict(orient="records"), "failures": failures})
    return text
