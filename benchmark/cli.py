"""``npas``: the command line.

    npas methods                      list methods (in-tree and plugins) with their options
    npas archs                        list architectures
    npas params --method M --arch A --dataset D --budget B [--opt k=v] [--json]
    npas train  --method M --arch A --dataset D --budget B --epochs E --out DIR [section.key=value ...]
    npas train  --config exp.toml [section.key=value ...]
    npas demo                         a small grid: every method, two budgets, synthetic data; comparison table
    npas grid plan|run|status|collect SPEC   benchmark grids (slurm/*.toml): runs, their states, the leaderboard
    npas leaderboard [FOLDERS] [--out results/LEADERBOARD.md]   records -> markdown + CSVs + plots
    npas data prepare cifar100|cifar10|imagenet --root DIR --out DIR [--max-res 256 --jpeg-quality 90 ...]
                                      write FFCV .beton files (data.pipeline=ffcv reads them from data.beton_dir)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from .errors import NPASError
from .grid.commands import add_grid_parser, cmd_grid
from .run_folder import RunFolder


def _add_model_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--method", required=required, help="method name (see `npas methods`)")
    p.add_argument("--arch", required=required, help="architecture, e.g. wrn-28-10, resnet50 (see `npas archs`)")
    p.add_argument("--dataset", default=None if not required else "cifar100",
                   help="cifar10 | cifar100 | synthetic | imagenet")
    p.add_argument("--budget", default=None, help="parameter budget, e.g. 1000000, 1.5M, 500k (default: none)")
    p.add_argument("--budget-mode", default=None, help="total (default: unique trainable params) or a method's knob")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="method option (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npas", description="Neural Parameter Allocation Search benchmark suite")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("methods", help="list registered methods and their options")
    m.add_argument("--json", action="store_true")

    c = sub.add_parser("config", help="list every config key: type, default and one line of help",
                       description="Every key a config file, --config, a dotted override (train.epochs=10) or a grid "
                                   "spec's [base] accepts, read from the dataclasses that validate them.")
    c.add_argument("--method", default=None, help="also list this method's options (method.options.<key>)")
    c.add_argument("--json", action="store_true")

    a = sub.add_parser("archs", help="list registered architectures")
    a.add_argument("--json", action="store_true")

    p = sub.add_parser("params", help="parameter and FLOP report without training")
    _add_model_args(p, required=True)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster for big models)")

    t = sub.add_parser("train", help="run one training run")
    t.add_argument("--config", default=None, help="TOML experiment config")
    _add_model_args(t, required=False)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--out", default=None, help="run folder (config, metrics.jsonl, checkpoints, result.json)")
    t.add_argument("--data-root", default=None, help="folder holding cifar-100-python/ (or cifar-10-batches-py/)")
    t.add_argument("--download", action="store_true", help="download CIFAR with torchvision if missing")
    t.add_argument("--resume", default=None, help="auto (default) | never | path to a checkpoint")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("overrides", nargs="*", metavar="section.key=value", help="dotted config overrides")

    d = sub.add_parser("demo", help="a small grid: every method at two budgets on synthetic data; comparison table")
    d.add_argument("--out", default="results/demo", help="results folder of the demo grid (rerun: resumes)")
    d.add_argument("--executor", default="local", help="local (processes, default) | debug (in-process)")
    d.add_argument("-j", "--parallel", type=int, default=0, help="runs at once (default: one per core / GPU)")
    d.add_argument("--no-progress", action="store_true")

    lb = sub.add_parser("leaderboard", help="result records -> leaderboard markdown, CSVs and plots")
    lb.add_argument("folders", nargs="*", default=["results"], help="folders holding run folders (default: results)")
    lb.add_argument("--out", default="results/LEADERBOARD.md", help="markdown file (CSVs and PNGs are written beside)")
    lb.add_argument("--bootstrap", type=int, default=0, help="95%% intervals from N seeded bootstrap resamples "
                                                              "(default: Student t)")
    lb.add_argument("--no-plots", action="store_true")
    lb.add_argument("--references", default=None, help="TOML of [[reference]] numbers shown beside ours "
                                                         "(see npasbench.leaderboard.references)")

    _add_data_parser(sub)
    add_grid_parser(sub)
    return parser


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="data pipelines: write FFCV .beton files")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "prepare", help="write <out>/<name>_train.beton and <name>_test.beton (needs the ffcv extra)",
        description="CIFAR: raw 32x32 pixels from torchvision's pickles. ImageNet: from an ImageFolder tree "
                    "(<root>/train/<class>/*, <root>/val/<class>/*; val is written as the test split) with "
                    "ffcv-imagenet's recipe: longest side <= --max-res, a JPEG/raw mix. Files are written "
                    "atomically: an interrupted or failed run leaves no partial .beton behind.")
    p.add_argument("dataset", help="cifar10 | cifar100 | imagenet")
    p.add_argument("--root", required=True, help="CIFAR: folder holding cifar-100-python/ (or cifar-10-batches-py/); "
                                                 "ImageNet: folder holding train/ and val/")
    p.add_argument("--out", required=True, help="output folder (use it as data.beton_dir)")
    p.add_argument("--max-res", type=int, default=None, help="imagenet: longest side in the beton (default 256)")
    p.add_argument("--jpeg-quality", type=int, default=None, help="imagenet: JPEG quality (default 90)")
    p.add_argument("--write-mode", default=None, help="imagenet: proportion (default) | smart | raw | jpg")
    p.add_argument("--compress-probability", type=float, default=None,
                   help="imagenet, write-mode proportion: fraction of images stored as JPEG (default 0.5)")
    p.add_argument("--smart-threshold", type=int, default=None,
                   help="imagenet, write-mode smart: JPEG-compress images whose raw size exceeds this many bytes")
    p.add_argument("--workers", type=int, default=-1, help="writer processes (default: one per available core)")
    p.add_argument("--limit", type=int, default=0, help="write only the first N images of each split (0: all)")
    p.add_argument("--splits", default="train,test", help="comma-separated: train,test (default both)")
    p.add_argument("--download", action="store_true", help="CIFAR: download with torchvision if absent")
    p.add_argument("--no-verify", action="store_true", help="imagenet: skip opening every image header first")
    p.add_argument("--no-progress", action="store_true")


def cmd_methods(args: argparse.Namespace) -> int:
    from .options import describe_options
    from .plugins import METHODS

    rows: list[dict[str, Any]] = []
    for e in METHODS.entries():
        cls = e.obj
        rows.append({"name": e.name, "source": e.source, "summary": cls.summary, "reference": cls.reference,
                     "budget_modes": list(cls.budget_modes), "options": describe_options(cls.Options)})
    broken = [{"name": b.name, "source": b.source, "error": b.error} for b in METHODS.broken]
    if args.json:
        print(json.dumps({"methods": rows, "broken": broken}, indent=2, default=str))
        return 0
    for r in rows:
        print(f"{r['name']}  [{r['source']}]  budget modes: {', '.join(r['budget_modes'])}")
        if r["summary"]:
            print(f"    {r['summary']}")
        for o in r["options"]:
            print(f"    --opt {o['name']}=<{o['type']}>  (default {o['default']!r})  {o['help']}")
    for b in broken:
        print(f"BROKEN plugin {b['name']}  [{b['source']}]: {b['error']}", file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config_reference import config_keys, render

    keys = config_keys(args.method)
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2, default=list))
    else:
        print(render(keys))
        print("\n(set a key in a TOML config's [section], as --config overrides `section.key=value`, or in a grid "
              "spec's [base] as \"section.key\" = value)")
    return 0


def cmd_archs(args: argparse.Namespace) -> int:
    from .models.registry import ARCHITECTURES

    rows = [{"name": e.name, "family": e.obj.family, "domain": e.obj.domain, **e.obj.hyper} for e in ARCHITECTURES.entries()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for e in ARCHITECTURES.entries():
            hyper = " ".join(f"{k}={v}" for k, v in e.obj.hyper.items())
            print(f"{e.name:18s} {e.obj.family:12s} {e.obj.domain:9s} {hyper}")
        print("(family grammars also work: wrn-D-K (D = 6n+4, K > 0, e.g. wrn-16-1.5); vit-D-E[-hH]-pP (CIFAR, "
              "e.g. vit-6-128-h4-p4); deit-D-E[-hH] (224x224, patch 16); densenet-bc-D-K (D = 6n+4, growth K); "
              "mobilenetv2[-cifar]-W (width multiplier W, e.g. mobilenetv2-cifar-0.5))")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from .budget import Budget
    from .factory import create_model
    from .options import parse_kv

    from .experiment import check_budget_scale, resolve_budget
    from .plugins import create_method

    method = create_method(args.method, parse_kv(args.opt))
    mode = args.budget_mode or "total"
    count = resolve_budget(args.budget, mode, args.arch, args.dataset)
    if count is not None:
        check_budget_scale(method, count, args.arch, args.dataset)
    built = create_model(method, args.arch, args.dataset, Budget.parse(count, mode))
    report = built.report(flops=not args.no_flops).to_dict()
    out = {"method": args.method, "arch": args.arch, "dataset": args.dataset, "options": built.method.options_dict(),
           **report}
    # a method whose search phase can fail to fit the budget says where (SuperWeights: floor.py)
    searcher: Any = method  # the hooks are optional (looked up by name), so not part of the Method contract
    search_budgets = getattr(searcher, "search_budgets", None)
    bounds = search_budgets(built.request) if search_budgets is not None else None
    if bounds is not None:
        out["search_budgets"] = {**bounds.to_dict(), "problem": searcher.search_budget_problem(built.request, bounds)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.method} {args.arch} on {args.dataset}: {report['total']:,} unique trainable parameters")
        for k, v in report["breakdown"].items():
            print(f"  {k:13s} {v:>14,}")
        if report["budget"]:
            print(f"  budget        {report['budget']['params']:>14,} ({report['budget']['mode']}), "
                  f"utilisation {100 * report['budget_utilisation']:.2f}%")
        if report["flops"]:
            for mem in report["members"]:
                print(f"  FLOPs {mem['name']}: {mem['flops'] / 1e9:.3f} G (1 image)")
        if bounds is not None:
            for line in searcher.search_budget_lines(built.request):
                print(f"  {line}")
    return 0


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .options import parse_kv

    o: dict[str, Any] = {}
    if args.method:
        o["method.name"] = args.method
    if args.arch:
        o["model.arch"] = args.arch
    if args.dataset:
        o["data.name"] = args.dataset
    if args.budget is not None:
        o["model.budget"] = args.budget
    if args.budget_mode:
        o["model.budget_mode"] = args.budget_mode
    for k, v in parse_kv(args.opt).items():
        o[f"method.options.{k}"] = v
    if args.epochs is not None:
        o["train.epochs"] = args.epochs
    if args.out:
        o["run.out"] = args.out
    if args.data_root:
        o["data.root"] = args.data_root
    if args.download:
        o["data.download"] = True
    if args.resume:
        o["run.resume"] = args.resume
    if args.seed is not None:
        o["train.seed"] = args.seed
    if args.no_progress:
        o["run.progress"] = False
    o.update(parse_kv(args.overrides, field="override"))
    return o


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .trainer import train

    cfg = load_config(args.config, train_overrides(args))
    result = train(cfg)
    m = result.record.get("metrics") or {}
    if result.status == "completed":
        print(f"{result.status}: top1 {m.get('top1', float('nan')):.2f} top5 {m.get('top5', float('nan')):.2f} "
              f"({RunFolder(result.run_dir).result})")
    else:
        print(f"{result.status}: {RunFolder(result.run_dir).result}")
    return result.exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, executor=args.executor, parallel=args.parallel, progress=not args.no_progress)
    print(result.text)
    print(f"written to {args.out}/summary.md")
    if result.exit_code == 1:
        print(f"npas demo: {len(result.unfinished)} run(s) did not complete (listed above; their failed.json / "
              f"result.json say why); rerun `npas demo` to retry them", file=sys.stderr)
    return result.exit_code


def cmd_data(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    written = prepare(args.dataset, args.root, args.out, max_res=args.max_res, jpeg_quality=args.jpeg_quality,
                      write_mode=args.write_mode, compress_probability=args.compress_probability,
                      smart_threshold=args.smart_threshold, workers=args.workers, limit=args.limit,
                      splits=args.splits.split(","), download=args.download, verify=not args.no_verify,
                      progress=not args.no_progress)
    for path in written:
        print(f"wrote {path}")
    print(f"use them with: data.pipeline=ffcv data.beton_dir={args.out}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """argparse, plus ``section.key=value`` overrides anywhere on a ``npas train`` line (before, between
    or after the options): a ``nargs="*"`` positional alone only takes the first run of them."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train":
        overrides = [x for x in extra if "=" in x and not x.startswith("-")]
        args.overrides = list(args.overrides) + overrides
        extra = [x for x in extra if x not in overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import board_summary, build_leaderboard

    command = "npas leaderboard " + " ".join(args.folders) + (f" --out {args.out}")
    if args.bootstrap:
        command += f" --bootstrap {args.bootstrap}"
    if args.references:
        command += f" --references {args.references}"
    board = build_leaderboard(args.folders, args.out, command, bootstrap=args.bootstrap, plots=not args.no_plots,
                              references=args.references)
    for line in board_summary(board):
        print(line)
    return 0


def shadow_note() -> str | None:
    """Python started in the folder that holds a checkout named ``npasbench`` takes the checkout folder for a namespace
    package ``npasbench``: an editable install still serves the submodules (so ``npas`` runs), but ``from npasbench
    import create_model`` fails with "unknown location". Nothing of ours runs at that import, so ``npas`` says it."""
    pkg = sys.modules.get("npasbench")
    paths = list(getattr(pkg, "__path__", []) or [])
    if pkg is None or getattr(pkg, "__file__", None) is not None or not paths:
        return None
    return (f"npas: note: Python takes the folder {paths[0]} for the package npasbench (Python was started in the "
            "folder that holds a checkout of that name), so `from npasbench import create_model` fails there with "
            "\"cannot import name ... (unknown location)\". Start Python in another folder, e.g. inside the checkout.")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    note = shadow_note()
    if note:
        print(note, file=sys.stderr)
    handler = {"methods": cmd_methods, "config": cmd_config, "archs": cmd_archs, "params": cmd_params, "train": cmd_train,
               "demo": cmd_demo, "data": cmd_data, "grid": cmd_grid, "leaderboard": cmd_leaderboard}[args.command]
    try:
        return handler(args)
    except NPASError as exc:
        print(f"npas {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code  # 2; 5 for a folder another process holds
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
