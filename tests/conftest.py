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
