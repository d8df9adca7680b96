"""The method registry: in-tree methods by decorator, outside packages by entry point.

In-tree::

    @register_method("unshared")
    class Unshared(Method): ...

Outside package (no change to this repository), in its ``pyproject.toml``::

    [project.entry-points."npasbench.methods"]
    my-method = "my_pkg.module:MyMethod"

A plugin that fails to import, or is not a ``Method`` subclass, is reported by ``npas methods``
and skipped; the other methods keep working.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from .contract import Method, MethodOptions
from .errors import ConfigError, RegistryError
from .options import build_dataclass
from .registry import Registry

ENTRY_POINT_GROUP = "npasbench.methods"


class _MethodRegistry(Registry[type[Method]]):
    def add(self, name: str, obj: Any, source: str = "in-tree") -> Any:
        if not (isinstance(obj, type) and issubclass(obj, Method)):
            raise RegistryError(f"method {name!r} from {source} is not a npasbench Method subclass (got {obj!r})")
        if obj.name and obj.name != name:
            # An entry point may expose a class under another name; give it its registered name.
            obj = type(obj.__name__, (obj,), {"name": name, "__module__": obj.__module__})
        else:
            obj.name = name
        return super().add(name, obj, source)


METHODS: _MethodRegistry = _MethodRegistry("method", ENTRY_POINT_GROUP)


def _load_builtin() -> None:
    importlib.import_module("npasbench.baselines")
    importlib.import_module("npasbench.methods")


METHODS.set_builtin_loader(_load_builtin)


def register_method(name: str):
    """Class decorator registering an in-tree method under ``name``."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS.add(name, cls)
        return cls

    return deco


def get_method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def parse_method_options(name: str, options: Mapping[str, Any] | MethodOptions | None) -> MethodOptions:
    cls = get_method_class(name)
    if isinstance(options, MethodOptions):
        if not isinstance(options, cls.Options):
            raise ConfigError(f"method.options: {name!r} expects {cls.Options.__name__}, got {type(options).__name__}")
        return options
    return build_dataclass(cls.Options, options or {}, prefix="method.options", owner=name)


def create_method(name: str, options: Mapping[str, Any] | MethodOptions | None = None) -> Method:
    cls = get_method_class(name)
    return cls(parse_method_options(name, options))
