"""Per-step overhead of the common trainer against a bare PyTorch loop.

    python -m npasbench.perf.trainer_overhead [--arch wrn-16-1] [--steps N] [--repeats R]
        [--warmup-steps W] [--batch-size 128] [--threads T] [--out results/perf/trainer_overhead.json]

A benchmark script, not a timed test: it writes its measurements (JSON, plus a short markdown
summary beside it) and never fails on speed. Three arms, identical work:

* ``bare``: the plain network of ``create_model("unshared", arch, "synthetic")``, the synthetic
  data set of ``load_data(DataConfig())`` served by the same ``BatchLoader`` settings the trainer
  uses (``make_loader(..., "train", seed, drop_last=True)``), ``torch.optim.SGD`` (lr 0.1, momentum
  0.9, Nesterov, weight decay 5e-4), and nothing but ``for x, y in loader: forward, cross-entropy,
  zero_grad, backward, step``. Timed with ``perf_counter`` from just before the first batch is
  requested to just after the N-th optimizer step (data loading and augmentation included).
* ``trainer_progress_on`` / ``trainer_progress_off``: the real trainer through ``train(cfg)`` with
  the same model, data, optimizer settings, seed, threads and batch size, one epoch truncated to
  N steps (``train.max_steps_per_epoch``). Its per-step time is the trainer's own record:
  ``result.json`` ``timing`` covers only the training part of each epoch (from the epoch's first
  batch request to after its progress bar closes; evaluation, checkpoints, set-up excluded), so
  ms/step = steps * batch_size / ``train_images_per_s`` / steps (the unrounded form of
  ``train_s``). With progress on, the trainer's tqdm bars really render; their stderr (and the
  per-epoch ``tqdm.write`` line on stdout) go to a log file so they do not garble this script's own
  bar, which keeps the real formatting and writing cost in the measured process.

Warm-up: one bare run and one trainer run of ``--warmup-steps`` steps first (discarded), so process-
level start-up costs (oneDNN primitive caches, allocator growth, thread pool) are paid before any
measurement. Every measured run then starts from a freshly built, identically seeded model and a
fresh optimizer in both arms, so both pay the same first-step costs (momentum buffers) and do the
same arithmetic: the trainer's final weights are compared with the bare loop's as a check.

Noise control on a shared machine: the arms are interleaved and their order rotated every repeat
(bare/on/off, on/off/bare, off/bare/on, ...); ``gc.collect()`` before every run; the load average is
recorded per run. Reported: per-repeat ms/step per arm, medians, minima, spread; overhead % =
(median trainer / median bare - 1) * 100 for progress on and off, plus the paired per-repeat
overheads. Target: the trainer adds at most 3 % per step.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import itertools
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import write_json, write_text
from .timing import loadavg
from ..run_folder import RunFolder
from ..config import build_config
from ..data import DataConfig, load_data, make_loader
from ..factory import create_model
from ..provenance import git_info, hardware
from ..trainer import checkpoint as ckpt
from ..trainer.environment import seed_everything
from ..trainer.loop import train

SCHEMA = "npasbench.perf.trainer_overhead/1"
TARGET_PCT = 3.0
ARMS = ("bare", "trainer_progress_on", "trainer_progress_off")
DEFAULT_OUT = "results/perf/trainer_overhead.json"
# Optimizer settings of the trainer's defaults (OptimConfig): SGD, lr 0.1, momentum 0.9, Nesterov, wd 5e-4.
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4

METHOD_NOTES = [
    "bare: create_model('unshared', arch, 'synthetic').model, load_data(DataConfig()) train split, "
    "make_loader(bundle, 'train', batch_size, data_cfg, seed, drop_last=True) (the trainer's settings), "
    "torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4); loop body: forward, "
    "cross_entropy, zero_grad(set_to_none=True), backward, step (+ one perf_counter stamp per step).",
    "bare timing: perf_counter from just before the first batch is requested to just after the N-th "
    "optimizer step (data loading and augmentation included, as in the trainer's timing).",
    "trainer: train(cfg) with the same model/data/optimizer/seed/threads/batch size, train.epochs=1, "
    "train.max_steps_per_epoch=N; ms/step from the trainer's own result.json timing (training part of "
    "the epoch only: eval, checkpoints and set-up are excluded) as steps*batch_size/train_images_per_s/steps "
    "(the unrounded train_s).",
    "progress on: the trainer's tqdm bars render to a log file (stderr and stdout redirected) so the "
    "formatting/writing cost stays in the measured process; progress off: run.progress=false.",
    "warm-up: one bare run and one trainer run of --warmup-steps steps before any measurement "
    "(discarded); every measured run starts from a freshly built, identically seeded model and "
    "optimizer in both arms.",
    "noise control: arms interleaved with their order rotated each repeat; gc.collect() before every "
    "run; load average recorded per run. overhead % = (median trainer / median bare - 1) * 100.",
    "equivalence check: the trainer's final weights (its end-of-epoch checkpoint) are compared with the "
    "bare loop's after the same N steps.",
]


# --------------------------------------------------------------------------------------- arms
def bare_run(arch: str, bundle, data_cfg: DataConfig, batch_size: int, steps: int, seed: int) -> dict[str, Any]:
    """The bare PyTorch loop for ``steps`` steps from a freshly seeded model; returns timings and weights."""
    seed_everything(seed)  # the trainer seeds exactly like this right before building its model
    model = create_model("unshared", arch, "synthetic", num_classes=bundle.num_classes).model
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True,
                                weight_decay=WEIGHT_DECAY)
    loader = make_loader(bundle, "train", batch_size, data_cfg, seed=seed, drop_last=True,
                         device=torch.device("cpu"), channels_last=False, rank=0, world_size=1)
    stamps: list[float] = []
    gc.collect()
    t0 = time.perf_counter()
    for x, y in itertools.islice(loader.epoch(0), steps):
        logits = model(x)  # (members, batch, classes); one member for "unshared"
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    if len(stamps) != steps:
        raise RuntimeError(f"bare loop ran {len(stamps)} steps, expected {steps}")
    seconds = stamps[-1] - t0
    step_ms = [1000 * (b - a) for a, b in zip([t0, *stamps[:-1]], stamps)]
    return {"seconds": seconds, "steps": steps, "ms_per_step": 1000 * seconds / steps, "step_ms": step_ms,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def trainer_overrides(arch: str, batch_size: int, steps: int, seed: int, threads: int, progress: bool,
                      run_dir: Path) -> dict[str, Any]:
    return {
        "method.name": "unshared",
        "model.arch": arch,
        "data.name": "synthetic",
        "optim.lr": LR,
        "optim.momentum": MOMENTUM,
        "optim.nesterov": True,
        "optim.weight_decay": WEIGHT_DECAY,
        "train.epochs": 1,
        "train.batch_size": batch_size,
        "train.max_steps_per_epoch": steps,
        "train.eval_every": 1_000_000,
        "train.seed": seed,
        "train.threads": threads,
        "train.device": "cpu",
        "run.out": str(run_dir),
        "run.resume": "never",
        "run.progress": progress,
        "run.keep_checkpoints": 1,
    }


def trainer_run(arch: str, batch_size: int, steps: int, seed: int, threads: int, progress: bool,
                run_dir: Path, log_path: Path) -> dict[str, Any]:
    """The real trainer through ``train(cfg)``; ms/step from its own ``result.json`` timing."""
    cfg = build_config(None, trainer_overrides(arch, batch_size, steps, seed, threads, progress, run_dir))
    gc.collect()
    if progress:
        with open(log_path, "a", encoding="utf-8") as sink, contextlib.redirect_stderr(sink), \
                contextlib.redirect_stdout(sink):
            result = train(cfg)
    else:
        result = train(cfg)
    if result.status != "completed":
        raise RuntimeError(f"trainer run in {run_dir} ended with status {result.status!r}")
    record = json.loads(RunFolder(run_dir).result.read_text())
    timing = record["timing"]
    done = int(record["steps"])
    if done != steps or not timing.get("train_images_per_s"):
        raise RuntimeError(f"trainer run in {run_dir}: {done} steps (expected {steps}), timing {timing}")
    seconds = done * batch_size / timing["train_images_per_s"]
    out = {"seconds": seconds, "steps": done, "ms_per_step": 1000 * seconds / done,
           "train_s_recorded": timing["train_s"], "wall_s_recorded": timing["wall_s"]}
    latest = ckpt.list_checkpoints(RunFolder(run_dir).checkpoints)
    out["state"] = ckpt.load_checkpoint(latest[-1])["model"] if latest else None
    return out


def max_abs_diff(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor] | None) -> float | None:
    if a is None or b is None or set(a) != set(b):
        return None
    diffs = [(a[k].double() - b[k].double()).abs().max().item() for k in a
             if a[k].is_floating_point() and a[k].numel()]
    return max(diffs) if diffs else 0.0


# --------------------------------------------------------------------------------------- stats
def summarize(values_ms: Sequence[float]) -> dict[str, Any]:
    """spread_pct: (max - min) / median; mad_pct: median absolute deviation / median (outlier-robust)."""
    med = statistics.median(values_ms)
    mad = statistics.median(abs(v - med) for v in values_ms)
    return {"median_ms": med, "min_ms": min(values_ms), "max_ms": max(values_ms),
            "mean_ms": statistics.fmean(values_ms), "spread_pct": 100 * (max(values_ms) - min(values_ms)) / med,
            "mad_pct": 100 * mad / med, "per_repeat_ms": list(values_ms)}


def pct(a: float, b: float) -> float:
    return (a / b - 1.0) * 100.0


def rotation(repeat: int) -> list[str]:
    """Arm order of a repeat: rotated every repeat so each arm takes each position equally often."""
    k = repeat % len(ARMS)
    return list(ARMS[k:] + ARMS[:k])


# --------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m npasbench.perf.trainer_overhead",
                                description="Per-step overhead of the npasbench trainer against a bare PyTorch loop.")
    p.add_argument("--arch", default="wrn-16-1", help="architecture (default wrn-16-1)")
    p.add_argument("--steps", type=int, default=20,
                   help="measured steps per run (one epoch truncated to N steps; at most the batches of an epoch)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of (bare, trainer on, trainer off)")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps of the discarded warm-up run of each kind")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for both arms (0 = torch's default). On a shared machine 2 threads are very "
                        "sensitive to other jobs (OpenMP barriers wait for descheduled threads); 1 thread is steadier")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output JSON (default {DEFAULT_OUT}); a .md summary is written beside it")
    p.add_argument("--no-progress", action="store_true", help="hide this script's own progress bar")
    args = p.parse_args(argv)
    for name in ("steps", "repeats", "warmup_steps", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON and markdown reports, return the JSON's content."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()  # both this script and train() change the global setting
    try:
        return _benchmark(args, argv)
    finally:
        torch.set_num_threads(previous_threads)


def _benchmark(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    out = Path(args.out)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = loadavg()

    data_cfg = DataConfig()
    bundle = load_data(data_cfg)
    per_epoch = len(make_loader(bundle, "train", args.batch_size, data_cfg, seed=args.seed, drop_last=True))
    if max(args.steps, args.warmup_steps) > per_epoch:
        raise SystemExit(f"--steps/--warmup-steps: at most {per_epoch} (batches of {args.batch_size} in one epoch of "
                         f"the {len(bundle.train)} synthetic training images), got {max(args.steps, args.warmup_steps)}")

    runs: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    diffs: list[float | None] = []
    reference: dict[str, torch.Tensor] | None = None
    progress_bytes: list[int] = []
    total = 2 + len(ARMS) * args.repeats
    bar = tqdm(total=total, desc="trainer overhead", unit="run", disable=args.no_progress, dynamic_ncols=True)
    with tempfile.TemporaryDirectory(prefix="npas-perf-") as tmp:
        work = Path(tmp)
        counter = itertools.count()

        def run_arm(arm: str, steps: int) -> dict[str, Any]:
            bar.set_postfix_str(f"{arm} ({steps} steps)")
            if arm == "bare":
                return bare_run(args.arch, bundle, data_cfg, args.batch_size, steps, args.seed)
            k = next(counter)
            log = work / f"progress-{k}.log"
            res = trainer_run(args.arch, args.batch_size, steps, args.seed, threads, arm == "trainer_progress_on",
                              work / f"run-{k}", log)
            res["progress_bytes"] = log.stat().st_size if log.exists() else 0
            return res

        warm_bare = run_arm("bare", args.warmup_steps)
        bar.update(1)
        warm_trainer = run_arm("trainer_progress_off", args.warmup_steps)
        bar.update(1)
        for r in range(args.repeats):
            for position, arm in enumerate(rotation(r)):
                la = loadavg()
                res = run_arm(arm, args.steps)
                state = res.pop("state", None)
                if arm == "bare":
                    if reference is None:
                        reference = state
                    else:
                        diffs.append(max_abs_diff(reference, state))
                else:  # repeat 0 starts with a bare run, so the reference exists
                    diffs.append(max_abs_diff(reference, state))
                    if arm == "trainer_progress_on":
                        progress_bytes.append(res["progress_bytes"])
                times[arm].append(res["ms_per_step"])
                runs.append({"repeat": r, "position": position, "arm": arm, "loadavg_1m_before": la[0] if la else None,
                             **{k: v for k, v in res.items() if k != "step_ms"},
                             **({"step_ms": [round(v, 3) for v in res["step_ms"]]} if "step_ms" in res else {})})
                bar.update(1)
                bar.set_postfix_str(f"{arm} {res['ms_per_step']:.1f} ms/step")
    bar.close()

    summary = {a: summarize(times[a]) for a in ARMS}
    b = summary["bare"]
    overhead: dict[str, Any] = {}
    for mode, arm in (("progress_on", "trainer_progress_on"), ("progress_off", "trainer_progress_off")):
        t = summary[arm]
        paired = [pct(tv, bv) for tv, bv in zip(times[arm], times["bare"])]
        overhead[mode] = {
            "overhead_pct": pct(t["median_ms"], b["median_ms"]),
            "overhead_pct_of_minimums": pct(t["min_ms"], b["min_ms"]),
            "paired_pct": {"per_repeat": paired, "median": statistics.median(paired), "min": min(paired),
                           "max": max(paired)},
            "passes": pct(t["median_ms"], b["median_ms"]) <= TARGET_PCT,
        }
    passes = all(o["passes"] for o in overhead.values())
    noise_pct = max(s["spread_pct"] for s in summary.values())
    conclusive = noise_pct < TARGET_PCT and args.repeats >= 3
    known = [d for d in diffs if d is not None]
    bare_measured = [r for r in runs if r["arm"] == "bare"]
    first = [r["step_ms"][0] for r in bare_measured]
    rest = [statistics.median(r["step_ms"][1:]) for r in bare_measured if len(r["step_ms"]) > 1]

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": started.isoformat(timespec="seconds"),
        "duration_s": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
        "command": "python -m npasbench.perf.trainer_overhead" + (" " + shlex.join(argv) if argv else ""),
        "arch": args.arch,
        "method": "unshared",
        "dataset": {"name": "synthetic", "train_images": len(bundle.train), "batches_per_epoch": per_epoch,
                    "augment": data_cfg.augment, "cutout": data_cfg.cutout},
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "repeats": args.repeats,
        "seed": args.seed,
        "threads": threads,
        "optimizer": {"name": "SGD", "lr": LR, "momentum": MOMENTUM, "nesterov": True, "weight_decay": WEIGHT_DECAY},
        "torch_version": torch.__version__,
        "cpu_model": hardware()["cpu"],
        "hardware": hardware(),
        "git": git_info(),
        "loadavg": {"before": load_before, "after": loadavg()},
        "method_notes": METHOD_NOTES,
        "warmup": {"bare_step_ms": [round(v, 3) for v in warm_bare["step_ms"]],
                   "bare_ms_per_step": warm_bare["ms_per_step"], "trainer_ms_per_step": warm_trainer["ms_per_step"]},
        "bare_first_step_ms_median": statistics.median(first) if first else None,
        "bare_later_steps_ms_median": statistics.median(rest) if rest else None,
        "runs": runs,
        "summary": summary,
        "overhead": overhead,
        "overhead_pct": {m: o["overhead_pct"] for m, o in overhead.items()},
        "target_pct": TARGET_PCT,
        "passes": {**{m: o["passes"] for m, o in overhead.items()}, "all": passes},
        "verdict": "pass" if passes else "fail",
        "noise_pct": noise_pct,
        "conclusive": conclusive,
        "verdict_note": (
            f"only {args.repeats} repeat(s): too few to judge noise, the verdict is indicative" if args.repeats < 3 else
            f"run-to-run spread {noise_pct:.1f}% is below the {TARGET_PCT:g}% target" if conclusive else
            f"run-to-run spread {noise_pct:.1f}% is not below the {TARGET_PCT:g}% target: the machine was noisy, "
            "treat the verdict as indicative (compare the minima and the paired overheads)"),
        "progress_on_bytes_written": progress_bytes,
        "equivalence": {"max_abs_weight_diff": max(known) if known else None,
                        "same_weights": (max(known) <= 1e-5) if known else None,
                        "note": "max |w_trainer - w_bare| (and between bare runs) over all state tensors after N steps"},
    }
    write_json(out, result)
    write_text(out.with_suffix(".md"), render_markdown(result, out))
    return result


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def render_markdown(r: dict[str, Any], out: Path) -> str:
    s, o = r["summary"], r["overhead"]

    def row(name: str, arm: str) -> str:
        x = s[arm]
        return (f"| {name} | {x['median_ms']:.1f} | {x['min_ms']:.1f} | {x['max_ms']:.1f} | {x['spread_pct']:.1f} | "
                f"{x['mad_pct']:.1f} | "
                + ", ".join(f"{v:.1f}" for v in x["per_repeat_ms"]) + " |")

    lines = [
        f"# Trainer per-step overhead vs a bare PyTorch loop ({r['arch']})",
        "",
        f"Created {r['created_at']} by `{r['command']}` (full data: `{out.name}`).",
        "",
        f"{r['arch']} (unshared), synthetic data ({r['dataset']['train_images']} train images, flip+crop), batch "
        f"{r['batch_size']}, SGD lr 0.1 / momentum 0.9 Nesterov / wd 5e-4, {r['threads']} threads, torch "
        f"{r['torch_version']}, CPU {r['cpu_model']}. {r['repeats']} interleaved repeats (order rotated) of "
        f"{r['steps']} steps per run after a {r['warmup_steps']}-step warm-up run of each kind. Load average "
        f"before/after: {r['loadavg']['before']} / {r['loadavg']['after']}.",
        "",
        "| arm | median ms/step | min | max | spread % (max-min) | MAD % | per repeat |",
        "|---|---|---|---|---|---|---|",
        row("bare loop", "bare"),
        row("trainer, progress on", "trainer_progress_on"),
        row("trainer, progress off", "trainer_progress_off"),
        "",
        "| progress bars | overhead % (medians) | overhead % (minima) | paired per repeat: median [min, max] | <= 3 %? |",
        "|---|---|---|---|---|",
    ]
    for mode, label in (("progress_on", "on"), ("progress_off", "off")):
        x = o[mode]
        p = x["paired_pct"]
        lines.append(f"| {label} | {x['overhead_pct']:+.2f} | {x['overhead_pct_of_minimums']:+.2f} | "
                     f"{p['median']:+.2f} [{p['min']:+.2f}, {p['max']:+.2f}] | {'yes' if x['passes'] else 'no'} |")
    eq = r["equivalence"]
    lines += [
        "",
        f"**Verdict: {r['verdict']}** (target: the trainer adds at most {r['target_pct']:g} % per step). "
        f"{r['verdict_note'][0].upper()}{r['verdict_note'][1:]}.",
        "",
        f"Same work: max |w_trainer - w_bare| after {r['steps']} steps = {eq['max_abs_weight_diff']}.",
        "",
        f"Warm-up: the bare warm-up run's steps took {', '.join(f'{v:.0f}' for v in r['warmup']['bare_step_ms'])} ms; "
        f"in the measured bare runs the first step took {_fmt(r['bare_first_step_ms_median'])} ms (median) and "
        f"later steps {_fmt(r['bare_later_steps_ms_median'])} ms.",
        "",
        "Method:",
        "",
        *[f"- {n}" for n in r["method_notes"]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    _r = main()
    _s = _r["summary"]
    print(f"bare {_s['bare']['median_ms']:.1f} ms/step; trainer {_s['trainer_progress_on']['median_ms']:.1f} (progress on, "
          f"{_r['overhead_pct']['progress_on']:+.2f}%), {_s['trainer_progress_off']['median_ms']:.1f} (progress off, "
          f"{_r['overhead_pct']['progress_off']:+.2f}%); verdict {_r['verdict']} ({_r['verdict_note']})")
