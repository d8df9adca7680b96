"""Data-loader throughput on CIFAR-100: FFCV vs the torchvision DataLoader (and the in-memory
BatchLoader for reference), against what a WRN-16-1 training step consumes.

    python -m npasbench.perf.loader_speed [--data-root ../shared/data] [--beton-dir DIR] [--repeats 3]
        [--batch-size 128] [--workers -1] [--train-steps 40] [--out results/perf/loader_speed.json]

A benchmark script, not a timed test: it writes its measurements (JSON, plus a markdown summary
beside it, both atomically) and never fails on speed. Target: FFCV at least 2x the torchvision
loader, and never the bottleneck of training.

Arms -- identical work: the full CIFAR-100 training split (50,000 images), batch 128, drop_last, the
suite's training augmentation (flip, 4-pixel zero-pad random crop, cutout 16) and normalisation
(the in-memory pipeline's constants and code), float32 NCHW batches on the CPU:
  * ``memory``: `BatchLoader` over the pickles in RAM (data.pipeline=memory, the default);
  * ``torchvision``: `TorchvisionLoader`, a DataLoader with ``--workers`` worker processes;
  * ``ffcv``: `FFCVLoader` over betons written by `npas data prepare` (JIT on, ``--workers`` threads).
Each arm runs in a fresh subprocess (ffcv's numba threads, fork-based DataLoader workers and torch's
thread settings cannot leak between arms); arms are interleaved, their order rotated each repeat.
In each: build the loader (timed), epoch 0 (timed: includes ffcv's JIT compilation and worker
start-up), epoch 1 (the **loader-only rate**: images / seconds from the first batch request to the
last batch), then **end to end**: WRN-16-1 (unshared, SGD lr 0.1, momentum 0.9 Nesterov, wd 5e-4)
trained on epoch 2's batches -- 5 warm-up steps, then ``--train-steps`` timed steps including every
wait for a batch.
The ``step`` arm measures the training step alone on one fixed, pre-built batch (the consumption
rate); a loader is "the bottleneck" when its end-to-end rate falls clearly (> 5 %) below that.
The machine's load average is recorded per run: the box is shared, so read the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .timing import loadavg

SCHEMA = "npasbench.perf.loader_speed/1"
DEFAULT_OUT = "results/perf/loader_speed.json"
ARMS = ("memory", "torchvision", "ffcv")
ARCH = "wrn-16-1"
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
CUTOUT = 16
WARMUP_STEPS = 5
BOTTLENECK_PCT = 5.0
TARGET_RATIO = 2.0


# --------------------------------------------------------------------------------------- one arm (subprocess)
def _model_and_optimizer(num_classes: int):
    import torch

    from ..factory import create_model
    from ..trainer.environment import seed_everything

    seed_everything(0)
    model = create_model("unshared", ARCH, "cifar100", num_classes=num_classes).model
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    return model, opt


def _step(model, opt, x, y) -> None:
    import torch.nn.functional as F

    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ..data import DataConfig, load_data, make_loader

    out: dict[str, Any] = {"arm": arm, "load_before": loadavg(), "torch_threads": torch.get_num_threads()}
    data_cfg = DataConfig(name="cifar100", root=args.data_root, beton_dir=args.beton_dir,
                          pipeline="memory" if arm == "step" else arm, cutout=CUTOUT, num_workers=args.workers)
    bundle = load_data(data_cfg)
    model, opt = _model_and_optimizer(bundle.num_classes)
    if arm == "step":  # the consumption rate: one fixed batch, no loading at all
        x, y = next(make_loader(bundle, "train", args.batch_size, data_cfg, seed=0, drop_last=True).epoch(0))
        for _ in range(WARMUP_STEPS):
            _step(model, opt, x, y)
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            _step(model, opt, x, y)
        seconds = time.perf_counter() - t0
        out.update(step_images_per_s=args.train_steps * args.batch_size / seconds, seconds=seconds)
        out["load_after"] = loadavg()
        return out
    t0 = time.perf_counter()
    loader = make_loader(bundle, "train", args.batch_size, data_cfg, seed=0, drop_last=True)
    out["build_s"] = time.perf_counter() - t0
    out["describe"] = loader.describe() if hasattr(loader, "describe") else {"pipeline": "memory"}
    out["batches_per_epoch"] = len(loader)
    for epoch, key in ((0, "epoch0"), (1, "epoch1")):
        n = 0
        t0 = time.perf_counter()
        for x, y in loader.epoch(epoch):
            n += y.shape[0]
        seconds = time.perf_counter() - t0
        out[key] = {"images": n, "seconds": seconds, "images_per_s": n / seconds}
        if torch.get_num_threads() != out["torch_threads"]:
            raise RuntimeError(f"{arm}: the loader changed torch's thread count to {torch.get_num_threads()}")
    out["loader_images_per_s"] = out["epoch1"]["images_per_s"]
    # end to end: train on the loader's batches, every wait for a batch included
    it = loader.epoch(2)
    for _ in range(WARMUP_STEPS):
        x, y = next(it)
        _step(model, opt, x, y)
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        x, y = next(it)
        _step(model, opt, x, y)
    seconds = time.perf_counter() - t0
    it.close()
    out["e2e"] = {"steps": args.train_steps, "seconds": seconds,
                  "images_per_s": args.train_steps * args.batch_size / seconds}
    out["load_after"] = loadavg()
    return out


# --------------------------------------------------------------------------------------- the driver
def ensure_betons(data_root: str, beton_dir: Path, workers: int) -> dict[str, Any]:
    """Full CIFAR-100 betons in ``beton_dir`` (reused when a complete pair is there)."""
    from ..data import betons
    from ..data.prepare import prepare_cifar

    def complete() -> bool:
        for split, n in (("train", 50_000), ("test", 10_000)):
            side = betons.sidecar_path(betons.beton_path(beton_dir, "cifar100", split))
            if not side.is_file():
                return False
            meta = json.loads(side.read_text())
            if meta.get("num_samples") != n or meta.get("limit"):
                return False
        return True

    reused = complete()
    if not reused:
        prepare_cifar("cifar100", data_root, str(beton_dir), workers=workers, progress=True)
    meta = {s: json.loads(betons.sidecar_path(betons.beton_path(beton_dir, "cifar100", s)).read_text())
            for s in ("train", "test")}
    return {"dir": str(beton_dir), "reused": reused,
            "write_seconds": {s: m["write_seconds"] for s, m in meta.items()},
            "file_bytes": {s: m["file_bytes"] for s, m in meta.items()}}


def spawn_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_path = fh.name
    cmd = [sys.executable, "-m", "npasbench.perf.loader_speed", "--arm", arm, "--arm-out", result_path,
           "--data-root", args.data_root, "--beton-dir", str(args.beton_dir), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--train-steps", str(args.train_steps)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.arm_timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"arm {arm} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(Path(result_path).read_text())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(result_path)


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = {a: [r for r in runs if r["arm"] == a] for a in (*ARMS, "step")}
    step = [r["step_images_per_s"] for r in by["step"]]
    step_med = med(step)
    arms: dict[str, Any] = {}
    for a in ARMS:
        rs = by[a]
        loader = [r["loader_images_per_s"] for r in rs]
        e2e = [r["e2e"]["images_per_s"] for r in rs]
        arms[a] = {
            "loader_images_per_s": {"median": med(loader), "min": min(loader), "max": max(loader), "per_repeat": loader},
            "e2e_images_per_s": {"median": med(e2e), "min": min(e2e), "max": max(e2e), "per_repeat": e2e},
            "build_s_median": med([r["build_s"] for r in rs]),
            "first_epoch_s_median": med([r["epoch0"]["seconds"] for r in rs]),
            "loader_vs_step": med(loader) / step_med,
            "e2e_slowdown_pct": 100.0 * (1.0 - med(e2e) / step_med),
            "describe": rs[0]["describe"],
        }
        arms[a]["bottleneck"] = arms[a]["e2e_slowdown_pct"] > BOTTLENECK_PCT or med(loader) < step_med
    ratio = arms["ffcv"]["loader_images_per_s"]["median"] / arms["torchvision"]["loader_images_per_s"]["median"]
    return {
        "step_images_per_s": {"median": step_med, "min": min(step), "max": max(step), "per_repeat": step},
        "arms": arms,
        "ffcv_over_torchvision": ratio,
        "targets": {"ffcv_at_least_2x_torchvision": ratio >= TARGET_RATIO,
                    "ffcv_never_the_bottleneck": not arms["ffcv"]["bottleneck"]},
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    st = report["settings"]
    a = s["arms"]
    lines = [
        "# Data-loader throughput: FFCV vs torchvision DataLoader (CIFAR-100)",
        "",
        f"Created {report['created_at']} by `{report['command']}` (full data: `loader_speed.json`).",
        "",
        f"CIFAR-100 train (50,000 images), batch {st['batch_size']}, drop_last, flip + 4-px pad-crop + cutout "
        f"{CUTOUT} + normalisation, float32 CPU batches; workers {st['workers_resolved']} (ffcv threads / DataLoader "
        f"processes) on {report['hardware']['cpu_count']} cores, torch {report['packages']['torch']}, "
        f"ffcv {report['packages'].get('ffcv')}, JIT on. {st['repeats']} repeats, each arm in a fresh process, "
        f"order rotated. Consumer: {ARCH} training step (SGD), {st['train_steps']} timed steps after "
        f"{WARMUP_STEPS} warm-up steps.",
        "",
        "| arm | loader only, img/s (median) | min - max | x WRN-16-1 step rate | end to end img/s (median) | "
        "slowdown vs step alone | bottleneck? | build s | first epoch s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ARMS:
        r = a[name]
        li, e = r["loader_images_per_s"], r["e2e_images_per_s"]
        lines.append(
            f"| {name} | {li['median']:,.0f} | {li['min']:,.0f} - {li['max']:,.0f} | {r['loader_vs_step']:.1f}x | "
            f"{e['median']:,.0f} | {r['e2e_slowdown_pct']:+.1f} % | {'yes' if r['bottleneck'] else 'no'} | "
            f"{r['build_s_median']:.1f} | {r['first_epoch_s_median']:.1f} |")
    sp = s["step_images_per_s"]
    lines += [
        f"| step alone ({ARCH}) | {sp['median']:,.0f} (consumption) | {sp['min']:,.0f} - {sp['max']:,.0f} | 1.0x | | | | | |",
        "",
        f"**FFCV / torchvision (loader only): {s['ffcv_over_torchvision']:.2f}x** (target >= {TARGET_RATIO:.0f}x: "
        f"{'met' if s['targets']['ffcv_at_least_2x_torchvision'] else 'NOT met'}). "
        f"FFCV the bottleneck of {ARCH} training: "
        f"{'no' if s['targets']['ffcv_never_the_bottleneck'] else 'YES'} (bottleneck = end-to-end rate more than "
        f"{BOTTLENECK_PCT:.0f} % below the step alone, or a loader-only rate below it).",
        "",
        f"Betons: {report['betons']['dir']} (train {report['betons']['file_bytes']['train'] / 2**20:,.0f} MiB, "
        f"written in {report['betons']['write_seconds']['train']:.1f} s; test "
        f"{report['betons']['write_seconds']['test']:.1f} s{'; reused' if report['betons']['reused'] else ''}).",
        "",
        f"Load average (1 min) per run: {', '.join(str(r['load_before'][0]) if r['load_before'] else '?' for r in report['runs'])} "
        "(the machine is shared: other jobs may have run; compare the per-repeat figures in the JSON).",
        "",
        "Notes:",
        "",
    ]
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


NOTES = [
    "loader only = epoch 1 of a loader (epoch 0 includes ffcv's numba compilation and DataLoader worker start-up, "
    "reported as 'first epoch s'): images / seconds from the first batch request to the last batch, including "
    "the finishing step (normalise + cutout) in the consuming process.",
    "end to end = the same loader feeding WRN-16-1 SGD steps (batch waits included); 'step alone' trains on one "
    "fixed batch, so it is the most a loader can deliver to this model on this machine.",
    "all pipelines share normalisation and cutout code; crop/flip draws differ in implementation (BatchLoader: "
    "batched tensor ops; torchvision: v2 RandomCrop/RandomHorizontalFlip per sample in workers; ffcv: "
    "RandomTranslate/RandomHorizontalFlip in numba).",
    "on 2 cores the loader's threads/processes compete with the training step's 2 torch threads: the end-to-end "
    "column is the one that matters for training speed.",
]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.perf.loader_speed", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=os.environ.get("NPAS_CIFAR100_ROOT", "../shared/data"))
    p.add_argument("--beton-dir", default=str(Path(tempfile.gettempdir()) / "npasbench-betons"),
                   help="where the CIFAR-100 betons are written (reused if complete)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=-1, help="data.num_workers for ffcv and torchvision (-1: all cores)")
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arm-timeout", type=int, default=900)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # internal: run one arm in this process
    p.add_argument("--arm-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.arm:  # child process
        from ..atomic import write_json

        write_json(args.arm_out, run_arm(args.arm, args))
        return 0

    from ..atomic import write_json, write_text
    from ..data.betons import clamp_workers
    from ..provenance import git_info, hardware, package_versions

    args.beton_dir = Path(args.beton_dir)
    command = "python -m npasbench.perf.loader_speed " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    betons_info = ensure_betons(args.data_root, args.beton_dir, args.workers)
    runs: list[dict[str, Any]] = []
    order = [*ARMS, "step"]
    for rep in range(args.repeats):
        k = rep % len(order)
        for arm in order[k:] + order[:k]:
            t0 = time.perf_counter()
            r = spawn_arm(arm, args)
            r["repeat"] = rep
            runs.append(r)
            rate = r.get("loader_images_per_s") or r.get("step_images_per_s")
            e2e = r.get("e2e", {}).get("images_per_s")
            print(f"repeat {rep + 1}/{args.repeats} {arm:12s} {rate:9,.0f} img/s"
                  + (f"  end to end {e2e:7,.0f} img/s" if e2e else "") + f"  ({time.perf_counter() - t0:.0f} s, "
                  f"load {r['load_before'][0] if r['load_before'] else '?'})", flush=True)
    report = {
        "schema": SCHEMA,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "git": git_info(),
        "packages": package_versions(),
        "hardware": hardware("cpu"),
        "settings": {"batch_size": args.batch_size, "workers": args.workers,
                     "workers_resolved": clamp_workers(args.workers), "train_steps": args.train_steps,
                     "warmup_steps": WARMUP_STEPS, "repeats": args.repeats, "cutout": CUTOUT, "arch": ARCH,
                     "data_root": args.data_root},
        "betons": betons_info,
        "runs": runs,
        "summary": summarize(runs),
        "notes": NOTES,
    }
    out = Path(args.out)
    write_json(out, report)
    write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
