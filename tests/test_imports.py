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



def test_npas_started_above_a_checkout_says_why_python_imports_fail(tmp_path):
    """A checkout named `npasbench`, Python started in the folder that holds it: Python takes the checkout folder for
    a namespace package `npasbench` (an editable install serves the submodules, so `npas` itself works), and
    `from npasbench import create_model` fails with "unknown location". `npas` says so, and what to do; the README's
    troubleshooting quotes the error."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "npasbench").symlink_to(root, target_is_directory=True)
    probe = subprocess.run([sys.executable, "-c", "import npasbench; print(npasbench.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    if probe.stdout.strip() != "None":  # a regular install wins over the folder: nothing is shadowed here
        assert probe.returncode == 0 and probe.stdout.strip().endswith("__init__.py")
        return
    r = subprocess.run([sys.executable, "-m", "npasbench.cli", "archs"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "wrn-28-10" in r.stdout
    assert f"npas: note: Python takes the folder {tmp_path / 'npasbench'} for the package npasbench" in r.stderr
    assert "Start Python in another folder" in r.stderr
    r = subprocess.run([sys.executable, "-c", "from npasbench import create_model"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    error = r.stderr.strip().splitlines()[-1]
    assert error == "ImportError: cannot import name 'create_model' from 'npasbench' (unknown location)"
    assert error.split(": ", 1)[1] in (root / "README.md").read_text()
    r = subprocess.run([sys.executable, "-m", "npasbench.cli", "archs"], cwd=tmp_path / "npasbench",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "note:" not in r.stderr
