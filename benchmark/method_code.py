"""Which code made a result: the method's distribution, version and a digest of its source files.

A benchmark that reuses a finished run after the method's code changed reports numbers the current code never
produced. Every record therefore holds ``method_code`` (``MethodCode.to_dict``): where the method comes from
(``in-tree``, or the plugin distribution that declares its entry point), that distribution's version (for an
in-tree method, the suite's version and git sha), and a digest of the method's own source files. The grid
compares a finished run's digest with the digest of the code installed now (``code_change``): a run whose
method code differs is *stale* -- ``npas grid status`` shows it, ``npas grid run`` / ``submit`` run it again
(``--keep-stale`` keeps it) -- and a leaderboard cell whose runs were made by different method code is flagged.

Which files are "the method's own": the module that defines the method class and every module it imports,
transitively, inside the method's root -- ``npasbench.methods.<name>`` for an in-tree method package,
``npasbench.baselines`` for a baseline, the top-level package for a plugin (``my_pkg``). The suite's shared code
(trainer, models, the sdk) is not in the digest: changing it does not make every run stale; the record's
``git`` sha says which suite made it. The run id stays a function of the experiment alone (``experiment``).

Known limit: a shared phase's artifact (e.g. a search run once for several runs) is keyed by its config, not by
this digest; delete ``_phases/`` after changing a method's search code.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

SUITE_DISTRIBUTION = "npasbench"


@dataclass(frozen=True)
class MethodCode:
    """The code of one registered method, as installed in this process."""

    source: str  # the registry's source: "in-tree" or "package:<distribution> (<entry point>)"
    distribution: str | None  # the distribution that ships the method's module (None: a loose script)
    version: str | None
    git_sha: str | None  # for an in-tree method: the suite's checkout (None for a plugin)
    digest: str  # "sha256:<hex>" over the method's own modules (names and bytes)
    files: tuple[str, ...]  # those modules, by dotted name

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "distribution": self.distribution, "version": self.version,
                "git_sha": self.git_sha, "digest": self.digest, "files": list(self.files)}

    @property
    def short(self) -> str:
        return describe(self.to_dict())


def describe(code: Mapping[str, Any] | None) -> str:
    """``0.2.0 a1b2c3d4`` (version and the digest's first 8 hex digits): how a status line names a code version."""
    if not code:
        return "unknown code"
    digest = str(code.get("digest") or "")
    return " ".join(x for x in (str(code.get("version") or ""), digest.split(":", 1)[-1][:8]) if x) or "unknown code"


def method_root(module: str) -> str:
    """The package whose modules count as the method's own (see the module docstring)."""
    parts = module.split(".")
    if parts[:2] == ["npasbench", "methods"] and len(parts) >= 3:
        return ".".join(parts[:3])
    if parts[:2] == ["npasbench", "baselines"]:
        return "npasbench.baselines"
    return parts[0]


def _module_file(name: str) -> Path | None:
    mod = sys.modules.get(name)
    origin = getattr(mod, "__file__", None) if mod is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    if not origin or not str(origin).endswith(".py"):
        return None
    return Path(origin)


def _imports(name: str, path: Path, root: str) -> set[str]:
    """Modules below ``root`` that module ``name`` (file ``path``) imports, absolute and relative."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    inside = {m for m in found if m == root or m.startswith(root + ".")}
    return {m for m in inside if _module_file(m) is not None}


def own_modules(module: str) -> dict[str, Path]:
    """The method's own modules: ``module`` and what it imports transitively inside its root, name -> file."""
    root = method_root(module)
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo.extend(sorted(_imports(name, path, root) - set(seen)))
    return dict(sorted(seen.items()))


def _digest(modules: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for name, path in modules.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return "sha256:" + h.hexdigest()


def _distribution(source: str, module: str) -> str | None:
    if source.startswith("package:"):
        return source[len("package:"):].split(" (", 1)[0]
    top = module.split(".")[0]
    if top == "npasbench":
        return SUITE_DISTRIBUTION
    dists = importlib.metadata.packages_distributions().get(top) or []
    return dists[0] if dists else None


def _version(dist: str | None) -> str | None:
    if dist is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_of(cls: type, source: str) -> MethodCode:
    """The ``MethodCode`` of a method class registered from ``source`` (read from the files now)."""
    from .provenance import git_info

    module = cls.__module__
    modules = own_modules(module)
    dist = _distribution(source, module)
    sha = git_info().get("sha") if dist == SUITE_DISTRIBUTION else None
    return MethodCode(source=source, distribution=dist, version=_version(dist), git_sha=sha,
                      digest=_digest(modules), files=tuple(modules))


def _stamp(modules: tuple[str, ...]) -> tuple[tuple[str, int, int], ...] | None:
    out = []
    for name in modules:
        path = _module_file(name)
        if path is None:
            return None
        st = path.stat()
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


_CACHE: dict[str, tuple[tuple[tuple[str, int, int], ...], MethodCode]] = {}


def method_code(name: str) -> MethodCode:
    """The code of the registered method ``name`` now. Cached while its files keep their size and mtime (a status
    of a thousand runs parses each method's files once; an edit is seen at once: a new import needs an edit)."""
    from .plugins import METHODS

    entry = METHODS.entry(name)
    cached = _CACHE.get(name)
    if cached is not None and _stamp(cached[1].files) == cached[0]:
        return cached[1]
    code = code_of(entry.obj, entry.source)
    stamp = _stamp(code.files)
    if stamp is not None:
        _CACHE[name] = (stamp, code)
    return code


def code_change(rec: Mapping[str, Any]) -> str | None:
    """Why a finished record was made by other method code than is installed now, or None: the same digest, a
    record of a suite that did not record its method code yet (unknown: kept), or a method not installed now."""
    from .errors import NPASError

    old = rec.get("method_code")
    name = (rec.get("method") or {}).get("name")
    if not isinstance(old, dict) or not isinstance(name, str) or not old.get("digest"):
        return None
    try:
        now = method_code(name)
    except (NPASError, OSError, SyntaxError):
        return None
    if old.get("digest") == now.digest:
        return None
    return f"method code changed: {name} {describe(old)} made this record, {now.short} is installed now"
