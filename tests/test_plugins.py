"""Entry-point discovery: an outside package adds a method with no change to this repository; a
broken plugin is reported and skipped, never fatal to the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
from dataclasses import dataclass
from npasbench.contract import Method, MethodOptions, NPASModel
from npasbench.models.layers import OwnedWeight
from npasbench.models.registry import create_backbone


@dataclass(frozen=True)
class HalfOptions(MethodOptions):
    scale: float = 0.5


class HalfInit(Method):
    """An outside method: the plain network with down-scaled initial weights."""
    Options = HalfOptions
    summary = "outside plugin used by the test-suite"

    def build(self, request):
        net = create_backbone(request.arch, request.num_classes)
        for layer in net.modules():
            if hasattr(layer, "set_provider"):
                p = OwnedWeight(layer.spec, head=layer.spec.role == "head")
                p.weight.data.mul_(self.options.scale)
                layer.set_provider(p)
        return NPASModel([net], [request.arch])


class NotAMethod:
    pass
'''


def make_site(tmp: Path, entries: str) -> Path:
    site = tmp / "site"
    (site / "npas_outside").mkdir(parents=True)
    (site / "npas_outside" / "__init__.py").write_text(PLUGIN)
    info = site / "npas_outside-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: npas-outside\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entries))
    return site


def npas(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "npasbench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def site(tmp_path) -> Path:
    return make_site(tmp_path, """
        [npasbench.methods]
        half-init = npas_outside:HalfInit
        missing-module = npas_nowhere.module:Thing
        not-a-method = npas_outside:NotAMethod
        unshared = npas_outside:HalfInit
        """)


def test_outside_method_discovered_and_broken_ones_reported(site):
    res = npas(site, "methods", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    by_name = {m["name"]: m for m in data["methods"]}
    assert by_name["half-init"]["source"].startswith("package:npas-outside")
    assert by_name["half-init"]["options"][0]["name"] == "scale"
    assert by_name["unshared"]["source"] == "in-tree"  # the duplicate did not replace it
    broken = {b["name"]: b["error"] for b in data["broken"]}
    assert "ModuleNotFoundError" in broken["missing-module"]
    assert "not a npasbench Method" in broken["not-a-method"]
    assert "duplicate method name 'unshared'" in broken["unshared"]
    text = npas(site, "methods")
    assert "BROKEN plugin missing-module" in text.stderr and "half-init" in text.stdout


def test_outside_method_builds_and_trains(site, tmp_path):
    res = npas(site, "params", "--method", "half-init", "--arch", "wrn-10-1", "--dataset", "synthetic",
               "--opt", "scale=0.25", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["options"] == {"scale": 0.25} and rep["total"] > 0
    run = npas(site, "train", "--method", "half-init", "--arch", "wrn-10-1", "--dataset", "synthetic",
               "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress", "train.max_steps_per_epoch=2",
               "data.synthetic_train=256", "data.synthetic_test=128")
    assert run.returncode == 0, run.stderr
    rec = json.loads((tmp_path / "r" / "result.json").read_text())
    assert rec["method"]["source"].startswith("package:npas-outside") and rec["status"] == "completed"


def test_asking_for_a_broken_plugin_explains_why(site):
    res = npas(site, "params", "--method", "missing-module", "--arch", "wrn-10-1")
    assert res.returncode == 2
    assert "failed to load" in res.stderr and "npas_nowhere" in res.stderr


@pytest.fixture
def exiting_site(tmp_path) -> Path:
    site = make_site(tmp_path, """
        [npasbench.methods]
        half-init = npas_outside:HalfInit
        exits = npas_exits:Thing
        """)
    (site / "npas_exits.py").write_text("import sys\nsys.exit(3)\n")
    return site


def test_a_plugin_that_exits_at_import_is_reported_not_obeyed(exiting_site, tmp_path):
    """`sys.exit` in a plugin's import used to end `npas methods` / `params` / `grid plan` with status 3 and
    nothing printed; it is a broken plugin like any other, and the commands go on."""
    res = npas(exiting_site, "methods", "--json")
    assert res.returncode == 0, res.stderr
    broken = {b["name"]: b["error"] for b in json.loads(res.stdout)["broken"]}
    assert broken["exits"] == "called sys.exit(3) at import"
    res = npas(exiting_site, "params", "--method", "unshared", "--arch", "wrn-10-1", "--dataset", "synthetic")
    assert res.returncode == 0, res.stderr
    spec = tmp_path / "g.toml"
    spec.write_text(f'[grid]\nname = "star"\nresults = "{tmp_path / "res"}"\n[base]\n"train.epochs" = 1\n[axes]\n'
                    'archs = ["wrn-10-1"]\ndatasets = ["synthetic"]\nbudgets = ["full"]\nseeds = [0]\n'
                    '[[methods]]\nname = "*"\n')
    res = npas(exiting_site, "grid", "plan", str(spec))
    assert res.returncode == 0, res.stderr
    assert "half-init" in res.stdout  # the working plugin is in the grid
    assert ('warning: methods name = "*" left out the plugin \'exits\'' in res.stdout
            and "called sys.exit(3) at import" in res.stdout), res.stdout[-1500:]
