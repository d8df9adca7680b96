"""A reference row from the official SSN code at one cell of a grid, trained with that cell's recipe.

    python -m npasbench.parity.reference --ssn /path/to/BryanPlummer/SSN --spec slurm/cifar100-cpu.toml \
        --method ssn --variant by-shape --budget 50% --seeds 0 1

Why: a leaderboard row of ours is trusted when the official implementation, trained the same way at the
same cell, lands beside it. The cell's run (from the grid's plan) gives the recipe: its data config (CIFAR-100,
the seeded training subset, flip + pad-crop + cutout, the same batches: our loader with the run's seed),
the optimiser settings (SGD, Nesterov, weight decay; the official ``group_weight_decay``: coefficients
exempt, as in ``main.py``), the schedule (``trainer.schedule.LRSchedule``: step, cosine, warm-up, per step as the trainer sets
it), batch size, epochs and threads. The official model is ``models.wrn.wrn`` imported from the checkout
given by path (nothing copied; only its CUDA device lookups are redirected on CPU), built with the cell's
share type, upsampling, bank size, grouping (``param_groups`` 1 / 0 / -1: the official ``--param_groups``)
and the official ``--max_params`` that our budget solver chose for the cell, so the two models have the
same unique parameters (checked before training). Learned groups are not supported (the official search
is a separate ``main.py`` run).

Each seed's result is one JSON in ``<grid results>/reference/`` (resumable: an existing file is a cache hit)
holding the command, the official checkout's commit, the recipe and provenance; ``reference.md`` beside it
puts the official figures next to the grid's finished runs of the same cell.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..atomic import write_json, write_text
from ..errors import ConfigError
from ..provenance import git_info, hardware, package_versions
from .harness import accuracy_on
from .official import cpu_device_lookups
from .steps import official_optimizer


def _cell(plan, method: str, variant: str, budget: str, seed: int):
    """The grid run of ``plan`` (``grid.runner.plan_grid``) at the cell and seed named on the command line."""
    hits = [r for r in plan.runs if r.method == method and r.variant == variant and str(r.budget) == budget
            and r.seed == seed]
    if len(hits) != 1:
        cells = sorted({f"{r.method}/{r.variant}/{r.budget}" for r in plan.runs})
        raise ConfigError(f"--method/--variant/--budget/--seeds: no single run {method}/{variant}/{budget} seed {seed} "
                          f"in {plan.spec.path}; its cells: {', '.join(cells)}.")
    return hits[0]


def _official_args(cfg) -> dict[str, Any]:
    """The official ``wrn(...)`` arguments for our SSN run ``cfg``, with the official ``--max_params`` that our
    budget solver chose (``SSNPlan.max_params``)."""
    from ..experiment import budget_of
    from ..factory import create_model

    if cfg.method.name != "ssn":
        raise ConfigError(f"--method: the reference row runs the official SSN code; {cfg.method.name!r} is not ssn.")
    from ..methods.ssn.plan import SSNPlan
    from ..plugins import create_method

    method = create_method("ssn", cfg.method.options)
    o = method.options  # parsed: our defaults filled in (the official ones: wavg, inter, bank_size 8)
    if o.param_groups > 1 or o.groups:
        raise ConfigError("--variant: learned or explicit groups need the official search run first; pick a cell "
                          "with param_groups 1, 0 or -1.")
    built = create_model(method, cfg.model.arch, cfg.data.name, budget_of(cfg))
    plan = built.model.built(SSNPlan)
    return {"share_type": o.share_type, "upsample_type": o.upsample_type, "bank_size": o.bank_size,
            "groups": o.param_groups, "max_params": int(plan.max_params), "ours_params": built.report(flops=False).total}


def train_official(repo: str, cfg, args: dict[str, Any]) -> dict[str, Any]:
    """The official model trained with the run's recipe; test top-1/top-5 after the last epoch."""
    from ..data import load_data, make_loader
    from ..trainer.schedule import LRSchedule
    from .ssn_map import official_wrn

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t = cfg.train
    bundle = load_data(cfg.data)
    cpu = torch.device("cpu")
    train = make_loader(bundle, "train", t.batch_size, cfg.data, seed=t.seed, drop_last=t.drop_last, device=cpu)
    test = make_loader(bundle, "test", t.eval_batch_size, cfg.data, device=cpu)
    model = official_wrn(repo, cfg.model.arch, bundle.num_classes, args["share_type"], args["upsample_type"],
                         args["max_params"], args["bank_size"], args["groups"], seed=t.seed)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if params != args["ours_params"]:
        raise RuntimeError(f"official model has {params:,} trainable parameters, ours {args['ours_params']:,}: not "
                           "the same cell")
    o = cfg.optim
    if o.label_smoothing or o.grad_clip:  # the schedule (step, cosine, warm-up) is the trainer's own LRSchedule
        raise ConfigError("optim: the reference loop implements plain cross-entropy without label smoothing or "
                          "gradient clipping (optim.label_smoothing, optim.grad_clip must be 0).")
    optimizer = official_optimizer(model, o.lr, o.momentum if o.nesterov else 0.0, o.weight_decay)
    schedule = LRSchedule.from_config(o, t.epochs, len(train))

    def forward(x):
        with cpu_device_lookups():
            out = model(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    t0 = time.perf_counter()
    steps = 0
    bar = tqdm(total=t.epochs * len(train), desc=f"official ssn s{t.seed}", unit="step", mininterval=10)
    for epoch in range(t.epochs):
        model.train()
        for b, (x, y) in enumerate(train.epoch(epoch)):
            for g in optimizer.param_groups:
                g["lr"] = schedule.lr(epoch, b)
            loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            bar.update(1)
    bar.close()
    train_s = time.perf_counter() - t0
    model.eval()
    return {**accuracy_on(forward, test), "steps": steps, "params": params, "train_s": round(train_s, 1)}


def _commit(repo: str) -> str:
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def summarize(folder: Path, plan, command: str | None = None) -> str:
    """reference.md: every official record in ``folder`` beside the grid's finished runs of its cell.
    ``command``: the invocation that reproduces them all (default: the first record's own)."""
    from ..grid.state import finished_record

    recs = sorted((json.loads(p.read_text()) for p in folder.glob("official-*.json")),
                  key=lambda r: (r["cell"], r["seed"]))
    by_id = {r.run_id: r for r in plan.runs}
    lines = [f"# Reference row: the official SSN code at one cell of `{plan.spec.name}`", "",
             "Test top-1 (%) of the official implementation trained with the cell's recipe "
             "(`python -m npasbench.parity.reference`, module docstring), beside our run of the same cell "
             "(the grid's record). Same data subset, batches, optimiser, schedule and unique parameters.", "",
             "| cell | seed | params (official / ours) | official top-1 | ours top-1 (run id) | ours - official |",
             "|---|---|---|---|---|---|"]
    pairs: list[tuple[str, tuple[float, float]]] = []
    for r in recs:
        run = by_id.get(r["run_id"])
        ours = finished_record(plan.results / run.folder, run.run_id) if run else None
        o1 = ours["metrics"]["top1"] if ours else None
        if o1 is not None:
            pairs.append((r["cell"], (r["result"]["top1"], o1)))
        lines.append(f"| {r['cell']} | {r['seed']} | {r['result']['params']:,} / {r['ours_params']:,} | "
                     f"{r['result']['top1']:.2f} | " + (f"{o1:.2f} ({r['run_id'][:10]})" if o1 is not None else
                                                       "not finished") + " | "
                     + (f"{o1 - r['result']['top1']:+.2f}" if o1 is not None else "-") + " |")
    cells: dict[str, list[tuple[float, float]]] = {}
    for cell, pair in pairs:
        cells.setdefault(cell, []).append(pair)
    for cell, ps in sorted(cells.items()):  # per cell: the seeds of different budgets are not one sample
        if len(ps) > 1:
            off, ours_ = [p[0] for p in ps], [p[1] for p in ps]
            lines += ["", f"{cell}, mean over {len(ps)} seeds: official {statistics.mean(off):.2f} +- "
                          f"{statistics.stdev(off):.2f}, ours {statistics.mean(ours_):.2f} +- {statistics.stdev(ours_):.2f}, "
                          f"ours - official {statistics.mean(o - f for f, o in ps):+.2f} (+- the sample standard "
                          "deviation over seeds)."]
    if recs:
        r = recs[0]
        lines += ["", f"Source: {r['official']['repo']} at commit `{r['official']['commit']}` (a temporary checkout, "
                      "never committed), official arguments per cell in each seed's JSON (`official.args`)."]
        commands = sorted({x["command"] for x in recs})
        lines += ["", "Commands (each seed's JSON holds the command that made it):", ""] + [f"- `{c}`" for c in commands]
    text = "\n".join(lines) + "\n"
    write_text(folder / "reference.md", text)
    write_text(folder / "references.toml", references_toml(recs, plan, command))
    return text


def references_toml(recs: list[dict[str, Any]], plan, command: str | None = None) -> str:
    """The official records as ``[[reference]]`` rows (one per cell: the mean over its seeds) for
    ``npas grid collect SPEC --references`` / ``npas leaderboard --references``."""
    from ..experiment import budget_of
    from ..leaderboard.tidy import variant_of

    by_id = {r.run_id: r for r in plan.runs}
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        cells.setdefault(r["cell"], []).append(r)
    out = ["# written by python -m npasbench.parity.reference (do not edit: rerun it)"]
    for cell, rs in cells.items():
        run = by_id[rs[0]["run_id"]]
        cfg = run.config
        budget = budget_of(cfg)
        vals = [x["result"]["top1"] for x in rs]
        seeds = ", ".join(f"seed {x['seed']} {x['result']['top1']:.2f}" for x in sorted(rs, key=lambda x: x["seed"]))
        source = (f"official BryanPlummer/SSN {rs[0]['official']['commit'][:7]}, measured here with the cell's recipe: "
                  f"{rs[0]['command']}")  # the cell's own command (several cells share the file)
        out += ["", "[[reference]]", f'dataset = "{cfg.data.name}"', f'arch = "{cfg.model.arch}"',
                f'method = "{cfg.method.name}"', f'variant = "{variant_of(cfg.method.name, cfg.method.options)}"',
                f"budget = {budget.params}" if budget is not None else 'budget = "none"', f"epochs = {cfg.train.epochs}",
                f"top1 = {statistics.mean(vals):.4f}", f"source = {json.dumps(source)}", "verified = true",
                f"note = {json.dumps(f'{cell}, mean of {len(vals)} seed(s): {seeds}')}"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.parity.reference", description=__doc__.splitlines()[0])
    p.add_argument("--ssn", required=True, help="checkout of BryanPlummer/SSN")
    p.add_argument("--spec", required=True, help="grid spec (slurm/*.toml) whose cell is reproduced")
    p.add_argument("--method", default="ssn")
    p.add_argument("--variant", required=True, help="the variant label, e.g. by-shape")
    p.add_argument("--budget", required=True, help="the budget as the spec writes it, e.g. 50%%")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args(argv)
    command = "python -m npasbench.parity.reference " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    from ..grid.runner import plan_grid

    plan = plan_grid(a.spec, write=False)
    runs = [_cell(plan, a.method, a.variant, a.budget, seed) for seed in a.seeds]  # every seed checked first
    folder = plan.results / "reference"
    for seed, run in zip(a.seeds, runs):
        out = folder / f"official-ssn-{run.run_id[:10]}.json"
        if out.is_file():
            print(f"seed {seed}: {out} exists (cache hit)")
            continue
        args = _official_args(run.config)
        res = train_official(a.ssn, run.config, args)
        write_json(out, {"cell": f"{a.method} [{a.variant}] {a.budget}", "seed": seed, "run_id": run.run_id,
                         "result": res, "ours_params": args.pop("ours_params"),
                         "official": {"repo": "BryanPlummer/SSN", "commit": _commit(a.ssn), "args": args},
                         "recipe": {k: run.config.to_dict()[k] for k in ("data", "optim", "train")},
                         "command": command, "git": git_info(), "packages": package_versions(),
                         "hardware": hardware("cpu")})
        print(f"seed {seed}: official top-1 {res['top1']:.2f} -> {out}")
    print(summarize(folder, plan, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
