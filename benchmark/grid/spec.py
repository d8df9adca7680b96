"""Grid specs: one TOML file (``slurm/*.toml``) describing a benchmark grid. Data, never executed.

A spec has these tables (every key is checked; an unknown key is an error naming it)::

    [grid]                      name, results (folder; relative paths are relative to the working directory),
                                base_config (a configs/*.toml, relative to the spec file), description,
                                demo_options (true: start from each method's demo_options, as npas demo),
                                max_runs (the most runs the grid may expand to, default 10000: a typo in
                                an axis should not take minutes and gigabytes to find; --max-runs N
                                raises it for one command)
    [base]                      dotted overrides applied to every run, e.g. "train.epochs" = 3
    [axes]                      archs, datasets, budgets, seeds (lists); zip (lists of axis names that
                                advance together instead of forming a product); exclude (rules)
    [[methods]]                 name, variants (list of option tables; default [{}]), labels (names of the
                                variants), budget_mode, budgets (replaces axes.budgets for this method;
                                "full" = the method's natural size), overrides (dotted, this method only)
    [notes]                     method name -> a sentence shown under its rows (e.g. why it is low here)
    [resources]                 partition, gpus_per_run, cpus_per_run, mem_gb, time_min, constraint, account,
                                qos, array_parallelism, tasks_per_run, max_timeouts, max_array_size (SLURM), max_parallel
                                (local executor; 0 = auto), gpu_tflops (the rate `plan` estimates GPU-hours at)

Budgets are absolute (``100000``, ``"100k"``, ``"1.5M"``), a share of the unshared network
(``"10%"``, mode ``total`` only) or ``"full"``. An exclude rule is a table of any of ``method``,
``variant`` (a label), ``arch``, ``dataset``, ``budget`` (as written), ``seed``; a run matching
every key of a rule is left out. ``expand.expand`` turns a spec into runs.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

AXES = ("archs", "datasets", "budgets", "seeds")
EXCLUDE_KEYS = ("method", "variant", "arch", "dataset", "budget", "seed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


DEFAULT_MAX_RUNS = 10_000  # issue 25's probe: 10,000 runs planned in 46 s / 0.95 GB, 100,000 printed nothing for 5 min
# ``--max-runs N`` of the command being run (cli.py sets it for that command): above any spec's grid.max_runs
MAX_RUNS_OVERRIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar("npas_max_runs", default=None)


class SpecError(ConfigError):
    """A grid spec is malformed; the message names the key (and the line when it can be found)."""


@dataclass(frozen=True)
class MethodAxis:
    name: str
    variants: tuple[dict[str, Any], ...] = ({},)
    labels: tuple[str, ...] = ("default",)
    budget_mode: str = "total"
    budgets: tuple[Any, ...] | None = None  # None: axes.budgets
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resources:
    partition: str = ""
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float = 0.0
    time_min: int = 60
    constraint: str = ""
    account: str = ""
    qos: str = ""
    array_parallelism: int = 0  # SLURM's %N; 0 = no throttle
    max_parallel: int = 0  # npas grid run: runs at once; 0 = one per core (per GPU), slurm executor: 256 jobs
    tasks_per_run: int = 0  # SLURM: DDP processes of one run; 0 = one per GPU (1 without GPUs; CPU DDP uses gloo)
    max_timeouts: int = 3  # SLURM: a run that hits its time limit is requeued at most this many times
    max_array_size: int = 0  # SLURM: arrays are cut under this; 0 = the cluster's MaxArraySize (1001 in a dry run without one)
    # compute estimates (``npas grid plan``): the sustained TFLOP/s one GPU reaches on these runs. An assumption,
    # not a measurement (none was possible here): calibrate it from one finished run's timing on your cluster
    gpu_tflops: float = 25.0


@dataclass(frozen=True)
class GridSpec:
    name: str
    path: Path
    results: Path
    base_config: Path | None
    base: dict[str, Any]
    methods: tuple[MethodAxis, ...]
    archs: tuple[str, ...]
    datasets: tuple[str, ...]
    budgets: tuple[Any, ...]
    seeds: tuple[int, ...]
    zip: tuple[tuple[str, ...], ...]
    exclude: tuple[dict[str, Any], ...]
    resources: Resources
    description: str = ""
    demo_options: bool = False  # start every method's options from its ``demo_options`` (npas demo)
    max_runs: int = 10_000  # ``[grid] max_runs``, or ``--max-runs`` (MAX_RUNS_OVERRIDE): the size guard
    notes: dict[str, str] = field(default_factory=dict)
    text: str = ""


# -- helpers ------------------------------------------------------------------------------------
def toml_code(line: str) -> str:
    """A TOML line without its comment: the text before the first ``#`` outside a string."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[:i]
    return line


def line_of(text: str, key: str, first: int = 1, last: int | None = None) -> int | None:
    """The first line (1-based, within ``first``..``last``) where ``key`` is assigned -- also inside an inline
    table, ``{rank = 4}`` -- or opened as a table; comments never match."""
    leaf = key.split(".")[-1].split("[")[0]
    pat = re.compile(r'(^|[{,]|^\s*\[\[?)\s*"?' + re.escape(leaf) + r'"?\s*(=|\]|\.)')
    for i, line in enumerate(text.splitlines(), start=1):
        if i >= first and (last is None or i <= last) and pat.search(toml_code(line)):
            return i
    return None


def method_tables(text: str, name: str) -> list[tuple[int, int]]:
    """(first, last) line of every ``[[methods]]`` table whose ``name`` is ``name``, in order."""
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines, 1) if re.match(r"^\s*\[", toml_code(line))] + [len(lines) + 1]
    return [(start, end - 1) for start, end in zip(heads, heads[1:])
            if re.match(r"^\s*\[\[\s*methods\s*\]\]", lines[start - 1]) and any(
                re.match(r'^\s*name\s*=\s*["\']' + re.escape(name) + r'["\']', toml_code(x))
                for x in lines[start:end - 1])]


def _err(spec_path: Path, text: str, key: str, message: str) -> SpecError:
    line = line_of(text, key)
    where = f"{spec_path}" + (f" line {line}" if line else "")
    return SpecError(f"grid spec {where}: {key}: {message}")


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], prefix: str, path: Path, text: str) -> None:
    for k in table:
        if k not in allowed:
            raise _err(path, text, f"{prefix}.{k}" if prefix else k,
                       f"unknown key; allowed here: {', '.join(allowed)}.")


def _typed(value: Any, types: type | tuple[type, ...], key: str, what: str, path: Path, text: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _err(path, text, key, f"expected {what}, got {value!r}.")
    if not isinstance(value, types):
        raise _err(path, text, key, f"expected {what}, got {value!r} ({type(value).__name__}).")
    return value


def _list(value: Any, key: str, path: Path, text: str, *, item: type | tuple[type, ...], what: str,
          allow_empty: bool = False) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise _err(path, text, key, f"expected a list of {what}, got {value!r}.")
    if not value and not allow_empty:
        raise _err(path, text, key, f"is empty: give at least one {what.rstrip('s')} (an empty axis makes an empty grid).")
    for i, v in enumerate(value):
        _typed(v, item, f"{key}[{i}]", what.rstrip("s"), path, text)
    return tuple(value)


def _dotted(table: Any, key: str, path: Path, text: str) -> dict[str, Any]:
    """A table of dotted overrides; nested TOML tables are flattened to dotted keys."""
    if not isinstance(table, dict):
        raise _err(path, text, key, f"expected a table of dotted overrides such as \"train.epochs\" = 3, got {table!r}.")
    out: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for k, v in node.items():
            dotted = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and not dotted.startswith("method.options.") and dotted != "method.options":
                walk(dotted, v)
            elif isinstance(v, dict) and dotted == "method.options":
                for ok, ov in v.items():
                    out[f"method.options.{ok}"] = ov
            else:
                out[dotted] = v

    walk("", table)
    return out


# -- parsing ------------------------------------------------------------------------------------
def load_spec(path: str | Path, results: str | Path | None = None) -> GridSpec:
    """Parse and check a spec file (structure and types; ``expand`` checks the runs themselves)."""
    from ..errors import ConfigError
    from ..reading import read_toml_text

    p = Path(path)
    try:
        tree, text = read_toml_text(p, "grid spec")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    return parse_spec(tree, p, text, results)


def parse_spec(tree: dict[str, Any], path: Path, text: str = "", results: str | Path | None = None) -> GridSpec:
    _check_keys(tree, ("grid", "base", "axes", "methods", "resources", "notes"), "", path, text)
    grid = tree.get("grid")
    if not isinstance(grid, dict):
        raise _err(path, text, "grid", "missing [grid] table (with at least name = \"...\").")
    _check_keys(grid, ("name", "results", "base_config", "description", "demo_options", "max_runs"), "grid", path,
                text)
    name = _typed(grid.get("name", ""), str, "grid.name", "a string", path, text)
    if not _NAME_RE.match(name):
        raise _err(path, text, "grid.name", f"{name!r} must be a non-empty name of letters, digits, '_', '-', '.'.")
    res = results if results is not None else grid.get("results", f"results/grids/{name}")
    _typed(res, (str, Path), "grid.results", "a folder path", path, text)
    where = "--results" if results is not None else "grid.results"
    if not str(res).strip():
        raise _err(path, text, where, f"empty: name the folder the grid's runs go in (default results/grids/{name}); "
                   "an empty path would put grid.json in the working folder.")
    if Path(res).exists() and not Path(res).is_dir():
        raise _err(path, text, where, f"{res} exists and is not a folder; give a folder.")
    base_config = grid.get("base_config")
    bc_path = None
    if base_config is not None:
        _typed(base_config, str, "grid.base_config", "a path to a configs/*.toml file", path, text)
        bc_path = (path.parent / base_config).resolve()
        if not bc_path.is_file():
            raise _err(path, text, "grid.base_config", f"no such file {str(bc_path)!r} (relative to the spec's folder).")
    description = _typed(grid.get("description", ""), str, "grid.description", "a string", path, text)
    demo_options = _typed(grid.get("demo_options", False), bool, "grid.demo_options", "true or false", path, text)
    max_runs = _typed(grid.get("max_runs", DEFAULT_MAX_RUNS), int, "grid.max_runs", "a whole number", path, text)
    if isinstance(max_runs, bool) or max_runs < 1:
        raise _err(path, text, "grid.max_runs", f"expected a whole number >= 1, got {max_runs!r}.")
    if MAX_RUNS_OVERRIDE.get() is not None:
        max_runs = int(MAX_RUNS_OVERRIDE.get() or 0)

    base = _dotted(tree.get("base", {}), "base", path, text)

    axes = tree.get("axes")
    if not isinstance(axes, dict):
        raise _err(path, text, "axes", "missing [axes] table (archs, datasets, budgets, seeds).")
    _check_keys(axes, AXES + ("zip", "exclude"), "axes", path, text)
    for a in AXES:
        if a not in axes:
            raise _err(path, text, f"axes.{a}", f"missing; give a list, e.g. {a} = {_example(a)}.")
    archs = _list(axes["archs"], "axes.archs", path, text, item=str, what="architecture names")
    datasets = _list(axes["datasets"], "axes.datasets", path, text, item=str, what="data set names")
    budgets = _list(axes["budgets"], "axes.budgets", path, text, item=(str, int, float), what="budgets")
    seeds = _list(axes["seeds"], "axes.seeds", path, text, item=int, what="integer seeds")
    zips = _zip_groups(axes.get("zip", []), {"archs": archs, "datasets": datasets, "budgets": budgets, "seeds": seeds},
                       path, text)
    exclude = _exclude(axes.get("exclude", []), path, text)

    methods_raw = tree.get("methods")
    if methods_raw is None:
        raise _err(path, text, "methods", "missing: add at least one [[methods]] table with name = \"...\".")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise _err(path, text, "methods", "expected one or more [[methods]] tables.")
    methods = tuple(_method(m, i, path, text) for i, m in enumerate(methods_raw))

    resources = _resources(tree.get("resources", {}), path, text)
    notes = tree.get("notes", {})
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise _err(path, text, "notes", "expected a table of method name = \"a sentence\".")
    return GridSpec(name=name, path=path.resolve(), results=Path(res), base_config=bc_path, base=base,
                    methods=methods, archs=archs, datasets=datasets, budgets=budgets, seeds=seeds, zip=zips,
                    exclude=exclude, resources=resources, description=description, demo_options=demo_options,
                    notes=dict(notes), text=text, max_runs=max_runs)


def _example(axis: str) -> str:
    return {"archs": '["wrn-16-1"]', "datasets": '["cifar100"]', "budgets": '["10%", "100k"]', "seeds": "[0, 1, 2]"}[axis]


def _zip_groups(raw: Any, axes: dict[str, tuple], path: Path, text: str) -> tuple[tuple[str, ...], ...]:
    if not isinstance(raw, list):
        raise _err(path, text, "axes.zip", f"expected a list of axis-name lists, e.g. [[\"archs\", \"budgets\"]], got {raw!r}.")
    seen: set[str] = set()
    out = []
    for i, group in enumerate(raw):
        key = f"axes.zip[{i}]"
        if not isinstance(group, list) or len(group) < 2 or not all(isinstance(g, str) for g in group):
            raise _err(path, text, "axes.zip", f"{key} must list at least two axis names, got {group!r}.")
        for g in group:
            if g not in axes:
                raise _err(path, text, "axes.zip", f"{key}: {g!r} is not an axis; zip can join {', '.join(AXES)}.")
            if g in seen:
                raise _err(path, text, "axes.zip", f"{key}: axis {g!r} is in two zip groups.")
            seen.add(g)
        lengths = {g: len(axes[g]) for g in group}
        if len(set(lengths.values())) != 1:
            raise _err(path, text, "axes.zip", f"{key}: zipped axes need equal lengths, got "
                       + ", ".join(f"{g}={n}" for g, n in lengths.items()) + ".")
        out.append(tuple(group))
    return tuple(out)


def _exclude(raw: Any, path: Path, text: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        raise _err(path, text, "axes.exclude", f"expected a list of rule tables, e.g. [{{method = \"ssn\", budget = \"10%\"}}], got {raw!r}.")
    out = []
    for i, rule in enumerate(raw):
        key = f"axes.exclude[{i}]"
        if not isinstance(rule, dict) or not rule:
            raise _err(path, text, "axes.exclude", f"{key} must be a non-empty table of {', '.join(EXCLUDE_KEYS)}.")
        for k in rule:
            if k not in EXCLUDE_KEYS:
                raise _err(path, text, "axes.exclude", f"{key}: unknown key {k!r}; rules match on {', '.join(EXCLUDE_KEYS)}.")
        out.append(dict(rule))
    return tuple(out)


def _method(m: Any, i: int, path: Path, text: str) -> MethodAxis:
    key = f"methods[{i}]"
    if not isinstance(m, dict):
        raise _err(path, text, "methods", f"{key} must be a table, got {m!r}.")
    _check_keys(m, ("name", "variants", "labels", "budget_mode", "budgets", "overrides"), key, path, text)
    if "name" not in m:
        raise _err(path, text, "methods", f"{key}: missing name = \"<method>\" (see `npas methods`).")
    name = _typed(m["name"], str, f"{key}.name", "a method name", path, text)
    variants = m.get("variants", [{}])
    if not isinstance(variants, list) or not variants:
        raise _err(path, text, "variants", f"{key}.variants must be a non-empty list of option tables, e.g. [{{}}, {{bank_size = 4}}].")
    for j, v in enumerate(variants):
        if not isinstance(v, dict):
            raise _err(path, text, "variants", f"{key}.variants[{j}] must be a table of method options, got {v!r}.")
    if "labels" in m:
        labels = _list(m["labels"], f"{key}.labels", path, text, item=str, what="variant labels")
        if len(labels) != len(variants):
            raise _err(path, text, "labels", f"{key}.labels: {len(labels)} labels for {len(variants)} variants.")
    else:
        labels = tuple(_auto_label(v) for v in variants)
    for j, lab in enumerate(labels):
        if not re.match(r"^[A-Za-z0-9_.=,+-]+$", lab):
            raise _err(path, text, "labels", f"{key}: variant label {lab!r} may hold only letters, digits and _.=,+-")
    if len(set(labels)) != len(labels):
        raise _err(path, text, "variants", f"{key}: two variants share the label {_first_dup(labels)!r}; give labels = [...].")
    mode = _typed(m.get("budget_mode", "total"), str, f"{key}.budget_mode", "a budget mode name", path, text)
    budgets = None
    if "budgets" in m:
        budgets = _list(m["budgets"], f"{key}.budgets", path, text, item=(str, int, float), what="budgets")
    overrides = _dotted(m.get("overrides", {}), f"{key}.overrides", path, text)
    for k in overrides:
        if k.split(".")[0] == "method" and k != "method.options" and not k.startswith("method.options."):
            raise _err(path, text, "overrides", f"{key}.overrides: {k!r} cannot change the method; use name/variants.")
    return MethodAxis(name=name, variants=tuple(dict(v) for v in variants), labels=labels, budget_mode=mode,
                      budgets=budgets, overrides=overrides)


def _auto_label(options: dict[str, Any]) -> str:
    if not options:
        return "default"
    parts = []
    for k in sorted(options):
        v = options[k]
        v = ",".join(str(x) for x in v) if isinstance(v, list) else str(v)
        parts.append(f"{k}={v}")
    return "+".join(parts).replace(" ", "")


def _first_dup(items: tuple[str, ...]) -> str:
    seen = set()
    for x in items:
        if x in seen:
            return x
        seen.add(x)
    return ""


def _resources(raw: Any, path: Path, text: str) -> Resources:
    if not isinstance(raw, dict):
        raise _err(path, text, "resources", f"expected a table, got {raw!r}.")
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(Resources)}
    _check_keys(raw, tuple(fields), "resources", path, text)
    kwargs = {}
    for k, v in raw.items():
        default = fields[k].default
        key = f"resources.{k}"
        if isinstance(default, bool) or isinstance(v, bool):
            raise _err(path, text, key, f"expected a {type(default).__name__}, got {v!r}.")
        if isinstance(default, float):
            _typed(v, (int, float), key, "a number", path, text)
            v = float(v)
        else:
            _typed(v, type(default), key, f"a {type(default).__name__}", path, text)
        if isinstance(v, (int, float)) and v < 0:
            raise _err(path, text, key, f"must be >= 0, got {v}.")
        kwargs[k] = v
    r = Resources(**kwargs)
    if r.cpus_per_run < 1:
        raise _err(path, text, "resources.cpus_per_run", "must be >= 1.")
    if r.time_min < 1:
        raise _err(path, text, "resources.time_min", "must be >= 1 (minutes).")
    if r.gpu_tflops <= 0:
        raise _err(path, text, "resources.gpu_tflops", "must be > 0 (sustained TFLOP/s of one GPU, e.g. 25).")
    if r.gpus_per_run and r.tasks_per_run and r.tasks_per_run != r.gpus_per_run:
        raise _err(path, text, "resources.tasks_per_run", f"is {r.tasks_per_run} but gpus_per_run is "
                   f"{r.gpus_per_run}: a DDP run has one process per GPU (leave tasks_per_run at 0).")
    return r
