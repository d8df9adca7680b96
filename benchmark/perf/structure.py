"""Structure figures of the code base: what the structural clean-up (issue 14) is measured by.

    python -m npasbench.perf.structure [--out results/perf/structure.json]

Read from the source, nothing is run or imported but the method registry (for the method sizes):

- import cycles between the package's modules: module-level imports (the ones that execute at import
  time), and separately those that exist only through ``if TYPE_CHECKING:`` blocks (a design circle
  that does not fail at import time);
- ``# type: ignore`` comments, in total and by file;
- the largest modules (lines);
- the lines of every in-tree method's ``Method`` subclass (how much a new method needs, at least);
- duplicate pairs reported by the ``duplicates`` tool when it is on PATH (a development tool, absent in CI).
"""

from __future__ import annotations

import argparse
import ast
import inspect
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
         "method_class_lines": dict(sorted(sizes.items(), key=lambda kv: kv[1])), "duplicate_pairs": duplicate_pairs()}
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
          f"{s['duplicate_pairs'] if s['duplicate_pairs'] is not None else 'tool not on PATH'} |\n")
    write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
