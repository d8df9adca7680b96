"""Structure figures of the code base: what the structural clean-up (issue 14) is measured by.

    python -m npasbench.perf.structure [--out results/perf/structure.json]

Read from the source, nothing is run or imported but the method registry (for the method sizes):

- import cycles between the package's modules: module-level imports (the ones that execute at import
  time), and separately those that exist only through ``if TYPE_CHECKING:`` blocks (a design circle
  that does not fail at import time);
- ``# type: ignore`` comments, in total and by file;
- the largest modules (lines);
- the lines of every in-tree method's ``Method`` subclass (how much a new method needs, at least);
- duplicate pairs reported by the ``duplicates`` tool when it is on PATH (a development tool, absent in CI);
- what the run-folder/record clean-up (issue 28) is measured by: lines and the median function, cycles counting
  function-local imports too, the run folder's file names written as string literals outside the module that owns
  them, the record's top-level keys read by string in the record readers, uses of the old id name ``config_hash``,
  calls of ``experiment.resolve``, attributes the ``Trainer`` sets outside ``__init__``, the longest functions, and
  the README's size (lines, words, median sentence).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import statistics
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

from ..atomic import write_json, write_text

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"npasbench": REPO / "benchmark", "npasbench.methods": REPO / "methods", "npasbench.baselines": REPO / "baselines"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg, root in ROOTS.items():
        for f in sorted(root.rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


def _targets(mod: str, path: Path, node: ast.stmt, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
    # `from . import x` of a submodule is an edge to x, not to the package
    return subs if subs else ({target} if target in known else set())


def import_graph(known: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level edges, edges that exist only inside ``if TYPE_CHECKING:``)."""
    runtime: dict[str, set[str]] = {m: set() for m in known}
    typing_only: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for sub in node.body:
                    typing_only[mod] |= _targets(mod, path, sub, known) - {mod}
            else:
                runtime[mod] |= _targets(mod, path, node, known) - {mod}
    return runtime, typing_only


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def import_graph_all(known: dict[str, Path]) -> dict[str, set[str]]:
    """Edges of every import statement, function-local ones included (a circle the module level hides)."""
    edges: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[mod] |= _targets(mod, path, node, known) - {mod}
    return edges


# the names of a run folder's files (issue 28: one module owns them)
RUN_FOLDER_NAMES = {"running.json", "failed.json", "blocked.json", "result.json", "config.json", "checkpoints",
                    "artifacts", ".lock"}
RUN_FOLDER_OWNER = "benchmark/run_folder.py"  # and storage.py, whose folder_lock owns the lock file (LOCK)
# a record's top-level keys, as the record readers would read them by string
RECORD_KEYS = {"schema_version", "status", "run_id", "config_hash", "method", "arch", "members", "dataset", "budget",
               "params", "metrics", "selection", "seed", "config", "git", "timing", "hardware", "created_at",
               "method_code", "diverged_at", "synthetic", "epochs", "world_size", "packages", "stopped"}
RECORD_READERS = ("benchmark/records.py", "benchmark/grid/state.py", "benchmark/leaderboard/collect.py",
                  "benchmark/leaderboard/tidy.py", "benchmark/leaderboard/table.py")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def string_literals(path: Path, names: set[str]) -> int:
    """String constants in ``path`` (docstrings aside) that are exactly one of ``names``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value in names and id(n) not in docs)


def record_key_reads(path: Path) -> int:
    """``x["key"]`` and ``x.get("key")`` of a record's top-level key in ``path``."""
    count = 0
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and n.slice.value in RECORD_KEYS:
            count += 1
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and n.args
              and isinstance(n.args[0], ast.Constant) and n.args[0].value in RECORD_KEYS):
            count += 1
    return count


def name_uses(path: Path, name: str) -> int:
    """Tokens of ``path`` (names, and words inside strings and comments) that are ``name``."""
    return len(re.findall(rf"\b{name}\b", path.read_text(encoding="utf-8")))


def resolve_calls(path: Path) -> int:
    """Calls of ``experiment.resolve`` (``resolve(cfg)``, ``experiment.resolve(cfg)``) in ``path``."""
    return sum(1 for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Name) and n.func.id == "resolve")
        or (isinstance(n.func, ast.Attribute) and n.func.attr == "resolve" and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "experiment")))


def functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function in ``path``."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return out


def attributes_outside_init(path: Path, cls: str) -> list[str]:
    """Attributes ``self.x = ...`` that class ``cls`` in ``path`` sets in methods other than ``__init__``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name != "__init__":
                    for n in ast.walk(fn):
                        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(
                            n, (ast.AnnAssign, ast.AugAssign)) else []
                        for t in targets:
                            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                                names.add(t.attr)
    return sorted(names)


def prose(path: Path) -> dict[str, int]:
    """Lines, words and the median sentence (words) of a markdown file, code blocks left out of the sentences."""
    text = path.read_text(encoding="utf-8")
    body = re.sub(r"```.*?```", " ", text, flags=re.S)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", body) if len(s.split()) >= 3]
    return {"lines": len(text.splitlines()), "words": len(text.split()),
            "median_sentence_words": int(statistics.median(len(s.split()) for s in sentences)) if sentences else 0}


def cleanup_figures(known: dict[str, Path]) -> dict:
    """The figures of issue 28 (see the module docstring)."""
    rel = {str(p.relative_to(REPO)): p for p in known.values()}
    fns = [(f"{r}:{name}", n) for r, p in rel.items() for name, n in functions(p)]
    markers = {r: string_literals(p, RUN_FOLDER_NAMES) for r, p in rel.items()
               if r not in (RUN_FOLDER_OWNER, "benchmark/storage.py", "benchmark/perf/structure.py")}
    markers = {r: n for r, n in sorted(markers.items(), key=lambda kv: -kv[1]) if n}
    hashes = {r: name_uses(p, "config_hash") for r, p in rel.items() if r != "benchmark/perf/structure.py"}
    hashes = {r: n for r, n in hashes.items() if n}
    resolves = {r: resolve_calls(p) for r, p in rel.items()}
    trainer = REPO / "benchmark/trainer/loop.py"
    return {
        "lines": sum(len(p.read_text(encoding="utf-8").splitlines()) for p in known.values()),
        "median_function_lines": int(statistics.median(n for _, n in fns)) if fns else 0,
        "cycles_with_function_imports": cycles(import_graph_all(known)),
        "run_folder_literals": sum(markers.values()), "run_folder_literals_by_file": markers,
        "record_key_reads": {r: record_key_reads(REPO / r) for r in RECORD_READERS if (REPO / r).is_file()},
        "config_hash_uses": sum(hashes.values()), "config_hash_files": len(hashes),
        "resolve_calls": {r: n for r, n in resolves.items() if n},
        "trainer_attributes_outside_init": attributes_outside_init(trainer, "Trainer") if trainer.is_file() else [],
        "longest_functions": dict(sorted(fns, key=lambda kv: -kv[1])[:5]),
        "readme": prose(REPO / "README.md"),
    }


def method_sizes() -> dict[str, int]:
    from ..plugins import METHODS

    sizes = {}
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.__module__.startswith("npasbench."):
            sizes[name] = len(inspect.getsource(cls).splitlines())
    return sizes


def duplicate_pairs() -> int | None:
    tool = shutil.which("duplicates")
    if tool is None:
        return None
    r = subprocess.run([tool, "--repo", str(REPO), "--most", "200", "--seconds", "120"], capture_output=True,
                       text=True, timeout=300)
    first = r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""
    return int(first.split()[0]) if first.split() and first.split()[0].isdigit() else None


def type_ignores(path: Path) -> int:
    """``# type: ignore`` comments in ``path`` (comment tokens only: the phrase inside a string or docstring
    does not count)."""
    with path.open("rb") as fh:
        return sum(1 for tok in tokenize.tokenize(fh.readline)
                   if tok.type == tokenize.COMMENT and "type: ignore" in tok.string)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/perf/structure.json")
    a = ap.parse_args(argv)
    known = modules()
    runtime, typing_only = import_graph(known)
    both = {m: runtime[m] | typing_only[m] for m in known}
    lines = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in known.values()}
    ignores = {str(p.relative_to(REPO)): type_ignores(p) for p in known.values()}
    ignores = {k: v for k, v in sorted(ignores.items(), key=lambda kv: -kv[1]) if v}
    sizes = method_sizes()
    s = {"modules": len(known), "runtime_cycles": cycles(runtime), "type_checking_cycles": cycles(both),
         "type_ignores": sum(ignores.values()), "type_ignores_by_file": ignores,
         "largest_modules": dict(sorted(lines.items(), key=lambda kv: -kv[1])[:8]),
         "method_class_lines": dict(sorted(sizes.items(), key=lambda kv: kv[1])), "duplicate_pairs": duplicate_pairs(),
         **cleanup_figures(known)}
    out = Path(a.out)
    write_json(out, s)
    cyc = lambda cs: "; ".join(" <-> ".join(c) for c in cs) or "none"  # noqa: E731
    md = (f"# Structure figures\n\nGenerated by `python -m npasbench.perf.structure` ({len(known)} modules).\n\n"
          f"| figure | value |\n|---|---|\n"
          f"| import cycles at import time | {len(s['runtime_cycles'])}: {cyc(s['runtime_cycles'])} |\n"
          f"| cycles counting `if TYPE_CHECKING:` imports | {len(s['type_checking_cycles'])}: "
          f"{cyc(s['type_checking_cycles'])} |\n"
          f"| `# type: ignore` comments | {s['type_ignores']} in {len(ignores)} files |\n"
          f"| largest modules (lines) | " + ", ".join(f"{k} {v}" for k, v in list(s["largest_modules"].items())[:5]) + " |\n"
          "| in-tree method classes (lines) | " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + " |\n"
          f"| duplicate pairs (`duplicates --most 200`) | "
          f"{s['duplicate_pairs'] if s['duplicate_pairs'] is not None else 'tool not on PATH'} |\n"
          f"| lines; median function | {s['lines']}; {s['median_function_lines']} lines |\n"
          f"| cycles counting function-local imports | {len(s['cycles_with_function_imports'])}: "
          f"{cyc(s['cycles_with_function_imports'])} |\n"
          f"| run-folder names as string literals outside {RUN_FOLDER_OWNER} | {s['run_folder_literals']} in "
          f"{len(s['run_folder_literals_by_file'])} modules |\n"
          "| record keys read by string (records, grid state, collect, tidy, table) | "
          + ", ".join(f"{Path(k).name} {v}" for k, v in s["record_key_reads"].items()) + " |\n"
          f"| `config_hash` uses | {s['config_hash_uses']} in {s['config_hash_files']} modules |\n"
          "| `experiment.resolve` calls | " + ", ".join(f"{k} {v}" for k, v in s["resolve_calls"].items()) + " |\n"
          f"| attributes `Trainer` sets outside `__init__` | {len(s['trainer_attributes_outside_init'])} |\n"
          "| longest functions (lines) | " + ", ".join(f"{k} {v}" for k, v in s["longest_functions"].items()) + " |\n"
          f"| README | {s['readme']['lines']} lines, {s['readme']['words']} words, median sentence "
          f"{s['readme']['median_sentence_words']} words |\n")
    write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
