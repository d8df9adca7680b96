"""Every module of the package imports on its own, first, in a fresh interpreter.

An import cycle only shows when its modules are imported in one particular order (CI once failed on
``npasbench.demo`` -> leaderboard -> records -> trainer -> records, which other tests had hidden by
importing the trainer first). One subprocess imports each module with every ``npasbench`` module
dropped from ``sys.modules`` beforehand, so each import starts the cycle from its own end.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import npasbench

SCRIPT = r"""
import importlib, sys, traceback
bad = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "npasbench" or m.startswith("npasbench.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception:
        bad.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\n".join(bad))
sys.exit(1 if bad else 0)
"""


def _modules() -> list[str]:
    names = ["npasbench"]
    for info in pkgutil.walk_packages(npasbench.__path__, "npasbench."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI when imported
        names.append(info.name)
    return names


def test_every_module_imports_first_in_a_fresh_interpreter():
    names = _modules()
    assert len(names) > 40 and "npasbench.demo" in names and "npasbench.records" in names
    p = subprocess.run([sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_no_import_cycle_at_import_time():
    """No two modules import each other at module level (``perf.structure``, also the figure of issue 14);
    the cycle finder does find a cycle when there is one."""
    from npasbench.perf.structure import cycles, import_graph, modules

    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    runtime, _ = import_graph(modules())
    assert "npasbench.records" in runtime and "npasbench.trainer.record" in runtime
    assert "npasbench.records" in runtime["npasbench.trainer.record"]  # edges are read
    assert cycles(runtime) == []
