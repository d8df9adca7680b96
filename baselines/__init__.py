"""Baselines, each a plugin on the method contract (registered on import)."""

from . import unshared  # noqa: F401
