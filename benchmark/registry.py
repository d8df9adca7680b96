"""A small, typed name -> object registry shared by methods, architectures and data sets.

In-tree entries register with a decorator (timm's ``@register_model`` style). Out-of-tree entries
are discovered through a Python entry-point group (submitit's plugin style): a package adds a method
with no change to this repository. A plugin that fails to import is *reported* (see
``Registry.broken``) and skipped; it never breaks the other entries. Registering a name twice is an
error, because silently replacing a method would make benchmark tables lie.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import traceback
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from .errors import RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    source: str  # "in-tree" or "package:<distribution> (<entry point value>)"


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    source: str
    error: str


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._broken: list[BrokenPlugin] = []
        self._discovered = entry_point_group is None
        self._builtin_loader: Callable[[], None] | None = None

    # -- registration -----------------------------------------------------------------------
    def set_builtin_loader(self, loader: Callable[[], None]) -> None:
        """A callable that imports the in-tree modules whose decorators fill this registry."""
        self._builtin_loader = loader

    def add(self, name: str, obj: T, source: str = "in-tree") -> T:
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"{self.kind} name must be a non-empty string without spaces, got {name!r}")
        if name in self._entries:
            prev = self._entries[name]
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: already registered from {prev.source}, "
                f"registering again from {source}. Rename one of them."
            )
        self._entries[name] = Entry(name, obj, source)
        return obj

    # -- discovery --------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._builtin_loader is not None:
            loader, self._builtin_loader = self._builtin_loader, None
            loader()
        if not self._discovered:
            self._discovered = True
            self.discover()

    def discover(self) -> None:
        """Load every entry point of the group; broken ones are recorded, not raised."""
        assert self.entry_point_group is not None
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            dist = getattr(ep, "dist", None)
            dist_name = getattr(dist, "name", None) or "unknown-distribution"
            source = f"package:{dist_name} ({ep.value})"
            if ep.name in self._entries and self._entries[ep.name].source == source:
                continue
            try:
                obj = ep.load()
                self.add(ep.name, obj, source)
            except SystemExit as exc:  # a plugin that exits at import must not end the command that loads it
                self._broken.append(BrokenPlugin(ep.name, source, f"called sys.exit({exc.code!r}) at import"))
            except Exception as exc:  # noqa: BLE001 - a plugin may fail in any way; report it.
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self._broken.append(BrokenPlugin(ep.name, source, detail))

    @property
    def broken(self) -> list[BrokenPlugin]:
        self._ensure_loaded()
        return list(self._broken)

    # -- lookup -----------------------------------------------------------------------------
    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            broken = [b.name for b in self._broken if b.name == name]
            if broken:
                hint += f" A plugin named {name!r} exists but failed to load: {self._broken_detail(name)}"
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}."
            ) from None

    def _broken_detail(self, name: str) -> str:
        return "; ".join(b.error for b in self._broken if b.name == name)

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def remove(self, name: str) -> None:
        """Drop an entry (tests register throw-away methods)."""
        self._entries.pop(name, None)
