"""Record the official code's step trace from our initial weights, for a CI test without the official code.

    python -m npasbench.parity.trace --ssn /path/to/SSN [--superweights /path/to/SuperWeights] \
        [--steps 20] [--out tests/data/parity_trace.json]

For each cell: build our model at seed 0, copy its weights into the official model
(``transfer(..., "to_official")``), run ``--steps`` SGD steps of the official model on the seeded fixed
batches (``steps.fixed_batches``) in float64, and store the losses and the per-step sum of |generated
weights|. ``tests/test_parity_trace.py`` replays the same steps on our model alone and requires the
same numbers: the official learning dynamics, guarded in CI. float64, because in float32 two correct
implementations part at ~1e-7 (a different but equally exact order of operations) and training
amplifies that; in float64 the measured agreement is ~1e-15.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_json
from .official import checkout_commit, float64
from .steps import Trace, fixed_batches, run_official, run_ours

STEPS, BATCH = 12, 16

CELLS: dict[str, dict[str, Any]] = {
    "plain-wrn-16-1": {"kind": "ssn", "share_type": "none", "max_params": 0},
    "ssn-wavg-inter-50k": {"kind": "ssn", "share_type": "wavg", "max_params": 50_000},
    "superweights-4bins-100k": {"kind": "superweights", "max_params": 100_000},
}


def our_cell(cell: dict[str, Any]):
    """Our model of ``cell`` at seed 0, in float64 (a ``BuiltModel``)."""
    if cell["kind"] == "ssn":
        from .ssn_map import our_wrn

        built = our_wrn("wrn-16-1", 100, cell["share_type"], "inter", cell["max_params"], seed=0)
    else:
        from .superweights_map import our_built

        built = our_built(arch="wrn-16-1", num_classes=100, max_params=cell["max_params"], bins=4, seed=0)
    built.model.double()
    return built


def batches64(steps: int = STEPS):
    return [(x.double(), y) for x, y in fixed_batches(steps, BATCH)]


def replay_ours(name: str, steps: int = STEPS) -> Trace:
    with float64():
        return run_ours(our_cell(CELLS[name]), batches64(steps))



def record_official(name: str, repos: dict[str, str], steps: int = STEPS) -> dict[str, Any]:
    cell = CELLS[name]
    with float64():
        ours = our_cell(cell)
        if cell["kind"] == "ssn":
            from .ssn_map import official_weights, official_wrn, transfer

            official = official_wrn(repos["ssn"], "wrn-16-1", 100, cell["share_type"], "inter", cell["max_params"])
            official.double()
            transfer(official, ours.model, "to_official")
            weights = lambda: official_weights(official)  # noqa: E731
        else:
            from . import superweights_map as sw

            official = sw.official_model(repos["superweights"], "wrn-16-1", 100, cell["max_params"], 4)
            official.double()
            sw.transfer(ours.model, official, "ours_to_official", check=False)
            weights = lambda: sw_official_weights(official)  # noqa: E731
        trace = run_official(official, batches64(steps), weights)
    return {"losses": trace.losses, "weight_sums": trace.weight_sums}


def sw_official_weights(official) -> list[torch.Tensor]:
    """The official SWRN's composed conv weights (layer order), then its classifier's."""
    from .official import cpu_device_lookups, quiet
    from .superweights_map import _official_convs

    convs = _official_convs(official)
    with cpu_device_lookups(), quiet():
        return [convs[i][1].get_params() for i in sorted(convs)] + [official.classifier.weight]



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.parity.trace", description=__doc__.splitlines()[0])
    p.add_argument("--ssn", required=True)
    p.add_argument("--superweights", default=None)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", default="tests/data/parity_trace.json")
    a = p.parse_args(argv)
    repos = {"ssn": a.ssn, "superweights": a.superweights}
    cells = {}
    for name, cell in CELLS.items():
        if cell["kind"] == "superweights" and not a.superweights:
            continue
        cells[name] = {**cell, **record_official(name, repos, a.steps)}
        print(f"{name}: losses {cells[name]['losses'][0]:.6f} -> {cells[name]['losses'][-1]:.6f}", file=sys.stderr)
    write_json(Path(a.out), {
        "notes": "Official code's SGD trace (lr 0.1, Nesterov 0.9, wd 5e-4 except coefficients, float64) from our "
                 "seed-0 initial weights on steps.fixed_batches; written by python -m npasbench.parity.trace.",
        "official": {"ssn": a.ssn and checkout_commit(a.ssn), "superweights": a.superweights and checkout_commit(a.superweights)},
        "steps": a.steps, "batch": BATCH, "cells": cells})
    return 0


if __name__ == "__main__":
    sys.exit(main())
