"""Benchmark grids: specs (spec.py) -> runs (expand.py) -> a manifest (manifest.py) -> tasks (task.py)
started by an executor (executors.py) under the runner (runner.py); states read from folders (state.py)."""

from .expand import GridRun, expand
from .runner import plan_grid, run_grid
from .spec import GridSpec, SpecError, load_spec

__all__ = ["GridRun", "GridSpec", "SpecError", "expand", "load_spec", "plan_grid", "run_grid"]
