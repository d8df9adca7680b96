"""A run is completed only if its final weights and its evaluation are finite; records hold no NaN tokens."""

from __future__ import annotations

import json
import math

import pytest
import torch

from npasbench.atomic import dumps, write_json
from npasbench.baselines.unshared import Unshared
from npasbench.config import build_config
from npasbench.plugins import METHODS
from npasbench.trainer import EXIT_DIVERGED, train


def _strict(text: str):
    """json.loads that refuses NaN / Infinity, as most readers outside Python do."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


class _Poison(Unshared):
    """At the end of the last epoch, poison something the training loss of that epoch never saw."""

    target = "buffer"

    def on_epoch_end(self, model, epoch, metrics):
        if epoch + 1 == self.context.cfg.train.epochs:
            with torch.no_grad():
                if self.target == "buffer":  # a norm's running mean: the evaluation turns NaN
                    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                    bn.running_mean.fill_(float("nan"))
                else:  # a weight: training loss already logged, the model is unusable
                    next(model.parameters()).view(-1)[0] = float("inf")
        return False


@pytest.mark.parametrize("target, reason", [("buffer", "non-finite values in"), ("weight", "non-finite values in")])
def test_non_finite_model_after_training_is_diverged(tiny, target, reason):
    cls = type(f"Poison{target}", (_Poison,), {"target": target})
    METHODS.add(f"poison-{target}", cls)
    try:
        res = train(build_config({}, {**tiny, "method.name": f"poison-{target}"}))
    finally:
        METHODS.remove(f"poison-{target}")
    assert res.status == "diverged" and res.exit_code == EXIT_DIVERGED
    text = (res.run_dir / "result.json").read_text()
    rec = _strict(text)  # valid JSON: no NaN token
    assert rec["status"] == "diverged" and reason in rec["diverged_at"]["reason"]
    for line in (res.run_dir / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    assert "NaN" not in text and "Infinity" not in text


def test_finite_runs_still_complete(tiny):
    res = train(build_config({}, tiny))
    assert res.status == "completed" and res.exit_code == 0


def test_dumps_never_writes_nan_tokens(tmp_path):
    obj = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": {"d": (2.0, float("nan"))}, "e": 3}
    text = dumps(obj)
    assert _strict(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": [2.0, None]}, "e": 3}
    write_json(tmp_path / "x.json", obj)
    assert _strict((tmp_path / "x.json").read_text())["b"][2] == 1.5
    assert math.isnan(obj["a"])  # the input is not changed
