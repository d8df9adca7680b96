"""Typed options: turn user input (TOML values or ``key=value`` strings) into dataclasses.

Used for method options and for every config section, so unknown keys and ill-typed values fail
the same way everywhere: a ``ConfigError`` naming the dotted field, the expected type and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import tokenize
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, field: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``field``."""
    origin = get_origin(tp)
    bad = ConfigError(
        f"{field}: expected {type_name(tp)}, got {value!r} ({type(value).__name__}). "
        f"Fix the value of {field!r}."
    )
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        # "" is None only where a string is not allowed: an empty budget or path is an error of its own
        if type(None) in args and (value is None or (isinstance(value, str) and (
                value.lower() in ("none", "null") or (value == "" and str not in args)))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, field)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ConfigError(f"{field}: must be one of {', '.join(repr(c) for c in choices)}, got {value!r}.")
    if origin in (list, tuple):
        inner_args = [a for a in get_args(tp) if a is not Ellipsis]
        inner = inner_args[0] if inner_args else Any
        if isinstance(value, str):
            items = [v.strip() for v in value.strip("[]()").split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise bad
        out = [coerce(v, inner, f"{field}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise bad from None
                if f.is_integer():
                    return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, Mapping):
            return build_dataclass(tp, value, prefix=field)
        raise bad
    if isinstance(value, tp):
        return value
    raise bad


def build_dataclass(cls: type[D], values: Mapping[str, Any] | None, prefix: str = "", owner: str = "") -> D:
    """Instantiate ``cls`` from a mapping, validating every key and value. Errors name a key as the user writes
    it (``<prefix>.<key>``); ``owner`` (e.g. the method) names whose keys the valid ones are."""
    values = dict(values or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown option(s) {', '.join(where + u for u in unknown)}. "
            f"Valid options{' of ' + (owner or prefix) if (owner or prefix) else ''}: "
            f"{', '.join(sorted(fields)) or '(none)'}."
        )
    kwargs = {}
    for name, raw in values.items():
        dotted = f"{prefix}.{name}" if prefix else name
        kwargs[name] = coerce(raw, hints[name], dotted)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None
    return obj


def option(default: Any, help: str) -> Any:
    """A method option (or config key) with its one line of help, shown by ``npas methods`` and ``npas config``:
    ``rank: int = option(8, "rank of every layer's U V factorisation")``. Mutable defaults (lists, dicts)
    get a factory, as dataclasses require."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


_FIELD = re.compile(r"^(\s+)([A-Za-z_]\w*)\s*:")


@functools.lru_cache(maxsize=None)
def source_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment beside it (or the comment lines directly above it) in ``cls``'s source: the help
    of a field written without ``option(default, help)``."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return {}
    body = next((len(m.group(1)) for line in lines[1:] if (m := _FIELD.match(line))), None)
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _FIELD.match(line)
        if not m or len(m.group(1)) != body:
            continue
        text = comments.get(i, "")
        j, above = i - 1, list[str]()
        while not text and j >= 0 and lines[j].strip().startswith("#"):
            above.insert(0, comments.get(j, ""))
            j -= 1
        text = text or " ".join(a for a in above if a.strip("-= "))
        if text.strip(" -"):
            out[m.group(2)] = text.strip(" -")
    return out


def field_help(cls: type, f: dataclasses.Field) -> str:
    """A field's one line of help: ``option(default, help)``'s text, else its comment in the source."""
    return str(f.metadata.get("help") or source_comments(cls).get(f.name, ""))


def describe_options(cls: type) -> list[dict[str, Any]]:
    """Name, type, default and help of every option of a dataclass (for ``npas methods``)."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append({"name": f.name, "type": type_name(hints[f.name]), "default": default, "help": field_help(cls, f)})
    return out


def parse_kv(pairs: typing.Iterable[str], field: str = "--opt") -> dict[str, str]:
    """Parse ``["a=1", "b.c=x"]`` into ``{"a": "1", "b.c": "x"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{field}: expected key=value, got {pair!r}.")
        key, value = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"{field}: empty key in {pair!r}.")
        out[key] = value
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-able dict of a dataclass (tuples become lists)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(obj)
