"""Smoke test of the trainer-overhead benchmark script: it runs and writes a complete report.

It checks the output's shape and that timings are positive, never the speed itself (that is what
the benchmark measures; a timed assertion would be flaky on a shared machine).
"""

from __future__ import annotations

import json
import math

import pytest

from npasbench.perf import trainer_overhead as bench


@pytest.mark.timeout(180)
def test_trainer_overhead_smoke(tmp_path):
    out = tmp_path / "perf" / "overhead.json"
    # one thread: tiny runs stay fast even when other jobs occupy the cores
    result = bench.main(["--arch", "wrn-10-1", "--steps", "2", "--repeats", "1", "--warmup-steps", "1",
                         "--batch-size", "16", "--threads", "1", "--no-progress", "--out", str(out)])

    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result, default=str))
    for key in ("schema", "command", "arch", "batch_size", "steps", "repeats", "threads", "torch_version",
                "cpu_model", "runs", "summary", "overhead", "overhead_pct", "target_pct", "passes", "verdict",
                "method_notes", "equivalence", "loadavg"):
        assert key in data, key
    assert data["arch"] == "wrn-10-1" and data["steps"] == 2 and data["repeats"] == 1
    assert data["batch_size"] == 16 and data["threads"] == 1
    assert data["target_pct"] == 3.0 and data["verdict"] in ("pass", "fail")

    assert sorted(r["arm"] for r in data["runs"]) == sorted(bench.ARMS)
    for run in data["runs"]:
        assert run["steps"] == 2 and run["seconds"] > 0 and run["ms_per_step"] > 0
    for arm in bench.ARMS:
        s = data["summary"][arm]
        assert s["median_ms"] > 0 and s["min_ms"] > 0 and len(s["per_repeat_ms"]) == 1
    for mode in ("progress_on", "progress_off"):
        assert math.isfinite(data["overhead_pct"][mode])
        assert isinstance(data["passes"][mode], bool)
    assert data["progress_on_bytes_written"][0] > 0  # the trainer's bars really were on
    # the trainer and the bare loop did the same arithmetic
    assert data["equivalence"]["max_abs_weight_diff"] is not None
    assert data["equivalence"]["max_abs_weight_diff"] < 1e-4

    md = out.with_suffix(".md").read_text()
    assert "Verdict" in md and "bare loop" in md


@pytest.mark.timeout(180)
def test_ssn_speed_smoke(tmp_path):
    from npasbench.perf import ssn_speed

    out = tmp_path / "ssn_speed.json"
    result = ssn_speed.main(["--arch", "wrn-10-1", "--max-params", "20000", "--batch-size", "8", "--steps", "1",
                             "--repeats", "1", "--infer-repeats", "1", "--infer-seconds", "0.2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data["train"]) == {"unshared", "ssn"} and data["params"]["ssn"] < data["params"]["unshared"]
    for table in [data["train"], *data["inference"].values()]:
        assert all(v["median_ms"] > 0 for v in table.values())
    assert {"train_pass", "infer_pass"} <= set(data["verdict"]) and result["official"] is False
    assert out.with_suffix(".md").read_text().startswith("# SSN speed")


@pytest.mark.timeout(180)
def test_ssn_speed_runs_on_a_vit(tmp_path):
    """The same benchmark on a (small) CIFAR ViT: its linears' banks, 32x32 inputs; --official refuses a non-WRN."""
    from npasbench.errors import ConfigError
    from npasbench.perf import ssn_speed

    out = tmp_path / "ssn_vit.json"
    ssn_speed.main(["--arch", "vit-2-32-h1-p4", "--max-params", "8000", "--batch-size", "4", "--steps", "1",
                    "--repeats", "1", "--infer-repeats", "1", "--infer-seconds", "0.1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["arch"] == "vit-2-32-h1-p4" and data["params"]["ssn"] < data["params"]["unshared"]
    with pytest.raises(ConfigError, match="--official: the official SSN code builds WRNs only"):
        ssn_speed.main(["--arch", "vit-2-32-h1-p4", "--official", str(tmp_path), "--out", str(tmp_path / "x.json")])


@pytest.mark.timeout(240)
def test_superweights_speed_smoke(tmp_path):
    """The SuperWeight speed benchmark runs end to end and writes a complete report (no timing asserted)."""
    from npasbench.perf import superweights_speed

    out = tmp_path / "sw_speed.json"
    result = superweights_speed.main([
        "--members", "wrn-10-2,wrn-10-1", "--max-params", "250000", "--batch-size", "16", "--steps", "1",
        "--repeats", "1", "--infer-repeats", "1", "--infer-seconds", "0.2", "--composition-calls", "2",
        "--threads", "1", "--quiet-wait", "0", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result, default=str))
    assert {"unshared", "superweights"} <= set(data["train"]) and "superweights" in data["composition"]
    assert any(k.startswith("m0:wrn-10-2:b1") for k in data["inference"])
    assert {"train_pass", "infer_pass", "composition_pass"} <= set(data["verdict"])
    assert data["official"] is False and "contention" in data
    assert data["params"]["superweights"] < data["params"]["unshared"]
    assert out.with_suffix(".md").read_text().startswith("# SuperWeight speed")
