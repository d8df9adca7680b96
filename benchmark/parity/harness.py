"""Learning parity: the official models and ours, trained through one identical loop, and ``npas train``.

    python -m npasbench.parity.harness --ssn /path/to/BryanPlummer/SSN --superweights /path/to/SuperWeights \
        [--data-root ../shared/data] [--seeds 0 1 2] [--epochs 3] [--out results/parity] [--only ROW ...]

One loop for every arm (``train_arm``): CIFAR-100 from our in-memory loader (flip + 4-px pad-crop +
cutout 16, order and augmentation drawn from the seed: every arm of a seed sees the same batches),
SGD 0.1 Nesterov momentum 0.9, weight decay 5e-4 except coefficients (the official
``group_weight_decay`` for the official models, our ``build_optimizer`` with the method's exemptions for
ours: shown step-equivalent by ``npasbench.parity.steps``), cosine learning rate per step, batch 128,
mean cross-entropy, then the test set. The model is initialised from the seed by its own code. The
``npas train`` arm runs the real trainer on the same config; ``npasbench.parity.pipeline`` shows its
training steps are bit-identical to the bare loop's on the same batches, so at the same seed it must
equal the "ours" arm (checked on seed 0, where both are run).

Every finished arm is one JSON under ``<out>/arms/`` (a cache hit on rerun: the harness is resumable and
the figures can be committed as they come); ``<out>/parity.md`` is rewritten from whatever exists:
mean +- sample standard deviation over the seeds run (n given), and ours minus official.
Nothing of the official code is copied: it is imported from the checkouts given by path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..atomic import write_json, write_text
from ..provenance import git_info, hardware, package_versions
from ..run_folder import RunFolder
from .official import cpu_device_lookups
from .steps import official_optimizer

BATCH, LR, MOMENTUM, WD, CUTOUT = 128, 0.1, 0.9, 5e-4, 16
SEARCH_EPOCHS = 1  # the search rows' pre-training, shortened alike in every arm (official 15 for SSN)


@dataclass(frozen=True)
class Row:
    """One model of the parity table and how each arm builds it."""

    name: str
    label: str
    method: str  # our method for the ours / npas-train arms
    budget: int | None  # max_params (the official knob; our budget_mode max_params)
    options: dict
    official: str | None  # "ssn" | "superweights" | None (no runnable official arm, see note)
    note: str = ""
    search: bool = False  # the method's search phase runs first in every arm (learned groups)

    def overrides(self, seed: int, epochs: int, root: str, out: str) -> dict[str, Any]:
        o = {"method.name": self.method, "model.arch": "wrn-16-1", "data.name": "cifar100", "data.root": root,
             "data.cutout": CUTOUT, "train.epochs": epochs, "train.batch_size": BATCH, "train.seed": seed,
             "train.eval_every": epochs, "optim.lr": LR, "optim.momentum": MOMENTUM, "optim.weight_decay": WD,
             "optim.schedule": "cosine", "optim.nesterov": True, "run.out": out, "run.progress": False}
        if self.budget:
            o["model.budget"], o["model.budget_mode"] = self.budget, "max_params"
        for k, v in self.options.items():
            o[f"method.options.{k}"] = v
        return o


ROWS = (
    Row("plain", "plain WRN-16-1", "unshared", None, {}, "ssn"),
    Row("ssn-wavg", "SSN WRN-16-1 wavg/inter, max_params 50k", "ssn", 50_000,
        {"share_type": "wavg", "upsample_type": "inter", "param_groups": 1}, "ssn"),
    Row("ssn-emb", "SSN WRN-16-1 emb/inter, max_params 50k", "ssn", 50_000,
        {"share_type": "emb", "upsample_type": "inter", "param_groups": 1}, None,
        "the official `emb` cannot be built unmodified (`set_layer_coeff` uses `params` before assignment for "
        "emb: UnboundLocalError), and the harness patches nothing but device lookups"),
    Row("ssn-learned", "SSN WRN-16-1, 4 learned groups (search: 1 epoch, wavg coefficients, 5M bank), wavg/inter, "
        "max_params 50k", "ssn", 50_000,
        {"share_type": "wavg", "upsample_type": "inter", "param_groups": 4, "group_type": "learned",
         "search_share_type": "wavg", "search_epochs": SEARCH_EPOCHS}, "ssn",
        "the search shortened alike in every arm (official --param_group_epochs 1; its LR schedule [8, 13] and ours "
        "leave the LR at 0.1 for that epoch); official arm: the official search model and coefficient extraction, "
        "scikit-learn KMeans with numpy seeded by the run seed (the official call has no random_state); ours: our "
        "seeded k-means (group_seed 0, 10 restarts)", search=True),
    Row("superweights", "SuperWeights WRN-16-1, 4 depth bins, max_params 100k, no search", "superweights", 100_000,
        {"group_split_epochs": 0, "coefficient_unshare_epochs": 0}, "superweights"),
    Row("superweights-search", "SuperWeights WRN-16-1, 4 depth bins, max_params 135k, gradient search 1 epoch + "
        "coefficient unsharing after epoch 2 (10 batches)", "superweights", 135_000,
        {"group_split_epochs": SEARCH_EPOCHS, "coefficient_unshare_epochs": 2, "coefficient_unshare_batches": 10},
        "superweights",
        "the CPU grid's superweights [short] schedule (official --group_split_epochs 1 --coefficient_unshare_epochs 2, "
        "unsharing on 10 batches instead of the whole training set); max_params 135k: the grid's searches estimate "
        "~99k after one round (100k would be at the edge; fits whatever the gradients from 149,504); official arm: "
        "the official search model, HOOK gradients on the seed's first training batch, the official threshold loop "
        "(assign_groups), the final model from its clusters and share map, main_no.analyze_gradients + "
        "compare_grads + add_param_group at the end of epoch 2; unsharing threshold 0.9 in every arm (ours' default; "
        "main_no.py's argparse default is 0.5) on the batches npas train reads (train loader seeded seed+7919)",
        search=True),
    Row("superweights-fanin", "SuperWeights as above, option bank_init = fan_in", "superweights", 100_000,
        {"group_split_epochs": 0, "coefficient_unshare_epochs": 0, "bank_init": "fan_in"}, None,
        "not the official init (N(0, 2/9) whatever the fan-in): our documented option, templates N(0, 2/fan_in) "
        "for the mean fan-in of a bank's layers; no official arm by design"),
)


def _loaders(root: str, seed: int, epochs: int):
    from ..config import build_config
    from ..data import load_data, make_loader

    cfg = build_config({}, {"data.name": "cifar100", "data.root": root, "data.cutout": CUTOUT})
    bundle = load_data(cfg.data)
    train = make_loader(bundle, "train", BATCH, cfg.data, seed=seed, drop_last=True, device=torch.device("cpu"))
    test = make_loader(bundle, "test", 500, cfg.data, device=torch.device("cpu"))
    return train, test


def train_arm(model: torch.nn.Module, optimizer: torch.optim.Optimizer, forward: Callable, root: str, seed: int,
              epochs: int, desc: str, on_epoch_end: Callable | None = None) -> dict[str, Any]:
    """The one loop: cosine per step, mean cross-entropy, then top-1/top-5 on the test set.

    ``on_epoch_end(epoch, optimizer)`` (0-based epoch), if given, runs after every epoch (coefficient
    unsharing); a returned optimizer replaces the current one (a changed parameter set)."""
    import math

    train, test = _loaders(root, seed, epochs)
    total = epochs * len(train)
    k = 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=10)
    steps = len(train)
    for epoch in range(epochs):
        model.train()
        for b, (x, y) in enumerate(train.epoch(epoch)):
            # cosine per step, written as the trainer computes it (same float operations: the npas-train arm
            # can then be bit-identical to this loop at the same seed)
            lr = LR * (0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch + b / steps) / epochs))))
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            k += 1
            bar.update(1)
            if k % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if on_epoch_end is not None:
            optimizer = on_epoch_end(epoch, optimizer) or optimizer
    bar.close()
    train_s = time.perf_counter() - t0
    model.eval()
    return {**accuracy_on(forward, test), "steps": k, "train_s": round(train_s, 1)}


def accuracy_on(forward: Callable, test) -> dict[str, Any]:
    """Top-1 / top-5 (%) of ``forward`` over one pass of the ``test`` loader (no gradients)."""
    correct1 = correct5 = n = 0
    with torch.no_grad():
        for x, y in test.epoch(0):
            top = forward(x).topk(5, -1).indices
            correct1 += int((top[:, 0] == y).sum())
            correct5 += int((top == y[:, None]).any(-1).sum())
            n += y.numel()
    return {"top1": 100 * correct1 / n, "top5": 100 * correct5 / n, "test_examples": n}


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def search_arm(model: torch.nn.Module, optimizer: torch.optim.Optimizer, forward: Callable, root: str, seed: int,
               epochs: int, desc: str) -> float:
    """A search phase's pre-training in the one loop: the seed's batches from epoch 0, the LR at ``LR`` (both codes'
    search schedules leave it there for a shortened search), mean cross-entropy; the last epoch's mean loss."""
    train, _ = _loaders(root, seed, epochs)
    bar = tqdm(total=epochs * len(train), desc=desc, unit="step", dynamic_ncols=True, mininterval=10)
    for g in optimizer.param_groups:
        g["lr"] = LR
    model.train()
    total = seen = 0.0
    for epoch in range(epochs):
        total = seen = 0.0
        for x, y in train.epoch(epoch):
            loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * y.shape[0]
            seen += y.shape[0]
            bar.update(1)
    bar.close()
    return total / max(seen, 1)


def official_learned_groups(row: Row, repo: str, root: str, seed: int) -> tuple[list[int], float]:
    """The official SSN search: its one-group search model (``groups=None``: K = 4, softmax, 'inter') trained in the
    one loop, its coefficient extraction, scikit-learn ``KMeans`` (numpy seeded with the run seed)."""
    import numpy as np
    from sklearn.cluster import KMeans

    from .ssn_map import official_wrn
    from .ssn_search import official_coefficients

    net = official_wrn(repo, "wrn-16-1", 100, row.options["search_share_type"], "inter",
                       row.options.get("search_max_params", 5_000_000), groups=None, seed=seed)

    def forward(x):
        with cpu_device_lookups():
            return net(x)

    loss = search_arm(net, official_optimizer(net, LR, MOMENTUM, WD), forward, root, seed,
                      row.options["search_epochs"], f"{row.name} official search s{seed}")
    np.random.seed(seed)
    labels = KMeans(n_clusters=row.options["param_groups"]).fit(official_coefficients(net)).labels_
    return [int(v) for v in labels], loss


def our_learned_groups(row: Row, cfg, root: str, seed: int) -> tuple[list[int], float]:
    """Our SSN search in the same loop: our search model, our optimizer construction, our features and seeded
    k-means (what ``methods.ssn.search.run_search`` does inside ``npas train``)."""
    from ..factory import make_request
    from ..methods.ssn.kmeans import kmeans
    from ..methods.ssn.search import layer_features
    from ..plugins import create_method
    from ..trainer.optim import build_optimizer

    method = create_method("ssn", cfg.method.options)
    torch.manual_seed(seed)
    model = method.search_model(make_request("wrn-16-1", "cifar100", None))
    loss = search_arm(model, build_optimizer(model, cfg.optim, method.no_weight_decay_roles()), lambda x: model(x)[0],
                      root, seed, method.options.search_epochs, f"{row.name} ours search s{seed}")
    labels, _ = kmeans(layer_features(model), method.options.param_groups, seed=method.options.group_seed)
    return [int(v) for v in labels], loss


def run_official(row: Row, repos: dict[str, str], root: str, seed: int, epochs: int) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if row.search and row.official == "superweights":
        from . import sw_arm

        return sw_arm.run_official(row, repos["superweights"], root, seed, epochs, sys.modules[__name__])
    if row.search and row.official == "ssn":
        import numpy as np

        from .ssn_map import official_wrn

        labels, search_loss = official_learned_groups(row, repos["ssn"], root, seed)
        extra = {"groups": labels, "search_loss": search_loss}
        model = official_wrn(repos["ssn"], "wrn-16-1", 100, row.options["share_type"], row.options["upsample_type"],
                             row.budget or 0, groups=np.asarray(labels), seed=seed)
    elif row.official == "ssn":
        from .ssn_map import official_wrn

        share = row.options.get("share_type", "none")
        model = official_wrn(repos["ssn"], "wrn-16-1", 100, share, row.options.get("upsample_type", "inter"),
                             row.budget or 0, seed=seed)
    else:
        from .superweights_map import official_model

        model = official_model(repos["superweights"], "wrn-16-1", 100, row.budget, 4, seed=seed)
    optimizer = official_optimizer(model, LR, MOMENTUM, WD)

    def forward(x):
        with cpu_device_lookups():
            out = model(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    res = train_arm(model, optimizer, forward, root, seed, epochs, f"{row.name} official s{seed}")
    return {**res, "params": _trainable(model), **extra}


def run_ours(row: Row, root: str, seed: int, epochs: int) -> dict[str, Any]:
    from ..config import build_config
    from ..experiment import budget_of, resolve
    from ..factory import create_model
    from ..trainer.optim import build_optimizer

    if row.search and row.method == "superweights":
        from . import sw_arm

        return sw_arm.run_ours(row, root, seed, epochs, sys.modules[__name__])
    cfg = resolve(build_config({}, row.overrides(seed, epochs, root, "unused"))).config
    options, extra = dict(cfg.method.options), {}
    if row.search and row.method == "ssn":
        labels, search_loss = our_learned_groups(row, cfg, root, seed)
        options["groups"] = ",".join(map(str, labels))
        extra = {"groups": labels, "search_loss": search_loss}
    torch.manual_seed(seed)
    built = create_model(row.method, "wrn-16-1", "cifar100", budget_of(cfg), options)
    model = built.model
    optimizer = build_optimizer(model, cfg.optim, built.method.no_weight_decay_roles())
    res = train_arm(model, optimizer, lambda x: model(x)[0], root, seed, epochs, f"{row.name} ours s{seed}")
    return {**res, "params": built.report(flops=False).total, **extra}


def run_ours_official_init(row: Row, repos: dict[str, str], root: str, seed: int, epochs: int) -> dict[str, Any]:
    """Our model started from the *official* model's initial weights (every tensor copied, ``ssn_map.transfer``),
    then the same loop: separates the init draw from everything else. SSN-code rows only."""
    from ..trainer.optim import build_optimizer
    from ..config import build_config
    from ..experiment import resolve
    from .ssn_map import official_wrn, our_wrn, transfer

    share = row.options.get("share_type", "none")
    official = official_wrn(repos["ssn"], "wrn-16-1", 100, share, row.options.get("upsample_type", "inter"),
                            row.budget or 0, seed=seed)
    built = our_wrn("wrn-16-1", 100, share, row.options.get("upsample_type", "inter"), row.budget or 0, seed=seed)
    with torch.no_grad():
        transfer(official, built.model, "to_ours")
    cfg = resolve(build_config({}, row.overrides(seed, epochs, root, "unused"))).config
    model = built.model
    optimizer = build_optimizer(model, cfg.optim, built.method.no_weight_decay_roles())
    res = train_arm(model, optimizer, lambda x: model(x)[0], root, seed, epochs, f"{row.name} ours+official-init s{seed}")
    return {**res, "params": built.report(flops=False).total}


def run_ours_official_groups(row: Row, out: Path, root: str, seed: int, epochs: int) -> dict[str, Any]:
    """Our final model built from the groups the *official* search found at this seed (read from the official
    arm's JSON), same loop, no search: separates the search's outcome (which groups) from the model trained
    from them. SSN learned-group rows only."""
    from ..config import build_config
    from ..experiment import budget_of, resolve
    from ..factory import create_model
    from ..trainer.optim import build_optimizer

    source = out / "arms" / f"{row.name}__official__s{seed}__e{epochs}.json"
    if not source.is_file():
        raise FileNotFoundError(f"--official-groups: run the official arm of {row.name} seed {seed} first ({source})")
    groups = json.loads(source.read_text())["groups"]
    cfg = resolve(build_config({}, row.overrides(seed, epochs, root, "unused"))).config
    options = {**dict(cfg.method.options), "groups": ",".join(map(str, groups))}
    torch.manual_seed(seed)
    built = create_model(row.method, "wrn-16-1", "cifar100", budget_of(cfg), options)
    model = built.model
    optimizer = build_optimizer(model, cfg.optim, built.method.no_weight_decay_roles())
    res = train_arm(model, optimizer, lambda x: model(x)[0], root, seed, epochs,
                    f"{row.name} ours+official-groups s{seed}")
    return {**res, "params": built.report(flops=False).total, "groups": groups}


def run_npas_train(row: Row, root: str, seed: int, epochs: int, work: Path) -> dict[str, Any]:
    from ..config import build_config
    from ..trainer import train

    out = work / f"{row.name}-s{seed}"
    result = train(build_config({}, row.overrides(seed, epochs, root, str(out))))
    m = result.record["metrics"]
    extra = {}
    search = RunFolder(result.run_dir).artifact("search")
    if row.search and search.is_file():
        art = json.loads(search.read_text())["artifact"]
        extra = {"groups": art.get("labels", art.get("clusters")), "search_loss": art.get("search_loss")}
        if row.method == "superweights":
            extra = {"clusters": art.get("clusters"), "matches": art.get("matches"),
                     **{k: art.get(k) for k in ("threshold", "threshold_rounds", "one_template_estimate", "max_params",
                                                "search_loss")},
                     "unsharing": result.record.get("method_info", {}).get("unsharing")}
    return {"top1": m["top1"], "top5": m["top5"], "test_examples": m["examples"], "steps": result.record["steps"],
            "train_s": result.record["timing"]["train_s"], "params": result.record["params"]["total"],
            "status": result.status, "run_id": result.record["run_id"], **extra}


ARMS = ("official", "ours", "npas-train")
SWAP = "ours-official-init"  # --swap-init: our model started from the official model's initial weights
OFFICIAL_GROUPS = "ours-official-groups"  # --official-groups: our model built from the official search's groups
TARGET = 1.0  # the bar: ours within 1 point of the official mean


def arm_plan(rows: tuple[Row, ...], seeds: list[int]) -> list[tuple[Row, str, int]]:
    """Seed by seed (every row's first seed before any second seed), official, then npas train; the bare
    "ours" arm on the first seed only (at a seed it equals npas train: see the module docstring)."""
    plan = []
    for i, seed in enumerate(seeds):
        for row in rows:
            for arm in ARMS:
                if arm == "official" and row.official is None:
                    continue
                if arm == "ours" and i > 0:
                    continue
                plan.append((row, arm, seed))
    return plan


def summarize(out: Path, rows: tuple[Row, ...]) -> str:
    import json

    found: dict[tuple[str, str], list[dict]] = {}
    for path in sorted((out / "arms").glob("*.json")):
        rec = json.loads(path.read_text())
        found.setdefault((rec["row"], rec["arm"]), []).append(rec)

    def cell(recs: list[dict]) -> str:
        if not recs:
            return "-"
        vals = [r["top1"] for r in recs]
        sd = f" +- {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
        return f"{statistics.mean(vals):.2f}{sd} (n={len(vals)})"

    lines = ["# Learning parity with the official code (CIFAR-100, WRN-16-1, 3 epochs)", "",
             "Test top-1 (%), mean +- sample standard deviation over the seeds run (n). One loop for every arm: "
             "our CIFAR-100 loader (flip, 4-px pad-crop, cutout 16; order and augmentation drawn from the seed, so "
             "every arm of a seed sees the same batches), SGD 0.1 Nesterov 0.9, weight decay 5e-4 except "
             "coefficients, cosine per step, batch 128. `npas train` = the real trainer on the same config.", "",
             "| model | params (official / ours) | official | ours, same loop | ours from the official init | "
             "ours, `npas train` | npas train - official (+- s.e.) | within 1 point |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        off, ours, npas = (found.get((row.name, a), []) for a in ARMS)
        swap = found.get((row.name, SWAP), [])
        params = " / ".join(str(r[0]["params"]) if r else "-" for r in (off, npas or ours))
        delta, verdict = "-", "-"
        if off and npas:
            gap = statistics.mean(r["top1"] for r in npas) - statistics.mean(r["top1"] for r in off)
            se = _gap_se([r["top1"] for r in off], [r["top1"] for r in npas])
            delta = f"{gap:+.2f}" + (f" +- {se:.2f}" if se is not None else "")
            verdict = ("yes" if abs(gap) <= TARGET else "no") + f" (n={min(len(off), len(npas))})"
        lines.append(f"| {row.label} | {params} | {cell(off)} | {cell(ours)} | {cell(swap)} | {cell(npas)} | {delta} | "
                     f"{verdict} |")
    same = [(o, n) for (rname, arm), recs in found.items() if arm == "ours" for o in recs
            for n in found.get((rname, "npas-train"), []) if n["seed"] == o["seed"]]
    if same:
        lines += ["", "Same seed, bare loop vs `npas train` (expected equal: identical batches and steps): " + ", ".join(
            f"{o['row']} s{o['seed']}: {o['top1']:.2f} vs {n['top1']:.2f}" for o, n in same)]
    swapped = [(o, w) for (rname, arm), recs in found.items() if arm == SWAP for w in recs
               for o in found.get((rname, "official"), []) if o["seed"] == w["seed"]]
    if swapped:
        lines += ["", "Same seed, official model vs ours started from its initial weights (same loop, same batches: any "
                  "difference is float rounding amplified by training, not the model): " + ", ".join(
                      f"{w['row']} s{w['seed']}: {o['top1']:.2f} vs {w['top1']:.2f}" for o, w in sorted(
                          swapped, key=lambda p: (p[1]["row"], p[1]["seed"])))]
    regrouped = [(o, w) for (rname, arm), recs in found.items() if arm == OFFICIAL_GROUPS for w in recs
                 for o in found.get((rname, "official"), []) if o["seed"] == w["seed"]]
    if regrouped:
        pairs = sorted(regrouped, key=lambda p: (p[1]["row"], p[1]["seed"]))
        lines += ["", "Same seed, the official search's groups trained as the official model vs as ours (same loop, "
                  "same batches; separates which groups a search finds from the model trained from them): " + ", ".join(
                      f"{w['row']} s{w['seed']}: {o['top1']:.2f} vs {w['top1']:.2f}" for o, w in pairs)
                  + f"; mean {statistics.mean(o['top1'] for o, _ in pairs):.2f} vs "
                  f"{statistics.mean(w['top1'] for _, w in pairs):.2f} (n={len(pairs)})"]
    lines += search_equivalence_lines()
    lines += ["", "+- in a cell: the sample standard deviation over seeds. s.e. of a gap: sqrt(sd_o^2/n_o + sd_n^2/n_n), "
              "the standard error of a difference of two independent means (shown when both arms have n >= 2)."]
    notes = [f"- {row.label}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += ["", "Reproduce: `python -m npasbench.parity.harness --ssn <SSN checkout> --superweights <SuperWeights "
              "checkout> --data-root <folder with cifar-100-python>` (resumable; one JSON per arm in arms/)."]
    text = "\n".join(lines) + "\n"
    write_text(out / "parity.md", text)
    return text


TRACES = Path(__file__).resolve().parents[2] / "tests" / "data"  # the recorded official search traces


def search_equivalence_lines() -> list[str]:
    """The search phases compared step by step with the official code (the recorded traces the CI replays)."""
    path = TRACES / "ssn_search_trace.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    lines = ["", "Search phases, step by step against the official code (float64, our seed-0 initial weights copied "
             "into the official model, seeded fixed batches; recorded by `python -m npasbench.parity.ssn_search`, "
             f"official {data['official'][:7]}, replayed in CI by tests/test_ssn_search_parity.py):", "",
             "| SSN learned groups | steps | layers | loss (max rel) | coefficients (max rel) | k-means input (max rel) "
             "| same groups from the official k-means init | final model: official count and layout | k-means "
             "inertia: official (sklearn, 1 run) / ours (seeded, 10 restarts) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, cell in data["cells"].items():
        m = cell.get("measured")
        if not m:
            continue
        lines.append(f"| {name} | {m['steps']} | {m['layers']} | {m['loss_rel']:.1e} | {m['coefficients_rel']:.1e} | "
                     f"{m['kmeans_input_rel']:.1e} | {'yes' if m['same_groups'] else 'no'} | "
                     f"{'yes' if m['same_final_model'] else 'no'} ({m['final_params']:,}) | "
                     f"{m['official_inertia']:.4f} / {m['ours_seeded_inertia']:.4f} |")
    return lines


def _gap_se(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    return (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.parity.harness", description=__doc__.splitlines()[0])
    p.add_argument("--ssn", required=True, help="checkout of BryanPlummer/SSN")
    p.add_argument("--superweights", required=True, help="checkout of piotr-teterwak/SuperWeights")
    p.add_argument("--data-root", default="../shared/data", help="folder holding cifar-100-python/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="results/parity")
    p.add_argument("--only", nargs="*", default=None, help="row names: " + ", ".join(r.name for r in ROWS))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--swap-init", action="store_true",
                   help="only the arm 'ours-official-init' (our model from the official initial weights; SSN-code rows)")
    p.add_argument("--official-groups", action="store_true",
                   help="only the arm 'ours-official-groups' (our model from the official search's groups at the seed; "
                        "SSN learned-group rows, after their official arms)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = tuple(r for r in ROWS if a.only is None or r.name in a.only)
    out = Path(a.out)
    repos = {"ssn": a.ssn, "superweights": a.superweights}
    plan = arm_plan(rows, a.seeds)
    if a.swap_init:
        plan = [(row, SWAP, seed) for seed in a.seeds for row in rows if row.official == "ssn"]
    if a.official_groups:
        plan = [(row, OFFICIAL_GROUPS, seed) for seed in a.seeds for row in rows
                if row.official == "ssn" and row.search]
    for i, (row, arm, seed) in enumerate(plan, 1):
        path = out / "arms" / f"{row.name}__{arm}__s{seed}__e{a.epochs}.json"
        if path.is_file():
            continue  # finished: a cache hit
        print(f"[{i}/{len(plan)}] {row.name} {arm} seed {seed}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if arm == "official":
            res = run_official(row, repos, a.data_root, seed, a.epochs)
        elif arm == "ours":
            res = run_ours(row, a.data_root, seed, a.epochs)
        elif arm == SWAP:
            res = run_ours_official_init(row, repos, a.data_root, seed, a.epochs)
        elif arm == OFFICIAL_GROUPS:
            res = run_ours_official_groups(row, out, a.data_root, seed, a.epochs)
        else:
            res = run_npas_train(row, a.data_root, seed, a.epochs, out / "work")
        rec = {"row": row.name, "arm": arm, "seed": seed, "epochs": a.epochs, **res,
               "wall_s": round(time.perf_counter() - t0, 1), "git": git_info(), "packages": package_versions(),
               "hardware": hardware(torch.device("cpu")), "command": " ".join(sys.argv)}
        write_json(path, rec)
        print(f"    top1 {res['top1']:.2f}  ({rec['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        summarize(out, ROWS)
    print(summarize(out, ROWS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
