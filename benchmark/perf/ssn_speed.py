"""SSN speed: training step and small-batch inference against the unshared network (and, optionally,
against the official SSN code measured side by side in the same process).

    python -m npasbench.perf.ssn_speed [--arch wrn-16-4 | vit-tiny-p4 | densenet-bc-40-12 | ...] [--max-params 275000] [--steps 6] [--repeats 3]
        [--official /path/to/an/export/of/BryanPlummer/SSN] [--out results/perf/ssn_speed.json]

Targets (issue 3): an SSN training step at batch 128 at most 5% slower than the unshared network's,
and no slower than the official code's; in eval mode, at batch 1-8, an SSN forward at most 5% slower
than the unshared one (weights are generated once and cached until a parameter changes).

Method: every arm gets a freshly built, identically seeded model; arms are interleaved and their
order rotated on each repeat; the median over repeats of the per-repeat median is reported
(training: median of ``--steps`` timed SGD steps after one warm-up step; inference: the per-call
times of ``torch.utils.benchmark``'s ``blocked_autorange`` over ``--infer-seconds``), next to the
fastest repeat and the *paired* figure, the median over repeats of the ratio within a repeat, on
which pass/fail is judged (this machine drifts by tens of percent over minutes; arms measured seconds
apart see the same drift). A measurement during which other processes used more than
``--max-other-cores`` is re-taken after waiting for quiet (``--quiet-wait``), as in superweights_speed. The official code (``--official``) is imported from a checkout the user provides; it is
not part of this repository. Its ``models.wrn`` builds on CPU; it is timed exactly like ours.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import write_json, write_text
from ..budget import Budget
from ..factory import create_model
from ..provenance import hardware, package_versions
from .timing import Guard, add_guard_args, fastest_pct, interleaved, loadavg, median_pct, paired_pct, time_infer


class _Squeeze(nn.Module):
    """Our models return (members, batch, classes); give every arm the same (batch, classes) output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if out.dim() == 3 else out


def build_ours(method: str, arch: str, max_params: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    budget = Budget(max_params, "max_params") if method == "ssn" else None
    return _Squeeze(create_model(method, arch, "cifar100" if classes == 100 else "cifar10", budget).model)


def build_official(path: str, depth: int, width: int, max_params: int, classes: int, shared: bool) -> nn.Module:
    if path not in sys.path:
        sys.path.insert(0, path)
    models = importlib.import_module("models")
    torch.manual_seed(0)
    share = "wavg" if shared else "none"
    return models.wrn(share, "inter", 1, depth, width, 8, max_params, classes, 1 if shared else None)


def time_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    times = []
    for _ in range(steps + 1):  # the first step is a warm-up
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]


def time_generation(model: nn.Module, repeats: int = 15) -> dict[str, float]:
    """SSN-only work per training step: generating every weight and back-propagating into the banks
    (with unit gradients), timed in isolation -- far less noisy than the difference of two ~seconds-long
    steps on a shared machine."""
    groups = [g for g in model.model.shared.values()]

    def once() -> float:
        t0 = time.perf_counter()
        ws = [w for g in groups for w in g.generate()]
        torch.autograd.backward(ws, [torch.ones_like(w) for w in ws])
        return time.perf_counter() - t0

    for _ in range(2):
        once()
    times = [once() for _ in range(repeats)]
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="wrn-16-4")
    ap.add_argument("--max-params", type=int, default=275_000, help="SSN bank size (official max_params)")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--infer-repeats", type=int, default=5)
    ap.add_argument("--infer-batches", default="1,8")
    ap.add_argument("--infer-seconds", type=float, default=2.0, help="measuring time per arm and repeat")
    ap.add_argument("--official", default=os.environ.get("NPAS_SSN_OFFICIAL"), help="path to the official SSN code")
    add_guard_args(ap)
    ap.add_argument("--out", default="results/perf/ssn_speed.json")
    args = ap.parse_args(argv)
    guard = Guard.from_args(args)

    from ..errors import ConfigError
    from ..models.registry import get_arch

    side = get_arch(args.arch).image_size or 32  # a CIFAR ViT, DenseNet-BC, MobileNetV2 or WRN: 32x32
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, side, side)
    y = torch.randint(0, args.classes, (args.batch_size,))
    if args.official and not args.arch.startswith("wrn-"):
        raise ConfigError(f"--official: the official SSN code builds WRNs only, not {args.arch!r}")
    depth, width = (int(v) for v in args.arch.split("-")[1:3]) if args.official else (0, 0)
    builders: dict[str, Callable[[], nn.Module]] = {
        "unshared": lambda: build_ours("unshared", args.arch, 0, args.classes),
        "ssn": lambda: build_ours("ssn", args.arch, args.max_params, args.classes),
    }
    if args.official:
        builders["official_unshared"] = lambda: build_official(args.official, depth, width, 0, args.classes, False)
        builders["official_ssn"] = lambda: build_official(args.official, depth, width, args.max_params, args.classes, True)
    params = {k: sum(p.numel() for p in b().parameters() if p.requires_grad) for k, b in builders.items()}

    train = interleaved({k: (lambda b=b: time_train(b(), x, y, args.steps)) for k, b in builders.items()},
                        args.repeats, "train steps", guard.measure)
    infer = {}
    for bs in (int(b) for b in args.infer_batches.split(",")):
        xi = torch.randn(bs, 3, side, side)
        models = {k: b() for k, b in builders.items()}
        infer[str(bs)] = interleaved({k: (lambda m=m: time_infer(m.eval(), xi, args.infer_seconds)) for k, m in models.items()},
                                     args.infer_repeats, f"inference batch {bs}", guard.measure)

    generation = time_generation(builders["ssn"]())
    generation["pct_of_unshared_step"] = 100 * generation["median_ms"] / train["unshared"]["median_ms"]

    verdict = {"basis": "paired (median over repeats of the within-repeat ratio)",
               "train_ssn_vs_unshared_pct": median_pct(train, "ssn", "unshared"),
               "train_ssn_vs_unshared_paired_pct": paired_pct(train, "ssn", "unshared"),
               "train_ssn_vs_unshared_fastest_pct": fastest_pct(train, "ssn", "unshared"),
               "generation_pct_of_unshared_step": generation["pct_of_unshared_step"],
               "infer_ssn_vs_unshared_pct": {bs: median_pct(t, "ssn", "unshared") for bs, t in infer.items()},
               "infer_ssn_vs_unshared_paired_pct": {bs: paired_pct(t, "ssn", "unshared") for bs, t in infer.items()},
               "infer_ssn_vs_unshared_fastest_pct": {bs: fastest_pct(t, "ssn", "unshared") for bs, t in infer.items()}}
    verdict["train_pass"] = verdict["train_ssn_vs_unshared_paired_pct"] <= 5.0
    verdict["infer_pass"] = all(v <= 5.0 for v in verdict["infer_ssn_vs_unshared_paired_pct"].values())
    if args.official:
        verdict["train_ssn_vs_official_ssn_pct"] = median_pct(train, "ssn", "official_ssn")
        verdict["train_ssn_vs_official_ssn_paired_pct"] = paired_pct(train, "ssn", "official_ssn")
        verdict["infer_ssn_vs_official_ssn_pct"] = {bs: median_pct(t, "ssn", "official_ssn") for bs, t in infer.items()}
        verdict["train_not_slower_than_official"] = verdict["train_ssn_vs_official_ssn_paired_pct"] <= 0.0
    result = {
        "benchmark": "ssn_speed", "arch": args.arch, "classes": args.classes, "max_params": args.max_params,
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats, "params": params,
        "threads": torch.get_num_threads(), "load_average": loadavg(), "hardware": hardware("cpu"),
        "packages": package_versions(), "train": train, "inference": infer, "generation": generation,
        "verdict": verdict, "contention": guard.summary(),
        "official": args.official is not None, "command": "python -m npasbench.perf.ssn_speed " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out)
    write_json(out, result)
    lines = [f"# SSN speed ({args.arch}, max_params {args.max_params:,}, batch {args.batch_size})", "",
             f"Command: `{result['command']}`; {torch.get_num_threads()} threads; load {result['load_average']}.", "",
             f"Other processes' CPU during the measurements: {guard.summary()}.", "",
             "Median over interleaved repeats of the per-repeat median (min = fastest repeat); vs unshared: "
             "by medians / paired (median of the within-repeat ratios; the pass/fail basis) / fastest repeats.", "",
             "| arm | params | train ms/step (min) | vs unshared | "
             + " | ".join(f"infer b{b} ms (min) | vs unshared" for b in infer) + " |",
             "|---|---|---|---|" + "---|---|" * len(infer)]

    def vs(table: dict, k: str) -> str:
        if k == "unshared":
            return "-"
        return f"{median_pct(table, k, 'unshared'):+.1f}% / {paired_pct(table, k, 'unshared'):+.1f}% / " \
               f"{fastest_pct(table, k, 'unshared'):+.1f}%"

    for k in builders:
        lines.append(f"| {k} | {params[k]:,} | {train[k]['median_ms']:.1f} ({train[k]['min_ms']:.1f}) | {vs(train, k)} | "
                     + " | ".join(f"{infer[b][k]['median_ms']:.2f} ({infer[b][k]['min_ms']:.2f}) | {vs(infer[b], k)}"
                                  for b in infer) + " |")
    lines += ["", f"SSN-only work per step (weight generation forward + backward into the banks, timed alone): "
              f"{generation['median_ms']:.1f} ms = {generation['pct_of_unshared_step']:.2f}% of the unshared step.",
              "", "Verdict: " + ", ".join(f"{k} = {v}" for k, v in verdict.items())]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
