"""``make_executor``: the executor that ``npas grid run --executor NAME`` (and ``npas demo``) means.

One place that knows every executor (executors.py: local, debug; slurm_executor.py: slurm), so that the
runner depends on the protocol only and no executor module imports another's.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .executors import DebugExecutor, Executor, LocalExecutor
from .spec import Resources

EXECUTORS = "local (processes, at most N at a time), debug (in-process) or slurm (one SLURM job per task)"


def make_executor(name: str, results: Path, parallel: int = 0, resources: Resources | None = None,
                  grid_name: str = "grid") -> Executor:
    """The executor named ``name`` (``--executor``); ``resources``: the spec's, for the SLURM jobs' parameters."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 0:
        raise ConfigError(f"--parallel / resources.max_parallel: runs at once must be >= 1 (0 = one per core or GPU), "
                          f"got {parallel!r}.")
    if name == "local":
        return LocalExecutor(results, parallel)
    if name == "debug":
        return DebugExecutor(results)
    if name == "slurm":
        from .slurm_executor import SlurmExecutor  # imports submitit: only when asked for

        return SlurmExecutor(results, parallel, resources or Resources(), grid_name)
    raise ConfigError(f"--executor: {name!r} is not an executor here; use {EXECUTORS}. To submit the grid to SLURM "
                      "without a runner waiting for it: npas grid submit SPEC.")
