"""``npas config``: every config key with its type, default and one line of help.

Read from the dataclasses that validate the keys (``config.Config``'s sections and a method's ``Options``), so
the list cannot drift from what a run accepts. A key's help is its field's ``option(default, help)`` text, else
the comment written beside (or directly above) the field in the dataclass's source; ``tests/test_config.py``
checks that every key has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .options import describe_options


@dataclass(frozen=True)
class ConfigKey:
    key: str  # as a user writes it: "train.epochs" (a TOML key in its section, or a dotted override)
    type: str
    default: Any
    help: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dataclass_keys(cls: type, prefix: str) -> list[ConfigKey]:
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return [ConfigKey(f"{prefix}.{o['name']}", o["type"], o["default"], o["help"])
            for o in describe_options(cls) if o["name"] in init]


def config_keys(method: str | None = None) -> list[ConfigKey]:
    """Every key of an experiment config, section by section; with ``method``, its options too (else one line
    saying where they are listed)."""
    from .config import SECTION_TYPES
    from .plugins import get_method_class

    keys: list[ConfigKey] = []
    for section, cls in SECTION_TYPES.items():
        for k in dataclass_keys(cls, section):
            if k.key != "method.options":
                keys.append(k)
            elif method is None:
                keys.append(dataclasses.replace(k, help=k.help + " (`npas config --method NAME` lists them)"))
        if section == "method" and method is not None:
            keys.extend(dataclass_keys(get_method_class(method).Options, "method.options"))
    return keys


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return repr(list(value))
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def render(keys: list[ConfigKey]) -> str:
    """Aligned text, one key per line, a blank line between sections."""
    width = max(len(k.key) for k in keys)
    twidth = min(28, max(len(k.type) for k in keys))
    out: list[str] = []
    section = None
    for k in keys:
        head = k.key.split(".")[0]
        if section is not None and head != section:
            out.append("")
        section = head
        out.append(f"{k.key:<{width}}  {k.type:<{twidth}}  {_show(k.default):<16}  {k.help}".rstrip())
    return "\n".join(out)
