"""Shared fixtures: small, fast run configs on the synthetic data set."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A suite started in the background of a non-interactive shell (`cmd &` without job control, as some CI wrappers
# do) inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler: the Ctrl-C tests would fail
# for the environment's sake (seen here). They test how the suite handles a Ctrl-C, so give the test process
# Python's usual handler; processes the tests start inherit the default disposition, not the ignore.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def cifar100_root() -> Path | None:
    """The real CIFAR-100 copy: $NPAS_CIFAR100_ROOT, else ../shared/data beside the repo."""
    env = os.environ.get("NPAS_CIFAR100_ROOT")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "cifar-100-python" / "train").is_file() or (cand / "train").is_file() and cand.name == "cifar-100-python":
            return cand
    return None


def small_grid_toml(name: str, epochs: int | str = "{epochs}") -> str:
    """A two-run grid spec (unshared WRN-10-1 on synthetic data, seeds 0 and 1, 4 steps an epoch) with a
    ``{results}`` placeholder (and ``{epochs}`` unless given) for ``str.format``: the grid tests' common case."""
    return f"""[grid]
name = "{name}"
results = "{{results}}"

[base]
"train.epochs" = {epochs}
"train.max_steps_per_epoch" = 4
"data.synthetic_train" = 512
"data.synthetic_test" = 128

[axes]
archs = ["wrn-10-1"]
datasets = ["synthetic"]
budgets = ["full"]
seeds = [0, 1]

[[methods]]
name = "unshared"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """Overrides for a seconds-long run: wrn-10-1, synthetic data subset, few steps."""
    return {
        "model.arch": "wrn-10-1",
        "data.name": "synthetic",
        "data.synthetic_train": 512,
        "data.synthetic_test": 256,
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.eval_batch_size": 128,
        "train.max_steps_per_epoch": 4,
        "optim.milestones_unit": "fraction",
        "optim.milestones": [0.5],
        "optim.gammas": [0.2],
        "run.out": str(tmp_path / "run"),
        "run.progress": False,
    }


# --float-perturb: shape-dependent rounding of float reductions in this process (tests/float_perturb.py says why).
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--float-perturb", action="store_true", default=False,
                     help="sum every float matmul/linear/conv2d reduction in two shape-dependent parts, so a test that "
                          "relies on bit-equal results of differently shaped operations fails here as on another CPU "
                          "(also: NPAS_FLOAT_PERTURB=1)")


def pytest_configure(config: pytest.Config) -> None:
    import float_perturb

    if float_perturb.requested(config.getoption("--float-perturb")):
        float_perturb.install()


def pytest_report_header(config: pytest.Config) -> str | None:
    import float_perturb

    return "float-perturb: on (shape-dependent reduction order)" if float_perturb.enabled() else None


@pytest.fixture
def float_perturbed():
    """Run the test body with shape-dependent float rounding (tests/float_perturb.py), restoring the original
    functions afterwards unless the whole session runs with --float-perturb."""
    import float_perturb

    already = float_perturb.enabled()
    float_perturb.install()
    try:
        yield
    finally:
        if not already:
            float_perturb.uninstall()
