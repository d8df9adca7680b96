"""Our models follow the official code's SGD trajectory step by step (no official code needed here).

``tests/data/parity_trace.json`` was recorded on the official code (``python -m npasbench.parity.trace``):
our seed-0 initial weights copied into the official model, 12 SGD steps (lr 0.1, Nesterov 0.9, weight
decay 5e-4 except coefficients) on seeded fixed batches, in float64, losses and sum |weights| per step.
Replaying the steps on our model alone must give the same numbers. A change to a model's forward, its
weight generation, its parameter roles (weight-decay exemptions) or its initialisation breaks this
test; re-record the trace only when the official behaviour is what changed on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npasbench.parity.trace import replay_ours

DATA = json.loads((Path(__file__).parent / "data" / "parity_trace.json").read_text())


@pytest.mark.parametrize("name", sorted(DATA["cells"]))
def test_steps_equal_the_official_trace(name):
    recorded = DATA["cells"][name]
    ours = replay_ours(name, DATA["steps"])
    assert len(ours.losses) == len(recorded["losses"]) == DATA["steps"]
    for step, (a, b) in enumerate(zip(ours.losses, recorded["losses"])):
        assert a == pytest.approx(b, rel=1e-9), f"step {step}: loss {a!r}, official {b!r}"
    for step, (a, b) in enumerate(zip(ours.weight_sums, recorded["weight_sums"])):
        assert a == pytest.approx(b, rel=1e-9), f"step {step}: sum|w| {a!r}, official {b!r}"


def test_the_trace_is_sensitive():
    """The check can fail: a model trained without its weight-decay exemptions leaves the trace."""
    from npasbench.parity import steps as steps_mod

    name = "ssn-wavg-inter-50k"
    original = steps_mod.build_optimizer
    steps_mod.build_optimizer = lambda model, cfg, exempt: original(model, cfg, frozenset())
    try:
        ours = replay_ours(name, 4)
    finally:
        steps_mod.build_optimizer = original
    diff = max(abs(a - b) / abs(b) for a, b in zip(ours.weight_sums, DATA["cells"][name]["weight_sums"][:4]))
    assert diff > 1e-6
