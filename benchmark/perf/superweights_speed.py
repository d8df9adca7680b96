"""SuperWeight speed: the composed ensemble's training step and every member's small-batch inference
against the same members unshared (the suite's ``ensemble`` baseline), and, optionally, against the
official SuperWeights code measured side by side in the same process.

    python -m npasbench.perf.superweights_speed [--members wrn-16-4,wrn-16-2] [--max-params 1000000]
        [--steps 2] [--repeats 8] [--infer-seconds 0.5]
        [--official /path/to/an/export/of/piotr-teterwak/SuperWeights] [--out results/perf/superweights_speed.json]

Targets (issue 4): a SuperWeight training step (batch 128, every member forward, loss = sum of the
members' cross-entropies, one backward, one SGD step) at most 10% slower than the same members
unshared, and no slower than the official code's; in eval mode under ``torch.no_grad``, each
member's forward at batch 1 and 8 at most 5% slower than the unshared member's (composed weights
are cached until a parameter changes).

Model: ``superweights`` with ``group_split_epochs`` 0 (no search: depth-bin clusters, the structure
a search also yields) and ``coefficient_share`` on, i.e. one coefficient vector per bank: the
official code's mode for the same flags (``main_no.py`` with ``--coefficient_share`` and
``--group_split_epochs 0`` sets ``coeff_share_idxs`` {net: {layer: {'layer': 0, 'net': 0}}}).
Budget ``max_params`` = the banks' total (the official knob).

Method: every arm is built once from the same seed and warmed up; arms are interleaved (training: they
alternate every ``--steps`` SGD steps) and their order rotated on each repeat; the median over
repeats of the per-repeat median is reported, next to the median over repeats of the ratio within a
repeat ("paired": arms measured seconds apart, so slow drifts of the machine cancel) and the fastest
repeat (inference: per-call times of ``torch.utils.benchmark``'s ``blocked_autorange`` over
``--infer-seconds``, members timed one at a time via ``NPASModel.forward_member``). The composition
alone (every member's ``produce()`` with autograd on, then its backward into the banks with unit
gradients) is timed in isolation as a fraction of the unshared step: it is the work sharing adds to a
step, and far less noisy than the difference of two seconds-long steps on a shared machine.
Pass/fail is judged on the paired figures. Every measurement also records the CPU other processes
used meanwhile (``/proc/stat``); a contended one is re-taken after waiting for quiet
(``--max-other-cores``, ``--quiet-wait``).

The official code (``--official``) is imported from a checkout the user provides; it is not part of
this repository. Its ``models.swrn`` is built exactly as ``main_no.py``'s ``load_model`` builds the
teacher and students (shared ``params`` list, ``layer_shapes`` of every member); it needs the
one-line CPU patches ``x.get_device()`` -> ``x.device`` in ``models/layers.py`` and
``models/param_bank.py`` (the script checks and says so).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import write_json, write_text
from ..budget import Budget
from ..errors import ConfigError, NPASError
from ..factory import make_request
from ..models.generated import GeneratedWeight
from ..plugins import create_method
from ..provenance import hardware, package_versions
from ..trainer.optim import param_groups
from .timing import Guard, add_guard_args, fastest_pct, interleaved, loadavg, median_pct, paired_pct, time_infer

LR = 0.01  # speed does not depend on it; small enough that random data never drives the weights to inf/NaN
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


# ---------------------------------------------------------------------------------- arms
class Arm:
    """One side of the comparison: its member networks, the modules holding its parameters (for the
    optimizer) and the weight-decay groups its training code uses."""

    def __init__(self, members: list[nn.Module], owner: nn.Module, groups: list[dict],
                 forward_member: Callable[[int, torch.Tensor], torch.Tensor]) -> None:
        self.members = members
        self.owner = owner
        self.groups = groups
        self.forward_member = forward_member

    def train(self, mode: bool = True) -> None:
        self.owner.train(mode)

    def params(self) -> int:
        return sum(p.numel() for p in self.owner.parameters() if p.requires_grad)


def _suite_arm(model: nn.Module, no_decay_roles: frozenset[str]) -> Arm:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, WEIGHT_DECAY, no_decay_roles)]
    return Arm(list(model.members), model, groups, model.forward_member)


def build_superweights(members: str, max_params: int, classes: int) -> Arm:
    torch.manual_seed(0)
    method = create_method("superweights", {"members": members, "group_split_epochs": 0})
    first = members.split(",")[0].strip()
    model = method.build(make_request(first, "cifar100" if classes == 100 else "cifar10",
                                      Budget(max_params, "max_params")))
    return _suite_arm(model, method.no_weight_decay_roles())


def build_ensemble(members: str, classes: int) -> Arm:
    torch.manual_seed(0)
    method = create_method("ensemble", {"members": members})
    first = members.split(",")[0].strip()
    model = method.build(make_request(first, "cifar100" if classes == 100 else "cifar10", None))
    return _suite_arm(model, method.no_weight_decay_roles())


# ------------------------------------------------------------------------------ official
OFFICIAL_PATCHED = ("models/layers.py", "models/param_bank.py")
OFFICIAL_DEFAULTS = dict(upsample_type="inter", upsample_window=1, bank_size=8, trans=0, param_group_bins=4,
                         bin_type="all_nets_groupslim_depth", separate_kernels=True, allocation_normalized=False,
                         share_linear=False, groups=-1)


def official_models(path: str):
    """``models`` of the official checkout at ``path`` (CPU-patched), or a ConfigError saying what is wrong."""
    root = Path(path).expanduser().resolve()
    if not (root / "models" / "swrn.py").is_file():
        raise ConfigError(f"--official: {root} is not a checkout of piotr-teterwak/SuperWeights "
                          "(no models/swrn.py).")
    unpatched = [f"{rel}:{n}" for rel in OFFICIAL_PATCHED
                 for n, line in enumerate((root / rel).read_text().splitlines(), 1) if ".get_device()" in line]
    if unpatched:
        raise ConfigError(
            f"--official: the checkout at {root} lacks the CPU patch: {', '.join(unpatched)} call "
            "`.get_device()`, which fails on CPU tensors. Replace `x.get_device()` with `x.device` on those lines "
            "(three one-line changes: models/layers.py SConv2d.forward, models/param_bank.py twice), then rerun.")
    loaded = sys.modules.get("models")
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve().parent.parent != root:
            raise ConfigError(f"--official: another module named 'models' is already imported "
                              f"({getattr(loaded, '__file__', loaded)}); run the benchmark in a fresh process.")
        return loaded
    sys.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("models")
    finally:
        sys.path.remove(str(root))


def wrn_depth_width(arch: str) -> tuple[int, int]:
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", arch.strip())
    if m is None:
        raise ConfigError(f"--official: member {arch!r} is not wrn-<depth>-<integer width>; the official swrn "
                          "builds only those.")
    return int(m.group(1)), int(m.group(2))


def _official_net(models, share: str, depth: int, width: int, max_params: int, classes: int, params, csi, shapes):
    o = OFFICIAL_DEFAULTS
    if share == "none":
        return models.swrn("none", None, None, depth, width, None, 0, classes, None, None, params=None,
                           param_group_bins=None, bin_type=None, separate_kernels=False, allocation_normalized=False,
                           share_linear=False, share_coeff=False, coeff_share_idxs=None, layer_shapes=None)
    return models.swrn(share, o["upsample_type"], o["upsample_window"], depth, width, o["bank_size"], max_params,
                       classes, o["groups"], o["trans"], params, param_group_bins=o["param_group_bins"],
                       bin_type=o["bin_type"], separate_kernels=o["separate_kernels"],
                       allocation_normalized=o["allocation_normalized"], share_linear=o["share_linear"],
                       share_coeff=True, coeff_share_idxs=csi, layer_shapes=shapes)


def official_layer_shapes(models, dw: list[tuple[int, int]], classes: int) -> list[list[tuple]]:
    """``main_no.get_layer_shapes`` (share_linear off): every member's conv shapes in module order."""
    out = []
    for i, (d, w) in enumerate(dw):
        net = _official_net(models, "none", d, w, 0, classes, None, None, None)
        out.append([(i, j, m.weight.shape) for j, m in enumerate(m for m in net.modules() if isinstance(m, nn.Conv2d))])
    return out


def _official_groups(members: list[nn.Module]) -> list[dict]:
    """``main_no.group_weight_decay``: no weight decay on parameters named like 'coefficients'."""
    decay, no_decay, seen = [], [], set()
    for net in members:
        for name, p in net.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if "coefficients" in name else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": WEIGHT_DECAY}]


def build_official(path: str, members: str, max_params: int, classes: int, shared: bool) -> Arm:
    """Teacher + students as ``main_no.load_model`` builds them (``--coefficient_share``, no group search)."""
    models = official_models(path)
    dw = [wrn_depth_width(a) for a in members.split(",") if a.strip()]
    torch.manual_seed(0)
    nets: list[nn.Module] = []
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not shared:
            nets = [_official_net(models, "none", d, w, 0, classes, None, None, None) for d, w in dw]
        else:
            shapes = official_layer_shapes(models, dw, classes)
            csi = {net: {layer: {"layer": 0, "net": 0} for layer in range(dw[0][0] + 1)} for net in range(len(dw))}
            params = None
            for i, (d, w) in enumerate(dw):
                net = _official_net(models, "wavg_slide", d, w, max_params, classes, params, csi[i], (i, shapes))
                nets.append(net)
                if i == 0:
                    params = [net.bank.get_params()] if net.bank else None
                elif params is not None and net.bank is not None:
                    params.append(net.bank.get_params())
            # the official init leaves each bank's last (n mod 9) entries as uninitialised memory; zero them (as
            # ours does) so garbage cannot make this arm slower (denormals) or produce NaN
            SharedParameters = models.param_bank.SharedParameters
            with torch.no_grad():
                for net in nets:
                    for mod in net.modules():
                        if isinstance(mod, SharedParameters) and isinstance(mod._params, nn.Parameter):
                            n = mod._params.numel()
                            mod._params[(n // 9) * 9:] = 0
    owner = nn.ModuleList(nets)
    return Arm(nets, owner, _official_groups(nets), lambda i, x: nets[i](x))


# ------------------------------------------------------------------------------- timing
class StepTimer:
    """Times SGD steps of one arm; keeps the arm's optimizer across repeats (so arms can alternate every few steps)."""

    def __init__(self, arm: Arm) -> None:
        self.arm = arm
        self.opt = torch.optim.SGD(arm.groups, lr=LR, momentum=MOMENTUM, nesterov=True)

    def steps(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
        """SGD steps: every member's forward, sum of their cross-entropies, one backward, one step."""
        self.arm.train()
        n = len(self.arm.members)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = sum(F.cross_entropy(self.arm.forward_member(i, x), y) for i in range(n))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            times.append(time.perf_counter() - t0)
        return times


def composed_weights_ours(arm: Arm) -> Callable[[], list[torch.Tensor]]:
    def run() -> list[torch.Tensor]:
        out = []
        for member in arm.members:
            member.produce()
            out.extend(m.current for m in member.modules() if isinstance(m, GeneratedWeight))
        return out
    return run


def composed_weights_official(arm: Arm, models) -> Callable[[], list[torch.Tensor]]:
    layers = [m for net in arm.members for m in net.modules() if isinstance(m, models.layers.SConv2d)]
    return lambda: [layer.get_params() for layer in layers]


def time_composition(compose: Callable[[], list[torch.Tensor]], calls: int, forward_ms: list[float]) -> list[float]:
    """Composition-only work per training step: every member's weights composed from the banks
    (autograd on), then back-propagated into banks and coefficients with unit gradients. Returns the
    per-call seconds (after two warm-up calls); appends the forward-only milliseconds to ``forward_ms``."""

    def once() -> tuple[float, float]:
        t0 = time.perf_counter()
        ws = compose()
        t1 = time.perf_counter()
        torch.autograd.backward(ws, [torch.ones_like(w) for w in ws])
        return t1 - t0, time.perf_counter() - t0

    for _ in range(2):
        once()
    times = [once() for _ in range(calls)]
    forward_ms.append(1000 * statistics.median(t[0] for t in times))
    return [t[1] for t in times]


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", default="wrn-16-4,wrn-16-2", help="ensemble members, deepest/widest first")
    ap.add_argument("--max-params", type=int, default=1_000_000, help="bank total (budget mode max_params)")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads during the run (restored afterwards)")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps per arm and repeat")
    ap.add_argument("--repeats", type=int, default=8, help="interleaved repeats (order rotated: with 4 arms, >= 4 "
                    "puts every arm in every position)")
    ap.add_argument("--infer-repeats", type=int, default=8)
    ap.add_argument("--infer-batches", default="1,8")
    ap.add_argument("--infer-seconds", type=float, default=0.5, help="measuring time per arm, member, batch and repeat")
    ap.add_argument("--official", default=os.environ.get("NPAS_SW_OFFICIAL"),
                    help="path to a CPU-patched checkout of the official SuperWeights code (env NPAS_SW_OFFICIAL)")
    ap.add_argument("--composition-calls", type=int, default=10, help="timed compositions per arm and repeat")
    add_guard_args(ap)
    ap.add_argument("--out", default="results/perf/superweights_speed.json")
    args = ap.parse_args(argv)
    members = ",".join(a.strip() for a in args.members.split(",") if a.strip())
    names = members.split(",")
    official_mod = official_models(args.official) if args.official else None  # fail early on a bad checkout
    if args.official:
        for a in names:
            wrn_depth_width(a)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, members, names, official_mod, argv)
    finally:
        torch.set_num_threads(threads_before)


def _run(args, members: str, names: list[str], official_mod, argv) -> dict:
    load = {"start": loadavg()}
    t_start = time.perf_counter()
    guard = Guard.from_args(args)
    other_at_start = guard.wait_quiet() if args.quiet_wait > 0 else None
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, args.classes, (args.batch_size,))
    builders: dict[str, Callable[[], Arm]] = {
        "unshared": lambda: build_ensemble(members, args.classes),
        "superweights": lambda: build_superweights(members, args.max_params, args.classes),
    }
    if args.official:
        builders["official_unshared"] = lambda: build_official(args.official, members, 0, args.classes, False)
        builders["official"] = lambda: build_official(args.official, members, args.max_params, args.classes, True)
    probe = {k: b() for k, b in builders.items()}
    params = {k: a.params() for k, a in probe.items()}
    bank_params = {"superweights": sum(p.numel() for n, m in probe["superweights"].owner.shared.items()
                                       if n.startswith("bank_") for p in m.parameters())}
    if args.official:
        seen: dict[int, int] = {}
        for net in probe["official"].members:
            for mod in net.modules():
                if isinstance(mod, official_mod.param_bank.SharedParameters):
                    seen[id(mod._params)] = mod._params.numel()
        bank_params["official"] = sum(seen.values())
    del probe

    # -- composition alone (interleaved with the official's when given)
    comp_models = {"superweights": composed_weights_ours(builders["superweights"]())}
    if args.official:
        comp_models["official"] = composed_weights_official(builders["official"](), official_mod)
    forward_ms: dict[str, list[float]] = {k: [] for k in comp_models}
    composition = interleaved(
        {k: (lambda k=k, c=c: time_composition(c, args.composition_calls, forward_ms[k]))
         for k, c in comp_models.items()},
        args.repeats, "composition", guard.measure)
    del comp_models
    for k, v in composition.items():
        v["forward_median_ms"] = statistics.median(forward_ms[k])

    # -- training steps: every arm built once, warmed up (2 steps), then arms alternate every --steps steps
    trainers = {k: StepTimer(b()) for k, b in builders.items()}
    for t in trainers.values():
        t.steps(x, y, 2)
    train = interleaved({k: (lambda t=t: t.steps(x, y, args.steps)) for k, t in trainers.items()},
                        args.repeats, "train steps", guard.measure)
    del trainers
    load["after_train"] = loadavg()

    # -- inference, one member at a time
    infer: dict[str, dict[str, dict]] = {}
    arms = {k: b() for k, b in builders.items()}
    for a in arms.values():
        a.train(False)
    batches = [int(b) for b in args.infer_batches.split(",")]
    for bs in batches:
        xi = torch.randn(bs, 3, 32, 32)
        for i, name in enumerate(names):
            fns = {k: (lambda x_, a=a, i=i: a.forward_member(i, x_)) for k, a in arms.items()}
            infer[f"m{i}:{name}:b{bs}"] = interleaved(
                {k: (lambda f=f: time_infer(f, xi, args.infer_seconds)) for k, f in fns.items()},
                args.infer_repeats, f"inference {name} batch {bs}", guard.measure)
    del arms
    load["after_inference"] = loadavg()

    for v in composition.values():
        v["pct_of_unshared_step"] = 100 * v["median_ms"] / train["unshared"]["median_ms"]
        v["forward_pct_of_unshared_step"] = 100 * v["forward_median_ms"] / train["unshared"]["median_ms"]
    load["end"] = loadavg()


    # Pass/fail uses the paired figures: this machine's speed drifts by tens of percent over seconds to minutes,
    # for every arm alike, so ratios within a repeat cancel what the medians of separate repeats do not. The
    # median-based (and, for inference, fastest-repeat) figures are reported next to them.
    verdict: dict = {
        "basis": "paired (median over repeats of the within-repeat ratio)",
        "train_superweights_vs_unshared_paired_pct": paired_pct(train, "superweights", "unshared"),
        "train_superweights_vs_unshared_pct": median_pct(train, "superweights", "unshared"),
        "composition_pct_of_unshared_step": composition["superweights"]["pct_of_unshared_step"],
        "infer_superweights_vs_unshared_paired_pct": {k: paired_pct(t, "superweights", "unshared")
                                                      for k, t in infer.items()},
        "infer_superweights_vs_unshared_pct": {k: median_pct(t, "superweights", "unshared") for k, t in infer.items()},
        "infer_superweights_vs_unshared_min_pct": {k: fastest_pct(t, "superweights", "unshared")
                                                   for k, t in infer.items()},
    }
    verdict["train_pass"] = verdict["train_superweights_vs_unshared_paired_pct"] <= 10.0
    verdict["train_pass_medians"] = verdict["train_superweights_vs_unshared_pct"] <= 10.0
    verdict["composition_pass"] = verdict["composition_pct_of_unshared_step"] <= 10.0
    verdict["infer_pass"] = all(v <= 5.0 for v in verdict["infer_superweights_vs_unshared_paired_pct"].values())
    verdict["infer_pass_medians"] = all(v <= 5.0 for v in verdict["infer_superweights_vs_unshared_pct"].values())
    verdict["infer_pass_min"] = all(v <= 5.0 for v in verdict["infer_superweights_vs_unshared_min_pct"].values())
    if args.official:
        verdict["train_superweights_vs_official_paired_pct"] = paired_pct(train, "superweights", "official")
        verdict["train_superweights_vs_official_pct"] = median_pct(train, "superweights", "official")
        verdict["train_official_vs_official_unshared_paired_pct"] = paired_pct(train, "official", "official_unshared")
        verdict["infer_superweights_vs_official_paired_pct"] = {k: paired_pct(t, "superweights", "official")
                                                                for k, t in infer.items()}
        verdict["train_not_slower_than_official"] = verdict["train_superweights_vs_official_paired_pct"] <= 0.0
        verdict["train_not_slower_than_official_medians"] = verdict["train_superweights_vs_official_pct"] <= 0.0
    contention = guard.summary()
    contention["other_cores_at_start"] = None if other_at_start is None else round(other_at_start, 3)
    # measured (not load averages, which lag and count our own threads): any measurement still contended
    high_load = contention["still_contended"] > 0
    result = {
        "benchmark": "superweights_speed", "members": names, "classes": args.classes, "max_params": args.max_params,
        "share_type": "wavg_slide", "coefficients": "one vector per bank (coefficient_share, no search)",
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "infer_repeats": args.infer_repeats, "infer_seconds": args.infer_seconds, "lr": LR, "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY, "params": params, "bank_params": bank_params,
        "threads": torch.get_num_threads(), "load_average": load, "contention": contention,
        "high_load": high_load,
        "wall_seconds": time.perf_counter() - t_start, "hardware": hardware("cpu"), "packages": package_versions(),
        "train": train, "inference": infer, "composition": composition, "verdict": verdict,
        "official": args.official is not None,
        "command": "python -m npasbench.perf.superweights_speed "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    write_json(out, result)
    write_text(out.with_suffix(".md"), report(result))
    print(report(result))
    return result


ARM_ORDER = ("unshared", "superweights", "official_unshared", "official")
LOAD_POINTS = ("start", "after_train", "after_inference", "end")


def report(r: dict) -> str:
    arms = [k for k in ARM_ORDER if k in r["train"]]  # write_json sorts keys
    infer = r["inference"]
    unshared_ms = r["train"]["unshared"]["median_ms"]
    v = r["verdict"]
    c = r["contention"]
    ok = lambda b: "pass" if b else "FAIL"  # noqa: E731
    lines = [f"# SuperWeight speed ({' + '.join(r['members'])}, max_params {r['max_params']:,}, "
             f"batch {r['batch_size']})",
             "",
             f"Command: `{r['command']}`; {r['threads']} threads; {r['wall_seconds']:.0f} s in all.",
             "",
             "Machine load: averages (1/5/15 min) "
             + "; ".join(f"{k} {tuple(r['load_average'][k])}" for k in LOAD_POINTS if k in r["load_average"])
             + ". Other processes' CPU during the measurements (from /proc/stat, this process excluded): median "
             f"{c['other_cores_median']} cores, max {c['other_cores_max']}; {c['retaken']} measurement(s) re-taken "
             f"after waiting for quiet ({c['waited_s']} s waited), {c['still_contended']} of {c['measurements']} "
             f"still above {c['max_other_cores']} cores.",
             "",
             "Ours: `superweights`, share_type wavg_slide, group_split_epochs 0, coefficient_share on = one "
             "coefficient vector per bank (the official mode for `--coefficient_share --group_split_epochs 0`). "
             "Unshared: the suite's `ensemble` baseline with the same members."
             + (" Official: piotr-teterwak/SuperWeights `models.swrn` teacher + students built as `main_no.py` "
                "`load_model` does (same flags, same coefficient mode; the banks' uninitialised n mod 9 tail zeroed); "
                "official_unshared: its `swrn('none', ...)` members." if r["official"] else ""),
             f"Training step: every member forward, loss = sum of cross-entropies, backward, SGD (momentum "
             f"{r['momentum']}, Nesterov, weight decay {r['weight_decay']}, none on coefficients); median over "
             f"{r['repeats']} interleaved repeats (arms alternate every {r['steps']} steps, order rotated) of the "
             "per-repeat median; min = fastest repeat; spread = slowest / fastest repeat of the same arm; paired = "
             "median over repeats of the ratio within a repeat.",
             "",
             "| arm | unique params | train ms/step | min | spread | vs unshared | paired |",
             "|---|---|---|---|---|---|---|"]
    un = r["train"]["unshared"]["per_repeat_ms"]
    for k in arms:
        t = r["train"][k]
        pair = 100 * (statistics.median(a / b for a, b in zip(t["per_repeat_ms"], un)) - 1)
        lines.append(f"| {k} | {r['params'][k]:,} | {t['median_ms']:.1f} | {t['min_ms']:.1f} | "
                     f"{t['spread_pct']:.0f}% | {100 * (t['median_ms'] / unshared_ms - 1):+.1f}% | {pair:+.1f}% |")
    extra = " | ours vs official (paired)" if r["official"] else ""
    lines += ["", f"Inference (eval, no_grad, one member via `forward_member`; ms per call, median over "
              f"{r['infer_repeats']} interleaved repeats of blocked_autorange {r['infer_seconds']} s; ours vs "
              "unshared by medians / paired / fastest repeats):", "",
              "| member, batch | " + " | ".join(arms) + " | ours vs unshared" + extra + " |",
              "|---|" + "---|" * (len(arms) + 1 + bool(extra))]
    for key, t in infer.items():
        _, name, b = key.split(":")
        row = (f"| {name}, {b[1:]} | " + " | ".join(f"{t[k]['median_ms']:.3f}" for k in arms)
               + f" | {v['infer_superweights_vs_unshared_pct'][key]:+.1f}% / "
               f"{v['infer_superweights_vs_unshared_paired_pct'][key]:+.1f}% / "
               f"{v['infer_superweights_vs_unshared_min_pct'][key]:+.1f}%")
        if r["official"]:
            row += f" | {v['infer_superweights_vs_official_paired_pct'][key]:+.1f}%"
        lines.append(row + " |")
    lines += ["", "Composition alone (every member's weights composed with autograd on, then backward into banks "
              "and coefficients with unit gradients; the work sharing adds to a step), as a share of the unshared "
              "step:", ""]
    for k in [k for k in ARM_ORDER if k in r["composition"]]:
        comp = r["composition"][k]
        lines.append(f"- {k}: {comp['median_ms']:.1f} ms (min {comp['min_ms']:.1f}; forward alone "
                     f"{comp['forward_median_ms']:.1f} ms) = {comp['pct_of_unshared_step']:.2f}% of the unshared step")
    lines += ["", "Targets (judged on the paired figures; the machine's speed drifts for every arm alike, which "
              "within-repeat ratios cancel; by medians in brackets):", "",
              f"- train step <= +10% vs unshared: {ok(v['train_pass'])} "
              f"({v['train_superweights_vs_unshared_paired_pct']:+.1f}%; medians "
              f"{v['train_superweights_vs_unshared_pct']:+.1f}%: "
              f"{ok(v['train_pass_medians'])})",
              f"- composition alone <= 10% of the unshared step: {ok(v['composition_pass'])} "
              f"({v['composition_pct_of_unshared_step']:.2f}%)",
              f"- inference <= +5% vs unshared, every member and batch: {ok(v['infer_pass'])} (max "
              f"{max(v['infer_superweights_vs_unshared_paired_pct'].values()):+.1f}%; medians: "
              f"{ok(v['infer_pass_medians'])}, "
              f"max {max(v['infer_superweights_vs_unshared_pct'].values()):+.1f}%; fastest repeats: "
              f"{ok(v['infer_pass_min'])})"]
    if r["official"]:
        lines.append(f"- train step not slower than official: {ok(v['train_not_slower_than_official'])} "
                     f"({v['train_superweights_vs_official_paired_pct']:+.1f}%; medians "
                     f"{v['train_superweights_vs_official_pct']:+.1f}%: "
                     f"{ok(v['train_not_slower_than_official_medians'])})")
    spread_train = max(t["spread_pct"] for t in r["train"].values())
    spread_infer = max(a["spread_pct"] for t in infer.values() for a in t.values())
    if r["repeats"] > 1 and r["infer_repeats"] > 1:
        lines += ["", f"Noise: the same arm's repeats differ by up to {spread_train:.0f}% (training) and "
                  f"{spread_infer:.0f}% (inference) on this machine, mostly drifts that hit every arm alike: "
                  "medians of separate repeats cannot resolve a few percent, the within-repeat (paired) ratios "
                  "largely can, and "
                  "the composition-alone figure measures the extra work directly."]
    if r["high_load"]:
        lines += ["", "Note: other processes were busy during some measurements (see above); step-time differences of "
                  "a few percent are within the noise, and the composition-alone figure is the robust one."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except NPASError as exc:  # a bad option or checkout: one clear line, no traceback
        sys.exit(f"superweights_speed: {exc}")
