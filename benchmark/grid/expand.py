"""A grid spec -> its runs: the product of the axes (with zip groups and exclude rules), each run
resolved to its canonical config and id (``experiment.resolve`` / ``run_id``).

Checks made here, before anything is written: every method, option, architecture, data set and
budget resolves; every budget is one the method can represent (the model is built once per distinct
(method, options, arch, data set, budget) and the suite's budget rule applied; a method with a phase
before training is previewed with stand-in artifacts where it offers them); no two entries expand to
the same run.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any, Iterator

from ..config import Config, build_config
from ..errors import NPASError
from ..experiment import digest, identity_dict, resolve
from .spec import AXES, GridSpec, MethodAxis, SpecError, line_of, method_tables, toml_code


@dataclass(frozen=True)
class GridRun:
    """One run of a grid: where it came from in the spec, its resolved config and its id."""

    run_id: str
    method: str
    variant: str
    arch: str
    dataset: str
    budget: str  # as written in the spec ("10%", "100k", "full")
    seed: int
    config: Config  # resolved; run.out is the run folder relative to the results folder
    folder: str

    def describe(self) -> str:
        v = "" if self.variant == "default" else f" [{self.variant}]"
        return f"{self.method}{v} {self.arch} {self.dataset} budget={self.budget} seed={self.seed}"

    def matches(self, rule: dict[str, Any]) -> bool:
        here = {"method": self.method, "variant": self.variant, "arch": self.arch, "dataset": self.dataset,
                "budget": self.budget, "seed": self.seed}
        return all(str(here[k]) == str(v) for k, v in rule.items())


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", text.replace("%", "pct"))


def folder_name(method: str, variant: str, arch: str, dataset: str, budget: str, seed: int, rid: str) -> str:
    m = method if variant == "default" else f"{method}-{variant}"
    return _safe(f"{m}_{arch}_{dataset}_{budget}_s{seed}_{rid[:10]}")


def _budget_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _axis_values(spec: GridSpec, m: MethodAxis) -> dict[str, tuple]:
    return {"archs": spec.archs, "datasets": spec.datasets,
            "budgets": m.budgets if m.budgets is not None else spec.budgets, "seeds": spec.seeds}


def _points(spec: GridSpec, m: MethodAxis) -> Iterator[dict[str, Any]]:
    """(arch, dataset, budget, seed) points of the grid for method ``m``: a product, zip groups joined."""
    values = _axis_values(spec, m)
    units: list[tuple[tuple[str, ...], list[tuple]]] = []
    zipped = {a for g in spec.zip for a in g}
    for g in spec.zip:
        lengths = {a: len(values[a]) for a in g}
        if len(set(lengths.values())) != 1:
            raise SpecError(f"grid spec {spec.path}: methods ({m.name}).budgets: zip group {list(g)} needs equal "
                            f"lengths, got " + ", ".join(f"{a}={n}" for a, n in lengths.items()) + ".")
        units.append((g, list(zip(*(values[a] for a in g)))))
    for a in AXES:
        if a not in zipped:
            units.append(((a,), [(v,) for v in values[a]]))
    for combo in itertools.product(*(vals for _, vals in units)):
        point: dict[str, Any] = {}
        for (names, _), vals in zip(units, combo):
            point.update(dict(zip(names, vals)))
        yield point


def _base_tree(spec: GridSpec) -> dict[str, Any]:
    if spec.base_config is None:
        return {}
    from ..errors import ConfigError
    from ..reading import read_toml_text

    try:
        return read_toml_text(spec.base_config, f"grid spec {spec.path}: grid.base_config")[0]
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def method_axes(spec: GridSpec) -> list[MethodAxis]:
    """The spec's method entries with ``name = "*"`` expanded to every registered method not listed."""
    from ..plugins import METHODS

    listed = {m.name for m in spec.methods if m.name != "*"}
    out: list[MethodAxis] = []
    for m in spec.methods:
        if m.name == "*":
            out.extend(dataclasses.replace(m, name=n) for n in METHODS.names() if n not in listed)
        else:
            out.append(m)
    return out


def star_left_out(spec: GridSpec) -> list[str]:
    """One line per broken plugin that ``name = "*"`` left out of the grid (it is not among the registered
    methods, so the grid silently lacks it otherwise)."""
    from ..plugins import METHODS

    if not any(m.name == "*" for m in spec.methods):
        return []
    return [f'warning: methods name = "*" left out the plugin {b.name!r} ({b.source}): it failed to load: {b.error}'
            for b in METHODS.broken]


def grid_size(spec: GridSpec) -> int:
    """How many runs the spec expands to before ``axes.exclude`` (arithmetic only: nothing is built)."""
    total = 0
    for m in method_axes(spec):
        values = _axis_values(spec, m)
        zipped = {a for g in spec.zip for a in g}
        n = len(m.variants)
        for g in spec.zip:
            n *= min(len(values[a]) for a in g)
        for a in AXES:
            if a not in zipped:
                n *= len(values[a])
        total += n
    return total


def expand(spec: GridSpec, check_budgets: bool = True, previews: Previewer | None = None) -> list[GridRun]:
    """Every run of the grid, in spec order; raises SpecError naming the key for any bad entry.
    ``previews``: the Previewer the budget check builds the models with (``plan`` reuses it for its table)."""
    from tqdm.auto import tqdm

    from ..plugins import METHODS

    size = grid_size(spec)
    if size > spec.max_runs:
        raise _spec_err(spec, f"the grid expands to {size} runs (before axes.exclude), above grid.max_runs = "
                        f"{spec.max_runs}: check the axes for a typo, or raise the limit (max_runs = N in [grid], "
                        "or --max-runs N for one command).", "max_runs", "seeds", "budgets")
    tree = _base_tree(spec)
    bar = tqdm(total=size, desc="expanding the grid", unit="run", leave=False, mininterval=1.0,
               disable=None if size >= 1000 else True)
    runs: list[GridRun] = []
    by_id: dict[str, GridRun] = {}
    for mi, m in enumerate(method_axes(spec)):
        key = f"methods ({m.name})"
        if m.name not in METHODS:
            try:
                METHODS.get(m.name)
            except NPASError as exc:
                raise _spec_err(spec, f"{key}: {exc}", f'"{m.name}"') from None
        demo = dict(METHODS.get(m.name).demo_options) if spec.demo_options else {}
        for label, variant in zip(m.labels, m.variants):
            for point in _points(spec, m):
                budget = _budget_text(point["budgets"])
                overrides: dict[str, Any] = dict(spec.base)
                overrides.update(m.overrides)
                overrides.update({f"method.options.{k}": v for k, v in demo.items()})
                overrides.update({f"method.options.{k}": v for k, v in variant.items()})
                overrides.update({"method.name": m.name, "model.arch": point["archs"], "data.name": point["datasets"],
                                  "model.budget": None if budget.lower() == "full" else point["budgets"],
                                  "model.budget_mode": m.budget_mode, "train.seed": point["seeds"],
                                  "run.progress": False, "run.name": label})  # the label names the row (not the id)
                try:
                    experiment = resolve(build_config(tree, overrides))
                except NPASError as exc:
                    named = [k for k in list(variant) + [o.split(".")[-1] for o in m.overrides] + list(spec.base)
                             if re.search(rf"\b{re.escape(k.split('.')[-1])}\b", str(exc))]
                    inside = next((x for k in named for own in method_tables(spec.text, m.name)  # in its own table
                                   if (x := line_of(spec.text, k, *own))), None)
                    raise _spec_err(spec, f"{key}, variant {label!r}, arch {point['archs']!r}, data set "
                                    f"{point['datasets']!r}, budget {budget!r}: {exc}", *named,
                                    f'"{point["archs"]}"', f'"{point["datasets"]}"', f'"{m.name}"',
                                    line=inside or (budget_line(spec, m.name) if "budget" in str(exc) and not named
                                                    else None)) from None
                bar.update(1)
                rid = experiment.run_id
                folder = folder_name(m.name, label, point["archs"], point["datasets"], budget, point["seeds"], rid)
                cfg = experiment.with_run(out=folder).config
                run = GridRun(rid, m.name, label, point["archs"], point["datasets"], budget, int(point["seeds"]), cfg,
                              folder)
                if any(run.matches(rule) for rule in spec.exclude):
                    continue
                if rid in by_id:
                    other = by_id[rid]
                    raise _spec_err(spec, f"two entries expand to the same run {rid}: {other.describe()} and "
                                    f"{run.describe()}. Remove one of them.",
                                    "budgets" if other.budget != run.budget else "variants")
                by_id[rid] = run
                runs.append(run)
    bar.close()
    if not runs:
        raise _spec_err(spec, "the grid is empty: every run is excluded by axes.exclude.", "exclude")
    if check_budgets:
        from tqdm.auto import tqdm

        previews = previews if previews is not None else Previewer()
        # a paper-scale spec builds ~100 distinct models (each once: seeds share one): minutes, so a bar on a terminal
        for run in tqdm(runs, desc="checking budgets (each distinct model built once)", unit="run", leave=False,
                        disable=None, mininterval=1.0):
            try:
                previews.get(run)
            except NPASError as exc:
                raise _spec_err(spec, f"{run.describe()}: a budget the method cannot represent: {exc}",
                                line=budget_line(spec, run.method)) from None
    return runs


def budget_line(spec: GridSpec, method: str) -> int | None:
    """The line that set ``method``'s budgets: its own ``budgets`` in its ``[[methods]]`` entry, else
    ``axes.budgets`` (a method that gets its runs from ``name = "*"`` has no entry of its own)."""
    for own in method_tables(spec.text, method):
        line = line_of(spec.text, "budgets", *own)
        if line is not None:
            return line
    lines = spec.text.splitlines()
    axes = next((i for i, l in enumerate(lines) if re.match(r"^\s*\[\s*axes\s*\]", l)), None)
    if axes is not None:
        for i in range(axes + 1, len(lines)):
            if re.match(r"^\s*\[", lines[i]):
                break
            if re.match(r"^\s*budgets\s*=", lines[i]):
                return i + 1
    return line_of(spec.text, "budgets")


def _spec_err(spec: GridSpec, message: str, *needles: str, line: int | None = None) -> SpecError:
    """An error naming the spec file and ``line``, else the first line holding one of ``needles`` (a key or
    a value)."""
    for needle in needles if line is None else ():
        if not needle:
            continue
        line = line_of(spec.text, needle) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", needle) else None
        if line is None:  # a value, e.g. '"wrn-10-1"': its first use outside a comment
            line = next((i for i, l in enumerate(spec.text.splitlines(), 1) if needle in toml_code(l)), None)
        if line is not None:
            break
    where = f"{spec.path}" + (f" line {line}" if line else "")
    return SpecError(f"grid spec {where}: {message}")


# -- previews: the built model's size without training -----------------------------------------
@dataclass(frozen=True)
class Preview:
    params: int | None  # unique trainable parameters (None: known only after a phase)
    gflops: float | None
    note: str = ""
    warning: str = ""  # a budget the run may not fit after its phase (SuperWeights: its search), said before launch


class Previewer:
    """Builds each distinct model of a grid once (seeds share it) for ``plan`` and the budget check."""

    def __init__(self, flops: bool = True) -> None:
        self.flops = flops
        self._cache: dict[str, Preview] = {}

    def get(self, run: GridRun) -> Preview:
        ident = identity_dict(run.config)
        key = digest({"method": ident["method"], "model": ident["model"], "data": ident["data"]})
        if key not in self._cache:
            self._cache[key] = self._build(run.config)
        return self._cache[key]

    def _build(self, cfg: Config) -> Preview:
        from ..experiment import config_request
        from ..factory import build_checked
        from ..plugins import create_method

        method = create_method(cfg.method.name, cfg.method.options)
        request = config_request(cfg)
        note = warning = ""
        if method.phases(request):
            stand_in = method.preview_artifacts(request)  # refuses a budget no phase outcome can fit
            problem = getattr(method, "search_budget_problem", None)
            warning = problem(request) if problem is not None else ""
            if stand_in is None:
                return Preview(None, None, "after " + ", ".join(p.name for p in method.phases(request)), warning)
            request = dataclasses.replace(request, artifacts=stand_in)
            note = "stand-in groups before the search"
        model = build_checked(method, request)
        from ..accounting import param_report

        rep = param_report(model, None, request.budget)
        gflops = None
        if self.flops:
            shape = (3, request.image_size, request.image_size)
            gflops = preview_flops(model, shape, lambda: build_checked(method, request)) / 1e9
        return Preview(rep.total, gflops, note, warning)


def preview_flops(model, shape: tuple[int, ...], rebuild) -> int:
    """Inference FLOPs of one image, counted on the meta device: shapes only, no arithmetic (a WRN-28-10 SSN
    preview spent 7 of its 10 s generating and convolving real weights). The model is spent (its tensors move
    to meta): ``rebuild()`` gives a fresh one for the real count should a method's forward need values."""
    from ..accounting import count_flops

    try:
        return int(count_flops(model.to("meta"), shape)["total"])
    except Exception:  # noqa: BLE001 - any method whose forward reads values: count on a real model
        return int(count_flops(rebuild(), shape)["total"])
